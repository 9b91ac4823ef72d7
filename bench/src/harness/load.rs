//! The load loop shared by the page-rate scenarios: clients, each on its own connection, ask for
//! pages for a while after a warm-up, and the good answers are counted.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// What a load run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Good answers (each protocol says what a good page is) per second.
    pub pages_per_second: f64,
    /// Calls that failed or whose answer was not a good page.
    pub bad: u64,
}

/// One call of a client on its connection: whether the answer was a good page.
pub type Call<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Each of `connections` asks with `call` for the pages of `requests` (each client walks the list
/// from its own offset) for `duration`, after a warm-up of 300 ms; answers that end after
/// `duration` are not counted.
pub async fn run<C, R, F>(
    connections: Vec<C>,
    requests: Arc<Vec<R>>,
    duration: Duration,
    call: F,
) -> Load
where
    C: Send + 'static,
    R: Send + Sync + 'static,
    F: for<'a> Fn(&'a mut C, &'a R) -> Call<'a> + Clone + Send + 'static,
{
    let clients = connections.len();
    let warm_up = Duration::from_millis(300);
    let start = Instant::now() + warm_up;
    let end = start + duration;
    let good = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut client) in connections.into_iter().enumerate() {
        let requests = requests.clone();
        let (good, bad, call) = (good.clone(), bad.clone(), call.clone());
        tasks.spawn(async move {
            let mut n = c * requests.len() / clients.max(1);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let counting = now >= start;
                let request = &requests[n % requests.len()];
                n += 1;
                let ok = call(&mut client, request).await;
                if counting && Instant::now() <= end {
                    if ok {
                        good.fetch_add(1, Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Load {
        pages_per_second: good.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(),
        bad: bad.load(Ordering::Relaxed),
    }
}
