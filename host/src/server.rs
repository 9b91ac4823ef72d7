//! Serving: the gRPC server with health checking and reflection (v1 and v1alpha), gRPC-web and the
//! REST/JSON routes of [`crate::rest`], all on one injected listener, until an injected shutdown
//! future completes.
//!
//! Shutdown goes in stages: health turns NOT_SERVING, requests are still accepted for the shutdown
//! delay (so that load balancers watching health stop sending first), the listener stops accepting,
//! calls in flight get `grace` to finish, then `serve` returns.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower_http::{
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tributary_proto::{
    encoded::packages_service_server::PackagesServiceServer,
    v1::plugins_service_server::PluginsServiceServer,
};

use tributary_runtime::{
    config::{
        default_max_connections, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS_PER_CONNECTION,
        DEFAULT_REQUEST_BODY_TIMEOUT, DEFAULT_STALL_TIMEOUT, HANDSHAKE_TIMEOUT,
    },
    registry::SourceState,
};

use crate::service::Catalog;

use crate::idle::MAX_REQUEST_BYTES;

/// How often an HTTP/2 ping goes to a connection, and how long its answer may take before the
/// connection is closed.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long calls in flight may run after a shutdown signal.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// How to serve, beyond the listener and the catalog.
#[derive(Clone)]
pub struct ServeOptions {
    /// How long calls in flight may run after the shutdown signal.
    pub grace: Duration,
    /// TLS for every connection, when set.
    pub tls: Option<Arc<crate::tls::Certificates>>,
    /// Who may call and what each caller sees, when set (see [`crate::auth`]).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// How long the server keeps accepting requests after the shutdown signal while its health says
    /// NOT_SERVING, so that load balancers stop sending before the listener closes.
    pub shutdown_delay: Duration,
    /// The most connections open at once (see [`crate::listener`]).
    pub max_connections: usize,
    /// Web origins (`https://catalog.example.com`) whose pages may call the API (CORS); none by
    /// default: only pages served from the API's own origin.
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    /// Serve the catalog web page at `/` ([`crate::webui`]).
    pub web_ui: bool,
    /// How long a new connection may take to send its first byte (plaintext) or finish its TLS
    /// handshake before it is closed.
    pub handshake_timeout: Duration,
    /// How long a connection may go without a request in flight before it is closed.
    pub idle_timeout: Duration,
    /// How long a response may wait for its client to take any of it before the connection is
    /// closed (see [`crate::idle`]).
    pub stall_timeout: Duration,
    /// How long after a request started its body may still be arriving.
    pub request_body_timeout: Duration,
    /// The most HTTP/2 streams (calls) one connection may have open at once (the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` the server announces; more are refused).
    pub max_streams_per_connection: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            grace: DEFAULT_GRACE,
            tls: None,
            auth: None,
            shutdown_delay: Duration::ZERO,
            max_connections: default_max_connections(),
            cors_allowed_origins: Vec::new(),
            web_ui: true,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        }
    }
}

/// Serves `catalog` on `listener` until `shutdown` completes, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let options = ServeOptions {
        grace,
        ..ServeOptions::default()
    };
    serve_with(listener, catalog, shutdown, options).await
}

/// [`serve`] with every option.
pub async fn serve_with(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let grace = options.grace;
    let delay = options.shutdown_delay;
    let (health, _) = tonic_health::server::health_reporter();
    let health_service = tonic_health::pb::health_server::HealthServer::new(SourceHealth {
        inner: tonic_health::server::HealthService::from_health_reporter(health.clone()),
        auth: options.auth.is_some(),
    });
    health.set_serving::<PackagesServiceServer<Catalog>>().await;
    health.set_serving::<PluginsServiceServer<Catalog>>().await;

    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_sources(
        health.clone(),
        catalog.clone(),
        draining.clone(),
    ));

    let (reflection_v1, reflection_v1alpha) = reflection()?;

    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("shutting down: health is NOT_SERVING, draining calls in flight");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<PackagesServiceServer<Catalog>>()
                .await;
            health
                .set_not_serving::<PluginsServiceServer<Catalog>>()
                .await;
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "still accepting while load balancers see NOT_SERVING"
                );
                tokio::time::sleep(delay).await;
            }
            let _ = draining_tx.send(());
        }
    };

    // gRPC services and the REST routes in one axum router, so one listener serves native gRPC,
    // gRPC-web and REST/JSON, all behind the same layers. The packages service sends its pages as
    // written from the plugins' summaries (`crate::page`).
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            PackagesServiceServer::from_arc(catalog.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            PluginsServiceServer::from_arc(catalog.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    let mut routes = grpc
        .into_axum_router()
        .merge(crate::rest::routes(catalog.clone(), health.clone()));
    if options.web_ui {
        routes = routes.merge(crate::webui::routes());
    }
    let connections = crate::idle::Connections::default();
    let routes = routes.fallback(crate::rest::fallback);
    let router = Server::builder()
        // A peer that stops answering HTTP/2 pings is dropped; so is one that never finishes.
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        // hyper's own default is no limit: one connection could open thousands of calls.
        .max_concurrent_streams(Some(options.max_streams_per_connection))
        // gRPC-web (HTTP/1.1 or HTTP/2, binary or base64 text) and REST on the same port; gRPC-web is
        // translated to gRPC before the other layers: auth, metrics and request ids see one kind of
        // gRPC request, and REST requests pass through the same layers.
        .accept_http1(true)
        .layer(crate::idle::IdleLayer {
            connections: connections.clone(),
            request_body_timeout: options.request_body_timeout,
        })
        // CORS only when some origin is allowed; otherwise nothing, not even the `Vary` and
        // `Access-Control-Expose-Headers` headers that `CorsLayer` puts on every response.
        .layer(tower::util::option_layer(
            (!options.cors_allowed_origins.is_empty()).then(|| cors(&options.cors_allowed_origins)),
        ))
        .layer(crate::grpc_web::GrpcWebLayer)
        // A request id, from the client when sane, in the response and the request's span.
        .layer(tower::util::MapRequestLayer::new(
            crate::request_id::keep_sane_id::<tonic::body::Body>,
        ))
        .layer(SetRequestIdLayer::x_request_id(crate::request_id::MakeId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::request_id::span::<tonic::body::Body>)
                .on_request(())
                .on_response(())
                .on_failure(()),
        )
        .layer(crate::metrics::MetricsLayer(catalog.metrics().clone()))
        .layer(crate::auth::AuthLayer(options.auth.clone()))
        .add_routes(tonic::service::Routes::from(routes).prepare());
    // TCP_NODELAY (a small response must not wait for the client's delayed ACK), the connection
    // limit and no busy loop when descriptors run out: see crate::listener.
    let tcp = crate::listener::incoming(listener, options.max_connections, connections.clone());
    let reaper = tokio::spawn(connections.reap(options.idle_timeout, options.stall_timeout));
    let handshake = options.handshake_timeout;
    let server: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match options.tls {
        None => Box::pin(router.serve_with_incoming_shutdown(
            crate::listener::first_bytes_within(tcp, handshake),
            signal,
        )),
        Some(certificates) => Box::pin(router.serve_with_incoming_shutdown(
            crate::tls::incoming(tcp, certificates, handshake),
            signal,
        )),
    };

    tokio::select! {
        result = server => result?,
        () = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "calls still in flight after the grace period; stopping anyway");
        }
    }
    watcher.abort();
    reaper.abort();
    tracing::info!("server stopped");
    Ok(())
}

/// CORS for gRPC-web callers from the allowed origins: preflight answered, the gRPC-web and auth
/// request headers allowed, the gRPC status headers exposed. No origin allowed means no CORS headers.
fn cors(origins: &[http::HeaderValue]) -> tower_http::cors::CorsLayer {
    use http::{header::HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("authorization"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Server reflection in both versions: `grpc.reflection.v1` and `grpc.reflection.v1alpha`, which is
/// the only one grpcurl 1.8.x and Python grpcio's reflection client speak.
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tributary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The gRPC health service with each source's entry (`tributary.source/<name>`) shown only to a
/// caller that may see the source, when the server authenticates: to anyone else, a hidden source
/// and an unknown one both answer NOT_FOUND, so hidden names cannot be confirmed or watched. The
/// overall entry ("") and the services' entries stay open to probes without a credential.
struct SourceHealth {
    inner: tonic_health::server::HealthService,
    auth: bool,
}

impl SourceHealth {
    fn visible<T>(&self, request: &tonic::Request<T>, service: &str) -> Result<(), tonic::Status> {
        let Some(source) = service.strip_prefix("tributary.source/") else {
            return Ok(());
        };
        let caller = request.extensions().get::<Arc<crate::auth::Identity>>();
        if !self.auth || caller.is_some_and(|c| c.allows(source)) {
            Ok(())
        } else {
            // What tonic-health answers for a name it does not know.
            Err(tonic::Status::not_found("service not registered"))
        }
    }
}

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for SourceHealth {
    async fn check(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        self.visible(&request, &request.get_ref().service)?;
        self.inner.check(request).await
    }

    type WatchStream = tonic_health::server::WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        self.visible(&request, &request.get_ref().service)?;
        self.inner.watch(request).await
    }
}

/// The health service name of a source: `tributary.source/<name>`.
pub fn source_health_name(source: &str) -> String {
    format!("tributary.source/{source}")
}

/// Keeps each source's health entry (`tributary.source/NAME`) current: SERVING while the source is
/// ready ([`SourceState::Ready`]), NOT_SERVING while it failed at start, its runner is starting, it
/// backs off after timeouts, or its last calls all failed. The overall entry ("") is NOT_SERVING while the server is starved of threads
/// (see [`tributary_runtime::call::threads::starved`]) and from the shutdown signal on.
async fn watch_sources(
    health: tonic_health::server::HealthReporter,
    catalog: Arc<Catalog>,
    draining: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut last: std::collections::HashMap<String, ServingStatus> = Default::default();
    let mut starved = false;
    loop {
        let now_starved = tributary_runtime::call::threads::starved();
        if now_starved != starved {
            starved = now_starved;
            if !draining.load(std::sync::atomic::Ordering::SeqCst) {
                let status = if starved {
                    tracing::error!(
                        "health NOT_SERVING: the system refuses threads for plugin calls"
                    );
                    ServingStatus::NotServing
                } else {
                    tracing::info!("health SERVING: threads for plugin calls are available again");
                    ServingStatus::Serving
                };
                health.set_service_status("", status).await;
            }
        }
        let registry = catalog.registry();
        for entry in &registry.sources {
            let status = match entry.state_now() {
                SourceState::Ready => ServingStatus::Serving,
                _ => ServingStatus::NotServing,
            };
            if last.get(&entry.name) != Some(&status) {
                health
                    .set_service_status(source_health_name(&entry.name), status)
                    .await;
                last.insert(entry.name.clone(), status);
            }
        }
        // A source retired by a reload is no longer served.
        let retired: Vec<String> = last
            .keys()
            .filter(|name| registry.source(name).is_none())
            .cloned()
            .collect();
        for name in retired {
            health
                .set_service_status(source_health_name(&name), ServingStatus::NotServing)
                .await;
            last.remove(&name);
        }
        drop(registry);
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// How often source health entries are refreshed.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
