//! Plugins that hang or are slow, clients that give up or crowd in: deadlines, back-off, bounded
//! calls in flight, cancellation, load.

use std::{path::Path, time::Duration};

use serde_json::json;
use tonic::Request;
use tributary_proto::v1::{self as pb, source_info::Status as SourceStatus};
use tributary_runtime::config::CallLimits;
use tributary_tests::{
    config, keys, list, list_request, page_through, source, start_with, PluginDir, TestServer,
};

fn calls(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits (bounded) until `done` holds; the bound is a safety net, not a measurement.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test]
async fn a_hung_source_times_out_then_backs_off() {
    let plugins = PluginDir::with(&["testkit"]);
    let calls_file = plugins.path().join("slow-calls");
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source(
                "fast",
                "testkit",
                json!({ "items": [{ "name": "a" }, { "name": "b" }] }),
            ),
            source(
                "slow",
                "testkit",
                json!({ "items": [{ "name": "c" }], "sleep_ms": 1500, "calls_file": calls_file }),
            ),
        ],
    );
    cfg.source_timeout = Duration::from_millis(150);
    cfg.call_limits = CallLimits {
        max_calls: 4,
        backoff: Duration::from_secs(30),
    };
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;

    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a@fast/a", "b@fast/b"]
    );
    assert_eq!(page.failed_sources.len(), 1);
    assert_eq!(
        (
            page.failed_sources[0].source.as_str(),
            page.failed_sources[0].kind.as_str()
        ),
        ("slow", "timeout")
    );
    assert!(
        page.failed_sources[0]
            .reason
            .contains("source timeout of 150 ms"),
        "{}",
        page.failed_sources[0].reason
    );

    // Backing off: refused without a call.
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a@fast/a", "b@fast/b"]
    );
    assert_eq!(page.failed_sources[0].kind, "unhealthy");
    assert_eq!(
        calls(&calls_file),
        1,
        "the second request made no call to the unhealthy source"
    );

    let listing = server.listing().await;
    let slow = listing.sources.iter().find(|s| s.name == "slow").unwrap();
    assert_eq!(slow.status, SourceStatus::Unhealthy as i32);
    assert!(
        slow.reason
            .starts_with("unhealthy: 1 call(s) in a row exceeded the source timeout"),
        "{}",
        slow.reason
    );
    assert_eq!(slow.calls_in_flight, 1, "the hung call is still running");

    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let mut health = HealthClient::new(server.channel().await);
    let mut status = 0;
    for _ in 0..100 {
        status = health
            .check(HealthCheckRequest {
                service: "tributary.source/slow".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);
    let fast = health
        .check(HealthCheckRequest {
            service: "tributary.source/fast".into(),
        })
        .await
        .unwrap();
    assert_eq!(fast.into_inner().status, ServingStatus::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn an_unhealthy_source_is_tried_again_after_the_back_off() {
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            // An answering source: with every source failing the call would be UNAVAILABLE.
            source("empty", "testkit", json!({})),
            source(
                "flaky",
                "testkit",
                json!({ "items": [{ "name": "x" }], "hang_on_call": 1, "hang_ms": 1000 }),
            ),
        ],
    );
    cfg.source_timeout = Duration::from_millis(150);
    cfg.call_limits = CallLimits {
        max_calls: 4,
        backoff: Duration::from_millis(300),
    };
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    let kind = |page: &pb::ListAvailablePackageSummariesResponse| {
        page.failed_sources
            .first()
            .map(|f| f.kind.clone())
            .unwrap_or_default()
    };
    // `empty` has nothing to give: each of these is UNAVAILABLE, naming `flaky`.
    let first = tributary_tests::page_or_resume(&mut client, list_request(5, "", None)).await;
    assert_eq!(kind(&first), "timeout");
    let second = tributary_tests::page_or_resume(&mut client, list_request(5, "", None)).await;
    assert_eq!(kind(&second), "unhealthy");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = list(&mut client, 5, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["x@flaky/x"],
        "tried again, and it answers"
    );
    assert_eq!(
        server
            .listing()
            .await
            .sources
            .iter()
            .find(|s| s.name == "flaky")
            .unwrap()
            .status,
        SourceStatus::Ready as i32,
        "healthy again"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_clients_deadline_bounds_the_answer_without_blaming_the_source() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("fast", "testkit", json!({ "items": [{ "name": "a" }] })),
            source(
                "slow",
                "testkit",
                json!({ "items": [{ "name": "b" }], "sleep_ms": 1500 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let mut request = Request::new(list_request(10, "", None));
    request.set_timeout(Duration::from_millis(400));
    let page = client
        .list_available_package_summaries(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&page.available_package_summaries), ["a@fast/a"]);
    assert_eq!(page.failed_sources[0].kind, "timeout");
    assert!(
        page.failed_sources[0].reason.contains("request's deadline"),
        "{}",
        page.failed_sources[0].reason
    );

    let listing = server.listing().await;
    let slow = listing.sources.iter().find(|s| s.name == "slow").unwrap();
    assert_eq!(
        slow.status,
        SourceStatus::Ready as i32,
        "a short client deadline does not make a source unhealthy"
    );
    server.stop().await;
}

#[tokio::test]
async fn calls_in_flight_per_source_are_bounded() {
    let plugins = PluginDir::with(&["testkit"]);
    let calls_file = plugins.path().join("calls");
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("empty", "testkit", json!({})),
            source(
                "slow",
                "testkit",
                json!({ "items": [{ "name": "b" }], "sleep_ms": 1500, "calls_file": calls_file }),
            ),
        ],
    );
    cfg.call_limits = CallLimits {
        max_calls: 2,
        backoff: Duration::from_secs(1),
    };
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut request = Request::new(list_request(10, "", None));
        request.set_timeout(Duration::from_millis(200));
        let page = tributary_tests::page_or_resume(&mut client, request).await;
        kinds.push(page.failed_sources[0].kind.clone());
    }
    assert_eq!(kinds, ["timeout", "timeout", "overloaded"]);
    assert_eq!(calls(&calls_file), 2, "the third request made no call");
    server.stop().await;
}

#[tokio::test]
async fn a_cancelled_request_starts_no_further_plugin_call() {
    let plugins = PluginDir::with(&["testkit"]);
    let slow_calls = plugins.path().join("slow-calls");
    let cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source(
                "slow",
                "testkit",
                json!({ "generate": 200, "prefix": "a-", "sleep_ms": 400, "calls_file": slow_calls }),
            ),
            source(
                "fast",
                "testkit",
                json!({ "generate": 200, "prefix": "b-" }),
            ),
        ],
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    // Warm up the connection so that the baseline counts its tasks.
    client
        .list_available_package_summaries(list_request(
            1,
            "",
            Some(pb::FilterOptions {
                sources: vec!["fast".into()],
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    // A page of 50 needs two calls to `slow` (its first call asks for its share, 26): cancel the
    // request while the first call runs.
    let mut cancelled = client.clone();
    let request = tokio::spawn(async move {
        cancelled
            .list_available_package_summaries(list_request(50, "", None))
            .await
    });
    eventually("the first call started", || calls(&slow_calls) == 1).await;
    request.abort();
    let source = server
        .registry
        .source("slow")
        .unwrap()
        .state
        .as_ref()
        .ok()
        .unwrap()
        .clone();
    eventually("the running call returned", || {
        source.health.in_flight() == 0
    })
    .await;
    eventually("the request's tasks ended", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        calls(&slow_calls),
        1,
        "no plugin call started after the client went away"
    );
    assert_eq!(
        metrics.num_alive_tasks(),
        baseline,
        "live tasks are back to the baseline"
    );

    // The control: the same request, not cancelled, makes the second call.
    let page = list(&mut client, 50, "", None).await;
    assert_eq!(page.available_package_summaries.len(), 50);
    assert_eq!(page.available_package_summaries[49].name, "a-0000000049");
    assert_eq!(calls(&slow_calls), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_page_through_the_whole_catalog() {
    const CLIENTS: usize = 64;
    let plugins = PluginDir::with(&["testkit"]);
    let sources = vec![
        source(
            "one",
            "testkit",
            json!({ "generate": 1000, "prefix": "pkg-" }),
        ),
        source(
            "two",
            "testkit",
            json!({ "generate": 700, "prefix": "pkg-" }),
        ),
        source(
            "three",
            "testkit",
            json!({ "generate": 500, "prefix": "pkg-0000000" }),
        ),
    ];
    let server = TestServer::start(config(plugins.path(), plugins.path(), sources)).await;
    let mut oracle: Vec<(String, &str, String)> = Vec::new();
    for (name, count, prefix) in [
        ("one", 1000, "pkg-"),
        ("two", 700, "pkg-"),
        ("three", 500, "pkg-0000000"),
    ] {
        for i in 0..count {
            oracle.push((format!("{prefix}{i:010}"), name, format!("g{i}")));
        }
    }
    oracle.sort();
    let oracle: Vec<String> = oracle
        .into_iter()
        .map(|(n, s, i)| format!("{n}@{s}/{i}"))
        .collect();

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let channel = server.channel().await;
        let expected = oracle.clone();
        clients.push(tokio::spawn(async move {
            let mut client = pb::packages_service_client::PackagesServiceClient::new(channel);
            let sizes = [1 + (c as i32 % 7), 37, 0, 101, 13 + c as i32];
            let pages = page_through(&mut client, &sizes, None, 10_000).await;
            assert_eq!(pages.concat(), expected, "client {c}");
            pages.len()
        }));
    }
    let mut pages = 0;
    for client in clients {
        pages += client.await.expect("client finished without error");
    }
    println!(
        "load held: {CLIENTS} concurrent clients, {pages} pages, {} items each, {} items in all, 0 errors",
        oracle.len(),
        oracle.len() * CLIENTS
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let plugins = PluginDir::with(&["testkit"]);
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = config(plugins.path(), plugins.path(), vec![]);
    let reason = match tributary_runtime::registry::Registry::load(&cfg) {
        Err(tributary_runtime::registry::StartError::InsecurePluginDir(reason)) => reason,
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an insecure plugin_dir must fail start-up"),
    };
    assert!(reason.starts_with("plugin_dir "), "{reason}");
    assert!(
        reason.contains("writable by group and others (mode 0777)"),
        "{reason}"
    );

    // One file writable by others, in a safe directory.
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = plugins.path().join("libtestkit.so");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = TestServer::start(cfg.clone()).await;
    let listing = server.listing().await;
    assert!(
        listing.plugins[0].reason.starts_with("plugin file "),
        "{}",
        listing.plugins[0].reason
    );
    server.stop().await;

    // The development switch.
    let mut relaxed = cfg;
    relaxed.strict_permissions = false;
    let server = TestServer::start(relaxed).await;
    let listing = server.listing().await;
    assert_eq!(listing.plugins[0].reason, "");
    assert!(listing.sources.is_empty(), "no [[source]]: no source");
    assert!(listing.plugins[0].idle, "loaded and idle");
    server.stop().await;
}

/// One raw HTTP/2 connection whose client never gives the server any flow-control window beyond
/// the first kilobyte of each stream, and never reads what arrives (it does answer pings).
struct StalledClient {
    send: h2::client::SendRequest<bytes::Bytes>,
    /// Ends when the server closes the connection.
    connection: tokio::task::JoinHandle<()>,
}

impl StalledClient {
    async fn connect(address: std::net::SocketAddr) -> StalledClient {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1024)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        StalledClient { send, connection }
    }

    /// Opens a `StreamAvailablePackageSummaries` call for pages of `page_size`; its response
    /// headers arrive when the server has opened the stream.
    fn stream(&mut self, page_size: i32) -> h2::client::ResponseFuture {
        use prost::Message as _;
        let message = list_request(page_size, "", None).encode_to_vec();
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let request =
            http::Request::post("/tributary.v1.PackagesService/StreamAvailablePackageSummaries")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
        let (response, mut stream) = self.send.send_request(request, false).unwrap();
        stream.send_data(body.into(), true).unwrap();
        response
    }
}

/// An HTTP/2 client that never opens its flow-control window holds the server only within bounds:
/// its connection gets at most `max_streams_per_connection` calls, each stalled stream holds one
/// slot of `max_requests_in_flight` and has made at most one page, and after `stall_timeout_ms`
/// without taking anything the connection is closed and the slots come back.
#[tokio::test]
async fn a_client_that_never_opens_its_window_is_bounded_then_cut() {
    let plugins = PluginDir::with(&["testkit"]);
    let calls_file = plugins.path().join("calls");
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "big",
            "testkit",
            json!({ "generate": 20000, "calls_file": calls_file }),
        )],
    );
    cfg.max_streams_per_connection = 4;
    cfg.max_requests_in_flight = 4;
    cfg.request_queue_wait = Duration::from_millis(100);
    cfg.stall_timeout = Duration::from_millis(1500);
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;

    // The control: the plugin calls one page of 1,000 takes (a page is far above the 32 KiB the
    // gRPC encoder gathers, so each page is sent on its own).
    let page = list(&mut client, 1000, "", None).await;
    assert_eq!(page.available_package_summaries.len(), 1000);
    let per_page = calls(&calls_file);
    assert!(per_page >= 1);

    let mut stalled = StalledClient::connect(server.address).await;
    // The server announces max_streams_per_connection in its SETTINGS.
    let mut announced = usize::MAX;
    for _ in 0..100 {
        announced = stalled.send.current_max_send_streams();
        if announced != usize::MAX {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(announced, 4, "SETTINGS_MAX_CONCURRENT_STREAMS");
    let mut responses: Vec<_> = (0..5).map(|_| stalled.stream(1000)).collect();
    let fifth = responses.pop().unwrap();
    // The bodies are kept and never read: dropping one would reset its stream.
    let mut bodies = Vec::new();
    for response in responses {
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("the first four streams are answered")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("grpc-status"),
            None,
            "a stream, not an error: {response:?}"
        );
        bodies.push(response.into_body());
    }
    let stalled_at = std::time::Instant::now();

    // The fifth call waits for a stream: it is not served while the four stall.
    let mut fifth = Box::pin(fifth);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut fifth).await;
    assert!(
        early.is_err(),
        "a fifth stream was opened beyond max_streams_per_connection: {early:?}"
    );

    // Each stalled stream holds its slot: a fifth request, from a client that reads, is refused.
    let refused = client
        .list_available_package_summaries(list_request(10, "", None))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_requests_in_flight"),
        "{}",
        refused.message()
    );

    // No page is made that the client has not asked for: each stream made its first page only.
    let made = calls(&calls_file) - per_page;
    println!("plugin calls for 4 stalled streams: {made} ({per_page} per page)");
    assert!(
        made <= 4 * per_page,
        "{made} plugin calls for 4 stalled streams, {per_page} per page"
    );

    // The connection is closed after the stall timeout, not before.
    assert!(!stalled.connection.is_finished());
    tokio::time::timeout(Duration::from_secs(10), &mut stalled.connection)
        .await
        .expect("the server closes a connection whose client takes nothing")
        .unwrap();
    let after = stalled_at.elapsed();
    println!("stalled connection closed after {after:?}");
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(
        calls(&calls_file) - per_page,
        made,
        "no page was made after the stall"
    );

    drop(bodies);

    // The slots came back.
    let mut page = None;
    for _ in 0..20 {
        match client
            .list_available_package_summaries(list_request(10, "", None))
            .await
        {
            Ok(answer) => {
                page = Some(answer.into_inner());
                break;
            }
            Err(status) => println!("after the cut: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        page.expect("a page after the cut")
            .available_package_summaries
            .len(),
        10
    );
    server.stop().await;
}

/// A gRPC-web call over HTTP/1.1 that declares a 100 kB body and sends it a byte at a time gets
/// DEADLINE_EXCEEDED naming `request_body_timeout_ms` once that has passed, and its connection is
/// closed: it cannot hold a connection slot for minutes.
#[tokio::test]
async fn a_request_body_sent_a_byte_at_a_time_is_cut_at_its_deadline() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "a",
            "testkit",
            json!({ "items": [{ "name": "a" }] }),
        )],
    );
    cfg.request_body_timeout = Duration::from_millis(1000);
    let server = TestServer::start(cfg).await;

    let started = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (mut read, mut write) = tcp.into_split();
    write
        .write_all(
            b"POST /tributary.v1.PackagesService/ListAvailablePackageSummaries HTTP/1.1\r\n\
              host: tributary\r\ncontent-type: application/grpc-web+proto\r\n\
              x-grpc-web: 1\r\ncontent-length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..100_000 {
            if write.write_all(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let read_all =
        tokio::time::timeout(Duration::from_secs(8), read.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    dribble.abort();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    println!("after {elapsed:?}:\n{answer}");
    assert!(
        read_all.is_ok(),
        "the connection was still open after {elapsed:?}: {answer:?}"
    );
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("grpc-status: 4\r\n"),
        "DEADLINE_EXCEEDED: {answer}"
    );
    assert!(answer.contains("request_body_timeout_ms"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    server.stop().await;
}
