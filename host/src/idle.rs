//! Connections that hold the server's resources without using them are closed: idle ones, stalled
//! ones, and requests whose bodies never finish arriving.
//!
//! - A connection with no request in flight for `idle_timeout_ms` (default 10 minutes) is shut
//!   down. HTTP/2 keep-alive pings drop peers that stop answering, but a peer that answers pings
//!   and sends no request would keep its connection (and its slot under `max_connections`) for ever.
//! - A connection with a response its client has not taken any of for `stall_timeout_ms` (default
//!   60 s) is shut down: an HTTP/2 client that never opens its flow-control window (or an HTTP/1
//!   client that stops reading) otherwise holds the response, its slot under
//!   `max_requests_in_flight` and the connection for ever.
//! - A request body that has not fully arrived `request_body_timeout_ms` (default 10 s) after its
//!   request started fails the call with DEADLINE_EXCEEDED, so a client sending a byte a second
//!   cannot hold a connection slot for minutes.
//!
//! Each accepted connection is registered here under its peer address; [`IdleLayer`] counts the
//! requests in flight on it (a response counts until its body has been taken, so a long stream is
//! never idle), keeps the response's [`ResponseSlot`] until then, and notes when each response
//! body last handed data to the connection without being asked for more; a reaper shuts the socket
//! down once it has been idle or stalled for its timeout. The peer sees the connection closed, as
//! after an HTTP/2 GOAWAY; gRPC clients reconnect on their next call.

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

/// The largest request accepted, in bytes: far above the largest valid request (the service's
/// filter limits cap it near 320 KiB), far below tonic's 4 MiB default.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The largest piece of a response body handed to the connection at once. HTTP/2 buffers a whole
/// piece whatever the client's window; with small pieces the response stays here, counted as in
/// flight and watched for a stall, until all but its last piece has gone to the client.
const PIECE_BYTES: usize = 16 * 1024;

/// A request's slot under `max_requests_in_flight`, put in the response's extensions by the
/// service; [`IdleLayer`] moves it into the response body, so that the slot is given back when the
/// body has been taken (or dropped), not when the handler returns.
#[derive(Clone)]
pub struct ResponseSlot(pub Arc<tokio::sync::OwnedSemaphorePermit>);

/// One connection's activity.
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since [`epoch`] when the connection last had a request end (or was accepted).
    last_active: AtomicU64,
    /// The socket, while the connection is open (`None` once it has closed: its number may be
    /// reused).
    fd: Mutex<Option<RawFd>>,
    /// For each response body alive on the connection: since when (milliseconds since [`epoch`])
    /// it has handed data over without being asked for more; 0 while it is not waiting for the
    /// client (it is computing its next data, or has just been asked).
    bodies: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl Activity {
    /// Since when the longest-waiting response body has waited for the client, if any waits.
    fn stalled_since(&self) -> Option<u64> {
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        bodies
            .iter()
            .filter_map(|b| b.upgrade())
            .map(|b| b.load(Ordering::Acquire))
            .filter(|&since| since != 0)
            .min()
    }
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
            bodies: Mutex::new(Vec::new()),
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

    /// Shuts down, every quarter of the shorter timeout (at least 50 ms, at most 10 s), the
    /// connections with no request in flight for `idle`, and those with a response body that has
    /// waited for its client for `stall`. Runs until the task is dropped.
    pub async fn reap(self, idle: Duration, stall: Duration) {
        let every = (idle.min(stall) / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
        let idle_limit = idle.as_millis() as u64;
        let stall_limit = stall.as_millis() as u64;
        loop {
            tokio::time::sleep(every).await;
            let now = now_ms();
            let open: Vec<Arc<Activity>> = self.lock().values().cloned().collect();
            for activity in open {
                let idle = activity.in_flight.load(Ordering::Acquire) == 0
                    && now.saturating_sub(activity.last_active.load(Ordering::Acquire))
                        >= idle_limit;
                let stalled = !idle
                    && activity
                        .stalled_since()
                        .is_some_and(|since| now.saturating_sub(since) >= stall_limit);
                if !idle && !stalled {
                    continue;
                }
                if let Some(fd) = *activity.fd.lock().unwrap_or_else(|e| e.into_inner()) {
                    // SAFETY: the descriptor belongs to an open connection of this process (the
                    // lock keeps it from closing meanwhile); shutdown does not close it.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    if idle {
                        tracing::debug!(
                            idle_ms = idle_limit,
                            "closed a connection with no request for the idle timeout"
                        );
                    } else {
                        tracing::debug!(
                            stall_ms = stall_limit,
                            "closed a connection whose client took nothing of a response for the stall timeout (stall_timeout_ms)"
                        );
                    }
                }
            }
        }
    }
}

/// Counts each request as in flight on its connection until its response body has been taken,
/// holds the response's [`ResponseSlot`] until then, watches the body for a stalled client, and
/// gives the request body its deadline.
#[derive(Clone)]
pub struct IdleLayer {
    pub connections: Connections,
    /// How long after the request started its body may still be arriving.
    pub request_body_timeout: Duration,
}

impl<S> tower_layer::Layer<S> for IdleLayer {
    type Service = IdleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdleService {
            inner,
            connections: self.connections.clone(),
            request_body_timeout: self.request_body_timeout,
        }
    }
}

#[derive(Clone)]
pub struct IdleService<S> {
    inner: S,
    connections: Connections,
    request_body_timeout: Duration,
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

/// A response body that keeps its request in flight (and its slot) until it has been taken (or
/// dropped), hands its data over in pieces of at most [`PIECE_BYTES`], and notes when it waits for
/// the client.
struct TrackedBody {
    inner: Body,
    /// The rest of a data frame larger than a piece.
    rest: bytes::Bytes,
    /// See [`Activity::bodies`]; `None` when the connection is not registered.
    waiting: Option<Arc<AtomicU64>>,
    _in_flight: Option<InFlight>,
    _slot: Option<ResponseSlot>,
}

impl TrackedBody {
    fn wait_for_client(&self, waiting: bool) {
        if let Some(since) = &self.waiting {
            // 0 means "not waiting": a body that waits from the very first millisecond says 1.
            since.store(if waiting { now_ms().max(1) } else { 0 }, Ordering::Release);
        }
    }

    fn piece(&mut self) -> bytes::Bytes {
        if self.rest.len() > PIECE_BYTES {
            self.rest.split_to(PIECE_BYTES)
        } else {
            std::mem::take(&mut self.rest)
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if !self.rest.is_empty() {
            let piece = self.piece();
            self.wait_for_client(true);
            return Poll::Ready(Some(Ok(http_body::Frame::data(piece))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.wait_for_client(true);
                match frame.into_data() {
                    Ok(data) => {
                        self.rest = data;
                        let piece = self.piece();
                        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Pending => {
                // The server is making the next data: the client is not the one holding it up.
                self.wait_for_client(false);
                Poll::Pending
            }
            other => {
                self.wait_for_client(false);
                other
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// A request body that must have fully arrived by a deadline.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                "the request body had not fully arrived {} ms after the request started \
                 (request_body_timeout_ms)",
                self.timeout.as_millis()
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

impl<S> tower_service::Service<http::Request<Body>> for IdleService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let activity = peer(&request).and_then(|peer| self.connections.activity(&peer));
        let in_flight = activity.clone().map(InFlight::start);
        let request = if http_body::Body::is_end_stream(request.body()) {
            request
        } else {
            let timeout = self.request_body_timeout;
            request.map(|inner| {
                Body::new(DeadlineBody {
                    inner,
                    deadline: Box::pin(tokio::time::sleep(timeout)),
                    timeout,
                })
            })
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let slot = response.extensions_mut().remove::<ResponseSlot>();
            let waiting = activity.map(|activity| {
                let since = Arc::new(AtomicU64::new(now_ms().max(1)));
                activity
                    .bodies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::downgrade(&since));
                since
            });
            Ok(response.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    rest: bytes::Bytes::new(),
                    waiting,
                    _in_flight: in_flight,
                    _slot: slot,
                })
            }))
        })
    }
}
