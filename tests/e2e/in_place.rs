//! Fast sources are called in place on the server's worker threads (`tributary_runtime::call::in_place`);
//! a call in place that hangs must stall no page, its own included.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{artifacts, list_request, PluginDir};

use crate::{
    binary::{terminate, write_config},
    metrics::{http_get, sample, start_with_metrics},
};

/// A source answers 10,000 calls in microseconds (called in place once warm), then its next call
/// made in place sleeps 20 s. Four clients page through it and another source the whole time, until
/// 1.5 s after the stall was found: every page is answered well within the stall, with both
/// sources' items and no failure, and the page whose call hung is built again on the sources'
/// threads. (The paging stops long before the hung call returns: having run past the source
/// timeout, it then counts as the source's timeout, and pages in the back-off that follows report
/// the source. The stall is long so that a loaded machine, slow to log and to find it, still stops
/// paging before then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_source_that_hangs_in_place_stalls_no_page() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        r#"
source_timeout_ms = 3000
metrics_listen = "127.0.0.1:0"
[[source]]
name = "fast"
plugin = "testkit"
config = { generate = 200000, prefix = "p-", hang_on_call = 10001, hang_in_place = true, hang_ms = 20000 }

[[source]]
name = "other"
plugin = "testkit"
config = { generate = 200000, prefix = "p-" }
"#,
    );
    let log = dir.path().join("log.json");
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, address, metrics) = start_with_metrics(command);
    // Stopped however the test ends.
    let mut server = Server(Some(child));

    let stop = Arc::new(AtomicBool::new(false));
    let pages = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = PackagesServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let (stop, pages) = (stop.clone(), pages.clone());
        clients.push(tokio::spawn(async move {
            let mut token = String::new();
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let page = client
                    .list_available_package_summaries(list_request(2, &token, None))
                    .await
                    .expect("a page")
                    .into_inner();
                slowest = slowest.max(asked.elapsed());
                assert!(
                    page.failed_sources.is_empty(),
                    "{:?} on a page that took {} ms",
                    page.failed_sources,
                    asked.elapsed().as_millis()
                );
                let sources: Vec<&str> = page
                    .available_package_summaries
                    .iter()
                    .map(|p| p.available_package_ref.as_ref().unwrap().source.as_str())
                    .collect();
                assert_eq!(
                    sources,
                    ["fast", "other"],
                    "each page has a name's two items"
                );
                token = page.next_page_token;
                pages.fetch_add(1, Ordering::Relaxed);
            }
            slowest
        }));
    }

    // Wait for the watchdog's line about the hung call (not one about a call merely made late
    // by a loaded machine, before it), then keep paging for 1.5 s.
    let started = Instant::now();
    let (hang_line, stuck_line) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut lines = text
            .lines()
            .skip_while(|l| !l.contains("list call") || !l.contains("hangs for 20000 ms"));
        if let (Some(hang), Some(stuck)) = (
            lines.next(),
            lines.find(|l| {
                l.contains("a call made in place ran longer than") && l.contains("\"fast\"")
            }),
        ) {
            break (hang.to_owned(), stuck.to_owned());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no call hung in place after {} pages",
            pages.load(Ordering::Relaxed)
        );
        assert!(clients.iter().all(|c| !c.is_finished()), "a client failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pages_at_stall = pages.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for client in clients {
        slowest = slowest.max(client.await.expect("a client's pages"));
    }
    let total = pages.load(Ordering::Relaxed);
    eprintln!(
        "{total} pages ({pages_at_stall} before the stall was found, {} in the 1.5 s after); \
         the slowest page took {} ms, against a 20,000 ms stall",
        total - pages_at_stall,
        slowest.as_millis()
    );
    eprintln!("the hang: {hang_line}");
    assert!(hang_line.contains("\"source\":\"fast\""), "{hang_line}");
    assert!(stuck_line.contains("\"source\":\"fast\""), "{stuck_line}");
    assert!(
        pages_at_stall >= 5000,
        "the stall came after 10,000 calls: {pages_at_stall} pages"
    );
    assert!(
        total > pages_at_stall,
        "pages went on being served during the stall"
    );
    assert!(
        slowest < Duration::from_millis(2000),
        "no page waited for the stall: the slowest took {} ms",
        slowest.as_millis()
    );
    // The metrics count the calls made in place and the one found stuck.
    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let in_place = sample(&body, "tributary_calls_in_place_total").unwrap();
    let stuck = sample(&body, "tributary_calls_stuck_in_place_total").unwrap();
    eprintln!("{in_place} calls made in place, {stuck} found stuck");
    assert!(in_place >= 10_000.0, "{in_place}");
    assert!(stuck >= 1.0, "{stuck}");
    // The stuck worker returns after the stall; the server then stops cleanly.
    assert!(terminate(server.0.take().unwrap()).success());
}

/// Kills the server if the test fails before stopping it.
struct Server(Option<std::process::Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
