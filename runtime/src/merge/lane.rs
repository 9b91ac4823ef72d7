//! One source's lane in a page's merge: how it gets its batches (a call in place, or a task on the
//! source's threads fed by demand), the contract check of each answer, and the next call, which
//! starts one item back (see [`NextCall`]).

use std::sync::Arc;

use abi_stable::std_types::{vec::IntoIter as RIntoIter, RVec};
use tokio::{sync::mpsc, task::JoinSet};
use tributary_plugin_api::{
    contract, order::OrderKey, query::CompiledFilter, ErrorKind, ListRequest, Sort, Summary,
};

use super::{token::Primary, Failure, FailureKind, InPlace, MergeOptions, Page};
use crate::call::{self, Budget, Fault, SourceHandle as Source};

/// The page's order and filter, shared by its lanes: what answers are checked, re-filtered and
/// keyed by.
pub(super) struct Order {
    pub(super) sort: Sort,
    /// The client's filter, its query parsed: a lane re-applies it to every answer (a source built
    /// before the 1.1 query syntax is sent a broader query, see [`super::source_filter`]).
    pub(super) filter: CompiledFilter,
}

impl Order {
    /// `item`'s position in the page's order.
    pub(super) fn key(&self, item: &Summary) -> OrderKey {
        OrderKey::of(self.sort, self.filter.query(), item)
    }
}

/// The part of `key` before the name.
pub(super) fn primary_of(key: &OrderKey) -> Primary {
    match key {
        OrderKey::Name { .. } => Primary::Name,
        OrderKey::Relevance { score, .. } => Primary::Relevance(*score),
        OrderKey::Updated { updated, .. } => Primary::Updated(updated.clone()),
    }
}

/// The most matches of one source the host orders itself, for a source whose plugin does not
/// declare `list.sort@1` (built before sort orders): past this, the source fails the page as
/// `unsupported` rather than being served out of order.
pub const MAX_ORDERED_BY_HOST: usize = 10_000;

/// The merge's view of one source.
pub(super) struct Lane {
    pub(super) source: Arc<Source>,
    /// The batch being merged, in the plugin's own vector: moving it into a `Vec` would copy it.
    pub(super) buffer: RIntoIter<Summary>,
    /// In an order other than by name, each buffered item's key before its name, in step with
    /// `buffer`; empty by name.
    pub(super) primaries: std::vec::IntoIter<Primary>,
    pub(super) exhausted: bool,
    pub(super) failed: bool,
    pub(super) fetch: Fetch,
}

/// How a lane gets its batches.
// The request held in place is larger than the channels; boxing it would cost an allocation per
// source per page, and a page has one lane per source.
#[allow(clippy::large_enum_variant)]
pub(super) enum Fetch {
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
    pub(super) fn spawn(
        tasks: &mut JoinSet<()>,
        source: &Arc<Source>,
        call: NextCall,
        budget: Budget,
        order: &Arc<Order>,
    ) -> Fetch {
        let (demand_tx, demand_rx) = mpsc::channel(1);
        let (batch_tx, batch_rx) = mpsc::channel(1);
        tasks.spawn(feed(
            source.clone(),
            call,
            budget,
            order.clone(),
            demand_rx,
            batch_tx,
        ));
        Fetch::Task {
            in_flight: true,
            demand: demand_tx,
            batches: batch_rx,
        }
    }

    /// Starts the task that orders a source's matches itself ([`order_by_host`]): `call` lists
    /// them by name from the start; the one batch holds those after `after` in the page's order.
    pub(super) fn spawn_ordered_by_host(
        tasks: &mut JoinSet<()>,
        source: &Arc<Source>,
        call: NextCall,
        budget: Budget,
        order: &Arc<Order>,
        after: Option<OrderKey>,
    ) -> Fetch {
        let (demand_tx, _) = mpsc::channel(1);
        let (batch_tx, batch_rx) = mpsc::channel(1);
        tasks.spawn(order_by_host(
            source.clone(),
            call,
            budget,
            order.clone(),
            after,
            batch_tx,
        ));
        Fetch::Task {
            in_flight: true,
            demand: demand_tx,
            batches: batch_rx,
        }
    }
}

pub(super) struct Batch {
    items: RVec<Summary>,
    /// Each item's key before its name (empty by name).
    primaries: Vec<Primary>,
    /// Items the plugin returned before the host re-applied the filter.
    fetched: usize,
    exhausted: bool,
}

/// A checked answer: the batch, and the next call, which starts one item back (see [`NextCall`]).
pub(super) struct Answer {
    batch: Batch,
    next: NextCall,
}

/// A lane's next `list` call. After the first batch a call asks again from the item before the last
/// one returned, one item more: a source that answers in order must answer that last item first. One
/// item per batch is the cost; what it buys is a source whose order breaks between two of its
/// batches (a binary search over unsorted data that lands past items it never served) failing with
/// `contract_violation` instead of leaving items out unseen.
pub(super) struct NextCall {
    request: ListRequest,
    /// The least the call's limit must be (the limit is set when the call is made; see
    /// [`refiltered_limit`]); `None` for the lane's first call, whose limit was set with the page.
    min_limit: Option<u32>,
    /// The item the answer must start with: the last one of the previous answer.
    expect_first: Option<OrderKey>,
}

impl NextCall {
    pub(super) fn first(request: ListRequest) -> NextCall {
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

/// Checks a `list` answer to `call` against the contract, re-applies the filter, and records the
/// outcome in the source's history.
fn answer(
    source: &Source,
    call: NextCall,
    result: Result<RVec<Summary>, Fault>,
    order: &Order,
) -> Result<Answer, Failure> {
    let key_of = |item: &Summary| order.key(item);
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
            1 => Some(request.after_key()),
            n => Some(Some(key_of(&items[n - 2]))),
        };
        let next_expect = items.last().map(key_of);
        let raw_first = items.first().map(key_of);
        if let Some(expected) = &expect_first {
            if raw_first.as_ref() != Some(expected) {
                return Err(Fault::contract(order_broken(
                    &request,
                    expected,
                    items.first(),
                    order,
                )));
            }
        }
        let dropped = contract::check_list_dropping(&request, &mut items)
            .map_err(|v| Fault::contract(v.into_message()))?;
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
    source.record(checked.as_ref().map(|_| ()));
    let (mut items, returned, repeated, next_start, next_expect) =
        checked.map_err(|fault| Failure::new(source, fault))?;
    // Counted as the plugin answered them: a dropped item still moves the listing on.
    let exhausted = returned < request.limit as usize;
    let fetched = returned - repeated;
    if !order.filter.is_empty() {
        items.retain(|item| order.filter.matches(item));
    }
    let primaries = match order.sort {
        Sort::Name => Vec::new(),
        _ => items.iter().map(|item| primary_of(&key_of(item))).collect(),
    };
    // A plugin that ignores the filter makes the host drop what does not match: ask it for
    // twice as many each time (up to MAX_REFILTER_BATCH), so a selective query costs a few
    // large calls rather than thousands of page-sized ones.
    let min_limit = refiltered_limit(&request, items.len(), fetched);
    let mut next = request;
    let mut expect_first = None;
    if let Some(start) = next_start {
        next.set_order(order.sort, start.as_ref());
        expect_first = next_expect;
    }
    Ok(Answer {
        batch: Batch {
            items,
            primaries,
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
fn order_broken(
    request: &ListRequest,
    expected: &OrderKey,
    found: Option<&Summary>,
    order: &Order,
) -> String {
    let asked = match request.after_key() {
        Some(after) => format!("after {}", show_key(&after)),
        None => "from the start".to_owned(),
    };
    let found = match found {
        Some(item) => format!("with {}", show_key(&order.key(item))),
        None => "with nothing".to_owned(),
    };
    let sorted_by = match order.sort {
        Sort::Name => "name, then identifier",
        Sort::Relevance => "relevance, then name, then identifier",
        Sort::Updated => "update time, then name, then identifier",
    };
    format!(
        "the order broke between two answers: asked again for the items {asked}, the source \
         answered {found} where its previous answer ended with {} (is its data sorted by \
         {sorted_by}?)",
        show_key(expected)
    )
}

fn show_key(key: &OrderKey) -> String {
    let before = match key {
        OrderKey::Name { .. } => String::new(),
        OrderKey::Relevance { score, .. } => format!("score {score}, "),
        OrderKey::Updated {
            updated: Some(t), ..
        } => format!("updated {t}, "),
        OrderKey::Updated { updated: None, .. } => "no update time, ".to_owned(),
    };
    format!(
        "{before}{:?} (identifier {:?})",
        key.name(),
        key.identifier()
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
pub(super) struct Fill<'a, 'b> {
    pub(super) in_place: Option<&'a InPlace<'b>>,
    pub(super) tasks: &'a mut JoinSet<()>,
    pub(super) options: &'a MergeOptions,
    pub(super) order: &'a Arc<Order>,
}

/// Makes sure the lane has a head item, fetching a batch of up to `want` items when its buffer is
/// empty. `Ok(false)` when the lane is exhausted or has failed (the failure is recorded on the page).
pub(super) async fn fill(
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
                match call::list_in_place(
                    &lane.source,
                    &call.request,
                    in_place.budget,
                    in_place.rescue,
                ) {
                    Some(result) => match answer(&lane.source, call, result, ctx.order) {
                        Ok(answer) => {
                            *next = Some(answer.next);
                            Some(Ok(answer.batch))
                        }
                        Err(failure) => Some(Err(failure)),
                    },
                    None => {
                        // Not in place this time (no slot, or the source is no longer fast): its
                        // threads make this call and the lane's later ones.
                        lane.fetch =
                            Fetch::spawn(ctx.tasks, &lane.source, call, in_place.budget, ctx.order);
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
                lane.primaries = batch.primaries.into_iter();
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
    options: &MergeOptions,
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

/// Makes `call` on the source's threads and checks the answer ([`answer`]); a call that produced
/// nothing is recorded in the source's history.
async fn list_checked(
    source: &Arc<Source>,
    call: NextCall,
    budget: Budget,
    order: &Order,
) -> Result<Answer, Failure> {
    let NextCall {
        request,
        min_limit,
        expect_first,
    } = call;
    match call::list(source, request, budget).await {
        Ok((request, items)) => {
            let returned = NextCall {
                request,
                min_limit,
                expect_first,
            };
            answer(source, returned, Ok(items), order)
        }
        Err(fault) => {
            source.record(Err(&fault));
            Err(Failure::new(source, fault))
        }
    }
}

/// One source's task: fetch, check, send; then wait for the next demand.
async fn feed(
    source: Arc<Source>,
    mut call: NextCall,
    budget: Budget,
    order: Arc<Order>,
    mut demand: mpsc::Receiver<u32>,
    batches: mpsc::Sender<Result<Batch, Failure>>,
) {
    loop {
        let answered = list_checked(&source, call, budget, &order).await;
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

/// The task of a source that cannot list in the page's order (its plugin does not declare
/// `list.sort@1`): lists every match ([`all_matches`]), keys them in the page's order, and sends
/// those after `after` as one last batch.
async fn order_by_host(
    source: Arc<Source>,
    call: NextCall,
    budget: Budget,
    order: Arc<Order>,
    after: Option<OrderKey>,
    batches: mpsc::Sender<Result<Batch, Failure>>,
) {
    let found = all_matches(
        &source,
        call.request,
        budget,
        &order.filter,
        "list.sort@1",
        "orders",
    )
    .await;
    let (matches, fetched) = match found {
        Ok(found) => found,
        Err(failure) => {
            let _ = batches.send(Err(failure)).await;
            return;
        }
    };
    let mut keyed: Vec<(OrderKey, Summary)> = matches
        .into_iter()
        .map(|item| (order.key(&item), item))
        .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let primaries = keyed.iter().map(|(key, _)| primary_of(key)).collect();
    let items: RVec<Summary> = keyed.into_iter().map(|(_, item)| item).collect();
    let _ = batches
        .send(Ok(Batch {
            items,
            primaries,
            fetched,
            exhausted: true,
        }))
        .await;
}

/// Every match of `filter` in a source, listed by name from the start of `request` in large
/// batches, each checked and re-filtered as any answer, with how many items the source returned.
/// For a source whose plugin lacks `capability`, so that the host `does` the work itself: past
/// [`MAX_ORDERED_BY_HOST`] matches the source fails with `unsupported`, which is not held against
/// it.
pub(super) async fn all_matches(
    source: &Arc<Source>,
    mut request: ListRequest,
    budget: Budget,
    filter: &CompiledFilter,
    capability: &str,
    does: &str,
) -> Result<(Vec<Summary>, usize), Failure> {
    let by_name = Order {
        sort: Sort::Name,
        filter: filter.clone(),
    };
    request.set_order(Sort::Name, None);
    request.limit = MAX_REFILTER_BATCH;
    let mut call = NextCall::first(request);
    let mut matches: Vec<Summary> = Vec::new();
    let mut fetched = 0;
    loop {
        let answered = list_checked(source, call, budget, &by_name).await?;
        fetched += answered.batch.fetched;
        matches.extend(answered.batch.items);
        if matches.len() > MAX_ORDERED_BY_HOST {
            return Err(Failure {
                source: source.name.clone(),
                plugin: source.plugin.clone(),
                kind: FailureKind::Plugin(ErrorKind::Unsupported),
                message: format!(
                    "its plugin does not declare {capability} (it was built before interface \
                     1.1), so the host {does} its matches itself, and it has more than \
                     {MAX_ORDERED_BY_HOST} of them: narrow the filter, or rebuild the plugin \
                     against tributary-plugin-api 1.1"
                ),
            });
        }
        if answered.batch.exhausted {
            return Ok((matches, fetched));
        }
        call = answered.next;
        call.set_limit(MAX_REFILTER_BATCH);
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
