//! The merge engine: fan-out to one task per source, fan-in by a k-way merge, one page at a time.
//!
//! For each page, every selected source gets a tokio task. The task calls the source's `list` on a
//! thread of the source's own (the FFI call is synchronous; see [`crate::call::threads`]), checks the answer against the ordering contract, and
//! sends it as one batch down a bounded channel. It fetches again only when the merge asks, with a
//! demand saying how many items the page can still take, so a source is read no further than the page
//! needs: the first call asks for the source's even share of the page plus one look-ahead item (see
//! [`first_limit`]), a later call for what the page still lacks plus one. A later call starts one item
//! back, so that its answer must repeat the last item of the one before: a source whose order breaks
//! between two of its batches fails the page as a contract violation instead of skipping items (see
//! [`NextCall`]). A resumed listing's first call is checked to start strictly after its seek key.
//!
//! The merge keeps a binary heap of the sources ordered by their head items under
//! `(name, source, identifier)` and takes the smallest until the page is full. When the page is complete, or the request future is
//! dropped because the client went away, the channels close and the tasks end: no plugin call starts
//! after that (a call already running on a source thread finishes, and its result is discarded).
//!
//! Resuming is by key (see [`crate::merge::token`]): given the last key served, [`seek_for`] tells each
//! source where to continue, so a page is exact however the sources' data changed since the last one.

use std::{
    cmp::Ordering,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::{vec::IntoIter as RIntoIter, ROption, RResult, RString, RVec};
use tokio::{sync::mpsc, task::JoinSet};
use tributary_plugin_api::{
    contract, ErrorKind, Filter, ListRequest, PluginError, SeekKey, Summary,
};

pub mod token;

use crate::call::{self, in_place, Budget, CallError, SourceHandle as Source};
use token::MergeKey;

/// How the engine treats its sources.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The longest one plugin call may take.
    pub source_timeout: Duration,
    /// Fail the whole page on the first source failure instead of serving the others.
    pub fail_fast: bool,
    /// A page ends early (with more to come) before the next item would take its estimated encoded
    /// size ([`summary_bytes`]) past this. The first item is always served.
    pub max_page_bytes: usize,
    /// The most list and detail requests running at once (`max_requests_in_flight`); one more waits
    /// up to `request_queue_wait` for a slot, then fails with RESOURCE_EXHAUSTED.
    pub max_requests_in_flight: usize,
    pub request_queue_wait: Duration,
    /// The longest a list or detail request runs, whatever the client's deadline: a page is then
    /// served with what the sources gave so far, and a token to go on.
    pub request_timeout: Duration,
    /// The most list requests with a query running at once (`max_searches_in_flight`).
    pub max_searches_in_flight: usize,
    /// Call fast sources in place on the runtime's threads (`inline_calls`; see [`crate::call::in_place`]).
    pub inline_calls: bool,
}

impl EngineOptions {
    /// The options a configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> EngineOptions {
        EngineOptions {
            source_timeout: config.source_timeout,
            fail_fast: config.on_source_error == crate::config::OnSourceError::Fail,
            max_page_bytes: config.max_page_bytes,
            max_requests_in_flight: config.max_requests_in_flight,
            request_queue_wait: config.request_queue_wait,
            request_timeout: config.request_timeout,
            max_searches_in_flight: config.max_searches_in_flight,
            inline_calls: config.inline_calls,
        }
    }
}

/// An upper estimate of one summary's encoded size in a response, in bytes: every field's bytes,
/// plus a tag and a length prefix of up to 4 bytes each, plus the source name.
pub fn summary_bytes(summary: &Summary, source_name: &str) -> usize {
    const FIELD: usize = 6;
    let texts = [
        &summary.identifier,
        &summary.name,
        &summary.display_name,
        &summary.latest_version,
        &summary.latest_app_version,
        &summary.short_description,
        &summary.icon_url,
        &summary.repository,
    ];
    let text: usize = texts.iter().map(|t| t.len() + FIELD).sum();
    let categories: usize = summary.categories.iter().map(|c| c.len() + FIELD).sum();
    // The summary's own tag and length, and the reference (source and identifier again).
    text + categories + 2 * FIELD + source_name.len() + summary.identifier.len() + 2 * FIELD
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            source_timeout: crate::config::DEFAULT_SOURCE_TIMEOUT,
            fail_fast: false,
            max_page_bytes: crate::config::DEFAULT_MAX_PAGE_BYTES,
            max_requests_in_flight: crate::config::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            request_queue_wait: crate::config::DEFAULT_REQUEST_QUEUE_WAIT,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            max_searches_in_flight: crate::config::default_max_searches_in_flight(),
            inline_calls: true,
        }
    }
}

/// One page to produce.
pub struct PageRequest {
    /// At least 1.
    pub page_size: usize,
    /// The last key of the previous page; `None` for the first page.
    pub after: Option<MergeKey>,
    /// The filter, query already lower-cased.
    pub filter: Filter,
    /// When the client stops waiting: calls are cut short to answer before it.
    pub deadline: Option<Instant>,
}

/// One item of a page and the index of its source in the slice given to [`merge_page`].
pub struct Item {
    pub source: usize,
    pub summary: Summary,
}

/// How a source failed during a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an error of this kind (a caught panic included).
    Plugin(ErrorKind),
    /// A call took longer than the source timeout or the request's deadline.
    Timeout,
    /// The source is backing off after timeouts; no call was made.
    Unhealthy,
    /// The source has its maximum of calls in flight; no call was made.
    Overloaded,
    /// The answer broke the listing contract (order, seek, size, identifiers).
    Contract,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Plugin(kind) => kind.name(),
            FailureKind::Timeout => "timeout",
            FailureKind::Unhealthy => "unhealthy",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Contract => "contract_violation",
        }
    }
}

/// A source that could not contribute to a page.
#[derive(Debug, Clone)]
pub struct Failure {
    pub source: Arc<str>,
    pub plugin: Arc<str>,
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "source {:?} (plugin {:?}) {}: {}",
            self.source,
            self.plugin,
            self.kind.name(),
            self.message
        )
    }
}

/// What it cost to build a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Plugin `list` calls made.
    pub calls: u32,
    /// Items the sources returned, served or not.
    pub fetched: u64,
}

/// A merged page.
pub struct Page {
    pub items: Vec<Item>,
    /// Whether items may follow the last one (the caller then issues a token). True whenever a
    /// source failed: only sources that answered can be known to be exhausted.
    pub more: bool,
    /// Sources that failed during this page, in source order.
    pub failures: Vec<Failure>,
    pub stats: PageStats,
}

/// Where a source resumes after the merged key `last`.
///
/// The merged order is `(name, source, identifier)`; a source orders by `(name, identifier)`. For a
/// source that sorts before `last.source`, items named `last.name` were all served already, so it
/// resumes after the whole name (`name + "\0"` is the smallest name greater than `name`, and
/// identifiers are never empty); for `last.source` itself it resumes after the exact item; for a
/// source after it, every item named `last.name` is still to come.
pub fn seek_for(source: &str, last: &MergeKey) -> SeekKey {
    match source.cmp(last.source.as_str()) {
        Ordering::Less => SeekKey {
            name: RString::from(format!("{}\0", last.name)),
            identifier: RString::new(),
        },
        Ordering::Equal => SeekKey {
            name: RString::from(last.name.as_str()),
            identifier: RString::from(last.identifier.as_str()),
        },
        Ordering::Greater => SeekKey {
            name: RString::from(last.name.as_str()),
            identifier: RString::new(),
        },
    }
}

/// A source whose calls typically take this long is asked for a whole page on its first call: for a
/// remote source a round trip costs far more than extra items. Well above what an in-memory source
/// needs even for a 1,000-item call on a loaded machine, so fast sources keep the even share.
pub const SLOW_CALL: Duration = Duration::from_millis(20);

/// How many items the first call asks each (fast) source for: its even share of the page, plus one
/// look-ahead item that tells the merge whether the source has more. When the page is smaller than
/// the number of sources, each share is a single item and the look-ahead would double the fetch, so
/// it is left out (the cost: a listing can end with an empty last page).
pub fn first_limit(page_size: usize, sources: usize) -> usize {
    let sources = sources.max(1);
    let share = page_size.div_ceil(sources);
    if page_size >= sources {
        share + 1
    } else {
        share
    }
}

/// Builds one page from `sources`, which must be sorted by name (the registry keeps them so).
///
/// Fast sources are called in place ([`crate::call::in_place`]); the page is then built on a task of its
/// own, so that when one of those calls gets stuck the request can build the page again with every
/// source on its own threads, and answer with whichever finishes first.
///
/// Returns `Err` only with `fail_fast`, naming the first source that failed.
pub async fn merge_page(
    sources: &[Arc<Source>],
    request: PageRequest,
    options: &EngineOptions,
) -> Result<Page, Failure> {
    debug_assert!(sources.windows(2).all(|w| w[0].name < w[1].name));
    // Calls in place are for small pages: a large call's cost is the copying, which on the
    // sources' threads runs beside the merge.
    let small = first_limit(request.page_size.max(1), sources.len())
        <= in_place::MAX_IN_PLACE_LIMIT as usize;
    // A search's calls are the plugin's CPU work (an index walk, perhaps a scan): they stay on the
    // sources' threads, where the system shares the CPU between them and the requests the workers
    // serve (`max_searches_in_flight` bounds how many run).
    if !options.inline_calls
        || !small
        || !request.filter.query.is_empty()
        || in_place::usable_slots() == 0
        || !sources.iter().any(|s| in_place::eligible(s))
    {
        return merge(sources, &request, options, None).await;
    }
    let request = Arc::new(request);
    let rescue = Arc::new(in_place::Rescue::default());
    let mut task = AbortOnDrop(tokio::spawn({
        let (sources, request, options, rescue) = (
            sources.to_vec(),
            request.clone(),
            options.clone(),
            rescue.clone(),
        );
        async move { merge(&sources, &request, &options, Some(&rescue)).await }
    }));
    tokio::select! {
        biased;
        done = &mut task.0 => return joined(done),
        () = rescue.wait() => {}
    }
    // A call made in place is stuck (its source is no longer called in place): build the page
    // again with every source on its own threads; the first page to be done is served.
    tokio::select! {
        biased;
        done = &mut task.0 => joined(done),
        page = merge(sources, &request, options, None) => page,
    }
}

/// Aborts the page's task when the request goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn joined(done: Result<Result<Page, Failure>, tokio::task::JoinError>) -> Result<Page, Failure> {
    match done {
        Ok(page) => page,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the page's task ended without a page: {e}"),
    }
}

/// What the merge needs to call a source in place.
struct InPlace<'a> {
    rescue: &'a Arc<in_place::Rescue>,
    budget: Budget,
}

/// The merge itself. With `rescue`, fast sources are called in place.
async fn merge(
    sources: &[Arc<Source>],
    request: &PageRequest,
    options: &EngineOptions,
    rescue: Option<&Arc<in_place::Rescue>>,
) -> Result<Page, Failure> {
    let page_size = request.page_size.max(1);
    let even_limit = first_limit(page_size, sources.len());
    let budget = Budget {
        source_timeout: options.source_timeout,
        deadline: request.deadline,
    };
    let in_place = rescue.map(|rescue| InPlace { rescue, budget });

    let mut tasks = JoinSet::new();
    let mut lanes: Vec<Lane> = Vec::with_capacity(sources.len());
    for source in sources {
        let list_request = ListRequest {
            after: match &request.after {
                Some(last) => ROption::RSome(seek_for(&source.name, last)),
                None => ROption::RNone,
            },
            limit: u32::try_from(if source.health.typical_call() >= SLOW_CALL {
                page_size + 1
            } else {
                even_limit
            })
            .unwrap_or(u32::MAX),
            filter: request.filter.clone(),
            extensions: Default::default(),
        };
        let fetch = if in_place.is_some()
            && list_request.limit <= in_place::MAX_IN_PLACE_LIMIT
            && in_place::eligible(source)
        {
            Fetch::InPlace {
                next: Some(NextCall::first(list_request)),
            }
        } else {
            Fetch::spawn(&mut tasks, source, NextCall::first(list_request), budget)
        };
        lanes.push(Lane {
            source: source.clone(),
            buffer: RVec::new().into_iter(),
            exhausted: false,
            failed: false,
            fetch,
        });
    }

    let mut page = Page {
        items: Vec::with_capacity(page_size),
        more: false,
        failures: Vec::new(),
        stats: PageStats::default(),
    };
    // The first batches: the sources called in place first (microseconds each), while the others'
    // calls, all requested at spawn, run concurrently on their threads; waiting for those one after
    // another then costs the slowest source, not the sum.
    let mut heap = LaneHeap::with_capacity(lanes.len());
    let mut order: Vec<usize> = (0..lanes.len()).collect();
    order.sort_by_key(|&lane| !matches!(lanes[lane].fetch, Fetch::InPlace { .. }));
    for lane in order {
        let ctx = Fill {
            in_place: in_place.as_ref(),
            tasks: &mut tasks,
            options,
        };
        if fill(&mut lanes[lane], page_size + 1, &mut page, ctx).await? {
            heap.push(lane, &lanes);
        }
    }

    let mut page_bytes = 0usize;
    while let Some(lane) = heap.pop(&lanes) {
        let head = &lanes[lane].buffer.as_slice()[0];
        let bytes = summary_bytes(head, &lanes[lane].source.name);
        if !page.items.is_empty() && page_bytes + bytes > options.max_page_bytes {
            // The page is full by size: this item leads the next page.
            page.more = true;
            break;
        }
        page_bytes += bytes;
        let summary = lanes[lane]
            .buffer
            .next()
            .expect("a lane in the heap has a head item");
        page.items.push(Item {
            source: lane,
            summary,
        });
        if page.items.len() == page_size {
            let l = &lanes[lane];
            page.more = !heap.is_empty()
                || (!l.failed && (!l.buffer.as_slice().is_empty() || !l.exhausted));
            break;
        }
        let want = page_size - page.items.len() + 1;
        let ctx = Fill {
            in_place: in_place.as_ref(),
            tasks: &mut tasks,
            options,
        };
        if fill(&mut lanes[lane], want, &mut page, ctx).await? {
            heap.push(lane, &lanes);
        }
    }
    // A failed source is not known to be exhausted: the listing goes on, so that it can serve its
    // remaining items once it recovers.
    page.more |= !page.failures.is_empty();
    // Dropping the lanes closes every channel; dropping the JoinSet aborts what is left.
    drop(lanes);
    drop(tasks);
    Ok(page)
}

/// The merge's view of one source.
struct Lane {
    source: Arc<Source>,
    /// The batch being merged, in the plugin's own vector: moving it into a `Vec` would copy it.
    buffer: RIntoIter<Summary>,
    exhausted: bool,
    failed: bool,
    fetch: Fetch,
}

/// How a lane gets its batches.
// The request held in place is larger than the channels; boxing it would cost an allocation per
// source per page, and a page has one lane per source.
#[allow(clippy::large_enum_variant)]
enum Fetch {
    /// The merge calls the source in place; `next` is the lane's next call.
    InPlace { next: Option<NextCall> },
    /// A task calls the source on its threads and sends each batch down a channel.
    Task {
        /// A batch has been asked for and not yet received.
        in_flight: bool,
        demand: mpsc::Sender<u32>,
        batches: mpsc::Receiver<Result<Batch, Failure>>,
    },
}

impl Fetch {
    /// Starts the task that makes `request`'s call on the source's threads at once.
    fn spawn(
        tasks: &mut JoinSet<()>,
        source: &Arc<Source>,
        call: NextCall,
        budget: Budget,
    ) -> Fetch {
        let (demand_tx, demand_rx) = mpsc::channel(1);
        let (batch_tx, batch_rx) = mpsc::channel(1);
        tasks.spawn(feed(source.clone(), call, budget, demand_rx, batch_tx));
        Fetch::Task {
            in_flight: true,
            demand: demand_tx,
            batches: batch_rx,
        }
    }
}

struct Batch {
    items: RVec<Summary>,
    /// Items the plugin returned before the host re-applied the filter.
    fetched: usize,
    exhausted: bool,
}

/// A checked answer: the batch, and the next call, which starts one item back (see [`NextCall`]).
struct Answer {
    batch: Batch,
    next: NextCall,
}

/// A lane's next `list` call. After the first batch a call asks again from the item before the last
/// one returned, one item more: a source that answers in order must answer that last item first. One
/// item per batch is the cost; what it buys is a source whose order breaks between two of its
/// batches (a binary search over unsorted data that lands past items it never served) failing with
/// `contract_violation` instead of leaving items out unseen.
struct NextCall {
    request: ListRequest,
    /// The least the call's limit must be (the limit is set when the call is made; see
    /// [`refiltered_limit`]); `None` for the lane's first call, whose limit was set with the page.
    min_limit: Option<u32>,
    /// The item the answer must start with: the last one of the previous answer.
    expect_first: Option<SeekKey>,
}

impl NextCall {
    fn first(request: ListRequest) -> NextCall {
        NextCall {
            request,
            min_limit: None,
            expect_first: None,
        }
    }

    /// Sets the limit of a later call: what the page still lacks (`want`), or more, and the item
    /// asked again.
    fn set_limit(&mut self, want: u32) {
        if let Some(min_limit) = self.min_limit {
            self.request.limit = want
                .max(1)
                .max(min_limit)
                .saturating_add(u32::from(self.expect_first.is_some()));
        }
    }
}

fn key_of(item: &Summary) -> SeekKey {
    SeekKey {
        name: item.name.clone(),
        identifier: item.identifier.clone(),
    }
}

/// Checks a `list` answer to `call` against the contract, re-applies the filter, and records the
/// outcome in the source's history.
fn answer(
    source: &Source,
    call: NextCall,
    result: Result<RVec<Summary>, (FailureKind, String)>,
) -> Result<Answer, Failure> {
    let NextCall {
        request,
        expect_first,
        ..
    } = call;
    let checked = result.and_then(|mut items| {
        let returned = items.len();
        // The next call starts from the item before the last one returned (before the request's
        // own start when only one was), and must answer that last one first.
        let next_start = match items.len() {
            0 => None,
            1 => Some(request.after.clone().into_option()),
            n => Some(Some(key_of(&items[n - 2]))),
        };
        let next_expect = items.last().map(key_of);
        let raw_first = items.first().map(key_of);
        if let Some(expected) = &expect_first {
            if raw_first.as_ref() != Some(expected) {
                return Err((
                    FailureKind::Contract,
                    order_broken(&request, expected, items.first()),
                ));
            }
        }
        let dropped = contract::check_list_dropping(&request, &mut items)
            .map_err(|v| (FailureKind::Contract, v.into_message()))?;
        let mut repeated = 0;
        if expect_first.is_some() {
            repeated = 1;
            // Unless it broke the contract in a field other than its key and was dropped again.
            if items.first().map(key_of) == raw_first {
                items.remove(0);
            }
        }
        if let Some(why) = dropped.first {
            record_dropped(source, dropped.count, why.message());
        }
        Ok((items, returned, repeated, next_start, next_expect))
    });
    record_outcome(source, checked.as_ref().map(|_| ()));
    let (mut items, returned, repeated, next_start, next_expect) =
        checked.map_err(|(kind, message)| Failure {
            source: source.name.clone(),
            plugin: source.plugin.clone(),
            kind,
            message,
        })?;
    // Counted as the plugin answered them: a dropped item still moves the listing on.
    let exhausted = returned < request.limit as usize;
    let fetched = returned - repeated;
    if !request.filter.is_empty() {
        items.retain(|item| request.filter.matches(item));
    }
    // A plugin that ignores the filter makes the host drop what does not match: ask it for
    // twice as many each time (up to MAX_REFILTER_BATCH), so a selective query costs a few
    // large calls rather than thousands of page-sized ones.
    let min_limit = refiltered_limit(&request, items.len(), fetched);
    let mut next = request;
    let mut expect_first = None;
    if let Some(start) = next_start {
        next.after = start.into();
        expect_first = next_expect;
    }
    Ok(Answer {
        batch: Batch {
            items,
            fetched,
            exhausted,
        },
        next: NextCall {
            request: next,
            min_limit: Some(min_limit),
            expect_first,
        },
    })
}

/// The message of an answer that did not start with the item `expected`, asked again.
fn order_broken(request: &ListRequest, expected: &SeekKey, found: Option<&Summary>) -> String {
    let asked = match &request.after {
        ROption::RSome(after) => format!("after {}", show_key(after)),
        ROption::RNone => "from the start".to_owned(),
    };
    let found = match found {
        Some(item) => format!("with {}", show_key(&key_of(item))),
        None => "with nothing".to_owned(),
    };
    format!(
        "the order broke between two answers: asked again for the items {asked}, the source \
         answered {found} where its previous answer ended with {} (is its data sorted by name, \
         then identifier?)",
        show_key(expected)
    )
}

fn show_key(key: &SeekKey) -> String {
    format!(
        "{:?} (identifier {:?})",
        key.name.as_str(),
        key.identifier.as_str()
    )
}

/// Records items left out of a source's answer (a field other than their key broke the contract):
/// in the source's history (ListPlugins, metrics) and, at most once a minute per source, the log.
fn record_dropped(source: &Source, count: usize, why: &str) {
    source.health.record_dropped(count, why);
    if let Some(left_out) = crate::log_limit::admit(&[&source.name, "items_dropped"]) {
        tracing::warn!(
            source = %source.name,
            plugin = %source.plugin,
            dropped = count,
            more_like_it = left_out,
            "items left out of an answer, the rest served: {why}"
        );
    }
}

/// What [`fill`] needs besides the lane.
struct Fill<'a, 'b> {
    in_place: Option<&'a InPlace<'b>>,
    tasks: &'a mut JoinSet<()>,
    options: &'a EngineOptions,
}

/// Makes sure the lane has a head item, fetching a batch of up to `want` items when its buffer is
/// empty. `Ok(false)` when the lane is exhausted or has failed (the failure is recorded on the page).
async fn fill(
    lane: &mut Lane,
    want: usize,
    page: &mut Page,
    ctx: Fill<'_, '_>,
) -> Result<bool, Failure> {
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    loop {
        if !lane.buffer.as_slice().is_empty() {
            return Ok(true);
        }
        if lane.exhausted || lane.failed {
            return Ok(false);
        }
        let received = match &mut lane.fetch {
            Fetch::InPlace { next } => {
                let Some(mut call) = next.take() else {
                    return Ok(false);
                };
                // The first call's limit was set with the request; later ones ask for what the
                // page still lacks (or more, see `refiltered_limit`).
                call.set_limit(want);
                let in_place = ctx.in_place.expect("lanes in place have a rescue");
                let (limit, _) = in_place.budget.for_call();
                let called = (call.request.limit <= in_place::MAX_IN_PLACE_LIMIT)
                    .then(|| {
                        in_place::try_call(
                            &lane.source,
                            "list",
                            in_place.budget.source_timeout,
                            Instant::now() + limit,
                            in_place.rescue,
                            |src| src.imp.list(&call.request),
                        )
                    })
                    .flatten();
                match called {
                    Some(result) => {
                        let result = match result {
                            RResult::ROk(items) => Ok(items),
                            RResult::RErr(e) => Err(plugin_error(e)),
                        };
                        match answer(&lane.source, call, result) {
                            Ok(answer) => {
                                *next = Some(answer.next);
                                Some(Ok(answer.batch))
                            }
                            Err(failure) => Some(Err(failure)),
                        }
                    }
                    None => {
                        // Not in place this time (no slot, or the source is no longer fast): its
                        // threads make this call and the lane's later ones.
                        lane.fetch = Fetch::spawn(ctx.tasks, &lane.source, call, in_place.budget);
                        continue;
                    }
                }
            }
            Fetch::Task {
                in_flight,
                demand,
                batches,
            } => {
                if !*in_flight {
                    // An error means the task has ended; its reason, if any, is in the channel.
                    let _ = demand.send(want).await;
                    *in_flight = true;
                }
                let received = batches.recv().await;
                *in_flight = false;
                received
            }
        };
        match received {
            Some(Ok(batch)) => {
                page.stats.calls += 1;
                page.stats.fetched += batch.fetched as u64;
                lane.exhausted = batch.exhausted;
                lane.buffer = batch.items.into_iter();
            }
            Some(Err(failure)) => return lane_failed(lane, failure, page, ctx.options),
            None => {
                let failure = Failure {
                    source: lane.source.name.clone(),
                    plugin: lane.source.plugin.clone(),
                    kind: FailureKind::Plugin(ErrorKind::Internal),
                    message: "the source's task ended unexpectedly".to_owned(),
                };
                return lane_failed(lane, failure, page, ctx.options);
            }
        }
    }
}

/// Records that the lane's source failed for this page; `Err` with `fail_fast`.
fn lane_failed(
    lane: &mut Lane,
    failure: Failure,
    page: &mut Page,
    options: &EngineOptions,
) -> Result<bool, Failure> {
    // Once per source, kind and message a minute (a failing source fails every page).
    if let Some(left_out) =
        crate::log_limit::admit(&[&failure.source, failure.kind.name(), &failure.message])
    {
        if left_out == 0 {
            tracing::warn!("{failure}");
        } else {
            tracing::warn!("{failure} ({left_out} more like it in the last minute)");
        }
    }
    lane.failed = true;
    if options.fail_fast {
        return Err(failure);
    }
    page.failures.push(failure);
    Ok(false)
}

/// One source's task: fetch, check, send; then wait for the next demand.
async fn feed(
    source: Arc<Source>,
    mut call: NextCall,
    budget: Budget,
    mut demand: mpsc::Receiver<u32>,
    batches: mpsc::Sender<Result<Batch, Failure>>,
) {
    loop {
        let answered = match call_list(&source, call, budget).await {
            Ok((returned, items)) => answer(&source, returned, Ok(items)),
            Err(failure) => {
                record_outcome(&source, Err(&failure));
                Err(Failure {
                    source: source.name.clone(),
                    plugin: source.plugin.clone(),
                    kind: failure.0,
                    message: failure.1,
                })
            }
        };
        let answer = match answered {
            Ok(answer) => answer,
            Err(failure) => {
                let _ = batches.send(Err(failure)).await;
                return;
            }
        };
        let exhausted = answer.batch.exhausted;
        if batches.send(Ok(answer.batch)).await.is_err() || exhausted {
            return;
        }
        let Some(want) = demand.recv().await else {
            return;
        };
        call = answer.next;
        call.set_limit(want);
    }
}

/// The largest batch asked of a plugin that ignores the filter.
pub const MAX_REFILTER_BATCH: u32 = 4096;

/// The limit of the next call to a source whose last answer (to `request`) had `fetched` items of
/// which the host's re-filter `kept` some: twice the last limit when the filter dropped items (up
/// to [`MAX_REFILTER_BATCH`]), else 0 (no growth).
fn refiltered_limit(request: &ListRequest, kept: usize, fetched: usize) -> u32 {
    if request.filter.is_empty() || kept == fetched {
        return 0;
    }
    request.limit.saturating_mul(2).min(MAX_REFILTER_BATCH)
}

/// Runs one guarded `list` call. The call comes back with the items so that the next call reuses
/// its request without copying the filter.
async fn call_list(
    source: &Arc<Source>,
    call: NextCall,
    budget: Budget,
) -> Result<(NextCall, RVec<Summary>), (FailureKind, String)> {
    let result = call::call(source, "list", budget, move |src| {
        let result = src.imp.list(&call.request);
        (call, result)
    })
    .await;
    match result {
        Ok((call, RResult::ROk(items))) => Ok((call, items)),
        Ok((_, RResult::RErr(e))) => Err(plugin_error(e)),
        Err(e) => Err(call_failure(e)),
    }
}

/// The failure kind and message of a plugin's error; an error that itself breaks the contract (a
/// message too long or not UTF-8) is a contract violation.
pub fn plugin_error(error: PluginError) -> (FailureKind, String) {
    match contract::check_error(&error) {
        Ok(()) => (FailureKind::Plugin(error.kind), error.message.into_string()),
        Err(v) => (FailureKind::Contract, v.into_message()),
    }
}

/// Records in the source's history how a call it answered ended. Refusals without a call
/// (`unhealthy`, `overloaded`, `starting`) and answers about the request (`not_found`, `invalid_argument`,
/// `unsupported`) say nothing of the source's health and are left out; timeouts are recorded by
/// [`crate::call`], on the plugin's own clock.
pub fn record_outcome(source: &Source, outcome: Result<(), &(FailureKind, String)>) {
    let counts = |kind: FailureKind| match kind {
        FailureKind::Contract => true,
        FailureKind::Plugin(k) => ![
            ErrorKind::NotFound,
            ErrorKind::InvalidArgument,
            ErrorKind::Unsupported,
            ErrorKind::Starting,
        ]
        .contains(&k),
        FailureKind::Timeout | FailureKind::Unhealthy | FailureKind::Overloaded => false,
    };
    match outcome {
        Ok(()) => source.health.record_outcome(Ok(())),
        Err((kind, message)) if counts(*kind) => {
            source.health.record_outcome(Err((kind.name(), message)))
        }
        Err(_) => {}
    }
}

/// The failure kind and message of a call that produced nothing.
pub fn call_failure(error: CallError) -> (FailureKind, String) {
    match error {
        CallError::Timeout(m) => (FailureKind::Timeout, m),
        CallError::Unhealthy(m) => (FailureKind::Unhealthy, m),
        CallError::Overloaded(m) => (FailureKind::Overloaded, m),
        CallError::Aborted(m) => (FailureKind::Plugin(ErrorKind::Internal), m),
    }
}

/// A binary min-heap of lane indices, ordered by each lane's head item under the merged order
/// `(name, source, identifier)`; lanes are in source-name order, so the index stands in for the
/// source name. The items stay in their lanes' buffers: only indices move, and each summary moves
/// once, from its batch into the page.
struct LaneHeap {
    lanes: Vec<usize>,
}

impl LaneHeap {
    fn with_capacity(n: usize) -> LaneHeap {
        LaneHeap {
            lanes: Vec::with_capacity(n),
        }
    }

    fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Whether lane `a`'s head comes before lane `b`'s.
    fn before(a: usize, b: usize, lanes: &[Lane]) -> bool {
        let (x, y) = (
            &lanes[a].buffer.as_slice()[0],
            &lanes[b].buffer.as_slice()[0],
        );
        x.name
            .as_bytes()
            .cmp(y.name.as_bytes())
            .then(a.cmp(&b))
            .then_with(|| x.identifier.as_bytes().cmp(y.identifier.as_bytes()))
            == Ordering::Less
    }

    /// Adds a lane that has a head item.
    fn push(&mut self, lane: usize, lanes: &[Lane]) {
        self.lanes.push(lane);
        let mut i = self.lanes.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !Self::before(self.lanes[i], self.lanes[parent], lanes) {
                break;
            }
            self.lanes.swap(i, parent);
            i = parent;
        }
    }

    /// Removes and returns the lane with the smallest head item.
    fn pop(&mut self, lanes: &[Lane]) -> Option<usize> {
        let last = self.lanes.pop()?;
        if self.lanes.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.lanes[0], last);
        let n = self.lanes.len();
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && Self::before(self.lanes[l], self.lanes[smallest], lanes) {
                smallest = l;
            }
            if r < n && Self::before(self.lanes[r], self.lanes[smallest], lanes) {
                smallest = r;
            }
            if smallest == i {
                break;
            }
            self.lanes.swap(i, smallest);
            i = smallest;
        }
        Some(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use tributary_plugin_api::{ffi::source_box, Detail, PackageSource, PluginError};

    struct VecSource(Vec<Summary>);

    impl PackageSource for VecSource {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(request.select(&self.0))
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    /// Pages through random in-process sources with random page sizes: the concatenation is the
    /// oracle sort, and no page is over-full.
    /// On a runtime with two workers, so that sources become fast after their first calls and are
    /// then called in place: both paths, and the switch between them, are covered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_merges_match_the_oracle() {
        let mut rng = StdRng::seed_from_u64(7);
        let in_place_before = in_place::calls_in_place();
        for trial in 0..200 {
            let k = rng.random_range(1..=6);
            let mut oracle = Vec::new();
            let mut sources = Vec::new();
            for s in 0..k {
                let source_name = format!("s{s}");
                let mut items: Vec<Summary> = (0..rng.random_range(0..30))
                    .map(|j| Summary {
                        name: RString::from(["a", "b", "bb", "c", "é"][rng.random_range(0..5)]),
                        identifier: RString::from(format!("i{j}")),
                        ..Summary::default()
                    })
                    .collect();
                items.sort_by(|a, b| a.key_cmp(b));
                for i in &items {
                    oracle.push((
                        i.name.to_string(),
                        source_name.clone(),
                        i.identifier.to_string(),
                    ));
                }
                sources.push(Arc::new(Source::new(
                    &source_name,
                    "vec",
                    source_box(VecSource(items)),
                )));
            }
            oracle.sort_by(|a, b| {
                (a.0.as_bytes(), &a.1, a.2.as_bytes()).cmp(&(b.0.as_bytes(), &b.1, b.2.as_bytes()))
            });
            let mut got = Vec::new();
            let mut after = None;
            for _ in 0..1000 {
                let page_size = rng.random_range(1..8);
                let page = merge_page(
                    &sources,
                    PageRequest {
                        page_size,
                        after: after.clone(),
                        filter: Filter::default(),
                        deadline: None,
                    },
                    &EngineOptions::default(),
                )
                .await
                .unwrap();
                assert!(page.items.len() <= page_size);
                assert!(page.failures.is_empty());
                for item in &page.items {
                    got.push((
                        item.summary.name.to_string(),
                        sources[item.source].name.to_string(),
                        item.summary.identifier.to_string(),
                    ));
                }
                if !page.more {
                    break;
                }
                let (name, source, identifier) = got.last().cloned().unwrap();
                after = Some(MergeKey {
                    name,
                    source,
                    identifier,
                });
            }
            assert_eq!(got, oracle, "trial {trial}");
        }
        assert!(
            in_place::calls_in_place() > in_place_before,
            "sources were called in place once warm"
        );
    }

    /// Answers from its items as they are, unsorted, by the binary search of
    /// [`ListRequest::select`]: a seek can land past items never served.
    struct UnsortedSource(Vec<Summary>);

    impl PackageSource for UnsortedSource {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(request.select(&self.0))
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    fn named(names: impl IntoIterator<Item = String>) -> Vec<Summary> {
        names
            .into_iter()
            .map(|name| Summary {
                identifier: RString::from(name.as_str()),
                name: RString::from(name),
                ..Summary::default()
            })
            .collect()
    }

    /// A source whose items are out of order only between two of its batches within one page (each
    /// batch sorted, strictly after the last): one item would be left out with no failure. The call
    /// that asks again from one item back finds the break and names it.
    #[tokio::test]
    async fn an_order_broken_between_two_batches_fails_instead_of_leaving_items_out() {
        // p00..p39 with p05 moved to index 25: the first batch (p00..p21 without p05) is sorted; the
        // binary search for the items after p21 meets p05 and lands past p22..p25, so the second
        // batch (p26..p39) is sorted too, and strictly after p21.
        let mut names: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
        let moved = names.remove(5);
        names.insert(25, moved);
        // A second source, so that the first call asks each for half the page and the page needs
        // a second batch from the unsorted one.
        let other: Vec<String> = (0..5).map(|i| format!("z{i}")).collect();
        let sources = vec![
            Arc::new(Source::new(
                "a",
                "unsorted",
                source_box(UnsortedSource(named(names))),
            )),
            Arc::new(Source::new("b", "vec", source_box(VecSource(named(other))))),
        ];
        let page = merge_page(
            &sources,
            PageRequest {
                page_size: 40,
                after: None,
                filter: Filter::default(),
                deadline: None,
            },
            &EngineOptions::default(),
        )
        .await
        .unwrap();
        let served: Vec<String> = page
            .items
            .iter()
            .filter(|item| item.source == 0)
            .map(|item| item.summary.name.to_string())
            .collect();
        assert_eq!(page.failures.len(), 1, "served {served:?}");
        let failure = &page.failures[0];
        assert_eq!(&*failure.source, "a");
        assert_eq!(failure.kind, FailureKind::Contract);
        // Asked again from p20, it answers p21..p25 and then p05: out of order.
        assert!(failure.message.contains("p05"), "{}", failure.message);
        // What was served is a prefix of the order: nothing skipped.
        let sorted: Vec<String> = (0..40)
            .map(|i| format!("p{i:02}"))
            .filter(|n| n != "p05")
            .take(served.len())
            .collect();
        assert_eq!(served, sorted);
        assert!(page.more, "the listing goes on once the source recovers");
    }

    #[test]
    fn first_limits_keep_the_fetch_near_the_page() {
        // (page size, sources) -> per-source limit; total fetched stays <= 2 * page + sources.
        for (page, sources, limit) in [
            (20, 3, 8),
            (1000, 16, 64),
            (1, 3, 1),
            (1, 16, 1),
            (20, 16, 3),
            (3, 3, 2),
        ] {
            assert_eq!(
                first_limit(page, sources),
                limit,
                "page {page}, {sources} sources"
            );
            assert!(
                limit * sources <= 2 * page + sources,
                "page {page}, {sources} sources"
            );
        }
        assert_eq!(first_limit(5, 0), 6, "no sources: treated as one");
    }

    #[test]
    fn seek_keys_follow_the_merge_order() {
        let last = MergeKey {
            name: "n".into(),
            source: "m".into(),
            identifier: "id".into(),
        };
        let key = |s: &str| {
            let k = seek_for(s, &last);
            (k.name.into_string(), k.identifier.into_string())
        };
        assert_eq!(key("a"), ("n\0".to_owned(), String::new()));
        assert_eq!(key("m"), ("n".to_owned(), "id".to_owned()));
        assert_eq!(key("z"), ("n".to_owned(), String::new()));
    }
}
