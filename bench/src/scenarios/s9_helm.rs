//! Scenario 9, Helm: a generated 50 MB `index.yaml` (tens of thousands of charts, several versions
//! each) loaded by the `helm` plugin in a `tributary` server of its own, against `serde-saphyr`
//! parsing the same file into a `serde_json::Value` in a process of its own (`tributary-bench
//! parse-yaml`).
//!
//! Figures: the time from starting the server to its listening (the index is read before it
//! listens) against the parse alone, both processes' peak RSS, and the page rate of scenario 3 over
//! the charts (random tokens, 1 and 32 clients) against the prebuilt-page baseline.

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use tributary_runtime::merge::token::MergeKey;

use crate::harness::{
    grpc::token_after,
    process::{artifacts, own_executable, own_vm_hwm_kib, source_table, ServerProcess, Workdir},
    progress,
    rng::Rng,
    timing::{fmt_kib, fmt_secs, with_spread, Samples, NOISY},
    Bench, Report, Row, Settings, Target,
};

use super::s3_grpc::compare_rates;

const WORDS: [&str; 16] = [
    "redis",
    "nginx",
    "postgresql",
    "kafka",
    "grafana",
    "prometheus",
    "mysql",
    "mongodb",
    "rabbitmq",
    "elasticsearch",
    "airflow",
    "keycloak",
    "minio",
    "vault",
    "jenkins",
    "wordpress",
];

const CATEGORIES: [&str; 5] = [
    "Database",
    "Infrastructure",
    "Monitoring",
    "Security",
    "Streaming",
];

/// The name of chart `i` of the generated indexes.
pub fn chart_name(i: usize) -> String {
    format!("{}-{i:05}", WORDS[i % WORDS.len()])
}

/// The description of chart `i` of the generated indexes (of each of its versions).
pub fn chart_description(i: usize) -> String {
    format!(
        "{} packaged as chart {i} for the Tributary benchmarks, with a description of typical length",
        WORDS[i % WORDS.len()]
    )
}

/// Writes an `index.yaml` of about `target_bytes`, as `helm repo index` lays one out; returns the
/// chart names and the number of versions.
pub fn write_index(path: &Path, target_bytes: usize) -> (Vec<String>, usize) {
    write(path, 0, 8, |bytes, _| bytes < target_bytes)
}

/// Writes an `index.yaml` of the charts numbered `charts` (as [`write_index`] numbers and fills
/// them, so that indexes of consecutive ranges hold different charts), each with 1 to
/// `max_versions` versions (8 in [`write_index`]); returns the chart names and the number of
/// versions.
pub fn write_charts(
    path: &Path,
    charts: std::ops::Range<usize>,
    max_versions: usize,
) -> (Vec<String>, usize) {
    let count = charts.len();
    write(path, charts.start, max_versions, |_, written| {
        written < count
    })
}

/// Writes charts from number `first` on while `more(bytes written, charts written)` holds.
fn write(
    path: &Path,
    first: usize,
    max_versions: usize,
    more: impl Fn(usize, usize) -> bool,
) -> (Vec<String>, usize) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).expect("create index.yaml");
    let mut rng = Rng::new(9);
    // Written to the file in chunks, so that an index of several hundred MB is never held whole.
    let mut out = String::with_capacity(9 << 20);
    let mut flushed = 0;
    out.push_str("apiVersion: v1\nentries:\n");
    let mut names = Vec::new();
    let mut versions = 0;
    while more(flushed + out.len(), names.len()) {
        let i = first + names.len();
        let word = WORDS[i % WORDS.len()];
        let name = chart_name(i);
        let description = chart_description(i);
        let _ = writeln!(out, "  {name}:");
        let count = 1 + (i * 7) % max_versions;
        for v in (0..count).rev() {
            let version = format!("{}.{}.{}", 1 + v / 3, v % 3, i % 10);
            let digest: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
            let _ = write!(
                out,
                "  - annotations:
      category: {category}
    apiVersion: v2
    appVersion: {app}.{v}.0
    created: \"2024-0{month}-1{day}T10:12:48.123456789Z\"
    description: {description}
    digest: {digest}
    home: https://example.com/charts/{name}
    icon: https://example.com/icons/{name}.svg
    keywords:
    - {word}
    - benchmark
    maintainers:
    - name: Benchmark Maintainers
      url: https://github.com/example/charts
    name: {name}
    sources:
    - https://github.com/example/charts/tree/main/{name}
    urls:
    - https://charts.example.com/{name}-{version}.tgz
    version: {version}
",
                category = CATEGORIES[i % CATEGORIES.len()],
                app = 1 + i % 9,
                month = 1 + v % 9,
                day = v % 10,
            );
            versions += 1;
        }
        names.push(name);
        if out.len() >= 8 << 20 {
            file.write_all(out.as_bytes()).expect("write index.yaml");
            flushed += out.len();
            out.clear();
        }
    }
    out.push_str("generated: \"2024-03-01T00:00:00Z\"\n");
    file.write_all(out.as_bytes()).expect("write index.yaml");
    (names, versions)
}

/// `tributary-bench parse-yaml <file>`: reads the file, parses it with `serde-saphyr` into a
/// `serde_json::Value` (the crate has no value type of its own; it points there), and prints the
/// parse time and this process's peak RSS.
pub fn parse_yaml_child(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read the index");
    let start = Instant::now();
    // No budget: its default counts stop well short of a 50 MB document.
    let options = serde_saphyr::options! { budget: None };
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(&text, options).expect("parse the index");
    let secs = start.elapsed().as_secs_f64();
    let entries = value
        .get("entries")
        .and_then(|e| e.as_object())
        .map_or(0, |m| m.len());
    println!(
        "parse_secs={secs} hwm_kib={} entries={entries}",
        own_vm_hwm_kib().unwrap_or(0)
    );
}

/// Runs [`parse_yaml_child`] in a process of its own: `(seconds, peak KiB)`.
fn parse_in_child(path: &Path, charts: usize) -> (f64, u64) {
    let output = Command::new(own_executable())
        .arg("parse-yaml")
        .arg(path)
        .output()
        .expect("run parse-yaml");
    assert!(output.status.success(), "parse-yaml failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| -> String {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("parse-yaml printed no {key}: {text}"))
            .to_owned()
    };
    assert_eq!(field("entries=").parse::<usize>().ok(), Some(charts));
    (
        field("parse_secs=").parse().expect("seconds"),
        field("hwm_kib=").parse().expect("KiB"),
    )
}

/// The size the generated index.yaml grows to (it stops at the first chart past it).
fn index_bytes(settings: &Settings) -> usize {
    settings.pick(50 << 20, 5 << 20)
}

pub fn title(settings: &Settings) -> String {
    format!("Helm: {} MiB index.yaml", index_bytes(settings) >> 20)
}

pub fn run(bench: &Bench, report: &mut Report) {
    let work = Workdir::new();
    let index = work.path().join("index.yaml");
    let target = index_bytes(&bench.settings);
    let (names, versions) = write_index(&index, target);
    let size = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
    let what = format!(
        "Helm, {:.0} MB index.yaml, {} charts, {versions} versions",
        size as f64 / 1e6,
        names.len()
    );
    progress(&what);

    let plugins = work.plugin_dir("plugins", &[(&artifacts().helm, "libhelm.so")]);
    let sources = source_table(
        "charts",
        "helm",
        &serde_json::json!({ "repositories": [{ "name": "big", "url": index.to_string_lossy() }] }),
    );
    let config = work.config("helm.toml", &plugins, &sources);

    let reps = bench.settings.pick(3, 1);
    let (mut load, mut parse) = (Samples::new(), Samples::new());
    let mut parse_rss = 0;
    let mut server = None;
    for _ in 0..reps {
        drop(server.take());
        let started = ServerProcess::tributary(&config);
        load.push(started.startup.as_secs_f64());
        server = Some(started);
        let (secs, kib) = parse_in_child(&index, names.len());
        parse.push(secs);
        parse_rss = parse_rss.max(kib);
    }
    let server = server.expect("at least one run");
    let loaded_rss = server.peak_rss_kib();
    report.row(
        Row::new("9", format!("{what}: start to listening vs parse alone"))
            .figures(
                with_spread(fmt_secs(load.median()), &load),
                with_spread(fmt_secs(parse.median()), &parse),
            )
            .ratio(load.median() / parse.median())
            .target(Target::Report)
            .noisy(load.spread() > NOISY || parse.spread() > NOISY),
    );

    let mut names = names;
    names.sort();
    let mut rng = Rng::new(99);
    let tokens: Vec<String> = (0..10_000)
        .map(|_| {
            let name = &names[rng.below((names.len() - 21) as u64) as usize];
            token_after(MergeKey {
                name: name.clone(),
                source: "charts".to_owned(),
                identifier: format!("big/{name}"),
            })
        })
        .collect();
    compare_rates(bench, report, "9", "Helm", &server, &work, Arc::new(tokens));
    // Let the server settle before the last reading.
    std::thread::sleep(Duration::from_millis(100));
    let served_rss = server.peak_rss_kib();
    report.row(
        Row::new(
            "9",
            "Helm: host peak RSS (loaded and served) vs plain YAML parse",
        )
        .figures(fmt_kib(served_rss as f64), fmt_kib(parse_rss as f64))
        .ratio(served_rss as f64 / parse_rss as f64)
        .target(Target::Report),
    );
    report.note(
        "9",
        format!(
            "host peak RSS after loading {}, after serving {}; file {:.1} MiB",
            fmt_kib(loaded_rss as f64),
            fmt_kib(served_rss as f64),
            size as f64 / (1 << 20) as f64
        ),
    );
}
