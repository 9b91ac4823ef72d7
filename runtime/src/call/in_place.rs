//! Plugin calls made in place, on the runtime's worker thread, for sources that answer in
//! microseconds.
//!
//! A call on a source's own thread ([`crate::call::threads`]) costs a hand-off and a wake-up each way,
//! which is more than an in-memory source's whole answer to a 20-item page. So a source whose calls
//! are fast is called in place, and the isolation is kept by bounding what a hang in place can do:
//!
//! - **Which sources.** A source is called in place only after [`WARM_CALLS`] calls on its threads
//!   (or in place) have shown it fast: a typical call of at most [`FAST_CALL`], no back-off and no
//!   call of it stuck in place. A source in its own process (`isolation = "process"`) never is.
//! - **How many at once.** A call in place holds one of a few process-wide *slots*: one less than
//!   the runtime's worker threads (none on a runtime with one worker). However many sources hang at
//!   the same moment, at least one worker is never inside a plugin.
//! - **The watchdog.** A thread of its own looks at the slots every [`TICK`]. A call that has run
//!   longer than [`OVERRUN`] is taken to be stuck: its source is no longer called in place (its
//!   later calls go to its own threads, under the source timeout and back-off as usual) until that
//!   call has returned and the source has again made [`WARM_CALLS`] fast calls, and the page that
//!   made the call is *rescued*: its request builds the page again without calls in place (the
//!   merge's `merge_page`), so its client is answered within its time with the other
//!   sources' items, and the stuck source as the threaded path reports it.
//!
//! A stuck call keeps its worker thread and its slot until the plugin returns; the server then runs
//! on the remaining workers, with fewer (or no) calls in place.

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

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| Slots {
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
    })
}

/// How many slots calls made from this thread may use: one less than the workers of the runtime
/// it runs on; 0 off a multi-thread runtime (no calls in place there).
pub fn usable_slots() -> usize {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            handle
                .metrics()
                .num_workers()
                .saturating_sub(1)
                .min(MAX_SLOTS)
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

fn take_slot(usable: usize) -> Option<Held> {
    let all = slots();
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
    let usable = usable_slots();
    if usable == 0 || !eligible(source) {
        return None;
    }
    let permit = source.health.try_permit()?;
    let held = take_slot(usable)?;
    *held.slot.owner.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((source.clone(), rescue.clone()));
    let all = slots();
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

fn wake_watchdog(all: &'static Slots) {
    let thread = all.watchdog.get_or_init(|| {
        std::thread::Builder::new()
            .name("inline-watchdog".into())
            .spawn(watch)
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

fn watch() {
    let all = slots();
    let mut last_calls = all.calls.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let overrun = OVERRUN.as_nanos() as u64;
    loop {
        let now = now_nanos();
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
