//! The merge: fan-out to the sources, fan-in by a k-way merge, one page at a time.
//!
//! Each selected source is a lane ([`lane`]). A fast source (see [`crate::call::in_place`]) is
//! called in place by the merge itself; any other gets a tokio task that calls its `list` on one of
//! the source's own threads (the FFI call is synchronous; see [`crate::call::threads`]) and sends
//! each checked answer as one batch down a bounded channel. A lane fetches again only when the merge
//! asks, with a demand saying how many items the page can still take, so a source is read no
//! further than the page needs: the first call asks for the source's even share of the page plus
//! one look-ahead item (see [`first_limit`]), a later call for what the page still lacks plus one. A
//! later call starts one item back, so that its answer must repeat the last item of the one before:
//! a source whose order breaks between two of its batches fails the page as a contract violation
//! instead of skipping items. A resumed listing's first call is checked to start strictly after its
//! seek key.
//!
//! The merge keeps a heap of the lanes ordered by their head items under
//! `(name, source, identifier)` ([`heap`]) and takes the smallest until the page is full. When the
//! page is complete, or the request future is dropped because the client went away, the channels
//! close and the tasks end: no plugin call starts after that (a call already running on a source
//! thread finishes, and its result is discarded).
//!
//! Resuming is by key (see [`token`]): given the last key served, [`seek_for`] tells each source
//! where to continue, so a page is exact however the sources' data changed since the last one.

use std::{
    cmp::Ordering,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::{ROption, RString, RVec};
use tokio::task::JoinSet;
use tributary_plugin_api::{
    capabilities, order::OrderKey, Filter, ListRequest, Query, SeekKey, Sort, Summary,
};

pub mod facets;
mod heap;
mod lane;

use heap::LaneHeap;
pub use lane::MAX_ORDERED_BY_HOST;
use lane::{fill, Fetch, Fill, Lane, NextCall, Order};
pub mod token;

use crate::call::{in_place, Budget, SourceHandle as Source};
pub use crate::call::{FailureKind, Fault};
use token::{MergeKey, Primary};

/// How the merge treats its sources.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The longest one plugin call may take.
    pub source_timeout: Duration,
    /// Fail the whole page on the first source failure instead of serving the others.
    pub fail_fast: bool,
    /// A page ends early (with more to come) before the next item would take its estimated encoded
    /// size ([`summary_bytes`]) past this. The first item is always served.
    pub max_page_bytes: usize,
    /// Call fast sources in place on the runtime's threads (`inline_calls`; see
    /// [`crate::call::in_place`]).
    pub inline_calls: bool,
}

impl MergeOptions {
    /// The options a configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> MergeOptions {
        MergeOptions {
            source_timeout: config.source_timeout,
            fail_fast: config.on_source_error == crate::config::OnSourceError::Fail,
            max_page_bytes: config.max_page_bytes,
            inline_calls: config.inline_calls,
        }
    }
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions::from_config(&crate::config::Config::default())
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

/// One page to produce.
pub struct PageRequest {
    /// At least 1.
    pub page_size: usize,
    /// The last key of the previous page; `None` for the first page.
    pub after: Option<MergeKey>,
    /// The page's order (by its kind: name, relevance or update time) and, with `after`, the last
    /// item's key before its name (its score, its date). Without `after` only the kind counts.
    pub order: Primary,
    /// The filter, query already lower-cased. Its query must parse (the service checks it first);
    /// one that does not matches nothing.
    pub filter: Filter,
    /// When the client stops waiting: calls are cut short to answer before it.
    pub deadline: Option<Instant>,
}

/// One item of a page and the index of its source in the slice given to [`merge_page`].
pub struct Item {
    pub source: usize,
    pub summary: Summary,
    /// Its key before its name in the page's order ([`Primary::Name`] by name): with the name,
    /// source and identifier, where the next page resumes.
    pub primary: Primary,
}

impl Primary {
    /// The sort order this key belongs to.
    pub fn sort(&self) -> Sort {
        match self {
            Primary::Name => Sort::Name,
            Primary::Relevance(_) => Sort::Relevance,
            Primary::Updated(_) => Sort::Updated,
        }
    }

    /// The key of the start of a listing in `sort` (its value is never compared).
    pub fn start(sort: Sort) -> Primary {
        match sort {
            Sort::Name => Primary::Name,
            Sort::Relevance => Primary::Relevance(0),
            Sort::Updated => Primary::Updated(None),
        }
    }

    /// How two keys of the same order compare: a higher score first, a newer date first, no date
    /// last.
    pub fn order_cmp(&self, other: &Primary) -> Ordering {
        match (self, other) {
            (Primary::Relevance(a), Primary::Relevance(b)) => b.cmp(a),
            (Primary::Updated(a), Primary::Updated(b)) => match (a, b) {
                (Some(a), Some(b)) => b.as_bytes().cmp(a.as_bytes()),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            _ => Ordering::Equal,
        }
    }
}

/// Where a source resumes after the merged position (`primary`, `last`), in the source's own order
/// (see [`seek_for`]).
pub fn order_key_for(source: &str, primary: &Primary, last: &MergeKey) -> OrderKey {
    let seek = seek_for(source, last);
    let (name, identifier) = (seek.name.into_string(), seek.identifier.into_string());
    match primary {
        Primary::Name => OrderKey::Name { name, identifier },
        Primary::Relevance(score) => OrderKey::Relevance {
            score: *score,
            name,
            identifier,
        },
        Primary::Updated(updated) => OrderKey::Updated {
            updated: updated.clone(),
            name,
            identifier,
        },
    }
}

/// The filter a source is sent. A plugin that declares `list.sort@1` knows the 1.1 query syntax and
/// gets the client's filter; an older one matches its query as one substring, so it is sent the one
/// substring every match must contain ([`tributary_plugin_api::Query::required_substring`]; none
/// when the query has `or` groups or only exclusions), and the host's re-filter applies the rest.
pub fn source_filter(source: &Source, filter: &Filter, query: &Query) -> Filter {
    if filter.query.is_empty() || source.declares(capabilities::LIST_SORT, 1) {
        return filter.clone();
    }
    let mut broader = filter.clone();
    broader.query = query.required_substring().unwrap_or_default().into();
    broader
}

/// A source that could not contribute to a page.
#[derive(Debug, Clone)]
pub struct Failure {
    pub source: Arc<str>,
    pub plugin: Arc<str>,
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    /// `source` failed with `fault`.
    pub fn new(source: &Source, fault: Fault) -> Failure {
        Failure {
            source: source.name.clone(),
            plugin: source.plugin.clone(),
            kind: fault.kind,
            message: fault.message,
        }
    }
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
/// Fast sources are called in place ([`crate::call::in_place`]); the page is then built on a page
/// thread (not on the runtime's worker), so that when one of those calls gets stuck the request can
/// build the page again with every source on its own threads, and answer with whichever finishes
/// first, and so that the stuck call holds no task but its own page's.
///
/// Returns `Err` only with `fail_fast`, naming the first source that failed.
/// How long a request looks for its page built on a page thread before its task waits to be
/// woken (see [`merge_page`]).
const LOOK_FOR_THE_PAGE: std::time::Duration = std::time::Duration::from_micros(50);

pub async fn merge_page(
    sources: &[Arc<Source>],
    request: PageRequest,
    options: &MergeOptions,
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
    // At most MAX_PAGES_ON_THREADS pages on page threads at once: a flood of requests must not
    // start a thread each. The others are built here, every source on its own threads.
    let Some(on_thread) = PageOnThread::enter() else {
        return merge(sources, &request, options, None).await;
    };
    let request = Arc::new(request);
    let rescue = Arc::new(in_place::Rescue::default());
    // Dropped with the request: the page's merge then stops at its next wait.
    let (gone_tx, gone) = tokio::sync::oneshot::channel::<()>();
    let (page_tx, page_rx) = tokio::sync::oneshot::channel();
    let job = {
        let (sources, request, options, rescue) = (
            sources.to_vec(),
            request.clone(),
            options.clone(),
            rescue.clone(),
        );
        let handle = tokio::runtime::Handle::current();
        move || {
            let _on_thread = on_thread;
            let page = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle.block_on(async {
                    tokio::select! {
                        biased;
                        page = merge(&sources, &request, &options, Some(&rescue)) => Some(page),
                        _ = gone => None,
                    }
                })
            }));
            match page {
                Ok(Some(page)) => drop(page_tx.send(Ok(page))),
                Ok(None) => {}
                Err(panic) => drop(page_tx.send(Err(panic))),
            }
        }
    };
    // The page is built on a page thread, not on the runtime's worker: a worker blocked in a
    // plugin would hold the tasks it alone may run (its LIFO slot, the tasks it deferred) until
    // the plugin returned, and a call in place that hangs must hold its own page alone.
    if page_threads().run(job).is_err() {
        return merge(sources, &request, options, None).await;
    }
    let mut task = PageTask {
        answer: page_rx,
        _stop: gone_tx,
    };
    // A small page is often done within microseconds: look for it, letting the worker run its
    // other tasks between looks, before the worker may sleep on it. Asleep, it is woken by the
    // page thread, which on a busy machine costs more than the page.
    let looking = std::time::Instant::now();
    while looking.elapsed() < LOOK_FOR_THE_PAGE {
        match task.answer.try_recv() {
            Ok(done) => return joined(Ok(done)),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => break,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        tokio::task::yield_now().await;
    }
    tokio::select! {
        biased;
        done = &mut task.answer => return joined(done),
        () = rescue.wait() => {}
    }
    // A call made in place is stuck (its source is no longer called in place): build the page
    // again with every source on its own threads; the first page to be done is served.
    tokio::select! {
        biased;
        done = &mut task.answer => joined(done),
        page = merge(sources, &request, options, None) => page,
    }
}

/// The most pages built on page threads at once (each holds a thread while it is built).
pub const MAX_PAGES_ON_THREADS: usize = 64;

/// Pages on page threads now.
static PAGES_ON_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_PAGES_ON_THREADS`] places, given back when dropped (also when the page's job
/// is dropped without running: the thread pool refused it).
struct PageOnThread(&'static std::sync::atomic::AtomicUsize);

impl PageOnThread {
    fn enter() -> Option<PageOnThread> {
        PageOnThread::enter_in(&PAGES_ON_THREADS, MAX_PAGES_ON_THREADS)
    }

    /// A place among `most` counted by `count`.
    fn enter_in(
        count: &'static std::sync::atomic::AtomicUsize,
        most: usize,
    ) -> Option<PageOnThread> {
        use std::sync::atomic::Ordering::AcqRel;
        if count.fetch_add(1, AcqRel) >= most {
            count.fetch_sub(1, AcqRel);
            return None;
        }
        Some(PageOnThread(count))
    }
}

impl Drop for PageOnThread {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The threads that build pages with calls in place, shared by every request.
fn page_threads() -> &'static crate::call::threads::SourceThreads {
    static PAGES: std::sync::OnceLock<crate::call::threads::SourceThreads> =
        std::sync::OnceLock::new();
    PAGES.get_or_init(|| crate::call::threads::SourceThreads::with_thread_name("page".to_owned()))
}

/// The page being built on a page thread: its answer (or its panic), and what stops it when the
/// request goes away (dropping the sender ends its merge at the next wait).
struct PageTask {
    answer: tokio::sync::oneshot::Receiver<std::thread::Result<Result<Page, Failure>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The page thread's answer; its panic goes on in the request.
fn joined(
    done: Result<
        std::thread::Result<Result<Page, Failure>>,
        tokio::sync::oneshot::error::RecvError,
    >,
) -> Result<Page, Failure> {
    match done {
        Ok(Ok(page)) => page,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the page's thread ended without a page"),
    }
}

/// What the merge needs to call a source in place.
pub(super) struct InPlace<'a> {
    pub(super) rescue: &'a Arc<in_place::Rescue>,
    pub(super) budget: Budget,
}

/// The merge itself. With `rescue`, fast sources are called in place.
async fn merge(
    sources: &[Arc<Source>],
    request: &PageRequest,
    options: &MergeOptions,
    rescue: Option<&Arc<in_place::Rescue>>,
) -> Result<Page, Failure> {
    let page_size = request.page_size.max(1);
    let even_limit = first_limit(page_size, sources.len());
    let budget = Budget {
        source_timeout: options.source_timeout,
        deadline: request.deadline,
    };
    let in_place = rescue.map(|rescue| InPlace { rescue, budget });
    let sort = request.order.sort();
    let Ok(filter) = request.filter.compile() else {
        // The service refuses a query that does not parse; one that gets here matches nothing.
        return Ok(Page {
            items: Vec::new(),
            more: false,
            failures: Vec::new(),
            stats: PageStats::default(),
        });
    };
    let page_order = Arc::new(Order { sort, filter });

    let mut tasks = JoinSet::new();
    let mut lanes: Vec<Lane> = Vec::with_capacity(sources.len());
    for source in sources {
        let after = request
            .after
            .as_ref()
            .map(|last| order_key_for(&source.name, &request.order, last));
        let mut list_request = ListRequest {
            after: ROption::RNone,
            limit: u32::try_from(if source.health.typical_call() >= SLOW_CALL {
                page_size + 1
            } else {
                even_limit
            })
            .unwrap_or(u32::MAX),
            filter: source_filter(source, &request.filter, page_order.filter.query()),
            extensions: Default::default(),
        };
        let fetch = if sort != Sort::Name && !source.declares(capabilities::LIST_SORT, 1) {
            // The host orders this source's matches: all of them, by name, from the start.
            list_request.limit = lane::MAX_REFILTER_BATCH;
            Fetch::spawn_ordered_by_host(
                &mut tasks,
                source,
                NextCall::first(list_request),
                budget,
                &page_order,
                after,
            )
        } else {
            list_request.set_order(sort, after.as_ref());
            if in_place.is_some()
                && list_request.limit <= in_place::MAX_IN_PLACE_LIMIT
                && in_place::eligible(source)
            {
                Fetch::InPlace {
                    next: Some(NextCall::first(list_request)),
                }
            } else {
                Fetch::spawn(
                    &mut tasks,
                    source,
                    NextCall::first(list_request),
                    budget,
                    &page_order,
                )
            }
        };
        lanes.push(Lane {
            source: source.clone(),
            buffer: RVec::new().into_iter(),
            primaries: Vec::new().into_iter(),
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
            order: &page_order,
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
        let primary = lanes[lane].primaries.next().unwrap_or_default();
        page.items.push(Item {
            source: lane,
            summary,
            primary,
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
            order: &page_order,
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
                        order: Primary::Name,
                        filter: Filter::default(),
                        deadline: None,
                    },
                    &MergeOptions::default(),
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

    /// Random items over a small vocabulary, so that queries match some, scores tie and dates
    /// repeat.
    fn random_items(rng: &mut StdRng, n: usize) -> Vec<Summary> {
        const WORDS: [&str; 6] = ["redis", "cache", "db", "web", "redis-x", "Web"];
        const DATES: [&str; 4] = [
            "2024-01-01T00:00:00Z",
            "2023-06-01T12:00:00Z",
            "2024-01-01T00:00:00Z",
            "not a date",
        ];
        let mut items: Vec<Summary> = (0..n)
            .map(|j| {
                let word = |rng: &mut StdRng| WORDS[rng.random_range(0..WORDS.len())];
                let mut extensions = RVec::new();
                if rng.random_bool(0.7) {
                    extensions.push(tributary_plugin_api::Extension::new(
                        tributary_plugin_api::keys::SUMMARY_UPDATED,
                        DATES[rng.random_range(0..DATES.len())],
                    ));
                }
                Summary {
                    name: RString::from(format!("{}{}", word(rng), ["", "-a", "-b"][j % 3])),
                    identifier: RString::from(format!("i{j}")),
                    display_name: RString::from(word(rng)),
                    short_description: RString::from(format!("{} {}", word(rng), word(rng))),
                    extensions,
                    ..Summary::default()
                }
            })
            .collect();
        items.sort_by(|a, b| a.key_cmp(b));
        items
    }

    /// Pages through random sources in every order, with random queries (terms, phrases,
    /// exclusions, `or`) and page sizes: sources whose plugin declares `list.sort@1` list in the
    /// order themselves, the others are ordered by the host. The concatenated pages must be the
    /// oracle: every match of the filter, sorted by (key before the name, name, source,
    /// identifier).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_merges_in_every_order_match_the_oracle() {
        use tributary_plugin_api::{capabilities, OrderKey};
        let mut rng = StdRng::seed_from_u64(11);
        const QUERIES: [&str; 8] = [
            "redis",
            "redis cache",
            "\"redis cache\"",
            "redis -cache",
            "db or web",
            "web",
            "-redis",
            "x",
        ];
        let sort_capability = [capabilities::name(capabilities::LIST_SORT, 1)];
        for trial in 0..150 {
            let sort = [Sort::Name, Sort::Relevance, Sort::Updated][trial % 3];
            let query_text = QUERIES[rng.random_range(0..QUERIES.len())];
            let filter = Filter {
                query: query_text.into(),
                ..Filter::default()
            };
            let query = Query::parse(query_text).unwrap();
            let k = rng.random_range(1..=4);
            let mut oracle = Vec::new();
            let mut sources = Vec::new();
            for s in 0..k {
                let source_name = format!("s{s}");
                let n = rng.random_range(0..25);
                let items = random_items(&mut rng, n);
                for item in items.iter().filter(|i| filter.matches(i)) {
                    let key = OrderKey::of(sort, &query, item);
                    oracle.push((
                        lane::primary_of(&key),
                        item.name.to_string(),
                        source_name.clone(),
                        item.identifier.to_string(),
                    ));
                }
                let mut source = Source::new(&source_name, "vec", source_box(VecSource(items)));
                if rng.random_bool(0.5) {
                    source = source.with_capabilities(&sort_capability);
                }
                sources.push(Arc::new(source));
            }
            oracle.sort_by(|a, b| {
                a.0.order_cmp(&b.0)
                    .then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
                    .then_with(|| a.2.cmp(&b.2))
                    .then_with(|| a.3.as_bytes().cmp(b.3.as_bytes()))
            });
            let mut got = Vec::new();
            let mut after = None;
            let mut order = Primary::start(sort);
            for _ in 0..1000 {
                let page_size = rng.random_range(1..8);
                let page = merge_page(
                    &sources,
                    PageRequest {
                        page_size,
                        after: after.clone(),
                        order: order.clone(),
                        filter: filter.clone(),
                        deadline: None,
                    },
                    &MergeOptions::default(),
                )
                .await
                .unwrap();
                assert!(page.items.len() <= page_size);
                assert!(
                    page.failures.is_empty(),
                    "trial {trial}: {}",
                    page.failures[0]
                );
                for item in &page.items {
                    got.push((
                        item.primary.clone(),
                        item.summary.name.to_string(),
                        sources[item.source].name.to_string(),
                        item.summary.identifier.to_string(),
                    ));
                }
                if !page.more {
                    break;
                }
                let (primary, name, source, identifier) = got.last().cloned().unwrap();
                order = primary;
                after = Some(MergeKey {
                    name,
                    source,
                    identifier,
                });
            }
            assert_eq!(got, oracle, "trial {trial}: {sort:?} {query_text:?}");
        }
    }

    /// A source whose items change between every page (some removed, some added), answering from
    /// its current items.
    struct ChangingSource(std::sync::Mutex<Vec<Summary>>);

    impl PackageSource for ChangingSource {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(request.select(&self.0.lock().unwrap()))
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    /// Data that changes between pages in relevance and update-time order, for sources that list in
    /// the order and sources the host orders: every item present from the first page to the last is
    /// served exactly once, nothing is served twice, and what is served is in order within each
    /// page.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_between_pages_neither_repeat_nor_skip_in_any_order() {
        use std::collections::HashSet;
        use tributary_plugin_api::capabilities;
        let mut rng = StdRng::seed_from_u64(23);
        let sort_capability = [capabilities::name(capabilities::LIST_SORT, 1)];
        for trial in 0..60 {
            let sort = [Sort::Relevance, Sort::Updated][trial % 2];
            let filter = Filter {
                query: ["redis", "web or db", "redis -x"][trial % 3].into(),
                ..Filter::default()
            };
            let mut changing = Vec::new();
            let mut sources = Vec::new();
            for s in 0..3 {
                let n = rng.random_range(5..30);
                let items = random_items(&mut rng, n);
                let source = Arc::new(ChangingSource(std::sync::Mutex::new(items)));
                changing.push(source.clone());
                let mut handle =
                    Source::new(&format!("s{s}"), "vec", source_box(SharedSource(source)));
                if s != 1 {
                    handle = handle.with_capabilities(&sort_capability);
                }
                sources.push(Arc::new(handle));
            }
            let key = |source: usize, item: &Summary| (source, item.identifier.to_string());
            let all_now = |changing: &[Arc<ChangingSource>]| -> HashSet<(usize, String)> {
                changing
                    .iter()
                    .enumerate()
                    .flat_map(|(s, c)| {
                        c.0.lock()
                            .unwrap()
                            .iter()
                            .filter(|i| filter.matches(i))
                            .map(|i| key(s, i))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            let mut throughout = all_now(&changing);
            let mut served: Vec<(usize, String)> = Vec::new();
            let mut after = None;
            let mut order = Primary::start(sort);
            for next_id in 1000..1200 {
                let page = merge_page(
                    &sources,
                    PageRequest {
                        page_size: rng.random_range(1..6),
                        after: after.clone(),
                        order: order.clone(),
                        filter: filter.clone(),
                        deadline: None,
                    },
                    &MergeOptions::default(),
                )
                .await
                .unwrap();
                assert!(
                    page.failures.is_empty(),
                    "trial {trial}: {}",
                    page.failures[0]
                );
                for pair in page.items.windows(2) {
                    let (a, b) = (&pair[0], &pair[1]);
                    let in_order = a.primary.order_cmp(&b.primary).then_with(|| {
                        (
                            a.summary.name.as_bytes(),
                            a.source,
                            a.summary.identifier.as_bytes(),
                        )
                            .cmp(&(
                                b.summary.name.as_bytes(),
                                b.source,
                                b.summary.identifier.as_bytes(),
                            ))
                    });
                    assert_eq!(
                        in_order,
                        Ordering::Less,
                        "trial {trial}: a page out of order"
                    );
                }
                served.extend(page.items.iter().map(|i| key(i.source, &i.summary)));
                if !page.more {
                    break;
                }
                let last = page.items.last().unwrap();
                order = last.primary.clone();
                after = Some(MergeKey {
                    name: last.summary.name.to_string(),
                    source: sources[last.source].name.to_string(),
                    identifier: last.summary.identifier.to_string(),
                });
                // Between pages: one item removed and one added in a random source.
                let c = &changing[rng.random_range(0..changing.len())];
                let mut items = c.0.lock().unwrap();
                if !items.is_empty() {
                    let gone = rng.random_range(0..items.len());
                    items.remove(gone);
                }
                let mut added = random_items(&mut rng, 1).pop().unwrap();
                added.identifier = RString::from(format!("new{next_id}"));
                let at = items.partition_point(|i| i.key_cmp(&added) == Ordering::Less);
                items.insert(at, added);
                drop(items);
                throughout = throughout
                    .intersection(&all_now(&changing))
                    .cloned()
                    .collect();
            }
            let unique: HashSet<_> = served.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                served.len(),
                "trial {trial}: an item served twice"
            );
            let missing: Vec<_> = throughout.difference(&unique).collect();
            assert!(missing.is_empty(), "trial {trial}: skipped {missing:?}");
        }
    }

    /// A shared [`ChangingSource`].
    struct SharedSource(Arc<ChangingSource>);

    impl PackageSource for SharedSource {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            self.0.list(request)
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            self.0.detail(identifier)
        }
    }

    /// Past its bound a page gets no place on a page thread (it is then built without one); each
    /// place is given back when dropped.
    #[test]
    fn pages_on_threads_are_bounded() {
        let count = Box::leak(Box::new(std::sync::atomic::AtomicUsize::new(0)));
        let held: Vec<PageOnThread> = (0..3)
            .map(|_| PageOnThread::enter_in(count, 3).expect("a place"))
            .collect();
        assert!(PageOnThread::enter_in(count, 3).is_none());
        assert_eq!(count.load(SeqCst), 3, "a refused page takes no place");
        drop(held);
        assert_eq!(count.load(SeqCst), 0);
        assert!(PageOnThread::enter_in(count, 3).is_some());
    }

    /// Sleeps [`HANG`] on its first call made in place (off the sources' `src:` threads) once armed,
    /// noting the name of the thread it hangs on.
    struct HangsInPlace {
        items: Vec<Summary>,
        armed: std::sync::atomic::AtomicBool,
        hung_on: std::sync::Mutex<Option<String>>,
    }

    const HANG: Duration = Duration::from_secs(5);
    use std::sync::atomic::Ordering::SeqCst;

    struct Shared<T>(Arc<T>);

    impl PackageSource for Shared<HangsInPlace> {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            let this = &self.0;
            if !thread.starts_with("src:") && this.armed.swap(false, SeqCst) {
                *this.hung_on.lock().unwrap() = Some(thread);
                std::thread::sleep(HANG);
            }
            Ok(request.select(&this.items))
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    /// A call in place that hangs holds its own page's thread, not a worker of the runtime: on a
    /// runtime of one worker, the page whose call hung is rescued, and another page and a timer
    /// started during the hang are served well within it. (Were the page built on the worker,
    /// the hang would hold the worker, with every task it alone may run.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hang_in_place_holds_no_worker() {
        let items = |prefix: &str| -> Vec<Summary> {
            (0..100)
                .map(|i| Summary {
                    name: RString::from(format!("{prefix}{i:03}")),
                    identifier: RString::from(format!("{i}")),
                    ..Summary::default()
                })
                .collect()
        };
        let hangs = Arc::new(HangsInPlace {
            items: items("p"),
            armed: Default::default(),
            hung_on: Default::default(),
        });
        let sources = Arc::new(vec![
            Arc::new(Source::new("a", "vec", source_box(Shared(hangs.clone())))),
            Arc::new(Source::new("b", "vec", source_box(VecSource(items("p"))))),
        ]);
        let first = |n| PageRequest {
            page_size: n,
            after: None,
            order: Primary::Name,
            filter: Filter::default(),
            deadline: None,
        };
        // Warm: the sources' calls go to their threads until they have shown themselves fast.
        for _ in 0..2 * in_place::WARM_CALLS {
            merge_page(&sources, first(2), &MergeOptions::default())
                .await
                .unwrap();
        }
        assert!(in_place::eligible(&sources[0]), "the source is fast");
        hangs.armed.store(true, SeqCst);
        let started = Instant::now();
        let hung_page = tokio::spawn({
            let sources = sources.clone();
            async move { merge_page(&sources, first(2), &MergeOptions::default()).await }
        });
        while hangs.hung_on.lock().unwrap().is_none() {
            assert!(started.elapsed() < HANG, "no call hung in place");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // During the hang: a timer on the worker, and another page.
        let timer = tokio::spawn(async {
            let asked = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            asked.elapsed()
        });
        let asked = Instant::now();
        let other = merge_page(&sources, first(4), &MergeOptions::default())
            .await
            .unwrap();
        let other_took = asked.elapsed();
        let timer_took = timer.await.unwrap();
        let hung = hung_page.await.unwrap().unwrap();
        let hung_took = started.elapsed();
        let names = |page: &Page| -> Vec<(usize, String)> {
            page.items
                .iter()
                .map(|i| (i.source, i.summary.name.to_string()))
                .collect()
        };
        assert_eq!(names(&hung), [(0, "p000".into()), (1, "p000".into())]);
        assert!(hung.failures.is_empty(), "{:?}", hung.failures);
        assert_eq!(
            names(&other),
            [
                (0, "p000".into()),
                (1, "p000".into()),
                (0, "p001".into()),
                (1, "p001".into())
            ]
        );
        assert!(other.failures.is_empty(), "{:?}", other.failures);
        for (what, took) in [
            ("the timer", timer_took),
            ("the other page", other_took),
            ("the rescued page", hung_took),
        ] {
            assert!(
                took < HANG / 2,
                "{what} took {} ms, against a {} ms hang",
                took.as_millis(),
                HANG.as_millis()
            );
        }

        assert_eq!(
            hangs.hung_on.lock().unwrap().as_deref(),
            Some("page"),
            "the call hung in place, on a page thread"
        );
    }

    /// A source that cannot list in the order and has more matches than the host orders itself
    /// fails the page as `unsupported`, naming why; the others are served.
    #[tokio::test]
    async fn past_the_bound_a_source_the_host_orders_is_unsupported() {
        let many: Vec<Summary> = (0..MAX_ORDERED_BY_HOST + 1)
            .map(|i| Summary {
                name: RString::from(format!("redis-{i:06}")),
                identifier: RString::from(format!("{i}")),
                ..Summary::default()
            })
            .collect();
        let few = named(["redis".to_owned()]);
        let sources = [
            Arc::new(Source::new("big", "old", source_box(VecSource(many)))),
            Arc::new(
                Source::new("small", "new", source_box(VecSource(few))).with_capabilities(&[
                    tributary_plugin_api::capabilities::name(
                        tributary_plugin_api::capabilities::LIST_SORT,
                        1,
                    ),
                ]),
            ),
        ];
        let page = merge_page(
            &sources,
            PageRequest {
                page_size: 5,
                after: None,
                order: Primary::start(Sort::Relevance),
                filter: Filter {
                    query: "redis".into(),
                    ..Filter::default()
                },
                deadline: None,
            },
            &MergeOptions::default(),
        )
        .await
        .unwrap();
        let names: Vec<&str> = page.items.iter().map(|i| i.summary.name.as_str()).collect();
        assert_eq!(names, ["redis"]);
        assert_eq!(page.items[0].primary, Primary::Relevance(64));
        assert_eq!(page.failures.len(), 1);
        let failure = &page.failures[0];
        assert_eq!(&*failure.source, "big");
        assert_eq!(failure.kind.name(), "unsupported");
        assert!(
            failure
                .message
                .starts_with("its plugin does not declare list.sort@1"),
            "{}",
            failure.message
        );
        // Not held against the source.
        assert_eq!(sources[0].health.history().failures, 0);
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
                order: Primary::Name,
                filter: Filter::default(),
                deadline: None,
            },
            &MergeOptions::default(),
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
