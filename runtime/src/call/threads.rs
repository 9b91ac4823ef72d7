//! Each source's own threads for its plugin calls.
//!
//! Plugin code blocks, and a hung call cannot be stopped: it keeps its thread until it returns. If
//! every source's calls ran on one shared pool (tokio's blocking pool has 512 threads), enough hung
//! sources would take every thread and starve the healthy ones. Here each source has a pool of its
//! own: threads are started when a call finds none idle and end after [`IDLE_KEEP`] without work.
//! The source's limit on calls in flight (`max_calls_per_source`, enforced by [`crate::call`]
//! before a call is handed over) bounds its threads, so a hung source holds at most that many and
//! the others keep theirs.
//!
//! The hand-off is cheap when calls come back to back: a thread that finishes a call looks for the
//! next one for up to [`SPIN`] (yielding the CPU between looks) before it sleeps on the condition
//! variable, so a call that arrives meanwhile starts without a wake-up.
//!
//! When the system refuses a new thread (the process or user thread limit, memory), the call fails
//! as `overloaded` and the server counts as starved for [`STARVED_FOR`]: its overall health is
//! NOT_SERVING meanwhile (see [`starved`]).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

/// How long an idle thread waits for another call before it ends.
pub const IDLE_KEEP: Duration = Duration::from_secs(10);
/// How long after a refused thread the server reports itself starved.
pub const STARVED_FOR: Duration = Duration::from_secs(5);
/// How long a thread that finished a call looks for the next one before it sleeps.
pub const SPIN: Duration = Duration::from_micros(50);
/// Stack size of a call thread (what tokio gives its blocking threads).
const STACK_SIZE: usize = 2 * 1024 * 1024;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// One source's call threads.
pub struct SourceThreads {
    inner: Arc<Inner>,
}

struct Inner {
    /// What its threads are called.
    thread_name: String,
    queue: Mutex<Queue>,
    work: Condvar,
    /// `queue.jobs.len()`, readable without the lock by spinning threads.
    pending: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads sleeping on `work`, waiting for a job.
    idle: usize,
    /// Threads looking for a job without sleeping (see [`SPIN`]); each takes one.
    spinning: usize,
    /// Threads alive.
    threads: usize,
}

impl SourceThreads {
    /// A pool with no threads yet; `name` (the source's) names its threads.
    pub fn new(name: &str) -> SourceThreads {
        SourceThreads::with_thread_name(thread_name(name))
    }

    /// A pool whose threads are called `thread_name` (at most 15 bytes: what Linux keeps).
    pub fn with_thread_name(thread_name: String) -> SourceThreads {
        SourceThreads {
            inner: Arc::new(Inner {
                thread_name,
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
                pending: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Threads alive now (busy or idle).
    pub fn threads(&self) -> usize {
        self.inner.lock().threads
    }

    /// Runs `job` on one of the source's threads, starting one when none is idle. An error means no
    /// thread could be started; the job was not run (and has been dropped).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let mut queue = self.inner.lock();
        queue.jobs.push_back(Box::new(job));
        let waiting = queue.jobs.len();
        self.inner.pending.store(waiting, Ordering::Release);
        // A spinning thread takes it without a wake-up; else a sleeping one is woken.
        if waiting <= queue.spinning {
            return Ok(());
        }
        if waiting <= queue.spinning + queue.idle {
            drop(queue);
            self.inner.work.notify_one();
            return Ok(());
        }
        queue.threads += 1;
        drop(queue);
        let inner = self.inner.clone();
        let started = std::thread::Builder::new()
            .name(self.inner.thread_name.clone())
            .stack_size(STACK_SIZE)
            .spawn(move || inner.work_loop());
        match started {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut queue = self.inner.lock();
                queue.threads -= 1;
                // Take back a job no thread will run (the newest: ours, unless another thread
                // already took it, in which case ours runs in its place).
                if queue.jobs.len() > queue.idle + queue.spinning {
                    queue.jobs.pop_back();
                    self.inner
                        .pending
                        .store(queue.jobs.len(), Ordering::Release);
                }
                drop(queue);
                note_starved();
                Err(e)
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, queue: &mut Queue) -> Option<Job> {
        let job = queue.jobs.pop_front()?;
        self.pending.store(queue.jobs.len(), Ordering::Release);
        Some(job)
    }

    fn work_loop(self: Arc<Self>) {
        let mut queue = self.lock();
        loop {
            if let Some(job) = self.take(&mut queue) {
                drop(queue);
                // A panic in the job must not end the thread with the pool's count wrong; the
                // job's result channel is dropped, which its caller sees as an aborted call.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                // Look for the next call for a moment before sleeping.
                queue = self.lock();
                if queue.jobs.is_empty() {
                    queue.spinning += 1;
                    drop(queue);
                    let until = Instant::now() + SPIN;
                    while self.pending.load(Ordering::Acquire) == 0 && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    queue = self.lock();
                    queue.spinning -= 1;
                }
                continue;
            }
            queue.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(queue, IDLE_KEEP)
                .unwrap_or_else(|e| e.into_inner());
            queue = next;
            queue.idle -= 1;
            if timeout.timed_out() && queue.jobs.is_empty() {
                queue.threads -= 1;
                return;
            }
        }
    }
}

/// `src:NAME`, cut to the 15 bytes Linux keeps of a thread name.
fn thread_name(source: &str) -> String {
    let mut name = format!("src:{source}");
    if name.len() > 15 {
        let mut end = 15;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Milliseconds since [`epoch`] of the last refused thread, plus one (0: never).
static LAST_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Threads refused since start.
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn note_starved() {
    let now = epoch().elapsed().as_millis() as u64 + 1;
    LAST_REFUSED.store(now, Ordering::Relaxed);
    REFUSED.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        "the system refused a thread for a plugin call; calls fail as overloaded until threads are available (raise the process or user thread limit, or lower max_calls_per_source)"
    );
}

/// Whether a thread was refused within the last [`STARVED_FOR`].
pub fn starved() -> bool {
    let last = LAST_REFUSED.load(Ordering::Relaxed);
    last != 0 && epoch().elapsed().as_millis() as u64 + 1 - last < STARVED_FOR.as_millis() as u64
}

/// Threads refused since the process started.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_run_on_the_sources_threads_and_idle_threads_are_reused() {
        let pool = SourceThreads::new("a-very-long-source-name");
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            pool.run(move || {
                std::thread::sleep(Duration::from_millis(50));
                let _ = tx.send((i, std::thread::current().name().map(str::to_owned)));
            })
            .unwrap();
        }
        let mut seen: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen[0].1.as_deref(), Some("src:a-very-long"));
        assert_eq!(pool.threads(), 3, "three calls at once: three threads");
        // One call later: an idle thread takes it, no new thread.
        let waited = Instant::now();
        while pool.inner.lock().idle < 3 {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the threads went idle"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let tx2 = tx.clone();
        pool.run(move || {
            let _ = tx2.send((9, None));
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap().0, 9);
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn a_refused_thread_makes_the_server_starved_for_a_while() {
        let before = refused();
        note_starved();
        assert!(starved());
        assert_eq!(refused(), before + 1);
    }

    #[test]
    fn a_panicking_job_leaves_the_thread_serving() {
        let pool = SourceThreads::new("p");
        pool.run(|| panic!("in a job")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waited = Instant::now();
        while pool.inner.lock().idle == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the thread went idle"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.run(move || tx.send(1).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert_eq!(pool.threads(), 1);
    }
}
