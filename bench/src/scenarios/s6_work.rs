//! Scenario 6, work per page: plugin calls and items fetched for each page returned, read from the
//! engine's own page statistics, for page sizes 1, 20 and 1000 over 3 and 16 in-memory sources.
//!
//! On evenly spread data (item `i` in source `i % k`) the target is: items fetched ≤ 2 × items
//! returned + one look-ahead item per source, and ≤ 2 calls per source per page. Data with one range
//! of names per source is reported beside it. Each figure covers runs of 4 consecutive pages from
//! 50 random positions and from the start.

use crate::harness::{
    data::{self, Spread},
    rng::Rng,
    timing::Samples,
    Bench, Report, Row, Target,
};

/// Fetched items and calls of every page of one configuration.
struct Work {
    fetched: Samples,
    calls: Samples,
}

fn measure(bench: &Bench, total: usize, k: usize, size: usize, spread: Spread) -> Work {
    let items = data::items(total, k, spread);
    let sources = data::memory_sources(&items);
    let mut rng = Rng::new(6 + k as u64 * 1000 + size as u64);
    let mut starts = vec![None];
    for _ in 0..50 {
        let i = rng.below((total - 4 * size - 1) as u64) as usize;
        starts.push(Some(data::key_of(i, total, k, spread)));
    }
    bench.run(async move {
        let mut work = Work {
            fetched: Samples::new(),
            calls: Samples::new(),
        };
        for start in starts {
            let mut after = start;
            for _ in 0..4 {
                let page = data::page(&sources, size, after).await;
                assert_eq!(page.items.len(), size);
                work.fetched.push(page.stats.fetched as f64);
                work.calls.push(page.stats.calls as f64);
                after = data::next_key(&sources, &page);
            }
        }
        work
    })
}

pub fn run(bench: &Bench, report: &mut Report) {
    let total = bench.settings.pick(200_000, 20_000);
    for (k, size, spread) in [
        (3, 1, Spread::RoundRobin),
        (3, 20, Spread::RoundRobin),
        (3, 1000, Spread::RoundRobin),
        (16, 1, Spread::RoundRobin),
        (16, 20, Spread::RoundRobin),
        (16, 1000, Spread::RoundRobin),
        (3, 20, Spread::Ranges),
        (16, 20, Spread::Ranges),
    ] {
        let work = measure(bench, total, k, size, spread);
        let fetched_max = work.fetched.max();
        let calls_max = work.calls.max();
        let allowed_items = 2 * size + k;
        let allowed_calls = 2 * k;
        let ours = format!(
            "fetched {:.1} (max {fetched_max}), calls {:.1} (max {calls_max})",
            work.fetched.mean(),
            work.calls.mean()
        );
        let (layout, target) = match spread {
            Spread::RoundRobin => (
                "evenly spread",
                Target::Check {
                    text: format!("fetched ≤ {allowed_items}, calls ≤ {allowed_calls}"),
                    met: fetched_max <= allowed_items as f64 && calls_max <= allowed_calls as f64,
                },
            ),
            Spread::Ranges => ("one range per source", Target::Report),
        };
        report.row(
            Row::new(
                "6",
                format!("work per page: {k} sources, page size {size}, {layout}"),
            )
            .figures(ours, format!("{size} returned"))
            .ratio(work.fetched.mean() / size as f64)
            .target(target),
        );
    }
}
