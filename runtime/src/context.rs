//! The host's side of [`HostContext`]: what a source learns when it is built and the functions it
//! calls back: its log lines go into this process's `tracing` log (target `plugin`, field `source`),
//! and it can ask how much time the call it is running has left.
//!
//! The time left is a thread-local set by the call module on the thread that runs a
//! plugin call ([`enter_call`]); calls are synchronous, so the plugin asks on that same thread.

use std::{cell::Cell, path::Path, time::Instant};

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use tributary_plugin_api::{keys, Extension, HostContext, Level, PluginError, INTERFACE_VERSION};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Marks this thread as running a plugin call that must end by `deadline`, until the returned
/// guard is dropped.
pub fn enter_call(deadline: Instant) -> CallScope {
    CallScope(DEADLINE.with(|d| d.replace(Some(deadline))))
}

/// Restores the previous deadline of the thread when dropped.
pub struct CallScope(Option<Instant>);

impl Drop for CallScope {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.0));
    }
}

extern "C" fn log(level: u32, source: RStr<'_>, message: RStr<'_>) {
    let (source, message) = (source.as_str(), message.as_str());
    match Level::from_u32(level) {
        Level::Error => tracing::error!(target: "plugin", source, "{message}"),
        Level::Warn => tracing::warn!(target: "plugin", source, "{message}"),
        Level::Info => tracing::info!(target: "plugin", source, "{message}"),
        Level::Debug => tracing::debug!(target: "plugin", source, "{message}"),
        Level::Trace => tracing::trace!(target: "plugin", source, "{message}"),
    }
}

extern "C" fn time_left_ms() -> u64 {
    match DEADLINE.with(Cell::get) {
        Some(deadline) => deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(u64::MAX as u128 - 1) as u64,
        None => u64::MAX,
    }
}

extern "C" fn call(
    method: RStr<'_>,
    version: u32,
    _payload: RStr<'_>,
) -> RResult<RString, PluginError> {
    // Interface 1.0 defines no host services; later minors add them here by name.
    RResult::RErr(PluginError::unsupported(format!(
        "this host ({}) has no service {method} version {version}",
        host_version()
    )))
}

fn host_version() -> String {
    format!("tributary {}", env!("CARGO_PKG_VERSION"))
}

/// The context for building the source `source_name`.
pub fn context(
    source_name: &str,
    base_dir: &Path,
    source_timeout: std::time::Duration,
) -> HostContext {
    HostContext {
        source_name: RString::from(source_name),
        base_dir: RString::from(base_dir.to_string_lossy().into_owned()),
        interface_major: INTERFACE_VERSION.0,
        interface_minor: INTERFACE_VERSION.1,
        host_version: RString::from(host_version()),
        log,
        time_left_ms,
        call,
        extensions: RVec::from(vec![
            Extension::new(
                keys::CONTEXT_SOURCE_TIMEOUT_MS,
                source_timeout.as_millis().to_string(),
            ),
            Extension::new(keys::CONTEXT_HOST_PID, std::process::id().to_string()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_left_follows_the_call_scope() {
        assert_eq!(time_left_ms(), u64::MAX);
        {
            let _scope = enter_call(Instant::now() + Duration::from_secs(60));
            let left = time_left_ms();
            assert!(left > 50_000 && left <= 60_000, "{left}");
            {
                let _inner = enter_call(Instant::now());
                assert_eq!(time_left_ms(), 0);
            }
            assert!(time_left_ms() > 50_000);
        }
        assert_eq!(time_left_ms(), u64::MAX);
    }
}
