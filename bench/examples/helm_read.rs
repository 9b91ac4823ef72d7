//! Reads one Helm index with the `helm` plugin linked into this binary (not loaded from its
//! library), so that a heap profiler resolves the plugin's frames; the server and scenario 12 load
//! the library instead. For the breakdown in docs/PERFORMANCE.md ("Memory per index byte"):
//!
//! ```sh
//! cargo build --release -p tributary-bench --example helm_read
//! target/release/tributary-bench write-index minimal /tmp/minimal.yaml
//! heaptrack target/release/examples/helm_read /tmp/minimal.yaml
//! heaptrack_print --print-peaks 1 --peak-limit 12 heaptrack.helm_read.*.zst
//! ```

use tributary_plugin_api::{Host, Plugin};
use tributary_plugin_helm::HelmPlugin;

fn main() {
    let file = std::env::args()
        .nth(1)
        .expect("usage: helm_read INDEX.yaml");
    // The limits of scenario 12: raised so that no index is refused.
    let config = serde_json::json!({ "repositories": [{
        "name": "big",
        "url": file,
        "max_index_size": 1u64 << 30,
        "max_charts": 10_000_000,
        "max_versions": 100_000_000,
    }] });
    let started = std::time::Instant::now();
    let source = HelmPlugin::new_source(Host::detached("charts", None), &config.to_string())
        .unwrap_or_else(|e| panic!("the index is refused: {}", e.message));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_owned()
    };
    println!(
        "read in {:.2} s; {}; {}",
        started.elapsed().as_secs_f64(),
        field("VmRSS:"),
        field("VmHWM:")
    );
    drop(source);
}
