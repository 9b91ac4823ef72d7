//! Plugin calls made in place, on the thread that builds the page, for sources that answer in
//! microseconds.
//!
//! A call on a source's own thread ([`crate::call::threads`]) costs a hand-off and a wake-up each way,
//! which is more than an in-memory source's whole answer to a 20-item page. So a source whose calls
//! are fast is called in place, and the isolation is kept by bounding what a hang in place can do:
//!
//! - **Where.** A page with calls in place is built on a *page thread* of its own
//!   (the merge's `merge_page`), never on one of the runtime's workers: a worker blocked in a
//!   plugin would also hold the tasks that worker alone may run (tokio lets no other worker take
//!   the task in its LIFO slot, nor wake the tasks it deferred when their budget ran out) until the
//!   plugin returned. A hang in place holds its page thread and its page alone. (One hand-off a page
//!   instead of one a call: the page threads look for the next page for a moment before sleeping,
//!   as the sources' threads do.) At most 64 pages are on page threads at once; past that a page is
//!   built on its request's task with every source on its own threads.
//!
//! - **Which sources.** A source is called in place only after [`WARM_CALLS`] calls on its threads
//!   (or in place) have shown it fast: a typical call of at most [`FAST_CALL`], no back-off and no
//!   call of it stuck in place. A source in its own process (`isolation = "process"`) never is.
//! - **How many at once.** A call in place holds one of a few process-wide *slots*, one per worker
//!   of the runtime (none off a multi-thread runtime): the calls in place use at most as many cores
//!   as the workers do, and more hung calls than that send every other call to the sources' threads.
//! - **The watchdog.** A thread of its own looks at the slots every [`TICK`]. A call that has run
//!   longer than [`OVERRUN`] is taken to be stuck: its source is no longer called in place (its
//!   later calls go to its own threads, under the source timeout and back-off as usual) until that
//!   call has returned and the source has again made [`WARM_CALLS`] fast calls, and the page that
//!   made the call is *rescued*: its request builds the page again without calls in place (the
//!   merge's `merge_page`), so its client is answered within its time with the other
//!   sources' items, and the stuck source as the threaded path reports it.
//!
//! A stuck call keeps its page thread and its slot until the plugin returns; the server goes on
//! with all its workers, with fewer (or no) calls in place.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use super::SourceHandle;

/// A source is called in place when its calls typically take at most this long.
pub const FAST_CALL: Duration = Duration::from_millis(1);
/// Calls asking for more items than this go to the source's threads: their cost is the copying,
/// which then runs beside the merge on another core, and the hand-off is small beside it.
pub const MAX_IN_PLACE_LIMIT: u32 = 32;
/// Calls a source makes on its own threads before it may be called in place (again).
pub const WARM_CALLS: u64 = 16;
/// A call in place that runs longer than this is taken to be stuck. Well above what a fast call
/// takes even when a loaded machine leaves its thread waiting for a CPU for a while: taking a
/// merely late call for stuck costs its page a second build and its source a few calls on its
/// threads.
pub const OVERRUN: Duration = Duration::from_millis(50);
/// How often the watchdog looks at the slots while calls are made in place.
pub const TICK: Duration = Duration::from_millis(5);
/// The watchdog sleeps (until the next call in place) after this long without one.
const WATCHDOG_IDLE: Duration = Duration::from_secs(1);
/// The most slots there can be, whatever the number of workers.
const MAX_SLOTS: usize = 64;
/// How long a call waits for a free slot (spinning) before it goes to the source's thread.
const SLOT_WAIT: Duration = Duration::from_micros(20);

/// A page that makes calls in place: the watchdog fires it when one of them is stuck.
#[derive(Default)]
pub struct Rescue {
    fired: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Rescue {
    /// Waits until a call in place made for this page is stuck.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.fired.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

struct Slot {
    /// Taken by a call in place.
    busy: AtomicBool,
    /// When the call started, in nanoseconds since [`epoch`] plus one; 0 while none runs.
    started: AtomicU64,
    /// The call's source and page, for the watchdog.
    owner: Mutex<Option<(Arc<SourceHandle>, Arc<Rescue>)>>,
}

struct Slots {
    slots: Vec<Slot>,
    /// Calls made in place since start: the watchdog stays awake while this moves.
    calls: AtomicU64,
    /// Stuck calls found by the watchdog since start.
    stuck: AtomicU64,
    watchdog: OnceLock<std::thread::Thread>,
    watchdog_asleep: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

impl Slots {
    fn new() -> Slots {
        Slots {
            slots: (0..MAX_SLOTS)
                .map(|_| Slot {
                    busy: AtomicBool::new(false),
                    started: AtomicU64::new(0),
                    owner: Mutex::new(None),
                })
                .collect(),
            calls: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
            watchdog: OnceLock::new(),
            watchdog_asleep: AtomicBool::new(false),
        }
    }
}

/// The process-wide slots.
fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(Slots::new)
}

/// How many slots calls made from this thread may use: one per worker of the runtime it runs on;
/// 0 off a multi-thread runtime (no calls in place there).
pub fn usable_slots() -> usize {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            handle.metrics().num_workers().min(MAX_SLOTS)
        }
        _ => 0,
    }
}

/// Calls made in place since the process started.
pub fn calls_in_place() -> u64 {
    slots().calls.load(Ordering::Relaxed)
}

/// Calls found stuck in place since the process started.
pub fn stuck_calls() -> u64 {
    slots().stuck.load(Ordering::Relaxed)
}

/// Whether `source` may be called in place now (a slot is still needed).
pub fn eligible(source: &SourceHandle) -> bool {
    source.runner.is_none() && source.health.inline_ok()
}

/// A slot held by a call in place; released when dropped (also when the call unwinds).
struct Held {
    slot: &'static Slot,
}

impl Held {
    /// Frees the slot; true when the watchdog had found the call stuck (it takes the owner).
    fn release(self) -> bool {
        let flagged = self.free();
        std::mem::forget(self);
        flagged
    }

    fn free(&self) -> bool {
        self.slot.started.store(0, Ordering::Release);
        let owner = self
            .slot
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.slot.busy.store(false, Ordering::Release);
        owner.is_none()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Only when the call unwound: `release` forgets the guard.
        self.free();
    }
}

/// One of the first `usable` slots of `all`, if one is free or frees within [`SLOT_WAIT`].
fn take_slot(all: &'static Slots, usable: usize) -> Option<Held> {
    let mut waited: Option<Instant> = None;
    loop {
        for slot in &all.slots[..usable] {
            if !slot.busy.load(Ordering::Relaxed)
                && slot
                    .busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(Held { slot });
            }
        }
        let since = *waited.get_or_insert_with(Instant::now);
        if since.elapsed() >= SLOT_WAIT {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// Calls `f` against `source` in place, if the source is fast and a slot is free; `None` when the
/// call must go to the source's own threads instead (nothing was called). A call in place cannot
/// be refused or timed out: what it returns is its answer. `rescue` is fired if the
/// call gets stuck; `deadline` is what the plugin learns from `Host::time_left`.
pub fn try_call<T>(
    source: &Arc<SourceHandle>,
    what: &str,
    source_timeout: Duration,
    deadline: Instant,
    rescue: &Arc<Rescue>,
    f: impl FnOnce(&SourceHandle) -> T,
) -> Option<T> {
    call_in(
        slots(),
        usable_slots(),
        source,
        what,
        source_timeout,
        deadline,
        rescue,
        f,
    )
}

/// [`try_call`] with the slots and how many of them may be used given.
#[allow(clippy::too_many_arguments)]
fn call_in<T>(
    all: &'static Slots,
    usable: usize,
    source: &Arc<SourceHandle>,
    what: &str,
    source_timeout: Duration,
    deadline: Instant,
    rescue: &Arc<Rescue>,
    f: impl FnOnce(&SourceHandle) -> T,
) -> Option<T> {
    if usable == 0 || !eligible(source) {
        return None;
    }
    let permit = source.health.try_permit()?;
    let held = take_slot(all, usable)?;
    *held.slot.owner.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((source.clone(), rescue.clone()));
    all.calls.fetch_add(1, Ordering::Relaxed);
    wake_watchdog(all);
    let started = Instant::now();
    held.slot.started.store(now_nanos(), Ordering::Release);
    let scope = crate::context::enter_call(deadline);
    let value = f(source);
    drop(scope);
    let took = started.elapsed();
    let flagged = held.release();
    drop(permit);
    source
        .health
        .inline_returned(started, took, source_timeout, flagged);
    if let Some(observer) = source.health.observer() {
        observer.call_ended(what, Ok(took));
    }
    Some(value)
}

/// One look of the watchdog at the slots at `now` (as [`now_nanos`] counts): each call running
/// longer than [`OVERRUN`] and not yet found stuck is taken from its slot's owner, its source marked
/// stuck in place and its page's rescue fired. Whether any call was running.
fn look(all: &Slots, now: u64) -> bool {
    let overrun = OVERRUN.as_nanos() as u64;
    let mut running = false;
    for slot in &all.slots {
        let started = slot.started.load(Ordering::Acquire);
        if started == 0 {
            continue;
        }
        running = true;
        if now.saturating_sub(started) <= overrun {
            continue;
        }
        let owner = slot.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((source, rescue)) = owner {
            all.stuck.fetch_add(1, Ordering::Relaxed);
            source.health.inline_stuck();
            tracing::warn!(
                source = %source.name,
                plugin = %source.plugin,
                "a call made in place ran longer than {} ms; the source's calls go to its own threads, and the page is built again without it in place",
                OVERRUN.as_millis()
            );
            rescue.fire();
        }
    }
    running
}

fn wake_watchdog(all: &'static Slots) {
    let thread = all.watchdog.get_or_init(|| {
        std::thread::Builder::new()
            .name("inline-watchdog".into())
            .spawn(move || watch(all))
            .expect("the watchdog thread of calls in place")
            .thread()
            .clone()
    });
    if all.watchdog_asleep.load(Ordering::Relaxed)
        && all.watchdog_asleep.swap(false, Ordering::AcqRel)
    {
        thread.unpark();
    }
}

/// The watchdog's loop over `all`: [`look`] every [`TICK`] while calls are made in place.
fn watch(all: &'static Slots) {
    let mut last_calls = all.calls.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        let running = look(all, now_nanos());
        let calls = all.calls.load(Ordering::Relaxed);
        if calls != last_calls || running {
            last_calls = calls;
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() >= WATCHDOG_IDLE {
            all.watchdog_asleep.store(true, Ordering::Release);
            // A call in place that started between the look above and now finds the flag set and
            // unparks; parking with a timeout covers the rest.
            if all.calls.load(Ordering::Relaxed) == last_calls {
                std::thread::park_timeout(WATCHDOG_IDLE);
            }
            all.watchdog_asleep.store(false, Ordering::Release);
            quiet_since = Instant::now();
        } else {
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{call::Condition, config::CallLimits};
    use tributary_plugin_api::{
        ffi::source_box, Detail, ListRequest, PackageSource, PluginError, Summary,
    };

    struct Empty;

    impl PackageSource for Empty {
        fn list(&self, _: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(Vec::new())
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found(identifier))
        }
    }

    /// Slots of the test's own (the process-wide ones are used by other tests' calls in place),
    /// watched by a watchdog of their own.
    fn watched_slots() -> &'static Slots {
        Box::leak(Box::new(Slots::new()))
    }

    /// Slots of the test's own without a watchdog: no call in them is found stuck unless the test
    /// [`look`]s.
    fn own_slots() -> &'static Slots {
        let all = watched_slots();
        // Taken for the watchdog's thread: `wake_watchdog` then starts none (and unparks none, as
        // the flag that it sleeps is never set).
        all.watchdog.set(std::thread::current()).unwrap();
        all
    }

    fn source(name: &str, max_calls: usize) -> Arc<SourceHandle> {
        Arc::new(SourceHandle::with_limits(
            name,
            "test",
            source_box(Empty),
            CallLimits {
                max_calls,
                backoff: Duration::from_secs(60),
            },
        ))
    }

    /// Records [`WARM_CALLS`] fast calls: the source may then be called in place.
    fn warm(source: &SourceHandle) {
        for _ in 0..WARM_CALLS {
            source.health.record_duration(Duration::ZERO);
        }
    }

    /// Takes a slot for `source` as [`call_in`] does, the call started at `started`.
    fn occupy(
        all: &'static Slots,
        usable: usize,
        source: &Arc<SourceHandle>,
        rescue: &Arc<Rescue>,
        started: u64,
    ) -> Held {
        let held = take_slot(all, usable).expect("a free slot");
        *held.slot.owner.lock().unwrap() = Some((source.clone(), rescue.clone()));
        held.slot.started.store(started, Ordering::Release);
        held
    }

    fn is_free(slot: &Slot) -> bool {
        !slot.busy.load(Ordering::Acquire)
            && slot.started.load(Ordering::Acquire) == 0
            && slot.owner.lock().unwrap().is_none()
    }

    fn stuck_in_place(source: &SourceHandle) -> u32 {
        source.health.stuck_in_place.load(Ordering::Acquire)
    }

    fn fired(rescue: &Rescue) -> bool {
        rescue.fired.load(Ordering::Acquire)
    }

    #[test]
    fn slots_are_taken_among_the_usable_ones_and_freed_on_release() {
        let all = own_slots();
        let (a, rescue) = (source("a", 4), Arc::new(Rescue::default()));
        let first = occupy(all, 2, &a, &rescue, 1);
        let second = occupy(all, 2, &a, &rescue, 1);
        assert!(std::ptr::eq(first.slot, &all.slots[0]));
        assert!(std::ptr::eq(second.slot, &all.slots[1]));
        assert!(take_slot(all, 2).is_none(), "both usable slots are taken");
        assert!(
            all.slots[2..].iter().all(is_free),
            "no slot past the usable ones is used"
        );
        // Its owner still in place: the watchdog did not find the call stuck.
        assert!(!first.release());
        assert!(is_free(&all.slots[0]));
        assert!(!is_free(&all.slots[1]));
        let again = take_slot(all, 2).expect("the released slot");
        assert!(std::ptr::eq(again.slot, &all.slots[0]));
        assert!(
            again.release(),
            "a slot without an owner counts as found stuck"
        );
        assert!(!second.release());
        assert!(all.slots.iter().all(is_free));
    }

    #[test]
    fn a_slot_held_by_a_call_that_unwinds_is_freed() {
        let all = own_slots();
        let (a, rescue) = (source("a", 4), Arc::new(Rescue::default()));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = occupy(all, 1, &a, &rescue, 7);
            assert!(!is_free(&all.slots[0]));
            panic!("the plugin call unwinds");
        }));
        assert!(unwound.is_err());
        assert!(is_free(&all.slots[0]), "Held's drop freed the slot");
        let held = take_slot(all, 1).expect("the slot is usable again");
        assert!(std::ptr::eq(held.slot, &all.slots[0]));
    }

    #[test]
    fn usable_slots_are_one_per_worker() {
        assert_eq!(usable_slots(), 0, "off a runtime");
        let on = |builder: &mut tokio::runtime::Builder| {
            builder.build().unwrap().block_on(async { usable_slots() })
        };
        assert_eq!(on(&mut tokio::runtime::Builder::new_current_thread()), 0);
        let workers = |n| {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            on(&mut builder)
        };
        assert_eq!(workers(1), 1);
        assert_eq!(workers(2), 2);
        assert_eq!(workers(4), 4);
        assert_eq!(workers(MAX_SLOTS), MAX_SLOTS);
        assert_eq!(workers(MAX_SLOTS + 1), MAX_SLOTS);
        assert_eq!(workers(MAX_SLOTS + 8), MAX_SLOTS);
    }

    #[test]
    fn a_source_is_eligible_after_warm_fast_calls_until_slow_stuck_or_backing_off() {
        let a = source("a", 4);
        assert!(!eligible(&a), "a new source");
        for _ in 1..WARM_CALLS {
            a.health.record_duration(FAST_CALL);
        }
        assert!(!eligible(&a), "one fast call short");
        a.health.record_duration(FAST_CALL);
        assert!(eligible(&a));

        a.health
            .record_duration(FAST_CALL + Duration::from_micros(1));
        assert!(!eligible(&a), "a slow call starts the count again");
        warm(&a);
        assert!(eligible(&a));

        a.health.inline_stuck();
        assert_eq!(stuck_in_place(&a), 1);
        assert!(!eligible(&a), "a call stuck in place");
        warm(&a);
        assert!(
            !eligible(&a),
            "fast calls on its threads while the stuck one runs"
        );
        a.health
            .inline_returned(Instant::now(), Duration::ZERO, Duration::from_secs(1), true);
        assert_eq!(stuck_in_place(&a), 0);
        assert!(
            eligible(&a),
            "the stuck call returned, after the fast calls"
        );

        a.health.record_timeout(Instant::now());
        assert!(!eligible(&a), "backing off");
        a.health
            .record_completion(Instant::now() + Duration::from_secs(1));
        assert_eq!(a.health.condition(), Condition::Healthy);
        assert!(
            eligible(&a),
            "the back-off ended with a call that succeeded"
        );
    }

    #[test]
    fn the_watchdog_takes_only_calls_running_past_the_overrun() {
        let all = own_slots();
        let overrun = OVERRUN.as_nanos() as u64;
        let (a, b) = (source("a", 4), source("b", 4));
        let (rescue_a, rescue_b) = (Arc::new(Rescue::default()), Arc::new(Rescue::default()));
        assert!(!look(all, u64::MAX), "no call running");

        let held_a = occupy(all, 4, &a, &rescue_a, 1_000);
        let held_b = occupy(all, 4, &b, &rescue_b, 1_000 + overrun);
        assert!(look(all, 1_000 + overrun), "calls running");
        assert_eq!(
            all.stuck.load(Ordering::Relaxed),
            0,
            "exactly the overrun is not stuck"
        );
        assert!(!fired(&rescue_a) && !fired(&rescue_b));

        assert!(look(all, 1_000 + overrun + 1));
        assert_eq!(all.stuck.load(Ordering::Relaxed), 1);
        assert!(fired(&rescue_a), "the stuck call's page is rescued");
        assert_eq!(stuck_in_place(&a), 1);
        assert!(all.slots[0].owner.lock().unwrap().is_none());
        assert!(!fired(&rescue_b), "the other call is within its time");
        assert_eq!(stuck_in_place(&b), 0);

        // A call found stuck is counted once, however long it stays.
        assert!(look(all, 1_000 + overrun + 1));
        assert_eq!(all.stuck.load(Ordering::Relaxed), 1);
        assert_eq!(stuck_in_place(&a), 1);

        assert!(held_a.release(), "the call had been found stuck");
        assert!(!held_b.release());
        assert!(!look(all, u64::MAX), "no call running");
        assert_eq!(all.stuck.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_rescue_wakes_every_waiter_and_stays_fired() {
        let rescue = Rescue::default();
        let first = rescue.wait();
        let second = rescue.wait();
        tokio::pin!(first, second);
        // A zero timeout polls once: both wait.
        assert!(tokio::time::timeout(Duration::ZERO, &mut first)
            .await
            .is_err());
        assert!(tokio::time::timeout(Duration::ZERO, &mut second)
            .await
            .is_err());
        rescue.fire();
        let bound = Duration::from_secs(10);
        tokio::time::timeout(bound, first).await.expect("woken");
        tokio::time::timeout(bound, second).await.expect("woken");
        tokio::time::timeout(bound, rescue.wait())
            .await
            .expect("a wait after the fire returns at once");
    }

    #[test]
    fn try_call_refuses_without_usable_slots() {
        let all = own_slots();
        let a = source("a", 4);
        warm(&a);
        let rescue = Arc::new(Rescue::default());
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            0,
            &a,
            "list",
            Duration::from_secs(1),
            far,
            &rescue,
            |_| unreachable!("no call is made"),
        );
        assert_eq!(got, None::<()>);
        assert_eq!(all.calls.load(Ordering::Relaxed), 0);
        // Off a multi-thread runtime no slot is usable: the process-wide entry refuses too.
        assert_eq!(
            try_call(&a, "list", Duration::from_secs(1), far, &rescue, |_| {
                unreachable!("no call is made")
            }),
            None::<()>
        );
    }

    #[test]
    fn try_call_refuses_a_source_that_is_not_eligible() {
        let all = own_slots();
        let a = source("a", 4);
        let rescue = Arc::new(Rescue::default());
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            4,
            &a,
            "list",
            Duration::from_secs(1),
            far,
            &rescue,
            |_| unreachable!("no call is made"),
        );
        assert_eq!(got, None::<()>);
        assert_eq!(all.calls.load(Ordering::Relaxed), 0);
        assert!(all.slots.iter().all(is_free));
        assert_eq!(a.health.in_flight(), 0);
    }

    #[test]
    fn try_call_refuses_when_every_usable_slot_is_taken() {
        let all = own_slots();
        let (a, b) = (source("a", 4), source("b", 4));
        warm(&b);
        let rescue = Arc::new(Rescue::default());
        let held = occupy(all, 1, &a, &rescue, 1);
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            1,
            &b,
            "list",
            Duration::from_secs(1),
            far,
            &rescue,
            |_| unreachable!("no call is made"),
        );
        assert_eq!(got, None::<()>);
        assert_eq!(all.calls.load(Ordering::Relaxed), 0);
        assert_eq!(b.health.in_flight(), 0, "the permit is given back");
        assert!(
            is_free(&all.slots[1]),
            "a slot past the usable one is not taken"
        );
        assert!(!held.release());
    }

    #[test]
    fn try_call_refuses_a_source_at_its_limit_of_calls() {
        let all = own_slots();
        let a = source("a", 1);
        warm(&a);
        let rescue = Arc::new(Rescue::default());
        let permit = a.health.try_permit().expect("the one permit");
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            4,
            &a,
            "list",
            Duration::from_secs(1),
            far,
            &rescue,
            |_| unreachable!("no call is made"),
        );
        assert_eq!(got, None::<()>);
        assert!(all.slots.iter().all(is_free));
        drop(permit);
    }

    #[test]
    fn a_call_in_place_answers_and_frees_its_slot_and_permit() {
        let all = own_slots();
        let a = source("a", 4);
        warm(&a);
        let rescue = Arc::new(Rescue::default());
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            4,
            &a,
            "list",
            Duration::from_secs(60),
            far,
            &rescue,
            |s| {
                let owner = all.slots[0].owner.lock().unwrap();
                let (owner, _) = owner.as_ref().expect("the call's slot names its source");
                (
                    s.name.to_string(),
                    Arc::ptr_eq(owner, &a),
                    all.slots[0].started.load(Ordering::Acquire) != 0,
                    a.health.in_flight(),
                )
            },
        );
        assert_eq!(got, Some(("a".to_owned(), true, true, 1)));
        assert_eq!(all.calls.load(Ordering::Relaxed), 1);
        assert!(all.slots.iter().all(is_free));
        assert_eq!(a.health.in_flight(), 0);
        assert_eq!(stuck_in_place(&a), 0);
    }

    #[test]
    fn a_call_in_place_that_overruns_is_found_stuck_and_rescued() {
        let all = watched_slots();
        let a = source("a", 4);
        warm(&a);
        let rescue = Arc::new(Rescue::default());
        let far = Instant::now() + Duration::from_secs(60);
        // The call returns once the watchdog has found it stuck (or after 10 s, failing the test).
        let got = call_in(
            all,
            4,
            &a,
            "list",
            Duration::from_secs(3600),
            far,
            &rescue,
            |s| {
                let bound = Instant::now() + Duration::from_secs(10);
                while !fired(&rescue) && Instant::now() < bound {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (
                    fired(&rescue),
                    stuck_in_place(s),
                    eligible(s),
                    all.stuck.load(Ordering::Relaxed),
                )
            },
        );
        assert_eq!(
            got,
            Some((true, 1, false, 1)),
            "(rescued, stuck in place, eligible, stuck calls) while the call runs"
        );
        assert_eq!(stuck_in_place(&a), 0, "the stuck call returned");
        assert!(!eligible(&a), "a slow call: fast calls must be shown again");
        assert!(all.slots.iter().all(is_free));
        assert_eq!(
            a.health.condition(),
            Condition::Healthy,
            "within the source timeout"
        );
        let bound = Duration::from_secs(10);
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(bound, rescue.wait()).await })
            .expect("the page's rescue has fired");
    }

    #[test]
    fn a_call_in_place_longer_than_the_source_timeout_backs_the_source_off() {
        let all = own_slots();
        let a = source("a", 4);
        warm(&a);
        let rescue = Arc::new(Rescue::default());
        let far = Instant::now() + Duration::from_secs(60);
        let got = call_in(
            all,
            4,
            &a,
            "list",
            Duration::from_millis(1),
            far,
            &rescue,
            |_| {
                std::thread::sleep(Duration::from_millis(2));
                "answer"
            },
        );
        assert_eq!(got, Some("answer"), "a call in place is not timed out");
        assert!(matches!(
            a.health.condition(),
            Condition::Unhealthy { timeouts: 1, .. }
        ));
        let history = a.health.history();
        assert_eq!(history.failures, 1);
        assert_eq!(
            history.last_failure.map(|(_, kind, _)| kind),
            Some("timeout")
        );
        assert!(!eligible(&a));
    }
}
