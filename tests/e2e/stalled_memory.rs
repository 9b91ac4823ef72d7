//! A measurement, not a check (run with `--ignored`): the server's memory under HTTP/2 clients that
//! never open their flow-control window, 4 connections asking 100 calls each for pages of 1,000
//! items, with the default limits. Prints the resident set of this process (the server runs in
//! it) before, while the clients stall, and the calls each stream made the plugin answer.

use std::time::Duration;

use serde_json::json;
use tributary_tests::{config, http::memory_kib, list_request, source, PluginDir, TestServer};

/// Opens `streams` calls of `method` (a gRPC method, or `REST` for `GET /v1/packages`) for pages
/// of 1,000 on a new connection whose client never gives any window beyond HTTP/2's initial
/// 64 KiB and never reads; returns what keeps them open.
async fn stall(
    address: std::net::SocketAddr,
    method: &str,
    streams: usize,
) -> Vec<Box<dyn std::any::Any + Send>> {
    use prost::Message as _;
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut send, connection) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let message = list_request(1000, "", None).encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut kept: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..streams {
        let rest = method == "REST";
        let request = if rest {
            http::Request::get("/v1/packages?page_size=1000")
                .body(())
                .unwrap()
        } else {
            http::Request::post(format!("/tributary.v1.PackagesService/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap()
        };
        let Ok((response, mut stream)) = send.send_request(request, rest) else {
            break;
        };
        if !rest {
            let _ = stream.send_data(body.clone().into(), true);
        }
        responses.push(response);
        kept.push(Box::new(stream));
    }
    for response in responses {
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(20), response).await {
            kept.push(Box::new(response.into_body()));
        }
    }
    kept.push(Box::new(send));
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints memory under stalled HTTP/2 clients"]
async fn memory_under_clients_that_never_open_their_window() {
    let plugins = PluginDir::with(&["testkit"]);
    let calls_file = plugins.path().join("calls");
    let server = TestServer::start(config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "big",
            "testkit",
            json!({ "generate": 200000, "calls_file": calls_file }),
        )],
    ))
    .await;
    let calls = || {
        std::fs::read_to_string(&calls_file)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // Warm up: one page, so that the plugin and the allocator have their working set.
    let mut client = server.packages().await;
    client
        .list_available_package_summaries(list_request(1000, "", None))
        .await
        .unwrap();
    let (before, _) = memory_kib();
    for method in [
        "REST",
        "ListAvailablePackageSummaries",
        "StreamAvailablePackageSummaries",
    ] {
        let start_calls = calls();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(stall(server.address, method, 100).await);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, peak) = memory_kib();
        println!(
            "{method}: 4 x 100 stalled calls: RSS {} MB (was {} MB), peak {} MB; {} plugin calls",
            rss / 1024,
            before / 1024,
            peak / 1024,
            calls() - start_calls
        );
        drop(held);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (after, _) = memory_kib();
    println!("after the clients left: RSS {} MB", after / 1024);
    server.stop().await;
}
