//! The gRPC side: clients on loopback, page tokens for chosen positions, the load loop, and the
//! baseline server (a tonic server on the same proto that answers with a prebuilt page).

use std::{path::Path, sync::Arc, time::Duration};

use prost::Message;
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Channel},
    Request, Response, Status,
};
use tributary_proto::v1::{
    self as pb,
    packages_service_client::PackagesServiceClient,
    packages_service_server::{PackagesService, PackagesServiceServer},
};
use tributary_runtime::merge::token::{filter_fingerprint, MergeKey, PageToken};

pub type Client = PackagesServiceClient<Channel>;

/// A client on its own connection. Responses up to 64 MiB (a 1,000-item page is far below).
pub async fn connect(url: &str) -> Client {
    let channel = Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    PackagesServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

/// The token a page ending on `last` carries, for the unfiltered listing.
pub fn token_after(last: MergeKey) -> String {
    PageToken {
        filter_fingerprint: filter_fingerprint("", &[], &[], &[]),
        primary: Default::default(),
        last,
    }
    .encode()
}

pub fn request(
    page_size: i32,
    page_token: &str,
    sources: &[&str],
) -> pb::ListAvailablePackageSummariesRequest {
    pb::ListAvailablePackageSummariesRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: if sources.is_empty() {
            None
        } else {
            Some(pb::FilterOptions {
                sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            })
        },
        ..Default::default()
    }
}

/// One page; a status or a failed source is a broken benchmark.
pub async fn list(
    client: &mut Client,
    request: pb::ListAvailablePackageSummariesRequest,
) -> pb::ListAvailablePackageSummariesResponse {
    let response = client
        .list_available_package_summaries(request)
        .await
        .unwrap_or_else(|e| panic!("list call failed: {e}"))
        .into_inner();
    assert!(
        response.failed_sources.is_empty(),
        "failed sources: {:?}",
        response.failed_sources
    );
    response
}

pub use super::load::Load;

/// `clients` clients, each on its own connection, ask for `page_size`-item pages resumed from
/// `tokens` (each client walks the list from its own offset) for `duration`, after a warm-up; a
/// good page has `page_size` items and no failed source.
pub async fn load(
    url: &str,
    clients: usize,
    page_size: i32,
    tokens: Arc<Vec<String>>,
    duration: Duration,
) -> Load {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect(url).await);
    }
    super::load::run(connections, tokens, duration, move |client, token| {
        Box::pin(async move {
            match client
                .list_available_package_summaries(request(page_size, token, &[]))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    r.failed_sources.is_empty()
                        && r.available_package_summaries.len() == page_size as usize
                }
                Err(_) => false,
            }
        })
    })
    .await
}

/// Writes `response` where [`serve_baseline`] reads it.
pub fn write_response(path: &Path, response: &pb::ListAvailablePackageSummariesResponse) {
    std::fs::write(path, response.encode_to_vec()).expect("write the prebuilt response");
}

/// The baseline: every list call gets a copy of one prebuilt response.
struct Prebuilt(pb::ListAvailablePackageSummariesResponse);

#[tonic::async_trait]
impl PackagesService for Prebuilt {
    async fn list_available_package_summaries(
        &self,
        _request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<pb::ListAvailablePackageSummariesResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }

    async fn get_available_package_detail(
        &self,
        _request: Request<pb::GetAvailablePackageDetailRequest>,
    ) -> Result<Response<pb::GetAvailablePackageDetailResponse>, Status> {
        Err(Status::unimplemented("the baseline serves list calls only"))
    }

    type StreamAvailablePackageSummariesStream =
        tonic::codegen::BoxStream<pb::ListAvailablePackageSummariesResponse>;

    async fn stream_available_package_summaries(
        &self,
        _request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<Self::StreamAvailablePackageSummariesStream>, Status> {
        Err(Status::unimplemented("the baseline serves list calls only"))
    }
}

/// Serves `service` on an ephemeral loopback port on a runtime shaped like the server's (one worker
/// per core), printing `listening on <address>` as `tributary serve` does, until killed. Accepted
/// connections get `TCP_NODELAY`, as tonic's own `Server::serve` sets by default.
fn serve_nodelay<S: PackagesService>(service: PackagesServiceServer<S>) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("address"));
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await
            .expect("server");
    });
}

/// `tributary-bench serve-baseline <response file>`: the baseline server, answering every list
/// call with the prebuilt response.
pub fn serve_baseline(response_file: &Path) {
    let bytes = std::fs::read(response_file).expect("read the prebuilt response");
    let response = pb::ListAvailablePackageSummariesResponse::decode(bytes.as_slice())
        .expect("decode the prebuilt response");
    serve_nodelay(PackagesServiceServer::new(Prebuilt(response)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_to_their_key() {
        let key = MergeKey {
            name: "pkg-0000000001".into(),
            source: "s1".into(),
            identifier: "g1".into(),
        };
        let token = token_after(key.clone());
        let decoded = PageToken::decode(&token, filter_fingerprint("", &[], &[], &[])).unwrap();
        assert_eq!(decoded.last, key);
    }

    #[test]
    fn requests_name_their_sources() {
        let r = request(20, "t", &["a", "b"]);
        assert_eq!(r.filter.unwrap().sources, vec!["a", "b"]);
        assert!(request(20, "", &[]).filter.is_none());
    }
}
