//! Scenario 1, the engine alone: 1,000,000 items from 3, 8 and 16 in-memory sources through the
//! real fan-out/fan-in, against a single-threaded `itertools::kmerge` of the same sorted vectors.
//!
//! Two shapes of engine run: one page holding the whole catalog (every source answers once; the
//! merge and the copies dominate), and the whole catalog as 1,000-item pages resumed by key (the
//! per-page cost of tasks, channels and seeks on top). The baseline clones each item once, as a source
//! does when it answers, so both sides produce the same owned items; the by-reference merge, which
//! no source that hands out owned items can match, is given in a note.
//!
//! Beside them: 20-item pages (the API's default size) from random keys, per item served, against
//! the same pages made by the shortest route over the same vectors (each source seeks by binary
//! search, `kmerge_by` by reference, the page's items cloned once: [`data::kmerge_page`]), which
//! shows the fixed cost of a page; and, in a note, what one plugin call costs on the source's
//! threads, on tokio's blocking pool and in place.

use std::{sync::Arc, time::Instant};

use tributary_plugin_api::{Filter, ListRequest, ROption, RString, SeekKey};
use tributary_runtime::merge::token::MergeKey;

use crate::harness::{
    data::{self, Spread},
    progress,
    rng::Rng,
    timing::{fmt_secs, time, time_async, with_spread, Samples, NOISY},
    Bench, Report, Row, Target,
};

pub fn run(bench: &Bench, report: &mut Report) {
    blocking_round_trip(bench, report);
    let total = bench.settings.pick(1_000_000, 100_000);
    let reps = bench.settings.reps();
    for k in [3, 8, 16] {
        progress(format!("{k} sources, {total} items"));
        let items = data::items(total, k, Spread::RoundRobin);
        let sources = data::memory_sources(&items);
        let (mut whole, mut paged, mut base, mut refs) = (
            Samples::new(),
            Samples::new(),
            Samples::new(),
            Samples::new(),
        );
        // Run 0 warms caches and the allocator and is not counted.
        for rep in 0..=reps {
            let (t, merged) = time(|| data::kmerge(&items));
            assert_eq!(merged.len(), total);
            drop(merged);
            let (t_refs, merged) = time(|| data::kmerge_refs(&items));
            assert_eq!(merged.len(), total);
            drop(merged);

            let s = sources.clone();
            let (t_whole, page) = bench.run(async move {
                time_async(async move { data::page(&s, total, None).await }).await
            });
            assert_eq!(page.items.len(), total);
            drop(page);

            let s = sources.clone();
            let (t_paged, pages) = bench.run(async move {
                time_async(async move {
                    let mut pages = Vec::with_capacity(total / 1000 + 1);
                    let mut after = None;
                    loop {
                        let page = data::page(&s, 1000, after).await;
                        after = data::next_key(&s, &page);
                        pages.push(page);
                        if after.is_none() {
                            break pages;
                        }
                    }
                })
                .await
            });
            assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), total);
            drop(pages);

            if rep > 0 {
                base.push(t.as_secs_f64());
                refs.push(t_refs.as_secs_f64());
                whole.push(t_whole.as_secs_f64());
                paged.push(t_paged.as_secs_f64());
            }
        }
        let base_text = with_spread(fmt_secs(base.median()), &base);
        report.row(
            Row::new(
                "1",
                format!("engine, {k} sources, {total} items as one page"),
            )
            .figures(with_spread(fmt_secs(whole.median()), &whole), &base_text)
            .ratio(whole.median() / base.median())
            .target(Target::AtMost(1.5))
            .noisy(whole.spread() > NOISY || base.spread() > NOISY),
        );
        report.row(
            Row::new(
                "1",
                format!("engine, {k} sources, {total} items as 1,000-item pages"),
            )
            .figures(with_spread(fmt_secs(paged.median()), &paged), &base_text)
            .ratio(paged.median() / base.median())
            .target(Target::AtMost(1.5))
            .noisy(paged.spread() > NOISY || base.spread() > NOISY),
        );
        report.note(
            "1",
            format!(
                "{k} sources: kmerge by reference, without cloning, takes {} (the cloning kmerge {})",
                fmt_secs(refs.median()),
                fmt_secs(base.median())
            ),
        );

        // Small pages: the fixed cost of a page (tasks, channels, blocking-pool calls, seeks) per
        // item served, against the cloning kmerge's cost per item.
        let pages = bench.settings.pick(2000, 300);
        let mut rng = Rng::new(10 + k as u64);
        let starts: Vec<MergeKey> = (0..pages)
            .map(|_| {
                let i = rng.below((total - 40) as u64) as usize;
                data::key_of(i, total, k, Spread::RoundRobin)
            })
            .collect();
        let mut small = Samples::new();
        let mut floor = Samples::new();
        for rep in 0..=reps {
            let (s, st) = (sources.clone(), starts.clone());
            let t = bench.run(async move {
                let (t, ()) = time_async(async {
                    for after in st {
                        let page = data::page(&s, 20, Some(after)).await;
                        assert_eq!(page.items.len(), 20);
                    }
                })
                .await;
                t
            });
            let (t_floor, ()) = time(|| {
                for after in &starts {
                    let page = data::kmerge_page(&items, 20, after);
                    assert_eq!(page.len(), 20);
                }
            });
            if rep > 0 {
                small.push(t.as_secs_f64() / (pages * 20) as f64);
                floor.push(t_floor.as_secs_f64() / (pages * 20) as f64);
            }
        }
        let target = match k {
            3 => Target::AtMost(2.0),
            16 => Target::AtMost(3.0),
            _ => Target::Report,
        };
        report.row(
            Row::new(
                "1",
                format!("engine, {k} sources, 20-item pages at random keys, per item, vs kmerge of the same pages"),
            )
            .figures(
                with_spread(fmt_secs(small.median()), &small),
                with_spread(fmt_secs(floor.median()), &floor),
            )
            .ratio(small.median() / floor.median())
            .target(target)
            .noisy(small.spread() > NOISY || floor.spread() > NOISY),
        );
        let per_item = base.median() / total as f64;
        report.note(
            "1",
            format!(
                "{k} sources: a 20-item page costs {} per item against {} per item of the whole-catalog cloning kmerge ({:.2}x)",
                fmt_secs(small.median()),
                fmt_secs(per_item),
                small.median() / per_item
            ),
        );
    }
}

/// One `list` call of 21 items through `guard::call` (as the engine makes every call: on one of the
/// source's own threads, with its deadline and watchdog), through tokio's `spawn_blocking`, and in
/// place: the cost of the thread hop.
pub fn blocking_round_trip(bench: &Bench, report: &mut Report) {
    let items = data::items(100_000, 1, Spread::RoundRobin);
    let source = data::memory_sources(&items).remove(0);
    let calls = bench.settings.pick(20_000, 2_000);
    let mut rng = Rng::new(11);
    let requests: Arc<Vec<ListRequest>> = Arc::new(
        (0..calls)
            .map(|_| {
                let i = rng.below(100_000 - 40) as usize;
                let key = data::key_of(i, 100_000, 1, Spread::RoundRobin);
                ListRequest {
                    after: ROption::RSome(SeekKey {
                        name: RString::from(key.name),
                        identifier: RString::from(key.identifier),
                    }),
                    limit: 21,
                    filter: Filter::default(),
                    extensions: Default::default(),
                }
            })
            .collect(),
    );
    let (mut hop, mut inline, mut guarded) = (Samples::new(), Samples::new(), Samples::new());
    for rep in 0..=bench.settings.reps() {
        let (s, r) = (source.clone(), requests.clone());
        let t_guard = bench.run(async move {
            let budget = tributary_runtime::call::Budget {
                source_timeout: std::time::Duration::from_secs(60),
                deadline: None,
            };
            let start = Instant::now();
            for i in 0..r.len() {
                let r = r.clone();
                let n = tributary_runtime::call::call(&s, "list", budget, move |src| {
                    src.imp.list(&r[i]).unwrap().len()
                })
                .await
                .expect("guarded call");
                assert_eq!(n, 21);
            }
            start.elapsed()
        });
        let (s, r) = (source.clone(), requests.clone());
        let t_hop = bench.run(async move {
            let start = Instant::now();
            for i in 0..r.len() {
                let (s, r) = (s.clone(), r.clone());
                let n = tokio::task::spawn_blocking(move || s.imp.list(&r[i]).unwrap().len())
                    .await
                    .expect("blocking call");
                assert_eq!(n, 21);
            }
            start.elapsed()
        });
        let (s, r) = (source.clone(), requests.clone());
        let t_inline = bench.run(async move {
            let start = Instant::now();
            for request in r.iter() {
                assert_eq!(s.imp.list(request).unwrap().len(), 21);
            }
            start.elapsed()
        });
        if rep > 0 {
            hop.push(t_hop.as_secs_f64() / calls as f64);
            inline.push(t_inline.as_secs_f64() / calls as f64);
            guarded.push(t_guard.as_secs_f64() / calls as f64);
        }
    }
    report.note(
        "1",
        format!(
            "one 21-item list call through guard::call (the source's own threads, as the engine \
             calls): {}; through spawn_blocking: {}; the same call in place: {}",
            fmt_secs(guarded.median()),
            fmt_secs(hop.median()),
            fmt_secs(inline.median())
        ),
    );
}
