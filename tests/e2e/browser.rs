//! The catalog web page at `/`, driven in a real headless Chromium over the DevTools protocol: the
//! page loads from a running server, a user types a query, pages forward and back, opens a
//! package's detail and closes it, all with the keyboard, and the rendered DOM is compared with
//! what the gRPC API answers for the same requests. Screenshots are kept in
//! `target/test-artifacts/`: `catalog-page.png` (the first page, with the failed source's notice)
//! and `catalog-detail.png` (a package's detail).
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
            let notice = b.eval("document.getElementById('failures').hidden ? '' : document.getElementById('failures').textContent");
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
