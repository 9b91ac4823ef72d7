//! What every scenario shares: repeated timing and medians, the table, in-memory sources and engine
//! calls, gRPC and REST clients and their baseline servers, child processes and their peak RSS.

pub mod data;
pub mod grpc;
pub mod load;
pub mod process;
pub mod rest;
pub mod rng;
pub mod table;
pub mod timing;

use std::{future::Future, time::Duration};

pub use table::{Row, Target};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Smaller sizes and fewer repetitions: a smoke run, not a measurement.
    pub quick: bool,
}

impl Settings {
    /// `full` for a real run, `quick` for a smoke run.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Repetitions of one timed run.
    pub fn reps(&self) -> usize {
        self.pick(5, 2)
    }

    /// How long one throughput run lasts.
    pub fn load_duration(&self) -> Duration {
        self.pick(Duration::from_secs(3), Duration::from_millis(700))
    }
}

/// The runtime of the bench process, shaped like the server's: one worker per core.
pub struct Bench {
    pub runtime: tokio::runtime::Runtime,
    pub settings: Settings,
}

impl Bench {
    pub fn new(settings: Settings) -> Bench {
        Bench {
            runtime: tokio::runtime::Runtime::new().expect("tokio runtime"),
            settings,
        }
    }

    /// Runs `future` as a task on a worker thread, as the server runs a request handler, and waits.
    pub fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        self.runtime
            .block_on(self.runtime.spawn(future))
            .expect("benchmark task panicked")
    }
}

/// What a scenario hands back: its rows of the table and the notes printed under it.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        progress(format!(
            "{} | {} | {} | {} | {}",
            row.scenario,
            row.ours,
            row.baseline,
            row.ratio.map(|r| format!("{r:.2}×")).unwrap_or_default(),
            row.verdict()
        ));
        self.rows.push(row);
    }

    pub fn note(&mut self, id: &str, text: impl Into<String>) {
        let text = format!("[{id}] {}", text.into());
        progress(&text);
        self.notes.push(text);
    }
}

/// Progress on stderr, so that stdout carries the table alone.
pub fn progress(text: impl AsRef<str>) {
    eprintln!("  {}", text.as_ref());
}
