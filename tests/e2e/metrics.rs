//! Prometheus metrics: the real binary with `metrics_listen`, a known workload through a real gRPC
//! client, then a scrape of `/metrics` over plain HTTP, with exact counts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
};

use tributary_proto::v1::{self as pb, packages_service_client::PackagesServiceClient};
use tributary_tests::{artifacts, list, list_request, PluginDir};

use crate::binary::{terminate, write_config, SOURCES};

/// `GET path` over HTTP/1.1: the status line and the body.
pub(crate) fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics listener");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample whose line starts with `series` (name and labels exactly as exposed).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// Starts `tributary serve` with `metrics_listen`; returns it, the gRPC address and the metrics one.
fn serve_with_metrics(config: &std::path::Path) -> (std::process::Child, String, String) {
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(config)
        .stderr(Stdio::null());
    start_with_metrics(command)
}

/// Runs a prepared `tributary ... serve` command whose config sets `metrics_listen`; returns it, the
/// gRPC address and the metrics one, as it printed them.
pub(crate) fn start_with_metrics(mut command: Command) -> (std::process::Child, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tributary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().expect("a line").unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let grpc = next("listening on ");
    let metrics = next("metrics on ");
    (child, grpc, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("metrics_listen = \"127.0.0.1:0\"\n{SOURCES}"),
    );
    // In this process, as the binary serves it: the metrics are the server's own.
    let server = tributary_tests::TestServer::from_file(&config).await;
    let grpc = server.address.to_string();
    let metrics = server
        .metrics_address
        .expect("metrics_listen is set")
        .to_string();

    let mut client = PackagesServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    // Three pages of the 7-item catalog, then a bad token and an unknown source.
    let first = list(&mut client, 3, "", None).await;
    let second = list(&mut client, 3, &first.next_page_token, None).await;
    let third = list(&mut client, 3, &second.next_page_token, None).await;
    assert_eq!(third.available_package_summaries.len(), 1);
    let bad = client
        .list_available_package_summaries(list_request(3, "not-a-token", None))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "nowhere".into(),
                identifier: "x".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let (status, text) = http_get(&metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let list_method = "/tributary.v1.PackagesService/ListAvailablePackageSummaries";
    let detail_method = "/tributary.v1.PackagesService/GetAvailablePackageDetail";
    let requests = |method: &str, code: &str| {
        sample(
            &text,
            &format!(
                "tributary_requests_total{{code=\"{code}\",method=\"{method}\",protocol=\"grpc\"}}"
            ),
        )
    };
    assert_eq!(requests(list_method, "OK"), Some(3.0), "{text}");
    assert_eq!(requests(list_method, "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(requests(detail_method, "NOT_FOUND"), Some(1.0));
    assert_eq!(requests(detail_method, "OK"), None);
    assert_eq!(
        sample(
            &text,
            &format!("tributary_request_duration_seconds_count{{method=\"{list_method}\",protocol=\"grpc\"}}")
        ),
        Some(4.0)
    );
    for source in ["one", "two"] {
        assert_eq!(
            sample(
                &text,
                &format!("tributary_source_up{{plugin=\"testkit\",source=\"{source}\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("tributary_source_calls_in_flight{{source=\"{source}\"}}")
            ),
            Some(0.0)
        );
    }
    assert_eq!(sample(&text, "tributary_pages_total"), Some(3.0));
    // Pages of 3 from two sources: each source is called for its share (2) plus one look-ahead,
    // then again while the page lacks items; every call completes.
    let calls = |source: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "tributary_source_calls_total{{call=\"list\",outcome=\"{outcome}\",source=\"{source}\"}}"
            ),
        )
    };
    let completed = calls("one", "completed").unwrap() + calls("two", "completed").unwrap();
    assert_eq!(
        sample(
            &text,
            "tributary_source_call_duration_seconds_count{call=\"list\",source=\"one\"}"
        ),
        calls("one", "completed")
    );
    assert!(completed >= 6.0, "{text}");
    assert_eq!(calls("one", "timeout"), Some(0.0));
    assert_eq!(sample(&text, "tributary_items_served_total"), Some(7.0));
    assert_eq!(
        sample(&text, "tributary_plugin_libraries{status=\"loaded\"}"),
        Some(1.0)
    );
    // Identifiers and tokens never become labels.
    assert!(!text.contains("not-a-token") && !text.contains("nowhere"));

    let (status, _) = http_get(&metrics, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // REST routes and the stream count under their own names, with the RPC's code.
    let http: std::net::SocketAddr = grpc.parse().unwrap();
    assert_eq!(
        crate::rest::get(http, "/v1/packages?page_size=3", None)
            .await
            .0,
        200
    );
    assert_eq!(
        crate::rest::get(http, "/v1/packages?page_size=x", None)
            .await
            .0,
        400
    );
    assert_eq!(
        crate::rest::get(http, "/v1/packages/nowhere/x/y", None)
            .await
            .0,
        404
    );
    let mut stream = client
        .stream_available_package_summaries(list_request(3, "", None))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = 0;
    while let Some(message) = tokio_stream::StreamExt::next(&mut stream).await {
        streamed += message.unwrap().available_package_summaries.len();
    }
    assert_eq!(streamed, 7);

    let (_, text) = http_get(&metrics, "/metrics");
    let counted = |protocol: &str, method: &str, code: &str| {
        sample(
            &text,
            &format!("tributary_requests_total{{code=\"{code}\",method=\"{method}\",protocol=\"{protocol}\"}}"),
        )
    };
    // REST requests are counted as `rest`, never as gRPC.
    let requests = |method: &str, code: &str| counted("rest", method, code);
    assert_eq!(counted("grpc", "GET /v1/packages", "OK"), None, "{text}");
    assert_eq!(requests("GET /v1/packages", "OK"), Some(1.0), "{text}");
    assert_eq!(requests("GET /v1/packages", "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(
        requests("GET /v1/packages/{source}/{identifier}", "NOT_FOUND"),
        Some(1.0)
    );
    assert_eq!(
        counted(
            "grpc",
            "/tributary.v1.PackagesService/StreamAvailablePackageSummaries",
            "OK"
        ),
        Some(1.0)
    );
    server.stop().await;
}

/// An isolated source's runner, killed with SIGKILL: `ListPlugins` shows the pid, then the restart
/// and why the last runner ended; the metrics count the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_shows_its_restart_and_exit_in_list_plugins_and_metrics() {
    use tributary_proto::v1::plugins_service_client::PluginsServiceClient;
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "metrics_listen = \"127.0.0.1:0\"\n[[source]]\nname = \"iso\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"a\" }] }\n",
    );
    let (child, grpc, metrics) = serve_with_metrics(&config);
    tributary_tests::wait_until_started(&grpc);
    let mut packages = PackagesServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut plugins_client = PluginsServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let source = |listing: pb::ListPluginsResponse| listing.sources.into_iter().next().unwrap();
    let first = source(
        plugins_client
            .list_plugins(pb::ListPluginsRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(first.isolated);
    assert!(first.runner_pid > 0, "{first:?}");
    assert_eq!(
        (first.runner_restarts, first.runner_last_exit.as_str()),
        (0, "")
    );
    let (_, text) = http_get(&metrics, "/metrics");
    assert_eq!(
        sample(&text, "tributary_runner_up{source=\"iso\"}"),
        Some(1.0),
        "{text}"
    );

    let killed = Command::new("kill")
        .args(["-KILL", &first.runner_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Calls go on; the runner comes back after its back-off.
    let started = std::time::Instant::now();
    let after = loop {
        let page = packages
            .list_available_package_summaries(list_request(10, "", None))
            .await;
        let info = source(
            plugins_client
                .list_plugins(pb::ListPluginsRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
        if matches!(&page, Ok(p) if p.get_ref().available_package_summaries.len() == 1)
            && info.runner_restarts == 1
            && info.runner_pid != 0
        {
            break info;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no restart: {info:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_ne!(after.runner_pid, first.runner_pid);
    assert_eq!(
        after.runner_last_exit,
        format!(
            "runner (pid {}) was killed by signal 9 (Killed)",
            first.runner_pid
        )
    );
    let (_, text) = http_get(&metrics, "/metrics");
    assert_eq!(
        sample(&text, "tributary_runner_restarts_total{source=\"iso\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(terminate(child).success());
}
