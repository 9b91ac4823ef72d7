//! `tributary plugin check LIB.so`: one library checked the way the server would use it. The file is
//! loaded by [`crate::loader`] exactly as the server loads it (permission checks included), its
//! metadata and SHA-256 are printed, one source is built from the given configuration with the same
//! [`HostContext`](tributary_plugin_api::HostContext) the server passes, and the conformance kit
//! (`tributary_plugin_api::conformance`) runs against that source through the real FFI boundary.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tributary_plugin_api::{
    capabilities,
    conformance::{self, Ffi, Options},
    INTERFACE_VERSION,
};

use crate::{context, loader};

/// What to check.
pub struct CheckRequest {
    pub library: PathBuf,
    /// The source's configuration, a JSON object.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Relative paths in the configuration resolve against it (as the config file's folder does).
    pub base_dir: PathBuf,
    /// The source name the plugin is told; the plugin's name when `None`.
    pub source_name: Option<String>,
    /// How long each call of the check may take, as the server's source timeout.
    pub call_timeout: Duration,
    pub seed: u64,
}

/// The printed report and whether everything passed.
pub struct CheckOutcome {
    pub report: String,
    pub passed: bool,
}

/// Runs the check. Never panics on a bad library: every failure is a line of the report.
pub fn run(request: &CheckRequest) -> CheckOutcome {
    let mut out = String::new();
    let fail = |mut out: String, line: &str| {
        let _ = writeln!(out, "result:       FAIL: {line}");
        CheckOutcome {
            report: out,
            passed: false,
        }
    };
    let _ = writeln!(out, "library:      {}", request.library.display());
    match std::fs::read(&request.library) {
        Ok(bytes) => {
            let _ = writeln!(out, "sha256:       {}", loader::sha256_hex(&bytes));
        }
        Err(e) => return fail(out, &format!("cannot read the file: {e}")),
    }
    let file = loader::load_all(std::slice::from_ref(&request.library), true)
        .pop()
        .expect("one outcome per path");
    let plugin = match file.outcome {
        Ok(plugin) => plugin,
        Err(reason) => {
            if let Some(meta) = &file.meta {
                let _ = writeln!(out, "plugin:       {} {}", meta.name, meta.version);
            }
            return fail(out, &format!("the server would reject it: {reason}"));
        }
    };
    let meta = &plugin.meta;
    let _ = writeln!(
        out,
        "plugin:       {} {}: {}",
        meta.name, meta.version, meta.description
    );
    let _ = writeln!(
        out,
        "interface:    {}.{} (this host: {}.{})",
        meta.interface.0, meta.interface.1, INTERFACE_VERSION.0, INTERFACE_VERSION.1
    );
    let capabilities = if meta.capabilities.is_empty() {
        "none".to_owned()
    } else {
        meta.capabilities
            .iter()
            .map(|c| {
                if capabilities::is_known(c) {
                    format!("{c} (supported)")
                } else {
                    format!("{c} (unknown to this host, ignored)")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "capabilities: {capabilities}");

    let source_name = request
        .source_name
        .clone()
        .unwrap_or_else(|| meta.name.clone());
    let text = loader::source_config_text(&request.config, &request.base_dir);
    let source =
        match plugin.new_source(&source_name, &text, &request.base_dir, request.call_timeout) {
            Ok(source) => source,
            Err(e) => return fail(out, &format!("the source could not be built: {e}")),
        };
    let _ = writeln!(out, "source:       {source_name} (built)");
    let _ = writeln!(out, "conformance:");
    // The kit's calls run on this thread; the plugin sees this deadline through `Host::time_left`.
    let _scope = context::enter_call(Instant::now() + request.call_timeout);
    let report = conformance::check(
        &Ffi(&source),
        &Options {
            seed: request.seed,
            capabilities: meta.capabilities.clone(),
            ..Options::default()
        },
    );
    let _ = writeln!(out, "{report}");
    if report.passed() {
        let _ = writeln!(out, "result:       PASS");
        CheckOutcome {
            report: out,
            passed: true,
        }
    } else {
        fail(
            out,
            &format!(
                "{} of {} checks failed",
                report.failures(),
                report.checks.len()
            ),
        )
    }
}

/// Reads a `--config` / `--config-file` argument into a JSON object, naming the flag on error.
pub fn parse_config(
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let (what, text) = match (inline, file) {
        (Some(text), _) => ("--config".to_owned(), text.to_owned()),
        (None, Some(path)) => (
            format!("--config-file {}", path.display()),
            std::fs::read_to_string(path)
                .map_err(|e| format!("--config-file {}: {e}", path.display()))?,
        ),
        (None, None) => return Ok(serde_json::Map::new()),
    };
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{what}: expected a JSON object")),
        Err(e) => Err(format!("{what}: not valid JSON: {e}")),
    }
}
