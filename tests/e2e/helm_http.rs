//! Helm repositories over HTTP: the real helm plugin fetching real-size generated indexes from a
//! real HTTP server on loopback (`tributary_tests::http`), through a real server and client.
//! Refreshes run on short intervals; the tests wait by polling the listing (bounded), and assert
//! exact pages, never speed.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tributary_proto::v1::{self as pb, packages_service_client::PackagesServiceClient};
use tributary_tests::{
    http::{helm_index, helm_index_of, Auth, HelmRepoServer, Mode},
    keys, list, list_or_failure, source, start_with,
};

type Client = PackagesServiceClient<Channel>;

/// A remote repository table refreshed every 0.2 s with short timeouts, plus `extra` keys.
fn repo(name: &str, url: &str, extra: Value) -> Value {
    let mut table = json!({ "name": name, "url": url, "refresh_interval": 0.2, "timeout": 2, "connect_timeout": 2 });
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    table
}

fn helm(name: &str, repos: Vec<Value>) -> tributary_runtime::config::SourceConfig {
    source(name, "helm", json!({ "repositories": repos }))
}

/// The whole listing in pages of 500, or the failures of the first page that had any.
async fn listing(client: &mut Client) -> Result<Vec<String>, Vec<pb::SourceFailure>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_or_failure(client, 500, &token, None).await;
        if !page.failed_sources.is_empty() {
            return Err(page.failed_sources);
        }
        all.extend(keys(&page.available_package_summaries));
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// Polls the listing (at most 60 s) until `done` holds for it; returns it.
async fn wait_for(
    client: &mut Client,
    what: &str,
    done: impl Fn(&Result<Vec<String>, Vec<pb::SourceFailure>>) -> bool,
) -> Result<Vec<String>, Vec<pb::SourceFailure>> {
    let mut last = None;
    for _ in 0..600 {
        let now = listing(client).await;
        if done(&now) {
            return now;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}; last listing: {last:?}");
}

/// The keys of `prefix` charts `range` of repository `repo` in source `source`, in listing order.
fn expected(source: &str, repo: &str, prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}{i:05}@{source}/{repo}/{prefix}{i:05}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_size_index_is_served_refreshed_conditionally_and_followed() {
    // About 5 MB of index: 1,000 charts of 4 versions.
    let server = HelmRepoServer::start(helm_index("app-", 1000, 4)).await;
    let base = server.url("/charts");
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm("remote", vec![repo("r", &base, json!({}))])],
    )
    .await;
    let mut client = tributary.packages().await;

    let all = wait_for(&mut client, "the first index", |l| l.is_ok()).await;
    assert_eq!(all.unwrap(), expected("remote", "r", "app-", 0..1000));
    let first = &server.seen()[0];
    assert_eq!(
        first.path, "/charts/index.yaml",
        "index.yaml under the base"
    );
    assert_eq!((first.status, first.gzipped), (200, true));
    assert!(first.if_none_match.is_none() && first.if_modified_since.is_none());

    // Unchanged: 304s answering the ETag of the index served, with no body.
    server.wait_for_status(304, 2).await;
    let etag = server.etag();
    for seen in server.seen().iter().filter(|s| s.status == 304) {
        assert_eq!(seen.if_none_match, etag);
        assert_eq!(seen.body_bytes, 0);
    }

    // A first page, then the index changes: the listing follows without a restart, and the
    // next page resumes after the last key served.
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        expected("remote", "r", "app-", 0..10)
    );
    let mut names: Vec<String> = (0..1000).map(|i| format!("app-{i:05}")).collect();
    names[5] = "app-00005x".into();
    names.extend((0..3).map(|i| format!("new-{i:05}")));
    server.set_index(helm_index_of(&names, 4));
    // A listing read while the index changed mixes old and new pages; wait for a whole new one.
    let now = wait_for(&mut client, "the changed index", |l| {
        l.as_ref().is_ok_and(|l| {
            l.len() == 1003 && l.contains(&"app-00005x@remote/r/app-00005x".to_owned())
        })
    })
    .await
    .unwrap();
    assert!(now.contains(&"app-00005x@remote/r/app-00005x".to_owned()));
    assert!(!now.contains(&"app-00005@remote/r/app-00005".to_owned()));
    assert_eq!(
        now[1000..],
        expected("remote", "r", "new-", 0..3)[..],
        "new charts last by name"
    );
    let next = list(&mut client, 3, &page.next_page_token, None).await;
    assert_eq!(
        keys(&next.available_package_summaries),
        [
            "app-00010@remote/r/app-00010",
            "app-00011@remote/r/app-00011",
            "app-00012@remote/r/app-00012"
        ]
    );
    let detail = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "remote".into(),
                identifier: "r/new-00001".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .available_package_detail
        .unwrap();
    assert_eq!(detail.summary.unwrap().latest_version, "1.3.0");
    assert_eq!(detail.versions.len(), 4);
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_alone_gives_a_304_and_plain_bodies_are_read() {
    let server = HelmRepoServer::start(helm_index("lm-", 20, 2)).await;
    server.without_etag();
    server.set_gzip(false);
    let url = server.url("/stable/index.yaml");
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm("lm", vec![repo("s", &url, json!({}))])],
    )
    .await;
    let mut client = tributary.packages().await;
    let all = wait_for(&mut client, "the index", |l| l.is_ok()).await;
    assert_eq!(all.unwrap(), expected("lm", "s", "lm-", 0..20));
    server.wait_for_status(304, 1).await;
    let seen = server.seen();
    assert_eq!(
        seen[0].path, "/stable/index.yaml",
        "a full index URL as given"
    );
    assert!(!seen[0].gzipped);
    let not_modified = seen.iter().find(|s| s.status == 304).unwrap();
    assert_eq!(not_modified.if_modified_since, server.last_modified());
    assert_eq!(not_modified.if_none_match, None);
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_last_good_index_serving() {
    let server = HelmRepoServer::start(helm_index("ok-", 300, 3)).await;
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm(
            "flaky",
            vec![repo("f", &server.url("/"), json!({ "timeout": 0.5 }))],
        )],
    )
    .await;
    let mut client = tributary.packages().await;
    let good = expected("flaky", "f", "ok-", 0..300);
    assert_eq!(
        wait_for(&mut client, "the index", |l| l.is_ok())
            .await
            .unwrap(),
        good
    );

    // Each failure in turn: the server sees the failing requests, the listing stays the same.
    let failures: Vec<(&str, Mode, Option<String>)> = vec![
        ("500", Mode::Status(500), None),
        ("404", Mode::Status(404), None),
        (
            "truncated body",
            Mode::Truncated,
            Some(helm_index("cut-", 300, 3)),
        ),
        (
            "slow answer",
            Mode::Slow(Duration::from_secs(2)),
            Some(helm_index("slow-", 5, 1)),
        ),
        (
            "invalid YAML",
            Mode::Serve,
            Some("apiVersion: v1\nentries:\n  a: [\n".into()),
        ),
        (
            "no charts",
            Mode::Serve,
            Some("apiVersion: v1\nentries: {}\n".into()),
        ),
    ];
    for (what, mode, index) in failures {
        if let Some(index) = index {
            server.set_index(index);
        }
        server.set_mode(mode);
        let before = server.seen().len();
        for _ in 0..600 {
            if server.seen().len() >= before + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(server.seen().len() >= before + 2, "{what}: no requests");
        assert_eq!(listing(&mut client).await.unwrap(), good, "{what}");
    }

    // The repository recovers: its new index is served.
    server.set_mode(Mode::Serve);
    server.set_index(helm_index("back-", 2, 1));
    let back = wait_for(&mut client, "recovery", |l| {
        l.as_ref()
            .is_ok_and(|l| l.first().is_some_and(|k| k.starts_with("back-")))
    })
    .await;
    assert_eq!(back.unwrap(), expected("flaky", "f", "back-", 0..2));
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repository_leaves_its_source_up_and_others_serving() {
    let good = HelmRepoServer::start(helm_index("good-", 3, 1)).await;
    let late = HelmRepoServer::start(helm_index("late-", 2, 1)).await;
    late.set_mode(Mode::Status(503));
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    };
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![
            helm(
                "mixed",
                vec![
                    repo("down", &closed, json!({})),
                    repo("good", &good.url("/"), json!({})),
                ],
            ),
            helm("late", vec![repo("l", &late.url("/"), json!({}))]),
        ],
    )
    .await;
    let mut client = tributary.packages().await;

    let failing = wait_for(
        &mut client,
        "the late source failing with its status",
        |l| {
            l.as_ref().is_err_and(|f| {
                f.len() == 1 && f[0].source == "late" && f[0].reason.contains("HTTP 503")
            })
        },
    )
    .await
    .unwrap_err();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(
        (failing[0].source.as_str(), failing[0].kind.as_str()),
        ("late", "unavailable")
    );
    assert!(
        failing[0].reason.contains("helm repository \"l\""),
        "{failing:?}"
    );
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        expected("mixed", "good", "good-", 0..3),
        "the good repository serves beside the unreachable one"
    );
    let detail = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "mixed".into(),
                identifier: "down/anything".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(detail.code(), tonic::Code::Unavailable, "{detail:?}");
    assert!(
        detail.message().contains("helm repository \"down\""),
        "{detail:?}"
    );

    late.set_mode(Mode::Serve);
    let all = wait_for(&mut client, "the late repository", |l| l.is_ok())
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            expected("mixed", "good", "good-", 0..3),
            expected("late", "l", "late-", 0..2)
        ]
        .concat()
    );
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_to_the_repository_host_only() {
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, "pa55word\n").unwrap();
    let api_key = secrets.path().join("api-key");
    std::fs::write(&api_key, "k3y").unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "t0ken").unwrap();

    let basic = HelmRepoServer::start(helm_index("basic-", 2, 1)).await;
    let basic_value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("reader:pa55word")
    );
    basic.set_auth(Auth::Authorization(basic_value.clone()));
    let keyed = HelmRepoServer::start(helm_index("keyed-", 2, 1)).await;
    keyed.set_auth(Auth::Header("x-api-key".into(), "k3y".into()));

    // Bearer repositories that redirect to another host (another port of loopback).
    let elsewhere = HelmRepoServer::start(helm_index("moved-", 2, 1)).await;
    let passed = HelmRepoServer::start(helm_index("passed-", 2, 1)).await;
    let bearer = HelmRepoServer::start("").await;
    bearer.set_mode(Mode::Redirect(elsewhere.url("/index.yaml")));
    let bearer_passing = HelmRepoServer::start("").await;
    bearer_passing.set_mode(Mode::Redirect(passed.url("/index.yaml")));
    let wrong = HelmRepoServer::start(helm_index("wrong-", 2, 1)).await;
    wrong.set_auth(Auth::Authorization("Bearer right".into()));

    let token = json!({ "token_file": token_file });
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![
            helm(
                "auth",
                vec![
                    repo(
                        "basic",
                        &basic.url("/"),
                        json!({ "username": "reader", "password_file": password }),
                    ),
                    repo(
                        "keyed",
                        &keyed.url("/"),
                        json!({ "headers": { "X-Api-Key": { "file": api_key } } }),
                    ),
                    repo("moved", &bearer.url("/"), token.clone()),
                    repo(
                        "passed",
                        &bearer_passing.url("/"),
                        json!({ "token_file": token_file, "pass_credentials": true }),
                    ),
                ],
            ),
            helm("wrong", vec![repo("w", &wrong.url("/"), token)]),
        ],
    )
    .await;
    let mut client = tributary.packages().await;
    let failures = wait_for(&mut client, "every authenticated repository", |l| {
        l.as_ref()
            .is_err_and(|f| f.len() == 1 && f[0].source == "wrong" && f[0].reason.contains("401"))
    })
    .await
    .unwrap_err();
    assert_eq!(failures[0].source, "wrong");
    assert!(
        failures[0]
            .reason
            .contains("HTTP 401 (check the repository's credentials)"),
        "{failures:?}"
    );
    assert!(!failures[0].reason.contains("t0ken"), "{failures:?}");

    // The `auth` source serves once any of its repositories has been read: wait (bounded) until
    // every one of them has.
    let mut page = list(&mut client, 20, "", None).await;
    for _ in 0..600 {
        if page.available_package_summaries.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = list(&mut client, 20, "", None).await;
    }
    let mut want = [
        expected("auth", "basic", "basic-", 0..2),
        expected("auth", "keyed", "keyed-", 0..2),
        expected("auth", "moved", "moved-", 0..2),
        expected("auth", "passed", "passed-", 0..2),
    ]
    .concat();
    want.sort();
    assert_eq!(keys(&page.available_package_summaries), want);

    assert!(basic
        .seen()
        .iter()
        .all(|s| s.authorization.as_deref() == Some(basic_value.as_str())));
    assert!(keyed
        .seen()
        .iter()
        .all(|s| s.api_key.as_deref() == Some("k3y")));
    assert!(bearer
        .seen()
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer t0ken")));
    let moved = elsewhere.seen();
    assert!(!moved.is_empty());
    assert!(
        moved.iter().all(|s| s.authorization.is_none()),
        "credentials followed a redirect to another host: {moved:?}"
    );
    assert!(passed
        .seen()
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer t0ken")));

    // Nothing secret in what ListPlugins shows.
    let shown = format!("{:?}", tributary.listing().await);
    for secret in ["t0ken", "pa55word", "k3y"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_over_max_index_size_is_refused() {
    let index = helm_index("big-", 50, 2);
    let limit = index.len() - 1;
    let server = HelmRepoServer::start(index).await;
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm(
            "capped",
            vec![repo(
                "c",
                &server.url("/"),
                json!({ "max_index_size": limit }),
            )],
        )],
    )
    .await;
    let mut client = tributary.packages().await;
    let expected = format!("the index is larger than max_index_size ({limit} bytes)");
    let failures = wait_for(&mut client, "the size error", |l| {
        l.as_ref().is_err_and(|f| f[0].reason.contains(&expected))
    })
    .await
    .unwrap_err();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].reason.contains(&expected), "{failures:?}");
    let first = &server.seen()[0];
    assert!(
        first.gzipped && first.body_bytes < limit,
        "the limit counts the index's bytes, not the compressed ones: {first:?}"
    );
    tributary.stop().await;
}

/// Figures for the README: a ~50 MB index over HTTP (time to the first page, memory) and the bytes
/// of an unchanged refresh. Run in release:
/// `cargo test --release -p tributary-tests --test e2e figures_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run on demand"]
async fn figures_for_a_50_mb_index_over_http() {
    use tributary_tests::http::{memory_kib, CountingProxy};
    // Build and copy the plugin first: the clock starts at the server's start.
    let plugins = tributary_tests::PluginDir::with(&["helm"]);
    let index = helm_index("chart-", 4700, 10);
    let size = index.len();
    let server = HelmRepoServer::start(index).await;
    let proxy = CountingProxy::start(server.address).await;
    let url = format!("http://{}/", proxy.address);
    let (rss_before, _) = memory_kib();

    let started = std::time::Instant::now();
    let tributary = tributary_tests::TestServer::start(tributary_tests::config(
        plugins.path(),
        plugins.path(),
        vec![helm(
            "big",
            vec![repo(
                "b",
                &url,
                json!({ "refresh_interval": 1, "timeout": 60 }),
            )],
        )],
    ))
    .await;
    let mut client = tributary.packages().await;
    let mut first_page = None;
    for _ in 0..6000 {
        let page = list_or_failure(&mut client, 100, "", None).await;
        if page.failed_sources.is_empty() && !page.available_package_summaries.is_empty() {
            first_page = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_page = first_page.expect("a first page within 60 s");
    let (rss_after, hwm) = memory_kib();
    let (_, first_bytes) = proxy.bytes();

    server.wait_for_status(304, 1).await;
    let before = (proxy.bytes(), server.seen().len());
    server.wait_for_status(304, 6).await;
    let after = (proxy.bytes(), server.seen().len());
    let refreshes = (after.1 - before.1) as u64;
    println!(
        "FIGURE index {:.1} MB ({} charts x 10 versions), gzip on the wire {:.1} MB",
        size as f64 / 1e6,
        4700,
        first_bytes as f64 / 1e6
    );
    println!(
        "FIGURE time from start to the first page: {:.2} s",
        first_page.as_secs_f64()
    );
    println!(
        "FIGURE process RSS {} MiB before the source, {} MiB after the first page (+{} MiB), peak {} MiB \
         (the test's own HTTP server holds the index and its gzip copy throughout)",
        rss_before / 1024,
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before)) / 1024,
        hwm / 1024
    );
    println!(
        "FIGURE unchanged refresh (304): {} bytes sent, {} bytes received per refresh (over {refreshes})",
        (after.0 .0 - before.0 .0) / refreshes,
        (after.0 .1 - before.0 .1) / refreshes
    );
    tributary.stop().await;
}

/// The `status@1` answer of source `name` in `ListPlugins`, parsed.
async fn source_status(tributary: &tributary_tests::TestServer, name: &str) -> Value {
    let listing = tributary.listing().await;
    let info = listing
        .sources
        .iter()
        .find(|s| s.name == name)
        .expect("the source is listed");
    serde_json::from_str(&info.status_json)
        .unwrap_or_else(|e| panic!("status_json {:?}: {e}", info.status_json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_repositorys_state_and_chart_urls_are_shown() {
    let server = HelmRepoServer::start(helm_index("st-", 3, 1)).await;
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm(
            "st",
            vec![repo("r", &server.url("/charts/"), json!({}))],
        )],
    )
    .await;
    let mut client = tributary.packages().await;
    assert_eq!(
        wait_for(&mut client, "the index", |l| l.is_ok())
            .await
            .unwrap(),
        expected("st", "r", "st-", 0..3)
    );

    // The index lists `st-00000-1.0.0.tgz`, relative to the repository.
    let detail = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "st".into(),
                identifier: "r/st-00000".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .available_package_detail
        .unwrap();
    assert_eq!(
        detail.extensions.get("package.download_url"),
        Some(&server.url("/charts/st-00000-1.0.0.tgz"))
    );

    let good = source_status(&tributary, "st").await;
    let repo_state = &good["repositories"][0];
    assert_eq!(repo_state["name"], "r");
    assert_eq!(repo_state["charts"], 3);
    assert_eq!(repo_state["last_error"], "");
    assert!(repo_state["last_success_unix"].as_u64().unwrap() > 1_600_000_000);

    // The repository fails: the state says so, the last good index keeps serving.
    server.set_mode(Mode::Status(500));
    let mut failing = Value::Null;
    for _ in 0..300 {
        failing = source_status(&tributary, "st").await;
        if failing["repositories"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repo_state = &failing["repositories"][0];
    assert!(
        repo_state["last_error"].as_str().unwrap().contains("500"),
        "{failing}"
    );
    assert_eq!(repo_state["charts"], 3);
    assert_eq!(
        repo_state["last_success_unix"],
        good["repositories"][0]["last_success_unix"]
    );
    assert_eq!(
        wait_for(&mut client, "the same listing", |l| l.is_ok())
            .await
            .unwrap(),
        expected("st", "r", "st-", 0..3)
    );
    tributary.stop().await;
}

/// An HTTPS endpoint for the helm plugin to connect to: the `tributary` binary itself with a `[tls]`
/// section holding `cert` and `key` (it answers 404 for an index.yaml, after the handshake).
fn https_endpoint(
    dir: &std::path::Path,
    cert: &str,
    key: &str,
) -> (tributary_tests::PluginDir, std::process::Child, String) {
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    let plugins = tributary_tests::PluginDir::with(&["testkit"]);
    let config = crate::binary::write_config(
        dir,
        plugins.path(),
        &format!(
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n{}",
            crate::binary::SOURCES
        ),
    );
    let (child, address) = crate::binary::spawn_server(&config);
    (plugins, child, address)
}

/// The reason the helm source `tls` gives once its first fetch has finished.
async fn first_fetch_failure(url: &str, ca_file: &std::path::Path) -> String {
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![helm(
            "tls",
            vec![repo("r", url, json!({ "ca_file": ca_file }))],
        )],
    )
    .await;
    let mut client = tributary.packages().await;
    let failed = wait_for(&mut client, "the first fetch", |l| {
        l.as_ref()
            .is_err_and(|f| !f[0].reason.contains("has not finished"))
    })
    .await
    .unwrap_err();
    failed[0].reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_must_hold_the_ca_that_signed_the_servers_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let self_signed = |is_ca: IsCa| {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.is_ca = is_ca;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let prefix = |address: &str| {
        format!("no source could answer: source \"tls\" (plugin \"helm\") unavailable: helm repository \"r\": https://{address}/index.yaml: ")
    };

    // A self-signed certificate marked as a CA (what `openssl req -x509` makes by default), served
    // by the repository and given as its ca_file: refused, and the reason says what to do.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(IsCa::Ca(BasicConstraints::Unconstrained));
    let (_p1, server, address) = https_endpoint(dir.path(), &cert, &key);
    let reason = first_fetch_failure(
        &format!("https://{address}/"),
        &dir.path().join("server.pem"),
    )
    .await;
    crate::binary::terminate(server);
    assert_eq!(
        reason,
        format!(
            "{}io: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity)); the server \
             presents a CA certificate as its own (a self-signed certificate made by `openssl req \
             -x509` is marked CA:TRUE unless told otherwise): give the server a certificate issued \
             by a CA and put that CA in ca_file, or make the self-signed certificate with `-addext \
             basicConstraints=critical,CA:FALSE`",
            prefix(&address)
        )
    );

    // A self-signed certificate that is not a CA is its own ca_file: the handshake succeeds and the
    // fetch reaches HTTP (this server has no index.yaml).
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(IsCa::NoCa);
    let (_p2, server, address) = https_endpoint(dir.path(), &cert, &key);
    let reason = first_fetch_failure(
        &format!("https://{address}/"),
        &dir.path().join("server.pem"),
    )
    .await;
    crate::binary::terminate(server);
    assert_eq!(reason, format!("{}HTTP 404", prefix(&address)));

    // A CA and a server certificate it issued, the CA as ca_file: the handshake succeeds. Another
    // CA as ca_file: refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let authority = crate::tls::Authority::new("Test CA");
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).unwrap();
    std::fs::write(
        dir.path().join("other-ca.pem"),
        crate::tls::Authority::new("Other CA").pem(),
    )
    .unwrap();
    crate::tls::write_server_pair(dir.path(), &authority);
    let cert = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
    let key = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
    let (_p3, server, address) = https_endpoint(dir.path(), &cert, &key);
    let url = format!("https://{address}/");
    let reason = first_fetch_failure(&url, &dir.path().join("ca.pem")).await;
    assert_eq!(reason, format!("{}HTTP 404", prefix(&address)));
    let other = dir.path().join("other-ca.pem");
    let reason = first_fetch_failure(&url, &other).await;
    crate::binary::terminate(server);
    assert_eq!(
        reason,
        format!(
            "{}io: invalid peer certificate: UnknownIssuer; no certificate in ca_file {} signed \
             the server's certificate: ca_file must hold the CA certificate that issued it (or the \
             server's own self-signed certificate, when that is not marked as a CA)",
            prefix(&address),
            other.display()
        )
    );
}
