//! Scenario 3, gRPC pages: 20-item pages over 3 `testkit` sources of 300,000 generated items each,
//! resumed from random tokens, by 1 and by 32 concurrent clients on loopback, against a tonic
//! server on the same proto that answers every call with a prebuilt 20-item page (a real page of
//! ours). Every server runs in its own process; the clients run in this one.
//!
//! The baseline sets `TCP_NODELAY` on its connections, as tonic's `Server::serve` does by default;
//! `tributary serve` hands tonic its own listener, and tonic then leaves the option unset. The same
//! catalog served with the option set (this binary's `serve-catalog` mode) is measured beside it, as
//! the prototype of the proposed fix.

use std::{path::PathBuf, sync::Arc};

use tributary_runtime::merge::token::MergeKey;

use crate::harness::{
    grpc::{self, token_after},
    process::{artifacts, source_table, ServerProcess, Workdir},
    rng::Rng,
    timing::{fmt_rate, with_spread, Samples, NOISY},
    Bench, Report, Row, Target,
};

pub const SOURCES: [&str; 3] = ["s1", "s2", "s3"];

/// The items per source of the scenario 3 and 4 server.
pub fn per_source(bench: &Bench) -> usize {
    bench.settings.pick(300_000, 30_000)
}

/// The config of a server with three `testkit` sources generating `per_source` items each, all
/// named `pkg-<index>` (so the merged catalog interleaves the three evenly).
pub fn write_config(work: &Workdir, per_source: usize) -> PathBuf {
    let plugins = work.plugin_dir("plugins", &[(&artifacts().testkit, "libtestkit.so")]);
    let sources: String = SOURCES
        .iter()
        .map(|s| {
            source_table(
                s,
                "testkit",
                &serde_json::json!({ "generate": per_source, "prefix": "pkg-" }),
            )
        })
        .collect();
    work.config("generated.toml", &plugins, &sources)
}

/// The key of generated item `i` of `source`.
pub fn generated_key(i: usize, source: &str) -> MergeKey {
    MergeKey {
        name: format!("pkg-{i:010}"),
        source: source.to_owned(),
        identifier: format!("g{i}"),
    }
}

/// Measures pages per second of `ours` and of a baseline serving a prebuilt page, in alternating
/// order, for 1 and 32 clients; one row per client count.
pub fn compare_rates(
    bench: &Bench,
    report: &mut Report,
    id: &str,
    what: &str,
    ours: &ServerProcess,
    work: &Workdir,
    tokens: Arc<Vec<String>>,
) {
    // The prebuilt page is a real page of ours, so both answers weigh the same on the wire.
    let url = ours.url();
    let first = tokens[0].clone();
    let prebuilt = bench.run(async move {
        let mut client = grpc::connect(&url).await;
        grpc::list(&mut client, grpc::request(20, &first, &[])).await
    });
    assert_eq!(prebuilt.available_package_summaries.len(), 20);
    let response_file = work.path().join(format!("prebuilt-{id}.bin"));
    grpc::write_response(&response_file, &prebuilt);
    let baseline = ServerProcess::baseline(&response_file);

    let rounds = bench.settings.pick(3, 1);
    let duration = bench.settings.load_duration();
    for clients in [1usize, 32] {
        let (mut ours_rate, mut base_rate) = (Samples::new(), Samples::new());
        let mut bad = 0;
        for round in 0..rounds {
            let mut order = [(ours, &mut ours_rate), (&baseline, &mut base_rate)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (server, samples) in order {
                let (url, tokens) = (server.url(), tokens.clone());
                let load =
                    bench.run(async move { grpc::load(&url, clients, 20, tokens, duration).await });
                samples.push(load.pages_per_second);
                bad += load.bad;
            }
        }
        if bad > 0 {
            report.note(
                id,
                format!("{what}, {clients} clients: {bad} calls failed or came back short"),
            );
        }
        report.row(
            Row::new(
                id,
                format!(
                    "{what}: 20-item pages, random tokens, {clients} client{}",
                    if clients == 1 { "" } else { "s" }
                ),
            )
            .figures(
                with_spread(fmt_rate(ours_rate.median(), "pages"), &ours_rate),
                with_spread(fmt_rate(base_rate.median(), "pages"), &base_rate),
            )
            .ratio(ours_rate.median() / base_rate.median())
            .target(Target::AtLeast(0.8))
            .noisy(ours_rate.spread() > NOISY || base_rate.spread() > NOISY),
        );
    }
}

/// 10,000 tokens resuming after random items of the scenario's sources (the same every run).
pub fn tokens(per_source: usize) -> Vec<String> {
    let mut rng = Rng::new(3);
    (0..10_000)
        .map(|_| {
            let i = rng.below(per_source as u64 - 20) as usize;
            let source = SOURCES[rng.below(3) as usize];
            token_after(generated_key(i, source))
        })
        .collect()
}

pub fn run(bench: &Bench, report: &mut Report) {
    let per_source = per_source(bench);
    let work = Workdir::new();
    let config = write_config(&work, per_source);
    let ours = ServerProcess::tributary(&config);
    let tokens = tokens(per_source);
    compare_rates(
        bench,
        report,
        "3",
        &format!("gRPC, 3×{per_source} generated"),
        &ours,
        &work,
        Arc::new(tokens),
    );
}
