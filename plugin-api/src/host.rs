//! The plugin's view of its host: [`Host`], built from the [`HostContext`] the host lends to
//! `new_source`. A source keeps it to learn its name and base folder, to log into the host's log and
//! to ask how much time the current call has left.

use std::{path::PathBuf, time::Duration};

use abi_stable::std_types::{RResult, RStr, RString, RVec};

use crate::{ffi::HostContext, types::Extension, PluginError, INTERFACE_VERSION};

/// A log level, as [`HostContext::log`] takes it. Numbers above [`Level::Trace`] are read as trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// The level for a number sent across the boundary.
    pub fn from_u32(n: u32) -> Level {
        match n {
            0 | 1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// What a source knows of its host. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Host {
    source_name: String,
    base_dir: Option<PathBuf>,
    interface: (u32, u32),
    host_version: String,
    extensions: Vec<(String, String)>,
    log: extern "C" fn(u32, RStr<'_>, RStr<'_>),
    time_left_ms: extern "C" fn() -> u64,
    call: extern "C" fn(RStr<'_>, u32, RStr<'_>) -> RResult<RString, PluginError>,
}

impl Host {
    /// Copies what a source keeps from the context the host lent.
    pub fn from_context(context: &HostContext) -> Host {
        Host {
            source_name: context.source_name.to_string(),
            base_dir: Some(context.base_dir.as_str())
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            interface: (context.interface_major, context.interface_minor),
            host_version: context.host_version.to_string(),
            extensions: context
                .extensions
                .iter()
                .map(|e| (e.key.to_string(), e.value.to_string()))
                .collect(),
            log: context.log,
            time_left_ms: context.time_left_ms,
            call: context.call,
        }
    }

    /// A host for a source built outside a real host (unit tests, the conformance kit): logs go to
    /// standard error, no call has a deadline and every host call is unsupported.
    pub fn detached(source_name: &str, base_dir: Option<PathBuf>) -> Host {
        Host::from_context(&detached_context(
            source_name,
            base_dir
                .as_deref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ))
    }

    /// The `[[source]]` name this source serves under.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The folder relative paths of the configuration are relative to, when the host has one.
    pub fn base_dir(&self) -> Option<&std::path::Path> {
        self.base_dir.as_deref()
    }

    /// `path` resolved against [`Host::base_dir`] unless it is absolute.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        crate::resolve_path(self.base_dir(), path)
    }

    /// The host's interface version, `(major, minor)`.
    pub fn interface(&self) -> (u32, u32) {
        self.interface
    }

    /// The host program and its version, for messages.
    pub fn host_version(&self) -> &str {
        &self.host_version
    }

    /// The value of a context extension key ([`crate::keys`]), if the host sent it.
    pub fn extension(&self, key: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// How long the call this thread runs for the host may still take, or `None` when it has no
    /// deadline (outside a call, or a host that sets none). A source that waits on a remote service
    /// bounds the wait by it.
    pub fn time_left(&self) -> Option<Duration> {
        match (self.time_left_ms)() {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Writes `message` to the host's log, tagged with this source's name.
    pub fn log(&self, level: Level, message: &str) {
        (self.log)(
            level as u32,
            RStr::from_str(&self.source_name),
            RStr::from_str(message),
        )
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }

    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }

    /// Calls a host service by name and version; [`crate::ErrorKind::Unsupported`] from a host that
    /// does not have it.
    pub fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        match (self.call)(RStr::from_str(method), version, RStr::from_str(payload)) {
            RResult::ROk(s) => Ok(s.into_string()),
            RResult::RErr(e) => Err(e),
        }
    }
}

extern "C" fn detached_log(level: u32, source: RStr<'_>, message: RStr<'_>) {
    eprintln!("[{:?} {source}] {message}", Level::from_u32(level));
}

extern "C" fn no_deadline() -> u64 {
    u64::MAX
}

extern "C" fn unsupported_call(
    method: RStr<'_>,
    version: u32,
    _payload: RStr<'_>,
) -> RResult<RString, PluginError> {
    RResult::RErr(PluginError::unsupported(format!(
        "no host service {method} version {version}"
    )))
}

/// A context for a source built outside a host (see [`Host::detached`]); the conformance kit uses
/// it to build sources through the FFI entry points.
pub fn detached_context(source_name: &str, base_dir: String) -> HostContext {
    HostContext {
        source_name: RString::from(source_name),
        base_dir: RString::from(base_dir),
        interface_major: INTERFACE_VERSION.0,
        interface_minor: INTERFACE_VERSION.1,
        host_version: RString::from(concat!("tributary-plugin-api ", env!("CARGO_PKG_VERSION"))),
        log: detached_log,
        time_left_ms: no_deadline,
        call: unsupported_call,
        extensions: RVec::<Extension>::new(),
    }
}
