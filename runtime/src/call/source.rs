//! The host's handle on one source: its name, its plugin's object, its health, its threads and, when
//! isolated, its runner.

use std::sync::Arc;

use tributary_plugin_api::SourceBox;

use super::SourceHealth;
use crate::config::CallLimits;

/// A ready source: what every call to it goes through, [`call`](super::call) on its own threads (or
/// its runner) or [`try_call`](super::in_place::try_call) in place, under its one [`SourceHealth`].
pub struct SourceHandle {
    pub name: Arc<str>,
    pub plugin: Arc<str>,
    pub imp: SourceBox,
    pub health: SourceHealth,
    /// The threads the source's calls run on ([`crate::call::threads`]).
    pub threads: super::threads::SourceThreads,
    /// The runner of a source with `isolation = "process"`.
    pub runner: Option<crate::isolation::client::RunnerHandle>,
    /// The capabilities its plugin declares (`method@version`), which decide what the host asks
    /// of it: a sort order other than by name (`list.sort@1`), facet counts (`facets@1`).
    pub capabilities: Arc<[String]>,
}

impl SourceHandle {
    /// A source around an already-built [`SourceBox`] (tests, benchmarks, in-process sources), with
    /// the default call limits.
    pub fn new(name: &str, plugin: &str, imp: SourceBox) -> SourceHandle {
        SourceHandle::with_limits(name, plugin, imp, CallLimits::default())
    }

    pub fn with_limits(
        name: &str,
        plugin: &str,
        imp: SourceBox,
        limits: CallLimits,
    ) -> SourceHandle {
        SourceHandle {
            name: name.into(),
            plugin: plugin.into(),
            imp,
            health: SourceHealth::new(limits),
            threads: super::threads::SourceThreads::new(name),
            runner: None,
            capabilities: Arc::from([]),
        }
    }

    /// The same source, its plugin declaring `capabilities`.
    pub fn with_capabilities(mut self, capabilities: &[String]) -> SourceHandle {
        self.capabilities = capabilities.into();
        self
    }

    /// Whether its plugin declares `method` at `version`.
    pub fn declares(&self, method: &str, version: u32) -> bool {
        tributary_plugin_api::capabilities::declares(&self.capabilities, method, version)
    }
}
