//! Interface compatibility: a plugin built against the frozen interface 1.0 loads and serves in
//! today's host, which uses every extension point (context keys, summary flags and keys,
//! capabilities); the `v1-1` fixture (a 1.1 with a context key and a capability this host does not
//! define) loads and degrades cleanly;
//! one that declares another major version, or whose types' layout differs, is rejected with one
//! line saying what to rebuild against. Also the extension points in use: plugin logs in the host
//! log with the source name, the time a call has left, and deprecated packages hidden by default.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;
use tributary_proto::v1::{self as pb, plugin_info::Status as PluginStatus};
use tributary_tests::{artifacts, keys, list, list_request, start_with, PluginDir};

use crate::binary::write_config;

fn with_deprecated() -> Option<pb::FilterOptions> {
    Some(pb::FilterOptions {
        include_deprecated: true,
        ..Default::default()
    })
}

#[tokio::test]
async fn frozen_and_newer_minor_plugins_load_and_incompatible_ones_are_named() {
    let (_plugins, server) = start_with(
        &[
            "compat-v1-0",
            "compat-v1-1",
            "compat-major-2",
            "compat-layout",
            "testkit",
        ],
        vec![
            tributary_tests::source("compat-v1-0", "compat-v1-0", json!({})),
            tributary_tests::source("compat-v1-1", "compat-v1-1", json!({})),
            tributary_tests::source(
                "t",
                "testkit",
                json!({ "items": [{ "name": "legacy-a" }, { "name": "old-t", "deprecated": true }] }),
            ),
        ],
    )
    .await;
    let listing = server.listing().await;
    let file = |name: &str| {
        listing
            .plugins
            .iter()
            .find(|p| p.path.ends_with(name))
            .unwrap()
            .clone()
    };

    let v1 = file("libcompat-v1-0.so");
    assert_eq!(v1.status, PluginStatus::Loaded as i32, "{}", v1.reason);
    assert_eq!(
        (v1.name.as_str(), v1.interface_version.as_str()),
        ("compat-v1-0", "1.0")
    );
    assert!(v1.capabilities.is_empty());

    let newer = file("libcompat-v1-1.so");
    assert_eq!(
        newer.status,
        PluginStatus::Loaded as i32,
        "{}",
        newer.reason
    );
    assert_eq!(
        (newer.name.as_str(), newer.interface_version.as_str()),
        ("compat-v1-1", "1.1")
    );
    assert_eq!(newer.capabilities, ["detail.batch@1"]);

    let major = file("libcompat-major-2.so");
    assert_eq!(major.status, PluginStatus::Rejected as i32);
    assert_eq!(major.rejection_kind, "incompatible");
    assert_eq!(v1.rejection_kind, "", "loaded");
    assert_eq!(
        major.reason,
        "built for plugin interface 2.0, this host speaks 1.x: rebuild the plugin against tributary-plugin-api 1.x"
    );
    let layout = file("libcompat-layout.so");
    assert_eq!(layout.status, PluginStatus::Rejected as i32);
    assert_eq!(layout.rejection_kind, "incompatible");
    assert!(
        layout
            .reason
            .starts_with("plugin interface layout does not match"),
        "{}",
        layout.reason
    );
    assert!(!layout.reason.contains('\n'), "one line");

    // Both serve through today's engine, merged with a current plugin; deprecated packages are
    // left out by default, from the 1.0 plugin and the current one alike.
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        [
            "legacy-a@compat-v1-0/legacy-a",
            "legacy-a@t/legacy-a",
            "legacy-b@compat-v1-0/legacy-b",
            "newer-a@compat-v1-1/newer-a",
            "newer-b@compat-v1-1/newer-b",
        ]
    );
    // The v1-1 fixture found no region key (this host sends none) and fell back to its default.
    assert_eq!(
        page.available_package_summaries[3].short_description,
        "served for region default"
    );
    assert!(page
        .available_package_summaries
        .iter()
        .all(|s| !s.deprecated));

    let first = list(&mut client, 2, "", with_deprecated()).await;
    let rest = list(&mut client, 10, &first.next_page_token, with_deprecated()).await;
    let all: Vec<String> = keys(&first.available_package_summaries)
        .into_iter()
        .chain(keys(&rest.available_package_summaries))
        .collect();
    assert_eq!(
        all,
        [
            "legacy-a@compat-v1-0/legacy-a",
            "legacy-a@t/legacy-a",
            "legacy-b@compat-v1-0/legacy-b",
            "legacy-old@compat-v1-0/legacy-old",
            "newer-a@compat-v1-1/newer-a",
            "newer-b@compat-v1-1/newer-b",
            "old-t@t/old-t",
        ]
    );
    let flags: Vec<bool> = rest
        .available_package_summaries
        .iter()
        .map(|s| s.deprecated)
        .collect();
    assert_eq!(flags, [false, true, false, false, true]);

    // A token is bound to its filter: include_deprecated is part of it.
    let changed = client
        .list_available_package_summaries(list_request(10, &first.next_page_token, None))
        .await
        .unwrap_err();
    assert_eq!(changed.code(), tonic::Code::InvalidArgument, "{changed}");
    server.stop().await;
}

/// Runs `tributary plugins --log-format json` with `RUST_LOG=info` over `plugins` and `sources`
/// (TOML); returns the log lines as JSON.
fn plugins_log(plugins: &[&str], sources: &str) -> Vec<serde_json::Value> {
    let plugin_dir = PluginDir::with(plugins);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugin_dir.path(), sources);
    let output = Command::new(&artifacts().binary)
        .args(["--log-format", "json", "plugins", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run tributary plugins");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `(source, message)` of every log line a plugin wrote.
fn plugin_lines(log: &[serde_json::Value]) -> Vec<(String, String)> {
    log.iter()
        .filter(|l| l["target"] == "plugin")
        .map(|l| {
            (
                l["fields"]["source"].as_str().unwrap_or("").to_owned(),
                l["fields"]["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn plugin_logs_reach_the_host_log_with_the_source_name() {
    let log = plugins_log(
        &["compat-v1-0", "compat-v1-1", "testkit"],
        "source_timeout_ms = 4321\n\
         [[source]]\nname = \"compat-v1-0\"\nplugin = \"compat-v1-0\"\n\
         [[source]]\nname = \"compat-v1-1\"\nplugin = \"compat-v1-1\"\n\
         [[source]]\nname = \"kit\"\nplugin = \"testkit\"\n\
         config = { log_calls = true, items = [{ name = \"a\" }] }\n",
    );
    let mut lines = plugin_lines(&log);
    lines.sort();
    assert_eq!(
        lines,
        [
            (
                "compat-v1-0".to_owned(),
                "legacy source compat-v1-0 ready; host source timeout 4321 ms".to_owned()
            ),
            (
                "compat-v1-1".to_owned(),
                "host interface 1.1 sends no host.region: serving the default region".to_owned()
            ),
            (
                "kit".to_owned(),
                "testkit source ready with 1 items".to_owned()
            ),
        ]
    );
    assert!(log
        .iter()
        .filter(|l| l["target"] == "plugin")
        .all(|l| l["level"] == "INFO"));
}

#[tokio::test]
async fn a_plugin_learns_the_time_its_call_has_left() {
    let plugin_dir = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugin_dir.path(),
        "source_timeout_ms = 60000\n\
         [[source]]\nname = \"kit\"\nplugin = \"testkit\"\n\
         config = { log_calls = true, items = [{ name = \"a\" }] }\n",
    );
    let log_path = dir.path().join("log.json");
    let mut child = Command::new(&artifacts().binary)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start tributary");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let mut client =
        pb::packages_service_client::PackagesServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
    // First without a client deadline (the source timeout bounds the call), then with 5 s.
    client
        .list_available_package_summaries(list_request(10, "", None))
        .await
        .unwrap();
    let mut request = tonic::Request::new(list_request(10, "", None));
    request.set_timeout(Duration::from_secs(5));
    client
        .list_available_package_summaries(request)
        .await
        .unwrap();
    crate::binary::terminate(child);

    let text = std::fs::read_to_string(&log_path).unwrap();
    let log: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let left: Vec<(String, u64)> = plugin_lines(&log)
        .into_iter()
        .filter_map(|(source, message)| {
            let rest = message.strip_prefix("list call ")?;
            let (call, ms) = rest.split_once(": ")?;
            let ms = ms.strip_suffix(" ms left")?.parse().ok()?;
            Some((format!("{source} {call}"), ms))
        })
        .collect();
    assert_eq!(left.len(), 2, "{text}");
    assert_eq!((left[0].0.as_str(), left[1].0.as_str()), ("kit 1", "kit 2"));
    assert!(
        left[0].1 > 5_000 && left[0].1 <= 60_000,
        "without a client deadline the source timeout bounds the call: {left:?}"
    );
    assert!(
        left[1].1 <= 5_000,
        "the client's 5 s deadline reaches the plugin: {left:?}"
    );
}

/// Interface 1.1's discovery through a plugin built against the frozen 1.0: it declares neither
/// `list.sort@1` nor `facets@1` and matches its query as one substring, so the host sends it the
/// substring every match must contain (nothing for an `or` query), re-applies the full query,
/// orders its matches by relevance itself and counts them itself. Merged with a 1.1 plugin
/// (`catalog`) that does all of it on its side, a page at a time.
#[tokio::test]
async fn a_frozen_1_0_plugin_serves_relevance_queries_and_facets_through_the_host() {
    let plugins = PluginDir::with(&["compat-v1-0", "catalog"]);
    std::fs::write(
        plugins.path().join("catalog.json"),
        json!({ "packages": [
            { "name": "legacy", "latest_version": "1", "repository": "new", "categories": ["db"] },
            { "name": "x-legacy", "latest_version": "1", "repository": "new" },
            { "name": "other", "latest_version": "1", "short_description": "not old" },
        ] })
        .to_string(),
    )
    .unwrap();
    let server = tributary_tests::TestServer::start(tributary_tests::config(
        plugins.path(),
        plugins.path(),
        vec![
            tributary_tests::source("old", "compat-v1-0", json!({})),
            tributary_tests::source("new", "catalog", json!({ "path": "catalog.json" })),
        ],
    ))
    .await;
    let client = server.packages().await;
    let listing = |query: &str, sort: pb::SortOrder| {
        let mut client = client.clone();
        let query = query.to_owned();
        async move {
            let mut keys_seen = Vec::new();
            let mut token = String::new();
            let mut first = None;
            loop {
                let mut request = list_request(
                    1,
                    &token,
                    Some(pb::FilterOptions {
                        query: query.clone(),
                        ..Default::default()
                    }),
                );
                request.sort = sort as i32;
                request.include_facets = token.is_empty();
                let page = client
                    .list_available_package_summaries(request)
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
                keys_seen.extend(keys(&page.available_package_summaries));
                if first.is_none() {
                    first = Some(page.clone());
                }
                if page.next_page_token.is_empty() {
                    return (keys_seen, first.unwrap());
                }
                token = page.next_page_token;
            }
        }
    };
    // Exact name 64, name prefix 32, whole word 16; ties by name, then source.
    let (got, first) = listing("legacy", pb::SortOrder::Relevance).await;
    assert_eq!(
        got,
        [
            "legacy@new/legacy",
            "legacy-a@old/legacy-a",
            "legacy-b@old/legacy-b",
            "x-legacy@new/x-legacy",
        ]
    );
    assert_eq!(first.total_size, Some(4));
    let facets = first.facets.unwrap();
    assert!(facets.complete, "{:?}", facets.missing_sources);
    let counts = |v: &[pb::FacetCount]| {
        v.iter()
            .map(|c| (c.value.clone(), c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&facets.sources),
        [("new".to_owned(), 2), ("old".to_owned(), 2)]
    );
    assert_eq!(counts(&facets.repositories), [("new".to_owned(), 2)]);
    assert_eq!(counts(&facets.categories), [("db".to_owned(), 1)]);

    // An exclusion the 1.0 plugin does not know: it is sent "legacy", the host drops "legacy-b".
    let (got, first) = listing("legacy -legacy-b", pb::SortOrder::Relevance).await;
    assert_eq!(
        got,
        [
            "legacy@new/legacy",
            "legacy-a@old/legacy-a",
            "x-legacy@new/x-legacy"
        ]
    );
    assert_eq!(first.total_size, Some(3));
    // `or` has no one substring: the 1.0 plugin is asked for everything, the host keeps the matches.
    let (got, first) = listing("legacy-b or other", pb::SortOrder::Name).await;
    assert_eq!(got, ["legacy-b@old/legacy-b", "other@new/other"]);
    assert_eq!(first.total_size, Some(2));
    // By update time: neither has dates here, so all come last, by name.
    let (got, _) = listing("legacy", pb::SortOrder::Updated).await;
    assert_eq!(
        got,
        [
            "legacy@new/legacy",
            "legacy-a@old/legacy-a",
            "legacy-b@old/legacy-b",
            "x-legacy@new/x-legacy",
        ]
    );
    server.stop().await;
}

/// The other direction: plugins built against interface 1.1 (this tree's `catalog` and `helm`,
/// which declare `list.sort@1` and `facets@1`) load in a host of interface 1.0 (the fixture
/// `tributary-host-1-0`: the frozen 1.0 types and loader checks) and serve name order there; the
/// 1.0 host neither knows nor asks for the 1.1 capabilities, and the plugins send no 1.1 key it
/// must understand.
#[test]
fn plugins_of_interface_1_1_load_in_a_1_0_host_and_serve_name_order() {
    let artifacts = artifacts();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("catalog.json"),
        json!({ "packages": [
            { "name": "b", "latest_version": "1", "created": "2024-01-01T00:00:00Z" },
            { "name": "a", "latest_version": "1" },
            { "name": "c", "latest_version": "1" },
        ] })
        .to_string(),
    )
    .unwrap();
    let run = |library: &str, config: serde_json::Value| {
        let output = Command::new(&artifacts.host_1_0)
            .arg(&artifacts.libraries[library])
            .arg(config.to_string())
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let catalog = run(
        "tributary_plugin_catalog",
        json!({ "path": "catalog.json" }),
    );
    let lines: Vec<&str> = catalog.lines().collect();
    assert!(
        lines[0].starts_with("plugin catalog ")
            && lines[0].ends_with(" 1.1 status@1 list.sort@1 facets@1"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1..], ["item a a", "item b b", "item c c", "end"]);

    let index = dir.path().join("index.yaml");
    std::fs::write(
        &index,
        "apiVersion: v1\nentries:\n  zeta:\n  - name: zeta\n    version: 1.0.0\n    created: \"2024-01-01T00:00:00Z\"\n  alpha:\n  - name: alpha\n    version: 2.0.0\n",
    )
    .unwrap();
    let helm = run(
        "tributary_plugin_helm",
        json!({ "repositories": [{ "name": "local", "url": "index.yaml" }] }),
    );
    let lines: Vec<&str> = helm.lines().collect();
    assert!(
        lines[0].starts_with("plugin helm ") && lines[0].contains(" 1.1 "),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1..],
        ["item alpha local/alpha", "item zeta local/zeta", "end"]
    );
}
