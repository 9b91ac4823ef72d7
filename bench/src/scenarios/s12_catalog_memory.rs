//! Scenario 12, memory per index byte (issue 23): the resident memory of a `tributary` server
//! serving one Helm repository from a local index file, against the bytes of that file, for three
//! indexes:
//! - scenario 9's generated index ([`super::s9_helm::write_index`]), about 52 MB;
//! - a real-shaped index ([`write_real_shaped`]), about 60 MB;
//! - 1,000,000 minimal charts ([`write_minimal`]): a name and one version each, about 54 MB.
//!
//! For each, the server is started on the file (the plugin reads it before the server listens),
//! asked for its first page, left to settle for a second, and its `VmRSS` (steady) and `VmHWM`
//! (peak) read from `/proc/<pid>/status`. The baseline, in the same run: a process of its own
//! (`tributary-bench parse-owned <file>`) that reads the same file and parses it with
//! `serde-saphyr` into owned structs mirroring `index.yaml` ([`IndexFile`]), keeps them, drops the
//! text and reports its own `VmRSS` and `VmHWM`.
//!
//! Rows, for each index: steady RSS per index byte and peak RSS per index byte (the ratio column is
//! the server's figure over the file's bytes; the baseline's is in its column), and the bytes per
//! chart beyond the chart's text, `(steady RSS - idle RSS - index bytes) / charts`, where the idle
//! RSS is that of the same server with the same plugin on a one-chart index (for the baseline, its
//! own RSS before reading the file); the ratio column of that row is ours over the baseline's. The
//! idle server runs with `MIMALLOC_PURGE_DELAY=0` (see [`run`]); every other server as it is.
//! The targets are the issue's: for real-shaped catalogs (the first two indexes) a steady RSS of at
//! most 1.5× the index bytes and a peak of at most 2×; for the minimal charts at most 200 bytes per
//! chart beyond its text.
//!
//! [`breakdown`] is the child mode that says where the server's memory goes
//! (`tributary-bench memory-breakdown <generated|real|minimal>`).

pub mod breakdown;

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::harness::{
    grpc,
    process::{
        artifacts, own_executable, own_vm_hwm_kib, own_vm_rss_kib, source_table, ServerProcess,
        Workdir,
    },
    progress,
    rng::Rng,
    timing::{fmt_kib, fmt_secs},
    Bench, Report, Row, Settings, Target,
};

use super::s9_helm::write_index;

/// The targets: steady and peak RSS of a real-shaped catalog over its index bytes, and the
/// bytes a minimal chart may cost beyond its text.
pub const STEADY_TARGET: f64 = 1.5;
pub const PEAK_TARGET: f64 = 2.0;
pub const BYTES_PER_CHART_TARGET: f64 = 200.0;

/// How long a process is left after its index is read and before its `VmRSS` is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The three indexes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// Scenario 9's generator.
    Generated,
    /// [`write_real_shaped`].
    RealShaped,
    /// [`write_minimal`].
    Minimal,
}

impl Input {
    pub const ALL: [Input; 3] = [Input::Generated, Input::RealShaped, Input::Minimal];

    /// The word for it on a command line.
    pub fn word(self) -> &'static str {
        match self {
            Input::Generated => "generated",
            Input::RealShaped => "real",
            Input::Minimal => "minimal",
        }
    }

    pub fn from_word(word: &str) -> Option<Input> {
        Input::ALL.into_iter().find(|i| i.word() == word)
    }

    /// Whether the per-index-byte targets hold for it (a real-shaped catalog).
    fn real_shaped(self) -> bool {
        self != Input::Minimal
    }

    /// Writes it to `path`, at the size of this run; returns what it holds.
    pub fn write(self, path: &Path, settings: &Settings) -> Written {
        let (charts, versions) = match self {
            Input::Generated => {
                let (names, versions) = write_index(path, settings.pick(50 << 20, 5 << 20));
                (names.len(), versions)
            }
            Input::RealShaped => write_real_shaped(path, settings.pick(60_000_000, 6_000_000)),
            Input::Minimal => write_minimal(path, settings.pick(1_000_000, 100_000)),
        };
        Written {
            path: path.to_owned(),
            bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            charts,
            versions,
        }
    }

    /// Its name in a row, with its size.
    fn label(self, written: &Written) -> String {
        let mb = written.bytes as f64 / 1e6;
        match self {
            Input::Generated => format!("scenario 9's {mb:.0} MB index"),
            Input::RealShaped => format!("real-shaped {mb:.0} MB index"),
            Input::Minimal => format!("{} minimal charts ({mb:.0} MB)", short(written.charts)),
        }
    }
}

/// An index written to a file.
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub charts: usize,
    pub versions: usize,
}

/// `1_000_000` as `1M`, `100_000` as `100k`.
fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The limits of the repository, raised so that no index of this scenario is refused (they decide
/// what is refused, not what is kept).
pub fn limits() -> serde_json::Value {
    serde_json::json!({
        "max_index_size": 1u64 << 30,
        "max_charts": 10_000_000,
        "max_versions": 100_000_000,
    })
}

/// The helm plugin's configuration for one repository `big` on `index`.
pub fn helm_config(index: &Path) -> serde_json::Value {
    let mut repository = limits();
    repository["name"] = "big".into();
    repository["url"] = index.to_string_lossy().into_owned().into();
    serde_json::json!({ "repositories": [repository] })
}

// ---------------------------------------------------------------------------------------------
// The minimal index.

/// Writes `charts` minimal charts in Helm's layout: `pkg-<n>` with one version `1.0.0` and
/// nothing else, 54 bytes a chart for a million. Returns `(charts, versions)`.
pub fn write_minimal(path: &Path, charts: usize) -> (usize, usize) {
    let digits = charts.saturating_sub(1).max(1).to_string().len();
    let mut out = String::with_capacity(charts * (32 + 2 * digits) + 64);
    out.push_str("apiVersion: v1\nentries:\n");
    for i in 0..charts {
        let _ = write!(
            out,
            "  pkg-{i:0digits$}:\n  - name: pkg-{i:0digits$}\n    version: 1.0.0\n"
        );
    }
    out.push_str("generated: \"2024-03-01T00:00:00Z\"\n");
    std::fs::write(path, out).expect("write index.yaml");
    (charts, charts)
}

// ---------------------------------------------------------------------------------------------
// The real-shaped index.

/// Words chart names are made of, as in the names of public charts.
const NAME_PARTS: [&str; 96] = [
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
    "kube",
    "stack",
    "operator",
    "exporter",
    "cluster",
    "ingress",
    "controller",
    "cert",
    "manager",
    "webhook",
    "agent",
    "loki",
    "tempo",
    "mimir",
    "consul",
    "argo",
    "cd",
    "workflows",
    "rollouts",
    "external",
    "dns",
    "secrets",
    "metrics",
    "server",
    "node",
    "problem",
    "detector",
    "mariadb",
    "galera",
    "sharded",
    "connect",
    "schema",
    "registry",
    "zookeeper",
    "opensearch",
    "dashboards",
    "fluent",
    "bit",
    "fluentd",
    "jaeger",
    "otel",
    "collector",
    "traefik",
    "istio",
    "base",
    "gateway",
    "linkerd",
    "control",
    "plane",
    "sonarqube",
    "gitlab",
    "runner",
    "harbor",
    "velero",
    "memcached",
    "spark",
    "thanos",
    "cortex",
    "sealed",
    "crossplane",
    "tekton",
    "knative",
    "serving",
    "eventing",
    "kyverno",
    "policies",
    "falco",
    "trivy",
    "backup",
    "common",
    "app",
    "api",
    "web",
    "ui",
    "worker",
    "proxy",
    "cache",
    "db",
    "ha",
    "lite",
];

/// Words descriptions are made of.
const PROSE: [&str; 48] = [
    "a",
    "the",
    "for",
    "and",
    "with",
    "Kubernetes",
    "cluster",
    "deploys",
    "chart",
    "open",
    "source",
    "highly",
    "available",
    "scalable",
    "service",
    "metrics",
    "data",
    "operator",
    "lightweight",
    "secure",
    "distributed",
    "storage",
    "engine",
    "platform",
    "web",
    "server",
    "monitoring",
    "dashboard",
    "configuration",
    "management",
    "applications",
    "container",
    "images",
    "of",
    "to",
    "in",
    "on",
    "your",
    "provides",
    "built",
    "fast",
    "reliable",
    "database",
    "queue",
    "messages",
    "(beta)",
    "using",
    "Helm",
];

const VENDORS: [&str; 8] = [
    "bitnami",
    "prometheus-community",
    "grafana",
    "jetstack",
    "argoproj",
    "elastic",
    "hashicorp",
    "acme-platform",
];

const CATEGORIES: [&str; 10] = [
    "Database",
    "Infrastructure",
    "Monitoring",
    "Security",
    "Streaming",
    "Networking",
    "Storage",
    "Developer Tools",
    "Analytics",
    "CI/CD",
];

const LICENSES: [&str; 5] = [
    "Apache-2.0",
    "MIT",
    "BSD-3-Clause",
    "MPL-2.0",
    "GPL-3.0-only",
];

const MAINTAINERS: [&str; 10] = [
    "VMware, Inc.",
    "Broadcom, Inc.",
    "Grafana Labs",
    "The Jetstack team",
    "Platform Engineering",
    "Jane Doe",
    "John Smith",
    "Maria Garcia",
    "Wei Zhang",
    "SRE Team",
];

/// `true` with probability `percent`/100.
fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

/// A value in `low..=high`.
fn between(rng: &mut Rng, low: u64, high: u64) -> u64 {
    low + rng.below(high - low + 1)
}

/// Sentences of [`PROSE`] of about `length` bytes, on one line (a plain YAML scalar).
fn prose(rng: &mut Rng, length: usize) -> String {
    let mut out = String::with_capacity(length + 16);
    let mut sentence = 0;
    while out.len() < length {
        if sentence == 0 {
            let word = PROSE[rng.below(PROSE.len() as u64) as usize];
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(PROSE[rng.below(PROSE.len() as u64) as usize]);
            if sentence > 6 && chance(rng, 20) {
                out.push('.');
                sentence = 0;
                if out.len() < length {
                    out.push(' ');
                }
                continue;
            }
            if chance(rng, 5) {
                out.push(',');
            }
        }
        sentence += 1;
    }
    let out = out.trim_end_matches([' ', ',']).to_owned();
    if out.ends_with('.') {
        out
    } else {
        out + "."
    }
}

/// A date-time `days` days after 2016-01-01 on a calendar of twelve 28-day months (always a valid
/// date, in order), as Helm writes `created`.
fn created(rng: &mut Rng, days: u64) -> String {
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        2016 + days / 336,
        1 + days % 336 / 28,
        1 + days % 28,
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1_000_000_000)
    )
}

/// What stays the same across the versions of one chart.
struct Shape {
    name: String,
    vendor: &'static str,
    description: String,
    home: String,
    icon: Option<String>,
    keywords: Vec<&'static str>,
    /// `(name, email, url)`.
    maintainers: Vec<(&'static str, Option<String>, Option<String>)>,
    sources: Vec<String>,
    category: Option<&'static str>,
    license: Option<&'static str>,
    /// Lines of `artifacthub.io/changes` per version (0: none).
    changes: u64,
    /// Images listed in `artifacthub.io/images`.
    images: Vec<String>,
    /// `(name, version, repository, condition)`.
    dependencies: Vec<(String, String, String, Option<String>)>,
    kube_version: Option<&'static str>,
    chart_type: Option<&'static str>,
    relative_urls: bool,
    deprecated: bool,
    versions: u64,
    first_major: u64,
}

impl Shape {
    fn draw(rng: &mut Rng, names: &mut HashSet<String>) -> Shape {
        let parts = match rng.below(100) {
            0..=24 => 1,
            25..=64 => 2,
            65..=89 => 3,
            _ => 4,
        };
        let mut name = (0..parts)
            .map(|_| NAME_PARTS[rng.below(NAME_PARTS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join("-");
        if names.contains(&name) {
            let base = name.clone();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
        }
        names.insert(name.clone());
        let vendor = VENDORS[rng.below(VENDORS.len() as u64) as usize];
        // Descriptions: mostly a sentence or two, some a paragraph, a few a whole README's worth.
        let description_length = match rng.below(100) {
            0..=69 => between(rng, 40, 160),
            70..=94 => between(rng, 160, 400),
            _ => between(rng, 400, 2000),
        } as usize;
        let description = prose(rng, description_length);
        let home = match rng.below(3) {
            0 => format!("https://{vendor}.example.com"),
            1 => format!("https://github.com/{vendor}/charts/tree/main/{name}"),
            _ => format!("https://{name}.example.io/docs/getting-started"),
        };
        let icon = chance(rng, 85).then(|| {
            format!(
                "https://{vendor}.example.com/assets/stacks/{name}/img/{name}-stack-220x234.png"
            )
        });
        let keywords = (0..rng.below(9))
            .map(|_| NAME_PARTS[rng.below(NAME_PARTS.len() as u64) as usize])
            .collect();
        let maintainers = (0..between(rng, 1, 4))
            .map(|_| {
                let who = MAINTAINERS[rng.below(MAINTAINERS.len() as u64) as usize];
                let handle: String = who
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_lowercase();
                (
                    who,
                    chance(rng, 50).then(|| format!("{handle}@example.com")),
                    chance(rng, 60).then(|| format!("https://github.com/{handle}")),
                )
            })
            .collect();
        let sources = (0..rng.below(4))
            .map(|i| match i {
                0 => format!("https://github.com/{vendor}/charts/tree/main/{vendor}/{name}"),
                1 => format!("https://github.com/{vendor}/containers/tree/main/{name}"),
                _ => format!("https://github.com/{name}/{name}"),
            })
            .collect();
        let images = if chance(rng, 40) {
            (0..between(rng, 1, 4))
                .map(|i| match i {
                    0 => name.clone(),
                    1 => "os-shell".to_owned(),
                    2 => format!("{name}-exporter"),
                    _ => "kubectl".to_owned(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let dependencies = if chance(rng, 35) {
            (0..between(rng, 1, 4))
                .map(|i| {
                    let dep = if i == 0 {
                        "common".to_owned()
                    } else {
                        NAME_PARTS[rng.below(NAME_PARTS.len() as u64) as usize].to_owned()
                    };
                    let condition = (i > 0).then(|| format!("{dep}.enabled"));
                    (
                        dep,
                        format!("{}.x.x", between(rng, 1, 20)),
                        format!("oci://registry-1.docker.io/{vendor}charts"),
                        condition,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        // Versions: most charts have a few (log-uniform from 1 to 40), some a long history.
        let versions = if chance(rng, 3) {
            between(rng, 60, 300)
        } else {
            let u = rng.below(1 << 20) as f64 / (1 << 20) as f64;
            (41f64.powf(u) as u64).clamp(1, 40)
        };
        Shape {
            name,
            vendor,
            description,
            home,
            icon,
            keywords,
            maintainers,
            sources,
            category: chance(rng, 60)
                .then(|| CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize]),
            license: chance(rng, 50).then(|| LICENSES[rng.below(LICENSES.len() as u64) as usize]),
            changes: if chance(rng, 40) {
                between(rng, 1, 5)
            } else {
                0
            },
            images,
            dependencies,
            kube_version: match rng.below(10) {
                0..=3 => Some(">=1.19.0-0"),
                4 => Some(">=1.23.0-0"),
                _ => None,
            },
            chart_type: chance(rng, 70).then_some("application"),
            relative_urls: chance(rng, 30),
            deprecated: chance(rng, 3),
            versions,
            first_major: between(rng, 0, 12),
        }
    }

    /// Writes version `v` (0 the oldest) in Helm's layout, keys in the order Helm writes them.
    fn write_version(&self, rng: &mut Rng, v: u64, out: &mut String) {
        let name = &self.name;
        let version = format!("{}.{}.{}", self.first_major + v / 24, v / 6 % 4, v % 6);
        let app = format!("{}.{}.{}", 1 + v / 10, v % 10, rng.below(20));
        let annotations = self.changes > 0
            || !self.images.is_empty()
            || self.license.is_some()
            || self.category.is_some();
        out.push_str("  - ");
        let mut first = true;
        // The first key of a version goes on the `- ` line.
        let mut key = |out: &mut String, text: &str| {
            if first {
                first = false;
            } else {
                out.push_str("    ");
            }
            out.push_str(text);
        };
        if annotations {
            key(out, "annotations:\n");
            if self.changes > 0 {
                out.push_str("      artifacthub.io/changes: |\n");
                for c in 0..self.changes {
                    let kind = ["changed", "fixed", "added"][(c % 3) as usize];
                    let _ = writeln!(
                        out,
                        "        - kind: {kind}\n          description: Update {} to {}.{}.{} (#{})",
                        if c == 0 { name.as_str() } else { "dependencies" },
                        1 + v / 10,
                        v % 10,
                        c,
                        10_000 + rng.below(20_000)
                    );
                }
            }
            if !self.images.is_empty() {
                out.push_str("      artifacthub.io/images: |\n");
                for image in &self.images {
                    let _ = writeln!(
                        out,
                        "        - name: {image}\n          image: docker.io/{}/{image}:{app}-debian-12-r{}",
                        self.vendor,
                        rng.below(40)
                    );
                }
            }
            if let Some(license) = self.license {
                let _ = writeln!(out, "      artifacthub.io/license: {license}");
            }
            if let Some(category) = self.category {
                let _ = writeln!(out, "      category: {category}");
            }
        }
        key(out, "apiVersion: v2\n");
        let _ = writeln!(out, "    appVersion: {app}");
        let days = 3000u64.saturating_sub((self.versions - 1 - v) * 5);
        let _ = writeln!(out, "    created: \"{}\"", created(rng, days));
        if !self.dependencies.is_empty() {
            out.push_str("    dependencies:\n");
            for (dep, range, repository, condition) in &self.dependencies {
                match condition {
                    Some(condition) => {
                        let _ = write!(out, "    - condition: {condition}\n      name: {dep}\n");
                    }
                    None => {
                        let _ = writeln!(out, "    - name: {dep}");
                    }
                }
                let _ = writeln!(out, "      repository: {repository}");
                if dep == "common" {
                    let _ = writeln!(out, "      tags:\n      - {}-common", self.vendor);
                }
                let _ = writeln!(out, "      version: {range}");
            }
        }
        if self.deprecated && v + 1 == self.versions {
            out.push_str("    deprecated: true\n");
        }
        let _ = writeln!(out, "    description: {}", self.description);
        let digest: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
        let _ = writeln!(out, "    digest: {digest}");
        let _ = writeln!(out, "    home: {}", self.home);
        if let Some(icon) = &self.icon {
            let _ = writeln!(out, "    icon: {icon}");
        }
        if !self.keywords.is_empty() {
            out.push_str("    keywords:\n");
            for keyword in &self.keywords {
                let _ = writeln!(out, "    - {keyword}");
            }
        }
        if let Some(kube) = self.kube_version {
            let _ = writeln!(out, "    kubeVersion: \"{kube}\"");
        }
        out.push_str("    maintainers:\n");
        for (who, email, url) in &self.maintainers {
            let mut prefix = "    - ";
            if let Some(email) = email {
                let _ = writeln!(out, "{prefix}email: {email}");
                prefix = "      ";
            }
            let _ = writeln!(out, "{prefix}name: {who}");
            if let Some(url) = url {
                let _ = writeln!(out, "      url: {url}");
            }
        }
        let _ = writeln!(out, "    name: {name}");
        if !self.sources.is_empty() {
            out.push_str("    sources:\n");
            for source in &self.sources {
                let _ = writeln!(out, "    - {source}");
            }
        }
        if let Some(chart_type) = self.chart_type {
            let _ = writeln!(out, "    type: {chart_type}");
        }
        if self.relative_urls {
            let _ = writeln!(out, "    urls:\n    - {name}-{version}.tgz");
        } else {
            let _ = writeln!(
                out,
                "    urls:\n    - https://charts.example.com/{}/{name}-{version}.tgz",
                self.vendor
            );
        }
        let _ = writeln!(out, "    version: {version}");
    }
}

/// Writes an `index.yaml` of about `target_bytes` whose charts are shaped like those of public
/// repositories (see the module `Shape::draw` and docs/PERFORMANCE.md, "Memory per index byte"):
/// names of one to four words, most charts with a few versions and some with a long history, the
/// fields Helm writes with their usual sizes, a few long descriptions, keywords, maintainers,
/// sources, annotations (Artifact Hub's changes, images and license, a category) and dependencies
/// for about a third. Returns `(charts, versions)`.
pub fn write_real_shaped(path: &Path, target_bytes: usize) -> (usize, usize) {
    let mut rng = Rng::new(23);
    let mut names = HashSet::new();
    let mut out = String::with_capacity(target_bytes + (4 << 20));
    out.push_str("apiVersion: v1\nentries:\n");
    let (mut charts, mut versions) = (0, 0);
    while out.len() < target_bytes {
        let shape = Shape::draw(&mut rng, &mut names);
        let _ = writeln!(out, "  {}:", shape.name);
        for v in (0..shape.versions).rev() {
            shape.write_version(&mut rng, v, &mut out);
        }
        charts += 1;
        versions += shape.versions as usize;
    }
    out.push_str("generated: \"2024-03-01T00:00:00Z\"\n");
    std::fs::write(path, out).expect("write index.yaml");
    (charts, versions)
}

// ---------------------------------------------------------------------------------------------
// The baseline: serde's straightforward parse into owned structs.

/// `index.yaml` as Helm's `repo.IndexFile` holds it: every chart's versions with their fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IndexFile {
    pub api_version: String,
    pub entries: BTreeMap<String, Vec<ChartVersion>>,
    pub generated: String,
}

/// One version of a chart, every field Helm writes as an owned value.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ChartVersion {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub app_version: String,
    pub kube_version: String,
    pub description: String,
    pub home: String,
    pub icon: String,
    #[serde(rename = "type")]
    pub chart_type: String,
    pub created: String,
    pub digest: String,
    pub deprecated: bool,
    pub keywords: Vec<String>,
    pub sources: Vec<String>,
    pub urls: Vec<String>,
    pub maintainers: Vec<Maintainer>,
    pub annotations: BTreeMap<String, String>,
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Maintainer {
    pub name: String,
    pub email: String,
    pub url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Dependency {
    pub name: String,
    pub version: String,
    pub repository: String,
    pub condition: String,
    pub tags: Vec<String>,
    pub alias: String,
}

/// `tributary-bench parse-owned <file>`: reads the file, parses it with `serde-saphyr` into an
/// [`IndexFile`], drops the text, waits [`SETTLE`] and prints its own `VmRSS` before reading, then
/// its `VmRSS` and `VmHWM` with the parsed index alive.
pub fn parse_owned_child(path: &Path) {
    let before = own_vm_rss_kib().unwrap_or(0);
    let start = Instant::now();
    let text = std::fs::read_to_string(path).expect("read the index");
    // No budget: its default counts stop well short of a 50 MB document.
    let options = serde_saphyr::options! { budget: None };
    let index: IndexFile =
        serde_saphyr::from_str_with_options(&text, options).expect("parse the index");
    drop(text);
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let versions: usize = index.entries.values().map(Vec::len).sum();
    println!(
        "before_kib={before} rss_kib={} hwm_kib={} charts={} versions={versions} secs={secs}",
        own_vm_rss_kib().unwrap_or(0),
        own_vm_hwm_kib().unwrap_or(0),
        index.entries.len(),
    );
    drop(std::hint::black_box(index));
}

/// What a process holding an index reported, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Before the index (the idle server, or the baseline before reading).
    idle_kib: u64,
    steady_kib: u64,
    peak_kib: u64,
}

impl Memory {
    /// `(steady - idle - index bytes) / charts`.
    fn bytes_per_chart(&self, written: &Written) -> f64 {
        (self.steady_kib as f64 * 1024.0 - self.idle_kib as f64 * 1024.0 - written.bytes as f64)
            / written.charts as f64
    }
}

/// Runs [`parse_owned_child`] on `written` in a process of its own.
fn baseline(written: &Written) -> (Memory, f64) {
    let output = Command::new(own_executable())
        .arg("parse-owned")
        .arg(&written.path)
        .output()
        .expect("run parse-owned");
    assert!(
        output.status.success(),
        "parse-owned failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| -> String {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("parse-owned printed no {key}: {text}"))
            .to_owned()
    };
    let number = |key: &str| field(key).parse::<u64>().expect("a number");
    assert_eq!(number("charts=") as usize, written.charts, "{text}");
    assert_eq!(number("versions=") as usize, written.versions, "{text}");
    (
        Memory {
            idle_kib: number("before_kib="),
            steady_kib: number("rss_kib="),
            peak_kib: number("hwm_kib="),
        },
        field("secs=").parse().expect("seconds"),
    )
}

/// Starts a server on `index` (with `env` set), asks for its first page, waits [`SETTLE`], and
/// reads its memory (`idle_kib` left 0). Returns it with the time to listening and to the first
/// page.
fn serve(
    bench: &Bench,
    work: &Workdir,
    name: &str,
    index: &Path,
    env: &[(&str, &str)],
) -> (Memory, Duration, Duration) {
    let plugins = work.plugin_dir("plugins", &[(&artifacts().helm, "libhelm.so")]);
    let sources = source_table("charts", "helm", &helm_config(index));
    let config = work.config(&format!("{name}.toml"), &plugins, &sources);
    let server = ServerProcess::tributary_with_env(&config, env);
    let url = server.url();
    let (first_page, items) = bench.run(async move {
        let start = Instant::now();
        let mut client = grpc::connect(&url).await;
        let page = grpc::list(&mut client, grpc::request(20, "", &[])).await;
        (start.elapsed(), page.available_package_summaries.len())
    });
    assert!(items > 0, "the first page of {name} is empty");
    std::thread::sleep(SETTLE);
    (
        Memory {
            idle_kib: 0,
            steady_kib: server.rss_kib(),
            peak_kib: server.peak_rss_kib(),
        },
        server.startup,
        first_page,
    )
}

pub fn title(settings: &Settings) -> String {
    format!(
        "memory per index byte: Helm {} MiB, real-shaped {} MB, {} minimal charts",
        settings.pick(50, 5),
        settings.pick(60, 6),
        settings.pick("1M", "100k")
    )
}

/// `12.3 MiB (1.23×)`: a size in KiB and its ratio to `bytes`.
fn of_index(kib: u64, bytes: u64) -> String {
    format!(
        "{} ({:.2}× index)",
        fmt_kib(kib as f64),
        kib as f64 * 1024.0 / bytes as f64
    )
}

pub fn run(bench: &Bench, report: &mut Report) {
    let work = Workdir::new();
    let one = work.path().join("one-chart.yaml");
    write_minimal(&one, 1);
    // The idle server's figure is taken with mimalloc giving back what it frees at once: otherwise
    // it keeps the library file it read (to hash it and copy it into a sealed memfd) resident until
    // its next arena operation, which an idle server does not make, while a server that reads an
    // index gives it back on its own.
    let (idle, _, _) = serve(bench, &work, "idle", &one, &[("MIMALLOC_PURGE_DELAY", "0")]);
    let (idle_default, _, _) = serve(bench, &work, "idle-default", &one, &[]);
    report.note(
        "12",
        format!(
            "idle server (the helm plugin on a one-chart index): RSS {}, peak {}; with mimalloc's \
             default purge delay RSS {} (the library's bytes, freed, still resident)",
            fmt_kib(idle.steady_kib as f64),
            fmt_kib(idle.peak_kib as f64),
            fmt_kib(idle_default.steady_kib as f64),
        ),
    );
    for input in Input::ALL {
        let path = work.path().join(format!("{}.yaml", input.word()));
        let written = input.write(&path, &bench.settings);
        let label = input.label(&written);
        progress(format!(
            "{label}: {} bytes, {} charts, {} versions",
            written.bytes, written.charts, written.versions
        ));
        let (mut server, startup, first_page) = serve(bench, &work, input.word(), &path, &[]);
        server.idle_kib = idle.steady_kib;
        let (serde, parse_secs) = baseline(&written);
        let bytes = written.bytes;
        let steady_ratio = server.steady_kib as f64 * 1024.0 / bytes as f64;
        let peak_ratio = server.peak_kib as f64 * 1024.0 / bytes as f64;
        let (target_steady, target_peak) = if input.real_shaped() {
            (Target::AtMost(STEADY_TARGET), Target::AtMost(PEAK_TARGET))
        } else {
            (Target::Report, Target::Report)
        };
        report.row(
            Row::new("12", format!("memory, {label}: steady RSS / index bytes"))
                .figures(
                    of_index(server.steady_kib, bytes),
                    format!("serde: {}", of_index(serde.steady_kib, bytes)),
                )
                .ratio(steady_ratio)
                .target(target_steady),
        );
        report.row(
            Row::new("12", format!("memory, {label}: peak RSS / index bytes"))
                .figures(
                    of_index(server.peak_kib, bytes),
                    format!("serde: {}", of_index(serde.peak_kib, bytes)),
                )
                .ratio(peak_ratio)
                .target(target_peak),
        );
        let (ours, theirs) = (
            server.bytes_per_chart(&written),
            serde.bytes_per_chart(&written),
        );
        let per_chart = Row::new(
            "12",
            format!("memory, {label}: bytes per chart beyond its text, vs serde's"),
        )
        .figures(format!("{ours:.0} B"), format!("serde: {theirs:.0} B"));
        // A ratio only between two costs (a figure below 0 says the text costs more than its copy).
        let per_chart = if ours > 0.0 && theirs > 0.0 {
            per_chart.ratio(ours / theirs)
        } else {
            per_chart
        };
        report.row(if input.real_shaped() {
            per_chart
        } else {
            per_chart.target(Target::Check {
                text: format!("≤ {BYTES_PER_CHART_TARGET:.0} B"),
                met: ours <= BYTES_PER_CHART_TARGET,
            })
        });
        report.note(
            "12",
            format!(
                "{label}: {bytes} bytes, {} charts, {} versions; server listening after {}, \
                 first page {} later; serde's parse {} (idle RSS {})",
                written.charts,
                written.versions,
                fmt_secs(startup.as_secs_f64()),
                fmt_secs(first_page.as_secs_f64()),
                fmt_secs(parse_secs),
                fmt_kib(serde.idle_kib as f64)
            ),
        );
        let _ = std::fs::remove_file(&path);
    }
    report.note(
        "12",
        "ratios of the steady and peak rows: the server's VmRSS / VmHWM over the index file's \
         bytes (the baseline's in its column); bytes per chart beyond its text: (steady VmRSS - \
         idle VmRSS - index bytes) / charts, the idle server being the same plugin on a one-chart \
         index (MIMALLOC_PURGE_DELAY=0) and the baseline's idle its own VmRSS before reading; that \
         row's ratio is ours over the baseline's",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &Path) -> IndexFile {
        let text = std::fs::read_to_string(path).unwrap();
        serde_saphyr::from_str_with_options(&text, serde_saphyr::options! { budget: None }).unwrap()
    }

    #[test]
    fn the_minimal_index_is_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.yaml");
        assert_eq!(write_minimal(&path, 1000), (1000, 1000));
        let index = parse(&path);
        assert_eq!(index.entries.len(), 1000);
        let first = &index.entries["pkg-000"][0];
        assert_eq!(
            (first.name.as_str(), first.version.as_str()),
            ("pkg-000", "1.0.0")
        );
        assert!(first.description.is_empty() && first.urls.is_empty());
        // 54 bytes a chart for a million (six digits); 48 with three.
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(size, 24 + 1000 * 48 + 34);
    }

    #[test]
    fn the_real_shaped_index_parses_with_what_was_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.yaml");
        let (charts, versions) = write_real_shaped(&path, 2_000_000);
        let index = parse(&path);
        assert_eq!(index.entries.len(), charts);
        assert_eq!(
            index.entries.values().map(Vec::len).sum::<usize>(),
            versions
        );
        assert!(
            versions > 2 * charts,
            "{charts} charts, {versions} versions"
        );
        let all: Vec<&ChartVersion> = index.entries.values().flatten().collect();
        let share = |f: &dyn Fn(&ChartVersion) -> bool| {
            all.iter().filter(|v| f(v)).count() as f64 / all.len() as f64
        };
        assert!(all.iter().all(|v| !v.name.is_empty()
            && v.version.len() >= 5
            && v.digest.len() == 64
            && v.urls.len() == 1
            && !v.maintainers.is_empty()));
        assert!(share(&|v| !v.dependencies.is_empty()) > 0.1);
        assert!(share(&|v| v.annotations.contains_key("artifacthub.io/changes")) > 0.1);
        assert!(share(&|v| v.description.len() > 400) > 0.01);
        assert!(share(&|v| !v.keywords.is_empty()) > 0.5);
        // Every chart name once, versions unique within a chart.
        for versions in index.entries.values() {
            let mut seen: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), versions.len());
        }
    }

    #[test]
    fn inputs_are_named_on_the_command_line() {
        for input in Input::ALL {
            assert_eq!(Input::from_word(input.word()), Some(input));
        }
        assert_eq!(Input::from_word("big"), None);
    }
}
