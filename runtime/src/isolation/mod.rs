//! Process isolation: a source whose `[[source]]` says `isolation = "process"` runs in a child
//! process, the `tributary` binary itself in its hidden `__runner` mode.
//!
//! - [`client`]: the host side. [`client::RunnerSource`] implements [`PackageSource`](tributary_plugin_api::PackageSource) by sending each
//!   call to the runner, so it is wrapped into the same [`SourceBox`] as an in-process source and the
//!   engine and guard treat both alike (contract checks, deadlines, failure kinds). It starts the
//!   runner on a thread of its own (the source is `starting` until the runner's hello, at most the
//!   source timeout), restarts it with back-off after it dies, and kills it when a call outlives
//!   the source timeout (which is what finally frees a call that never returns).
//! - [`runner`]: the child side. It loads the library through [`crate::loader::load_all`] (the same
//!   checks as the server), builds the source and answers calls until its socket closes.
//! - [`frame`]: the framing: 4-byte big-endian length + one `tributary.runner.v1` prost message.
//!
//! # What the runner is given and denied
//! Enforced (Linux): the runner gets only its socket (descriptor 3) and stdin/stdout/stderr, every
//! other inherited descriptor is closed before `exec`; `PR_SET_NO_NEW_PRIVS` is set (no set-uid gain
//! through `exec`); `PR_SET_PDEATHSIG` = `SIGKILL` ends it if the server dies, and it exits by itself
//! when its socket closes; it leads its own process group, killed as a whole when the runner exits
//! (watched with `waitid`, not through the socket, which a process it started may hold open), when
//! the host kills it, when its source is dropped and when the server process exits; `memory_limit_mb` sets `RLIMIT_AS` (an allocation past it fails, which a
//! Rust plugin turns into an abort: the runner dies and is reported `crashed`); the variables named in
//! `env_remove` are removed from its environment.
//! With Landlock (where the kernel has it; [`runner::confine`]), the runner reads only its library,
//! the config's folder, the system folders and its `allow_read` paths, and writes only below its
//! `allow_write` paths.
//! Not enforced: no seccomp filter, and the network is open. The runner runs as the server's user.

pub mod client;
pub mod frame;
pub mod runner;

/// The messages of the host-to-runner protocol (`proto/tributary/runner/v1/runner.proto`).
#[allow(clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tributary.runner.v1.rs"));
}

use std::path::PathBuf;

use tributary_plugin_api::SourceBox;

/// The version of the host-to-runner framing; the runner's hello must carry it.
pub const RUNNER_PROTOCOL_VERSION: u32 = 1;

pub use crate::loader::{describe_exit, RUNNER_ARG};

/// How one isolated source is run.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// The source's name (for logs and reasons).
    pub source: String,
    /// The plugin's name: the runner checks that the library still carries it.
    pub plugin: String,
    pub library: PathBuf,
    /// SHA-256 of the library the server loaded: a runner (re)started after the file changed on
    /// disk refuses the new bytes until a reload brings them in.
    pub sha256: String,
    /// The source configuration as JSON text, `$base_dir` included.
    pub config_json: String,
    /// The folder relative paths resolve against (the host context's base dir).
    pub base_dir: PathBuf,
    pub strict_permissions: bool,
    /// `RLIMIT_AS` of the runner, in MiB.
    pub memory_limit_mb: Option<u64>,
    /// Environment variables the runner does not get.
    pub env_remove: Vec<String>,
    /// Extra paths the runner may read, and may write (Landlock).
    pub allow_read: Vec<PathBuf>,
    pub allow_write: Vec<PathBuf>,
    /// A call that takes longer kills the runner (the source timeout).
    pub call_timeout: std::time::Duration,
    /// The program to run (`std::env::current_exe()` in the server).
    pub program: PathBuf,
}

/// Begins starting a runner for `spec` and returns at once the source the engine calls (see
/// [`client::RunnerSource::start`]).
pub fn start(spec: RunnerSpec) -> (SourceBox, client::RunnerHandle) {
    let source = client::RunnerSource::start(spec);
    let handle = source.handle();
    (tributary_plugin_api::ffi::source_box(source), handle)
}

/// The registry's one call: starts the runner of source `sc` of `plugin` with its JSON `config_json`.
pub fn start_for(
    plugin: &crate::loader::LoadedPlugin,
    sha256: &str,
    sc: &crate::config::SourceConfig,
    isolation: &crate::config::ProcessIsolation,
    config: &crate::config::Config,
    config_json: String,
) -> Result<(SourceBox, client::RunnerHandle), tributary_plugin_api::PluginError> {
    let program = std::env::current_exe().map_err(|e| {
        tributary_plugin_api::PluginError::unavailable(format!(
            "cannot find the server's own binary to start a runner: {e}"
        ))
    })?;
    Ok(start(RunnerSpec {
        base_dir: config.base_dir.clone(),
        source: sc.name.clone(),
        plugin: plugin.meta.name.clone(),
        library: plugin.path.clone(),
        sha256: sha256.to_owned(),
        config_json,
        strict_permissions: config.strict_permissions,
        memory_limit_mb: isolation.memory_limit_mb,
        env_remove: isolation.env_remove.clone(),
        allow_read: isolation.allow_read.clone(),
        allow_write: isolation.allow_write.clone(),
        call_timeout: config.source_timeout,
        program: runner_program().unwrap_or(program),
    }))
}

/// The program runners (and library inspectors) run: `TRIBUTARY_RUNNER_PROGRAM`, else the server's
/// own binary; `None` when neither can be found.
pub fn runner_program_path() -> Option<PathBuf> {
    runner_program().or_else(|| std::env::current_exe().ok())
}

/// `TRIBUTARY_RUNNER_PROGRAM` overrides the runner binary (tests that embed the server in another
/// binary point it at `tributary`).
fn runner_program() -> Option<PathBuf> {
    std::env::var_os("TRIBUTARY_RUNNER_PROGRAM").map(PathBuf::from)
}
