//! OCI registries for the tests: Debian's `docker-registry` (Docker Distribution 2.8) started on a
//! loopback port with a temporary storage folder, charts pushed to it through the plain registry
//! HTTP API as `helm push` sends them; and a registry stub that pages its tag lists with `Link`
//! headers and asks for tokens from its own token service (`WWW-Authenticate: Bearer realm=...`),
//! which distribution 2.8 on loopback does not do.

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderMap, Uri},
    response::Response,
    Router,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, sync::oneshot};

pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The blobs and manifest of one chart version as `helm push` makes them: the config blob is the
/// chart's `Chart.yaml` as JSON, the layer its archive.
pub struct ChartArtifact {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl ChartArtifact {
    /// A chart version whose `Chart.yaml` is `chart` (a JSON object), with `config_type` as the
    /// config media type (a Helm chart's, or another to stand for a non-chart image).
    pub fn new(chart: &Value, config_type: &str) -> ChartArtifact {
        let config = serde_json::to_vec(chart).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(chart.to_string().as_bytes()).unwrap();
        let layer = encoder.finish().unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": config_type, "digest": digest(&config), "size": config.len() },
            "layers": [{ "mediaType": HELM_CHART, "digest": digest(&layer), "size": layer.len() }],
            "annotations": { "org.opencontainers.image.created": "2024-05-01T10:00:00Z" },
        }))
        .unwrap();
        ChartArtifact {
            config,
            layer,
            manifest,
        }
    }

    pub fn helm(chart: &Value) -> ChartArtifact {
        ChartArtifact::new(chart, HELM_CONFIG)
    }
}

/// A Docker Distribution registry process; killed when dropped.
pub struct Registry {
    pub address: SocketAddr,
    child: Child,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// The `docker-registry` executable, when installed.
    pub fn executable() -> Option<PathBuf> {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("docker-registry"))
            .find(|path| path.is_file())
    }

    /// Starts `docker-registry serve` on a free loopback port and waits (bounded) until `/v2/`
    /// answers. `None` when the executable is not installed.
    pub fn start() -> Option<Registry> {
        let executable = Registry::executable()?;
        let storage = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(executable)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            address,
            child,
            _storage: storage,
        };
        for _ in 0..300 {
            if let Ok(response) = ureq::get(&format!("http://{address}/v2/")).call() {
                if response.status() == 200 {
                    return Some(registry);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not answer on {address}");
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Pushes one chart version as `helm push` does: both blobs through a monolithic upload
    /// (POST, then PUT with `?digest=`), then the manifest under `tag`.
    pub fn push(&self, repository: &str, tag: &str, artifact: &ChartArtifact) {
        for blob in [&artifact.config, &artifact.layer] {
            let started = ureq::post(&format!("{}/v2/{repository}/blobs/uploads/", self.base()))
                .send_empty()
                .expect("start a blob upload");
            assert_eq!(started.status(), 202, "blob upload start");
            let location = started.headers()["location"].to_str().unwrap().to_owned();
            let mut upload = url::Url::parse(&self.base())
                .unwrap()
                .join(&location)
                .unwrap();
            upload
                .query_pairs_mut()
                .append_pair("digest", &digest(blob));
            let done = ureq::put(upload.as_str())
                .header("Content-Type", "application/octet-stream")
                .send(&blob[..])
                .expect("upload a blob");
            assert_eq!(done.status(), 201, "blob upload");
        }
        let put = ureq::put(&format!("{}/v2/{repository}/manifests/{tag}", self.base()))
            .header("Content-Type", OCI_MANIFEST)
            .send(&artifact.manifest[..])
            .expect("put a manifest");
        assert_eq!(put.status(), 201, "manifest put");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the stub saw.
#[derive(Debug, Clone)]
pub struct StubSeen {
    pub path: String,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct StubState {
    /// Repository to its tags, in order, each with its artifact.
    charts: HashMap<String, Vec<(String, Arc<ChartArtifact>)>>,
    /// `Some((user, password))` when the token service requires them; anonymous otherwise.
    credentials: Option<(String, String)>,
    tokens: Vec<String>,
    seen: Vec<StubSeen>,
    /// Repositories whose tag list never ends: pages of this many tags that are not versions,
    /// each with a `Link` to the next.
    endless: HashMap<String, usize>,
}

/// A registry that pages tag lists two at a time with `Link` headers, and its token service.
pub struct RegistryStub {
    pub address: SocketAddr,
    state: Arc<Mutex<StubState>>,
    _shutdown: oneshot::Sender<()>,
}

/// Tags per page of the stub's tag lists.
pub const STUB_PAGE: usize = 2;

impl RegistryStub {
    pub async fn start(credentials: Option<(&str, &str)>) -> RegistryStub {
        let state = Arc::new(Mutex::new(StubState {
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..StubState::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handler_state = state.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let state = handler_state.clone();
            async move {
                let mut state = state.lock().unwrap();
                stub_answer(&mut state, address, &uri, &headers)
            }
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
        RegistryStub {
            address,
            state,
            _shutdown: tx,
        }
    }

    pub fn add(&self, repository: &str, tag: &str, artifact: ChartArtifact) {
        self.state
            .lock()
            .unwrap()
            .charts
            .entry(repository.to_owned())
            .or_default()
            .push((tag.to_owned(), Arc::new(artifact)));
    }

    /// Makes `repository` a tag list that never ends, `per_page` tags a page.
    pub fn add_endless(&self, repository: &str, per_page: usize) {
        self.state
            .lock()
            .unwrap()
            .endless
            .insert(repository.to_owned(), per_page);
    }

    pub fn seen(&self) -> Vec<StubSeen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn stub_answer(
    state: &mut StubState,
    address: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (status, response) = stub_route(state, address, &path, &query, authorization.as_deref());
    state.seen.push(StubSeen {
        path: match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        },
        authorization,
        status,
    });
    response
}

fn stub_route(
    state: &mut StubState,
    address: SocketAddr,
    path: &str,
    query: &HashMap<String, String>,
    authorization: Option<&str>,
) -> (u16, Response) {
    let plain = |status: u16, text: &str| {
        (
            status,
            Response::builder()
                .status(status)
                .body(Body::from(text.to_owned()))
                .unwrap(),
        )
    };
    if path == "/token" {
        if let Some((user, password)) = &state.credentials {
            use base64::Engine as _;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            if authorization != Some(expected.as_str()) {
                return plain(401, "bad credentials");
            }
        }
        let token = format!("tok-{}", state.tokens.len());
        state.tokens.push(token.clone());
        return (
            200,
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "token": token }).to_string()))
                .unwrap(),
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return plain(404, "not found");
    };
    let (repository, kind, reference) = if let Some(repo) = rest.strip_suffix("/tags/list") {
        (repo, "tags", "")
    } else if let Some((repo, reference)) = rest.split_once("/manifests/") {
        (repo, "manifest", reference)
    } else if let Some((repo, reference)) = rest.split_once("/blobs/") {
        (repo, "blob", reference)
    } else {
        return plain(404, "not found");
    };
    let authorized = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|token| state.tokens.iter().any(|t| t == token));
    if !authorized {
        return (
            401,
            Response::builder()
                .status(401)
                .header(
                    header::WWW_AUTHENTICATE,
                    format!(
                        "Bearer realm=\"http://{address}/token\",service=\"stub\",scope=\"repository:{repository}:pull\""
                    ),
                )
                .body(Body::from("authentication required"))
                .unwrap(),
        );
    }
    if let (Some(&per_page), "tags") = (state.endless.get(repository), kind) {
        let page: u64 = query
            .get("last")
            .and_then(|last| last.strip_prefix("junk-"))
            .and_then(|rest| rest.split('-').next()?.parse().ok())
            .map_or(0, |p: u64| p + 1);
        let tags: Vec<String> = (0..per_page).map(|k| format!("junk-{page}-{k}")).collect();
        return (
            200,
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::LINK,
                    format!(
                        "</v2/{repository}/tags/list?n={per_page}&last={}>; rel=\"next\"",
                        tags.last().unwrap()
                    ),
                )
                .body(Body::from(
                    json!({ "name": repository, "tags": tags }).to_string(),
                ))
                .unwrap(),
        );
    }
    let Some(tags) = state.charts.get(repository) else {
        return plain(404, "no such repository");
    };
    match kind {
        "tags" => {
            let start = match query.get("last") {
                Some(last) => tags
                    .iter()
                    .position(|(t, _)| t == last)
                    .map_or(tags.len(), |p| p + 1),
                None => 0,
            };
            let page: Vec<&str> = tags[start..]
                .iter()
                .take(STUB_PAGE)
                .map(|(t, _)| t.as_str())
                .collect();
            let mut builder = Response::builder().header(header::CONTENT_TYPE, "application/json");
            if start + page.len() < tags.len() {
                builder = builder.header(
                    header::LINK,
                    format!(
                        "</v2/{repository}/tags/list?n={STUB_PAGE}&last={}>; rel=\"next\"",
                        page.last().unwrap()
                    ),
                );
            }
            (
                200,
                builder
                    .body(Body::from(
                        json!({ "name": repository, "tags": page }).to_string(),
                    ))
                    .unwrap(),
            )
        }
        "manifest" => match tags.iter().find(|(t, _)| t == reference) {
            Some((_, artifact)) => (
                200,
                Response::builder()
                    .header(header::CONTENT_TYPE, OCI_MANIFEST)
                    .header("Docker-Content-Digest", digest(&artifact.manifest))
                    .body(Body::from(artifact.manifest.clone()))
                    .unwrap(),
            ),
            None => plain(404, "no such manifest"),
        },
        _ => match tags.iter().find(|(_, a)| digest(&a.config) == reference) {
            Some((_, artifact)) => (
                200,
                Response::builder()
                    .body(Body::from(artifact.config.clone()))
                    .unwrap(),
            ),
            None => plain(404, "no such blob"),
        },
    }
}
