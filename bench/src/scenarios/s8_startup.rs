//! Scenario 8, startup: `tributary plugins` (load every library, build every source, print, exit)
//! over a directory of 100 plugin libraries against a directory of one.
//!
//! The 100 libraries are copies of the `testkit` library under different file names (so `dlopen`
//! opens each as its own library). Every copy reports the plugin name `testkit`, so the host loads
//! all 100 (open, `abi_stable` layout check, root module, metadata) and then rejects 99 as duplicates:
//! the figure is the cost of loading a library, not of building a source for it (which is one default
//! source with an empty config in both runs).

use std::{path::Path, process::Command, time::Instant};

use crate::harness::{
    process::{artifacts, Workdir},
    timing::{fmt_secs, with_spread, Samples, NOISY},
    Bench, Report, Row, Target,
};

const COPIES: usize = 100;

/// Runs `tributary plugins` once; returns its wall time and its output. It exits 0 when every
/// library loaded, 5 when any was rejected (the copies: duplicates of the first).
fn plugins_command(config: &Path, expected_exit: i32) -> (f64, String) {
    let start = Instant::now();
    let output = Command::new(&artifacts().tributary)
        .arg("plugins")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "error")
        .output()
        .expect("run tributary plugins");
    let t = start.elapsed().as_secs_f64();
    assert_eq!(
        output.status.code(),
        Some(expected_exit),
        "tributary plugins: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (t, String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn run(bench: &Bench, report: &mut Report) {
    let work = Workdir::new();
    let library = artifacts().testkit.as_path();
    let one_dir = work.plugin_dir("one", &[(library, "libtk000.so")]);
    let names: Vec<String> = (0..COPIES).map(|i| format!("libtk{i:03}.so")).collect();
    let copies: Vec<(&Path, &str)> = names.iter().map(|n| (library, n.as_str())).collect();
    let many_dir = work.plugin_dir("many", &copies);
    let one = work.config("one.toml", &one_dir, "");
    let many = work.config("many.toml", &many_dir, "");

    let (_, listing) = plugins_command(&many, 5);
    let loaded = listing.matches("  loaded ").count();
    let duplicates = listing.matches("duplicate plugin name").count();
    assert_eq!(
        (loaded, duplicates),
        (1, COPIES - 1),
        "every copy loads before the duplicate check:\n{listing}"
    );

    let reps = bench.settings.pick(7, 2);
    let (mut t_one, mut t_many) = (Samples::new(), Samples::new());
    for _ in 0..reps {
        t_one.push(plugins_command(&one, 0).0);
        t_many.push(plugins_command(&many, 5).0);
    }
    let per_library = (t_many.median() - t_one.median()) / (COPIES - 1) as f64;
    report.row(
        Row::new(
            "8",
            format!("startup: `tributary plugins`, {COPIES} libraries vs 1"),
        )
        .figures(
            format!(
                "{} ({} per library)",
                with_spread(fmt_secs(t_many.median()), &t_many),
                fmt_secs(per_library)
            ),
            with_spread(fmt_secs(t_one.median()), &t_one),
        )
        .ratio(t_many.median() / t_one.median())
        .target(Target::Report)
        .noisy(t_many.spread() > NOISY || t_one.spread() > NOISY),
    );
    let size = std::fs::metadata(library).map(|m| m.len()).unwrap_or(0);
    report.note(
        "8",
        format!(
            "each library is a {:.1} MiB copy of the testkit plugin; {} loaded, {} rejected as duplicates after loading",
            size as f64 / (1 << 20) as f64,
            loaded,
            duplicates
        ),
    );
}
