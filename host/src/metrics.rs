//! Metrics in the Prometheus text format, served on an admin listener of their own
//! (`metrics_listen` in the config; off unless set).
//!
//! Two kinds of figures:
//! - counted as requests pass: a tower layer around every gRPC service and REST route
//!   ([`MetricsLayer`]) counts requests by protocol (`grpc`, `grpc-web`, `rest`, `http`), method
//!   (or REST route) and gRPC status code and observes their latency and response size;
//! - read when scraped: each source's state (its [`SourceState`], calls in flight, restarts, items
//!   dropped) comes from the registry serving at the moment of the scrape, so it is never stale and
//!   costs nothing between scrapes; each source also reports its calls as they end
//!   ([`SourceMetrics`], a `CallObserver`).
//!
//! Label sets are bounded: methods come from a fixed list (anything else is `other`), codes are the
//! seventeen gRPC codes, sources are the configured sources. Identifiers and queries never become
//! labels. Every server has its own Prometheus registry, so two servers in one process (as in the
//! tests) do not mix their counts, with one exception: the calls made in place and those found stuck
//! (`tributary_calls_in_place_total`, `tributary_calls_stuck_in_place_total`) are counted by the
//! process's one slot table, so each server in a process reports the process's figure.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;

use tributary_runtime::registry::SourceState;

use tributary_runtime::registry::{Generation, Registry as Sources};

/// The gRPC methods counted under their own name; any other path is `other`.
const METHODS: &[&str] = &[
    "/tributary.v1.PackagesService/ListAvailablePackageSummaries",
    "/tributary.v1.PackagesService/GetAvailablePackageDetail",
    "/tributary.v1.PackagesService/StreamAvailablePackageSummaries",
    "/tributary.v1.PluginsService/ListPlugins",
    "/tributary.v1.PluginsService/Reload",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The REST routes counted under their own name (the REST routes); every detail path counts as
/// `GET /v1/packages/{source}/{identifier}`.
const REST_ROUTES: &[&str] = &[
    "GET /v1/packages",
    "GET /v1/plugins",
    "GET /v1/openapi.json",
    "GET /healthz",
    "GET /readyz",
];

/// The metric families of one server.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    response_bytes: HistogramVec,
    source_up: IntGaugeVec,
    source_backing_off: IntGaugeVec,
    source_calls_in_flight: IntGaugeVec,
    source_calls: IntCounterVec,
    source_call_seconds: HistogramVec,
    pages: IntCounter,
    items: IntCounter,
    source_failures: IntCounterVec,
    libraries: IntGaugeVec,
    generation: IntGauge,
    reloads: IntCounterVec,
    runner_restarts: IntCounterVec,
    source_items_dropped: IntCounterVec,
    runner_up: IntGaugeVec,
    calls_in_place: IntCounter,
    calls_stuck_in_place: IntCounter,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tributary_requests_total",
                "Requests answered, by protocol (grpc, grpc-web, rest, http), method (the gRPC method or REST route) and status code (the gRPC code; REST answers carry one too).",
            ),
            &["protocol", "method", "code"],
        )
        .expect("metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tributary_request_duration_seconds",
                "Time from a request's arrival to the end of its response, by protocol and method.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["protocol", "method"],
        )
        .expect("metric");
        let response_bytes = HistogramVec::new(
            HistogramOpts::new(
                "tributary_response_bytes",
                "Size of a response body (a page, for ListAvailablePackageSummaries), by protocol and method.",
            )
            .buckets(prometheus::exponential_buckets(256.0, 4.0, 9).expect("buckets")),
            &["protocol", "method"],
        )
        .expect("metric");
        let source_up = IntGaugeVec::new(
            Opts::new(
                "tributary_source_up",
                "1 when the source is called (ready or failing), 0 when it failed at start, its runner is starting, or it backs off.",
            ),
            &["source", "plugin"],
        )
        .expect("metric");
        let source_backing_off = IntGaugeVec::new(
            Opts::new(
                "tributary_source_backing_off",
                "1 while the source is not called after calls overran its timeout.",
            ),
            &["source"],
        )
        .expect("metric");
        let source_calls_in_flight = IntGaugeVec::new(
            Opts::new(
                "tributary_source_calls_in_flight",
                "Plugin calls running now for the source (a hung call counts until it returns).",
            ),
            &["source"],
        )
        .expect("metric");
        let source_calls = IntCounterVec::new(
            Opts::new(
                "tributary_source_calls_total",
                "Plugin calls by source, call (list or detail) and outcome: completed (whatever the \
                 plugin answered), timeout, overloaded, unhealthy (refused while backing off) or \
                 aborted.",
            ),
            &["source", "call", "outcome"],
        )
        .expect("metric");
        let source_call_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tributary_source_call_duration_seconds",
                "Time a completed plugin call took on its thread, by source and call.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["source", "call"],
        )
        .expect("metric");
        let calls_in_place = IntCounter::new(
            "tributary_calls_in_place_total",
            "Plugin calls made in place on a worker thread (fast sources; see inline_calls), since the process started.",
        )
        .expect("metric");
        let calls_stuck_in_place = IntCounter::new(
            "tributary_calls_stuck_in_place_total",
            "Calls made in place that ran past the watchdog's limit (their source went back to its own threads and their page was built again), since the process started.",
        )
        .expect("metric");
        let pages = IntCounter::new(
            "tributary_pages_total",
            "Pages of the merged catalog served (ListAvailablePackageSummaries answers).",
        )
        .expect("metric");
        let items = IntCounter::new(
            "tributary_items_served_total",
            "Package summaries served in pages.",
        )
        .expect("metric");
        let source_failures = IntCounterVec::new(
            Opts::new(
                "tributary_source_failures_total",
                "Pages a source could not contribute to, by source and failure kind.",
            ),
            &["source", "kind"],
        )
        .expect("metric");
        let libraries = IntGaugeVec::new(
            Opts::new(
                "tributary_plugin_libraries",
                "Library files in the plugin directory, by load result.",
            ),
            &["status"],
        )
        .expect("metric");
        let generation = IntGauge::new(
            "tributary_reload_generation",
            "The generation of libraries and sources serving now: 1 at start, one more per reload that took effect.",
        )
        .expect("metric");
        generation.set(1);
        let reloads = IntCounterVec::new(
            Opts::new(
                "tributary_reloads_total",
                "Reloads tried (SIGHUP, the Reload RPC, the directory watcher), by outcome: ok or refused.",
            ),
            &["outcome"],
        )
        .expect("metric");
        let runner_restarts = IntCounterVec::new(
            Opts::new(
                "tributary_runner_restarts_total",
                "Restarts of an isolated source's runner process (after a crash, a kill on timeout or the memory cap), by source.",
            ),
            &["source"],
        )
        .expect("metric");
        let source_items_dropped = IntCounterVec::new(
            Opts::new(
                "tributary_source_items_dropped_total",
                "Items left out of a source's answers because a field other than their key broke the contract (the rest was served), by source.",
            ),
            &["source"],
        )
        .expect("metric");
        let runner_up = IntGaugeVec::new(
            Opts::new(
                "tributary_runner_up",
                "1 while an isolated source's runner process runs, by source.",
            ),
            &["source"],
        )
        .expect("metric");
        for collector in [
            Box::new(pages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(calls_in_place.clone()),
            Box::new(calls_stuck_in_place.clone()),
            Box::new(runner_restarts.clone()),
            Box::new(source_items_dropped.clone()),
            Box::new(runner_up.clone()),
            Box::new(generation.clone()),
            Box::new(reloads.clone()),
            Box::new(source_calls.clone()),
            Box::new(source_call_seconds.clone()),
            Box::new(items.clone()),
            Box::new(source_failures.clone()),
            Box::new(libraries.clone()),
            Box::new(requests.clone()),
            Box::new(request_seconds.clone()),
            Box::new(response_bytes.clone()),
            Box::new(source_up.clone()),
            Box::new(source_backing_off.clone()),
            Box::new(source_calls_in_flight.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Arc::new(Metrics {
            registry,
            requests,
            request_seconds,
            response_bytes,
            source_up,
            source_backing_off,
            source_calls_in_flight,
            source_calls,
            source_call_seconds,
            pages,
            items,
            source_failures,
            libraries,
            generation,
            reloads,
            runner_restarts,
            source_items_dropped,
            runner_up,
            calls_in_place,
            calls_stuck_in_place,
        })
    }

    /// Counts one reload and shows the generation serving after it.
    pub fn record_reload(&self, ok: bool, generation: u64) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
        self.generation.set(generation as i64);
    }

    /// The per-call metrics of one source, for its guard (see [`tributary_runtime::call::SourceHealth`]).
    pub fn for_source(&self, source: &str) -> SourceMetrics {
        let call = |what: &str| CallMetrics {
            seconds: self.source_call_seconds.with_label_values(&[source, what]),
            outcomes: OUTCOMES.map(|o| self.source_calls.with_label_values(&[source, what, o])),
        };
        SourceMetrics {
            list: call("list"),
            detail: call("detail"),
        }
    }

    /// Counts one page served: its items and the sources that failed on it (`(source, kind)`).
    pub fn record_page<'a>(
        &self,
        items: usize,
        failures: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        self.pages.inc();
        self.items.inc_by(items as u64);
        for (source, kind) in failures {
            self.source_failures
                .with_label_values(&[source, kind])
                .inc();
        }
    }

    /// The text exposition of every metric, with the source gauges read from `registry` now.
    pub fn render(&self, registry: &Sources) -> String {
        for (counter, now) in [
            (
                &self.calls_in_place,
                tributary_runtime::call::in_place::calls_in_place(),
            ),
            (
                &self.calls_stuck_in_place,
                tributary_runtime::call::in_place::stuck_calls(),
            ),
        ] {
            if now > counter.get() {
                counter.inc_by(now - counter.get());
            }
        }
        self.source_up.reset();
        self.source_backing_off.reset();
        self.source_calls_in_flight.reset();
        self.runner_up.reset();
        for entry in &registry.sources {
            if let Some(runner) = entry.state.as_ref().ok().and_then(|s| s.runner.as_ref()) {
                let status = runner.status();
                let counted = self
                    .runner_restarts
                    .with_label_values(&[entry.name.as_str()]);
                if status.restarts > counted.get() {
                    counted.inc_by(status.restarts - counted.get());
                }
                self.runner_up
                    .with_label_values(&[entry.name.as_str()])
                    .set(i64::from(status.pid.is_some() && status.starting.is_none()));
            }
            if let Ok(source) = &entry.state {
                let dropped = source.health.history().items_dropped;
                let counted = self
                    .source_items_dropped
                    .with_label_values(&[entry.name.as_str()]);
                if dropped > counted.get() {
                    counted.inc_by(dropped - counted.get());
                }
            }
            let state = entry.state_now();
            let (up, backing_off) = (
                state.takes_calls(),
                matches!(state, SourceState::Unhealthy(_)),
            );
            let in_flight = match &entry.state {
                Ok(source) => source.health.in_flight(),
                Err(_) => 0,
            };
            self.source_up
                .with_label_values(&[entry.name.as_str(), entry.plugin.as_str()])
                .set(i64::from(up));
            self.source_backing_off
                .with_label_values(&[entry.name.as_str()])
                .set(i64::from(backing_off));
            self.source_calls_in_flight
                .with_label_values(&[entry.name.as_str()])
                .set(in_flight as i64);
        }
        let loaded = registry.files.iter().filter(|f| f.outcome.is_ok()).count();
        let rejected = registry.files.len() - loaded;
        self.libraries
            .with_label_values(&["loaded"])
            .set(loaded as i64);
        self.libraries
            .with_label_values(&["rejected"])
            .set(rejected as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn record(
        &self,
        protocol: &'static str,
        method: &'static str,
        code: usize,
        started: Instant,
        bytes: usize,
    ) {
        self.requests
            .with_label_values(&[
                protocol,
                method,
                crate::status::code_name(tonic::Code::from(i32::try_from(code).unwrap_or(2))),
            ])
            .inc();
        self.request_seconds
            .with_label_values(&[protocol, method])
            .observe(started.elapsed().as_secs_f64());
        self.response_bytes
            .with_label_values(&[protocol, method])
            .observe(bytes as f64);
    }
}

/// The outcomes a plugin call is counted under, in [`CallMetrics::outcomes`] order.
const OUTCOMES: [&str; 5] = ["completed", "timeout", "overloaded", "unhealthy", "aborted"];

/// One source's call metrics, resolved once so that a call costs two atomic adds.
pub struct SourceMetrics {
    list: CallMetrics,
    detail: CallMetrics,
}

struct CallMetrics {
    seconds: prometheus::Histogram,
    outcomes: [prometheus::IntCounter; 5],
}

impl tributary_runtime::call::CallObserver for SourceMetrics {
    /// Counts one call named `what` (`list` or `detail`): its plugin time when it completed.
    fn call_ended(
        &self,
        what: &str,
        result: Result<std::time::Duration, &tributary_runtime::call::CallError>,
    ) {
        use tributary_runtime::call::FailureKind;
        let call = match what {
            "list" => &self.list,
            "detail" => &self.detail,
            // Named calls (`status@1`, say) are not counted per source.
            _ => return,
        };
        let outcome = match result {
            Ok(took) => {
                call.seconds.observe(took.as_secs_f64());
                0
            }
            Err(error) => match error.kind() {
                FailureKind::Timeout => 1,
                FailureKind::Overloaded => 2,
                FailureKind::Unhealthy => 3,
                _ => 4,
            },
        };
        call.outcomes[outcome].inc();
    }
}

/// Gives each new source of `generation` its call metrics (a source kept from an earlier
/// generation keeps the ones it has).
pub fn attach(metrics: &Metrics, generation: &Generation) {
    for source in &generation.ready {
        source
            .health
            .attach_observer(Box::new(metrics.for_source(&source.name)));
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes (then lets the scrapes under way
/// finish); `registry` gives the registry serving at the moment of each scrape.
pub async fn serve_metrics<R>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    R: Fn() -> Arc<Sources> + Clone + Send + Sync + 'static,
{
    use axum::{http::header::CONTENT_TYPE, routing::get};
    let scrape = move || {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        std::future::ready(([(CONTENT_TYPE, content_type)], metrics.render(&registry())))
    };
    let router = axum::Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async {
            let not_found = "not found: metrics are at /metrics\n";
            (http::StatusCode::NOT_FOUND, not_found)
        });
    // Never fails: a failed accept is logged and tried again (see axum::serve).
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
}

/// Counts every request that passes through it; see the module docs.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let protocol = protocol_label(&request, method);
        let started = Instant::now();
        let future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = future.await?;
            let (parts, body) = response.into_parts();
            // An error answered at once carries its status in the headers ("trailers only").
            // A REST answer carries its gRPC code as a response extension (see crate::status::json).
            let code = parts
                .headers
                .get("grpc-status")
                .and_then(parse_code)
                .or_else(|| parts.extensions.get::<tonic::Code>().map(|c| *c as usize));
            Ok(http::Response::from_parts(
                parts,
                CountedBody {
                    inner: body,
                    pending: Some(Pending {
                        metrics,
                        protocol,
                        method,
                        started,
                        code,
                        bytes: 0,
                    }),
                },
            ))
        })
    }
}

/// The `method` label of a request path: a gRPC method, a REST route (`GET /v1/packages/{source}/{identifier}`
/// for every detail path), or `other`.
fn method_label(path: &str) -> &'static str {
    if let Some(m) = METHODS.iter().copied().find(|m| *m == path) {
        return m;
    }
    if let Some(m) = REST_ROUTES.iter().copied().find(|m| m[4..] == *path) {
        return m;
    }
    if path.starts_with("/v1/packages/") {
        return "GET /v1/packages/{source}/{identifier}";
    }
    "other"
}

/// The `protocol` label: `grpc` and `grpc-web` by content type, `rest` for the REST routes, `http`
/// for everything else (the web page, the probes).
fn protocol_label<B>(request: &http::Request<B>, method: &'static str) -> &'static str {
    match crate::status::Framing::of(request.headers()) {
        crate::status::Framing::GrpcWeb => "grpc-web",
        crate::status::Framing::Grpc => "grpc",
        crate::status::Framing::Http if method.starts_with("GET /") => "rest",
        crate::status::Framing::Http => "http",
    }
}

fn parse_code(value: &http::HeaderValue) -> Option<usize> {
    value.to_str().ok()?.parse().ok()
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it ends, or when it is dropped unfinished (the
    /// client went away: CANCELLED).
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

struct Pending {
    metrics: Arc<Metrics>,
    protocol: &'static str,
    method: &'static str,
    started: Instant,
    code: Option<usize>,
    bytes: usize,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.metrics.record(
            self.protocol,
            self.method,
            self.code.unwrap_or(1),
            self.started,
            self.bytes,
        );
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(pending) = this.pending.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        pending.bytes += data.len();
                    } else if let Some(trailers) = frame.trailers_ref() {
                        if let Some(code) = trailers.get("grpc-status").and_then(parse_code) {
                            pending.code = Some(code);
                        }
                    }
                }
            }
            // The end: dropping the record counts the request.
            Poll::Ready(None) => drop(this.pending.take()),
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = this.pending.as_mut() {
                    pending.code.get_or_insert(2);
                }
                drop(this.pending.take());
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
