//! TLS for the whole port (every protocol served on it), with certificates reloaded when their files
//! change, and optional client certificates (mTLS).
//!
//! The certificate chain and key are read at start; a file that cannot be read or parsed stops the
//! start with a message naming the file. Afterwards the files are checked at most once a second, when
//! connections arrive: a changed pair is loaded and used for new connections; a pair that fails to load
//! (say, caught half-written) is logged and the previous one stays in use. Connections already open keep
//! the certificate they were opened with.
//!
//! Handshakes run concurrently, off the accept loop, each within `handshake_timeout_ms` (default [`HANDSHAKE_TIMEOUT`]), and at most
//! [`MAX_HANDSHAKES`] at once: a client that opens a TCP connection and never speaks holds neither the
//! accept loop nor other clients.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, Semaphore},
};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
pub use tributary_runtime::config::{ClientAuth, TlsSettings};

/// Handshakes in progress at once; further connections wait to start theirs.
pub const MAX_HANDSHAKES: usize = 256;
/// How often the certificate files are looked at, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls: {0}")]
    Config(String),
}

/// The modification times of the files a configuration was built from.
type Stamp = Vec<Option<SystemTime>>;

/// Builds TLS server configurations from [`TlsSettings`], reloading them when the files change.
pub struct Certificates {
    settings: TlsSettings,
    state: Mutex<State>,
}

struct State {
    stamp: Stamp,
    checked: Instant,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Certificates {
    /// Loads the files once; an error names the file.
    pub fn load(settings: TlsSettings) -> Result<Certificates, TlsError> {
        let stamp = stamp(&settings);
        let acceptor = acceptor(&settings)?;
        Ok(Certificates {
            settings,
            state: Mutex::new(State {
                stamp,
                checked: Instant::now(),
                acceptor,
            }),
        })
    }

    /// The acceptor for a new connection: the current one, reloaded first if the files changed.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let now = stamp(&self.settings);
            if now != state.stamp {
                match acceptor(&self.settings) {
                    Ok(fresh) => {
                        tracing::info!(
                            cert = %self.settings.cert_file.display(),
                            "TLS certificate reloaded"
                        );
                        state.acceptor = fresh;
                        state.stamp = now;
                    }
                    // Keep the old pair; try again when the files change again.
                    Err(e) => {
                        tracing::warn!("{e}; still serving the previous certificate");
                        state.stamp = now;
                    }
                }
            }
        }
        state.acceptor.clone()
    }
}

fn stamp(settings: &TlsSettings) -> Stamp {
    [
        Some(&settings.cert_file),
        Some(&settings.key_file),
        settings.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |message: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn acceptor(settings: &TlsSettings) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let chain = read_certs("cert_file", &settings.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| TlsError::File {
        what: "key_file",
        path: settings.key_file.clone(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&settings.client_ca_file, settings.client_auth) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => {
            return Err(TlsError::Config(
                "client_auth asks for client certificates but no client_ca_file is set".into(),
            ))
        }
        (Some(ca), auth) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client_ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "client_ca_file",
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            }
            .build()
            .map_err(|e| TlsError::Config(format!("client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("cert_file and key_file do not match: {e}")))?;
    // gRPC needs HTTP/2; HTTP/1.1 serves gRPC-web and plain HTTP clients on the same port.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Turns accepted connections into TLS connections. A failed or slow handshake is logged at debug
/// level and dropped; it never ends the stream.
pub fn incoming<S, IO, E>(
    connections: S,
    certificates: Arc<Certificates>,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<IO>, io::Error>>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        let mut connections = std::pin::pin!(connections);
        while let Some(accepted) = connections.next().await {
            let io = match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!("connection not accepted: {e}");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (handshaken, acceptor) = (tx.clone(), certificates.acceptor());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let _ = handshaken.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(
                        "TLS handshake did not finish within {} ms",
                        handshake_timeout.as_millis()
                    ),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
