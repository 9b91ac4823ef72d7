//! Reloading while serving (`tributary serve` as a real process): libraries copied in, replaced,
//! truncated and removed; SIGHUP, the Reload RPC and the directory watcher; a rejected new version;
//! a half-written file; an invalid config; a client paging across a reload.

use std::{
    io::Write,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use tributary_proto::v1::{
    self as pb, packages_service_client::PackagesServiceClient,
    plugins_service_client::PluginsServiceClient,
};
use tributary_tests::{artifacts, keys, list, PluginDir};

use crate::binary::{spawn_server, terminate, write_config};

/// Source `one` (testkit): a, c, e.
const ONE: &str = "[[source]]\nname = \"one\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"a\" }, { name = \"c\" }, { name = \"e\" }] }\n";

/// Writes `cat.json` (packages b, d) into `dir` and returns a `[[source]]` named `cat` reading it.
fn cat_source(dir: &Path) -> String {
    std::fs::write(
        dir.join("cat.json"),
        r#"{"packages":[{"name":"b"},{"name":"d"}]}"#,
    )
    .unwrap();
    "[[source]]\nname = \"cat\"\nplugin = \"catalog\"\nconfig = { path = \"cat.json\" }\n".into()
}

struct Server {
    child: Option<Child>,
    address: String,
    packages: PackagesServiceClient<Channel>,
    plugins: PluginsServiceClient<Channel>,
}

impl Server {
    async fn start(config: &Path) -> Server {
        let (child, address) = spawn_server(config);
        tributary_tests::wait_until_started(&address);
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Server {
            child: Some(child),
            address: address.clone(),
            packages: PackagesServiceClient::new(channel.clone()),
            plugins: PluginsServiceClient::new(channel),
        }
    }

    async fn all_keys(&mut self) -> Vec<String> {
        let page = list(&mut self.packages, 100, "", None).await;
        assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
        keys(&page.available_package_summaries)
    }

    async fn listing(&mut self) -> pb::ListPluginsResponse {
        self.plugins
            .list_plugins(pb::ListPluginsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn reload(&mut self) -> Result<pb::ReloadResponse, tonic::Status> {
        self.plugins
            .reload(pb::ReloadRequest {})
            .await
            .map(|r| r.into_inner())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Polls until the listing is `want`; returns how long it took. Panics after `limit`.
    async fn wait_for_keys(&mut self, want: &[&str], limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let page = list(&mut self.packages, 100, "", None).await;
            let got = keys(&page.available_package_summaries);
            if got == want && page.failed_sources.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "after {limit:?}: {got:?} (failed {:?}), wanted {want:?}",
                page.failed_sources
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(mut server: Server) {
    let child = server.child.take().unwrap();
    assert_eq!(terminate(child).code(), Some(0), "exit 0 after SIGTERM");
}

fn library(name: &str) -> std::path::PathBuf {
    artifacts()
        .libraries
        .get(&format!("tributary_plugin_{name}"))
        .unwrap_or_else(|| panic!("no library for {name}"))
        .clone()
}

fn append_to_config(config: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(config)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Replaces the config file by a rename, as editors and config managers do.
fn rewrite_config(config: &Path, text: &str) {
    let next = config.with_extension("toml.new");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_copied_in_is_served_without_a_restart_and_removing_it_retires_its_sources() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), ONE);
    let base = std::fs::read_to_string(&config).unwrap();
    let mut server = Server::start(&config).await;
    assert_eq!(server.all_keys().await, ["a@one/a", "c@one/c", "e@one/e"]);
    assert_eq!(server.listing().await.generation, 1);

    // The library first (as a rename into place), then the source that uses it.
    let started = Instant::now();
    let tmp = plugins.path().join(".libcatalog.so.part");
    std::fs::copy(library("catalog"), &tmp).unwrap();
    std::fs::rename(&tmp, plugins.path().join("libcatalog.so")).unwrap();
    rewrite_config(&config, &format!("{base}{}", cat_source(dir.path())));
    server
        .wait_for_keys(
            &["a@one/a", "b@cat/b", "c@one/c", "d@cat/d", "e@one/e"],
            Duration::from_secs(20),
        )
        .await;
    let served_after = started.elapsed();
    println!("a new library and its source served {served_after:?} after the copy (watcher, debounce 500 ms)");
    let listing = server.listing().await;
    assert!(listing.generation >= 2, "{listing:?}");
    let catalog = listing
        .plugins
        .iter()
        .find(|p| p.name == "catalog")
        .expect("catalog listed");
    assert!(catalog.loaded_at_unix > 0, "{catalog:?}");
    assert_eq!(catalog.sha256.len(), 64);

    // Removing the library and its source retires them; `one` never stopped serving.
    std::fs::remove_file(plugins.path().join("libcatalog.so")).unwrap();
    rewrite_config(&config, &base);
    server
        .wait_for_keys(&["a@one/a", "c@one/c", "e@one/e"], Duration::from_secs(20))
        .await;
    let listing = server.listing().await;
    assert!(
        listing.plugins.iter().all(|p| p.name != "catalog"),
        "{listing:?}"
    );
    assert_eq!(
        listing
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["one"]
    );
    assert_eq!(listing.retired_libraries, 1, "{listing:?}");
    stop(server);
}

/// The watcher reloads for the config file, followed through its symbolic links as a Kubernetes
/// ConfigMap volume lays them out, and not for other files beside it: a log written next to the
/// config used to start a reload on every line, each reload logging a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_a_configmap_swap_and_ignores_other_files_beside_the_config() {
    let plugins = PluginDir::with(&["testkit", "catalog"]);
    let dir = tempfile::tempdir().unwrap();
    // `tributary.toml -> ..data/tributary.toml`, `..data -> ..v1`, as the kubelet writes them.
    let text = std::fs::read_to_string(write_config(
        dir.path(),
        plugins.path(),
        &format!("reload_debounce_ms = 100\n{ONE}"),
    ))
    .unwrap();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("tributary.toml"), text).unwrap();
    };
    version("..v1", &text);
    std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
    let config = dir.path().join("tributary.toml");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("..data/tributary.toml", &config).unwrap();
    let mut server = Server::start(&config).await;
    assert_eq!(server.listing().await.generation, 1);

    // A log beside the config, written to for 1.5 s: no reload.
    let mut log = std::fs::File::create(dir.path().join("tributary.log")).unwrap();
    for i in 0..15 {
        writeln!(log, "line {i}").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.listing().await.generation, 1, "a log line reloaded");

    // The ConfigMap update: a new version folder, `..data` swapped to it by a rename.
    version("..v2", &format!("{text}{}", cat_source(dir.path())));
    std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    server
        .wait_for_keys(
            &["a@one/a", "b@cat/b", "c@one/c", "d@cat/d", "e@one/e"],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(server.listing().await.generation, 2);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_reload_rpc_reload_and_say_what_changed() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("watch = false\n{ONE}"));
    let mut server = Server::start(&config).await;

    // SIGHUP: the process reloads instead of ending.
    plugins.add("catalog", "libcatalog.so");
    append_to_config(&config, &cat_source(dir.path()));
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server
        .wait_for_keys(
            &["a@one/a", "b@cat/b", "c@one/c", "d@cat/d", "e@one/e"],
            Duration::from_secs(20),
        )
        .await;
    assert!(
        server.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "SIGHUP ended the server"
    );
    assert_eq!(server.listing().await.generation, 2);

    // The Reload RPC, with nothing changed: the generation is kept.
    let unchanged = server.reload().await.unwrap();
    assert_eq!(
        unchanged,
        pb::ReloadResponse {
            generation: 2,
            ..Default::default()
        }
    );
    assert_eq!(server.listing().await.generation, 2);
    // Then source `one` changed, `two` added, and a key that needs a restart changed.
    let text = "request_timeout_ms = 5000\n".to_owned()
        + &std::fs::read_to_string(&config)
            .unwrap()
            .replace("{ name = \"e\" }", "{ name = \"f\" }")
        + "[[source]]\nname = \"two\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"g\" }] }\n";
    std::fs::write(&config, text).unwrap();
    let changed = server.reload().await.unwrap();
    assert_eq!(
        changed,
        pb::ReloadResponse {
            generation: 3,
            added_sources: vec!["two".into()],
            changed_sources: vec!["one".into()],
            restart_needed: vec!["request_timeout_ms".into()],
            ..Default::default()
        }
    );
    assert_eq!(
        server.all_keys().await,
        ["a@one/a", "b@cat/b", "c@one/c", "d@cat/d", "f@one/f", "g@two/g"]
    );
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_whole_and_the_old_one_keeps_serving() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("watch = false\n{ONE}"));
    let good = std::fs::read_to_string(&config).unwrap();
    let mut server = Server::start(&config).await;

    std::fs::write(&config, format!("{good}bogus_key = 1\n")).unwrap();
    let refused = server.reload().await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("bogus_key") && refused.message().contains("tributary.toml"),
        "{refused:?}"
    );
    assert_eq!(
        refused.message().matches("tributary.toml").count(),
        1,
        "the file is named once: {refused:?}"
    );
    assert_eq!(server.all_keys().await, ["a@one/a", "c@one/c", "e@one/e"]);
    let listing = server.listing().await;
    assert_eq!(listing.generation, 1);
    assert!(
        listing.last_reload_error.contains("bogus_key"),
        "{listing:?}"
    );
    assert!(listing.last_reload_unix > 0);

    // A [[source]] naming a plugin that is not loaded: the reload takes effect, that source fails.
    std::fs::write(
        &config,
        format!("{good}[[source]]\nname = \"ghost\"\nplugin = \"nosuch\"\n"),
    )
    .unwrap();
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.added_sources, ["ghost"]);
    let listing = server.listing().await;
    assert_eq!(listing.last_reload_error, "");
    let ghost = listing.sources.iter().find(|s| s.name == "ghost").unwrap();
    assert!(ghost.reason.contains("nosuch"), "{ghost:?}");
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_new_version_leaves_the_old_one_serving() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("watch = false\n{ONE}"));
    let mut server = Server::start(&config).await;
    let before = server.listing().await;
    let old_sha = before.plugins[0].sha256.clone();

    // A library built for interface 2 put in place of the testkit library.
    let target = plugins.path().join("libtestkit.so");
    std::fs::remove_file(&target).unwrap();
    plugins.add("compat-major-2", "libtestkit.so");
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.rejected_libraries.len(), 1, "{reloaded:?}");
    assert!(reloaded.replaced_libraries.is_empty(), "{reloaded:?}");
    assert!(reloaded.removed_libraries.is_empty(), "{reloaded:?}");
    assert!(reloaded.changed_sources.is_empty(), "{reloaded:?}");
    assert_eq!(server.all_keys().await, ["a@one/a", "c@one/c", "e@one/e"]);
    let listing = server.listing().await;
    let at_path: Vec<&pb::PluginInfo> = listing
        .plugins
        .iter()
        .filter(|p| p.path == target.display().to_string())
        .collect();
    assert_eq!(at_path.len(), 2, "{listing:?}");
    assert_eq!(at_path[0].status, pb::plugin_info::Status::Loaded as i32);
    assert_eq!(at_path[0].sha256, old_sha);
    assert_eq!(at_path[1].status, pb::plugin_info::Status::Rejected as i32);
    assert!(
        at_path[1].reason.contains("keeps serving") && at_path[1].reason.contains("interface"),
        "{:?}",
        at_path[1]
    );
    assert_eq!(listing.retired_libraries, 0);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwriting_truncating_and_deleting_a_loaded_library_under_16_clients() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    // 300 generated items in one source; `watch = false`: nothing reloads until the RPC.
    let sources = "watch = false\n[[source]]\nname = \"gen\"\nplugin = \"testkit\"\nconfig = { generate = 300 }\n";
    let config = write_config(dir.path(), plugins.path(), sources);
    let mut server = Server::start(&config).await;
    let expected = server.all_keys().await;
    assert_eq!(expected.len(), 100);

    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = server.packages.clone();
        let stop_flag = stop_flag.clone();
        clients.push(tokio::spawn(async move {
            let mut pages = 0u32;
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mut token = String::new();
                let mut seen = 0;
                loop {
                    let page = list(&mut client, 50, &token, None).await;
                    assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
                    seen += page.available_package_summaries.len();
                    pages += 1;
                    token = page.next_page_token;
                    if token.is_empty() {
                        break;
                    }
                }
                assert_eq!(seen, 300);
            }
            pages
        }));
    }
    let target = plugins.path().join("libtestkit.so");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // cp over the loaded file (another library's bytes), then truncate, then delete.
    std::fs::copy(library("catalog"), &target).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&target)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&target).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Back in place with appended bytes: a new version (new SHA-256) of the same plugin.
    let mut bytes = std::fs::read(library("testkit")).unwrap();
    bytes.extend_from_slice(b"\0a new build");
    std::fs::write(&target, bytes).unwrap();
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.replaced_libraries.len(), 1, "{reloaded:?}");
    assert_eq!(reloaded.changed_sources, ["gen"], "{reloaded:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pages = 0;
    for client in clients {
        pages += client.await.expect("a client failed");
    }
    println!("16 clients read {pages} pages across the overwrite, truncation, deletion and reload");
    assert!(pages > 16);
    assert_eq!(server.all_keys().await, expected);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_across_a_reload_gets_every_item_of_the_sources_present_throughout_once() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let sources = "watch = false\n[[source]]\nname = \"gen\"\nplugin = \"testkit\"\nconfig = { generate = 40 }\n";
    let config = write_config(dir.path(), plugins.path(), sources);
    let mut server = Server::start(&config).await;
    let mut first_half = Vec::new();
    let mut token = String::new();
    for _ in 0..4 {
        let page = list(&mut server.packages, 5, &token, None).await;
        first_half.extend(keys(&page.available_package_summaries));
        token = page.next_page_token;
    }
    // Another source and another library arrive mid-listing.
    plugins.add("catalog", "libcatalog.so");
    append_to_config(&config, &cat_source(dir.path()));
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.added_sources, ["cat"]);
    let mut rest = Vec::new();
    loop {
        let page = list(&mut server.packages, 5, &token, None).await;
        rest.extend(keys(&page.available_package_summaries));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let gen: Vec<String> = first_half
        .iter()
        .chain(rest.iter())
        .filter(|k| k.contains("@gen/"))
        .cloned()
        .collect();
    let mut sorted = gen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(gen.len(), 40, "every item of `gen` exactly once: {gen:?}");
    assert_eq!(sorted.len(), 40);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_library_is_never_loaded_before_it_is_complete() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("reload_debounce_ms = 400\n{ONE}"),
    );
    let mut server = Server::start(&config).await;
    let bytes = std::fs::read(library("catalog")).unwrap();
    let target = plugins.path().join("libcatalog.so");
    let mut file = std::fs::File::create(&target).unwrap();
    // Written in 12 chunks, 150 ms apart: never quiet for the 400 ms window until complete.
    let chunk = bytes.len().div_ceil(12);
    for part in bytes.chunks(chunk) {
        file.write_all(part).unwrap();
        file.flush().unwrap();
        let listing = server.listing().await;
        assert!(
            listing
                .plugins
                .iter()
                .all(|p| p.status == pb::plugin_info::Status::Loaded as i32),
            "a partial file was read: {listing:?}"
        );
        assert_eq!(
            listing.generation, 1,
            "reloaded while the file was being written"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(file);
    let started = Instant::now();
    loop {
        let listing = server.listing().await;
        if let Some(catalog) = listing.plugins.iter().find(|p| p.name == "catalog") {
            assert_eq!(catalog.status, pb::plugin_info::Status::Loaded as i32);
            assert!(
                listing.plugins.iter().all(|p| p.reason.is_empty()),
                "{listing:?}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{listing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_whose_constructor_fails_leaves_the_old_one_serving() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let sources = "watch = false\n[[source]]\nname = \"one\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"a\" }], fail_new_when_exists = \"broken\" }\n";
    let config = write_config(dir.path(), plugins.path(), sources);
    let mut server = Server::start(&config).await;
    let old_sha = server.listing().await.plugins[0].sha256.clone();

    // From now on the constructor fails; a new build (other bytes) arrives.
    std::fs::write(dir.path().join("broken"), "").unwrap();
    let target = plugins.path().join("libtestkit.so");
    let mut bytes = std::fs::read(&target).unwrap();
    bytes.extend_from_slice(b"\0another build");
    std::fs::write(&target, bytes).unwrap();
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.rejected_libraries.len(), 1, "{reloaded:?}");
    assert!(
        reloaded.rejected_libraries[0].contains("source \"one\" could not be built with it")
            && reloaded.rejected_libraries[0].contains("fail_new_when_exists"),
        "{reloaded:?}"
    );
    assert!(reloaded.changed_sources.is_empty(), "{reloaded:?}");
    assert!(reloaded.replaced_libraries.is_empty(), "{reloaded:?}");
    assert_eq!(server.all_keys().await, ["a@one/a"]);
    let listing = server.listing().await;
    assert_eq!(listing.plugins.len(), 2, "{listing:?}");
    assert_eq!(listing.plugins[0].sha256, old_sha);
    assert_eq!(
        listing.plugins[0].status,
        pb::plugin_info::Status::Loaded as i32
    );
    assert!(
        listing.plugins[1].reason.contains("keeps serving"),
        "{listing:?}"
    );
    assert_eq!(
        listing.sources[0].status,
        pb::source_info::Status::Ready as i32
    );
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_an_isolated_source_on_the_new_library() {
    use crate::isolation::{children_of, is_gone};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let sources = "watch = false\n[[source]]\nname = \"iso\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"a\" }] }\n";
    let config = write_config(dir.path(), plugins.path(), sources);
    let mut server = Server::start(&config).await;
    assert_eq!(server.all_keys().await, ["a@iso/a"]);
    let before = children_of(server.pid());
    assert_eq!(before.len(), 1, "one runner: {before:?}");

    let target = plugins.path().join("libtestkit.so");
    let mut bytes = std::fs::read(&target).unwrap();
    bytes.extend_from_slice(b"\0a new build");
    std::fs::write(&target, bytes).unwrap();
    let reloaded = server.reload().await.unwrap();
    assert_eq!(reloaded.changed_sources, ["iso"], "{reloaded:?}");
    assert_eq!(server.all_keys().await, ["a@iso/a"]);
    let started = Instant::now();
    while !is_gone(before[0]) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old runner {} outlived its generation",
            before[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after: Vec<u32> = children_of(server.pid())
        .into_iter()
        .filter(|p| !is_gone(*p))
        .collect();
    assert_eq!(after.len(), 1, "one runner after the reload: {after:?}");
    assert_ne!(after[0], before[0]);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_in_the_plugin_directory_starts_no_reload() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("reload_debounce_ms = 100\n{ONE}"),
    );
    let mut server = Server::start(&config).await;
    // The server's log redirected into its own plugin directory, written for 1.5 s.
    let mut log = std::fs::File::create(plugins.path().join("tributary.log")).unwrap();
    for i in 0..15 {
        writeln!(log, "line {i}").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listing = server.listing().await;
    assert_eq!(
        (listing.generation, listing.last_reload_unix),
        (1, 0),
        "a file other than lib*.so in the plugin directory started a reload"
    );
    // A library copied in still does.
    plugins.add("catalog", "libcatalog.so");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.listing().await.last_reload_unix == 0 {
        assert!(
            Instant::now() < deadline,
            "the new library started no reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_replaced_by_a_fifo_is_refused_and_nothing_stalls() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("watch = false\n{ONE}"));
    let mut server = Server::start(&config).await;
    std::fs::remove_file(&config).unwrap();
    let status = Command::new("mkfifo").arg(&config).status().unwrap();
    assert!(status.success());
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let listing = tokio::time::timeout(Duration::from_secs(5), server.listing())
            .await
            .expect("ListPlugins stalled behind a reload reading a FIFO");
        if !listing.last_reload_error.is_empty() {
            break listing.last_reload_error;
        }
        assert!(Instant::now() < deadline, "the reload never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("not a regular file"), "{error}");
    assert!(error.contains("tributary.toml"), "{error}");
    assert_eq!(server.all_keys().await, ["a@one/a", "c@one/c", "e@one/e"]);
    stop(server);
}

/// A reload whose new source takes 4 s to build: ListPlugins (four at once), a page and the health
/// probe answer meanwhile without waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_constructor_in_a_reload_stalls_no_request() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("watch = false\n{ONE}"));
    let mut server = Server::start(&config).await;
    append_to_config(
        &config,
        "[[source]]\nname = \"slow\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"s\" }], sleep_new_ms = 4000 }\n",
    );
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut plugins = server.plugins.clone();
        calls.spawn(async move {
            plugins
                .list_plugins(pb::ListPluginsRequest {})
                .await
                .map(|r| r.into_inner().generation)
                .map_err(|e| e.to_string())
        });
    }
    let address: std::net::SocketAddr = server.address.parse().unwrap();
    let within = Duration::from_secs(2);
    let (health, _) = tokio::time::timeout(within, crate::rest::get(address, "/healthz", None))
        .await
        .expect("/healthz waited for the reload");
    assert_eq!(health, 200);
    let keys_now = tokio::time::timeout(within, server.all_keys())
        .await
        .expect("a page waited for the reload");
    assert_eq!(keys_now, ["a@one/a", "c@one/c", "e@one/e"]);
    while let Some(generation) = tokio::time::timeout(within, calls.join_next())
        .await
        .expect("ListPlugins waited for the reload")
    {
        assert_eq!(generation.unwrap(), Ok(1), "the reload was still running");
    }
    println!(
        "during a reload with a 4 s constructor: 4 ListPlugins, /healthz and a page answered in {:?}",
        started.elapsed()
    );
    server
        .wait_for_keys(
            &["a@one/a", "c@one/c", "e@one/e", "s@slow/s"],
            Duration::from_secs(20),
        )
        .await;
    stop(server);
}

/// A copy of a serving library under another file name that sorts first (same plugin name): the
/// library already serving keeps serving, the copy is the one refused, naming the serving file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_serving_library_under_a_name_that_sorts_first_is_refused() {
    let plugins = PluginDir::with(&["testkit", "catalog"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("watch = false\n{ONE}{}", cat_source(dir.path())),
    );
    let mut server = Server::start(&config).await;
    let all = ["a@one/a", "b@cat/b", "c@one/c", "d@cat/d", "e@one/e"];
    assert_eq!(server.all_keys().await, all);

    let serving = plugins.path().join("libcatalog.so");
    let copy = plugins.path().join("libaa_catalog_copy.so");
    assert!(
        copy.file_name() < serving.file_name(),
        "the copy sorts first"
    );
    plugins.add("catalog", "libaa_catalog_copy.so");
    let reason = format!(
        "duplicate plugin name \"catalog\": already served by {}",
        serving.display()
    );
    let reloaded = server.reload().await.unwrap();
    assert_eq!(
        reloaded,
        pb::ReloadResponse {
            generation: 2,
            rejected_libraries: vec![format!("{}: {reason}", copy.display())],
            ..Default::default()
        }
    );
    assert_eq!(server.all_keys().await, all);
    let listing = server.listing().await;
    let file = |path: &Path| {
        let found: Vec<&pb::PluginInfo> = listing
            .plugins
            .iter()
            .filter(|p| p.path == path.display().to_string())
            .collect();
        assert_eq!(found.len(), 1, "{listing:?}");
        found[0].clone()
    };
    let (kept, refused) = (file(&serving), file(&copy));
    assert_eq!(
        (kept.status, kept.reason.as_str()),
        (pb::plugin_info::Status::Loaded as i32, "")
    );
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (pb::plugin_info::Status::Rejected as i32, reason.as_str())
    );
    // A second reload, with both files in place: the copy stays refused.
    server.reload().await.unwrap();
    let listing = server.listing().await;
    let refused: Vec<&pb::PluginInfo> = listing
        .plugins
        .iter()
        .filter(|p| p.status == pb::plugin_info::Status::Rejected as i32)
        .collect();
    assert_eq!(refused.len(), 1, "{listing:?}");
    assert_eq!(
        (refused[0].path.as_str(), refused[0].reason.as_str()),
        (copy.display().to_string().as_str(), reason.as_str())
    );
    assert_eq!(server.all_keys().await, all);
    stop(server);
}

/// A new version of a library that only an isolated source uses, whose ELF initialiser aborts,
/// dropped in while serving: the reload inspects it in a child process, which dies, so the new
/// version is rejected naming the signal, the server lives on and the old version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_whose_initialiser_aborts_is_rejected_and_the_server_lives_on() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("init-fault");
    let config = write_config(
        dir.path(),
        plugins.path(),
        "watch = false\n[[source]]\nname = \"iso\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"a\" }] }\n",
    );
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("TRIBUTARY_TESTKIT_INIT_FAULT", &marker)
        .stderr(std::process::Stdio::null());
    let (child, address) = crate::binary::start(command);
    tributary_tests::wait_until_started(&address);
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut server = Server {
        child: Some(child),
        address: address.clone(),
        packages: PackagesServiceClient::new(channel.clone()),
        plugins: PluginsServiceClient::new(channel),
    };
    assert_eq!(server.all_keys().await, ["a@iso/a"]);

    // From now on, opening the library aborts; a new build (other bytes) is moved into place.
    std::fs::write(&marker, "").unwrap();
    let target = plugins.path().join("libtestkit.so");
    let staged = plugins.path().join("new-build.tmp");
    let mut bytes = std::fs::read(&target).unwrap();
    bytes.extend_from_slice(b"\0a new build");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, &target).unwrap();
    let reloaded = server.reload().await.unwrap();
    let reason = format!(
        "the library crashed the process that opened it: it was killed by signal {} (Aborted) (in an inspector process; the server never opened it); the previous version (testkit {}, sha256 ",
        libc::SIGABRT,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(reloaded.rejected_libraries.len(), 1, "{reloaded:?}");
    assert!(
        reloaded.rejected_libraries[0].starts_with(&format!("{}: {reason}", target.display())),
        "{reloaded:?}"
    );
    assert!(reloaded.changed_sources.is_empty(), "{reloaded:?}");
    assert!(
        server.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the server died"
    );
    assert_eq!(server.all_keys().await, ["a@iso/a"]);
    stop(server);
}
