//! A Helm repository served over HTTP on loopback, whose answers a test sets: the index and its
//! validators, auth, gzip, failures (a status, a slow answer, a truncated body), redirects. Every
//! request is recorded with the headers that matter and the body bytes sent.

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, StatusCode, Uri},
    response::Response,
    Router,
};
use tokio::{net::TcpListener, sync::oneshot};

/// How the server answers requests for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The index, conditional requests honoured.
    Serve,
    /// This status with a short text body.
    Status(u16),
    /// The index after this delay (the request is recorded on arrival, as a 200).
    Slow(Duration),
    /// The headers of the whole index (its full `Content-Length`), then half of it, then the
    /// connection is cut.
    Truncated,
    /// `302` to this URL (made absolute by the test).
    Redirect(String),
}

/// What a request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// This exact `Authorization` header value.
    Authorization(String),
    /// This header with this value.
    Header(String, String),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub gzip_accepted: bool,
    pub status: u16,
    /// Body bytes sent (after compression).
    pub body_bytes: usize,
    pub gzipped: bool,
}

struct State {
    index: Vec<u8>,
    /// `index` gzipped, made once per index.
    gzipped: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
    gzip: bool,
    mode: Mode,
    auth: Auth,
    seen: Vec<Seen>,
    version: u64,
}

/// The server; stops when dropped.
pub struct HelmRepoServer {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    _shutdown: oneshot::Sender<()>,
}

impl HelmRepoServer {
    /// Serves `index` at every path, with an ETag and a Last-Modified date, gzip on request.
    pub async fn start(index: impl Into<Vec<u8>>) -> HelmRepoServer {
        let mut state = State {
            index: Vec::new(),
            gzipped: Vec::new(),
            etag: None,
            last_modified: None,
            gzip: true,
            mode: Mode::Serve,
            auth: Auth::None,
            seen: Vec::new(),
            version: 0,
        };
        state.replace(index.into());
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handler_state = state.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let state = handler_state.clone();
            async move { answer(&state, uri, headers).await }
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        HelmRepoServer {
            address,
            state,
            _shutdown: tx,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Serves a new index, with new validators.
    pub fn set_index(&self, index: impl Into<Vec<u8>>) {
        let index = index.into();
        self.with(|s| s.replace(index));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.with(|s| s.mode = mode);
    }

    pub fn set_auth(&self, auth: Auth) {
        self.with(|s| s.auth = auth);
    }

    pub fn set_gzip(&self, gzip: bool) {
        self.with(|s| s.gzip = gzip);
    }

    /// Sends only a Last-Modified date, no ETag.
    pub fn without_etag(&self) {
        self.with(|s| s.etag = None);
    }

    pub fn etag(&self) -> Option<String> {
        self.with(|s| s.etag.clone())
    }

    pub fn last_modified(&self) -> Option<String> {
        self.with(|s| s.last_modified.clone())
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// Waits (polling, at most 60 s) until `n` requests have been answered with `status`.
    pub async fn wait_for_status(&self, status: u16, n: usize) {
        for _ in 0..600 {
            if self.seen().iter().filter(|s| s.status == status).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {n} answers with status {status}: {:#?}", self.seen());
    }
}

impl State {
    fn replace(&mut self, index: Vec<u8>) {
        self.version += 1;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&index).unwrap();
        self.gzipped = encoder.finish().unwrap();
        self.index = index;
        self.etag = Some(format!("\"v{}-{}\"", self.version, self.index.len()));
        // Distinct dates per version, a day apart, so If-Modified-Since comparisons are exact.
        let day = 1 + self.version % 28;
        self.last_modified = Some(format!("Wed, {day:02} Nov 2023 10:00:00 GMT"));
    }
}

async fn answer(state: &Mutex<State>, uri: Uri, headers: HeaderMap) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Seen {
        path: uri.path().to_owned(),
        authorization: get("authorization"),
        api_key: get("x-api-key"),
        if_none_match: get("if-none-match"),
        if_modified_since: get("if-modified-since"),
        gzip_accepted: get("accept-encoding").is_some_and(|v| v.contains("gzip")),
        status: 200,
        body_bytes: 0,
        gzipped: false,
    };
    let (mode, authorized) = {
        let s = state.lock().unwrap();
        let authorized = match &s.auth {
            Auth::None => true,
            Auth::Authorization(value) => seen.authorization.as_deref() == Some(value),
            Auth::Header(name, value) => get(name).as_deref() == Some(value),
        };
        (s.mode.clone(), authorized)
    };
    if let Mode::Slow(delay) = &mode {
        // Recorded on arrival: a client that gives up may close the connection before the end.
        state.lock().unwrap().seen.push(seen.clone());
        tokio::time::sleep(*delay).await;
    }
    let mut s = state.lock().unwrap();
    let response = if let Mode::Redirect(to) = &mode {
        seen.status = 302;
        Response::builder()
            .status(302)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .unwrap()
    } else if !authorized {
        seen.status = 401;
        Response::builder()
            .status(401)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"charts\"")
            .body(Body::from("unauthorized"))
            .unwrap()
    } else if let Mode::Status(status) = mode {
        seen.status = status;
        Response::builder()
            .status(status)
            .body(Body::from("failure on purpose"))
            .unwrap()
    } else if (seen.if_none_match.is_some() && seen.if_none_match == s.etag)
        || (seen.if_none_match.is_none()
            && seen.if_modified_since.is_some()
            && seen.if_modified_since == s.last_modified)
    {
        seen.status = 304;
        let mut builder = Response::builder().status(StatusCode::NOT_MODIFIED);
        if let Some(etag) = &s.etag {
            builder = builder.header(header::ETAG, etag);
        }
        builder.body(Body::empty()).unwrap()
    } else {
        let (body, gzipped) = if s.gzip && seen.gzip_accepted {
            (s.gzipped.clone(), true)
        } else {
            (s.index.clone(), false)
        };
        seen.gzipped = gzipped;
        let mut builder = Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/x-yaml")
            .header(header::CONTENT_LENGTH, body.len());
        if gzipped {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
        }
        if let Some(etag) = &s.etag {
            builder = builder.header(header::ETAG, etag);
        }
        if let Some(date) = &s.last_modified {
            builder = builder.header(header::LAST_MODIFIED, date);
        }
        if mode == Mode::Truncated {
            let half = Bytes::from(body[..body.len() / 2].to_vec());
            seen.body_bytes = half.len();
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("cut on purpose"))];
            builder
                .body(Body::from_stream(tokio_stream::iter(chunks)))
                .unwrap()
        } else {
            seen.body_bytes = body.len();
            builder.body(Body::from(body)).unwrap()
        }
    };
    if !matches!(mode, Mode::Slow(_)) {
        s.seen.push(seen);
    }
    response
}

/// A generated Helm index with `charts` charts of `versions` versions each, in the layout
/// `helm repo index` writes and with the fields real repositories carry; names are
/// `{prefix}{i:05}`. About 1.2 KB per version.
pub fn helm_index(prefix: &str, charts: usize, versions: usize) -> String {
    let names: Vec<String> = (0..charts).map(|c| format!("{prefix}{c:05}")).collect();
    helm_index_of(&names, versions)
}

/// A generated Helm index of the charts `names`, each with `versions` versions.
pub fn helm_index_of(names: &[String], versions: usize) -> String {
    let mut text = String::with_capacity(names.len() * versions * 1300);
    text.push_str("apiVersion: v1\nentries:\n");
    for (c, name) in names.iter().enumerate() {
        text.push_str(&format!("  {name}:\n"));
        for v in (0..versions).rev() {
            text.push_str(&format!(
                "  - annotations:\n      category: Category{cat}\n      licenses: Apache-2.0\n      images: |\n        - name: {name}\n          image: registry.example.com/{name}:1.{v}.0\n    apiVersion: v2\n    appVersion: 2.{v}.0\n    created: \"2023-11-{day:02}T10:12:48.123456789Z\"\n    dependencies:\n    - name: common\n      repository: oci://registry.example.com/charts\n      tags:\n      - common\n      version: 2.x.x\n    description: {name} is a generated chart for tests, version 1.{v}.0, with a description about as long as real ones are.\n    digest: {digest:064x}\n    home: https://example.com/{name}\n    icon: https://example.com/{name}/icon.svg\n    keywords:\n    - {name}\n    - generated\n    - test\n    maintainers:\n    - name: Example Maintainers\n      url: https://github.com/example/charts\n    name: {name}\n    sources:\n    - https://github.com/example/charts/tree/main/{name}\n    - https://github.com/example/{name}\n    type: application\n    urls:\n    - {name}-1.{v}.0.tgz\n    version: 1.{v}.0\n",
                cat = c % 7,
                day = 1 + v % 28,
                digest = c * 1000 + v,
            ));
        }
    }
    text.push_str("generated: \"2023-11-21T20:30:00.123456789Z\"\n");
    text
}

/// A TCP relay on loopback that counts the bytes each way, to measure what crosses the wire.
pub struct CountingProxy {
    pub address: SocketAddr,
    /// Bytes from clients to the target.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes from the target to clients.
    pub received: Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub async fn start(target: SocketAddr) -> CountingProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (up, down) = (sent.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (up, down) = (up.clone(), down.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                        up.fetch_add(n as u64, Ordering::Relaxed);
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                        down.fetch_add(n as u64, Ordering::Relaxed);
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CountingProxy {
            address,
            sent,
            received,
        }
    }

    /// `(sent, received)` so far.
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// This process's resident set size and its peak, in KiB (`VmRSS`, `VmHWM` of `/proc/self/status`).
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
