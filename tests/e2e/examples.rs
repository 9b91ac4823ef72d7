//! The bundled example catalog, served by the real `helm` and `catalog` plugins: what the README's run
//! command shows.

use tributary_proto::v1 as pb;
use tributary_tests::{config, keys, list, page_through, PluginDir, TestServer};

#[tokio::test]
async fn the_example_catalog_merges_helm_and_json_sources() {
    let plugins = PluginDir::with(&["helm", "catalog"]);
    let cfg = config(
        plugins.path(),
        &tributary_tests::examples_dir(),
        tributary_tests::example_sources(),
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;

    // Deprecated packages (cron-runner) are left out unless the filter asks for them.
    let first = list(&mut client, 7, "", None).await;
    assert_eq!(
        keys(&first.available_package_summaries),
        [
            "apache@bitnami/bitnami/apache",
            "auth-gateway@internal/auth-gateway",
            "billing-api@internal/billing-api",
            "cert-manager@community/community/cert-manager",
            "common@bitnami/bitnami/common",
            "feature-flags@internal/feature-flags",
            "grafana@community/community/grafana",
        ]
    );
    let with_deprecated = Some(pb::FilterOptions {
        include_deprecated: true,
        ..Default::default()
    });
    let first = list(&mut client, 7, "", with_deprecated.clone()).await;
    assert_eq!(
        keys(&first.available_package_summaries)[5],
        "cron-runner@internal/cron-runner"
    );
    let everything = page_through(&mut client, &[7], with_deprecated, 20)
        .await
        .concat();
    assert_eq!(everything.len(), 31);
    let all = page_through(&mut client, &[7], None, 20).await.concat();
    let deprecated: Vec<&String> = everything.iter().filter(|k| !all.contains(k)).collect();
    assert_eq!(deprecated, DEPRECATED);
    let nginx: Vec<&String> = all.iter().filter(|k| k.starts_with("nginx@")).collect();
    assert_eq!(
        nginx,
        [
            "nginx@bitnami/bitnami/nginx",
            "nginx@community/community/nginx",
            "nginx@internal/nginx"
        ]
    );

    let detail = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "bitnami".into(),
                identifier: "bitnami/redis".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .available_package_detail
        .unwrap();
    assert_eq!(
        detail.summary.as_ref().unwrap().latest_version,
        "18.4.0",
        "stable before pre-release"
    );
    assert_eq!(
        detail.versions[0].version, "19.0.0-beta.1",
        "every version, newest first"
    );
    server.stop().await;
}

/// The example packages marked deprecated (in `catalog.json` and the chart indexes).
const DEPRECATED: &[&str] = &[
    "cron-runner@internal/cron-runner",
    "node@bitnami/bitnami/node",
    "redis@community/community/redis",
];
