//! Scenario 7, memory: the host's peak RSS after paging through a 10,000,000-item merged catalog,
//! against the same after a 100,000-item one. Two `testkit` sources generate their items on the fly
//! (no stored data); the host runs in its own process and 16 clients page through everything in
//! 1,000-item pages, each client over one sixteenth of the names. The small catalog is paged
//! through 100 times, so that both runs serve as many pages at the same concurrency and differ in
//! the catalog's size alone.

use std::time::Instant;

use tributary_runtime::merge::token::MergeKey;

use crate::harness::{
    grpc::{self, token_after},
    process::{artifacts, source_table, ServerProcess, Workdir},
    timing::{fmt_kib, fmt_secs},
    Bench, Report, Row, Settings, Target,
};

/// Walkers paging through the catalog side by side, each over its own range of names: a server
/// that delays each response (see scenario 3) then takes a fraction of the time, and the load is
/// the same for both catalog sizes.
const WALKERS: usize = 16;

/// The index in the name of generated item `pkg-<index>`.
fn index_of(name: &str) -> usize {
    name.trim_start_matches("pkg-")
        .parse()
        .expect("a generated name")
}

/// Pages through the whole catalog of two sources `g1` and `g2` of `per_source` items each, in
/// 1,000-item pages: walker `w` starts after the last item of the name before its range and stops
/// at the first page that reaches past its range. Returns the items served in the walkers' ranges
/// (each item of the catalog once) and the pages fetched.
async fn walk(url: String, per_source: usize) -> (usize, usize) {
    let bounds: Vec<usize> = (0..=WALKERS).map(|w| w * per_source / WALKERS).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WALKERS {
        let (from, to, url) = (bounds[w], bounds[w + 1], url.clone());
        tasks.spawn(async move {
            let mut client = grpc::connect(&url).await;
            let mut token = match from {
                0 => String::new(),
                _ => token_after(MergeKey {
                    name: format!("pkg-{:010}", from - 1),
                    source: "g2".to_owned(),
                    identifier: format!("g{}", from - 1),
                }),
            };
            let (mut served, mut pages) = (0, 0);
            loop {
                let r = grpc::list(&mut client, grpc::request(1000, &token, &[])).await;
                pages += 1;
                let mut past = false;
                for item in &r.available_package_summaries {
                    if index_of(&item.name) < to {
                        served += 1;
                    } else {
                        past = true;
                    }
                }
                if past || r.next_page_token.is_empty() {
                    return (served, pages);
                }
                token = r.next_page_token;
            }
        });
    }
    let (mut served, mut pages) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (s, p) = done.expect("walker");
        served += s;
        pages += p;
    }
    (served, pages)
}

/// Pages through the whole catalog of a fresh server; returns its peak RSS in KiB.
fn page_through(
    bench: &Bench,
    work: &Workdir,
    total: usize,
    rounds: usize,
    report: &mut Report,
) -> u64 {
    let plugins = work.plugin_dir("plugins", &[(&artifacts().testkit, "libtestkit.so")]);
    let per_source = total / 2;
    let sources: String = ["g1", "g2"]
        .iter()
        .map(|s| {
            source_table(
                s,
                "testkit",
                &serde_json::json!({ "generate": per_source, "prefix": "pkg-" }),
            )
        })
        .collect();
    let config = work.config(&format!("memory-{total}.toml"), &plugins, &sources);
    let server = ServerProcess::tributary(&config);
    let at_start = server.peak_rss_kib();
    let url = server.url();
    let start = Instant::now();
    let (mut served, mut pages) = (0, 0);
    for _ in 0..rounds {
        let (s, p) = bench.run(walk(url.clone(), per_source));
        served += s;
        pages += p;
    }
    let elapsed = start.elapsed();
    assert_eq!(served, total * rounds, "every item is served once a round");
    let peak = server.peak_rss_kib();
    report.note(
        "7",
        format!(
            "{total} items, {rounds} round(s): {pages} pages in {} ({:.0} items/s); host peak RSS {} at start, {} after",
            fmt_secs(elapsed.as_secs_f64()),
            served as f64 / elapsed.as_secs_f64(),
            fmt_kib(at_start as f64),
            fmt_kib(peak as f64)
        ),
    );
    peak
}

/// The items paged through: many, and few (the baseline).
fn sizes(settings: &Settings) -> (usize, usize) {
    (
        settings.pick(10_000_000, 1_000_000),
        settings.pick(100_000, 10_000),
    )
}

/// `1_000_000` as `1M`, `10_000` as `10k`.
fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub fn title(settings: &Settings) -> String {
    let (big, small) = sizes(settings);
    format!("memory: {} vs {} items", short(big), short(small))
}

pub fn run(bench: &Bench, report: &mut Report) {
    let (big, small) = sizes(&bench.settings);
    let work = Workdir::new();
    let small_rss = page_through(bench, &work, small, big / small, report);
    let big_rss = page_through(bench, &work, big, 1, report);
    report.row(
        Row::new(
            "7",
            format!("memory: host peak RSS, paging through {big} vs {small} generated items"),
        )
        .figures(fmt_kib(big_rss as f64), fmt_kib(small_rss as f64))
        .ratio(big_rss as f64 / small_rss as f64)
        .target(Target::AtMost(1.2)),
    );
}
