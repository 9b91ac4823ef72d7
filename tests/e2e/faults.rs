//! Bad plugin files and misbehaving sources: the server starts with the rest, says why for each, and
//! stays up.

use serde_json::json;
use tonic::Code;
use tributary_proto::v1::{
    self as pb, plugin_info::Status as PluginStatus, source_info::Status as SourceStatus,
};
use tributary_runtime::config::OnSourceError;
use tributary_tests::{
    config, keys, list, list_request, source, start_with, PluginDir, TestServer,
};

fn items(names: &[&str]) -> serde_json::Value {
    json!({ "items": names.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() })
}

#[tokio::test]
async fn bad_libraries_and_failing_sources_are_reported_and_survived() {
    let plugins = PluginDir::with(&["catalog", "testkit", "not-a-plugin"]);
    std::fs::write(plugins.path().join("libjunk.so"), "this is a text file\n").unwrap();
    plugins.add("catalog", "libzz_catalog_copy.so");
    std::fs::write(plugins.path().join("README.txt"), "not a library name").unwrap();

    let cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("good", "testkit", items(&["alpha", "omega"])),
            source(
                "ctor-fails",
                "testkit",
                json!({ "fail_new": "the backend URL is missing" }),
            ),
            source(
                "ctor-panics",
                "testkit",
                json!({ "panic_new": "constructor exploded" }),
            ),
            source(
                "list-panics",
                "testkit",
                json!({ "items": [{ "name": "beta" }], "panic_on_call": 1 }),
            ),
            source("bad-key", "catalog", json!({ "paht": "x.json" })),
        ],
    );
    let server = TestServer::start(cfg).await;

    let listing = server.listing().await;
    let file = |name: &str| {
        listing
            .plugins
            .iter()
            .find(|p| p.path.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed in {:?}", listing.plugins))
    };
    assert_eq!(listing.plugins.len(), 5, "{:?}", listing.plugins);
    let junk = file("libjunk.so");
    assert_eq!(junk.status, PluginStatus::Rejected as i32);
    assert!(
        junk.reason.starts_with("not a loadable shared library"),
        "{}",
        junk.reason
    );
    let not_plugin = file("libnot-a-plugin.so");
    assert_eq!(not_plugin.status, PluginStatus::Rejected as i32);
    assert!(
        not_plugin.reason.starts_with("not a Tributary plugin"),
        "{}",
        not_plugin.reason
    );
    let catalog = file("libcatalog.so");
    assert_eq!(catalog.status, PluginStatus::Loaded as i32);
    assert_eq!(
        (catalog.name.as_str(), catalog.interface_version.as_str()),
        ("catalog", "1.1")
    );
    let copy = file("libzz_catalog_copy.so");
    assert_eq!(copy.status, PluginStatus::Rejected as i32);
    assert!(
        copy.reason.starts_with("duplicate plugin name \"catalog\""),
        "{}",
        copy.reason
    );
    assert_eq!(file("libtestkit.so").status, PluginStatus::Loaded as i32);

    let status = |name: &str| {
        let s = listing.sources.iter().find(|s| s.name == name).unwrap();
        (s.status, s.reason.clone(), s.is_default)
    };
    assert_eq!(
        listing
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        [
            "bad-key",
            "ctor-fails",
            "ctor-panics",
            "good",
            "list-panics"
        ],
        "sorted by name; the catalog plugin gets no default source because `bad-key` names it"
    );
    let (s, reason, _) = status("ctor-fails");
    assert_eq!(s, SourceStatus::Failed as i32);
    assert_eq!(reason, "invalid_config: the backend URL is missing");
    let (s, reason, _) = status("ctor-panics");
    assert_eq!(s, SourceStatus::Failed as i32);
    // The plugin's panic hook adds where it panicked.
    assert!(
        reason.starts_with("panic: panicked: constructor exploded at plugins/testkit/src/lib.rs:"),
        "{reason}"
    );
    let (s, reason, _) = status("bad-key");
    assert_eq!(s, SourceStatus::Failed as i32);
    assert!(reason.contains("unknown field `paht`"), "{reason}");
    assert_eq!(status("good").0, SourceStatus::Ready as i32);
    assert_eq!(status("list-panics").0, SourceStatus::Ready as i32);

    // The listing is served from the healthy sources and names every failed one.
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["alpha@good/alpha", "omega@good/omega"]
    );
    let failed: Vec<(&str, &str)> = page
        .failed_sources
        .iter()
        .map(|f| (f.source.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            ("bad-key", "invalid_config"),
            ("ctor-fails", "invalid_config"),
            ("ctor-panics", "panic"),
            ("list-panics", "panic")
        ]
    );
    let panic = &page.failed_sources[3];
    assert!(
        panic.reason.contains("injected panic on call 1"),
        "{}",
        panic.reason
    );
    assert_eq!(panic.plugin, "testkit");

    // `list-panics` panics on its first call only: on the next request it answers.
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        [
            "alpha@good/alpha",
            "beta@list-panics/beta",
            "omega@good/omega"
        ],
        "the server is still up and the source answers once it stops panicking"
    );
    server.stop().await;
}

#[tokio::test]
async fn contract_breaches_are_the_sources_error() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("good", "testkit", items(&["a", "b", "c"])),
            source(
                "unordered",
                "testkit",
                json!({ "generate": 10, "prefix": "u-", "unordered_on_call": 1 }),
            ),
            source(
                "oversize",
                "testkit",
                json!({ "generate": 10, "prefix": "o-", "oversize_on_call": 1 }),
            ),
            source(
                "erring",
                "testkit",
                json!({ "generate": 10, "prefix": "e-", "error_on_call": 1 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let page = list(&mut client, 5, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a@good/a", "b@good/b", "c@good/c"]
    );
    let failed: Vec<(&str, &str)> = page
        .failed_sources
        .iter()
        .map(|f| (f.source.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            ("erring", "unavailable"),
            ("oversize", "contract_violation"),
            ("unordered", "contract_violation")
        ]
    );
    assert!(
        page.failed_sources[1].reason.contains("more than the"),
        "{}",
        page.failed_sources[1].reason
    );
    assert!(
        page.failed_sources[2].reason.contains("out of order"),
        "{}",
        page.failed_sources[2].reason
    );
    assert!(page.failed_sources[0]
        .reason
        .contains("injected error on call 1"));
    server.stop().await;
}

#[tokio::test]
async fn fail_fast_fails_the_request_naming_the_source() {
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("good", "testkit", items(&["a"])),
            source(
                "bad",
                "testkit",
                json!({ "items": [{ "name": "b" }], "error_on_call": 1 }),
            ),
        ],
    );
    cfg.on_source_error = OnSourceError::Fail;
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    let err = client
        .list_available_package_summaries(list_request(5, "", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("source \"bad\""),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("injected error"),
        "{}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_detail_call_is_internal_and_survived() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source(
            "p",
            "testkit",
            json!({ "items": [{ "name": "x" }], "panic_in_detail": true }),
        )],
    )
    .await;
    let mut client = server.packages().await;
    let request = pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: "p".into(),
            identifier: "x".into(),
        }),
    };
    let err = client
        .get_available_package_detail(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("injected panic in detail"),
        "{}",
        err.message()
    );
    let page = list(&mut client, 5, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["x@p/x"]);
    server.stop().await;
}

#[tokio::test]
async fn a_source_that_ignores_the_seek_key_is_caught_on_the_next_page() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("good", "testkit", items(&["a", "c", "e"])),
            source(
                "stale",
                "testkit",
                json!({ "items": [{ "name": "b" }, { "name": "d" }], "stale_on_call": 2 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let first = list(&mut client, 2, "", None).await;
    assert_eq!(
        keys(&first.available_package_summaries),
        ["a@good/a", "b@stale/b"]
    );
    let second = list(&mut client, 2, &first.next_page_token, None).await;
    assert_eq!(
        keys(&second.available_package_summaries),
        ["c@good/c", "e@good/e"],
        "b is not served twice"
    );
    assert_eq!(second.failed_sources[0].kind, "contract_violation");
    assert!(
        second.failed_sources[0]
            .reason
            .contains("is not after the requested key"),
        "{}",
        second.failed_sources[0].reason
    );
    server.stop().await;
}

/// A source that always answers in 200 ms, two call slots, a 1 s source timeout and 24 clients:
/// calls that wait for a slot and then run within the source timeout fail as `overloaded`, never
/// as `timeout`, and the source never backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_for_a_slot_is_overloaded_never_a_timeout_of_the_source() {
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source(
                "slow",
                "testkit",
                json!({ "items": [{ "name": "a" }, { "name": "c" }], "sleep_ms": 200 }),
            ),
            source("quick", "testkit", items(&["b"])),
        ],
    );
    cfg.call_limits.max_calls = 2;
    cfg.source_timeout = std::time::Duration::from_millis(1000);
    let server = TestServer::start(cfg).await;
    let mut clients = Vec::new();
    for _ in 0..24 {
        let mut client = server.packages().await;
        clients.push(tokio::spawn(async move {
            let mut kinds = Vec::new();
            for _ in 0..4 {
                let page = list(&mut client, 10, "", None).await;
                kinds.extend(page.failed_sources.into_iter().map(|f| f.kind));
            }
            kinds
        }));
    }
    let mut kinds = Vec::new();
    for client in clients {
        kinds.extend(client.await.unwrap());
    }
    let overloaded = kinds.iter().filter(|k| *k == "overloaded").count();
    println!(
        "24 clients x 4 pages: {overloaded} pages without `slow` (overloaded), kinds {kinds:?}"
    );
    assert!(
        kinds.iter().all(|k| k == "overloaded"),
        "a slot wait was charged to the source: {kinds:?}"
    );
    let listing = server.listing().await;
    let slow = listing.sources.iter().find(|s| s.name == "slow").unwrap();
    assert_eq!(
        (slow.status(), slow.failures),
        (SourceStatus::Ready, 0),
        "{slow:?}"
    );
    server.stop().await;
}

/// The only source left with items fails on a resumed page: the answer is UNAVAILABLE naming it,
/// with the token to resume from in its details (gRPC) and in the JSON error (REST), not an empty
/// page with a token that a client would follow at once, for ever. Resuming later loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_source_left_fails_the_page_is_unavailable_with_the_token_to_resume() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("a", "testkit", items(&["a1", "a2"])),
            source(
                "b",
                "testkit",
                json!({ "items": [{ "name": "b1" }, { "name": "b2" }, { "name": "b3" }], "error_on_call": 2 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let first = list(&mut client, 2, "", None).await;
    assert_eq!(
        keys(&first.available_package_summaries),
        ["a1@a/a1", "a2@a/a2"]
    );
    // `a` is exhausted; `b` fails its second call.
    let status = client
        .list_available_package_summaries(list_request(2, &first.next_page_token, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("no source could answer: source \"b\""),
        "{status:?}"
    );
    let info = tributary_host::service::resume_info(&status).expect("ResumeInfo in the details");
    assert_eq!(info.next_page_token, first.next_page_token);
    assert_eq!(
        info.failed_sources
            .iter()
            .map(|f| (f.source.as_str(), f.kind.as_str()))
            .collect::<Vec<_>>(),
        [("b", "unavailable")]
    );
    let resumed = list(&mut client, 2, &info.next_page_token, None).await;
    assert_eq!(
        keys(&resumed.available_package_summaries),
        ["b1@b/b1", "b2@b/b2"]
    );

    // REST: the same answer as JSON, with nextPageToken and failedSources: a fresh server whose
    // only source `c` fails its first call.
    server.stop().await;
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source(
            "c",
            "testkit",
            json!({ "items": [{ "name": "c1" }], "error_on_call": 1 }),
        )],
    )
    .await;
    let (status, body) = crate::rest::get(server.address, "/v1/packages?page_size=5", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    assert_eq!(body["failedSources"][0]["source"], "c", "{body}");
    let token = body["nextPageToken"]
        .as_str()
        .expect("nextPageToken")
        .to_owned();
    let (status, body) = crate::rest::get(
        server.address,
        &format!("/v1/packages?page_size=5&page_token={token}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["availablePackageSummaries"][0]["name"], "c1", "{body}");
    server.stop().await;
}

/// One item whose description is past the contract's size limit costs only itself: it is left out,
/// counted in the source's ListPlugins entry, and the source's other items (and the other sources)
/// are served; the source is not failed.
#[tokio::test]
async fn an_item_that_breaks_the_contract_is_dropped_not_its_source() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source(
                "mixed",
                "testkit",
                json!({ "items": [{ "name": "a" }, { "name": "b" }, { "name": "c" }], "huge_field_on_call": 1 }),
            ),
            source("other", "testkit", items(&["d"])),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["b@mixed/b", "c@mixed/c", "d@other/d"]
    );
    assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
    let listing = server.listing().await;
    let mixed = listing.sources.iter().find(|s| s.name == "mixed").unwrap();
    assert_eq!(mixed.status(), SourceStatus::Ready, "{mixed:?}");
    assert_eq!(mixed.items_dropped, 1, "{mixed:?}");
    assert_eq!(
        mixed.last_dropped,
        "item \"a\" has a short_description of 1048576 bytes, at most 65536 are allowed"
    );
    assert_eq!(mixed.failures, 0, "{mixed:?}");
    server.stop().await;
}
