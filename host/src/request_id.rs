//! A request id on every log line of a request.
//!
//! Each request runs inside a `request` tracing span carrying an id and the path. The id is the
//! client's `x-request-id` when it sends a sane one (at most 64 visible ASCII characters), so a request
//! can be followed from a proxy's log into ours; otherwise the server makes one. The id goes back to
//! the client in the `x-request-id` response header.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use tracing::Instrument;

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

/// The client's id, if it is one we can log as it is.
fn client_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(HEADER)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| value.to_owned())
}

/// Wraps every request in a span with its id; see the module docs.
#[derive(Clone, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RequestIdService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let id = client_id(request.headers()).unwrap_or_else(make_id);
        let span = tracing::info_span!("request", id = %id, path = %request.uri().path());
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Ok(mut value) = http::HeaderValue::from_str(&id) {
                    // Never indexed by HPACK: a value that changes on every response would only
                    // churn the connection's header table.
                    value.set_sensitive(true);
                    response.headers_mut().insert(HEADER, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(client_id(&headers), None);
        headers.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(client_id(&headers).as_deref(), Some("abc-123"));
        headers.insert(HEADER, "has space".parse().unwrap());
        assert_eq!(client_id(&headers), None);
        headers.insert(HEADER, "x".repeat(65).parse().unwrap());
        assert_eq!(client_id(&headers), None);
        assert_ne!(make_id(), make_id());
    }
}
