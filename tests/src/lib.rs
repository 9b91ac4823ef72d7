//! Helpers for Tributary's end-to-end tests: build the real plugin libraries once, lay them out in a
//! temporary plugin directory, start a real server on loopback and connect a real gRPC client.

pub mod http;
pub mod oci;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tributary_host::app::App;
use tributary_proto::v1::{
    self as pb, packages_service_client::PackagesServiceClient,
    plugins_service_client::PluginsServiceClient,
};
use tributary_runtime::{
    config::{Config, Overrides, SourceConfig},
    registry::Registry,
};

/// What one `cargo build` of the plugins and the binary produced.
pub struct Artifacts {
    /// Library files by crate name, e.g. `tributary_plugin_catalog`.
    pub libraries: HashMap<String, PathBuf>,
    /// The `tributary` executable.
    pub binary: PathBuf,
    /// `tributary-host-1-0`: a minimal host of the frozen interface 1.0 (a compatibility fixture).
    pub host_1_0: PathBuf,
}

/// Builds the plugin libraries, the fixture libraries and the `tributary` binary, once per test
/// process. `cargo test` does not build `cdylib` outputs for its dependents, so this runs
/// `cargo build` on the same workspace and target directory and reads the artifact paths from its
/// JSON messages. The interface fixtures live in a workspace of their own (`tests/fixtures/compat`)
/// and are built one per command, so that cargo does not unify their features of the frozen
/// interface crate; their outputs go to the same target directory.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let mut artifacts = Artifacts {
            libraries: HashMap::new(),
            binary: PathBuf::new(),
            host_1_0: PathBuf::new(),
        };
        cargo_build(
            None,
            &[
                "tributary-plugin-catalog",
                "tributary-plugin-helm",
                "tributary-plugin-testkit",
                "tributary-fixture-not-a-plugin",
                "tributary-host",
            ],
            &mut artifacts,
        );
        let compat = Some("tests/fixtures/compat/Cargo.toml");
        cargo_build(compat, &["tributary-fixture-compat-v1-0"], &mut artifacts);
        cargo_build(
            compat,
            &["tributary-fixture-compat-major-2"],
            &mut artifacts,
        );
        cargo_build(compat, &["tributary-fixture-compat-layout"], &mut artifacts);
        cargo_build(
            compat,
            &["tributary-fixture-compat-host-1-0"],
            &mut artifacts,
        );
        cargo_build(
            Some("tests/fixtures/compat/v1-1/Cargo.toml"),
            &["tributary-fixture-compat-v1-1"],
            &mut artifacts,
        );
        assert!(
            artifacts.binary.is_file(),
            "cargo build produced the tributary binary"
        );
        artifacts
    })
}

fn cargo_build(manifest: Option<&str>, packages: &[&str], artifacts: &mut Artifacts) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace)
        .args(["build", "--message-format=json"]);
    if let Some(manifest) = manifest {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        command
            .arg("--manifest-path")
            .arg(workspace.join(manifest))
            .arg("--target-dir")
            .arg(target_dir);
    }
    for package in packages {
        command.args(["-p", package]);
    }
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let name = message["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match (message["executable"].as_str(), name.as_str()) {
            (Some(exe), "tributary") => artifacts.binary = PathBuf::from(exe),
            (Some(exe), "tributary-host-1-0") => artifacts.host_1_0 = PathBuf::from(exe),
            _ => {}
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            let file = PathBuf::from(file.as_str().unwrap_or_default());
            if file.extension().is_some_and(|e| e == "so") {
                artifacts.libraries.insert(name.clone(), file);
            }
        }
    }
}

/// A folder for plugin directories that passes the host's whole-path checks (`/tmp` does not: it is
/// world-writable, and so is any folder below it): `tributary-e2e`, mode 0700, in the target
/// directory when its whole path is safe, else in `$HOME/.cache`, else in `/var/lib` (a checkout
/// under `/tmp`, as CI may use, needs one of the latter).
pub fn private_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let mut candidates = vec![artifacts()
            .binary
            .parent()
            .expect("binary has a folder")
            .join("tributary-e2e")];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(Path::new(&home).join(".cache").join("tributary-e2e"));
        }
        candidates.push(PathBuf::from("/var/lib/tributary-e2e"));
        let mut refused = Vec::new();
        for root in candidates {
            if std::fs::create_dir_all(&root).is_err()
                || std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).is_err()
            {
                refused.push(format!("{}: cannot create it", root.display()));
                continue;
            }
            match tributary_runtime::loader::insecure_path_reason(&root, "plugin_dir") {
                None => return root,
                Some(reason) => refused.push(reason),
            }
        }
        panic!("no folder for test plugin directories passes the whole-path checks: {refused:?}");
    })
}

/// A test cannot run because `what` is not installed. Under `CI=true` (`.ci/run` sets it) that is a
/// failure: CI installs every tool a test needs, and a test that skips there proves nothing.
/// Elsewhere the test is skipped, loudly, on stderr.
pub fn missing_tool(test: &str, what: &str, install: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{test}: {what} is not installed, and CI=true: install it ({install}; .ci/run does)"
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED {test}: {what} is not installed ({install}; .ci/run does). \
         This test proved nothing. !!!!!\n"
    );
}

/// A temporary plugin directory.
pub struct PluginDir {
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    /// A directory holding copies of the named plugin libraries (`"catalog"`, `"helm"`, `"testkit"`,
    /// and the fixtures `"not-a-plugin"`, `"compat-v1-0"`, `"compat-v1-1"`, `"compat-major-2"`,
    /// `"compat-layout"`),
    /// each as `lib<name>.so`.
    pub fn with(names: &[&str]) -> PluginDir {
        let dir = tempfile::Builder::new()
            .prefix("plugins-")
            .tempdir_in(private_root())
            .expect("temp dir");
        let plugin_dir = PluginDir { dir };
        for name in names {
            plugin_dir.add(name, &format!("lib{name}.so"));
        }
        plugin_dir
    }

    /// Copies the library of `name` into the directory as `file_name`.
    pub fn add(&self, name: &str, file_name: &str) {
        let crate_name = match name {
            "not-a-plugin" | "compat-v1-0" | "compat-v1-1" | "compat-major-2" | "compat-layout" => {
                format!("tributary_fixture_{}", name.replace('-', "_"))
            }
            other => format!("tributary_plugin_{other}"),
        };
        let source = artifacts()
            .libraries
            .get(&crate_name)
            .unwrap_or_else(|| panic!("no library built for {crate_name}"));
        std::fs::copy(source, self.dir.path().join(file_name)).expect("copy plugin");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A source configuration from a JSON object.
pub fn source(name: &str, plugin: &str, config: serde_json::Value) -> SourceConfig {
    SourceConfig {
        name: name.to_owned(),
        plugin: plugin.to_owned(),
        config: config
            .as_object()
            .cloned()
            .expect("config is a JSON object"),
        isolation: None,
    }
}

/// A configuration over `plugin_dir` with these sources; relative paths resolve against `base_dir`.
pub fn config(plugin_dir: &Path, base_dir: &Path, sources: Vec<SourceConfig>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        plugin_dir: plugin_dir.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        sources,
        source_timeout: Duration::from_secs(10),
        watch: false,
        ..Config::default()
    }
}

/// A server running in this process on an ephemeral loopback port.
pub struct TestServer {
    pub address: SocketAddr,
    /// Where `/metrics` is served, when the configuration sets `metrics_listen`.
    pub metrics_address: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Loads the plugins of `config` and serves them as the binary does ([`App`]), on
    /// `127.0.0.1:0` whatever `listen` says, with a 5-second grace period.
    pub async fn start(config: Config) -> TestServer {
        let registry = Arc::new(Registry::load(&config).expect("registry loads"));
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        TestServer::serve(App::new(config, registry)).await
    }

    /// Starts from a configuration file as `tributary serve --config path` does, in this process:
    /// the `[tls]` and `[auth]` files, the registry, `metrics_listen`, and reload from the file (the
    /// Reload RPC and the watcher; signals stay the binary's).
    pub async fn from_file(path: &Path) -> TestServer {
        let overrides = Overrides::default();
        let config = Config::load(path, &overrides).expect("the config file loads");
        let tls = config.tls.clone().map(|settings| {
            Arc::new(tributary_host::tls::Certificates::load(settings).expect("the TLS files load"))
        });
        let auth = config.auth.as_ref().map(|settings| {
            Arc::new(
                tributary_host::auth::Authenticator::load(settings).expect("the tokens file loads"),
            )
        });
        let registry = Arc::new(Registry::load(&config).expect("registry loads"));
        let app = App::new(config, registry).tls(tls).auth(auth).reload_from(
            path.to_path_buf(),
            overrides,
            false,
        );
        TestServer::serve(app).await
    }

    async fn serve(app: App) -> TestServer {
        let registry = app.catalog().registry();
        let bound = app
            .shutdown(Duration::from_secs(5), Duration::ZERO)
            .bind()
            .await
            .expect("the test server binds");
        let (address, metrics_address) = (bound.address(), bound.metrics_address());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            bound
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            address,
            metrics_address,
            registry,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .expect("connect to test server")
    }

    pub async fn packages(&self) -> PackagesServiceClient<Channel> {
        PackagesServiceClient::new(self.channel().await)
    }

    pub async fn plugins(&self) -> PluginsServiceClient<Channel> {
        PluginsServiceClient::new(self.channel().await)
    }

    /// The `ListPlugins` answer.
    pub async fn listing(&self) -> pb::ListPluginsResponse {
        self.plugins()
            .await
            .list_plugins(pb::ListPluginsRequest {})
            .await
            .expect("ListPlugins")
            .into_inner()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A plugin directory with copies of `plugins` and a server over `sources`, relative paths resolving
/// against the plugin directory.
pub async fn start_with(plugins: &[&str], sources: Vec<SourceConfig>) -> (PluginDir, TestServer) {
    let dir = PluginDir::with(plugins);
    let server = TestServer::start(config(dir.path(), dir.path(), sources)).await;
    (dir, server)
}

/// One page, which must not fail.
pub async fn list(
    client: &mut PackagesServiceClient<Channel>,
    page_size: i32,
    page_token: &str,
    filter: Option<pb::FilterOptions>,
) -> pb::ListAvailablePackageSummariesResponse {
    client
        .list_available_package_summaries(list_request(page_size, page_token, filter))
        .await
        .unwrap_or_else(|e| panic!("list page_size={page_size}: {e}"))
        .into_inner()
}

/// One page while sources may still be failing: when every selected source failed (UNAVAILABLE),
/// a page with no items and one failure that carries the status message. Any other error panics.
pub async fn list_or_failure(
    client: &mut PackagesServiceClient<Channel>,
    page_size: i32,
    page_token: &str,
    filter: Option<pb::FilterOptions>,
) -> pb::ListAvailablePackageSummariesResponse {
    match client
        .list_available_package_summaries(list_request(page_size, page_token, filter))
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            pb::ListAvailablePackageSummariesResponse {
                failed_sources: vec![pb::SourceFailure {
                    kind: "unavailable".into(),
                    reason: status.message().to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        }
        Err(e) => panic!("list page_size={page_size}: {e}"),
    }
}

/// One page, as the client sees the listing go on: an UNAVAILABLE answer that carries a
/// `ResumeInfo` (every source that still had items failed) becomes an empty page with its failures
/// and the token to resume from. Any other error panics.
pub async fn page_or_resume(
    client: &mut PackagesServiceClient<Channel>,
    request: impl tonic::IntoRequest<pb::ListAvailablePackageSummariesRequest>,
) -> pb::ListAvailablePackageSummariesResponse {
    match client.list_available_package_summaries(request).await {
        Ok(page) => page.into_inner(),
        Err(status) => match tributary_host::service::resume_info(&status) {
            Some(info) if status.code() == tonic::Code::Unavailable => {
                pb::ListAvailablePackageSummariesResponse {
                    available_package_summaries: Vec::new(),
                    next_page_token: info.next_page_token,
                    failed_sources: info.failed_sources,
                    ..Default::default()
                }
            }
            _ => panic!("list: {status:?}"),
        },
    }
}

/// A list request.
pub fn list_request(
    page_size: i32,
    page_token: &str,
    filter: Option<pb::FilterOptions>,
) -> pb::ListAvailablePackageSummariesRequest {
    pb::ListAvailablePackageSummariesRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter,
        ..Default::default()
    }
}

/// `name@source/identifier` for each summary: a compact form to compare pages with.
pub fn keys(summaries: &[pb::AvailablePackageSummary]) -> Vec<String> {
    summaries.iter().map(key).collect()
}

pub fn key(s: &pb::AvailablePackageSummary) -> String {
    let r = s.available_package_ref.as_ref().expect("reference");
    format!("{}@{}/{}", s.name, r.source, r.identifier)
}

/// Pages through a listing with the given sequence of page sizes (the last one repeats), returning
/// every page's keys. Panics on an error or after `max_pages`.
pub async fn page_through(
    client: &mut PackagesServiceClient<Channel>,
    sizes: &[i32],
    filter: Option<pb::FilterOptions>,
    max_pages: usize,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    for i in 0..max_pages {
        let size = sizes[i.min(sizes.len() - 1)];
        let response = client
            .list_available_package_summaries(list_request(size, &token, filter.clone()))
            .await
            .unwrap_or_else(|e| panic!("page {i}: {e}"))
            .into_inner();
        assert!(
            response.failed_sources.is_empty(),
            "page {i}: failed sources {:?}",
            response.failed_sources
        );
        assert!(
            response.available_package_summaries.len() <= size.max(0) as usize || size == 0,
            "page {i}: more items than asked for"
        );
        pages.push(keys(&response.available_package_summaries));
        if response.next_page_token.is_empty() {
            return pages;
        }
        token = response.next_page_token;
    }
    panic!("listing did not end within {max_pages} pages");
}

/// The repository's `examples/` folder: the example catalog's files.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The example catalog's sources (`examples/tributary.toml`): two Helm repositories and a JSON
/// catalog, with paths relative to [`examples_dir`].
pub fn example_sources() -> Vec<SourceConfig> {
    let repo = |name: &str| serde_json::json!({ "repositories": [{ "name": name, "url": format!("charts/{name}-index.yaml") }] });
    vec![
        source("bitnami", "helm", repo("bitnami")),
        source("community", "helm", repo("community")),
        source(
            "internal",
            "catalog",
            serde_json::json!({ "path": "catalog.json" }),
        ),
    ]
}

/// Waits (at most 60 s) until no source of the server at `address` is `starting` (isolated sources
/// whose runner is still loading), so that a test's first page finds every runner up. Blocking: it
/// polls `ListPlugins` from a thread of its own, so it may be called inside a test's runtime.
pub fn wait_until_started(address: &str) {
    let address = address.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client =
                tributary_proto::v1::plugins_service_client::PluginsServiceClient::connect(
                    format!("http://{address}"),
                )
                .await
                .unwrap();
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let listing = client
                    .list_plugins(pb::ListPluginsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                let starting = pb::source_info::Status::Starting as i32;
                if !listing.sources.iter().any(|s| s.status == starting) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < until,
                    "sources still starting after 60 s: {listing:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    })
    .join()
    .unwrap();
}
