//! Calling into a plugin safely, with one health and back-off policy per source ([`SourceHealth`])
//! whichever way the call is made:
//! - [`call`]: on one of the source's own threads ([`threads`]), under a deadline, within a bounded
//!   number of calls in flight per source, and not at all while the source is backing off. An
//!   isolated source's handle forwards the call to its runner process ([`crate::isolation`]), whose
//!   client adds the runner's own restart back-off;
//! - [`list_in_place`]: a fast source's small `list` made on the caller's thread under a watchdog
//!   ([`in_place`]), only when the source's health allows it ([`in_place::eligible`]: in process,
//!   recent calls fast, none stuck), counted in the same health. It answers `None` when the call
//!   must take the first way instead.
//!
//! [`list`], [`detail`], [`named`] and [`list_in_place`] are the operations the rest of the host
//! calls; each ends in the plugin's answer or a [`Fault`]. Which way a source is called is decided
//! here: a source with a runner is always called through [`call`] (its handle forwards to the
//! process), an in-process source in place when [`in_place::eligible`] and a slot allow it, else on
//! its threads. The merge only asks for in place on pages where it pays (small, no search).
//!
//! A call's failure is a typed [`Fault`]; [`SourceHandle::record`] applies the one rule for what
//! counts against the source.
//!
//! A call that overruns its deadline cannot be stopped (it is plugin code on an OS thread); its result
//! is discarded when it finally returns. What bounds the damage of a hung plugin is the per-source limit
//! on calls in flight (a hung call keeps its permit until it returns; a call that finds every permit
//! taken waits for one within its own time, then fails as overloaded) and the back-off: after a call
//! overruns the *source* timeout, the source is unhealthy and refused without a call until the
//! back-off ends, doubling with each further overrun up to [`MAX_BACKOFF`]. When the back-off ends,
//! exactly one call goes through as a trial (half-open) while the others are still refused; the
//! trial's success makes the source healthy again, its overrun is the next step of back-off.
//!
//! Each source also keeps its recent failures ([`History`]): calls that failed (errors, panics,
//! contract violations, timeouts) as counts and the last one. A source whose last
//! [`FAILING_AFTER`] calls all failed is *failing*: health and `ListPlugins` say so until a call
//! succeeds.
//!
//! A source is charged only for its own time: its clock runs from when the plugin call starts on its
//! thread to when it returns, and a watchdog task (not the caller, who may have given up) charges an
//! overrun of the source timeout. Calls that started before the current back-off began belong to the
//! same stall and add no step. A call that timed out before it got a thread is `Overloaded` (the
//! host's queue), not a timeout.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod fault;
pub mod in_place;
mod ops;
mod source;
pub mod threads;

pub use fault::{FailureKind, Fault};
pub use ops::{detail, list, list_in_place, named};
pub use source::SourceHandle;

use crate::config::CallLimits;
use tributary_plugin_api::ErrorKind;

/// What a server learns of each call a source makes (its metrics): the runtime knows nothing of
/// how they are kept.
pub trait CallObserver: Send + Sync {
    /// A call named `what` (`list`, `detail`, or a named call) ended: its plugin time when it
    /// completed, else why not.
    fn call_ended(&self, what: &str, result: Result<Duration, &CallError>);
}

/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A source's admission state.
pub struct SourceHealth {
    permits: Arc<Semaphore>,
    limits: CallLimits,
    state: Mutex<State>,
    /// A moving average of how long completed calls took, in microseconds.
    typical_call_micros: AtomicU64,
    /// Where calls are counted and timed, once a server has attached its observer.
    observer: std::sync::OnceLock<Box<dyn CallObserver>>,
    history: Mutex<History>,
    /// Whether the source is backing off (`state.retry_at` is set), readable without the lock.
    backing_off: AtomicBool,
    /// Whether any call failed since the last success (`history.consecutive_failures > 0`).
    has_failures: AtomicBool,
    /// When a call last succeeded, in milliseconds since the Unix epoch (0: never).
    last_success_ms: AtomicU64,
    /// Calls in a row that took at most [`crate::call::in_place::FAST_CALL`]; reset by a slower call and
    /// by a call stuck in place.
    fast_streak: AtomicU64,
    /// Calls of this source found stuck in place that have not returned yet.
    stuck_in_place: AtomicU32,
}

/// A source whose last this many calls failed is failing.
pub const FAILING_AFTER: u32 = 3;

/// A source's record of failed calls, as health and `ListPlugins` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Calls that failed since the source was built.
    pub failures: u64,
    /// Calls that failed since the last one that succeeded.
    pub consecutive_failures: u32,
    /// The last failure: when, its kind (`panic`, `timeout`, `contract_violation`, ...) and message.
    pub last_failure: Option<(std::time::SystemTime, &'static str, String)>,
    /// When a call last succeeded.
    pub last_success: Option<std::time::SystemTime>,
    /// Items left out of answers because a field other than their key broke the contract (each
    /// costs only itself; see `contract::check_list_dropping`), and why the last one was.
    pub items_dropped: u64,
    pub last_dropped: Option<String>,
}

impl History {
    /// Whether the last [`FAILING_AFTER`] calls all failed.
    pub fn failing(&self) -> bool {
        self.consecutive_failures >= FAILING_AFTER
    }
}

#[derive(Default)]
struct State {
    consecutive_timeouts: u32,
    retry_at: Option<Instant>,
    /// When the back-off in force began: a call that started before it belongs to the same stall and
    /// adds no further step.
    backoff_since: Option<Instant>,
    /// The trial call running after the back-off ended (its number), if any.
    trial: Option<u64>,
    trials: u64,
}

/// Whether a source is taking calls, as `ListPlugins` and health report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Healthy,
    /// Backing off after `timeouts` overruns in a row; calls resume in `retry_in`.
    Unhealthy {
        timeouts: u32,
        retry_in: Duration,
    },
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Healthy => write!(f, "healthy"),
            Condition::Unhealthy { timeouts, retry_in } => write!(
                f,
                "unhealthy: {timeouts} call(s) in a row exceeded the source timeout; next try in {} ms",
                retry_in.as_millis()
            ),
        }
    }
}

/// Why a guarded call did not produce a value: what happened, with the figures that say so. Its
/// [`kind`](CallError::kind) is how the page and the metrics class it; its `Display` is the one-line
/// message clients and operators read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin ran longer than the source timeout; the source now backs off for `backoff`.
    SourceTimeout {
        what: String,
        timeout: Duration,
        backoff: Duration,
    },
    /// The request's deadline came first, with `left` of it when the call was asked for.
    Deadline { what: String, left: Duration },
    /// The source is backing off after `timeouts` overruns in a row; no call was made.
    BackingOff { timeouts: u32, retry_in: Duration },
    /// The back-off has ended and its one trial call is still in flight; no call was made.
    TrialInFlight { timeouts: u32 },
    /// The source already has its maximum of calls in flight and none finished within `waited`.
    AtLimit { max_calls: usize, waited: Duration },
    /// The call waited `waited` for one of the source's `slots` call slots and could not finish
    /// within the `left` that remained (the host's queue, not the plugin).
    Queued {
        what: String,
        waited: Duration,
        slots: usize,
        left: Duration,
    },
    /// The call waited its whole `waited` for a thread and never started.
    NotStarted { what: String, waited: Duration },
    /// The system refused the source a thread.
    NoThread { what: String, error: String },
    /// The call's thread ended without an answer (the runtime is shutting down).
    Aborted { what: String },
}

impl CallError {
    /// How a page, the source's history and the metrics class this error.
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::SourceTimeout { .. } | CallError::Deadline { .. } => FailureKind::Timeout,
            CallError::BackingOff { .. } | CallError::TrialInFlight { .. } => {
                FailureKind::Unhealthy
            }
            CallError::AtLimit { .. }
            | CallError::Queued { .. }
            | CallError::NotStarted { .. }
            | CallError::NoThread { .. } => FailureKind::Overloaded,
            CallError::Aborted { .. } => FailureKind::Plugin(ErrorKind::Internal),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::SourceTimeout {
                what,
                timeout,
                backoff,
            } => write!(
                f,
                "{what} call took longer than the source timeout of {} ms; the source backs off for {} ms",
                timeout.as_millis(),
                backoff.as_millis()
            ),
            CallError::Deadline { what, left } => write!(
                f,
                "{what} call did not finish within the request's deadline ({} ms left)",
                left.as_millis()
            ),
            CallError::BackingOff { timeouts, retry_in } => write!(
                f,
                "source is unhealthy after {timeouts} timeout(s) in a row; next try in {} ms",
                retry_in.as_millis()
            ),
            CallError::TrialInFlight { timeouts } => write!(
                f,
                "source is unhealthy after {timeouts} timeout(s) in a row; a trial call is in flight"
            ),
            CallError::AtLimit { max_calls, waited } => write!(
                f,
                "source has {max_calls} calls in flight (the limit) and none finished within {} ms",
                waited.as_millis()
            ),
            CallError::Queued {
                what,
                waited,
                slots,
                left,
            } => write!(
                f,
                "{what} call waited {} ms for one of the source's {slots} call slots and could not finish within the {} ms left",
                waited.as_millis(),
                left.as_millis()
            ),
            CallError::NotStarted { what, waited } => write!(
                f,
                "{what} call waited {} ms for a thread and did not start",
                waited.as_millis()
            ),
            CallError::NoThread { what, error } => write!(
                f,
                "{what} call could not start: the system refused a thread ({error})"
            ),
            CallError::Aborted { what } => write!(
                f,
                "{what} call did not complete: its thread ended without an answer"
            ),
        }
    }
}

impl std::error::Error for CallError {}

impl SourceHealth {
    pub fn new(limits: CallLimits) -> SourceHealth {
        SourceHealth {
            permits: Arc::new(Semaphore::new(limits.max_calls.max(1))),
            limits,
            state: Mutex::new(State::default()),
            typical_call_micros: AtomicU64::new(0),
            observer: std::sync::OnceLock::new(),
            history: Mutex::new(History::default()),
            backing_off: AtomicBool::new(false),
            has_failures: AtomicBool::new(false),
            last_success_ms: AtomicU64::new(0),
            fast_streak: AtomicU64::new(0),
            stuck_in_place: AtomicU32::new(0),
        }
    }

    /// Whether the source may be called in place ([`crate::call::in_place`]): its last
    /// [`crate::call::in_place::WARM_CALLS`] calls were fast, it is not backing off, and no call of it is
    /// stuck in place.
    pub fn inline_ok(&self) -> bool {
        self.fast_streak.load(Ordering::Relaxed) >= crate::call::in_place::WARM_CALLS
            && !self.backing_off.load(Ordering::Relaxed)
            && self.stuck_in_place.load(Ordering::Relaxed) == 0
    }

    /// A permit to call now, without waiting.
    pub(crate) fn try_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// The watchdog found a call of this source stuck in place.
    pub(crate) fn inline_stuck(&self) {
        self.stuck_in_place.fetch_add(1, Ordering::AcqRel);
        self.fast_streak.store(0, Ordering::Relaxed);
    }

    /// A call made in place, started at `started`, returned after `took`; `flagged` when the
    /// watchdog had found it stuck.
    pub(crate) fn inline_returned(
        &self,
        started: Instant,
        took: Duration,
        source_timeout: Duration,
        flagged: bool,
    ) {
        if flagged {
            self.stuck_in_place.fetch_sub(1, Ordering::AcqRel);
        }
        self.record_duration(took);
        if took <= source_timeout {
            self.record_completion(started);
        } else {
            self.record_timeout(started);
            self.record_outcome(Err((
                "timeout",
                &format!(
                    "a call made in place ran {} ms, longer than the source timeout of {} ms",
                    took.as_millis(),
                    source_timeout.as_millis()
                ),
            )));
        }
    }

    /// Where this source's calls are counted, once attached.
    pub(crate) fn observer(&self) -> Option<&dyn CallObserver> {
        self.observer.get().map(|o| &**o)
    }

    /// The source's record of failed calls.
    pub fn history(&self) -> History {
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        history.last_success = match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        };
        history
    }

    /// Records how a call that was made ended: `Ok` or the failure's kind and message. Only failures
    /// that speak of the source's health belong here (not a refusal without a call, not an answer
    /// such as "not found").
    pub fn record_outcome(&self, outcome: Result<(), (&'static str, &str)>) {
        let now = std::time::SystemTime::now();
        if outcome.is_ok() {
            let ms = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis().max(1) as u64);
            self.last_success_ms.store(ms, Ordering::Relaxed);
            // The lock only when there are failures to forget.
            if !self.has_failures.load(Ordering::Relaxed) {
                return;
            }
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                history.consecutive_failures = 0;
                self.has_failures.store(false, Ordering::Relaxed);
            }
            Err((kind, message)) => {
                self.has_failures.store(true, Ordering::Relaxed);
                history.failures += 1;
                history.consecutive_failures = history.consecutive_failures.saturating_add(1);
                history.last_failure = Some((now, kind, message.to_owned()));
            }
        }
    }

    /// Records items left out of an answer: how many, and why the first was.
    pub fn record_dropped(&self, count: usize, why: &str) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.items_dropped += count as u64;
        history.last_dropped = Some(why.to_owned());
    }

    /// Reports this source's calls to `observer` from now on (the first attach wins).
    pub fn attach_observer(&self, observer: Box<dyn CallObserver>) {
        let _ = self.observer.set(observer);
    }

    /// How long this source's calls have typically taken lately (zero before the first call).
    pub fn typical_call(&self) -> Duration {
        Duration::from_micros(self.typical_call_micros.load(Ordering::Relaxed))
    }

    /// Folds one completed call's duration into the moving average (weight 1/4 for the newest).
    fn record_duration(&self, took: Duration) {
        if took <= crate::call::in_place::FAST_CALL {
            self.fast_streak.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fast_streak.store(0, Ordering::Relaxed);
        }
        let took = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.typical_call_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 4 + took / 4
        };
        self.typical_call_micros.store(new, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn condition(&self) -> Condition {
        let state = self.lock();
        match state.retry_at {
            Some(at) => Condition::Unhealthy {
                timeouts: state.consecutive_timeouts,
                retry_in: at.saturating_duration_since(Instant::now()),
            },
            None => Condition::Healthy,
        }
    }

    /// Calls currently running on the source's threads, finished or not from the caller's view.
    pub fn in_flight(&self) -> usize {
        self.limits.max_calls.max(1) - self.permits.available_permits()
    }

    /// Waits up to `time` for a permit to call.
    async fn admit(&self, time: Duration) -> Result<OwnedSemaphorePermit, CallError> {
        match tokio::time::timeout(time, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CallError::AtLimit {
                max_calls: self.limits.max_calls,
                waited: time,
            }),
        }
    }

    /// Refuses a call while the source backs off. Once the back-off has ended, admits exactly one
    /// call, the trial (its number is returned), and refuses others until it ends.
    fn check_backoff(&self) -> Result<Option<u64>, CallError> {
        let mut state = self.lock();
        let Some(at) = state.retry_at else {
            return Ok(None);
        };
        let now = Instant::now();
        if now < at {
            return Err(CallError::BackingOff {
                timeouts: state.consecutive_timeouts,
                retry_in: at - now,
            });
        }
        if state.trial.is_some() {
            return Err(CallError::TrialInFlight {
                timeouts: state.consecutive_timeouts,
            });
        }
        state.trials += 1;
        let trial = state.trials;
        state.trial = Some(trial);
        Ok(Some(trial))
    }

    /// The trial `trial` has ended without restoring the source (or has been given up).
    fn end_trial(&self, trial: u64) {
        let mut state = self.lock();
        if state.trial == Some(trial) {
            state.trial = None;
        }
    }

    /// Records a call, started at `call_started`, that overran the source timeout; returns the
    /// back-off now in force. Calls that started before the current back-off began are the same
    /// stall: one stall is one step of back-off, however many calls it caught.
    fn record_timeout(&self, call_started: Instant) -> Duration {
        let mut state = self.lock();
        if let (Some(since), Some(at)) = (state.backoff_since, state.retry_at) {
            if call_started <= since {
                return at.saturating_duration_since(Instant::now());
            }
        }
        state.backoff_since = Some(Instant::now());
        state.trial = None;
        state.consecutive_timeouts = state.consecutive_timeouts.saturating_add(1);
        let doublings = state.consecutive_timeouts.saturating_sub(1).min(16);
        let backoff = self
            .limits
            .backoff
            .saturating_mul(1u32 << doublings)
            .min(MAX_BACKOFF);
        state.retry_at = Some(Instant::now() + backoff);
        self.backing_off.store(true, Ordering::Relaxed);
        backoff
    }

    /// A call that started at `call_started` returned within the source timeout. One that started
    /// after the back-off began (the trial) makes the source healthy; one caught in the stall does
    /// not.
    fn record_completion(&self, call_started: Instant) {
        if !self.backing_off.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if let Some(since) = state.backoff_since {
            if call_started <= since {
                return;
            }
        }
        if state.consecutive_timeouts > 0 || state.retry_at.is_some() {
            let trials = state.trials;
            *state = State {
                trials,
                ..State::default()
            };
            self.backing_off.store(false, Ordering::Relaxed);
        }
    }
}

/// The trial call after a back-off; dropping it ends the trial.
struct Trial(Arc<SourceHandle>, u64);

impl Drop for Trial {
    fn drop(&mut self) {
        self.0.health.end_trial(self.1);
    }
}

/// How long a call may take: the source timeout, cut short by the request's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub source_timeout: Duration,
    /// When the client stops waiting, less a margin to send the answer in.
    pub deadline: Option<Instant>,
}

impl Budget {
    /// The time left for one call, and whether the source timeout (not the client's deadline) is
    /// what limits it.
    pub(crate) fn for_call(&self) -> (Duration, bool) {
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < self.source_timeout {
                    (left, false)
                } else {
                    (self.source_timeout, true)
                }
            }
            None => (self.source_timeout, true),
        }
    }
}

/// Runs `f` against `source` on one of its own threads, guarded as this module describes. `what` names the
/// call in messages (and in metrics: `list` or `detail`).
pub async fn call<T, F>(
    source: &Arc<SourceHandle>,
    what: &str,
    budget: Budget,
    f: F,
) -> Result<T, CallError>
where
    T: Send + 'static,
    F: FnOnce(&SourceHandle) -> T + Send + 'static,
{
    let result = guarded_call(source, what, budget, f).await;
    if let Some(observer) = source.health.observer() {
        observer.call_ended(what, result.as_ref().map(|(_, took)| *took));
    }
    result.map(|(value, _)| value)
}

async fn guarded_call<T, F>(
    source: &Arc<SourceHandle>,
    what: &str,
    budget: Budget,
    f: F,
) -> Result<(T, Duration), CallError>
where
    T: Send + 'static,
    F: FnOnce(&SourceHandle) -> T + Send + 'static,
{
    let (limit, by_source) = budget.for_call();
    let waited_from = Instant::now();
    // Ends the trial (if this call is one) when dropped: if no call is made, or when the plugin
    // returns.
    let trial = source
        .health
        .check_backoff()?
        .map(|n| Trial(source.clone(), n));
    let permit = source.health.admit(limit).await?;
    let src = source.clone();
    // The source's clock runs from when the plugin call starts on its thread to when it returns,
    // whoever stops waiting: a watchdog, not the caller, charges an overrun of the source timeout.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Instant>();
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<()>();
    let started_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let started_in_call = started_at.clone();
    let (result_tx, task) = tokio::sync::oneshot::channel();
    let source_timeout = budget.source_timeout;
    let job = move || {
        let started = Instant::now();
        let _ = started_in_call.set(started);
        let _ = started_tx.send(started);
        // What the plugin learns from `Host::time_left`: the end of this call's budget.
        let scope = crate::context::enter_call(waited_from + limit);
        let value = f(&src);
        drop(scope);
        drop(finished_tx);
        let took = started.elapsed();
        // Recorded here, on the plugin's clock, whether or not the caller still waits.
        if took <= source_timeout {
            src.health.record_completion(started);
        }
        // The call is over before its answer is sent: a caller that has its answer (and a client
        // that has its page) finds the source's permit back and the trial ended.
        drop(permit);
        drop(trial);
        let _ = result_tx.send((value, took));
    };
    if let Err(e) = source.threads.run(job) {
        return Err(CallError::NoThread {
            what: what.to_owned(),
            error: e.to_string(),
        });
    }
    {
        let source = source.clone();
        let source_timeout = budget.source_timeout;
        let what = what.to_owned();
        tokio::spawn(async move {
            let Ok(started) = started_rx.await else {
                return;
            };
            let overran = tokio::select! {
                _ = tokio::time::sleep_until((started + source_timeout).into()) => true,
                _ = finished_rx => false,
            };
            if overran {
                let backoff = source.health.record_timeout(started);
                source.health.record_outcome(Err((
                    "timeout",
                    &format!(
                        "{what} call ran longer than the source timeout of {} ms",
                        source_timeout.as_millis()
                    ),
                )));
                tracing::warn!(
                    source = %source.name,
                    plugin = %source.plugin,
                    backoff_ms = backoff.as_millis() as u64,
                    "{what} call exceeded the source timeout; backing off"
                );
            }
        });
    }
    let time = limit.saturating_sub(waited_from.elapsed());
    let mut task = task;
    match tokio::time::timeout(time, &mut task).await {
        Ok(Ok((value, took))) => {
            source.health.record_duration(took);
            Ok((value, took))
        }
        Ok(Err(_)) => Err(CallError::Aborted {
            what: what.to_owned(),
        }),
        Err(_) if by_source => {
            let Some(&started) = started_at.get() else {
                // The call never started (it waited for a thread): the host's queue, not the
                // plugin's time.
                return Err(CallError::NotStarted {
                    what: what.to_owned(),
                    waited: limit,
                });
            };
            // Only the plugin's own running time counts against it: a call that spent part of its
            // time waiting for one of the source's slots and then ran within the source timeout
            // is the host's queue (overloaded), not a stall, and starts no back-off. The watchdog
            // above charges an overrun the same way.
            let plugin_deadline = started + budget.source_timeout;
            let waited = started.saturating_duration_since(waited_from);
            let finished_in_time = matches!(
                tokio::time::timeout_at(plugin_deadline.into(), &mut task).await,
                Ok(Ok((_, took))) if took < budget.source_timeout
            );
            // A call that did not wait ran for its whole time: a stall, whatever it answered (an
            // isolated call is ended by its runner's own timeout).
            if finished_in_time && waited >= Duration::from_millis(1) {
                return Err(CallError::Queued {
                    what: what.to_owned(),
                    waited,
                    slots: source.health.limits.max_calls,
                    left: limit,
                });
            }
            let backoff = source.health.record_timeout(started);
            Err(CallError::SourceTimeout {
                what: what.to_owned(),
                timeout: budget.source_timeout,
                backoff,
            })
        }
        Err(_) => Err(CallError::Deadline {
            what: what.to_owned(),
            left: limit,
        }),
    }
}

/// The instant to finish by for a request that the client will wait `timeout` for: a tenth of it (at
/// most 100 ms) is kept back to build and send the answer.
pub fn deadline_for(timeout: Duration) -> Instant {
    let margin = (timeout / 10).min(Duration::from_millis(100));
    Instant::now() + timeout.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets() {
        let guard = SourceHealth::new(CallLimits {
            max_calls: 2,
            backoff: Duration::from_millis(100),
        });
        assert_eq!(guard.condition(), Condition::Healthy);
        // Calls that started after the back-off in force began: each a new stall.
        let later = |n: u64| Instant::now() + Duration::from_secs(n);
        let early = Instant::now();
        assert_eq!(guard.record_timeout(later(1)), Duration::from_millis(100));
        assert_eq!(guard.record_timeout(later(2)), Duration::from_millis(200));
        assert_eq!(guard.record_timeout(later(3)), Duration::from_millis(400));
        // A call that started before the back-off began is the same stall: no further step.
        assert!(guard.record_timeout(early) <= Duration::from_millis(400));
        assert!(matches!(
            guard.check_backoff(),
            Err(CallError::BackingOff { .. })
        ));
        assert!(matches!(
            guard.condition(),
            Condition::Unhealthy { timeouts: 3, .. }
        ));
        for n in 0..20 {
            guard.record_timeout(later(10 + n));
        }
        assert!(
            matches!(guard.condition(), Condition::Unhealthy { retry_in, .. } if retry_in <= MAX_BACKOFF)
        );
        // A call caught in the stall returning does not restore the source; a later one does.
        guard.record_completion(early);
        assert!(matches!(guard.condition(), Condition::Unhealthy { .. }));
        guard.record_completion(later(100));
        assert_eq!(guard.condition(), Condition::Healthy);
    }

    #[test]
    fn after_the_backoff_exactly_one_trial_goes_through() {
        let guard = SourceHealth::new(CallLimits {
            max_calls: 8,
            backoff: Duration::from_millis(1),
        });
        assert_eq!(guard.check_backoff(), Ok(None), "healthy: no trial");
        guard.record_timeout(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(guard.check_backoff(), Ok(Some(1)));
        let refused = guard.check_backoff().unwrap_err();
        assert!(
            matches!(&refused, CallError::TrialInFlight { timeouts: 1 }),
            "{refused:?}"
        );
        // A trial that ends without restoring the source lets the next one through.
        guard.end_trial(1);
        assert_eq!(guard.check_backoff(), Ok(Some(2)));
        // The trial overran: the next step of back-off, and no trial until it ends.
        guard.record_timeout(Instant::now());
        assert!(matches!(
            guard.condition(),
            Condition::Unhealthy { timeouts: 2, .. }
        ));
        assert!(matches!(
            guard.check_backoff(),
            Err(CallError::BackingOff { .. })
        ));
        // A stale trial's end does not end the next one.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(guard.check_backoff(), Ok(Some(3)));
        guard.end_trial(2);
        assert!(guard.check_backoff().is_err());
        // The trial succeeded.
        guard.record_completion(Instant::now());
        assert_eq!(guard.condition(), Condition::Healthy);
        assert_eq!(guard.check_backoff(), Ok(None));
    }

    #[test]
    fn failures_in_a_row_make_a_source_failing_until_a_success() {
        let guard = SourceHealth::new(CallLimits::default());
        for n in 0..FAILING_AFTER {
            assert!(!guard.history().failing(), "{n}");
            guard.record_outcome(Err(("panic", "boom")));
        }
        let history = guard.history();
        assert!(history.failing());
        assert_eq!(history.failures, 3);
        assert_eq!(history.consecutive_failures, 3);
        let (_, kind, message) = history.last_failure.unwrap();
        assert_eq!((kind, message.as_str()), ("panic", "boom"));
        guard.record_outcome(Ok(()));
        let history = guard.history();
        assert!(!history.failing());
        assert_eq!(history.failures, 3);
        assert!(history.last_success.is_some() && history.last_failure.is_some());
    }

    #[test]
    fn typical_call_is_a_moving_average() {
        let guard = SourceHealth::new(CallLimits::default());
        assert_eq!(guard.typical_call(), Duration::ZERO);
        guard.record_duration(Duration::from_millis(40));
        assert_eq!(guard.typical_call(), Duration::from_millis(40));
        guard.record_duration(Duration::from_millis(0));
        assert_eq!(guard.typical_call(), Duration::from_millis(30));
    }

    fn source_with(limits: CallLimits) -> Arc<SourceHandle> {
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
        Arc::new(SourceHandle::with_limits(
            "a",
            "test",
            source_box(Empty),
            limits,
        ))
    }

    #[test]
    fn while_backing_off_calls_are_refused_and_no_trial_is_used() {
        let guard = SourceHealth::new(CallLimits {
            max_calls: 8,
            backoff: Duration::from_secs(60),
        });
        guard.record_timeout(Instant::now());
        for _ in 0..3 {
            let refused = guard.check_backoff().unwrap_err();
            assert!(
                matches!(&refused, CallError::BackingOff { timeouts: 1, .. })
                    && refused.to_string().starts_with(
                        "source is unhealthy after 1 timeout(s) in a row; next try in "
                    ),
                "{refused:?}"
            );
        }
        let state = guard.lock();
        assert_eq!((state.trial, state.trials), (None, 0));
    }

    #[test]
    fn a_trial_guard_ends_its_trial_when_dropped() {
        // No back-off time: the back-off has always ended, and a trial may go at once.
        let source = source_with(CallLimits {
            max_calls: 8,
            backoff: Duration::ZERO,
        });
        let health = &source.health;
        health.record_timeout(Instant::now());
        let trial = Trial(source.clone(), health.check_backoff().unwrap().unwrap());
        assert_eq!(trial.1, 1);
        assert!(matches!(
            health.check_backoff(),
            Err(CallError::TrialInFlight { .. })
        ));
        drop(trial);
        let trial = Trial(source.clone(), health.check_backoff().unwrap().unwrap());
        assert_eq!(trial.1, 2, "the next call is the next trial");
        // The trial overran: the next step of back-off, which ends the trial in force; the stale
        // guard's drop does not end the next one.
        let overran = Instant::now();
        health.record_timeout(overran);
        assert!(matches!(
            health.condition(),
            Condition::Unhealthy { timeouts: 2, .. }
        ));
        assert_eq!(health.check_backoff(), Ok(Some(3)));
        drop(trial);
        assert!(
            health.check_backoff().is_err(),
            "trial 3 is still in flight"
        );
        // Trial 3 returns in time: the source is healthy, and trials are numbered on.
        health.record_completion(overran + Duration::from_secs(3600));
        assert_eq!(health.condition(), Condition::Healthy);
        assert_eq!(health.check_backoff(), Ok(None));
        health.record_timeout(Instant::now() + Duration::from_secs(2));
        assert!(matches!(
            health.condition(),
            Condition::Unhealthy { timeouts: 1, .. }
        ));
        assert_eq!(health.check_backoff(), Ok(Some(4)));
    }

    #[test]
    fn failing_means_the_last_calls_all_failed() {
        let history = |failures, consecutive_failures| History {
            failures,
            consecutive_failures,
            ..History::default()
        };
        assert!(!History::default().failing());
        assert!(!history(100, FAILING_AFTER - 1).failing());
        assert!(history(FAILING_AFTER as u64, FAILING_AFTER).failing());
        assert!(history(100, u32::MAX).failing());
        assert!(
            !history(100, 0).failing(),
            "many failures, but not the last"
        );
    }

    #[tokio::test]
    async fn calls_in_flight_are_bounded() {
        let guard = SourceHealth::new(CallLimits {
            max_calls: 2,
            backoff: Duration::from_millis(100),
        });
        let wait = Duration::from_millis(20);
        let a = guard.admit(wait).await.unwrap();
        let _b = guard.admit(wait).await.unwrap();
        assert_eq!(guard.in_flight(), 2);
        assert!(matches!(
            guard.admit(wait).await,
            Err(CallError::AtLimit { .. })
        ));
        drop(a);
        assert!(guard.admit(wait).await.is_ok());
    }
}
