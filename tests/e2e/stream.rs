//! `StreamAvailablePackageSummaries`: the whole catalog once, in order, in bounded messages; resuming
//! from any message's token; a client that stops reading stops the plugin calls.

use std::{path::Path, time::Duration};

use serde_json::json;
use tokio_stream::StreamExt;
use tonic::{transport::Channel, Code};
use tributary_proto::v1::{self as pb, packages_service_client::PackagesServiceClient};
use tributary_tests::{keys, list, list_request, source, start_with};

fn calls(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Every message of a stream.
async fn collect(
    client: &mut PackagesServiceClient<Channel>,
    request: pb::ListAvailablePackageSummariesRequest,
) -> Vec<pb::ListAvailablePackageSummariesResponse> {
    let mut stream = client
        .stream_available_package_summaries(request)
        .await
        .expect("stream starts")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.next().await {
        messages.push(message.expect("stream message"));
    }
    messages
}

/// One page of `request`, which must not fail.
async fn list_sorted(
    client: &mut PackagesServiceClient<Channel>,
    request: pb::ListAvailablePackageSummariesRequest,
) -> pb::ListAvailablePackageSummariesResponse {
    client
        .list_available_package_summaries(request)
        .await
        .expect("list")
        .into_inner()
}

fn all_keys(messages: &[pb::ListAvailablePackageSummariesResponse]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| keys(&m.available_package_summaries))
        .collect()
}

async fn two_generated_sources() -> (
    tributary_tests::PluginDir,
    tributary_tests::TestServer,
    Vec<String>,
) {
    let (plugins, server) = start_with(
        &["testkit"],
        vec![
            source("b", "testkit", json!({ "generate": 250 })),
            source("a", "testkit", json!({ "generate": 250 })),
        ],
    )
    .await;
    let whole = list(&mut server.packages().await, 1000, "", None).await;
    assert!(whole.next_page_token.is_empty());
    let expected = keys(&whole.available_package_summaries);
    assert_eq!(expected.len(), 500);
    (plugins, server, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_the_whole_catalog_once_in_order() {
    let (_plugins, server, expected) = two_generated_sources().await;
    let mut client = server.packages().await;
    let messages = collect(&mut client, list_request(40, "", None)).await;
    assert_eq!(messages.len(), 13, "500 items in messages of 40");
    for (i, message) in messages.iter().enumerate() {
        let last = i == messages.len() - 1;
        assert_eq!(
            message.available_package_summaries.len(),
            if last { 20 } else { 40 }
        );
        assert_eq!(message.next_page_token.is_empty(), last, "message {i}");
    }
    assert_eq!(all_keys(&messages), expected);

    // A filter and page_size 0 (20 a message), as in the RPC.
    let filter = pb::FilterOptions {
        sources: vec!["b".into()],
        query: "00000001".into(),
        ..Default::default()
    };
    let native = list(&mut client, 1000, "", Some(filter.clone())).await;
    let messages = collect(&mut client, list_request(0, "", Some(filter))).await;
    assert_eq!(
        all_keys(&messages),
        keys(&native.available_package_summaries)
    );
    assert!(messages
        .iter()
        .all(|m| m.available_package_summaries.len() <= 20));

    // Another order and counts: the stream is the RPC's listing in that order, with the counts on
    // its first message only.
    let filter = pb::FilterOptions {
        query: "00000001 or 00000002".into(),
        ..Default::default()
    };
    let mut request = list_request(1000, "", Some(filter.clone()));
    request.sort = pb::SortOrder::Relevance as i32;
    let native = list_sorted(&mut client, request.clone()).await;
    let mut streamed = request.clone();
    streamed.page_size = 3;
    streamed.include_facets = true;
    let messages = collect(&mut client, streamed).await;
    assert_eq!(
        all_keys(&messages),
        keys(&native.available_package_summaries)
    );
    let matches = native.available_package_summaries.len() as u64;
    assert!(native.next_page_token.is_empty() && matches > 3);
    assert_eq!(messages[0].total_size, Some(matches));
    assert!(messages[1..]
        .iter()
        .all(|m| m.total_size.is_none() && m.facets.is_none()));

    // A bad request is the call's own status, as in the RPC.
    let err = client
        .stream_available_package_summaries(list_request(-1, "", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "page_size must not be negative (got -1)");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_from_a_message_token() {
    let (_plugins, server, expected) = two_generated_sources().await;
    let mut client = server.packages().await;
    let mut stream = client
        .stream_available_package_summaries(list_request(30, "", None))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..3 {
        let message = stream.next().await.unwrap().unwrap();
        seen.extend(keys(&message.available_package_summaries));
        token = message.next_page_token;
    }
    drop(stream); // The connection breaks mid-stream.
    assert_eq!(seen.len(), 90);

    let rest = collect(&mut client, list_request(30, &token, None)).await;
    seen.extend(all_keys(&rest));
    assert_eq!(seen, expected, "every item exactly once, in order");

    // The token also resumes the paged RPC.
    let page = list(&mut client, 5, &token, None).await;
    assert_eq!(keys(&page.available_package_summaries), &expected[90..95]);
    server.stop().await;
}

/// HTTP/2 flow control is the back-pressure: with the client's windows at 64 KiB and the client not
/// reading, the server stops calling the plugin after a few pages instead of reading the whole catalog
/// into memory; when the client reads again, the rest arrives, every item once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_plugin_calls() {
    let plugins = tributary_tests::PluginDir::with(&["testkit"]);
    let calls_file = plugins.path().join("calls");
    let server = tributary_tests::TestServer::start(tributary_tests::config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "big",
            "testkit",
            json!({ "generate": 20000, "calls_file": calls_file }),
        )],
    ))
    .await;
    let channel = Channel::from_shared(format!("http://{}", server.address))
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut client = PackagesServiceClient::new(channel);
    let mut stream = client
        .stream_available_package_summaries(list_request(100, "", None))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.available_package_summaries.len(), 100);

    // Stall: wait until the server stops calling the plugin (no new call for a second).
    let mut last = calls(&calls_file);
    let mut quiet = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = calls(&calls_file);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        if quiet == 10 {
            break;
        }
    }
    assert_eq!(quiet, 10, "the plugin calls never stopped ({last} so far)");
    println!("plugin calls while the client was stalled: {last}");
    // 200 pages make the catalog; about a window's worth (64 KiB, some 8 messages) and the pages
    // waiting in the server may be fetched ahead, nowhere near all of them.
    assert!(
        last <= 40,
        "{last} plugin calls while the client read nothing"
    );

    let mut seen = keys(&first.available_package_summaries);
    let mut messages = 1;
    while let Some(message) = stream.next().await {
        seen.extend(keys(&message.unwrap().available_package_summaries));
        messages += 1;
    }
    assert_eq!(messages, 200);
    let expected: Vec<String> = (0..20000)
        .map(|i| format!("pkg-{i:010}@big/g{i}"))
        .collect();
    assert_eq!(seen, expected);
    assert!(calls(&calls_file) >= 200);
    server.stop().await;
}
