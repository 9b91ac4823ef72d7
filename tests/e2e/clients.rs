//! Clients other than tonic's: Python grpcio's reflection client (which speaks only
//! `grpc.reflection.v1alpha`, like grpcurl 1.8.x) discovers the API and pages through it.

use std::process::Command;

use serde_json::json;
use tributary_tests::{keys, list, source, start_with};

/// Whether `python3` can import grpcio and grpcio-reflection (`.ci/run` installs them).
fn python_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection.v1alpha"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn python_v1alpha_reflection_client_lists_the_same_page() {
    if !python_grpc() {
        println!(
            "SKIPPED: python3 with grpcio and grpcio-reflection is not installed \
             (pip install grpcio grpcio-reflection; .ci/run does this)"
        );
        return;
    }
    let items = json!({ "items": [
        { "name": "apache", "id": "x/apache" },
        { "name": "nginx", "id": "x/nginx" },
        { "name": "redis", "id": "x/redis" },
    ] });
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("b", "testkit", items.clone()),
            source("a", "testkit", items),
        ],
    )
    .await;
    let expected = list(&mut server.packages().await, 4, "", None).await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/e2e/clients/reflection_v1alpha.py"
    );
    let address = server.address.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &address, "4"])
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    // Each reflection version lists the services it was built with, and itself.
    assert_eq!(
        answer["services"],
        json!([
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "tributary.v1.PackagesService",
            "tributary.v1.PluginsService"
        ])
    );
    let expected_keys = keys(&expected.available_package_summaries);
    assert_eq!(
        expected_keys,
        [
            "apache@a/x/apache",
            "apache@b/x/apache",
            "nginx@a/x/nginx",
            "nginx@b/x/nginx"
        ]
    );
    assert_eq!(answer["keys"], json!(expected_keys));
    assert_eq!(answer["next_page_token"], json!(expected.next_page_token));
    server.stop().await;
}
