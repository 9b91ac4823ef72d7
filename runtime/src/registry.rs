//! The registry: every plugin file and every source, built once at start from the configuration.
//!
//! A source is one plugin instance with one configuration; every source comes from a `[[source]]`.
//! A loaded plugin that no `[[source]]` names serves nothing: it is listed as loaded and idle, not
//! failed (most plugins need configuration, so a source built from `{}` would only fail). A source whose constructor fails (or panics) is kept, marked failed with the
//! reason, so that `ListPlugins` and every page can say why it is missing.

use std::{path::PathBuf, sync::Arc};

use tributary_plugin_api::PluginError;

use crate::{
    call::SourceHandle,
    config::{Config, SourceConfig},
    loader::{self, LoadedPlugin, PluginFile, Rejection, RejectionKind, ScanError},
};

/// One set of loaded libraries and built sources.
pub struct Generation {
    /// 1 at start, one more after each reload that took effect.
    pub number: u64,
    pub registry: Arc<Registry>,
    /// Every ready source, in name order.
    pub ready: Vec<Arc<SourceHandle>>,
}

impl Generation {
    pub fn new(number: u64, registry: Arc<Registry>) -> Generation {
        let ready = registry
            .sources
            .iter()
            .filter_map(|s| s.state.as_ref().ok().cloned())
            .collect();
        Generation {
            number,
            registry,
            ready,
        }
    }
}

/// A source as the registry records it.
pub struct SourceEntry {
    pub name: String,
    pub plugin: String,
    pub state: Result<Arc<SourceHandle>, PluginError>,
    /// The `[[source]]` table and the SHA-256 of the library it was built from (`None` for sources
    /// made by tests): a reload keeps the source as it is when neither changed.
    pub built_from: Option<(SourceConfig, String)>,
}

/// Where a source stands now: the one rule health, metrics and `ListPlugins` all report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// It failed at start (its constructor, its library, or its runner's first start): `reason`.
    Failed(String),
    /// Its runner is loading the library and building the source; `pid` is the runner's.
    Starting {
        pid: Option<u32>,
        for_so_far: std::time::Duration,
    },
    /// Backing off after calls overran its timeout: not called until the back-off ends.
    Unhealthy(crate::call::Condition),
    /// Called, but its last `consecutive` calls all failed.
    Failing { consecutive: u32 },
    /// Called, and answering.
    Ready,
}

impl SourceState {
    /// Whether the source is called at all (ready or failing): `tributary_source_up`.
    pub fn takes_calls(&self) -> bool {
        matches!(self, SourceState::Ready | SourceState::Failing { .. })
    }
}

impl SourceEntry {
    /// Where the source stands now.
    pub fn state_now(&self) -> SourceState {
        let source = match &self.state {
            Err(e) => return SourceState::Failed(e.to_string()),
            Ok(source) => source,
        };
        if let Some(status) = source.runner.as_ref().map(|r| r.status()) {
            if let Some(e) = status.start_failed {
                return SourceState::Failed(e.to_string());
            }
            if let Some(for_so_far) = status.starting {
                return SourceState::Starting {
                    pid: status.pid,
                    for_so_far,
                };
            }
        }
        match source.health.condition() {
            crate::call::Condition::Healthy => {
                let history = source.health.history();
                if history.failing() {
                    SourceState::Failing {
                        consecutive: history.consecutive_failures,
                    }
                } else {
                    SourceState::Ready
                }
            }
            unhealthy => SourceState::Unhealthy(unhealthy),
        }
    }
}

/// Everything loaded at start.
pub struct Registry {
    pub plugin_dir: PathBuf,
    pub files: Vec<PluginFile>,
    /// Sorted by name: the merge order of sources.
    pub sources: Vec<SourceEntry>,
}

/// Why the server cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The plugin directory, or a folder above it, could be changed by someone else.
    #[error("{0}")]
    InsecurePluginDir(String),
    #[error(
        "key `source[{index}].plugin`: no plugin named {plugin:?} in {dir} (loaded: {loaded})"
    )]
    UnknownPlugin {
        index: usize,
        plugin: String,
        dir: PathBuf,
        loaded: String,
    },
}

impl Registry {
    /// Scans the plugin directory, loads every library and builds every source.
    ///
    /// Fails only when the directory cannot be read, is insecure (with strict permissions), or a `[[source]]` names a plugin that is neither
    /// loaded nor possibly among the rejected files (a typo): a rejected library never stops the start.
    pub fn load(config: &Config) -> Result<Registry, StartError> {
        let paths = loader::scan(&config.plugin_dir)?;
        if paths.is_empty() {
            tracing::warn!(
                dir = %config.plugin_dir.display(),
                "the plugin directory holds no plugin libraries (lib*.so); the catalog will be empty"
            );
        }
        if config.strict_permissions {
            if let Some(reason) = loader::insecure_path_reason(&config.plugin_dir, "plugin_dir") {
                return Err(StartError::InsecurePluginDir(reason));
            }
        }
        let files = loader::load_all_with(
            &paths,
            config.strict_permissions,
            &[],
            inspection(config).as_ref(),
        );
        Registry::build(config, files)
    }

    /// Builds the sources from already-loaded files.
    pub fn build(config: &Config, files: Vec<PluginFile>) -> Result<Registry, StartError> {
        Registry::build_from(config, files, None)
    }

    /// The next generation, for a reload: the plugin directory scanned again and `config` (read
    /// again) applied on top of `previous`.
    ///
    /// - A library whose bytes (SHA-256) were already loaded is not loaded again; a new or changed one
    ///   is loaded from a private copy like at start.
    /// - A library that was serving and whose file now holds bytes that are rejected keeps serving:
    ///   both are listed, the rejected one with its reason.
    /// - A source whose `[[source]]` table and library are unchanged is kept as it is (same calls in
    ///   flight, same health, same back-off); others are built anew; sources no longer configured
    ///   are retired (dropped once the requests that use them finish).
    /// - A `[[source]]` naming a plugin that is not loaded becomes a failed source (at start it is a
    ///   configuration error).
    pub fn reload(config: &Config, previous: &Registry) -> Result<Registry, StartError> {
        let paths = loader::scan(&config.plugin_dir)?;
        if config.strict_permissions {
            if let Some(reason) = loader::insecure_path_reason(&config.plugin_dir, "plugin_dir") {
                return Err(StartError::InsecurePluginDir(reason));
            }
        }
        let files = loader::load_all_with(
            &paths,
            config.strict_permissions,
            &previous.files,
            inspection(config).as_ref(),
        );
        Registry::reload_with(config, files, previous)
    }

    /// [`Registry::reload`] once the plugin directory has been loaded again: `files` as the loader
    /// found them (a library whose bytes `previous` holds is its file, not loaded again).
    fn reload_with(
        config: &Config,
        mut files: Vec<PluginFile>,
        previous: &Registry,
    ) -> Result<Registry, StartError> {
        for old in previous.files.iter().filter(|f| f.outcome.is_ok()) {
            let Some(meta) = &old.meta else { continue };
            let still_loaded = files
                .iter()
                .any(|f| f.outcome.as_ref().is_ok_and(|p| p.meta.name == meta.name));
            let replaced_by_reject = files
                .iter()
                .any(|f| f.path == old.path && f.outcome.is_err());
            if still_loaded || !replaced_by_reject {
                continue;
            }
            for f in files
                .iter_mut()
                .filter(|f| f.path == old.path && f.outcome.is_err())
            {
                if let Err(reason) = &mut f.outcome {
                    reason
                        .previous_kept
                        .get_or_insert_with(|| kept_version(meta, &old.sha256));
                }
            }
            tracing::warn!(
                path = %old.path.display(),
                plugin = %meta.name,
                "the new library was rejected; the previous version keeps serving"
            );
            files.push(old.clone());
        }
        sort_files(&mut files);
        let registry = Registry::build_from(config, files.clone(), Some(previous))?;

        // A new library version that cannot build a source the previous version served is rejected
        // too, and the previous version kept.
        let mut bad: Vec<(String, String)> = Vec::new();
        for entry in &registry.sources {
            let (Err(e), Some((_, sha))) = (&entry.state, &entry.built_from) else {
                continue;
            };
            let served_by = previous
                .source(&entry.name)
                .filter(|old| old.state.is_ok())
                .and_then(|old| old.built_from.as_ref());
            let new_version = !previous.files.iter().any(|f| &f.sha256 == sha);
            if let Some((_, old_sha)) = served_by {
                if old_sha != sha && new_version && !bad.iter().any(|(b, _)| b == sha) {
                    bad.push((
                        sha.clone(),
                        format!("source {:?} could not be built with it: {e}", entry.name),
                    ));
                }
            }
        }
        if bad.is_empty() {
            return Ok(registry);
        }
        drop(registry);
        for (sha, reason) in bad {
            let Some(i) = files
                .iter()
                .position(|f| f.sha256 == sha && f.outcome.is_ok())
            else {
                continue;
            };
            let name = files[i].meta.as_ref().map(|m| m.name.clone());
            let old = previous
                .files
                .iter()
                .find(|o| o.outcome.is_ok() && o.meta.as_ref().map(|m| &m.name) == name.as_ref());
            if let Some(old) = old {
                let meta = old.meta.as_ref().expect("a loaded file has metadata");
                tracing::warn!(
                    path = %files[i].path.display(),
                    plugin = %meta.name,
                    "the new library was rejected ({reason}); the previous version keeps serving"
                );
                files[i].outcome = Err(Rejection {
                    kind: RejectionKind::SourceFailed,
                    detail: reason,
                    previous_kept: Some(kept_version(meta, &old.sha256)),
                });
                files.push(old.clone());
            }
        }
        sort_files(&mut files);
        Registry::build_from(config, files, Some(previous))
    }

    fn build_from(
        config: &Config,
        files: Vec<PluginFile>,
        previous: Option<&Registry>,
    ) -> Result<Registry, StartError> {
        let loaded: Vec<(&LoadedPlugin, &str)> = files
            .iter()
            .filter_map(|f| f.outcome.as_ref().ok().map(|p| (p, f.sha256.as_str())))
            .collect();
        let unnamed_rejects = files
            .iter()
            .filter(|f| f.outcome.is_err() && f.meta.is_none())
            .count();

        let mut sources = Vec::new();
        // Sources taken over unchanged from the previous generation: not announced again.
        let mut kept_names: Vec<&str> = Vec::new();
        // Sources (by index in `sources`) whose runner this call began to start.
        let mut new_runners = Vec::new();
        for (index, sc) in config.sources.iter().enumerate() {
            let mut built_from = None;
            let state = match loaded.iter().find(|(p, _)| p.meta.name == sc.plugin) {
                Some((plugin, sha256)) => {
                    built_from = Some((sc.clone(), sha256.to_string()));
                    // An isolated source whose runner never started is built again.
                    let kept = previous
                        .and_then(|r| r.source(&sc.name))
                        .filter(|old| old.built_from == built_from)
                        .and_then(|old| old.state.as_ref().ok().cloned())
                        .filter(|old| {
                            old.runner
                                .as_ref()
                                .is_none_or(|r| r.status().start_failed.is_none())
                        });
                    match kept {
                        Some(source) => {
                            kept_names.push(&sc.name);
                            Ok(source)
                        }
                        None => {
                            let built = construct(plugin, sha256, sc, config);
                            if built.as_ref().is_ok_and(|s| s.runner.is_some()) {
                                new_runners.push(sources.len());
                            }
                            built
                        }
                    }
                }
                None if previous.is_some() => Err(PluginError::unavailable(format!(
                    "no loaded plugin is named {:?} in {}",
                    sc.plugin,
                    config.plugin_dir.display()
                ))),
                None => {
                    let rejected_with_name = files.iter().find(|f| {
                        f.outcome.is_err() && f.meta.as_ref().is_some_and(|m| m.name == sc.plugin)
                    });
                    match (rejected_with_name, unnamed_rejects) {
                        (Some(file), _) => Err(PluginError::unavailable(format!(
                            "plugin {:?} was rejected: {}",
                            sc.plugin,
                            file.outcome.as_ref().err().map(ToString::to_string).unwrap_or_default()
                        ))),
                        (None, n) if n > 0 => Err(PluginError::unavailable(format!(
                            "no loaded plugin is named {:?}; {n} library file(s) in {} were rejected, see ListPlugins or `tributary plugins`",
                            sc.plugin,
                            config.plugin_dir.display()
                        ))),
                        (None, _) => {
                            return Err(StartError::UnknownPlugin {
                                index,
                                plugin: sc.plugin.clone(),
                                dir: config.plugin_dir.clone(),
                                loaded: if loaded.is_empty() {
                                    "none".to_owned()
                                } else {
                                    loaded.iter().map(|(p, _)| p.meta.name.as_str()).collect::<Vec<_>>().join(", ")
                                },
                            })
                        }
                    }
                }
            };
            sources.push(SourceEntry {
                name: sc.name.clone(),
                plugin: sc.plugin.clone(),
                state,
                built_from,
            });
        }

        // At start the server listens while runners come up (their sources are `starting`). A
        // reload waits for the runners it started (all at once, within the source timeout), so
        // that a new version whose source cannot start is rejected like an in-process one.
        if previous.is_some() {
            let deadline = std::time::Instant::now() + config.source_timeout + RUNNER_SPAWN_MARGIN;
            for i in new_runners {
                let entry: &mut SourceEntry = &mut sources[i];
                let failed = entry
                    .state
                    .as_ref()
                    .ok()
                    .and_then(|s| s.runner.as_ref())
                    .and_then(|r| r.wait_started(deadline).err());
                if let Some(e) = failed {
                    entry.state = Err(e);
                }
            }
        }

        for (plugin, _) in &loaded {
            if !config.sources.iter().any(|s| s.plugin == plugin.meta.name) {
                tracing::info!(plugin = %plugin.meta.name, "plugin loaded and idle: no [[source]] names it");
            }
        }

        sources.sort_by(|a, b| a.name.cmp(&b.name));
        for s in &sources {
            if kept_names.contains(&s.name.as_str()) {
                continue;
            }
            match &s.state {
                Ok(source)
                    if source
                        .runner
                        .as_ref()
                        .is_some_and(|r| r.status().starting.is_some()) =>
                {
                    tracing::info!(source = %s.name, plugin = %s.plugin, "source starting (its runner loads the library and builds the source)")
                }
                Ok(_) => {
                    tracing::info!(source = %s.name, plugin = %s.plugin, "source ready")
                }
                Err(e) => {
                    tracing::warn!(source = %s.name, plugin = %s.plugin, "source failed: {e}")
                }
            }
        }
        Ok(Registry {
            plugin_dir: config.plugin_dir.clone(),
            files,
            sources,
        })
    }

    /// Waits until every isolated source's runner has started or failed to (at most `source_timeout`
    /// plus the time to spawn it): `tributary plugins` reports how each start ended.
    pub fn wait_for_runners(&self, source_timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + source_timeout + RUNNER_SPAWN_MARGIN;
        for source in self.sources.iter().filter_map(|s| s.state.as_ref().ok()) {
            if let Some(runner) = &source.runner {
                let _ = runner.wait_started(deadline);
            }
        }
    }

    /// A registry of in-process sources, for tests and benchmarks.
    pub fn from_sources(sources: Vec<SourceHandle>) -> Registry {
        let mut sources: Vec<SourceEntry> = sources
            .into_iter()
            .map(|s| SourceEntry {
                name: s.name.to_string(),
                plugin: s.plugin.to_string(),
                state: Ok(Arc::new(s)),
                built_from: None,
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        Registry {
            plugin_dir: PathBuf::new(),
            files: Vec::new(),
            sources,
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceEntry> {
        self.sources
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.sources[i])
    }
}

/// With at least one isolated source, every library is first opened in an inspector child process
/// ([`loader::inspect`]) and only those that in-process sources name are opened in the server: a
/// library that only isolated sources use never runs code (not even its ELF initialisers) here.
fn inspection(config: &Config) -> Option<loader::Inspection> {
    if config.sources.iter().all(|s| s.isolation.is_none()) {
        return None;
    }
    let program = crate::isolation::runner_program_path()?;
    Some(loader::Inspection {
        program,
        in_process: config
            .sources
            .iter()
            .filter(|s| s.isolation.is_none())
            .map(|s| s.plugin.clone())
            .collect(),
    })
}

/// Time for a runner process to be spawned, on top of the source timeout its start is given.
const RUNNER_SPAWN_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Files by path, a loaded one before a rejected one at the same path.
fn sort_files(files: &mut [PluginFile]) {
    files.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then(a.outcome.is_err().cmp(&b.outcome.is_err()))
    });
}

/// Calls the plugin's constructor with the source's JSON configuration plus `$base_dir`.
fn construct(
    plugin: &LoadedPlugin,
    sha256: &str,
    sc: &SourceConfig,
    config: &Config,
) -> Result<Arc<SourceHandle>, PluginError> {
    let text = loader::source_config_text(&sc.config, &config.base_dir);
    let built = match &sc.isolation {
        Some(isolation) => crate::isolation::start_for(plugin, sha256, sc, isolation, config, text)
            .map(|(imp, runner)| (imp, Some(runner))),
        None => plugin
            .new_source(&sc.name, &text, &config.base_dir, config.source_timeout)
            .map(|imp| (imp, None)),
    };
    let (imp, runner) = built?;
    let mut source =
        SourceHandle::with_limits(&sc.name, &plugin.meta.name, imp, config.call_limits)
            .with_capabilities(&plugin.meta.capabilities);
    source.runner = runner;
    Ok(Arc::new(source))
}

/// How a rejection names the earlier version that keeps serving: "name version, sha256 prefix".
fn kept_version(meta: &crate::loader::PluginMeta, sha256: &str) -> String {
    format!(
        "{} {}, sha256 {}",
        meta.name,
        meta.version,
        &sha256[..sha256.len().min(12)]
    )
}

#[cfg(test)]
mod tests {
    //! The reload bookkeeping over plugins linked into the test binary: each is the root module a
    //! library exports ([`tributary_plugin_api::ffi::root_module`]), described by hand-made
    //! [`PluginFile`]s as the loader would after reading the plugin directory.

    use std::time::SystemTime;

    use tributary_plugin_api::{
        ffi::root_module, Detail, Host, ListRequest, PackageSource, Plugin, PluginMod_Ref, Summary,
    };

    use super::*;
    use crate::loader::PluginMeta;

    struct Empty;

    impl PackageSource for Empty {
        fn list(&self, _: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(Vec::new())
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    /// `alpha` 1.0.0: builds a source unless its configuration says `"fail": true`.
    struct Alpha;

    impl Plugin for Alpha {
        const NAME: &'static str = "alpha";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "test plugin";
        type Source = Empty;
        fn new_source(_: Host, config: &str) -> Result<Empty, PluginError> {
            let config: serde_json::Value = serde_json::from_str(config).unwrap();
            match config.get("fail") {
                Some(serde_json::Value::Bool(true)) => {
                    Err(PluginError::invalid_config("key `fail`: asked to"))
                }
                _ => Ok(Empty),
            }
        }
    }

    /// `alpha` 2.0.0, which builds no source.
    struct AlphaBroken;

    impl Plugin for AlphaBroken {
        const NAME: &'static str = "alpha";
        const VERSION: &'static str = "2.0.0";
        const DESCRIPTION: &'static str = "test plugin";
        type Source = Empty;
        fn new_source(_: Host, _: &str) -> Result<Empty, PluginError> {
            Err(PluginError::internal("alpha 2.0.0 builds no source"))
        }
    }

    /// `beta`, whatever its version: builds every source.
    struct Beta;

    impl Plugin for Beta {
        const NAME: &'static str = "beta";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "test plugin";
        type Source = Empty;
        fn new_source(_: Host, _: &str) -> Result<Empty, PluginError> {
            Ok(Empty)
        }
    }

    const ALPHA_1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const ALPHA_2: &str = "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";
    const BETA_1: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";
    const BETA_2: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

    fn meta(name: &str, version: &str) -> PluginMeta {
        PluginMeta {
            name: name.to_owned(),
            version: version.to_owned(),
            description: "test plugin".to_owned(),
            interface: tributary_plugin_api::INTERFACE_VERSION,
            capabilities: Vec::new(),
        }
    }

    fn path(name: &str) -> PathBuf {
        PathBuf::from(format!("/plugins/lib{name}.so"))
    }

    /// The file `lib<file>.so` holding `module` (plugin `name` `version`), loaded at `at` seconds.
    fn loaded(
        file: &str,
        sha256: &str,
        (name, version): (&str, &str),
        module: PluginMod_Ref,
        at: u64,
    ) -> PluginFile {
        PluginFile {
            path: path(file),
            sha256: sha256.to_owned(),
            meta: Some(meta(name, version)),
            outcome: Ok(LoadedPlugin {
                meta: meta(name, version),
                path: path(file),
                module: Some(module),
            }),
            loaded_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at),
        }
    }

    fn alpha_1() -> PluginFile {
        loaded(
            "alpha",
            ALPHA_1,
            ("alpha", "1.0.0"),
            root_module::<Alpha>(),
            1,
        )
    }

    fn beta_1() -> PluginFile {
        loaded("beta", BETA_1, ("beta", "1.0.0"), root_module::<Beta>(), 1)
    }

    fn source(name: &str, plugin: &str, config: serde_json::Value) -> SourceConfig {
        SourceConfig {
            name: name.to_owned(),
            plugin: plugin.to_owned(),
            config: config.as_object().cloned().unwrap(),
            isolation: None,
        }
    }

    fn config(sources: Vec<SourceConfig>) -> Config {
        Config {
            plugin_dir: PathBuf::from("/plugins"),
            sources,
            ..Config::default()
        }
    }

    fn handle<'a>(registry: &'a Registry, name: &str) -> &'a Arc<SourceHandle> {
        match &registry.source(name).expect("the source is listed").state {
            Ok(handle) => handle,
            Err(e) => panic!("source {name} failed: {e}"),
        }
    }

    fn same(a: &Registry, b: &Registry, name: &str) -> bool {
        Arc::ptr_eq(handle(a, name), handle(b, name))
    }

    fn names(registry: &Registry) -> Vec<&str> {
        registry.sources.iter().map(|s| s.name.as_str()).collect()
    }

    /// (file name, sha256, the reason it was rejected) of each file, in order.
    fn files(registry: &Registry) -> Vec<(String, &str, Option<String>)> {
        registry
            .files
            .iter()
            .map(|f| {
                (
                    f.path.file_name().unwrap().to_string_lossy().into_owned(),
                    f.sha256.as_str(),
                    f.outcome.as_ref().err().map(ToString::to_string),
                )
            })
            .collect()
    }

    fn failure(registry: &Registry, name: &str) -> String {
        match &registry.source(name).expect("the source is listed").state {
            Ok(_) => panic!("source {name} was built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_reload_keeps_what_did_not_change_and_rebuilds_what_did() {
        let before = config(vec![
            source("one", "alpha", serde_json::json!({"n": 1})),
            source("two", "alpha", serde_json::json!({"n": 2})),
            source("three", "beta", serde_json::json!({})),
            source("gone", "beta", serde_json::json!({})),
        ]);
        let first = Registry::build(&before, vec![alpha_1(), beta_1()]).unwrap();
        assert_eq!(names(&first), ["gone", "one", "three", "two"]);

        // Nothing changed: every source is kept as it is.
        let again = Registry::reload_with(&before, first.files.clone(), &first).unwrap();
        for name in ["gone", "one", "three", "two"] {
            assert!(same(&first, &again, name), "{name}");
        }
        drop(again);

        // `two`'s table changed, `beta` has a new version, `gone` is no longer configured and
        // `new` is.
        let after = config(vec![
            source("one", "alpha", serde_json::json!({"n": 1})),
            source("two", "alpha", serde_json::json!({"n": 3})),
            source("three", "beta", serde_json::json!({})),
            source("new", "alpha", serde_json::json!({})),
        ]);
        let beta_2 = loaded("beta", BETA_2, ("beta", "1.1.0"), root_module::<Beta>(), 2);
        let gone = Arc::downgrade(handle(&first, "gone"));
        let second = Registry::reload_with(&after, vec![alpha_1(), beta_2], &first).unwrap();
        assert_eq!(names(&second), ["new", "one", "three", "two"]);
        assert!(same(&first, &second, "one"), "unchanged: kept");
        assert!(
            !same(&first, &second, "two"),
            "its table changed: built anew"
        );
        assert!(
            !same(&first, &second, "three"),
            "its library changed: built anew"
        );
        let built_from = |name| {
            let (table, sha) = second.source(name).unwrap().built_from.clone().unwrap();
            (table.config, sha)
        };
        assert_eq!(
            built_from("two"),
            (
                serde_json::json!({"n": 3}).as_object().cloned().unwrap(),
                ALPHA_1.to_owned()
            )
        );
        assert_eq!(built_from("three").1, BETA_2);
        assert_eq!(
            files(&second),
            [
                ("libalpha.so".to_owned(), ALPHA_1, None),
                ("libbeta.so".to_owned(), BETA_2, None)
            ]
        );
        assert_eq!(
            second.files[0].loaded_at, first.files[0].loaded_at,
            "the unchanged library is the one loaded before"
        );

        // A removed source lives as long as the generation that had it.
        assert!(gone.upgrade().is_some());
        let one = Arc::downgrade(handle(&first, "one"));
        drop(first);
        assert!(gone.upgrade().is_none(), "dropped with its generation");
        assert!(one.upgrade().is_some(), "kept by the new generation");
        drop(second);
        assert!(one.upgrade().is_none());
    }

    #[test]
    fn a_rejected_new_version_of_a_serving_library_leaves_the_old_one_serving() {
        let config = config(vec![source("one", "alpha", serde_json::json!({}))]);
        let first = Registry::build(&config, vec![alpha_1()]).unwrap();
        // The file now holds bytes the loader refused.
        let refused = PluginFile {
            path: path("alpha"),
            sha256: ALPHA_2.to_owned(),
            meta: Some(meta("alpha", "2.0.0")),
            outcome: Err(Rejection::new(
                RejectionKind::Incompatible,
                "interface 2.0 is not supported",
            )),
            loaded_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2),
        };
        let second = Registry::reload_with(&config, vec![refused], &first).unwrap();
        assert_eq!(
            files(&second),
            [
                ("libalpha.so".to_owned(), ALPHA_1, None),
                (
                    "libalpha.so".to_owned(),
                    ALPHA_2,
                    Some(
                        "interface 2.0 is not supported; the previous version (alpha 1.0.0, sha256 a1a1a1a1a1a1) keeps serving"
                            .to_owned()
                    )
                ),
            ]
        );
        assert!(same(&first, &second, "one"));
    }

    #[test]
    fn a_new_version_that_cannot_build_a_serving_source_is_rejected() {
        let config = config(vec![source("one", "alpha", serde_json::json!({}))]);
        let first = Registry::build(&config, vec![alpha_1()]).unwrap();
        let broken = loaded(
            "alpha",
            ALPHA_2,
            ("alpha", "2.0.0"),
            root_module::<AlphaBroken>(),
            2,
        );
        let second = Registry::reload_with(&config, vec![broken], &first).unwrap();
        assert_eq!(
            files(&second),
            [
                ("libalpha.so".to_owned(), ALPHA_1, None),
                (
                    "libalpha.so".to_owned(),
                    ALPHA_2,
                    Some(
                        "source \"one\" could not be built with it: internal: alpha 2.0.0 builds no source; the previous version (alpha 1.0.0, sha256 a1a1a1a1a1a1) keeps serving"
                            .to_owned()
                    )
                ),
            ]
        );
        assert_eq!(
            second.files[1].outcome.as_ref().err().map(|r| r.kind),
            Some(RejectionKind::SourceFailed)
        );
        assert!(same(&first, &second, "one"), "served by the old version");
    }

    #[test]
    fn a_new_version_stays_when_no_serving_source_needed_it() {
        // `one` failed with the old version too; `fresh` is new.
        let before = config(vec![source(
            "one",
            "alpha",
            serde_json::json!({"fail": true}),
        )]);
        let first = Registry::build(&before, vec![alpha_1()]).unwrap();
        assert_eq!(
            failure(&first, "one"),
            "invalid_config: key `fail`: asked to"
        );
        let after = config(vec![
            source("one", "alpha", serde_json::json!({"fail": true})),
            source("fresh", "alpha", serde_json::json!({})),
        ]);
        let broken = loaded(
            "alpha",
            ALPHA_2,
            ("alpha", "2.0.0"),
            root_module::<AlphaBroken>(),
            2,
        );
        let second = Registry::reload_with(&after, vec![broken], &first).unwrap();
        assert_eq!(files(&second), [("libalpha.so".to_owned(), ALPHA_2, None)]);
        for name in ["fresh", "one"] {
            assert_eq!(
                failure(&second, name),
                "internal: alpha 2.0.0 builds no source",
                "{name}"
            );
        }
    }

    #[test]
    fn a_source_whose_plugin_is_gone_fails_on_reload_but_stops_the_start() {
        let config = config(vec![
            source("one", "alpha", serde_json::json!({})),
            source("three", "beta", serde_json::json!({})),
        ]);
        let first = Registry::build(&config, vec![alpha_1(), beta_1()]).unwrap();
        let second = Registry::reload_with(&config, vec![alpha_1()], &first).unwrap();
        assert!(same(&first, &second, "one"));
        assert_eq!(
            failure(&second, "three"),
            "unavailable: no loaded plugin is named \"beta\" in /plugins"
        );
        assert_eq!(files(&second), [("libalpha.so".to_owned(), ALPHA_1, None)]);
        // At start the same configuration is an error naming the key.
        assert!(matches!(
            Registry::build(&config, vec![alpha_1()]),
            Err(StartError::UnknownPlugin { index: 1, ref plugin, ref loaded, .. })
                if plugin == "beta" && loaded == "alpha"
        ));
    }
}
