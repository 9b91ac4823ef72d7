//! Honest answers under hostile plugins: every answer and every plugin error is checked against the
//! contract (`tributary_plugin_api::contract`), on the detail path as on the list path.

use serde_json::json;
use tonic::Code;
use tributary_proto::v1 as pb;
use tributary_tests::{keys, list, list_request, source, start_with};

fn detail_request(source: &str, identifier: &str) -> pb::GetAvailablePackageDetailRequest {
    pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: source.into(),
            identifier: identifier.into(),
        }),
    }
}

#[tokio::test]
async fn detail_answers_and_plugin_errors_are_checked() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source(
                "bad-utf8",
                "testkit",
                json!({ "items": [{ "name": "x" }], "bad_utf8_in_detail": true }),
            ),
            source(
                "long-error",
                "testkit",
                json!({ "items": [{ "name": "x" }], "long_error_in_detail": 1_000_000 }),
            ),
            source(
                "short-error",
                "testkit",
                json!({ "items": [{ "name": "x" }], "long_error_in_detail": 10 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;

    let err = client
        .get_available_package_detail(detail_request("bad-utf8", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "source \"bad-utf8\" (plugin \"testkit\"), identifier \"x\": contract_violation: item \"x\" has a display_name that is not valid UTF-8"
    );

    let err = client
        .get_available_package_detail(detail_request("long-error", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "source \"long-error\" (plugin \"testkit\"), identifier \"x\": contract_violation: error of kind unavailable has a message of 1000000 bytes, at most 4096 are allowed"
    );

    let err = client
        .get_available_package_detail(detail_request("short-error", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "source \"short-error\" (plugin \"testkit\"), identifier \"x\": unavailable: eeeeeeeeee"
    );
    server.stop().await;
}

fn items(names: &[&str]) -> serde_json::Value {
    json!({ "items": names.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() })
}

/// Sources a (a-1..a-3) and b (b-1..b-3, failing its first call), page size 10: the page with b
/// failed carries a token, and b's items come on the next page once it answers.
#[tokio::test]
async fn a_failed_source_does_not_end_the_listing() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("a", "testkit", items(&["a-1", "a-2", "a-3"])),
            source("b", "testkit", {
                let mut c = items(&["b-1", "b-2", "b-3"]);
                c["error_on_call"] = json!(1);
                c
            }),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let first = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&first.available_package_summaries),
        ["a-1@a/a-1", "a-2@a/a-2", "a-3@a/a-3"]
    );
    assert_eq!(first.failed_sources.len(), 1);
    assert_eq!(first.failed_sources[0].source, "b");
    assert!(
        !first.next_page_token.is_empty(),
        "b has not been exhausted"
    );
    let second = list(&mut client, 10, &first.next_page_token, None).await;
    assert_eq!(
        keys(&second.available_package_summaries),
        ["b-1@b/b-1", "b-2@b/b-2", "b-3@b/b-3"]
    );
    assert!(second.failed_sources.is_empty());
    assert_eq!(second.next_page_token, "");
    server.stop().await;
}

/// When every source that could still have items fails, the call is UNAVAILABLE naming them, not an
/// empty, complete catalog.
#[tokio::test]
async fn every_source_failing_is_unavailable() {
    let failing = |names: &[&str]| {
        let mut c = items(names);
        c["error_on_call"] = json!(1);
        c
    };
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("a", "testkit", failing(&["a-1"])),
            source("b", "testkit", failing(&["b-1"])),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let err = client
        .list_available_package_summaries(list_request(10, "", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "no source could answer: source \"a\" (plugin \"testkit\") unavailable: injected error on call 1; source \"b\" (plugin \"testkit\") unavailable: injected error on call 1"
    );
    // They recover: the same request now serves both.
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a-1@a/a-1", "b-1@b/b-1"]
    );
    assert_eq!(page.next_page_token, "");
    server.stop().await;
}

/// The failed source held the last items: the listing does not end with them unserved.
#[tokio::test]
async fn a_source_failing_mid_listing_is_resumed() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("a", "testkit", items(&["a-1", "a-2"])),
            source("b", "testkit", {
                let mut c = items(&["z-1", "z-2", "z-3"]);
                c["error_on_call"] = json!(2);
                c
            }),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let mut served = Vec::new();
    let mut token = String::new();
    let mut failures = 0;
    for _ in 0..10 {
        // `a` is done when `b` fails: that page is UNAVAILABLE, with the token to resume from.
        let page =
            tributary_tests::page_or_resume(&mut client, list_request(2, &token, None)).await;
        served.extend(keys(&page.available_package_summaries));
        failures += page.failed_sources.len();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(failures, 1, "b failed once");
    assert_eq!(
        served,
        [
            "a-1@a/a-1",
            "a-2@a/a-2",
            "z-1@b/z-1",
            "z-2@b/z-2",
            "z-3@b/z-3"
        ]
    );
    server.stop().await;
}

/// 200 items with 60 KB descriptions (within the field limits), page size 1000: each page stays
/// within the byte budget that a default client (4 MiB limit) accepts, ends early with a token, and
/// paging serves every item exactly once.
#[tokio::test]
async fn a_page_stays_within_its_byte_budget() {
    use prost::Message;
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source(
            "big",
            "testkit",
            json!({ "generate": 200, "description_bytes": 60_000 }),
        )],
    )
    .await;
    let mut client = server.packages().await;
    let mut token = String::new();
    let mut served = Vec::new();
    let mut pages = 0;
    loop {
        let page = list(&mut client, 1000, &token, None).await;
        let bytes = page.encoded_len();
        eprintln!(
            "page {}: {} items, {bytes} bytes",
            pages + 1,
            page.available_package_summaries.len()
        );
        assert!(
            bytes <= tributary_runtime::config::DEFAULT_MAX_PAGE_BYTES,
            "page of {bytes} bytes"
        );
        pages += 1;
        served.extend(keys(&page.available_package_summaries));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..200).map(|i| format!("pkg-{i:010}@big/g{i}")).collect();
    assert_eq!(served, expected);
    assert_eq!(pages, 4, "52 items of ~60 KB fit in 3 MiB");
    server.stop().await;
}

/// A 500 KB source name in a detail reference (1 MiB requests are OUT_OF_RANGE already) is refused without being echoed.
#[tokio::test]
async fn a_huge_source_name_is_refused_without_echo() {
    let (_plugins, server) =
        start_with(&["testkit"], vec![source("a", "testkit", items(&["x"]))]).await;
    let mut client = server.packages().await;
    let err = client
        .get_available_package_detail(detail_request(&"s".repeat(500_000), "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "available_package_ref.source is 500000 bytes long, at most 1024 are allowed"
    );
    server.stop().await;
}

/// Clients whose deadlines are shorter than the source timeout: the plugin's own clock still charges
/// the overrun (the source goes unhealthy), and eight calls caught in one stall are one step of
/// back-off, not eight.
#[tokio::test]
async fn a_stall_is_charged_on_the_plugins_clock_once() {
    use std::time::Duration;
    use tributary_proto::v1::source_info::Status as SourceStatus;
    use tributary_runtime::config::CallLimits;
    use tributary_tests::{config, PluginDir, TestServer};
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("empty", "testkit", json!({})),
            source(
                "slow",
                "testkit",
                json!({ "items": [{ "name": "b" }], "sleep_ms": 1500 }),
            ),
        ],
    );
    cfg.source_timeout = Duration::from_millis(400);
    cfg.call_limits = CallLimits {
        max_calls: 8,
        backoff: Duration::from_secs(30),
    };
    let server = TestServer::start(cfg).await;
    let client = server.packages().await;
    let mut requests = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone();
        requests.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(list_request(10, "", None));
            request.set_timeout(Duration::from_millis(200));
            client.list_available_package_summaries(request).await
        }));
    }
    for r in requests {
        // Either the page (slow: timeout, by the client's deadline) or the client gave up first.
        if let Ok(page) = r.await.unwrap() {
            assert_eq!(page.into_inner().failed_sources[0].kind, "timeout");
        }
    }
    let mut slow = None;
    for _ in 0..200 {
        let listing = server.listing().await;
        let s = listing
            .sources
            .into_iter()
            .find(|s| s.name == "slow")
            .unwrap();
        if s.status == SourceStatus::Unhealthy as i32 {
            slow = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let slow = slow.expect("the overrun marks the source unhealthy");
    assert!(
        slow.reason
            .starts_with("unhealthy: 1 call(s) in a row exceeded the source timeout"),
        "{}",
        slow.reason
    );
    server.stop().await;
}

/// Sends raw bytes as a gRPC request body: what a broken or hostile client sends.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Malformed protobuf (invalid UTF-8 in a string field, a truncated field, a bad wire type) is the
/// caller's fault: INVALID_ARGUMENT, saying what is wrong, never echoing the bytes.
#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let (_plugins, server) =
        start_with(&["testkit"], vec![source("a", "testkit", items(&["x"]))]).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    // ListAvailablePackageSummariesRequest: field 2 is page_token (a string).
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "invalid UTF-8",
            vec![0x12, 0x02, 0xff, 0xfe],
            "invalid string value: data is not UTF-8 encoded",
        ),
        ("truncated", vec![0x12, 0x05, b'a'], "buffer underflow"),
        (
            "bad wire type",
            vec![0x0f, 0x01],
            "invalid wire type value: 7",
        ),
    ];
    for (what, body, needle) in cases {
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static(
                    "/tributary.v1.PackagesService/ListAvailablePackageSummaries",
                ),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("malformed protobuf message: ")
                && err.message().contains(needle),
            "{what}: {err:?}"
        );
    }
    // The server is unharmed.
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["x@a/x"]);
    server.stop().await;
}

/// At most `max_requests_in_flight` requests run at once; one more waits `request_queue_ms` for a
/// slot, then gets RESOURCE_EXHAUSTED naming the limit; the server serves again once slots free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded() {
    let plugins = tributary_tests::PluginDir::with(&["testkit"]);
    let mut config = tributary_tests::config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "slow",
            "testkit",
            json!({ "items": [{ "name": "a" }], "sleep_ms": 1500 }),
        )],
    );
    config.max_requests_in_flight = 2;
    config.request_queue_wait = std::time::Duration::from_millis(100);
    let server = tributary_tests::TestServer::start(config).await;
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut client = server.packages().await;
        calls.push(tokio::spawn(async move {
            client
                .list_available_package_summaries(list_request(10, "", None))
                .await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut client = server.packages().await;
    let err = client
        .list_available_package_summaries(list_request(10, "", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("2 requests in flight (max_requests_in_flight)"),
        "{err:?}"
    );
    for call in calls {
        let page = call.await.unwrap().unwrap().into_inner();
        assert_eq!(keys(&page.available_package_summaries), ["a@slow/a"]);
    }
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@slow/a"]);
    server.stop().await;
}

/// Searches have their own, smaller bound (`max_searches_in_flight`): with it reached, one more
/// search waits and is refused naming the key, while a request without a query is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_in_flight_are_bounded_apart_from_other_requests() {
    let plugins = tributary_tests::PluginDir::with(&["testkit"]);
    let mut config = tributary_tests::config(
        plugins.path(),
        plugins.path(),
        vec![source(
            "slow",
            "testkit",
            json!({ "items": [{ "name": "apache" }, { "name": "nginx" }], "sleep_ms": 2000 }),
        )],
    );
    config.max_searches_in_flight = 1;
    config.request_queue_wait = std::time::Duration::from_millis(100);
    let server = tributary_tests::TestServer::start(config).await;
    let search = |query: &str| {
        Some(pb::FilterOptions {
            query: query.into(),
            ..Default::default()
        })
    };
    let mut first = server.packages().await;
    let running = tokio::spawn({
        let filter = search("ng");
        async move { list(&mut first, 10, "", filter).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let mut client = server.packages().await;
    let err = client
        .list_available_package_summaries(list_request(10, "", search("apa")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        "the server is at its limit of 1 searches in flight (max_searches_in_flight); retry later"
    );
    // A listing without a query does not wait for the search.
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["apache@slow/apache", "nginx@slow/nginx"]
    );
    let page = running.await.unwrap();
    assert_eq!(
        keys(&page.available_package_summaries),
        ["nginx@slow/nginx"]
    );
    // The slot is free again.
    let page = list(&mut client, 10, "", search("apa")).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["apache@slow/apache"]
    );
    server.stop().await;
}

/// Lines in a testkit `calls_file`: the list calls the plugin received.
fn calls_made(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// After a back-off, exactly one trial call reaches the plugin while other requests are still
/// refused (`unhealthy`, "a trial call is in flight"); the trial's success makes the source ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_backoff_exactly_one_trial_call_goes_through() {
    use std::time::Duration;
    use tributary_proto::v1::source_info::Status as SourceStatus;
    use tributary_runtime::config::CallLimits;
    use tributary_tests::{config, PluginDir, TestServer};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("other", "testkit", items(&["a"])),
            // Every call takes 800 ms (the trial's window for the other requests); the first one
            // hangs 2 s more.
            source(
                "s",
                "testkit",
                json!({ "items": [{ "name": "b" }], "sleep_ms": 800, "hang_on_call": 1,
                        "hang_ms": 2000, "calls_file": calls }),
            ),
        ],
    );
    cfg.source_timeout = Duration::from_millis(1000);
    cfg.call_limits = CallLimits {
        max_calls: 32,
        backoff: Duration::from_millis(300),
    };
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    let status_of_s = |listing: pb::ListPluginsResponse| {
        listing.sources.into_iter().find(|s| s.name == "s").unwrap()
    };

    // The stall: call 1 overruns the 1 s source timeout; the source backs off for 300 ms.
    let t0 = std::time::Instant::now();
    let ms = move || t0.elapsed().as_millis();
    let page = list(&mut client, 10, "", None).await;
    eprintln!("{:>5} ms: page 1 served, s failed as timeout", ms());
    assert_eq!(keys(&page.available_package_summaries), ["a@other/a"]);
    assert_eq!(page.failed_sources[0].kind, "timeout");
    assert_eq!(
        status_of_s(server.listing().await).status,
        SourceStatus::Unhealthy as i32
    );
    eprintln!("{:>5} ms: s is UNHEALTHY (backing off)", ms());
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The back-off has ended: 16 requests at once; one is the trial, 15 are refused meanwhile.
    let mut requests = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        requests.push(tokio::spawn(async move {
            list(&mut client, 10, "", None).await
        }));
    }
    let mut served = 0;
    let mut refused = 0;
    for r in requests {
        let page = r.await.unwrap();
        match page.failed_sources.first() {
            None => {
                assert_eq!(
                    keys(&page.available_package_summaries),
                    ["a@other/a", "b@s/b"]
                );
                served += 1;
            }
            Some(f) => {
                assert_eq!(f.kind, "unhealthy", "{f:?}");
                assert!(f.reason.ends_with("a trial call is in flight"), "{f:?}");
                refused += 1;
            }
        }
    }
    eprintln!(
        "{:>5} ms: 16 requests at once: {served} served by the trial call, {refused} refused (unhealthy)",
        ms()
    );
    assert_eq!((served, refused), (1, 15));
    assert_eq!(calls_made(&calls), 2, "the stalled call and the one trial");
    let s = status_of_s(server.listing().await);
    assert_eq!(s.status, SourceStatus::Ready as i32, "{}", s.reason);
    eprintln!("{:>5} ms: s is READY", ms());

    // Ready again: every request calls it.
    let page = list(&mut client, 10, "", None).await;
    assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
    assert_eq!(calls_made(&calls), 3);
    server.stop().await;
}

/// A source whose calls keep failing (here: a panic on every call) is FAILING in ListPlugins with
/// its failure counts and last failure, and NOT_SERVING in health; answers about the request
/// (not_found) are not failures of the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_calls_keep_failing_is_shown_failing() {
    use std::time::Duration;
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    use tributary_proto::v1::source_info::Status as SourceStatus;
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source("bad", "testkit", json!({ "panic_always": true })),
            source("good", "testkit", items(&["a"])),
        ],
    )
    .await;
    let mut client = server.packages().await;
    let find = |listing: &pb::ListPluginsResponse, name: &str| {
        listing
            .sources
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .clone()
    };
    for n in 1..=2 {
        let page = list(&mut client, 10, "", None).await;
        assert_eq!(page.failed_sources[0].kind, "panic");
        let bad = find(&server.listing().await, "bad");
        assert_eq!(bad.status, SourceStatus::Ready as i32, "{n} failure(s)");
        assert_eq!(bad.consecutive_failures, n);
    }
    list(&mut client, 10, "", None).await;
    // not_found is an answer, not a failure of the source.
    let err = client
        .get_available_package_detail(detail_request("good", "missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let listing = server.listing().await;
    let bad = find(&listing, "bad");
    assert_eq!(bad.status, SourceStatus::Failing as i32);
    assert_eq!(bad.reason, "failing: its last 3 calls failed");
    assert_eq!((bad.failures, bad.consecutive_failures), (3, 3));
    assert!(
        bad.last_failure
            .starts_with("panic: panicked: injected panic on every call"),
        "{}",
        bad.last_failure
    );
    assert!(bad.last_failure_unix > 1_700_000_000);
    assert_eq!(bad.last_success_unix, 0);
    let good = find(&listing, "good");
    assert_eq!(good.status, SourceStatus::Ready as i32);
    assert_eq!((good.failures, good.consecutive_failures), (0, 0));
    assert!(good.last_success_unix > 1_700_000_000);
    assert!(good.threads >= 1, "its calls ran on its own thread");

    let mut health = HealthClient::new(server.channel().await);
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status
        }
    };
    let mut bad_health = 0;
    for _ in 0..40 {
        bad_health = status("tributary.source/bad").await;
        if bad_health == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bad_health, ServingStatus::NotServing as i32);
    assert_eq!(
        status("tributary.source/good").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(status("").await, ServingStatus::Serving as i32);
    let _ = &mut health;
    server.stop().await;
}

/// Nine sources that hang on every call, 64 clients with short deadlines: the hung sources hold
/// more threads than tokio's whole blocking pool (512), and the healthy source is served on every
/// page, because each source's calls run on threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_sources_do_not_starve_a_healthy_one() {
    use std::time::{Duration, Instant};
    use tributary_tests::{config, PluginDir, TestServer};
    let plugins = PluginDir::with(&["testkit"]);
    let mut sources = vec![source("ok", "testkit", items(&["a"]))];
    for n in 1..=9 {
        sources.push(source(
            &format!("hung{n}"),
            "testkit",
            json!({ "items": [{ "name": "x" }], "sleep_ms": 4000 }),
        ));
    }
    let mut cfg = config(plugins.path(), plugins.path(), sources);
    // No back-off within the test: the hung calls pile up to the per-source limit (64 each).
    cfg.source_timeout = Duration::from_secs(30);
    let server = TestServer::start(cfg).await;
    let client = server.packages().await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    for _ in 0..64 {
        let mut client = client.clone();
        clients.push(tokio::spawn(async move {
            let (mut pages, mut late) = (0, 0);
            while Instant::now() < until {
                let mut request = tonic::Request::new(list_request(10, "", None));
                request.set_timeout(Duration::from_millis(1000));
                let page = match client.list_available_package_summaries(request).await {
                    Ok(page) => page.into_inner(),
                    // The server answers 100 ms before the deadline; on a machine loaded by other
                    // tests an answer can come later than that. A late page is no starved page.
                    Err(status) if status.code() == tonic::Code::Cancelled => {
                        late += 1;
                        continue;
                    }
                    Err(status) => panic!("a page, with the hung sources failed: {status:?}"),
                };
                assert_eq!(
                    keys(&page.available_package_summaries),
                    ["a@ok/a"],
                    "{:?}",
                    page.failed_sources
                );
                assert!(
                    page.failed_sources.iter().all(|f| f.source != "ok"),
                    "{:?}",
                    page.failed_sources
                );
                assert_eq!(page.failed_sources.len(), 9);
                pages += 1;
            }
            (pages, late)
        }));
    }
    let (mut pages, mut late) = (0, 0);
    for c in clients {
        let (p, l) = c.await.unwrap();
        pages += p;
        late += l;
    }
    let listing = server.listing().await;
    let hung_threads: u32 = listing
        .sources
        .iter()
        .filter(|s| s.name.starts_with("hung"))
        .map(|s| s.threads)
        .sum();
    eprintln!(
        "{pages} pages served to 64 clients in 3 s ({late} came after the client's deadline); \
         the 9 hung sources hold {hung_threads} threads"
    );
    assert!(pages >= 64, "{pages}");
    assert!(
        hung_threads > 512,
        "the hung sources hold more threads than a shared pool of 512 has: {hung_threads}"
    );
    server.stop().await;
}

/// A plugin that ignores the filter: the host re-filters, and asks for twice as many items each
/// call, so a query matching 10 of the first 10,000 items costs a dozen calls, not a thousand.
#[tokio::test]
async fn re_filtering_grows_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source(
            "big",
            "testkit",
            json!({ "generate": 20000, "ignore_filter": true, "calls_file": calls }),
        )],
    )
    .await;
    let mut client = server.packages().await;
    let filter = Some(pb::FilterOptions {
        query: "999".into(),
        ..Default::default()
    });
    let page = list(&mut client, 10, "", filter).await;
    let names: Vec<&str> = page
        .available_package_summaries
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "pkg-0000000999",
            "pkg-0000001999",
            "pkg-0000002999",
            "pkg-0000003999",
            "pkg-0000004999",
            "pkg-0000005999",
            "pkg-0000006999",
            "pkg-0000007999",
            "pkg-0000008999",
            "pkg-0000009990",
        ]
    );
    let made = calls_made(&calls);
    eprintln!("{made} list calls for a page of 10 matches among the first 9,991 items");
    assert!(made <= 12, "{made} calls");
    server.stop().await;
}

/// `request_timeout_ms` bounds a whole request: a selective query over a slow plugin that ignores
/// the filter is answered when the bound is reached, with what the other sources gave, the slow
/// source's timeout, and a token to go on.
#[tokio::test]
async fn a_whole_request_is_bounded_in_time() {
    use std::time::{Duration, Instant};
    use tributary_tests::{config, PluginDir, TestServer};
    let plugins = PluginDir::with(&["testkit"]);
    let mut cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source(
                "slow",
                "testkit",
                json!({ "generate": 1000000, "ignore_filter": true, "sleep_ms": 300 }),
            ),
            source(
                "small",
                "testkit",
                json!({ "items": [{ "name": "zzz-tool" }] }),
            ),
        ],
    );
    cfg.request_timeout = Duration::from_millis(1500);
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;
    let filter = Some(pb::FilterOptions {
        query: "zzz".into(),
        ..Default::default()
    });
    let started = Instant::now();
    let page = list(&mut client, 10, "", filter).await;
    let took = started.elapsed();
    eprintln!("answered after {} ms", took.as_millis());
    // Unbounded, the slow source would take about 75 s (1,000,000 items, 4,096 a call, 300 ms each).
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(
        keys(&page.available_package_summaries),
        ["zzz-tool@small/zzz-tool"]
    );
    assert_eq!(page.failed_sources.len(), 1);
    let failure = &page.failed_sources[0];
    assert_eq!(
        (failure.source.as_str(), failure.kind.as_str()),
        ("slow", "timeout")
    );
    assert!(
        failure.reason.contains("request's deadline"),
        "{}",
        failure.reason
    );
    assert!(!page.next_page_token.is_empty(), "the listing goes on");
    server.stop().await;
}
