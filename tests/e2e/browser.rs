//! The catalog web page at `/`, driven in a real headless Chromium over the DevTools protocol: the
//! page loads from a running server, a user types a query, pages forward and back, opens a
//! package's detail and closes it, all with the keyboard, and the rendered DOM is compared with
//! what the gRPC API answers for the same requests. Screenshots are kept in
//! `target/test-artifacts/`: `catalog-page.png` (the first page, with the failed source's notice),
//! `catalog-detail.png` (a package's detail), `catalog-facets.png` (a search by relevance with the
//! counts of each filter value, one of them chosen) and `catalog-query-error.png` (a query that does
//! not parse).
//!
//! Chromium is Debian's `chromium` (`/usr/bin/chromium`; `TRIBUTARY_CHROMIUM` names another);
//! `.ci/run` installs it. Without it this test fails and says so.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tributary_proto::v1 as pb;
use tributary_tests::{config, list, source, PluginDir, TestServer};
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

/// A headless Chromium with one page, spoken to over the DevTools protocol.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("TRIBUTARY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: the browser test needs Chromium (Debian: apt-get install chromium; \
         or set TRIBUTARY_CHROMIUM to its path)",
        path.display()
    );
    path
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium announces its DevTools address within 30 s");
        let http = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let targets: Value = serde_json::from_str(
            &ureq::get(&format!("http://{http}/json/list"))
                .call()
                .expect("DevTools target list")
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (socket, _) = tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap())
            .expect("connect to the page's DevTools socket");
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one command and returns its result; events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().expect("DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] != id {
                continue;
            }
            if let Some(error) = value.get("error") {
                panic!("{method}: {error}");
            }
            return value["result"].clone();
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(expression) != json!(true) {
            if Instant::now() > deadline {
                let status = self.eval("document.getElementById('status').textContent");
                let error = self.eval("document.getElementById('error').textContent");
                panic!("waited 30 s for {what}; status {status}, error {error}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("document.readyState === 'complete'", "the page to load");
    }

    /// Presses one key, as a keyboard does: keyDown (with its text, which activates a focused
    /// button on Enter) and keyUp, sent to whatever has the focus.
    fn press(&mut self, key: &str, code: &str, key_code: u32, text: &str) {
        let mut down = json!({
            "type": "keyDown", "key": key, "code": code,
            "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code,
        });
        if !text.is_empty() {
            down["text"] = json!(text);
            down["unmodifiedText"] = json!(text);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": code,
                    "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code }),
        );
    }

    fn enter(&mut self) {
        self.press("Enter", "Enter", 13, "\r");
    }

    fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    fn focused_id(&mut self) -> Value {
        self.eval("document.activeElement && document.activeElement.id")
    }

    /// The `source/identifier` of each package card, in order.
    fn cards(&mut self) -> Vec<String> {
        serde_json::from_value(self.eval(
            "[...document.querySelectorAll('#packages li.package')].map(li => li.dataset.key)",
        ))
        .unwrap()
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        assert!(png.len() > 20_000, "a rendered page, not a blank one");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}

fn keys_of(page: &pb::ListAvailablePackageSummariesResponse) -> Vec<String> {
    page.available_package_summaries
        .iter()
        .map(|s| {
            let r = s.available_package_ref.as_ref().unwrap();
            format!("{}/{}", r.source, r.identifier)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_page_searches_pages_and_opens_a_detail_with_the_keyboard() {
    chromium();
    // The example catalog, plus a source that fails its first call and then recovers.
    let plugins = PluginDir::with(&["helm", "catalog", "testkit"]);
    let mut sources = tributary_tests::example_sources();
    sources.push(source(
        "mirror",
        "testkit",
        json!({
            "error_on_call": 1,
            "items": [{ "name": "datadog-agent", "id": "datadog-agent",
                        "display_name": "Datadog Agent", "version": "3.70.1",
                        "description": "Collects metrics and traces for the data platform.",
                        "categories": ["Monitoring"], "repository": "mirror" }],
        }),
    ));
    let server = TestServer::start(config(
        plugins.path(),
        &tributary_tests::examples_dir(),
        sources,
    ))
    .await;
    let base = format!("http://{}", server.address);

    let browser = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            let mut b = Browser::launch();
            b.navigate(&format!("{base}/?page_size=5"));
            b.wait_for(
                "document.querySelectorAll('#packages li.package').length === 5",
                "the first page",
            );
            // Page 1: the mirror's first call failed; the notice names it, and the listing goes on.
            assert_eq!(
                b.cards(),
                [
                    "bitnami/bitnami/apache",
                    "internal/auth-gateway",
                    "internal/billing-api",
                    "community/community/cert-manager",
                    "bitnami/bitnami/common",
                ]
            );
            // The first page asks for the counts too, and the host counts the mirror's matches
            // with list calls of its own, concurrently with the page's: whichever call comes first
            // fails, and the page's notice or the counts' note names the source.
            let notice = b.eval(
                "['failures', 'counts-note'].map(id => document.getElementById(id))\
                 .filter(e => !e.hidden).map(e => e.textContent).join(' ')",
            );
            let notice = notice.as_str().unwrap().to_owned();
            assert!(
                notice.contains("mirror") && notice.contains("injected error on call 1"),
                "{notice}"
            );
            b.screenshot(&artifacts_dir().join("catalog-page.png"));
            assert_eq!(b.eval("document.getElementById('prev').disabled"), json!(true));
            assert_eq!(b.eval("document.getElementById('next').disabled"), json!(false));
            let sources = b.eval("[...document.querySelectorAll('#sources .source label')].map(l => l.textContent)");
            assert_eq!(sources, json!(["bitnami", "community", "internal", "mirror"]));

            // Next, from the keyboard: the recovered source's item comes on page 2.
            b.eval("document.getElementById('next').focus()");
            b.enter();
            b.wait_for(
                "document.getElementById('page-label').textContent === 'Page 2' && document.body.getAttribute('aria-busy') === null",
                "page 2",
            );
            assert_eq!(
                b.cards(),
                [
                    "mirror/datadog-agent",
                    "internal/feature-flags",
                    "community/community/grafana",
                    "internal/job-runner",
                    "bitnami/bitnami/kafka",
                ]
            );
            assert_eq!(b.eval("document.getElementById('failures').hidden"), json!(true));
            // And back.
            b.eval("document.getElementById('prev').focus()");
            b.enter();
            b.wait_for(
                "document.getElementById('page-label').textContent === 'Page 1' && document.body.getAttribute('aria-busy') === null",
                "page 1 again",
            );
            assert_eq!(b.cards()[0], "bitnami/bitnami/apache");
            assert_eq!(b.eval("document.getElementById('failures').hidden"), json!(true));

            // "/" goes to the search box; type a query and press Enter.
            b.eval("document.activeElement.blur()");
            b.press("/", "Slash", 191, "/");
            assert_eq!(b.focused_id(), json!("q"));
            b.type_text("data");
            b.enter();
            b.wait_for(
                "new URLSearchParams(location.search).get('q') === 'data' && document.body.getAttribute('aria-busy') === null",
                "the search's first page",
            );
            let search_page_1 = b.cards();
            b.eval("document.getElementById('next').focus()");
            b.enter();
            b.wait_for(
                "document.getElementById('page-label').textContent === 'Page 2' && document.body.getAttribute('aria-busy') === null",
                "the search's second page",
            );
            let search_page_2 = b.cards();
            let next_after_2 = b.eval("!document.getElementById('next').disabled");
            b.eval("document.getElementById('prev').focus()");
            b.enter();
            b.wait_for(
                "document.getElementById('page-label').textContent === 'Page 1' && document.body.getAttribute('aria-busy') === null",
                "the search's first page again",
            );
            assert_eq!(b.cards(), search_page_1);

            // Open the third package's detail with Enter on its title; Escape closes it and the
            // focus returns to the title.
            b.eval("document.querySelectorAll('#packages button.open')[2].focus()");
            let opened: Vec<String> = serde_json::from_value(b.eval(
                "[document.activeElement.dataset.source, document.activeElement.dataset.identifier]",
            ))
            .unwrap();
            b.enter();
            b.wait_for(
                "document.getElementById('detail').open && document.querySelectorAll('#versions tbody tr').length > 0",
                "the detail dialog",
            );
            let title = b.eval("document.getElementById('detail-title').textContent");
            let versions: Vec<String> = serde_json::from_value(b.eval(
                "[...document.querySelectorAll('#versions tbody tr td:first-child')].map(td => td.textContent)",
            ))
            .unwrap();
            b.screenshot(&artifacts_dir().join("catalog-detail.png"));
            b.press("Escape", "Escape", 27, "");
            b.wait_for("!document.getElementById('detail').open", "the dialog to close");
            assert_eq!(
                b.eval("document.activeElement.dataset.identifier"),
                json!(opened[1])
            );
            (search_page_1, search_page_2, next_after_2, opened, title, versions)
        }
    })
    .await
    .unwrap();
    let (search_page_1, search_page_2, next_after_2, opened, title, versions) = browser;

    // The page showed what the gRPC API answers for the same requests.
    let mut client = server.packages().await;
    let filter = Some(pb::FilterOptions {
        query: "data".into(),
        ..Default::default()
    });
    let first = list(&mut client, 5, "", filter.clone()).await;
    assert_eq!(search_page_1, keys_of(&first));
    assert_eq!(
        search_page_1,
        [
            "mirror/datadog-agent",
            "bitnami/bitnami/kafka",
            "bitnami/bitnami/mariadb",
            "bitnami/bitnami/memcached",
            "bitnami/bitnami/mongodb",
        ]
    );
    let second = list(&mut client, 5, &first.next_page_token, filter).await;
    assert_eq!(search_page_2, keys_of(&second));
    assert_eq!(next_after_2, json!(!second.next_page_token.is_empty()));
    assert_eq!(opened, ["bitnami", "bitnami/mariadb"]);
    let detail = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: opened[0].clone(),
                identifier: opened[1].clone(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .available_package_detail
        .unwrap();
    let summary = detail.summary.unwrap();
    assert_eq!(
        title,
        json!(if summary.display_name.is_empty() {
            summary.name
        } else {
            summary.display_name
        })
    );
    let expected: Vec<String> = detail.versions.iter().map(|v| v.version.clone()).collect();
    assert!(!expected.is_empty());
    assert_eq!(versions, expected);
    server.stop().await;
}

/// Under `[auth]` the page loads without a credential, asks for a bearer token when the API answers
/// 401, and then shows what that caller may see.
#[test]
fn under_auth_the_page_asks_for_a_token_and_shows_the_callers_sources() {
    chromium();
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        crate::auth::hash_line("t-reader", "reader"),
    )
    .unwrap();
    let config = crate::binary::write_config(
        dir.path(),
        plugins.path(),
        &format!("{}{}", crate::auth::AUTH, crate::binary::SOURCES),
    );
    let (child, address) = crate::binary::spawn_server(&config);
    let mut b = Browser::launch();
    b.navigate(&format!("http://{address}/"));
    b.wait_for(
        "!document.getElementById('token-form').hidden",
        "the token prompt",
    );
    assert_eq!(b.focused_id(), json!("token"));
    assert_eq!(b.cards(), Vec::<String>::new());
    let reason = b.eval("document.getElementById('token-reason').textContent");
    assert_eq!(
        reason,
        json!("a valid bearer token or client certificate is required"),
        "the API's 401 message is shown"
    );
    b.type_text("t-reader");
    b.enter();
    b.wait_for(
        "document.querySelectorAll('#packages li.package').length > 0",
        "the reader's packages",
    );
    assert_eq!(b.cards(), ["one/a", "one/c", "one/e", "one/g"]);
    assert_eq!(
        b.eval("document.getElementById('token-form').hidden"),
        json!(true)
    );
    b.wait_for(
        "document.querySelectorAll('#sources .source').length > 0",
        "the reader's sources",
    );
    let sources =
        b.eval("[...document.querySelectorAll('#sources .source label')].map(l => l.textContent)");
    assert_eq!(sources, json!(["one"]));
    drop(b);
    crate::binary::terminate(child);
}

/// `1234567` as the page writes it: `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A facet group as the page lists it: the largest counts first, then by value, each count as
/// `(1,234)`.
fn facet_rows(counts: &[pb::FacetCount]) -> Vec<(String, String)> {
    let mut rows: Vec<&pb::FacetCount> = counts.iter().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    rows.iter()
        .map(|f| (f.value.clone(), format!("({})", thousands(f.count))))
        .collect()
}

/// One page as the web page asks for it: 20 packages, `query`, `categories`, `sort`, the counts.
async fn ask(
    client: &mut tributary_proto::v1::packages_service_client::PackagesServiceClient<
        tonic::transport::Channel,
    >,
    query: &str,
    categories: &[&str],
    sort: pb::SortOrder,
    token: &str,
) -> Result<pb::ListAvailablePackageSummariesResponse, tonic::Status> {
    let mut request = tributary_tests::list_request(
        20,
        token,
        Some(pb::FilterOptions {
            query: query.to_owned(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
    );
    request.sort = sort as i32;
    request.include_facets = token.is_empty();
    client
        .list_available_package_summaries(request)
        .await
        .map(|r| r.into_inner())
}

const CATEGORIES: [&str; 3] = ["Database", "Web", "Monitoring"];
const REPOSITORIES: [&str; 2] = ["stable", "incubator"];

/// The catalog of the facets test: a `catalog` source (which orders and counts its own matches)
/// of 1,200 services, most of them described as keeping a cache warm, and a few packages whose name
/// matches `cache` better; and a `testkit` source (ordered and counted by the host) with the exact
/// name and more.
fn facets_catalog(data: &Path) -> Vec<tributary_runtime::config::SourceConfig> {
    let mut packages: Vec<Value> = (0..1200)
        .map(|i| {
            json!({
                "id": format!("svc-{i:04}"), "name": format!("svc-{i:04}"),
                "display_name": format!("Service {i:04}"),
                "short_description": if i % 10 == 0 { "Serves requests" } else { "Keeps a cache warm" },
                "categories": [CATEGORIES[i % 3]],
                "repository": REPOSITORIES[i % 2],
                "created": "2024-03-01T10:00:00Z", "latest_version": "1.0.0",
            })
        })
        .collect();
    for (name, display, category) in [
        ("cache-warmer", "Cache Warmer", "Monitoring"),
        ("fastcache", "FastCache", "Database"),
        ("explorer", "Cache Explorer", "Monitoring"),
    ] {
        packages.push(json!({
            "id": name, "name": name, "display_name": display,
            "short_description": "A tool", "categories": [category], "repository": "stable",
            "created": "2024-03-01T10:00:00Z", "latest_version": "2.0.0",
        }));
    }
    let path = data.join("main.json");
    std::fs::write(&path, json!({ "packages": packages }).to_string()).unwrap();
    let item = |name: &str, description: &str, category: &str| {
        json!({ "id": name, "name": name, "version": "1.0.0", "description": description,
                "categories": [category], "repository": "extra" })
    };
    vec![
        source("main", "catalog", json!({ "path": path })),
        source(
            "extra",
            "testkit",
            json!({ "items": [
                item("cache", "An in-memory store", "Database"),
                item("redis-cache", "Redis as a cache", "Monitoring"),
                item("memcached", "A memory object store", "Database"),
                item("nginx", "A web server", "Web"),
            ] }),
        ),
    ]
}

/// A search by relevance with the counts of each filter value: the page asks for them when a
/// listing starts, keeps them while paging, shows a range line of the total, narrows by a value
/// chosen from the keyboard, and names a query that does not parse under the search box. What it
/// shows is what the gRPC API answers for the same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_page_sorts_by_relevance_and_filters_by_the_counted_values() {
    chromium();
    let plugins = PluginDir::with(&["catalog", "testkit"]);
    let data = tempfile::tempdir_in(plugins.path()).unwrap();
    let server = TestServer::start(config(
        plugins.path(),
        data.path(),
        facets_catalog(data.path()),
    ))
    .await;
    let base = format!("http://{}", server.address);

    // What the API answers, asked first (the catalog does not change).
    let mut client = server.packages().await;
    let relevance = pb::SortOrder::Relevance;
    let first = ask(&mut client, "cache", &[], relevance, "").await.unwrap();
    let second = ask(&mut client, "cache", &[], relevance, &first.next_page_token)
        .await
        .unwrap();
    let monitoring = ask(&mut client, "cache", &["Monitoring"], relevance, "")
        .await
        .unwrap();
    let bad_query = "cache \"unclosed";
    let refused = ask(&mut client, bad_query, &["Monitoring"], relevance, "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let by_name = ask(&mut client, "", &["Monitoring"], pb::SortOrder::Name, "")
        .await
        .unwrap();
    let facets = first.facets.clone().unwrap();
    assert!(facets.complete, "{:?}", facets.missing_sources);
    let total = first.total_size.unwrap();
    // 1,080 services, the catalog's three better matches and the testkit's three.
    assert_eq!(total, 1086);
    // Relevance is not the name order: the exact name, then prefixes, whole words, parts, display
    // names, and the descriptions (by name).
    assert_eq!(
        keys_of(&first)[..6],
        [
            "extra/cache",
            "main/cache-warmer",
            "extra/redis-cache",
            "main/fastcache",
            "extra/memcached",
            "main/explorer",
        ]
    );
    let monitoring_total = monitoring.total_size.unwrap();
    let monitoring_facets = monitoring.facets.clone().unwrap();

    tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch();
        let idle = "document.body.getAttribute('aria-busy') === null";
        b.navigate(&format!("{base}/"));
        // Any script error from here on is kept, and there must be none.
        b.eval(
            "window.pageErrors = []; \
             addEventListener('error', e => pageErrors.push(e.message)); \
             addEventListener('unhandledrejection', e => pageErrors.push(String(e.reason)))",
        );
        b.wait_for(
            "document.querySelectorAll('#packages li.package').length === 20",
            "the first page",
        );
        b.wait_for(idle, "the first page to settle");
        let status = |b: &mut Browser| b.eval("document.getElementById('status').textContent");
        assert_eq!(status(&mut b), json!("1\u{2013}20 of 1,207"), "every package");
        // Without a query there is nothing to rank by.
        assert_eq!(
            b.eval("document.querySelector('#sort option[value=relevance]').disabled"),
            json!(true)
        );

        // Search, then choose Relevance with the keyboard (the second choice).
        b.eval("document.activeElement.blur()");
        b.press("/", "Slash", 191, "/");
        b.type_text("cache");
        b.enter();
        b.wait_for(
            &format!("new URLSearchParams(location.search).get('q') === 'cache' && {idle}"),
            "the search",
        );
        assert_eq!(
            b.eval("document.querySelector('#sort option[value=relevance]').disabled"),
            json!(false)
        );
        b.eval("document.getElementById('sort').focus()");
        b.press("ArrowDown", "ArrowDown", 40, "");
        b.wait_for(
            &format!("new URLSearchParams(location.search).get('sort') === 'relevance' && {idle}"),
            "the search by relevance",
        );
        assert_eq!(b.focused_id(), json!("sort"));
        assert_eq!(b.cards(), keys_of(&first));
        let range = format!("1\u{2013}20 of {}", thousands(total));
        assert_eq!(status(&mut b), json!(range));
        assert_eq!(range, "1\u{2013}20 of 1,086");
        let rows = |b: &mut Browser, group: &str, row: &str| -> Vec<(String, String)> {
            serde_json::from_value(b.eval(&format!(
                "[...document.querySelectorAll('#{group} {row}')]\
                 .map(r => [r.querySelector('label').textContent, r.querySelector('.count').textContent])"
            )))
            .unwrap()
        };
        let counted = |b: &mut Browser| {
            (
                rows(b, "sources", ".source"),
                rows(b, "repositories", ".facet-value"),
                rows(b, "categories", ".facet-value"),
            )
        };
        // The sources' boxes are in name order, as the API lists their counts.
        let expected = (
            facets
                .sources
                .iter()
                .map(|f| (f.value.clone(), format!("({})", thousands(f.count))))
                .collect::<Vec<_>>(),
            facet_rows(&facets.repositories),
            facet_rows(&facets.categories),
        );
        assert_eq!(counted(&mut b), expected);
        assert_eq!(expected.0[1], ("main".to_owned(), "(1,083)".to_owned()));
        assert_eq!(
            b.eval("document.getElementById('counts-note').hidden"),
            json!(true)
        );

        // The next page keeps the first page's counts and does not ask for new ones.
        b.eval("document.getElementById('next').focus()");
        b.enter();
        b.wait_for(
            &format!("document.getElementById('page-label').textContent === 'Page 2' && {idle}"),
            "the second page",
        );
        assert_eq!(b.cards(), keys_of(&second));
        assert_eq!(
            status(&mut b),
            json!(format!("21\u{2013}40 of {}", thousands(total)))
        );
        assert_eq!(counted(&mut b), expected);
        let asked: Vec<String> = serde_json::from_value(b.eval(
            "performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/v1/packages?'))",
        ))
        .unwrap();
        let last = asked.last().unwrap();
        assert!(
            last.contains("page_token=") && last.contains("sort=relevance") && !last.contains("include_facets"),
            "{last}"
        );
        assert!(
            asked
                .iter()
                .filter(|u| u.contains("page_token="))
                .all(|u| !u.contains("include_facets")),
            "{asked:?}"
        );
        b.eval("document.getElementById('prev').focus()");
        b.enter();
        b.wait_for(
            &format!("document.getElementById('page-label').textContent === 'Page 1' && {idle}"),
            "the first page again",
        );
        assert_eq!(b.cards(), keys_of(&first));
        assert_eq!(status(&mut b), json!(range));

        // Choose a category from its count, with the keyboard: the listing starts again, narrowed.
        b.eval(
            "[...document.querySelectorAll('#categories input')]\
             .find(i => i.dataset.value === 'Monitoring').focus()",
        );
        b.press(" ", "Space", 32, " ");
        b.wait_for(
            &format!("new URLSearchParams(location.search).get('category') === 'Monitoring' && {idle}"),
            "the category's listing",
        );
        assert_eq!(b.cards(), keys_of(&monitoring));
        assert_eq!(b.cards()[..2], ["main/cache-warmer", "extra/redis-cache"]);
        assert_eq!(
            status(&mut b),
            json!(format!("1\u{2013}20 of {}", thousands(monitoring_total)))
        );
        assert_eq!(
            rows(&mut b, "categories", ".facet-value"),
            facet_rows(&monitoring_facets.categories)
        );
        assert_eq!(
            b.eval("document.activeElement.dataset.value + ' ' + document.activeElement.checked"),
            json!("Monitoring true"),
            "the chosen box keeps the focus"
        );
        assert_eq!(
            b.eval("document.getElementById('page-label').textContent"),
            json!("Page 1")
        );
        b.screenshot(&artifacts_dir().join("catalog-facets.png"));

        // A query that does not parse: the API's message under the search box, nothing listed.
        b.eval("document.getElementById('q').focus(); document.getElementById('q').select()");
        b.type_text(bad_query);
        b.enter();
        b.wait_for(
            &format!("!document.getElementById('q-error').hidden && {idle}"),
            "the query's error",
        );
        assert_eq!(
            b.eval("document.getElementById('q-error').textContent"),
            json!(refused.message())
        );
        assert_eq!(
            b.eval("document.getElementById('q').getAttribute('aria-invalid')"),
            json!("true")
        );
        assert_eq!(b.eval("document.getElementById('error').hidden"), json!(true));
        assert_eq!(b.cards(), Vec::<String>::new());
        assert_eq!(b.focused_id(), json!("q"));
        b.screenshot(&artifacts_dir().join("catalog-query-error.png"));

        // Clearing the query goes back to the name order, and the error goes away.
        b.eval("document.getElementById('q').select()");
        b.press("Backspace", "Backspace", 8, "");
        b.enter();
        b.wait_for(
            &format!("!new URLSearchParams(location.search).has('q') && {idle}"),
            "the listing without a query",
        );
        assert_eq!(b.eval("document.getElementById('sort').value"), json!("name"));
        assert_eq!(
            b.eval("document.querySelector('#sort option[value=relevance]').disabled"),
            json!(true)
        );
        assert_eq!(b.eval("document.getElementById('q-error').hidden"), json!(true));
        assert_eq!(b.cards(), keys_of(&by_name));
        assert_eq!(
            status(&mut b),
            json!(format!(
                "1\u{2013}20 of {}",
                thousands(by_name.total_size.unwrap())
            ))
        );
        assert_eq!(b.eval("pageErrors"), json!([]));
    })
    .await
    .unwrap();
    server.stop().await;
}
