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
        tributary_tests::missing_tool(
            "clients::python_v1alpha_reflection_client_lists_the_same_page",
            "python3 with grpcio and grpcio-reflection",
            "pip install grpcio grpcio-reflection",
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

/// gRPC-web on the same port: an HTTP/1.1 POST of a framed request (what a browser's gRPC-web client
/// sends) answers the same page as native gRPC, with the status in a trailer frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_answers_the_same_page_as_grpc() {
    use prost::Message;
    use tributary_proto::v1 as pb;
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source(
                "one",
                "testkit",
                json!({ "items": [{ "name": "a" }, { "name": "c" }] }),
            ),
            source("two", "testkit", json!({ "items": [{ "name": "b" }] })),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let native = list(&mut client, 2, "", None).await;
    assert_eq!(
        keys(&native.available_package_summaries),
        ["a@one/a", "b@two/b"]
    );

    let request = pb::ListAvailablePackageSummariesRequest {
        page_size: 2,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(&request);
    let url = format!(
        "http://{}/tributary.v1.PackagesService/ListAvailablePackageSummaries",
        server.address
    );
    let (content_type, answer) = tokio::task::spawn_blocking(move || {
        let response = ureq::post(&url)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .send(&body[..])
            .expect("a gRPC-web answer");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (content_type, response.into_body().read_to_vec().unwrap())
    })
    .await
    .unwrap();
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    // Frames: [flag, 4-byte length, payload]; 0x00 a message, 0x80 the trailers.
    let mut frames = Vec::new();
    let mut rest = &answer[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0, 0x00);
    let page = pb::ListAvailablePackageSummariesResponse::decode(&frames[0].1[..]).unwrap();
    assert_eq!(page, native);
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    server.stop().await;
}
