//! Scenario 5, slow sources: three `testkit` sources that each sleep 50 ms per call, against one
//! such source alone (the same server, the request narrowed with `filter.sources`): first-page
//! latency.
//!
//! Twice: with the three sources' names interleaved (every source holds a third of every page), and
//! with each source holding one range of names (the first page comes from one source alone).

use std::time::Instant;

use crate::harness::{
    grpc,
    process::{artifacts, source_table, ServerProcess, Workdir},
    timing::{fmt_secs, Samples},
    Bench, Report, Row, Target,
};

pub fn run(bench: &Bench, report: &mut Report) {
    let work = Workdir::new();
    let plugins = work.plugin_dir("plugins", &[(&artifacts().testkit, "libtestkit.so")]);
    let slow =
        |prefix: &str| serde_json::json!({ "generate": 10_000, "prefix": prefix, "sleep_ms": 50 });
    let mut sources = String::new();
    for name in ["even-1", "even-2", "even-3"] {
        sources.push_str(&source_table(name, "testkit", &slow("pkg-")));
    }
    for (name, prefix) in [("range-a", "a-"), ("range-b", "b-"), ("range-c", "c-")] {
        sources.push_str(&source_table(name, "testkit", &slow(prefix)));
    }
    let config = work.config("slow.toml", &plugins, &sources);
    let server = ServerProcess::tributary(&config);
    let rounds = bench.settings.pick(12, 3);
    for (what, three, one) in [
        (
            "names interleaved",
            ["even-1", "even-2", "even-3"],
            "even-1",
        ),
        (
            "names in one range per source",
            ["range-a", "range-b", "range-c"],
            "range-a",
        ),
    ] {
        let url = server.url();
        let (t_three, t_one) = bench.run(async move {
            let mut client = grpc::connect(&url).await;
            let (mut t_three, mut t_one) = (Samples::new(), Samples::new());
            for n in 0..=rounds {
                let start = Instant::now();
                let r = grpc::list(&mut client, grpc::request(20, "", &three)).await;
                let a = start.elapsed();
                assert_eq!(r.available_package_summaries.len(), 20);
                let start = Instant::now();
                let r = grpc::list(&mut client, grpc::request(20, "", &[one])).await;
                let b = start.elapsed();
                assert_eq!(r.available_package_summaries.len(), 20);
                if n > 0 {
                    t_three.push(a.as_secs_f64());
                    t_one.push(b.as_secs_f64());
                }
            }
            (t_three, t_one)
        });
        report.row(
            Row::new(
                "5",
                format!("slow sources (50 ms/call): first page, 3 sources, {what}"),
            )
            .figures(fmt_secs(t_three.median()), fmt_secs(t_one.median()))
            .ratio(t_three.median() / t_one.median())
            .target(Target::AtMost(1.2)),
        );
    }
}
