//! A request id on every log line of a request.
//!
//! Each request runs inside a `request` tracing span carrying an id and the path. The id is the
//! client's `x-request-id` when it sends a sane one (at most 64 visible ASCII characters), so a request
//! can be followed from a proxy's log into ours; otherwise the server makes one. The id goes back to
//! the client in the `x-request-id` response header. tower-http's request-id and trace layers do
//! the work (the server module wires them); this module says which ids are sane, makes ids and names the span.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 64;

/// Ids the server makes: a per-process prefix and a counter.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn make_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}{:05x}", std::process::id(), nanos & 0xfffff)
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Makes the id of a request that came without a sane one.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut value = HeaderValue::from_str(&make_id()).ok()?;
        // Never indexed by HPACK: a value that changes on every response would only churn the
        // connection's header table.
        value.set_sensitive(true);
        Some(RequestId::new(value))
    }
}

/// A client's id that we can log as it is.
fn is_sane(value: &HeaderValue) -> bool {
    let value = value.as_bytes();
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| b.is_ascii_graphic())
}

/// Keeps the client's id when it is sane (see [`MakeId`] on HPACK), drops it otherwise, so that
/// the server makes one.
pub fn keep_sane_id<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers_mut();
    match headers.get_mut(HEADER) {
        Some(value) if is_sane(value) => value.set_sensitive(true),
        Some(_) => drop(headers.remove(HEADER)),
        None => {}
    }
    request
}

/// The span a request runs in: its id and path.
pub fn span<B>(request: &Request<B>) -> tracing::Span {
    let id = request.extensions().get::<RequestId>();
    let id = id.and_then(|id| id.header_value().to_str().ok());
    tracing::info_span!("request", id = id.unwrap_or(""), path = %request.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let kept = |id: Option<&str>| {
            let mut request = Request::new(());
            if let Some(id) = id {
                request.headers_mut().insert(HEADER, id.parse().unwrap());
            }
            let request = keep_sane_id(request);
            let kept = request.headers().get(HEADER);
            kept.map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(kept(None), None);
        assert_eq!(kept(Some("abc-123")).as_deref(), Some("abc-123"));
        assert_eq!(kept(Some("has space")), None);
        assert_eq!(kept(Some(&"x".repeat(65))), None);
        assert_ne!(make_id(), make_id());
    }
}
