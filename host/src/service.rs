//! The gRPC services: request validation, page tokens, calls into the engine, and the one place where
//! host and plugin errors become gRPC status codes.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RString, RVec};
use tonic::{Request, Response, Status};
use tributary_plugin_api::{Detail, Filter, PluginError, Query, Sort};
use tributary_proto::{
    encoded::{self, Encoded},
    v1::{self as pb, plugins_service_server::PluginsService},
};

use tributary_runtime::{
    call::{self, Budget, SourceHandle as Source},
    config::{Config, Overrides},
    merge::{
        self as engine,
        facets::{self, Counted},
        token::{self, MergeKey, PageToken, Primary},
        Failure, FailureKind, MergeOptions, PageRequest,
    },
    registry::{Generation, Registry, SourceState},
};

use crate::{
    auth::Identity,
    page::{strings, Page},
    reload::ReloadSummary,
    status::{failure_status, fault_code, unavailable_with_resume},
};

pub use crate::{page::summary_pb, status::resume_info};

/// Page size used when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Larger page sizes are coerced down to this.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest `filter.query`, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most values in one repeated filter field.
pub const MAX_FILTER_VALUES: usize = 100;
/// Longest single filter value or identifier, in bytes.
pub const MAX_VALUE_BYTES: usize = tributary_plugin_api::contract::MAX_KEY_BYTES;

/// How many requests run at once and for how long: the service's admission, apart from how the
/// merge treats sources ([`MergeOptions`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most list and detail requests running at once (`max_requests_in_flight`); one more waits
    /// up to `request_queue_wait` for a slot, then fails with RESOURCE_EXHAUSTED.
    pub max_requests_in_flight: usize,
    pub request_queue_wait: Duration,
    /// The longest a list or detail request runs, whatever the client's deadline: a page is then
    /// served with what the sources gave so far, and a token to go on.
    pub request_timeout: Duration,
    /// The most list requests with a query running at once (`max_searches_in_flight`).
    pub max_searches_in_flight: usize,
}

impl Limits {
    /// The limits a configuration asks for.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_requests_in_flight: config.max_requests_in_flight,
            request_queue_wait: config.request_queue_wait,
            request_timeout: config.request_timeout,
            max_searches_in_flight: config.max_searches_in_flight,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

/// The state behind both services.
///
/// What is served (libraries, sources) is one [`Generation`], swapped whole by a reload (see
/// [`crate::reload`]): a request takes the generation current when it starts and finishes on its
/// sources; the next request uses the newest.
#[derive(Clone)]
pub struct Catalog {
    pub(crate) current: Arc<arc_swap::ArcSwap<Generation>>,
    pub(crate) options: MergeOptions,
    limits: Limits,
    metrics: Arc<crate::metrics::Metrics>,
    reloader: crate::reload::Reloader,
    /// Slots for list and detail requests running at once (`max_requests_in_flight`).
    requests: Arc<tokio::sync::Semaphore>,
    /// Searches (list requests with a query) running at once; see `max_searches_in_flight`.
    searches: Arc<tokio::sync::Semaphore>,
}

impl Catalog {
    /// A catalog over `registry` as `config` asks.
    pub fn from_config(registry: Arc<Registry>, config: &Config) -> Catalog {
        Catalog::new(
            registry,
            MergeOptions::from_config(config),
            Limits::from_config(config),
        )
    }

    pub fn new(registry: Arc<Registry>, options: MergeOptions, limits: Limits) -> Catalog {
        let generation = Generation::new(1, registry);
        let metrics = crate::metrics::Metrics::new();
        crate::metrics::attach(&metrics, &generation);
        let current = Arc::new(arc_swap::ArcSwap::from_pointee(generation));
        let requests = Arc::new(tokio::sync::Semaphore::new(limits.max_requests_in_flight));
        let searches = Arc::new(tokio::sync::Semaphore::new(
            limits.max_searches_in_flight.max(1),
        ));
        Catalog {
            reloader: crate::reload::Reloader::new(current.clone(), metrics.clone()),
            current,
            options,
            limits,
            metrics,
            requests,
            searches,
        }
    }

    /// A slot for one list or detail request: at most `max_requests_in_flight` run at once, and one
    /// more waits at most `request_queue_wait` (and never past its own deadline) for a slot.
    async fn admit(
        &self,
        deadline: Option<Instant>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.wait_for_slot(&self.requests, deadline, || {
            format!(
                "the server is at its limit of {} requests in flight (max_requests_in_flight); retry later",
                self.limits.max_requests_in_flight
            )
        })
        .await
    }

    /// A search's slot, beside its request slot: at most `max_searches_in_flight` list requests
    /// with a query run at once, so that many clients searching (a web page sends a query per
    /// keystroke) leave CPU for everything else; one more waits like a request does.
    async fn admit_search(
        &self,
        deadline: Option<Instant>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.wait_for_slot(&self.searches, deadline, || {
            format!(
                "the server is at its limit of {} searches in flight (max_searches_in_flight); retry later",
                self.limits.max_searches_in_flight
            )
        })
        .await
    }

    /// A permit of `slots` at once, or after waiting at most `request_queue_wait` (and never past
    /// `deadline`); RESOURCE_EXHAUSTED with `message` otherwise.
    async fn wait_for_slot(
        &self,
        slots: &Arc<tokio::sync::Semaphore>,
        deadline: Option<Instant>,
        message: impl FnOnce() -> String,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let mut until = Instant::now() + self.limits.request_queue_wait;
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        match tokio::time::timeout_at(until.into(), slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Status::resource_exhausted(message())),
        }
    }

    /// The registry of the generation serving now.
    pub fn registry(&self) -> Arc<Registry> {
        self.current.load().registry.clone()
    }

    /// The generation serving now.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// This server's metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// What reloads this catalog's sources (the Reload RPC, SIGHUP, the watcher).
    pub fn reloader(&self) -> &crate::reload::Reloader {
        &self.reloader
    }

    /// Lets this catalog reload from `config_path` (see [`crate::reload::Reloader::enable`]).
    pub fn enable_reload(&self, config_path: PathBuf, overrides: Overrides, running: &Config) {
        self.reloader.enable(config_path, overrides, running);
    }

    /// Reloads now (see [`crate::reload::Reloader::reload_now`]).
    pub async fn reload_now(
        &self,
        trigger: &str,
    ) -> Result<ReloadSummary, crate::reload::ReloadError> {
        self.reloader.reload_now(trigger).await
    }
}

/// A validated request filter.
struct ValidFilter {
    ffi: Filter,
    sources: Vec<String>,
    fingerprint: [u8; 8],
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

fn check_values(field: &str, values: &[String]) -> Result<(), Status> {
    if values.len() > MAX_FILTER_VALUES {
        return Err(invalid(format!(
            "{field} has {} values, at most {MAX_FILTER_VALUES} are allowed",
            values.len()
        )));
    }
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| v.len() > MAX_VALUE_BYTES)
    {
        return Err(invalid(format!(
            "{field}[{i}] is {} bytes long, at most {MAX_VALUE_BYTES} are allowed",
            v.len()
        )));
    }
    Ok(())
}

fn validate_filter(
    filter: Option<pb::FilterOptions>,
    caller: Option<&Identity>,
) -> Result<ValidFilter, Status> {
    let mut f = filter.unwrap_or_default();
    let query_chars = f.query.chars().count();
    if query_chars > MAX_QUERY_CHARS {
        return Err(invalid(format!(
            "filter.query is {query_chars} characters long, at most {MAX_QUERY_CHARS} are allowed"
        )));
    }
    check_values("filter.categories", &f.categories)?;
    check_values("filter.repositories", &f.repositories)?;
    check_values("filter.sources", &f.sources)?;
    // A caller limited to some sources lists only those; the view is part of the fingerprint, so a
    // token issued for another view is refused.
    if let Some(allowed) = caller.and_then(|c| c.sources.as_ref()) {
        if f.sources.is_empty() {
            f.sources = allowed.iter().cloned().collect();
        } else if let Some(s) = f.sources.iter().find(|s| !allowed.contains(*s)) {
            let known: Vec<&str> = allowed.iter().map(String::as_str).collect();
            return Err(invalid(format!(
                "filter.sources names unknown source {s:?} (known: {})",
                known.join(", ")
            )));
        }
    }
    let query = f.query.to_lowercase();
    Query::parse(&query).map_err(|e| invalid(format!("filter.{e}")))?;
    let fingerprint = token::filter_fingerprint_with(
        &query,
        &f.categories,
        &f.repositories,
        &f.sources,
        f.include_deprecated,
    );
    let strings = |v: Vec<String>| v.into_iter().map(RString::from).collect::<RVec<_>>();
    Ok(ValidFilter {
        ffi: Filter {
            query: RString::from(query),
            categories: strings(f.categories),
            repositories: strings(f.repositories),
            include_deprecated: f.include_deprecated,
        },
        sources: f.sources,
        fingerprint,
    })
}

/// The order a request asks for. Relevance needs a query: without one every score is 0.
fn requested_sort(sort: i32, filter: &ValidFilter) -> Result<Sort, Status> {
    let sort = match pb::SortOrder::try_from(sort) {
        Ok(pb::SortOrder::Unspecified | pb::SortOrder::Name) => Sort::Name,
        Ok(pb::SortOrder::Relevance) => Sort::Relevance,
        Ok(pb::SortOrder::Updated) => Sort::Updated,
        Err(_) => {
            return Err(invalid(format!(
                "sort has no value {sort} (known: SORT_ORDER_NAME, SORT_ORDER_RELEVANCE, \
                 SORT_ORDER_UPDATED)"
            )))
        }
    };
    if sort == Sort::Relevance && filter.ffi.query.trim().is_empty() {
        return Err(invalid(
            "sort SORT_ORDER_RELEVANCE needs a filter.query: without one there is nothing to rank by",
        ));
    }
    Ok(sort)
}

/// The response's counts.
fn facets_pb(counted: Counted, startup_failures: &[Failure]) -> pb::Facets {
    let counts = |map: std::collections::BTreeMap<String, u64>| {
        map.into_iter()
            .map(|(value, count)| pb::FacetCount { value, count })
            .collect()
    };
    let mut missing: Vec<pb::SourceFailure> = startup_failures
        .iter()
        .chain(&counted.missing)
        .map(failure_pb)
        .collect();
    missing.sort_by(|a, b| a.source.cmp(&b.source));
    pb::Facets {
        sources: counts(counted.sources),
        repositories: counts(counted.facets.repositories),
        categories: counts(counted.facets.categories),
        deprecated: counted.facets.deprecated,
        complete: missing.is_empty(),
        missing_sources: missing,
    }
}

/// The page size to use: 0 is the default, above the maximum is coerced, negative is an error.
pub fn effective_page_size(requested: i32) -> Result<usize, Status> {
    match requested {
        n if n < 0 => Err(invalid(format!("page_size must not be negative (got {n})"))),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// When a request must be answered: the client's deadline from the `grpc-timeout` header (less a
/// margin to send the answer in), and at the latest `request_timeout` from now.
/// The `grpc-timeout` header value as a duration (`"100m"` is 100 ms), if valid.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn request_deadline<T>(request: &Request<T>, request_timeout: Duration) -> Option<Instant> {
    let bound = call::deadline_for(request_timeout);
    let client = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(call::deadline_for);
    Some(client.map_or(bound, |client| client.min(bound)))
}

fn failure_pb(f: &Failure) -> pb::SourceFailure {
    pb::SourceFailure {
        source: f.source.to_string(),
        plugin: f.plugin.to_string(),
        kind: f.kind.name().to_owned(),
        reason: f.message.clone(),
    }
}

fn startup_failure(name: &str, plugin: &str, error: &PluginError) -> Failure {
    Failure {
        source: name.into(),
        plugin: plugin.into(),
        kind: FailureKind::Plugin(error.kind),
        message: format!("source failed at start: {}", error.message),
    }
}

fn detail_pb(source: &str, d: Detail) -> pb::AvailablePackageDetail {
    let deprecated = d.summary.deprecated;
    pb::AvailablePackageDetail {
        summary: Some(summary_pb(source, d.summary)),
        versions: d
            .versions
            .into_iter()
            .map(|v| pb::PackageVersion {
                version: v.version.into_string(),
                app_version: v.app_version.into_string(),
                created: v.created.into_string(),
                digest: v.digest.into_string(),
            })
            .collect(),
        home_url: d.home_url.into_string(),
        source_urls: strings(d.source_urls),
        maintainers: d
            .maintainers
            .into_iter()
            .map(|m| pb::Maintainer {
                name: m.name.into_string(),
                email: m.email.into_string(),
                url: m.url.into_string(),
            })
            .collect(),
        readme: d.readme.into_string(),
        deprecated,
        keywords: strings(d.keywords),
        extensions: d
            .extensions
            .into_iter()
            .map(|e| (e.key.into_string(), e.value.into_string()))
            .collect(),
    }
}

impl Catalog {
    /// The sources a filter selects, ready ones to merge and failed ones to report.
    fn select_sources(&self, names: &[String]) -> Result<(Vec<Arc<Source>>, Vec<Failure>), Status> {
        let mut failures = Vec::new();
        let generation = self.current.load();
        if names.is_empty() {
            for s in &generation.registry.sources {
                if let Err(e) = &s.state {
                    failures.push(startup_failure(&s.name, &s.plugin, e));
                }
            }
            return Ok((generation.ready.clone(), failures));
        }
        let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut ready = Vec::with_capacity(wanted.len());
        for name in wanted {
            let entry = generation.registry.source(name).ok_or_else(|| {
                let known: Vec<&str> = generation
                    .registry
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                invalid(format!(
                    "filter.sources names unknown source {name:?} (known: {})",
                    known.join(", ")
                ))
            })?;
            match &entry.state {
                Ok(source) => ready.push(source.clone()),
                Err(e) => failures.push(startup_failure(&entry.name, &entry.plugin, e)),
            }
        }
        Ok((ready, failures))
    }
}

/// The service as the server runs it: pages are sent as the encoding [`Page::encode`] writes from
/// the plugins' summaries.
#[tonic::async_trait]
impl encoded::packages_service_server::PackagesService for Catalog {
    async fn list_available_package_summaries(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<Encoded<pb::ListAvailablePackageSummariesResponse>>, Status> {
        self.list(request).await
    }

    type StreamAvailablePackageSummariesStream =
        PageStream<Encoded<pb::ListAvailablePackageSummariesResponse>>;

    async fn stream_available_package_summaries(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<Self::StreamAvailablePackageSummariesStream>, Status> {
        self.stream(request).await
    }

    async fn get_available_package_detail(
        &self,
        request: Request<pb::GetAvailablePackageDetailRequest>,
    ) -> Result<Response<pb::GetAvailablePackageDetailResponse>, Status> {
        self.get_detail(request).await
    }
}

/// The same service answering with the generated messages (every string of a page copied into
/// them), for code that drives the service in process; REST's detail calls come through here too.
#[tonic::async_trait]
impl pb::packages_service_server::PackagesService for Catalog {
    async fn list_available_package_summaries(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<pb::ListAvailablePackageSummariesResponse>, Status> {
        self.list(request).await
    }

    type StreamAvailablePackageSummariesStream =
        PageStream<pb::ListAvailablePackageSummariesResponse>;

    async fn stream_available_package_summaries(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<Self::StreamAvailablePackageSummariesStream>, Status> {
        self.stream(request).await
    }

    async fn get_available_package_detail(
        &self,
        request: Request<pb::GetAvailablePackageDetailRequest>,
    ) -> Result<Response<pb::GetAvailablePackageDetailResponse>, Status> {
        self.get_detail(request).await
    }
}

impl Catalog {
    /// One page, in the form `M` the caller sends.
    pub(crate) async fn list<M: From<Page>>(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<M>, Status> {
        let deadline = request_deadline(&request, self.limits.request_timeout);
        let slot = self.admit(deadline).await?;
        let page = self.list_page(request).await?;
        let mut response = Response::new(M::from(page));
        hold_until_sent(&mut response, slot);
        Ok(response)
    }

    /// Page after page through [`Catalog::list_page`]: a page is made only when the connection asks
    /// for the next data, so a client that stops reading (HTTP/2 flow control) stops the plugin
    /// calls, and at most one page waits in the server. The whole stream holds one slot of
    /// `max_requests_in_flight`.
    async fn stream<M: From<Page>>(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Response<PageStream<M>>, Status> {
        let deadline = request_deadline(&request, self.limits.request_timeout);
        let slot = self.admit(deadline).await?;
        let (metadata, extensions, message) = request.into_parts();
        // The first page answers for the request: a bad filter or token is the call's own status.
        let first = self
            .list_page(Request::from_parts(
                metadata.clone(),
                extensions.clone(),
                message.clone(),
            ))
            .await?;
        let mut response = Response::new(PageStream {
            catalog: self.clone(),
            metadata,
            extensions,
            message,
            ready: Some(first),
            making: None,
            sent: std::marker::PhantomData,
        });
        hold_until_sent(&mut response, slot);
        Ok(response)
    }

    async fn get_detail(
        &self,
        request: Request<pb::GetAvailablePackageDetailRequest>,
    ) -> Result<Response<pb::GetAvailablePackageDetailResponse>, Status> {
        let budget = Budget {
            source_timeout: self.options.source_timeout,
            deadline: request_deadline(&request, self.limits.request_timeout),
        };
        let slot = self.admit(budget.deadline).await?;
        let mut response = self.detail(request, budget).await?;
        hold_until_sent(&mut response, slot);
        Ok(response)
    }
}

/// Keeps `slot` taken until the response has been sent: the server's network layer
/// ([`crate::idle`]) moves it from the extensions into the response body.
fn hold_until_sent<T>(response: &mut Response<T>, slot: tokio::sync::OwnedSemaphorePermit) {
    response
        .extensions_mut()
        .insert(crate::idle::ResponseSlot(Arc::new(slot)));
}

type PageFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Page, Status>> + Send>>;

/// The pages of `StreamAvailablePackageSummaries`, each made when the previous one has been taken,
/// sent as `M`.
pub struct PageStream<M> {
    catalog: Catalog,
    metadata: tonic::metadata::MetadataMap,
    extensions: tonic::Extensions,
    message: pb::ListAvailablePackageSummariesRequest,
    /// A page made and not yet taken.
    ready: Option<Page>,
    /// The page being made.
    making: Option<PageFuture>,
    sent: std::marker::PhantomData<fn() -> M>,
}

impl<M: From<Page>> tokio_stream::Stream for PageStream<M> {
    type Item = Result<M, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Some(page) = self.ready.take() {
            // The next page starts after this one; none after the last. Counts come with the
            // first page only: they are the listing's, not a page's.
            self.message.page_token = page.next_page_token.clone();
            self.message.include_facets = false;
            return Poll::Ready(Some(Ok(M::from(page))));
        }
        if self.making.is_none() {
            if self.message.page_token.is_empty() {
                return Poll::Ready(None);
            }
            let catalog = self.catalog.clone();
            let request = Request::from_parts(
                self.metadata.clone(),
                self.extensions.clone(),
                self.message.clone(),
            );
            self.making = Some(Box::pin(async move { catalog.list_page(request).await }));
        }
        let made = match self.making.as_mut() {
            Some(making) => std::task::ready!(making.as_mut().poll(cx)),
            None => return Poll::Ready(None),
        };
        self.making = None;
        match made {
            Ok(page) => {
                self.message.page_token = page.next_page_token.clone();
                Poll::Ready(Some(Ok(M::from(page))))
            }
            Err(status) => {
                // Nothing after an error.
                self.message.page_token.clear();
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

impl Catalog {
    /// One page of a list request whose slot is already taken.
    async fn list_page(
        &self,
        request: Request<pb::ListAvailablePackageSummariesRequest>,
    ) -> Result<Page, Status> {
        let deadline = request_deadline(&request, self.limits.request_timeout);
        let caller = caller(&request);
        let request = request.into_inner();
        let page_size = effective_page_size(request.page_size)?;
        let filter = validate_filter(request.filter, caller.as_deref())?;
        let _search = if filter.ffi.query.is_empty() {
            None
        } else {
            Some(self.admit_search(deadline).await?)
        };
        let sort = requested_sort(request.sort, &filter)?;
        let (order, after) = if request.page_token.is_empty() {
            (Primary::start(sort), None)
        } else {
            let decoded = PageToken::decode_for(
                &request.page_token,
                filter.fingerprint,
                &Primary::start(sort),
            )
            .map_err(|e| invalid(e.to_string()))?;
            (decoded.primary, Some(decoded.last))
        };
        let (sources, startup_failures) = self.select_sources(&filter.sources)?;
        if self.options.fail_fast {
            if let Some(f) = startup_failures.first() {
                return Err(failure_status(f));
            }
        }

        let resume_from = after.clone().map(|last| (order.clone(), last));
        let counting = async {
            if !request.include_facets {
                return None;
            }
            let compiled = filter.ffi.compile().ok()?;
            let budget = Budget {
                source_timeout: self.options.source_timeout,
                deadline,
            };
            Some(facets::count(&sources, &filter.ffi, &compiled, budget).await)
        };
        let paging = engine::merge_page(
            &sources,
            PageRequest {
                page_size,
                after,
                order,
                filter: filter.ffi.clone(),
                deadline,
            },
            &self.options,
        );
        let (page, counted) = tokio::join!(paging, counting);
        let page = page.map_err(|f| failure_status(&f))?;
        tracing::debug!(
            items = page.items.len(),
            calls = page.stats.calls,
            fetched = page.stats.fetched,
            "page served"
        );

        // Every selected source failed: that is not an empty catalog.
        let none_answered = (sources.is_empty() && !startup_failures.is_empty())
            || (!sources.is_empty() && page.failures.len() == sources.len());
        // An empty page on which a source failed resumes where it started (the empty key is before
        // every item: identifiers are never empty).
        let next_page_token = match (page.more, page.items.last()) {
            (false, _) => String::new(),
            (true, last) => {
                let (primary, last) = match last {
                    Some(last) => (
                        last.primary.clone(),
                        MergeKey {
                            name: last.summary.name.to_string(),
                            source: sources[last.source].name.to_string(),
                            identifier: last.summary.identifier.to_string(),
                        },
                    ),
                    // Before every item of the order: the best score, the newest date.
                    None => resume_from.unwrap_or_else(|| {
                        (
                            match sort {
                                Sort::Name => Primary::Name,
                                Sort::Relevance => Primary::Relevance(u32::MAX),
                                Sort::Updated => {
                                    Primary::Updated(Some("9999-12-31T23:59:59Z".to_owned()))
                                }
                            },
                            MergeKey {
                                name: String::new(),
                                source: String::new(),
                                identifier: String::new(),
                            },
                        )
                    }),
                };
                PageToken {
                    filter_fingerprint: filter.fingerprint,
                    primary,
                    last,
                }
                .encode()
            }
        };
        // No item, and a source failed: every source that still had items failed (the others are
        // exhausted). An empty page with a token would have clients retry at once, for ever; the
        // answer is UNAVAILABLE, with the token to resume from later.
        if none_answered || (page.items.is_empty() && !page.failures.is_empty()) {
            let mut all: Vec<&Failure> = startup_failures.iter().chain(&page.failures).collect();
            all.sort_by(|a, b| a.source.cmp(&b.source));
            let message = format!(
                "no source could answer: {}",
                all.iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let info = pb::ResumeInfo {
                next_page_token,
                failed_sources: all.iter().map(|f| failure_pb(f)).collect(),
            };
            return Err(unavailable_with_resume(message, info));
        }
        let mut failed_sources: Vec<pb::SourceFailure> =
            startup_failures.iter().map(failure_pb).collect();
        failed_sources.extend(page.failures.iter().map(failure_pb));
        failed_sources.sort_by(|a, b| a.source.cmp(&b.source));
        self.metrics.record_page(
            page.items.len(),
            failed_sources
                .iter()
                .map(|f| (f.source.as_str(), f.kind.as_str())),
        );

        let (total_size, facets) = match counted {
            Some(counted) => (
                Some(counted.facets.total),
                Some(facets_pb(counted, &startup_failures)),
            ),
            None => (None, None),
        };
        Ok(Page {
            sources: sources.iter().map(|s| s.name.clone()).collect(),
            items: page.items,
            next_page_token,
            failed_sources,
            total_size,
            facets,
        })
    }

    /// The answer to a detail request whose slot is already taken.
    async fn detail(
        &self,
        request: Request<pb::GetAvailablePackageDetailRequest>,
        budget: Budget,
    ) -> Result<Response<pb::GetAvailablePackageDetailResponse>, Status> {
        let caller = caller(&request);
        let reference = request
            .into_inner()
            .available_package_ref
            .ok_or_else(|| invalid("available_package_ref is required"))?;
        if reference.identifier.is_empty() {
            return Err(invalid(
                "available_package_ref.identifier must not be empty",
            ));
        }
        if reference.identifier.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "available_package_ref.identifier is longer than {MAX_VALUE_BYTES} bytes"
            )));
        }
        if reference.source.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "available_package_ref.source is {} bytes long, at most {MAX_VALUE_BYTES} are allowed",
                reference.source.len()
            )));
        }
        // A source the caller may not see is answered as one that does not exist.
        let visible = caller.as_ref().is_none_or(|c| c.allows(&reference.source));
        let registry = self.registry();
        let entry = visible
            .then(|| registry.source(&reference.source))
            .flatten()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no source named {:?} (available_package_ref.source)",
                    reference.source
                ))
            })?;
        let source = match &entry.state {
            Ok(source) => source.clone(),
            Err(e) => {
                return Err(failure_status(&startup_failure(
                    &entry.name,
                    &entry.plugin,
                    e,
                )));
            }
        };
        let detail = call::detail(&source, reference.identifier.clone(), budget)
            .await
            .map_err(|fault| {
                Status::new(
                    fault_code(&fault),
                    format!(
                        "source {:?} (plugin {:?}), identifier {:?}: {fault}",
                        source.name, source.plugin, reference.identifier
                    ),
                )
            })?;
        Ok(Response::new(pb::GetAvailablePackageDetailResponse {
            available_package_detail: Some(detail_pb(&source.name, detail)),
        }))
    }
}

#[tonic::async_trait]
impl PluginsService for Catalog {
    async fn list_plugins(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let caller = caller(&request);
        let generation = self.generation();
        let mut listing = list_plugins(&generation.registry);
        self.reloader.facts(&mut listing, generation.number);
        if let Some(caller) = &caller {
            restrict_listing(&mut listing, caller);
        }
        self.fill_status(&mut listing, &generation.registry).await;
        Ok(Response::new(listing))
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        if let Some(caller) = caller(&request) {
            if !caller.admin {
                return Err(Status::permission_denied(format!(
                    "{:?} may not reload the server: only an admin identity may",
                    caller.name
                )));
            }
        }
        self.reload_now("Reload RPC")
            .await
            .map(|summary| Response::new(summary.into()))
            // A refused reload: the running generation keeps serving.
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }
}

/// How long `ListPlugins` waits for one source's `status@1` answer.
const STATUS_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);
/// The largest `status@1` answer shown.
const MAX_STATUS_BYTES: usize = 64 * 1024;

impl Catalog {
    /// Asks every listed, ready source whose plugin declares `status@1` for its state, concurrently,
    /// each within [`STATUS_BUDGET`].
    async fn fill_status(&self, listing: &mut pb::ListPluginsResponse, registry: &Registry) {
        use tributary_plugin_api::capabilities::{declares, STATUS};
        let asks = listing.sources.iter().enumerate().filter_map(|(i, info)| {
            let source = registry.source(&info.name)?.state.as_ref().ok()?.clone();
            let declared = registry.files.iter().any(|f| {
                f.outcome.as_ref().is_ok_and(|p| {
                    p.meta.name == info.plugin && declares(&p.meta.capabilities, STATUS, 1)
                })
            });
            // The answer waits at most STATUS_BUDGET; the source is charged only if the call
            // overruns its own timeout, as any call.
            let budget = Budget {
                source_timeout: self.options.source_timeout,
                deadline: Some(Instant::now() + STATUS_BUDGET),
            };
            declared.then_some(async move {
                let answer = call::named(&source, STATUS, 1, String::new(), budget).await;
                let text = match answer {
                    Ok(text) => text,
                    _ => return (i, String::new()),
                };
                let is_object = text.len() <= MAX_STATUS_BYTES
                    && serde_json::from_str::<serde_json::Value>(&text)
                        .is_ok_and(|v| v.is_object());
                (i, if is_object { text } else { String::new() })
            })
        });
        let mut set = tokio::task::JoinSet::new();
        for ask in asks {
            set.spawn(ask);
        }
        while let Some(answer) = set.join_next().await {
            if let Ok((i, text)) = answer {
                listing.sources[i].status_json = text;
            }
        }
    }
}

/// The caller's identity, when the server authenticates (see [`crate::auth`]).
fn caller<T>(request: &Request<T>) -> Option<Arc<Identity>> {
    request.extensions().get::<Arc<Identity>>().cloned()
}

/// What a caller limited to some sources sees of `ListPlugins`: those sources, and the libraries that
/// serve them. Only admins see where things are and why a reload failed (the reason can quote any
/// source's configuration): others get no plugin directory, each library's file name only, and
/// that the last reload failed.
fn restrict_listing(listing: &mut pb::ListPluginsResponse, caller: &Identity) {
    if !caller.admin {
        listing.plugin_dir.clear();
        for plugin in &mut listing.plugins {
            if let Some(name) = std::path::Path::new(&plugin.path).file_name() {
                plugin.path = name.to_string_lossy().into_owned();
            }
        }
        if !listing.last_reload_error.is_empty() {
            listing.last_reload_error =
                "the last reload failed (an admin identity sees why)".to_owned();
        }
    }
    if caller.sources.is_none() {
        return;
    }
    listing.sources.retain(|s| caller.allows(&s.name));
    let plugins: std::collections::BTreeSet<String> =
        listing.sources.iter().map(|s| s.plugin.clone()).collect();
    listing
        .plugins
        .retain(|p| !p.name.is_empty() && plugins.contains(&p.name));
}

/// The `ListPlugins` answer; also what `tributary plugins` prints.
pub fn list_plugins(registry: &Registry) -> pb::ListPluginsResponse {
    use pb::{plugin_info::Status as PStatus, source_info::Status as SStatus};
    let plugins = registry
        .files
        .iter()
        .map(|f| {
            let meta = f.meta.clone();
            pb::PluginInfo {
                name: meta.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                version: meta.as_ref().map(|m| m.version.clone()).unwrap_or_default(),
                description: meta
                    .as_ref()
                    .map(|m| m.description.clone())
                    .unwrap_or_default(),
                path: f.path.display().to_string(),
                status: match f.outcome {
                    Ok(_) => PStatus::Loaded,
                    Err(_) => PStatus::Rejected,
                } as i32,
                reason: f
                    .outcome
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                rejection_kind: f
                    .outcome
                    .as_ref()
                    .err()
                    .map(|r| r.kind.name().to_owned())
                    .unwrap_or_default(),
                sha256: f.sha256.clone(),
                idle: f.outcome.is_ok()
                    && !registry
                        .sources
                        .iter()
                        .any(|s| meta.as_ref().is_some_and(|m| m.name == s.plugin)),
                interface_version: meta
                    .as_ref()
                    .map(|m| format!("{}.{}", m.interface.0, m.interface.1))
                    .unwrap_or_default(),
                capabilities: meta.map(|m| m.capabilities).unwrap_or_default(),
                loaded_at_unix: crate::reload::unix_seconds(f.loaded_at),
            }
        })
        .collect();
    let sources = registry
        .sources
        .iter()
        .map(|s| {
            let history = s
                .state
                .as_ref()
                .map(|source| source.health.history())
                .unwrap_or_default();
            let runner = s
                .state
                .as_ref()
                .ok()
                .and_then(|source| source.runner.as_ref())
                .map(|r| r.status());
            let (status, reason) = match s.state_now() {
                SourceState::Failed(reason) => (SStatus::Failed, reason),
                SourceState::Starting { pid, for_so_far } => (
                    SStatus::Starting,
                    format!(
                        "starting: its runner{} is loading the library and building the source ({} ms so far)",
                        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        for_so_far.as_millis()
                    ),
                ),
                SourceState::Unhealthy(condition) => (SStatus::Unhealthy, condition.to_string()),
                SourceState::Failing { consecutive } => (
                    SStatus::Failing,
                    format!("failing: its last {consecutive} calls failed"),
                ),
                SourceState::Ready => (SStatus::Ready, String::new()),
            };
            let calls_in_flight = match &s.state {
                Ok(source) if status != SStatus::Failed => source.health.in_flight() as u32,
                _ => 0,
            };
            let (last_failure, last_failure_unix) = match &history.last_failure {
                Some((at, kind, message)) => (format!("{kind}: {message}"), crate::reload::unix_seconds(*at)),
                None => (String::new(), 0),
            };
            pb::SourceInfo {
                name: s.name.clone(),
                plugin: s.plugin.clone(),
                status: status as i32,
                reason,
                is_default: false,
                calls_in_flight,
                status_json: String::new(),
                isolated: runner.is_some(),
                runner_pid: runner.as_ref().and_then(|r| r.pid).unwrap_or(0),
                runner_restarts: runner.as_ref().map_or(0, |r| r.restarts),
                runner_last_exit: runner.and_then(|r| r.last_exit).unwrap_or_default(),
                failures: history.failures,
                consecutive_failures: history.consecutive_failures,
                last_failure,
                last_failure_unix,
                last_success_unix: history.last_success.map_or(0, crate::reload::unix_seconds),
                items_dropped: history.items_dropped,
                last_dropped: history.last_dropped.clone().unwrap_or_default(),
                threads: s
                    .state
                    .as_ref()
                    .map_or(0, |source| source.threads.threads() as u32),
            }
        })
        .collect();
    pb::ListPluginsResponse {
        plugins,
        sources,
        plugin_dir: registry.plugin_dir.display().to_string(),
        generation: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(effective_page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(effective_page_size(7).unwrap(), 7);
        assert_eq!(effective_page_size(1000).unwrap(), 1000);
        assert_eq!(effective_page_size(i32::MAX).unwrap(), MAX_PAGE_SIZE);
        let err = effective_page_size(-1).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("page_size"));
    }

    #[test]
    fn filter_limits_name_the_field() {
        let too_long = pb::FilterOptions {
            query: "x".repeat(MAX_QUERY_CHARS + 1),
            ..Default::default()
        };
        let e = validate_filter(Some(too_long), None).err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("filter.query"), "{}", e.message());

        let many = pb::FilterOptions {
            categories: vec!["c".into(); MAX_FILTER_VALUES + 1],
            ..Default::default()
        };
        let e = validate_filter(Some(many), None).err().unwrap();
        assert!(
            e.message().starts_with("filter.categories"),
            "{}",
            e.message()
        );

        let big = pb::FilterOptions {
            repositories: vec!["ok".into(), "r".repeat(MAX_VALUE_BYTES + 1)],
            ..Default::default()
        };
        let e = validate_filter(Some(big), None).err().unwrap();
        assert!(
            e.message().starts_with("filter.repositories[1]"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn query_is_lowercased_and_fingerprint_ignores_case() {
        let a = validate_filter(
            Some(pb::FilterOptions {
                query: "ReDis".into(),
                ..Default::default()
            }),
            None,
        )
        .ok()
        .unwrap();
        let b = validate_filter(
            Some(pb::FilterOptions {
                query: "redis".into(),
                ..Default::default()
            }),
            None,
        )
        .ok()
        .unwrap();
        assert_eq!(a.ffi.query.as_str(), "redis");
        assert_eq!(a.fingerprint, b.fingerprint);
    }
}
