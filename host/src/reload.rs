//! Reloading while serving: the plugin directory scanned again and the configuration file read
//! again, on SIGHUP, on the `PluginsService.Reload` RPC, or when the directory watcher sees a
//! library or the configuration change.
//!
//! A reload builds the next [`Generation`] with [`Registry::reload`] (unchanged libraries and
//! sources kept as they are, new and changed ones loaded and built, a rejected new version never
//! replacing a serving one) and swaps it in whole. Requests already running finish on the sources
//! they started with; page tokens hold merge keys, not positions, so they resume in the new
//! generation. An invalid configuration file is refused whole: the running generation keeps
//! serving and the error is logged and shown in `ListPlugins`.
//!
//! Only the plugin libraries and the `[[source]]` tables (and the call limits sources are built
//! with) take effect on reload; every other key (listen addresses, TLS, auth, engine options,
//! `plugin_dir`) needs a restart, and a reload whose file changes `plugin_dir` is refused.
//!
//! Libraries are never unloaded (abi_stable's rule; Rust thread-local destructors make `dlclose`
//! unsafe): a replaced or removed library stays mapped, counted in `retired_libraries`; past
//! `max_retired_libraries` each reload logs a warning that a restart gives the memory back.
//!
//! The watcher ([`watch`]) waits until the directory and the configuration file have been quiet
//! and every library's size and modification time unchanged for the debounce window, so a file
//! being copied in is not loaded half-written (a file renamed into place is complete at once).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tributary_proto::v1 as pb;

use tributary_runtime::{
    config::{Config, Overrides},
    loader::is_library_name,
    registry::Registry,
};

use tributary_runtime::registry::Generation;

use crate::metrics::Metrics;

/// Why a reload was refused; the running generation keeps serving. Its text is what the log,
/// `ListPlugins.last_reload_error` and the Reload RPC's FAILED_PRECONDITION say.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this server was not started from a configuration file: nothing to reload")]
    NotFromFile,
    /// The file is unreadable or invalid (the error names the file and the key).
    #[error(transparent)]
    Config(#[from] tributary_runtime::config::ConfigError),
    #[error("config file {}: key `plugin_dir` changed from {} to {}; a new plugin directory needs a restart", path.display(), from.display(), to.display())]
    PluginDirChanged {
        path: PathBuf,
        from: PathBuf,
        to: PathBuf,
    },
    /// The new registry could not be built (a source table names an unknown plugin, say).
    #[error("config file {}: {error}", path.display())]
    Registry {
        path: PathBuf,
        error: tributary_runtime::registry::StartError,
    },
    #[error("the reload stopped: {0}")]
    Stopped(String),
}

/// What a catalog's reloads did so far, as `ListPlugins` shows it. Held only for a moment: a reload
/// in progress (loading libraries, starting runners) holds [`ReloadInputs`] instead, so no request
/// path waits for a reload.
#[derive(Default)]
struct ReloadState {
    /// What a reload reads and writes; locked for the whole reload, so reloads run one at a time.
    inputs: Arc<std::sync::Mutex<ReloadInputs>>,
    /// How many library versions were replaced or removed so far (still mapped).
    retired: usize,
    last_at: Option<SystemTime>,
    last_error: Option<String>,
}

impl ReloadState {
    /// The reload inputs' lock, taken from `state` without holding `state` while a reload runs.
    fn inputs(state: &std::sync::Mutex<ReloadState>) -> Arc<std::sync::Mutex<ReloadInputs>> {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inputs
            .clone()
    }
}

/// How a catalog reloads.
#[derive(Default)]
struct ReloadInputs {
    /// The configuration file and the command-line overrides it was read with at start; `None`
    /// when the catalog was not built from a file (tests, benchmarks): reload is then refused.
    source: Option<(PathBuf, Overrides)>,
    /// The configuration the server started with: keys that need a restart are compared with it.
    running: Option<Config>,
    /// Library versions (by SHA-256) replaced or removed so far: still mapped.
    retired: BTreeSet<String>,
    max_retired: usize,
}

/// What one reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub generation: u64,
    pub added_libraries: Vec<String>,
    pub replaced_libraries: Vec<String>,
    pub removed_libraries: Vec<String>,
    pub rejected_libraries: Vec<String>,
    pub added_sources: Vec<String>,
    pub changed_sources: Vec<String>,
    pub removed_sources: Vec<String>,
    /// Keys whose new value takes effect only after a restart (the running value is kept).
    pub restart_needed: Vec<&'static str>,
}

impl ReloadSummary {
    fn is_empty(&self) -> bool {
        self.added_libraries.is_empty()
            && self.replaced_libraries.is_empty()
            && self.removed_libraries.is_empty()
            && self.rejected_libraries.is_empty()
            && self.added_sources.is_empty()
            && self.changed_sources.is_empty()
            && self.removed_sources.is_empty()
    }
}

impl From<ReloadSummary> for pb::ReloadResponse {
    fn from(s: ReloadSummary) -> pb::ReloadResponse {
        pb::ReloadResponse {
            generation: s.generation,
            added_libraries: s.added_libraries,
            replaced_libraries: s.replaced_libraries,
            removed_libraries: s.removed_libraries,
            rejected_libraries: s.rejected_libraries,
            added_sources: s.added_sources,
            changed_sources: s.changed_sources,
            removed_sources: s.removed_sources,
            restart_needed: s.restart_needed.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

/// Reloads the generation `current` points at: the service's Reload RPC, SIGHUP and the watcher
/// share one. Cheap to clone; a reload runs on a blocking thread with its own clone.
#[derive(Clone)]
pub struct Reloader {
    current: Arc<arc_swap::ArcSwap<Generation>>,
    metrics: Arc<Metrics>,
    state: Arc<std::sync::Mutex<ReloadState>>,
}

impl Reloader {
    /// A reloader of `current` that gives new sources their `metrics`; it refuses to reload until
    /// [`Reloader::enable`].
    pub fn new(current: Arc<arc_swap::ArcSwap<Generation>>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            current,
            metrics,
            state: Default::default(),
        }
    }

    /// Lets this reloader reload from `config_path` (read with `overrides`, like at start);
    /// `running` is the configuration the server was started with.
    pub fn enable(&self, config_path: PathBuf, overrides: Overrides, running: &Config) {
        let inputs = ReloadState::inputs(&self.state);
        let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
        inputs.source = Some((config_path, overrides));
        inputs.max_retired = running.max_retired_libraries;
        inputs.running = Some(running.clone());
    }

    /// Reloads on a blocking thread (loading libraries and building sources may read files and
    /// take a while); `trigger` names what asked, for the log. Reloads run one at a time.
    pub async fn reload_now(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        let reloader = self.clone();
        let trigger = trigger.to_owned();
        tokio::task::spawn_blocking(move || reloader.reload(&trigger))
            .await
            .map_err(|e| ReloadError::Stopped(e.to_string()))?
    }

    /// Adds the generation and the reload facts to a `ListPlugins` answer.
    pub fn facts(&self, listing: &mut pb::ListPluginsResponse, generation: u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        listing.generation = generation;
        listing.retired_libraries = state.retired as u32;
        listing.last_reload_unix = state.last_at.map(unix_seconds).unwrap_or(0);
        listing.last_reload_error = state.last_error.clone().unwrap_or_default();
    }

    /// One reload, on the calling thread.
    fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        let inputs = ReloadState::inputs(&self.state);
        let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.reload_locked(&mut inputs);
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.last_at = Some(SystemTime::now());
            state.retired = inputs.retired.len();
            state.last_error = result.as_ref().err().map(ToString::to_string);
        }
        self.metrics
            .record_reload(result.is_ok(), self.current.load().number);
        match &result {
            Ok(summary) => {
                if !summary.restart_needed.is_empty() {
                    let keys: Vec<String> = summary
                        .restart_needed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect();
                    tracing::warn!(
                        trigger,
                        "reload: {} changed in the config file and take(s) effect only after a restart; the running value(s) are kept",
                        keys.join(", ")
                    );
                }
                if summary.is_empty() {
                    tracing::info!(
                        trigger,
                        generation = summary.generation,
                        "reload: no library or [[source]] changed; the generation is kept"
                    );
                } else {
                    tracing::info!(
                        trigger,
                        generation = summary.generation,
                        added_libraries = ?summary.added_libraries,
                        replaced_libraries = ?summary.replaced_libraries,
                        removed_libraries = ?summary.removed_libraries,
                        rejected_libraries = ?summary.rejected_libraries,
                        added_sources = ?summary.added_sources,
                        changed_sources = ?summary.changed_sources,
                        removed_sources = ?summary.removed_sources,
                        "reloaded"
                    );
                }
                if inputs.retired.len() > inputs.max_retired {
                    tracing::warn!(
                        retired_libraries = inputs.retired.len(),
                        max_retired_libraries = inputs.max_retired,
                        "replaced and removed libraries stay mapped (a library is never unloaded); restart the server to give their memory back"
                    );
                }
            }
            Err(e) => {
                tracing::error!(
                    trigger,
                    "reload refused, the running generation keeps serving: {e}"
                );
            }
        }
        result
    }

    fn reload_locked(&self, inputs: &mut ReloadInputs) -> Result<ReloadSummary, ReloadError> {
        let Some((path, overrides)) = &inputs.source else {
            return Err(ReloadError::NotFromFile);
        };
        // A `ConfigError` names the file itself.
        let config = Config::load(path, overrides)?;
        let old = self.current.load_full();
        if config.plugin_dir != old.registry.plugin_dir {
            return Err(ReloadError::PluginDirChanged {
                path: path.clone(),
                from: old.registry.plugin_dir.clone(),
                to: config.plugin_dir.clone(),
            });
        }
        let restart_needed = inputs
            .running
            .as_ref()
            .map(|running| restart_keys(running, &config))
            .unwrap_or_default();
        let registry =
            Registry::reload(&config, &old.registry).map_err(|error| ReloadError::Registry {
                path: path.clone(),
                error,
            })?;
        let generation = Generation::new(old.number + 1, Arc::new(registry));
        let mut summary = summarize(&old, &generation);
        summary.restart_needed = restart_needed;
        if summary.is_empty() {
            // Nothing a request would see changed: the running generation stays, with its number.
            summary.generation = old.number;
            return Ok(summary);
        }
        for sha in loaded_versions(&old.registry).keys() {
            if !loaded_versions(&generation.registry).contains_key(sha) {
                inputs.retired.insert(sha.clone());
            }
        }
        crate::metrics::attach(&self.metrics, &generation);
        self.current.store(Arc::new(generation));
        Ok(summary)
    }
}

/// The keys that differ between the running configuration and a new one and take effect only
/// after a restart: everything but the `[[source]]` tables, the call limits new sources are built
/// with (`max_calls_per_source`, `unhealthy_backoff_ms`) and `allow_insecure_plugin_dir`, which a
/// reload applies. (`plugin_dir` is refused, not listed.)
pub fn restart_keys(running: &Config, new: &Config) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut keys = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    let (a, b) = (running, new);
    check("listen", a.listen != b.listen);
    check("metrics_listen", a.metrics_listen != b.metrics_listen);
    check("tls", differs(&a.tls, &b.tls));
    check("auth", differs(&a.auth, &b.auth));
    check("log_level", a.log_level != b.log_level);
    check("on_source_error", a.on_source_error != b.on_source_error);
    check("source_timeout_ms", a.source_timeout != b.source_timeout);
    check("request_timeout_ms", a.request_timeout != b.request_timeout);
    check(
        "handshake_timeout_ms",
        a.handshake_timeout != b.handshake_timeout,
    );
    check("idle_timeout_ms", a.idle_timeout != b.idle_timeout);
    check("stall_timeout_ms", a.stall_timeout != b.stall_timeout);
    check(
        "request_body_timeout_ms",
        a.request_body_timeout != b.request_body_timeout,
    );
    check(
        "max_streams_per_connection",
        a.max_streams_per_connection != b.max_streams_per_connection,
    );
    check("max_page_bytes", a.max_page_bytes != b.max_page_bytes);
    check(
        "max_requests_in_flight",
        a.max_requests_in_flight != b.max_requests_in_flight,
    );
    check(
        "request_queue_ms",
        a.request_queue_wait != b.request_queue_wait,
    );
    check(
        "max_searches_in_flight",
        a.max_searches_in_flight != b.max_searches_in_flight,
    );
    check("max_connections", a.max_connections != b.max_connections);
    check(
        "cors_allowed_origins",
        a.cors_allowed_origins != b.cors_allowed_origins,
    );
    check("web_ui", a.web_ui != b.web_ui);
    check("inline_calls", a.inline_calls != b.inline_calls);
    check("watch", a.watch != b.watch);
    check("reload_debounce_ms", a.reload_debounce != b.reload_debounce);
    check(
        "max_retired_libraries",
        a.max_retired_libraries != b.max_retired_libraries,
    );
    check("start_degraded", a.start_degraded != b.start_degraded);
    keys
}

/// Loaded library versions by SHA-256: (name, version, path).
fn loaded_versions(registry: &Registry) -> BTreeMap<String, (String, String, PathBuf)> {
    registry
        .files
        .iter()
        .filter_map(|f| {
            f.outcome.as_ref().ok().map(|p| {
                (
                    f.sha256.clone(),
                    (p.meta.name.clone(), p.meta.version.clone(), f.path.clone()),
                )
            })
        })
        .collect()
}

fn summarize(old: &Generation, new: &Generation) -> ReloadSummary {
    let before = loaded_versions(&old.registry);
    let after = loaded_versions(&new.registry);
    let show = |(name, version, path): &(String, String, PathBuf)| {
        format!("{name} {version} ({})", path.display())
    };
    let mut summary = ReloadSummary {
        generation: new.number,
        ..ReloadSummary::default()
    };
    for (sha, lib) in &after {
        if before.contains_key(sha) {
            continue;
        }
        match before.values().find(|b| b.0 == lib.0) {
            Some(previous) => summary.replaced_libraries.push(format!(
                "{} {} -> {} ({})",
                lib.0,
                previous.1,
                lib.1,
                lib.2.display()
            )),
            None => summary.added_libraries.push(show(lib)),
        }
    }
    for (sha, lib) in &before {
        if !after.contains_key(sha) && !after.values().any(|a| a.0 == lib.0) {
            summary.removed_libraries.push(show(lib));
        }
    }
    for f in &new.registry.files {
        if let Err(reason) = &f.outcome {
            let known = old
                .registry
                .files
                .iter()
                .any(|o| o.outcome.is_err() && o.path == f.path && o.sha256 == f.sha256);
            if !known {
                summary
                    .rejected_libraries
                    .push(format!("{}: {reason}", f.path.display()));
            }
        }
    }
    for entry in &new.registry.sources {
        match old.registry.source(&entry.name) {
            None => summary.added_sources.push(entry.name.clone()),
            Some(previous) => {
                let kept = match (&previous.state, &entry.state) {
                    (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
                    (Err(a), Err(b)) => a.to_string() == b.to_string(),
                    _ => false,
                };
                if !kept {
                    summary.changed_sources.push(entry.name.clone());
                }
            }
        }
    }
    for entry in &old.registry.sources {
        if new.registry.source(&entry.name).is_none() {
            summary.removed_sources.push(entry.name.clone());
        }
    }
    summary
}

/// What the watcher compares: each library's and the configuration file's size and modification
/// time.
fn stamp(plugin_dir: &Path, config: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(plugin_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(is_library_name))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.push(config.to_path_buf());
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

/// Whether `path` (as the watcher reports it) is a library (`lib*.so`) in the plugin directory, is
/// that directory, or is the configuration file. Other files in the plugin directory (a log written
/// there, say) start no reload.
fn names_plugin_or_config(path: &Path, plugin_dir: &Path, config: &Path) -> bool {
    let library = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_library_name);
    (path.parent() == Some(plugin_dir) && library)
        || path == plugin_dir
        || (path.file_name().is_some() && path.file_name() == config.file_name())
}

/// Which file the configuration path leads to (through symbolic links, as a Kubernetes ConfigMap
/// volume swaps them), with its size and modification time.
fn config_stamp(config: &Path) -> (Option<PathBuf>, u64, Option<SystemTime>) {
    let meta = std::fs::metadata(config).ok();
    (
        std::fs::canonicalize(config).ok(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
    )
}

/// Watches the plugin directory and the configuration file and reloads `catalog` when they have
/// changed and then stayed unchanged for `debounce`. Runs until the process ends; an error setting
/// up the watch is logged (SIGHUP and the RPC still work).
pub async fn watch(reloader: Reloader, plugin_dir: PathBuf, config: PathBuf, debounce: Duration) {
    use notify::{RecursiveMode, Watcher};
    // `true` for a change in the plugin directory or to the configuration file by name; `false`
    // for one to another file beside the configuration file, which matters only if the file the
    // configuration path leads to changed with it (see `config_stamp`).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let handler = {
        let (plugin_dir, config) = (plugin_dir.clone(), config.clone());
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if event.kind.is_access() {
                    return;
                }
                let named = event
                    .paths
                    .iter()
                    .any(|path| names_plugin_or_config(path, &plugin_dir, &config));
                let _ = tx.send(named);
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(
                "cannot watch the plugin directory ({e}); reload with SIGHUP or the Reload RPC"
            );
            return;
        }
    };
    if let Err(e) = watcher.watch(&plugin_dir, RecursiveMode::NonRecursive) {
        tracing::error!(dir = %plugin_dir.display(), "cannot watch the plugin directory ({e}); reload with SIGHUP or the Reload RPC");
        return;
    }
    // The folder holding the configuration file, so that an editor's rename-into-place is seen.
    let config_dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if config_dir != plugin_dir {
        if let Err(e) = watcher.watch(&config_dir, RecursiveMode::NonRecursive) {
            tracing::warn!(file = %config.display(), "cannot watch the configuration file ({e}); reload it with SIGHUP or the Reload RPC");
        }
    }
    tracing::info!(dir = %plugin_dir.display(), config = %config.display(), debounce_ms = debounce.as_millis() as u64, "watching for plugin and configuration changes");
    let mut config_at_reload = config_stamp(&config);
    while let Some(mut named) = rx.recv().await {
        // Quiet for the whole window, and every stamp unchanged across it.
        loop {
            let before = stamp(&plugin_dir, &config);
            tokio::time::sleep(debounce).await;
            let mut more = false;
            while let Ok(also_named) = rx.try_recv() {
                // Only a change to the plugin directory or the config file keeps the window open:
                // a log written beside the config all the time must not hold a reload back (the
                // stamps still see a config swapped through its links).
                more |= also_named;
                named |= also_named;
            }
            if !more && stamp(&plugin_dir, &config) == before {
                break;
            }
        }
        // Only other files beside the configuration file changed (the server's own log, say, whose
        // every line would otherwise start another reload), and the configuration is the same file
        // as at the last reload: nothing to do.
        let now = config_stamp(&config);
        if !named && now == config_at_reload {
            continue;
        }
        config_at_reload = now;
        let _ = reloader.reload_now("file watcher").await;
    }
    drop(watcher);
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_seconds(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_plugin_api::{
        ffi::source_box, Detail, ListRequest, PackageSource, PluginError, Summary,
    };
    use tributary_runtime::{
        call::SourceHandle,
        loader::{LoadedPlugin, PluginFile, PluginMeta, Rejection, RejectionKind},
        registry::SourceEntry,
    };

    fn parse(text: &str) -> Config {
        Config::parse(
            &format!("plugin_dir = \"plugins\"\n{text}\n"),
            Path::new("test.toml"),
            Path::new("/etc/tributary"),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Every key of the configuration file but the ones a reload applies, with a value other than
    /// its default.
    const RESTART_KEYS: &[(&str, &str)] = &[
        ("listen", "listen = \"127.0.0.1:7001\""),
        ("metrics_listen", "metrics_listen = \"127.0.0.1:7002\""),
        (
            "tls",
            "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"",
        ),
        (
            "auth",
            "[auth]\n[[auth.identity]]\nname = \"ops\"\nsources = [\"*\"]",
        ),
        ("log_level", "log_level = \"debug\""),
        ("on_source_error", "on_source_error = \"fail\""),
        ("source_timeout_ms", "source_timeout_ms = 1234"),
        ("request_timeout_ms", "request_timeout_ms = 1234"),
        ("handshake_timeout_ms", "handshake_timeout_ms = 1234"),
        ("idle_timeout_ms", "idle_timeout_ms = 1234"),
        ("stall_timeout_ms", "stall_timeout_ms = 1234"),
        ("request_body_timeout_ms", "request_body_timeout_ms = 1234"),
        (
            "max_streams_per_connection",
            "max_streams_per_connection = 7",
        ),
        ("max_page_bytes", "max_page_bytes = 2000000"),
        ("max_requests_in_flight", "max_requests_in_flight = 7"),
        ("request_queue_ms", "request_queue_ms = 1234"),
        ("max_searches_in_flight", "max_searches_in_flight = 7"),
        ("max_connections", "max_connections = 7"),
        (
            "cors_allowed_origins",
            "cors_allowed_origins = [\"https://example.com\"]",
        ),
        ("web_ui", "web_ui = false"),
        ("inline_calls", "inline_calls = false"),
        ("watch", "watch = false"),
        ("reload_debounce_ms", "reload_debounce_ms = 1234"),
        ("max_retired_libraries", "max_retired_libraries = 7"),
        ("start_degraded", "start_degraded = true"),
    ];

    #[test]
    fn each_key_that_needs_a_restart_is_named() {
        let running = parse("");
        assert_eq!(restart_keys(&running, &running), Vec::<&str>::new());
        for (key, line) in RESTART_KEYS {
            assert_eq!(restart_keys(&running, &parse(line)), [*key], "{line}");
            assert_eq!(
                restart_keys(&parse(line), &running),
                [*key],
                "back from {line}"
            );
        }
        // Several at once, in the order above.
        let lines: Vec<&str> = RESTART_KEYS.iter().map(|(_, line)| *line).collect();
        // Tables last: a key below a table header would belong to it.
        let (tables, keys): (Vec<&str>, Vec<&str>) =
            lines.into_iter().partition(|l| l.starts_with('['));
        let all = parse(&[keys, tables].concat().join("\n"));
        let mut named = restart_keys(&running, &all);
        named.sort_unstable();
        let mut expected: Vec<&str> = RESTART_KEYS.iter().map(|(key, _)| *key).collect();
        expected.sort_unstable();
        assert_eq!(named, expected);
    }

    #[test]
    fn sources_and_call_limits_take_effect_without_a_restart() {
        let running = parse("");
        for line in [
            "[[source]]\nname = \"one\"\nplugin = \"catalog\"",
            "[[source]]\nname = \"one\"\nplugin = \"catalog\"\nisolation = \"process\"",
            "max_calls_per_source = 3",
            "unhealthy_backoff_ms = 1234",
            "allow_insecure_plugin_dir = true",
        ] {
            let new = parse(line);
            assert!(
                format!("{running:?}") != format!("{new:?}"),
                "{line} changes the configuration"
            );
            assert_eq!(restart_keys(&running, &new), Vec::<&str>::new(), "{line}");
        }
        // A new plugin directory is refused by the reload, not listed.
        let moved = Config {
            plugin_dir: PathBuf::from("/elsewhere"),
            ..running.clone()
        };
        assert_eq!(restart_keys(&running, &moved), Vec::<&str>::new());
    }

    struct Empty;

    impl PackageSource for Empty {
        fn list(&self, _: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(Vec::new())
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    fn meta(name: &str, version: &str) -> PluginMeta {
        PluginMeta {
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            interface: tributary_plugin_api::INTERFACE_VERSION,
            capabilities: Vec::new(),
        }
    }

    /// The library `/plugins/<file>` holding plugin `name` `version`.
    fn library(file: &str, sha256: &str, name: &str, version: &str) -> PluginFile {
        let path = PathBuf::from("/plugins").join(file);
        PluginFile {
            path: path.clone(),
            sha256: sha256.to_owned(),
            meta: Some(meta(name, version)),
            outcome: Ok(LoadedPlugin {
                meta: meta(name, version),
                path,
                module: None,
            }),
            loaded_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn rejected(file: &str, sha256: &str, reason: &str) -> PluginFile {
        PluginFile {
            path: PathBuf::from("/plugins").join(file),
            sha256: sha256.to_owned(),
            meta: None,
            outcome: Err(Rejection::new(RejectionKind::NotAPlugin, reason)),
            loaded_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn ready(name: &str) -> Result<Arc<SourceHandle>, PluginError> {
        Ok(Arc::new(SourceHandle::new(
            name,
            "alpha",
            source_box(Empty),
        )))
    }

    fn generation(
        number: u64,
        files: Vec<PluginFile>,
        sources: Vec<(&str, &Result<Arc<SourceHandle>, PluginError>)>,
    ) -> Generation {
        let mut sources: Vec<SourceEntry> = sources
            .into_iter()
            .map(|(name, state)| SourceEntry {
                name: name.to_owned(),
                plugin: "alpha".to_owned(),
                state: state.clone(),
                built_from: None,
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        Generation::new(
            number,
            Arc::new(Registry {
                plugin_dir: PathBuf::from("/plugins"),
                files,
                sources,
            }),
        )
    }

    #[test]
    fn a_summary_names_what_changed() {
        let kept = ready("kept");
        let down = Err(PluginError::unavailable("down"));
        let old = generation(
            4,
            vec![
                library("libalpha.so", "a1", "alpha", "1.0.0"),
                library("libbeta.so", "b1", "beta", "1.0.0"),
                library("libgamma.so", "g1", "gamma", "1.0.0"),
                rejected("libbad.so", "x1", "not a plugin"),
            ],
            vec![
                ("kept", &kept),
                ("changed", &ready("changed")),
                ("still-down", &down),
                ("down-otherwise", &down),
                ("recovered", &down),
                ("removed", &ready("removed")),
            ],
        );
        let new = generation(
            5,
            vec![
                library("libalpha.so", "a2", "alpha", "2.0.0"),
                library("libbeta.so", "b1", "beta", "1.0.0"),
                library("libdelta.so", "d1", "delta", "0.1.0"),
                rejected("libbad.so", "x1", "not a plugin"),
                rejected("libworse.so", "y1", "interface 2.0 is not supported"),
            ],
            vec![
                ("kept", &kept),
                ("changed", &ready("changed")),
                ("still-down", &Err(PluginError::unavailable("down"))),
                ("down-otherwise", &Err(PluginError::unavailable("gone"))),
                ("recovered", &ready("recovered")),
                ("added", &ready("added")),
            ],
        );
        assert_eq!(
            summarize(&old, &new),
            ReloadSummary {
                generation: 5,
                added_libraries: vec!["delta 0.1.0 (/plugins/libdelta.so)".into()],
                replaced_libraries: vec!["alpha 1.0.0 -> 2.0.0 (/plugins/libalpha.so)".into()],
                removed_libraries: vec!["gamma 1.0.0 (/plugins/libgamma.so)".into()],
                rejected_libraries: vec![
                    "/plugins/libworse.so: interface 2.0 is not supported".into()
                ],
                added_sources: vec!["added".into()],
                changed_sources: vec![
                    "changed".into(),
                    "down-otherwise".into(),
                    "recovered".into()
                ],
                removed_sources: vec!["removed".into()],
                restart_needed: Vec::new(),
            }
        );
    }

    #[test]
    fn a_rejected_new_version_is_named_and_replaces_nothing() {
        let one = ready("one");
        let old = generation(
            1,
            vec![library("libalpha.so", "a1", "alpha", "1.0.0")],
            vec![("one", &one)],
        );
        let reason = "interface 2.0 is not supported; the previous version (alpha 1.0.0, sha256 a1) keeps serving";
        let new = generation(
            2,
            vec![
                library("libalpha.so", "a1", "alpha", "1.0.0"),
                rejected("libalpha.so", "a2", reason),
            ],
            vec![("one", &one)],
        );
        let summary = summarize(&old, &new);
        assert_eq!(
            summary,
            ReloadSummary {
                generation: 2,
                rejected_libraries: vec![format!("/plugins/libalpha.so: {reason}")],
                ..ReloadSummary::default()
            }
        );
        assert!(!summary.is_empty());
        // The same rejected file at the next reload is not news.
        let next = generation(3, new.registry.files.clone(), vec![("one", &one)]);
        let summary = summarize(&new, &next);
        assert_eq!(
            summary,
            ReloadSummary {
                generation: 3,
                ..ReloadSummary::default()
            }
        );
        assert!(summary.is_empty());
    }
}
