//! Scenario 10, search: the first page of a query on the scenario 9 Helm catalog (one 50 MB index,
//! and three such indexes merged as three sources), against the unfiltered first page on the same
//! server, one client, calls alternating. Two queries: one matching about 0.1% of the packages, and
//! one matching nothing although every trigram of it occurs in the catalog (so an index cannot refuse
//! it at a glance).
//!
//! Then 64 clients send the query that matches nothing, as a catalog UI does on every keystroke,
//! while one more client asks for the unfiltered first page: its latency against the same request
//! on the idle server.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use tributary_proto::v1 as pb;

use crate::harness::{
    grpc,
    process::{artifacts, source_table, ServerProcess, Workdir},
    progress,
    timing::{fmt_secs, Samples},
    Bench, Report, Row, Target,
};

use super::s9_helm::write_index;

/// The ten charts numbered 1230 to 1239 (names `<word>-01230` ...) contain this.
const RARE_PHRASE: &str = "-0123";
/// Matches the ten charts numbered 1230 to 1239: [`RARE_PHRASE`] quoted, since a `-` at the start
/// of a term excludes it (`-0123` alone matches almost everything).
const RARE_QUERY: &str = "\"-0123\"";
/// Every trigram occurs (in names and descriptions), the whole never does: chart numbers stay below
/// 20,000 at this size.
const NOTHING_QUERY: &str = "redis-1999";
/// Searching clients under load.
const SEARCHERS: usize = 64;

fn search(page_size: i32, query: &str) -> pb::ListAvailablePackageSummariesRequest {
    pb::ListAvailablePackageSummariesRequest {
        page_size,
        page_token: String::new(),
        filter: (!query.is_empty()).then(|| pb::FilterOptions {
            query: query.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Median latency of the first page of `query` and of the unfiltered first page, calls alternating.
fn alternate(
    bench: &Bench,
    url: String,
    query: &'static str,
    pairs: usize,
) -> (Samples, Samples, usize) {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let (mut searched, mut plain) = (Samples::new(), Samples::new());
        let mut found = 0;
        for n in 0..pairs + 20 {
            let start = Instant::now();
            let a = grpc::list(&mut client, search(20, query)).await;
            let t_search = start.elapsed();
            let start = Instant::now();
            let b = grpc::list(&mut client, search(20, "")).await;
            let t_plain = start.elapsed();
            assert_eq!(b.available_package_summaries.len(), 20);
            found = a.available_package_summaries.len();
            if n >= 20 {
                searched.push(t_search.as_secs_f64());
                plain.push(t_plain.as_secs_f64());
            }
        }
        (searched, plain, found)
    })
}

/// How many items match `query` over every page (`total_size`), asked once, untimed.
fn matches(bench: &Bench, url: String, query: &'static str) -> u64 {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let mut request = search(20, query);
        request.include_facets = true;
        let page = grpc::list(&mut client, request).await;
        assert!(
            page.facets.as_ref().is_some_and(|f| f.complete),
            "facets incomplete"
        );
        page.total_size.expect("total_size with include_facets")
    })
}

/// Latency of the unfiltered first page, alone and while `SEARCHERS` clients search.
fn under_search_load(bench: &Bench, url: String, samples: usize) -> (Samples, Samples) {
    bench.run(async move {
        let mut probe = grpc::connect(&url).await;
        let mut idle = Samples::new();
        for n in 0..samples + 20 {
            let start = Instant::now();
            grpc::list(&mut probe, search(20, "")).await;
            if n >= 20 {
                idle.push(start.elapsed().as_secs_f64());
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut searchers = Vec::with_capacity(SEARCHERS);
        for _ in 0..SEARCHERS {
            let mut client = grpc::connect(&url).await;
            let stop = stop.clone();
            searchers.push(tokio::spawn(async move {
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    grpc::list(&mut client, search(20, NOTHING_QUERY)).await;
                    calls += 1;
                }
                calls
            }));
        }
        // Let every searcher get going.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut loaded = Samples::new();
        for _ in 0..samples {
            let start = Instant::now();
            grpc::list(&mut probe, search(20, "")).await;
            loaded.push(start.elapsed().as_secs_f64());
        }
        stop.store(true, Ordering::Relaxed);
        for s in searchers {
            let _ = s.await;
        }
        (loaded, idle)
    })
}

pub fn run(bench: &Bench, report: &mut Report) {
    let work = Workdir::new();
    let target = bench.settings.pick(50 << 20, 5 << 20);
    let index = work.path().join("index.yaml");
    let (names, _) = write_index(&index, target);
    let plugins = work.plugin_dir("plugins", &[(&artifacts().helm, "libhelm.so")]);
    let rare = names.iter().filter(|n| n.contains(RARE_PHRASE)).count();
    assert_eq!(
        rare, 10,
        "{RARE_PHRASE:?} is in the names of charts 1230 to 1239"
    );
    assert!(
        names.iter().all(|n| !n.contains(NOTHING_QUERY)),
        "the no-match query matches"
    );

    let one = source_table(
        "charts",
        "helm",
        &serde_json::json!({ "repositories": [{ "name": "big", "url": index.to_string_lossy() }] }),
    );
    let three: String = ["a", "b", "c"]
        .iter()
        .map(|s| {
            source_table(
                s,
                "helm",
                &serde_json::json!({ "repositories": [{ "name": s, "url": index.to_string_lossy() }] }),
            )
        })
        .collect();
    let pairs = bench.settings.pick(300, 30);
    let unbounded = format!("max_searches_in_flight = 100000\n{one}");
    for (label, sources, k) in [("1 index", one, 1), ("3 indexes", three, 3)] {
        let config = work.config(&format!("search-{k}.toml"), &plugins, &sources);
        progress(format!("search: {label} of {} charts", names.len()));
        let server = ServerProcess::tributary(&config);
        for (what, query, expect) in [
            ("query matching 0.1%", RARE_QUERY, rare),
            ("query matching nothing", NOTHING_QUERY, 0),
        ] {
            let (searched, plain, found) = alternate(bench, server.url(), query, pairs);
            assert_eq!(found, (expect * k).min(20), "{what}: page size");
            assert_eq!(
                matches(bench, server.url(), query),
                (expect * k) as u64,
                "{what}: matches over every page"
            );
            report.row(
                Row::new(
                    "10",
                    format!(
                        "search, {label} ({} charts): first page of a {what} (`{query}`) vs unfiltered",
                        names.len() * k
                    ),
                )
                .figures(fmt_secs(searched.median()), fmt_secs(plain.median()))
                .ratio(searched.median() / plain.median())
                .target(Target::AtMost(2.0)),
            );
        }
        if k == 1 {
            let samples = bench.settings.pick(200, 20);
            let (loaded, idle) = under_search_load(bench, server.url(), samples);
            report.row(
                Row::new(
                    "10",
                    format!("search, {label}: unfiltered first page while {SEARCHERS} clients search vs idle"),
                )
                .figures(fmt_secs(loaded.median()), fmt_secs(idle.median()))
                .ratio(loaded.median() / idle.median())
                .target(Target::AtMost(2.0)),
            );
            // The same without the bound on searches in flight (max_searches_in_flight).
            drop(server);
            let config = work.config("search-unbounded.toml", &plugins, &unbounded);
            let server = ServerProcess::tributary(&config);
            let (loaded, idle) = under_search_load(bench, server.url(), samples);
            report.row(
                Row::new(
                    "10",
                    format!("search, {label}: the same without max_searches_in_flight"),
                )
                .figures(fmt_secs(loaded.median()), fmt_secs(idle.median()))
                .ratio(loaded.median() / idle.median())
                .target(Target::Report),
            );
        }
    }
    report.note(
        "10",
        format!(
            "{rare} of {} charts ({:.2}%) match `{RARE_QUERY}`",
            names.len(),
            100.0 * rare as f64 / names.len() as f64
        ),
    );
}
