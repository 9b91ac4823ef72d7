//! Idle connections are closed: a connection with no request in flight for `idle_timeout_ms`
//! (default 10 minutes) is shut down by the server.
//!
//! HTTP/2 keep-alive pings drop peers that stop answering, but a peer that answers pings and sends
//! no request would keep its connection (and its slot under `max_connections`) for ever. Each
//! accepted connection is registered here under its peer address; [`IdleLayer`] counts the requests
//! in flight on it (a response counts until its body has been sent, so a long stream is never idle)
//! and when the last one ended; a reaper shuts the socket down once it has been idle for the
//! timeout. The peer sees the connection closed, as after an HTTP/2 GOAWAY; gRPC clients reconnect
//! on their next call.

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::RawFd,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::body::Body;

/// Default `idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// One connection's activity.
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since [`epoch`] when the connection last had a request end (or was accepted).
    last_active: AtomicU64,
    /// The socket, while the connection is open (`None` once it has closed: its number may be
    /// reused).
    fd: Mutex<Option<RawFd>>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// The open connections by peer address.
#[derive(Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>,
}

/// Unregisters a connection when it closes.
pub struct Registration {
    connections: Connections,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        *self.activity.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut open = self.connections.lock();
        if open
            .get(&self.peer)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            open.remove(&self.peer);
        }
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an accepted connection; it stays registered while the returned value lives.
    pub fn register(&self, peer: SocketAddr, fd: RawFd) -> Registration {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(now_ms()),
            fd: Mutex::new(Some(fd)),
        });
        self.lock().insert(peer, activity.clone());
        Registration {
            connections: self.clone(),
            peer,
            activity,
        }
    }

    fn activity(&self, peer: &SocketAddr) -> Option<Arc<Activity>> {
        self.lock().get(peer).cloned()
    }

    /// Shuts down, every `timeout / 4` (at least 50 ms, at most 10 s), the connections with no
    /// request in flight for `timeout`. Runs until the task is dropped.
    pub async fn reap(self, timeout: Duration) {
        let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
        let limit = timeout.as_millis() as u64;
        loop {
            tokio::time::sleep(every).await;
            let now = now_ms();
            let idle: Vec<Arc<Activity>> = self
                .lock()
                .values()
                .filter(|a| {
                    a.in_flight.load(Ordering::Acquire) == 0
                        && now.saturating_sub(a.last_active.load(Ordering::Acquire)) >= limit
                })
                .cloned()
                .collect();
            for activity in idle {
                if let Some(fd) = *activity.fd.lock().unwrap_or_else(|e| e.into_inner()) {
                    // SAFETY: the descriptor belongs to an open connection of this process (the
                    // lock keeps it from closing meanwhile); shutdown does not close it.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    tracing::debug!(
                        idle_ms = limit,
                        "closed a connection with no request for the idle timeout"
                    );
                }
            }
        }
    }
}

/// Counts each request as in flight on its connection until its response body has been sent.
#[derive(Clone)]
pub struct IdleLayer(pub Connections);

impl<S> tower_layer::Layer<S> for IdleLayer {
    type Service = IdleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdleService {
            inner,
            connections: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct IdleService<S> {
    inner: S,
    connections: Connections,
}

/// The peer address of the connection a request came on, plaintext or TLS.
fn peer<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// A request in flight; ends when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active.store(now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for IdleService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let in_flight = peer(&request)
            .and_then(|peer| self.connections.activity(&peer))
            .map(InFlight::start);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(match in_flight {
                Some(in_flight) => response.map(|inner| {
                    Body::new(TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    })
                }),
                None => response,
            })
        })
    }
}
