//! Helm charts in OCI registries, served by the real helm plugin: a real Docker Distribution
//! registry (Debian's `docker-registry`, started on loopback with a temporary storage folder, charts
//! pushed through its HTTP API), and a registry stub for what distribution 2.8 does not do on
//! loopback (`Link` pages, Bearer token auth).

use std::time::Duration;

use serde_json::{json, Value};
use tonic::transport::Channel;
use tributary_proto::v1::{self as pb, packages_service_client::PackagesServiceClient};
use tributary_tests::{
    keys, list_or_failure,
    oci::{ChartArtifact, Registry, RegistryStub, STUB_PAGE},
    source, start_with,
};

type Client = PackagesServiceClient<Channel>;

fn chart(name: &str, version: &str, extra: Value) -> Value {
    let mut chart = json!({
        "apiVersion": "v2",
        "name": name,
        "version": version,
        "appVersion": format!("app-{version}"),
        "description": format!("{name} chart"),
        "type": "application",
    });
    for (k, v) in extra.as_object().unwrap() {
        chart[k] = v.clone();
    }
    chart
}

/// Polls the first page, deprecated charts included (at most 60 s), until `done` holds for it.
async fn wait_for(
    client: &mut Client,
    what: &str,
    done: impl Fn(&pb::ListAvailablePackageSummariesResponse) -> bool,
) -> pb::ListAvailablePackageSummariesResponse {
    let mut last = None;
    for _ in 0..600 {
        // Deprecated charts too: these tests follow every chart pushed.
        let every = pb::FilterOptions {
            include_deprecated: true,
            ..Default::default()
        };
        let page = list_or_failure(client, 100, "", Some(every)).await;
        if done(&page) {
            return page;
        }
        last = Some(page);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}; last page: {last:?}");
}

async fn detail(client: &mut Client, source: &str, id: &str) -> pb::AvailablePackageDetail {
    client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: source.into(),
                identifier: id.into(),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("detail {id}: {e}"))
        .into_inner()
        .available_package_detail
        .unwrap()
}

fn versions(detail: &pb::AvailablePackageDetail) -> Vec<&str> {
    detail.versions.iter().map(|v| v.version.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_pushed_to_a_real_registry_are_served() {
    let Some(registry) = tokio::task::spawn_blocking(Registry::start).await.unwrap() else {
        tributary_tests::missing_tool(
            "oci::charts_pushed_to_a_real_registry_are_served",
            "Debian's docker-registry",
            "apt-get install docker-registry",
        );
        return;
    };
    let registry = std::sync::Arc::new(registry);
    let push = |repository: &'static str, tag: &'static str, artifact: ChartArtifact| {
        let registry = registry.clone();
        async move {
            tokio::task::spawn_blocking(move || registry.push(repository, tag, &artifact))
                .await
                .unwrap()
        }
    };
    for version in ["1.0.0", "1.1.0", "2.0.0-rc.1"] {
        push(
            "charts/alpha",
            version,
            ChartArtifact::helm(&chart("alpha", version, json!({}))),
        )
        .await;
    }
    push(
        "charts/alpha",
        "1.2.3_build.5",
        ChartArtifact::helm(&chart(
            "alpha",
            "1.2.3+build.5",
            json!({ "keywords": ["a", "b"] }),
        )),
    )
    .await;
    push(
        "charts/alpha",
        "latest",
        ChartArtifact::helm(&chart("alpha", "1.1.0", json!({}))),
    )
    .await;
    push(
        "charts/beta",
        "0.1.0",
        ChartArtifact::helm(&chart(
            "beta",
            "0.1.0",
            json!({ "deprecated": true, "annotations": { "artifacthub.io/category": "security" } }),
        )),
    )
    .await;
    push(
        "charts/gamma",
        "1.0.0",
        ChartArtifact::new(
            &json!({ "architecture": "amd64" }),
            "application/vnd.oci.image.config.v1+json",
        ),
    )
    .await;
    push(
        "other/delta",
        "1.0.0",
        ChartArtifact::helm(&chart("delta", "1.0.0", json!({}))),
    )
    .await;

    let url = format!("oci://{}/charts", registry.address);
    let repo = |extra: Value| {
        let mut table =
            json!({ "name": "reg", "url": url, "plain_http": true, "refresh_interval": 0.2 });
        for (k, v) in extra.as_object().unwrap() {
            table[k] = v.clone();
        }
        json!({ "repositories": [table] })
    };
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![
            source(
                "listed",
                "helm",
                repo(json!({ "charts": ["alpha", "beta", "gamma"] })),
            ),
            source("catalog", "helm", repo(json!({}))),
        ],
    )
    .await;
    let mut client = tributary.packages().await;

    let page = wait_for(&mut client, "both sources", |p| {
        p.failed_sources.is_empty() && p.available_package_summaries.len() == 4
    })
    .await;
    assert_eq!(
        keys(&page.available_package_summaries),
        [
            "alpha@catalog/reg/alpha",
            "alpha@listed/reg/alpha",
            "beta@catalog/reg/beta",
            "beta@listed/reg/beta"
        ],
        "semver tags of Helm charts only; gamma is not a chart, other/ is another namespace"
    );
    let alpha = &page.available_package_summaries[1];
    assert_eq!(alpha.latest_version, "1.2.3+build.5", "`_` in a tag is `+`");
    assert_eq!(alpha.latest_app_version, "app-1.2.3+build.5");
    assert_eq!(alpha.short_description, "alpha chart");
    let beta = &page.available_package_summaries[3];
    assert_eq!(beta.categories, ["security"]);

    let d = detail(&mut client, "listed", "reg/alpha").await;
    assert_eq!(
        versions(&d),
        ["2.0.0-rc.1", "1.2.3+build.5", "1.1.0", "1.0.0"]
    );
    assert_eq!(d.keywords, ["a", "b"]);
    assert_eq!(d.versions[0].created, "2024-05-01T10:00:00Z");
    assert!(
        d.versions[0].digest.starts_with("sha256:"),
        "{:?}",
        d.versions[0]
    );
    assert!(detail(&mut client, "listed", "reg/beta").await.deprecated);

    // A new version is served without a restart.
    push(
        "charts/alpha",
        "1.3.0",
        ChartArtifact::helm(&chart("alpha", "1.3.0", json!({}))),
    )
    .await;
    wait_for(&mut client, "the new version", |p| {
        p.available_package_summaries
            .iter()
            .filter(|s| s.latest_version == "1.3.0")
            .count()
            == 2
    })
    .await;
    tributary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_paged_tokens_fetched_and_only_new_tags_read() {
    let stub = RegistryStub::start(Some(("reader", "s3cret"))).await;
    let open = RegistryStub::start(None).await;
    let tags = ["0.1.0", "0.2.0", "0.3.0", "1.0.0", "1.0.1_meta"];
    for tag in tags {
        let artifact = || ChartArtifact::helm(&chart("web", &tag.replace('_', "+"), json!({})));
        stub.add("team/web", tag, artifact());
        open.add("team/web", tag, artifact());
    }
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let repo = |stub: &RegistryStub, extra: Value| {
        let mut table = json!({
            "name": "r",
            "url": format!("oci://{}/team", stub.address),
            "charts": ["web"],
            "plain_http": true,
            "refresh_interval": 0.2,
        });
        for (k, v) in extra.as_object().unwrap() {
            table[k] = v.clone();
        }
        json!({ "repositories": [table] })
    };
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![
            source(
                "auth",
                "helm",
                repo(
                    &stub,
                    json!({ "username": "reader", "password_file": password }),
                ),
            ),
            source("anon", "helm", repo(&open, json!({}))),
            source(
                "denied",
                "helm",
                repo(
                    &stub,
                    json!({ "username": "reader", "password_file": wrong }),
                ),
            ),
        ],
    )
    .await;
    let mut client = tributary.packages().await;

    let page = wait_for(
        &mut client,
        "the authenticated and anonymous sources",
        |p| p.available_package_summaries.len() == 2,
    )
    .await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["web@anon/r/web", "web@auth/r/web"]
    );
    assert_eq!(page.failed_sources.len(), 1, "{:?}", page.failed_sources);
    let denied = &page.failed_sources[0];
    assert_eq!(denied.source, "denied");
    assert!(
        denied
            .reason
            .contains("/token: HTTP 401 (check the registry's credentials)"),
        "{denied:?}"
    );
    assert!(!denied.reason.contains("guess"), "{denied:?}");
    for source in ["auth", "anon"] {
        let d = detail(&mut client, source, "r/web").await;
        assert_eq!(
            versions(&d),
            ["1.0.1+meta", "1.0.0", "0.3.0", "0.2.0", "0.1.0"],
            "{source}"
        );
    }

    // Every tag page was followed, with a token; manifests were read once per tag.
    let seen = stub.seen();
    let pages: Vec<&str> = seen
        .iter()
        .filter(|s| s.path.contains("/tags/list") && s.status == 200)
        .map(|s| s.path.as_str())
        .take(3)
        .collect();
    assert_eq!(
        pages,
        [
            "/v2/team/web/tags/list?n=1000".to_owned(),
            format!("/v2/team/web/tags/list?n={STUB_PAGE}&last=0.2.0"),
            format!("/v2/team/web/tags/list?n={STUB_PAGE}&last=1.0.0"),
        ]
    );
    assert!(seen
        .iter()
        .filter(|s| s.path.starts_with("/v2/") && s.status == 200)
        .all(|s| s
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer tok-"))));
    let manifests = |stub: &RegistryStub| {
        stub.seen()
            .iter()
            .filter(|s| s.path.contains("/manifests/") && s.status == 200)
            .count()
    };
    // Two sources use `stub` (one is denied its token): five tags read once.
    assert_eq!(manifests(&stub), 5);

    stub.add(
        "team/web",
        "2.0.0",
        ChartArtifact::helm(&chart("web", "2.0.0", json!({}))),
    );
    wait_for(&mut client, "the new tag", |p| {
        p.available_package_summaries
            .iter()
            .any(|s| s.latest_version == "2.0.0")
    })
    .await;
    // Let a few more refreshes pass: still only the new tag's manifest was read.
    let before = stub.seen().len();
    while stub.seen().len() < before + 12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(manifests(&stub), 6);
    tributary.stop().await;
}

/// A registry whose tag list never ends (pages of 1,000 tags that are not versions, each linking
/// to the next): each limit stops the refresh within a known number of requests, with an error
/// naming it. Over `max_tags_per_chart` only that chart is refused; over `max_list_pages` or
/// `max_tags` the repository's refresh fails. The other charts and sources keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_tag_list_stops_at_the_limits() {
    let per_chart = RegistryStub::start(None).await;
    let pages = RegistryStub::start(None).await;
    let total = RegistryStub::start(None).await;
    for stub in [&per_chart, &pages, &total] {
        for tag in ["1.0.0", "1.1.0"] {
            stub.add(
                "team/web",
                tag,
                ChartArtifact::helm(&chart("web", tag, json!({}))),
            );
        }
        stub.add_endless("team/flood", 1000);
    }
    // One refresh each: the requests counted are those of the first.
    let repo = |stub: &RegistryStub, extra: Value| {
        let mut table = json!({
            "name": "r",
            "url": format!("oci://{}/team", stub.address),
            "charts": ["flood", "web"],
            "plain_http": true,
            "refresh_interval": 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            table[k] = v.clone();
        }
        json!({ "repositories": [table] })
    };
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![
            source("per-chart", "helm", repo(&per_chart, json!({}))),
            source(
                "pages",
                "helm",
                repo(&pages, json!({ "max_list_pages": 5 })),
            ),
            source("total", "helm", repo(&total, json!({ "max_tags": 2500 }))),
        ],
    )
    .await;
    let mut client = tributary.packages().await;
    let page = wait_for(&mut client, "web served, the other two failing", |p| {
        p.available_package_summaries.len() == 1 && p.failed_sources.len() == 2
    })
    .await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["web@per-chart/r/web"]
    );
    let reason = |name: &str| {
        page.failed_sources
            .iter()
            .find(|f| f.source == name)
            .unwrap_or_else(|| panic!("{name} failed: {:?}", page.failed_sources))
            .reason
            .clone()
    };
    let reason_pages = reason("pages");
    assert!(
        reason_pages.contains("helm repository \"r\"")
            && reason_pages.contains("more than max_list_pages (5) list pages in one refresh"),
        "{reason_pages}"
    );
    let reason_total = reason("total");
    assert!(
        reason_total.contains("helm repository \"r\"")
            && reason_total.contains(
                "more than max_tags (2500) tags listed in one refresh (at registry repository \"team/flood\")"
            ),
        "{reason_total}"
    );

    // The chart over its own limit is reported in the source's status; its neighbour is served.
    let listing = tributary.listing().await;
    let info = listing
        .sources
        .iter()
        .find(|s| s.name == "per-chart")
        .unwrap();
    let status: Value = serde_json::from_str(&info.status_json).unwrap();
    let repository = &status["repositories"][0];
    assert_eq!(repository["charts"], 1, "{status}");
    let last_error = repository["last_error"].as_str().unwrap();
    assert_eq!(
        last_error,
        "helm repository \"r\": 1 chart refused: chart \"flood\" refused: more than \
         max_tags_per_chart (10000) tags listed",
    );

    // Bounded requests: 11 pages of 1,000 pass 10,000 tags; 5 pages; 3 pages pass 2,500.
    let flood_pages = |stub: &RegistryStub| {
        stub.seen()
            .iter()
            .filter(|s| s.path.starts_with("/v2/team/flood/tags/list") && s.status == 200)
            .count()
    };
    assert_eq!(flood_pages(&per_chart), 11);
    assert_eq!(flood_pages(&pages), 5);
    assert_eq!(flood_pages(&total), 3);
    tributary.stop().await;
}

/// Figures for the README: refreshing an OCI source of N charts with M tags each, against the real
/// registry. The plugin logs each refresh that changed the index with its time and requests. Run:
/// `cargo test --release -p tributary-tests --test e2e figures_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run on demand"]
async fn figures_for_an_oci_source() {
    const CHARTS: usize = 20;
    const TAGS: usize = 10;
    let registry = tokio::task::spawn_blocking(Registry::start)
        .await
        .unwrap()
        .expect("docker-registry is installed");
    let registry = std::sync::Arc::new(registry);
    let pusher = registry.clone();
    tokio::task::spawn_blocking(move || {
        for c in 0..CHARTS {
            for t in 0..TAGS {
                let name = format!("chart-{c:02}");
                let version = format!("1.{t}.0");
                pusher.push(
                    &format!("charts/{name}"),
                    &version,
                    &ChartArtifact::helm(&chart(&name, &version, json!({}))),
                );
            }
        }
    })
    .await
    .unwrap();
    let proxy = tributary_tests::http::CountingProxy::start(registry.address).await;
    let charts: Vec<String> = (0..CHARTS).map(|c| format!("chart-{c:02}")).collect();
    let started = std::time::Instant::now();
    let (_plugins, tributary) = start_with(
        &["helm"],
        vec![source(
            "oci",
            "helm",
            json!({ "repositories": [{
                "name": "reg",
                "url": format!("oci://{}/charts", proxy.address),
                "charts": charts,
                "plain_http": true,
                "refresh_interval": 1,
            }] }),
        )],
    )
    .await;
    let mut client = tributary.packages().await;
    wait_for(&mut client, "every chart", |p| {
        p.available_package_summaries.len() == CHARTS
    })
    .await;
    println!(
        "FIGURE OCI source of {CHARTS} charts x {TAGS} tags: first page {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    // Unchanged refreshes: bytes over the wire per refresh.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = proxy.bytes();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = proxy.bytes();
    println!(
        "FIGURE OCI unchanged refreshes over 10 s (refresh_interval 1 s ±10%): {} bytes sent, {} bytes received",
        after.0 - before.0,
        after.1 - before.1
    );
    let pusher = registry.clone();
    tokio::task::spawn_blocking(move || {
        pusher.push(
            "charts/chart-00",
            "2.0.0",
            &ChartArtifact::helm(&chart("chart-00", "2.0.0", json!({}))),
        )
    })
    .await
    .unwrap();
    wait_for(&mut client, "the new tag", |p| {
        p.available_package_summaries[0].latest_version == "2.0.0"
    })
    .await;
    println!("FIGURE see the plugin's log lines above for each changed refresh (ms, requests)");
    tributary.stop().await;
}
