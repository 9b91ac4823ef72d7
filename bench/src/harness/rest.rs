//! The REST side: HTTP/1.1 clients on loopback asking for `GET /v1/packages` pages, the load loop,
//! and the baseline server (the same HTTP stack as `tributary serve`, tonic's server accepting
//! HTTP/1.1, answering every `GET /v1/packages` with one prebuilt JSON page).

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::IgnoredAny;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

/// A client on its own keep-alive HTTP/1.1 connection.
pub struct Client {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
}

/// Connects a client to `address`, with `TCP_NODELAY` as the gRPC clients have it.
pub async fn connect(address: SocketAddr) -> Client {
    let stream = TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("HTTP/1.1 handshake with {address}: {e}"));
    tokio::spawn(connection);
    Client {
        sender,
        host: address.to_string(),
    }
}

/// A query value with every byte outside RFC 3986's unreserved set percent-encoded.
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path and query of a `page_size`-item page resumed from `token`.
pub fn page_path(page_size: usize, token: &str) -> String {
    format!(
        "/v1/packages?page_size={page_size}&page_token={}",
        query_value(token)
    )
}

/// An answer: its HTTP status and its body.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

impl Client {
    /// `GET path`; an error on the connection is an `Err`.
    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = http::Request::get(path)
            .header(http::header::HOST, &self.host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// What the checks read of a page: its items (JSON objects, each with a `name`, parsed and
/// skipped) and its failed sources.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageShape {
    available_package_summaries: Vec<ItemShape>,
    #[serde(default)]
    failed_sources: Vec<IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ItemShape {
    #[serde(rename = "name")]
    _name: IgnoredAny,
}

/// Whether `answer` is a real page: status 200, a JSON object whose `availablePackageSummaries`
/// holds `page_size` JSON objects with a `name`, and no failed source. The reason when it is not.
pub fn check_page(answer: &Answer, page_size: usize) -> Result<(), String> {
    if answer.status != http::StatusCode::OK {
        return Err(format!(
            "status {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
        ));
    }
    let page: PageShape =
        serde_json::from_slice(&answer.body).map_err(|e| format!("not a JSON page: {e}"))?;
    if page.available_package_summaries.len() != page_size {
        return Err(format!(
            "{} items, not {page_size}",
            page.available_package_summaries.len()
        ));
    }
    if !page.failed_sources.is_empty() {
        return Err(format!("{} failed sources", page.failed_sources.len()));
    }
    Ok(())
}

pub use super::load::Load;

/// `clients` clients, each on its own connection, ask for `page_size`-item pages resumed from
/// `tokens` (each client walks the list from its own offset) for `duration`, after a warm-up; every
/// answer is checked with [`check_page`] (status 200, `page_size` items, no failed source), and a
/// broken connection is replaced.
pub async fn load(
    address: SocketAddr,
    clients: usize,
    page_size: usize,
    tokens: Arc<Vec<String>>,
    duration: Duration,
) -> Load {
    let paths: Arc<Vec<String>> =
        Arc::new(tokens.iter().map(|t| page_path(page_size, t)).collect());
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect(address).await);
    }
    super::load::run(connections, paths, duration, move |client, path| {
        Box::pin(async move {
            match client.get(path).await {
                Ok(answer) => check_page(&answer, page_size).is_ok(),
                Err(_) => {
                    // A broken connection stays broken: open another.
                    *client = connect(address).await;
                    false
                }
            }
        })
    })
    .await
}

/// `tributary-bench serve-rest-baseline <page file>`: answers every `GET /v1/packages` with the
/// JSON in `page_file` (`Content-Type: application/json`, as the server's pages), on tonic's
/// server accepting HTTP/1.1 as `tributary serve` does, with `TCP_NODELAY` on its connections, on
/// a runtime shaped like the server's; prints `listening on <address>` and serves until killed.
pub fn serve_baseline(page_file: &Path) {
    let page = Bytes::from(std::fs::read(page_file).expect("read the prebuilt page"));
    let router = axum::Router::new().route(
        "/v1/packages",
        axum::routing::get(move || {
            let page = page.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], page) }
        }),
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("address"));
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await
            .expect("server");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: http::StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn tokens_are_percent_encoded() {
        assert_eq!(query_value("aZ09-._~"), "aZ09-._~");
        assert_eq!(query_value("a+b/c=d é"), "a%2Bb%2Fc%3Dd%20%C3%A9");
        assert_eq!(
            page_path(20, "x="),
            "/v1/packages?page_size=20&page_token=x%3D"
        );
    }

    #[test]
    fn only_real_pages_pass() {
        let two =
            r#"{"availablePackageSummaries":[{"name":"a"},{"name":"b"}],"nextPageToken":"t"}"#;
        assert!(check_page(&answer(200, two), 2).is_ok());
        assert!(check_page(&answer(200, two), 3)
            .unwrap_err()
            .contains("2 items, not 3"));
        assert!(check_page(&answer(503, two), 2)
            .unwrap_err()
            .contains("status 503"));
        let error = r#"{"code":"INVALID_ARGUMENT","status":400,"message":"bad"}"#;
        assert!(check_page(&answer(200, error), 2)
            .unwrap_err()
            .contains("not a JSON page"));
        let cut = &two[..two.len() - 30];
        assert!(check_page(&answer(200, cut), 2)
            .unwrap_err()
            .contains("not a JSON page"));
        let numbers = r#"{"availablePackageSummaries":[1,2]}"#;
        assert!(check_page(&answer(200, numbers), 2)
            .unwrap_err()
            .contains("not a JSON page"));
        let failed = r#"{"availablePackageSummaries":[{"name":"a"},{"name":"b"}],"failedSources":[{"source":"s1"}]}"#;
        assert!(check_page(&answer(200, failed), 2)
            .unwrap_err()
            .contains("failed sources"));
    }
}
