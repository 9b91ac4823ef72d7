//! Scenario 4, deep pages: the latency of the page at 90% of the catalog against the first page,
//! over gRPC (the scenario 3 server, one client, calls alternating) and in the engine alone (three
//! in-memory sources of the scenario 1 catalog).

use std::time::Instant;

use crate::harness::{
    data::{self, Spread},
    grpc::{self, token_after},
    process::{ServerProcess, Workdir},
    timing::{fmt_secs, Samples},
    Bench, Report, Row, Target,
};

use super::s3_grpc::{generated_key, per_source, write_config};

/// Median latencies of the first page and of the page after `deep`, calls alternating on one
/// connection.
fn latencies(bench: &Bench, url: String, deep: String, pairs: usize) -> (Samples, Samples) {
    bench.run(async move {
        let mut client = grpc::connect(&url).await;
        let (mut first, mut deep_t) = (Samples::new(), Samples::new());
        for n in 0..pairs + 50 {
            let start = Instant::now();
            let a = grpc::list(&mut client, grpc::request(20, "", &[])).await;
            let t_first = start.elapsed();
            let start = Instant::now();
            let b = grpc::list(&mut client, grpc::request(20, &deep, &[])).await;
            let t_deep = start.elapsed();
            assert_eq!(a.available_package_summaries.len(), 20);
            assert_eq!(b.available_package_summaries.len(), 20);
            // The first 50 pairs warm the connection up.
            if n >= 50 {
                first.push(t_first.as_secs_f64());
                deep_t.push(t_deep.as_secs_f64());
            }
        }
        (first, deep_t)
    })
}

pub fn run(bench: &Bench, report: &mut Report) {
    let per_source = per_source(bench);
    let work = Workdir::new();
    let config = write_config(&work, per_source);
    let deep = token_after(generated_key(per_source * 9 / 10, "s3"));
    let pairs = bench.settings.pick(1000, 100);
    let server = ServerProcess::tributary(&config);
    let (first, deep) = latencies(bench, server.url(), deep, pairs);
    report.row(
        Row::new(
            "4",
            format!("deep page: gRPC, page at 90% of 3×{per_source}, median latency"),
        )
        .figures(fmt_secs(deep.median()), fmt_secs(first.median()))
        .ratio(deep.median() / first.median())
        .target(Target::AtMost(1.2)),
    );
    drop(server);

    let total = bench.settings.pick(1_000_000, 100_000);
    let items = data::items(total, 3, Spread::RoundRobin);
    let sources = data::memory_sources(&items);
    let after = data::key_of(total * 9 / 10, total, 3, Spread::RoundRobin);
    let pairs = bench.settings.pick(5000, 500);
    let (first, deep) = bench.run(async move {
        let (mut first, mut deep) = (Samples::new(), Samples::new());
        for n in 0..pairs + 100 {
            let start = Instant::now();
            let a = data::page(&sources, 20, None).await;
            let t_first = start.elapsed();
            let start = Instant::now();
            let b = data::page(&sources, 20, Some(after.clone())).await;
            let t_deep = start.elapsed();
            assert_eq!((a.items.len(), b.items.len()), (20, 20));
            if n >= 100 {
                first.push(t_first.as_secs_f64());
                deep.push(t_deep.as_secs_f64());
            }
        }
        (first, deep)
    });
    report.row(
        Row::new(
            "4",
            format!("deep page: engine, page at 90% of {total} in 3 sources, median latency"),
        )
        .figures(fmt_secs(deep.median()), fmt_secs(first.median()))
        .ratio(deep.median() / first.median())
        .target(Target::AtMost(1.2)),
    );
}
