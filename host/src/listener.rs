//! The accept loop: a bound on open connections, and no busy loop when descriptors run out.
//!
//! - At most `max_connections` connections are open at once; one more is accepted and closed at
//!   once (the client sees its connection refused promptly rather than hanging), with a
//!   rate-limited warning. The default stays below the process's open-file limit
//!   ([`default_max_connections`]) so that descriptors do not run out first.
//! - When `accept` fails because descriptors ran out (EMFILE, ENFILE) or memory did (ENOBUFS,
//!   ENOMEM), the loop waits (5 ms, doubling to 1 s) instead of retrying at once, and logs it (once a
//!   second at most).
//! - A plaintext connection whose peer sends nothing within the handshake timeout
//!   (`handshake_timeout_ms`, 10 s by default; [`first_bytes_within`]) is closed: an idle TCP
//!   connection cannot hold a slot for longer. TLS connections have the same bound on their
//!   handshake ([`crate::tls`]). Once a connection speaks HTTP/2, a peer that stops answering the
//!   server's pings is dropped; one that answers them but sends no request keeps its connection,
//!   within `max_connections`.
//! - A connection with no request in flight for `idle_timeout_ms` is closed ([`crate::idle`]).
//! - Every accepted socket has TCP_NODELAY (a small response must not wait for the client's delayed
//!   ACK) and TCP keep-alive (a peer that vanished is noticed).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection; its slot is given back when it closes.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Registered for the idle timeout ([`crate::idle`]) while open.
    _registration: Option<crate::idle::Registration>,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Turns TCP keep-alive on (the kernel's default timings), so that a peer that vanished is noticed.
fn set_keepalive(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket this process owns, with a valid pointer and length.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Whether an `accept` error means the process or the system ran out of descriptors or memory.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Logs at most once per second.
struct Every {
    last: Option<Instant>,
    skipped: u64,
}

impl Every {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// Accepts connections on `listener` for as long as the returned stream is read.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    connections: crate::idle::Connections,
) -> ReceiverStream<Result<Connection, io::Error>> {
    let (tx, rx) = mpsc::channel(32);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        let mut exhausted = Every {
            last: None,
            skipped: 0,
        };
        let mut full = Every {
            last: None,
            skipped: 0,
        };
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let stream = match stream {
                Ok((stream, _)) => stream,
                Err(e) if out_of_resources(&e) => {
                    if let Some(skipped) = exhausted.due() {
                        tracing::error!(
                            backoff_ms = backoff.as_millis() as u64,
                            failed_since_last_log = skipped,
                            "cannot accept connections: {e}; waiting before the next try (raise the open-file limit, or lower max_connections)"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => {
                    tracing::debug!("connection not accepted: {e}");
                    continue;
                }
            };
            backoff = Duration::from_millis(5);
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if let Some(skipped) = full.due() {
                    tracing::warn!(
                        max_connections,
                        refused_since_last_log = skipped,
                        "connection limit reached: a new connection was closed at once (max_connections)"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            set_keepalive(&stream);
            let registration = stream.peer_addr().ok().map(|peer| {
                use std::os::fd::AsRawFd;
                connections.register(peer, stream.as_raw_fd())
            });
            if tx
                .send(Ok(Connection {
                    stream,
                    _slot: slot,
                    _registration: registration,
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Passes on each connection of `connections` once its peer has sent a first byte; a connection
/// silent for `timeout` is closed (logged at debug level). The waits run concurrently, off the
/// accept loop.
pub fn first_bytes_within(
    mut connections: ReceiverStream<Result<Connection, io::Error>>,
    timeout: Duration,
) -> ReceiverStream<Result<Connection, io::Error>> {
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        while let Some(accepted) = connections.next().await {
            let Ok(connection) = accepted else {
                continue;
            };
            let spoken = tx.clone();
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(timeout, connection.stream.peek(&mut byte)).await {
                    Ok(_) => {
                        let _ = spoken.send(Ok(connection)).await;
                    }
                    Err(_) => tracing::debug!(
                        timeout_ms = timeout.as_millis() as u64,
                        "closed a connection that sent nothing within the handshake timeout"
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
