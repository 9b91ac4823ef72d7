//! Authentication and authorisation: who is calling, and which sources they may see.
//!
//! Off unless the config has an `[auth]` section. With it, every request except health checks must
//! carry a credential:
//! - a bearer token (`authorization: Bearer <token>`), looked up by its SHA-256 in `tokens_file`,
//!   whose lines are `<sha256 hex> <identity name>` (the file never holds a token itself; `tributary
//!   auth hash-token` prints a token's hash);
//! - or a client certificate verified by TLS (see [`crate::tls`]) whose common name or a DNS name
//!   is listed in an identity's `certificate_names`.
//!
//! Each identity names the sources it may see (`["*"]` for all) and whether it is an admin. A caller
//! sees only its sources' packages in listings and details and only its sources in `ListPlugins`; a
//! source it may not see is answered exactly as a source that does not exist. Page tokens carry the
//! caller's view in their filter fingerprint, so a token issued to one view is refused for another.
//! A request without a known credential gets UNAUTHENTICATED, and nothing is said about why beyond
//! that: a wrong token and a missing one read the same. Health checks need no credential, but a
//! source's own health entry answers only a caller that may see the source (see
//! the server's health service); to others it is NOT_FOUND, as an unknown name. A non-admin's `ListPlugins`
//! shows no plugin directory, only each library's file name, and no reason for a failed reload.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use sha2::{Digest, Sha256};
pub use tributary_runtime::config::{AuthSettings, IdentitySettings};

/// Who is calling: attached to every authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// `None`: every source.
    pub sources: Option<BTreeSet<String>>,
    pub admin: bool,
}

impl Identity {
    /// Whether this caller may see `source`.
    pub fn allows(&self, source: &str) -> bool {
        self.sources.as_ref().is_none_or(|s| s.contains(source))
    }
}

/// Why `[auth]` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth: cannot read tokens_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth: tokens_file {path} line {line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The credentials known to the server.
#[derive(Debug, Default)]
pub struct Authenticator {
    by_token_hash: HashMap<[u8; 32], Arc<Identity>>,
    by_certificate_name: HashMap<String, Arc<Identity>>,
}

impl Authenticator {
    /// Builds the tables, reading `tokens_file`. The identities were validated with the config.
    pub fn load(settings: &AuthSettings) -> Result<Authenticator, AuthError> {
        let identities: HashMap<&str, Arc<Identity>> = settings
            .identities
            .iter()
            .map(|i| {
                let sources = (!i.sources.iter().any(|s| s == "*"))
                    .then(|| i.sources.iter().cloned().collect());
                (
                    i.name.as_str(),
                    Arc::new(Identity {
                        name: i.name.clone(),
                        sources,
                        admin: i.admin,
                    }),
                )
            })
            .collect();
        let mut auth = Authenticator::default();
        for i in &settings.identities {
            for name in &i.certificate_names {
                auth.by_certificate_name
                    .insert(name.clone(), identities[i.name.as_str()].clone());
            }
        }
        if let Some(path) = &settings.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.clone(),
                source,
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let error = |message: String| AuthError::Line {
                    path: path.clone(),
                    line: n + 1,
                    message,
                };
                let (hash, name) = line
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| error("expected `<sha256 hex> <identity name>`".into()))?;
                let hash = parse_hash(hash).ok_or_else(|| {
                    error("the first field is not a SHA-256 in hex (64 hex digits)".into())
                })?;
                let identity = identities.get(name.trim()).ok_or_else(|| {
                    error(format!("no [[auth.identity]] is named {:?}", name.trim()))
                })?;
                auth.by_token_hash.insert(hash, identity.clone());
            }
        }
        Ok(auth)
    }

    /// The identity a bearer token authenticates, if any.
    pub fn by_token(&self, token: &str) -> Option<Arc<Identity>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_token_hash.get(&hash).cloned()
    }

    /// The identity a verified client certificate (DER) authenticates, if any.
    pub fn by_certificate(&self, der: &[u8]) -> Option<Arc<Identity>> {
        certificate_names(der)
            .into_iter()
            .find_map(|name| self.by_certificate_name.get(&name).cloned())
    }
}

/// A token's SHA-256 in lower-case hex, as `tokens_file` holds it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The common names and DNS names of a certificate.
fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// Paths that need no credential: load balancers and probes check health without one, and the
/// catalog web page's static files load without one (the page then asks for a token when the API
/// answers 401).
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path == "/healthz"
        || path == "/readyz"
        || crate::webui::is_page_path(path)
}

/// Authenticates every request (see the module docs) and attaches its [`Identity`] as a request
/// extension for the services to read.
#[derive(Clone)]
pub struct AuthLayer(pub Option<Arc<Authenticator>>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return Box::pin(self.inner.call(request));
        };
        if is_public(request.uri().path()) {
            // No credential needed; one that is given still tells who calls (a source's own
            // health entry is shown only to a caller that may see the source).
            if let Some(identity) = authenticate(auth, &request) {
                request.extensions_mut().insert(identity);
            }
            return Box::pin(self.inner.call(request));
        }
        match authenticate(auth, &request) {
            Some(identity) => {
                request.extensions_mut().insert(identity);
                Box::pin(self.inner.call(request))
            }
            None => {
                let grpc = crate::status::Framing::of(request.headers()).is_grpc();
                Box::pin(std::future::ready(Ok(unauthenticated(grpc))))
            }
        }
    }
}

fn authenticate<B>(auth: &Authenticator, request: &http::Request<B>) -> Option<Arc<Identity>> {
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
        // A credential that is present but wrong is refused, even with a good certificate.
        let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        return auth.by_token(token);
    }
    type TlsInfo =
        tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;
    let certs = request.extensions().get::<TlsInfo>()?.peer_certs()?;
    auth.by_certificate(certs.first()?.as_ref())
}

/// The refusal: a gRPC status in the headers ("trailers only") for gRPC clients; HTTP 401 with the
/// REST error body ([`crate::status::error_response`]) otherwise.
fn unauthenticated(grpc: bool) -> http::Response<tonic::body::Body> {
    const MESSAGE: &str = "a valid bearer token or client certificate is required";
    if !grpc {
        let (parts, body) =
            crate::status::error_response(&tonic::Status::unauthenticated(MESSAGE)).into_parts();
        let mut response = http::Response::from_parts(parts, tonic::body::Body::new(body));
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("16"));
    headers.insert("grpc-message", http::HeaderValue::from_static(MESSAGE));
    response
}

/// Resolves `path` against `base`.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines_are_checked_and_hashes_looked_up() {
        let dir = std::env::temp_dir().join(format!("tributary-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        let identities = vec![IdentitySettings {
            name: "ci".into(),
            sources: vec!["one".into()],
            admin: false,
            certificate_names: vec![],
        }];
        std::fs::write(&file, format!("# comment\n\n{} ci\n", hash_token("s3cret"))).unwrap();
        let settings = AuthSettings {
            tokens_file: Some(file.clone()),
            identities: identities.clone(),
        };
        let auth = Authenticator::load(&settings).unwrap();
        let ci = auth.by_token("s3cret").unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.allows("one") && !ci.allows("two"));
        assert!(auth.by_token("s3cret ").is_none() && auth.by_token("").is_none());

        for (text, expected) in [
            ("nothex ci\n", "line 1: the first field is not a SHA-256"),
            (
                &format!("{} nobody\n", hash_token("x")),
                "line 1: no [[auth.identity]] is named \"nobody\"",
            ),
            ("# only\nabc\n", "line 2: expected"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Authenticator::load(&settings).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
