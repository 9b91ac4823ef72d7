//! Scenario 11, discovery: sort orders and facet counts on the Helm catalog of scenario 9, served
//! by three `helm` sources (three generated index files holding different charts) in a `tributary`
//! server of its own, through gRPC clients in this process.
//!
//! - Relevance against name: the first page of a query in relevance order against the same
//!   query's first page by name, on a catalog of 200,000 charts. One client alternating the two
//!   calls; then 32 clients in rounds that alternate (in a round every client sends one of the two
//!   requests back to back). p50 and p99 of each.
//! - Deep relevance page: the page at 90% of the same query's matches against its first page, both
//!   in relevance order, same catalog, one client, calls alternating.
//! - Facets: the first page of a query matching about a tenth of a catalog of 1,000,000 charts, with
//!   `include_facets` (the total and the counts by source, repository and category) against the same
//!   page alone; one client, calls alternating.
//!
//! The match counts are checked against the query matched here, over the generator's names and
//! descriptions, and against the server's `total_size`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use tributary_plugin_api::{order::relevance, Query};
use tributary_proto::v1 as pb;
use tributary_runtime::merge::token::{filter_fingerprint, MergeKey, PageToken, Primary};

use crate::harness::{
    data, grpc,
    process::{artifacts, source_table, ServerProcess, Workdir},
    progress,
    timing::{fmt_kib, fmt_secs, Samples},
    Bench, Report, Row, Settings, Target,
};

use super::s9_helm::{chart_description, chart_name, write_charts};

/// The three sources, each with one repository of its own name.
const SOURCES: [&str; 3] = ["a", "b", "c"];
/// The query of the sort rows: one of the generator's 16 words, at the start of 1 name in 16.
const SORT_QUERY: &str = "redis";
/// The query of the facets row: in the names of `postgresql-*` and `mysql-*`, 2 names in 16. Its
/// one trigram decides a match, so the index counts without reading the items' text.
const FACETS_QUERY: &str = "sql";
/// The query of the second facets row (reported): in the names of `postgresql-*`, 1 name in 16. A
/// term longer than a trigram is confirmed on each candidate's text.
const FACETS_LONG_QUERY: &str = "postgresql";
/// Clients of the concurrent rows.
const CLIENTS: usize = 32;
const PAGE: i32 = 20;

/// Charts of the catalog of the sort rows, and of the facets row.
fn sizes(settings: &Settings) -> (usize, usize) {
    (
        settings.pick(200_000, 20_000),
        settings.pick(1_000_000, 60_000),
    )
}

pub fn title(settings: &Settings) -> String {
    let (sort, facets) = sizes(settings);
    format!(
        "discovery: relevance order and facets on {}k / {}k Helm charts",
        sort / 1000,
        facets / 1000
    )
}

/// A generated catalog and the server serving it.
struct Served {
    server: ServerProcess,
    /// Every chart: `(name, source, description)` by chart number.
    charts: Vec<(String, &'static str, usize)>,
    /// For the rows: "3 helm sources, 200,000 charts".
    what: String,
}

/// Writes three index files of `items` charts in all (consecutive ranges, so every chart is in one
/// source) with up to `max_versions` versions each, and starts a server on them.
fn serve(
    work: &Workdir,
    plugins: &Path,
    label: &str,
    items: usize,
    max_versions: usize,
    report: &mut Report,
) -> Served {
    let started = Instant::now();
    // 32 clients searching queue for the search slots (max_searches_in_flight, the CPUs by
    // default): let them wait rather than fail.
    let mut sources = String::from("request_queue_ms = 60000\n\n");
    let mut charts = Vec::with_capacity(items);
    let (mut bytes, mut versions) = (0, 0);
    for (s, source) in SOURCES.iter().enumerate() {
        let range = s * items / SOURCES.len()..(s + 1) * items / SOURCES.len();
        let path = work.path().join(format!("{label}-{source}.yaml"));
        let (names, count) = write_charts(&path, range.clone(), max_versions);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        bytes += size;
        versions += count;
        sources.push_str(&source_table(
            source,
            "helm",
            &serde_json::json!({ "repositories": [{
                "name": source,
                "url": path.to_string_lossy(),
                "max_index_size": size + 1,
                "max_charts": names.len(),
                "max_versions": count,
            }] }),
        ));
        charts.extend(names.into_iter().zip(range).map(|(n, i)| (n, *source, i)));
    }
    let written = started.elapsed();
    progress(format!(
        "{label}: {items} charts, {versions} versions, {:.0} MB of index.yaml written in {}",
        bytes as f64 / 1e6,
        fmt_secs(written.as_secs_f64())
    ));
    let config = work.config(&format!("{label}.toml"), plugins, &sources);
    let server = ServerProcess::tributary(&config);
    report.note(
        "11",
        format!(
            "{items} charts in 3 helm sources: {versions} versions, 3 index files of {:.0} MB in all, \
             written in {}; the server listened after {} (indexes read), peak RSS {}",
            bytes as f64 / 1e6,
            fmt_secs(written.as_secs_f64()),
            fmt_secs(server.startup.as_secs_f64()),
            fmt_kib(server.peak_rss_kib() as f64)
        ),
    );
    Served {
        server,
        charts,
        what: format!("3 helm sources, {} charts", thousands(items)),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The matches of `query` in `charts` in relevance order, each with its score: as the server
/// ranks them (score descending, then name, source, identifier).
fn ranked<'a>(
    charts: &'a [(String, &'static str, usize)],
    query: &str,
) -> Vec<(u32, &'a str, &'static str)> {
    let parsed = Query::parse(query).expect("a valid query");
    let mut matches: Vec<(u32, &str, &str)> = charts
        .iter()
        .filter_map(|(name, source, i)| {
            let mut item = data::summary(name, &format!("{source}/{name}"));
            item.short_description = chart_description(*i).into();
            debug_assert_eq!(name, &chart_name(*i));
            parsed
                .matches(&item)
                .then(|| (relevance(&parsed, &item), name.as_str(), *source))
        })
        .collect();
    // Identifiers are `<source>/<name>`: name then source decides.
    matches.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
    matches
}

fn request(
    query: &str,
    sort: pb::SortOrder,
    include_facets: bool,
    page_token: &str,
    page_size: i32,
) -> pb::ListAvailablePackageSummariesRequest {
    pb::ListAvailablePackageSummariesRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: Some(pb::FilterOptions {
            query: query.to_owned(),
            ..Default::default()
        }),
        sort: sort as i32,
        include_facets,
    }
}

fn names(page: &pb::ListAvailablePackageSummariesResponse) -> Vec<String> {
    page.available_package_summaries
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

type Request = pb::ListAvailablePackageSummariesRequest;
type Response = pb::ListAvailablePackageSummariesResponse;

/// Latencies of `a` and `b` on one connection, calls alternating, after 20 pairs of warm-up; and
/// the last answer to each.
fn alternate(
    bench: &Bench,
    url: String,
    a: Request,
    b: Request,
    pairs: usize,
) -> (Samples, Samples, Response, Response) {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let (mut ta, mut tb) = (Samples::new(), Samples::new());
        let (mut last_a, mut last_b) = (Response::default(), Response::default());
        for n in 0..pairs + 20 {
            let start = Instant::now();
            last_a = grpc::list(&mut client, a.clone()).await;
            let t_a = start.elapsed();
            let start = Instant::now();
            last_b = grpc::list(&mut client, b.clone()).await;
            let t_b = start.elapsed();
            if n >= 20 {
                ta.push(t_a.as_secs_f64());
                tb.push(t_b.as_secs_f64());
            }
        }
        (ta, tb, last_a, last_b)
    })
}

/// Latencies of `a` and of `b` from [`CLIENTS`] clients, each on a connection of its own, in
/// `rounds` rounds of each that alternate: in a round every client sends the round's request back
/// to back for `length`; calls started in its first 300 ms are not counted.
fn concurrent(
    bench: &Bench,
    url: String,
    a: Request,
    b: Request,
    rounds: usize,
    length: Duration,
) -> (Samples, Samples) {
    bench.run(async move {
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            clients.push(grpc::connect(&url).await);
        }
        let (mut ta, mut tb) = (Samples::new(), Samples::new());
        for round in 0..2 * rounds {
            let (request, samples) = if round % 2 == 0 {
                (&a, &mut ta)
            } else {
                (&b, &mut tb)
            };
            let start = Instant::now() + Duration::from_millis(300);
            let end = start + length;
            let mut tasks = JoinSet::new();
            for mut client in clients.drain(..) {
                let request = request.clone();
                tasks.spawn(async move {
                    let mut times = Vec::new();
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let page = grpc::list(&mut client, request.clone()).await;
                        assert_eq!(page.available_package_summaries.len(), PAGE as usize);
                        if sent >= start {
                            times.push(sent.elapsed().as_secs_f64());
                        }
                    }
                    (client, times)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (client, times) = done.expect("a client task panicked");
                clients.push(client);
                for t in times {
                    samples.push(t);
                }
            }
        }
        (ta, tb)
    })
}

/// How many items match `query` over every page, by the server's `total_size`.
fn total_size(bench: &Bench, url: String, query: &'static str) -> u64 {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let page = grpc::list(
            &mut client,
            request(query, pb::SortOrder::Name, true, "", PAGE),
        )
        .await;
        assert!(
            page.facets.as_ref().is_some_and(|f| f.complete),
            "facets incomplete"
        );
        page.total_size.expect("total_size with include_facets")
    })
}

/// The relevance-order token after the first `skip` matches, reached by paging (1,000 items at a
/// time), untimed.
fn paged_token(bench: &Bench, url: String, query: &'static str, skip: usize) -> (String, String) {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let (mut token, mut seen, mut last) = (String::new(), 0, String::new());
        while seen < skip {
            let size = (skip - seen).min(1000) as i32;
            let page = grpc::list(
                &mut client,
                request(query, pb::SortOrder::Relevance, false, &token, size),
            )
            .await;
            assert_eq!(page.available_package_summaries.len(), size as usize);
            seen += size as usize;
            last = page.available_package_summaries[size as usize - 1]
                .name
                .clone();
            token = page.next_page_token;
        }
        (token, last)
    })
}

fn p50_p99_rows(report: &mut Report, what: &str, ours: &Samples, baseline: &Samples, target: f64) {
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let (o, b) = (ours.percentile(p), baseline.percentile(p));
        report.row(
            Row::new("11", format!("{what}, {label}"))
                .figures(fmt_secs(o), fmt_secs(b))
                .ratio(o / b)
                .target(Target::AtMost(target)),
        );
    }
}

pub fn run(bench: &Bench, report: &mut Report) {
    let (sort_items, facet_items) = sizes(&bench.settings);
    let work = Workdir::new();
    let plugins = work.plugin_dir("plugins", &[(&artifacts().helm, "libhelm.so")]);

    // Relevance against name, and the deep relevance page.
    {
        let served = serve(&work, &plugins, "sort", sort_items, 8, report);
        let url = served.server.url();
        let ranked = ranked(&served.charts, SORT_QUERY);
        let matches = ranked.len();
        assert_eq!(
            total_size(bench, url.clone(), SORT_QUERY),
            matches as u64,
            "{SORT_QUERY}: matches over every page"
        );
        let share = format!(
            "`{SORT_QUERY}` ({} matches, {:.2}%)",
            thousands(matches),
            100.0 * matches as f64 / sort_items as f64
        );
        let by_relevance = request(SORT_QUERY, pb::SortOrder::Relevance, false, "", PAGE);
        let by_name = request(SORT_QUERY, pb::SortOrder::Name, false, "", PAGE);
        let pairs = bench.settings.pick(300, 30);
        let (relevant, named, rel_page, name_page) = alternate(
            bench,
            url.clone(),
            by_relevance.clone(),
            by_name.clone(),
            pairs,
        );
        let expected: Vec<&str> = ranked.iter().take(PAGE as usize).map(|m| m.1).collect();
        assert_eq!(names(&rel_page), expected, "the first page by relevance");
        let mut by_name_expected: Vec<(&str, &str)> = ranked.iter().map(|m| (m.1, m.2)).collect();
        by_name_expected.sort();
        let by_name_expected: Vec<&str> = by_name_expected
            .iter()
            .take(PAGE as usize)
            .map(|m| m.0)
            .collect();
        assert_eq!(
            names(&name_page),
            by_name_expected,
            "the first page by name"
        );
        let what = format!(
            "discovery, {}: first page of {share} by relevance vs by name",
            served.what
        );
        p50_p99_rows(report, &format!("{what}, 1 client"), &relevant, &named, 2.0);
        let (rounds, length) = (
            bench.settings.pick(4, 1),
            bench
                .settings
                .pick(Duration::from_secs(2), Duration::from_millis(500)),
        );
        let (relevant, named) = concurrent(
            bench,
            url.clone(),
            by_relevance.clone(),
            by_name,
            rounds,
            length,
        );
        p50_p99_rows(
            report,
            &format!("{what}, {CLIENTS} clients (rounds alternating)"),
            &relevant,
            &named,
            2.0,
        );
        let timed = (rounds as f64) * length.as_secs_f64();
        report.note(
            "11",
            format!(
                "relevance vs name, {CLIENTS} clients: {} and {} calls timed, {:.0} and {:.0} pages/s",
                relevant.len(),
                named.len(),
                relevant.len() as f64 / timed,
                named.len() as f64 / timed
            ),
        );

        // The page at 90% of the matches: a token built as the server builds it, checked against
        // the one reached by paging there.
        let skip = matches * 9 / 10;
        let (score, name, source) = ranked[skip - 1];
        let built = PageToken {
            filter_fingerprint: filter_fingerprint(SORT_QUERY, &[], &[], &[]),
            primary: Primary::Relevance(score),
            last: MergeKey {
                name: name.to_owned(),
                source: source.to_owned(),
                identifier: format!("{source}/{name}"),
            },
        }
        .encode();
        let (paged, last) = paged_token(bench, url.clone(), SORT_QUERY, skip);
        assert_eq!(last, name, "the item before the page at 90%");
        assert_eq!(built, paged, "the token of the page at 90%");
        let deep = request(SORT_QUERY, pb::SortOrder::Relevance, false, &built, PAGE);
        let (deep_t, first_t, deep_page, _) = alternate(bench, url, deep, by_relevance, pairs);
        let expected: Vec<&str> = ranked[skip..]
            .iter()
            .take(PAGE as usize)
            .map(|m| m.1)
            .collect();
        assert_eq!(names(&deep_page), expected, "the page at 90%");
        report.row(
            Row::new(
                "11",
                format!(
                    "discovery, {}: relevance page at 90% of {share} vs its first page, 1 client, p50",
                    served.what
                ),
            )
            .figures(fmt_secs(deep_t.median()), fmt_secs(first_t.median()))
            .ratio(deep_t.median() / first_t.median())
            .target(Target::AtMost(1.2)),
        );
        report.note(
            "11",
            format!(
                "relevance page at 90%: p99 {} vs {}; scores of `{SORT_QUERY}`'s matches: {:?}",
                fmt_secs(deep_t.percentile(99.0)),
                fmt_secs(first_t.percentile(99.0)),
                ranked
                    .iter()
                    .map(|m| m.0)
                    .collect::<std::collections::BTreeSet<_>>()
            ),
        );
    }

    // Facets and total against the page alone.
    let served = serve(&work, &plugins, "facets", facet_items, 8, report);
    let url = served.server.url();
    for (query, target) in [
        (FACETS_QUERY, Target::AtMost(3.0)),
        (FACETS_LONG_QUERY, Target::Report),
    ] {
        facets_row(bench, &url, &served, query, target, facet_items, report);
    }
}

/// The first page of `query` with facets and total against the same page alone, one client.
fn facets_row(
    bench: &Bench,
    url: &str,
    served: &Served,
    query: &str,
    target: Target,
    items: usize,
    report: &mut Report,
) {
    let ranked = ranked(&served.charts, query);
    let matches = ranked.len();
    let with = request(query, pb::SortOrder::Name, true, "", PAGE);
    let alone = request(query, pb::SortOrder::Name, false, "", PAGE);
    let pairs = bench.settings.pick(200, 20);
    let (counted, plain, with_page, alone_page) =
        alternate(bench, url.to_owned(), with, alone, pairs);
    assert_eq!(
        with_page.total_size,
        Some(matches as u64),
        "total_size of `{query}`"
    );
    assert_eq!(alone_page.total_size, None);
    assert_eq!(names(&with_page), names(&alone_page));
    let facets = with_page.facets.expect("facets");
    assert!(facets.complete, "facets incomplete");
    for source in SOURCES {
        let expected = ranked.iter().filter(|m| m.2 == source).count() as u64;
        let counted: Vec<u64> = facets
            .sources
            .iter()
            .filter(|f| f.value == source)
            .map(|f| f.count)
            .collect();
        assert_eq!(
            counted,
            [expected],
            "matches of `{query}` in source {source}"
        );
    }
    report.row(
        Row::new(
            "11",
            format!(
                "discovery, {}: first page of `{query}` ({} matches, {:.1}%) with facets and total vs alone, 1 client, p50",
                served.what,
                thousands(matches),
                100.0 * matches as f64 / items as f64
            ),
        )
        .figures(fmt_secs(counted.median()), fmt_secs(plain.median()))
        .ratio(counted.median() / plain.median())
        .target(target),
    );
    report.note(
        "11",
        format!(
            "facets of `{query}`: p99 {} vs {}",
            fmt_secs(counted.percentile(99.0)),
            fmt_secs(plain.percentile(99.0))
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_500), "12,500");
    }

    #[test]
    fn queries_match_their_documented_share() {
        let charts: Vec<(String, &'static str, usize)> =
            (0..1600).map(|i| (chart_name(i), "a", i)).collect();
        let redis = ranked(&charts, SORT_QUERY);
        assert_eq!(redis.len(), 100);
        // Every match starts its name with the query.
        assert!(redis.iter().all(|m| m.0 == 32), "{redis:?}");
        assert_eq!(ranked(&charts, FACETS_QUERY).len(), 200);
        assert_eq!(ranked(&charts, FACETS_LONG_QUERY).len(), 100);
    }
}
