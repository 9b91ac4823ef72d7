//! Calling into a plugin safely: every call runs on a blocking thread, under a deadline, within a
//! bounded number of calls in flight per source, and not at all while the source is backing off.
//!
//! A call that overruns its deadline cannot be stopped (it is plugin code on an OS thread); its result
//! is discarded when it finally returns. What bounds the damage of a hung plugin is the per-source limit
//! on calls in flight (a hung call keeps its permit until it returns; a call that finds every permit
//! taken waits for one within its own time, then fails as overloaded) and the back-off: after a call
//! overruns the *source* timeout, the source is unhealthy and refused without a call until the
//! back-off ends, doubling with each further overrun up to [`MAX_BACKOFF`]. The first call after the
//! back-off is a trial: success makes the source healthy again.
//!
//! A source is charged only for its own time: its clock runs from when the plugin call starts on its
//! thread to when it returns, and a watchdog task (not the caller, who may have given up) charges an
//! overrun of the source timeout. Calls that started before the current back-off began belong to the
//! same stall and add no step. A call that timed out before it got a thread is `Overloaded` (the
//! host's queue), not a timeout.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::registry::Source;

/// Calls in flight per source when the configuration says nothing.
pub const DEFAULT_MAX_CALLS: usize = 64;
/// The first back-off after a timeout when the configuration says nothing.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Limits for one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    pub max_calls: usize,
    pub backoff: Duration,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_calls: DEFAULT_MAX_CALLS,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// A source's admission state.
pub struct CallGuard {
    permits: Arc<Semaphore>,
    limits: GuardLimits,
    state: Mutex<State>,
    /// A moving average of how long completed calls took, in microseconds.
    typical_call_micros: AtomicU64,
    /// Where calls are counted and timed, once a server has attached its metrics.
    metrics: std::sync::OnceLock<crate::metrics::SourceMetrics>,
}

#[derive(Default)]
struct State {
    consecutive_timeouts: u32,
    retry_at: Option<Instant>,
    /// When the back-off in force began: a call that started before it belongs to the same stall and
    /// adds no further step.
    backoff_since: Option<Instant>,
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

/// Why a guarded call did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call overran its time; the message says which limit.
    Timeout(String),
    /// The source is backing off; no call was made.
    Unhealthy(String),
    /// The source already has its maximum of calls in flight; no call was made.
    Overloaded(String),
    /// The blocking task failed to complete (the runtime is shutting down).
    Aborted(String),
}

impl CallGuard {
    pub fn new(limits: GuardLimits) -> CallGuard {
        CallGuard {
            permits: Arc::new(Semaphore::new(limits.max_calls.max(1))),
            limits,
            state: Mutex::new(State::default()),
            typical_call_micros: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts and times this source's calls in `metrics` from now on (the first attach wins).
    pub fn attach_metrics(&self, metrics: crate::metrics::SourceMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// How long this source's calls have typically taken lately (zero before the first call).
    pub fn typical_call(&self) -> Duration {
        Duration::from_micros(self.typical_call_micros.load(Ordering::Relaxed))
    }

    /// Folds one completed call's duration into the moving average (weight 1/4 for the newest).
    fn record_duration(&self, took: Duration) {
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

    /// Calls currently running on blocking threads, finished or not from the caller's view.
    pub fn in_flight(&self) -> usize {
        self.limits.max_calls.max(1) - self.permits.available_permits()
    }

    /// Refuses a call while the source backs off; otherwise waits up to `time` for a permit.
    async fn admit(&self, time: Duration) -> Result<OwnedSemaphorePermit, CallError> {
        self.check_backoff()?;
        match tokio::time::timeout(time, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CallError::Overloaded(format!(
                "source has {} calls in flight (the limit) and none finished within {} ms",
                self.limits.max_calls,
                time.as_millis()
            ))),
        }
    }

    fn check_backoff(&self) -> Result<(), CallError> {
        {
            let state = self.lock();
            if let Some(at) = state.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(CallError::Unhealthy(format!(
                        "source is unhealthy after {} timeout(s) in a row; next try in {} ms",
                        state.consecutive_timeouts,
                        (at - now).as_millis()
                    )));
                }
            }
        }
        Ok(())
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
        state.consecutive_timeouts = state.consecutive_timeouts.saturating_add(1);
        let doublings = state.consecutive_timeouts.saturating_sub(1).min(16);
        let backoff = self
            .limits
            .backoff
            .saturating_mul(1u32 << doublings)
            .min(MAX_BACKOFF);
        state.retry_at = Some(Instant::now() + backoff);
        backoff
    }

    fn record_completion(&self) {
        let mut state = self.lock();
        if state.consecutive_timeouts > 0 || state.retry_at.is_some() {
            *state = State::default();
        }
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
    fn for_call(&self) -> (Duration, bool) {
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

/// Runs `f` against `source` on a blocking thread, guarded as this module describes. `what` names the
/// call in messages (and in metrics: `list` or `detail`).
pub async fn call<T, F>(
    source: &Arc<Source>,
    what: &str,
    budget: Budget,
    f: F,
) -> Result<T, CallError>
where
    T: Send + 'static,
    F: FnOnce(&Source) -> T + Send + 'static,
{
    let result = guarded_call(source, what, budget, f).await;
    if let Some(metrics) = source.guard.metrics.get() {
        metrics.count(what, result.as_ref().map(|(_, took)| *took));
    }
    result.map(|(value, _)| value)
}

async fn guarded_call<T, F>(
    source: &Arc<Source>,
    what: &str,
    budget: Budget,
    f: F,
) -> Result<(T, Duration), CallError>
where
    T: Send + 'static,
    F: FnOnce(&Source) -> T + Send + 'static,
{
    let (limit, by_source) = budget.for_call();
    let waited_from = Instant::now();
    let permit = source.guard.admit(limit).await?;
    let src = source.clone();
    // The source's clock runs from when the plugin call starts on its thread to when it returns,
    // whoever stops waiting: a watchdog, not the caller, charges an overrun of the source timeout.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Instant>();
    let (finished_tx, finished_rx) = tokio::sync::oneshot::channel::<()>();
    let started_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let started_in_call = started_at.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let started = Instant::now();
        let _ = started_in_call.set(started);
        let _ = started_tx.send(started);
        // What the plugin learns from `Host::time_left`: the end of this call's budget.
        let _scope = crate::plugin_context::enter_call(waited_from + limit);
        let value = f(&src);
        drop(finished_tx);
        (value, started.elapsed())
    });
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
                let backoff = source.guard.record_timeout(started);
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
    match tokio::time::timeout(time, task).await {
        Ok(Ok((value, took))) => {
            source.guard.record_completion();
            source.guard.record_duration(took);
            Ok((value, took))
        }
        Ok(Err(join_error)) => Err(CallError::Aborted(format!(
            "{what} call did not complete: {join_error}"
        ))),
        Err(_) if by_source => {
            let Some(&started) = started_at.get() else {
                // The call never started (it waited for a thread): the host's queue, not the
                // plugin's time.
                return Err(CallError::Overloaded(format!(
                    "{what} call waited {} ms for a thread and did not start",
                    limit.as_millis()
                )));
            };
            // Charged on the plugin's own clock; the watchdog charges the same stall at most once
            // more, which adds no step.
            tokio::time::sleep_until((started + budget.source_timeout).into()).await;
            let backoff = source.guard.record_timeout(started);
            Err(CallError::Timeout(format!(
                "{what} call took longer than the source timeout of {} ms; the source backs off for {} ms",
                limit.as_millis(),
                backoff.as_millis()
            )))
        }
        Err(_) => Err(CallError::Timeout(format!(
            "{what} call did not finish within the request's deadline ({} ms left)",
            limit.as_millis()
        ))),
    }
}

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
    fn backoff_doubles_and_resets() {
        let guard = CallGuard::new(GuardLimits {
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
            Err(CallError::Unhealthy(_))
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
        guard.record_completion();
        assert_eq!(guard.condition(), Condition::Healthy);
    }

    #[test]
    fn typical_call_is_a_moving_average() {
        let guard = CallGuard::new(GuardLimits::default());
        assert_eq!(guard.typical_call(), Duration::ZERO);
        guard.record_duration(Duration::from_millis(40));
        assert_eq!(guard.typical_call(), Duration::from_millis(40));
        guard.record_duration(Duration::from_millis(0));
        assert_eq!(guard.typical_call(), Duration::from_millis(30));
    }

    #[tokio::test]
    async fn calls_in_flight_are_bounded() {
        let guard = CallGuard::new(GuardLimits {
            max_calls: 2,
            backoff: Duration::from_millis(100),
        });
        let wait = Duration::from_millis(20);
        let a = guard.admit(wait).await.unwrap();
        let _b = guard.admit(wait).await.unwrap();
        assert_eq!(guard.in_flight(), 2);
        assert!(matches!(
            guard.admit(wait).await,
            Err(CallError::Overloaded(_))
        ));
        drop(a);
        assert!(guard.admit(wait).await.is_ok());
    }
}
