//! The plugin author's kit from outside: `tributary plugin check` on a good and a broken library and
//! on the compatibility fixtures, and the template copied out of the tree, built against this
//! plugin-api, checked, loaded by a real server, and refused with `panic = "abort"`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::json;
use tributary_tests::{artifacts, config, keys, list, source, PluginDir, TestServer};

fn check(library: &Path, extra: &[&str]) -> (i32, String) {
    check_in(Path::new(env!("CARGO_MANIFEST_DIR")), library, extra)
}

/// `tributary plugin check` run from the working directory `cwd`.
fn check_in(cwd: &Path, library: &Path, extra: &[&str]) -> (i32, String) {
    let output: Output = Command::new(&artifacts().binary)
        .current_dir(cwd)
        .args(["plugin", "check"])
        .arg(library)
        .args(extra)
        .output()
        .expect("run tributary plugin check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// The library of `name` copied into a fresh plugin folder (as an operator would ship it).
fn shipped(name: &str) -> (PluginDir, PathBuf) {
    let dir = PluginDir::with(&[name]);
    let path = dir.path().join(format!("lib{name}.so"));
    (dir, path)
}

fn lines_starting(report: &str, prefix: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn plugin_check_passes_a_good_plugin_and_fails_a_broken_one() {
    let (_dir, lib) = shipped("testkit");
    let (code, report) = check(&lib, &["--config", r#"{"generate": 200}"#]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("plugin:       testkit 0.1.0: Test items and faults on demand"),
        "{report}"
    );
    assert!(
        report.contains("interface:    1.1 (this host: 1.1)"),
        "{report}"
    );
    let sha = lines_starting(&report, "sha256:");
    assert_eq!(sha.len(), 1);
    assert_eq!(sha[0].len(), "sha256:".len() + 7 + 64, "{report}");
    assert!(lines_starting(&report, "FAIL").is_empty(), "{report}");
    assert_eq!(lines_starting(&report, "ok ").len(), 17, "{report}");
    assert!(report.ends_with("result:       PASS\n"), "{report}");

    // A source that ignores the seek key on its 4th call, and one that panics in detail.
    let (code, report) = check(
        &lib,
        &["--config", r#"{"generate": 200, "stale_on_call": 4}"#],
    );
    assert_eq!(code, 1, "{report}");
    let failed = lines_starting(&report, "FAIL");
    assert_eq!(failed.len(), 1, "{report}");
    assert!(
        failed[0].starts_with("FAIL  paging with random limits, round 1: item (\"pkg-0000000000\", \"g0\") is not after the requested key"),
        "{report}"
    );
    assert!(
        report.ends_with("result:       FAIL: 1 of 17 checks failed\n"),
        "{report}"
    );

    let (code, report) = check(
        &lib,
        &[
            "--config",
            r#"{"items": [{"name": "a"}], "panic_in_detail": true}"#,
        ],
    );
    assert_eq!(code, 1, "{report}");
    let failed = lines_starting(&report, "FAIL");
    assert!(
        failed[0].starts_with("FAIL  detail of every listed identifier (1): detail of \"a\": the source panicked: panicked: injected panic in detail at plugins/testkit/src/lib.rs:"),
        "{report}"
    );
    assert!(
        !report.contains("thread '"),
        "the plugin's panic hook keeps stderr clean: {report}"
    );

    // A constructor that fails, bad input and a config file relative to its folder.
    let (code, report) = check(&lib, &["--config", r#"{"generate": "x"}"#]);
    assert_eq!(code, 1);
    assert!(report.ends_with("result:       FAIL: the source could not be built: invalid_config: testkit config: key `generate`: invalid type: string \"x\", expected u64\n"), "{report}");
    let (code, report) = check(&lib, &["--config", "[1]"]);
    assert_eq!(
        (code, report.trim()),
        (2, "tributary: --config: expected a JSON object")
    );
}

#[test]
fn plugin_check_on_the_compatibility_fixtures() {
    // A frozen 1.0 plugin passes through a host that asks for an unknown call and reads its flags.
    let (_d1, lib) = shipped("compat-v1-0");
    let (code, report) = check(&lib, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("capabilities: none"), "{report}");
    // A 1.1 plugin: its capability is shown and ignored.
    let (_d2, lib) = shipped("compat-v1-1");
    let (code, report) = check(&lib, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("interface:    1.1 (this host: 1.1)"),
        "{report}"
    );
    assert!(
        report.contains("capabilities: detail.batch@1 (unknown to this host, ignored)"),
        "{report}"
    );
    // A library the server rejects.
    let (_d3, lib) = shipped("compat-major-2");
    let (code, report) = check(&lib, &[]);
    assert_eq!(code, 1);
    assert!(report.contains("\nresult:       FAIL: the server would reject it: built for plugin interface 2.0, this host speaks 1.x: rebuild the plugin against tributary-plugin-api 1.x\n"), "{report}");
}

#[test]
fn a_failed_order_check_reports_the_items_read() {
    // 248 items in one page of 1000, the first two swapped on that first call.
    let (_dir, lib) = shipped("testkit");
    let (code, report) = check(
        &lib,
        &["--config", r#"{"generate": 248, "unordered_on_call": 1}"#],
    );
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        lines_starting(&report, "FAIL"),
        ["FAIL  full listing keeps the contract: items out of order: (\"pkg-0000000000\", \"g0\") came after (\"pkg-0000000001\", \"g1\"); sources must sort by name, then identifier, as bytes"],
        "{report}"
    );
    assert!(
        report.ends_with(
            "0 of 1 checks passed over 248 items (seed 1953655138)\n\
             result:       FAIL: 1 of 1 checks failed\n"
        ),
        "{report}"
    );
}

#[test]
fn plugin_check_knows_the_status_capability() {
    // The helm plugin declares status@1, which this host asks for in ListPlugins, and the 1.1
    // capabilities list.sort@1 and facets@1, which the conformance kit then checks.
    let (_dir, lib) = shipped("helm");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let config = json!({ "repositories": [{
        "name": "community",
        "url": root.join("examples/charts/community-index.yaml"),
    }]});
    let (code, report) = check(&lib, &["--config", &config.to_string()]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        lines_starting(&report, "capabilities:"),
        ["capabilities: status@1 (supported), list.sort@1 (supported), facets@1 (supported)"],
        "{report}"
    );
    assert!(!report.contains("unknown to this host"), "{report}");
}

#[test]
fn inline_config_paths_resolve_against_the_working_directory_and_a_file_against_its_folder() {
    let (_dir, lib) = shipped("catalog");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let inline = r#"{"path": "catalog.json"}"#;
    // Inline JSON: `catalog.json` is found from the examples folder, not from the tests folder.
    let (code, report) = check_in(&root.join("examples"), &lib, &["--config", inline]);
    assert_eq!(code, 0, "{report}");
    let (code, report) = check_in(&root.join("tests"), &lib, &["--config", inline]);
    assert_eq!(code, 1, "{report}");
    let missing = root.join("tests/catalog.json");
    assert!(
        report.contains(&format!("cannot read catalog {}", missing.display())),
        "{report}"
    );
    // A config file: its folder, wherever the command runs.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("examples/catalog.json"),
        folder.path().join("catalog.json"),
    )
    .unwrap();
    let file = folder.path().join("source.json");
    std::fs::write(&file, inline).unwrap();
    let (code, report) = check_in(
        &root.join("tests"),
        &lib,
        &["--config-file", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{report}");
}

/// Copies plugins/template out of the tree, with its dependency on this tree's plugin-api.
fn template_copy() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(root), "outside the tree");
    let template = root.join("plugins/template");
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::copy(template.join("src/lib.rs"), dir.path().join("src/lib.rs")).unwrap();
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).unwrap();
    let api = root.join("plugin-api").display().to_string();
    let rewritten = manifest.replace("path = \"../../plugin-api\"", &format!("path = {api:?}"));
    assert_eq!(rewritten.matches(&api).count(), 2, "{rewritten}");
    std::fs::write(dir.path().join("Cargo.toml"), rewritten).unwrap();
    dir
}

/// Where template builds go: one folder shared by runs, so that only the first compiles the deps.
fn template_target() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("template")
}

fn cargo(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(dir)
        .args(args)
        .args(["--offline", "--target-dir"])
        .arg(template_target());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run cargo")
}

#[tokio::test]
async fn the_template_builds_outside_the_tree_loads_and_passes_the_check() {
    let copy = template_copy();
    let built = cargo(copy.path(), &["build", "--lib"], &[]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let library = template_target().join("debug/libtributary_plugin_template.so");
    assert!(library.is_file());

    // Shipped: copied into a plugin folder, checked, and served by a real server.
    let plugins = PluginDir::with(&[]);
    let shipped = plugins.path().join("libtemplate.so");
    std::fs::copy(&library, &shipped).unwrap();
    let packages = json!({ "packages": [
        { "name": "redis", "version": "7.2.0", "description": "Key-value store" },
        { "name": "nginx", "version": "1.25.1" },
        { "name": "legacy", "deprecated": true }
    ]});
    let (code, report) = check(&shipped, &["--config", &packages.to_string()]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report
            .contains("plugin:       template 0.1.0: Packages listed in the source configuration"),
        "{report}"
    );

    let server = TestServer::start(config(
        plugins.path(),
        plugins.path(),
        vec![source("mine", "template", packages)],
    ))
    .await;
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["nginx@mine/nginx", "redis@mine/redis"]
    );
    server.stop().await;

    // The same plugin built with panic = "abort" does not compile.
    let aborting = cargo(
        copy.path(),
        &["check", "--lib"],
        &[("CARGO_PROFILE_DEV_PANIC", "abort")],
    );
    assert!(!aborting.status.success());
    let stderr = String::from_utf8_lossy(&aborting.stderr);
    assert!(
        stderr.contains("a Tributary plugin must be built with panic = \"unwind\""),
        "{stderr}"
    );
}

/// The fenced block that follows `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"))..];
    let start = rest.find("```").unwrap();
    let body = &rest[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

#[test]
fn the_plugin_guide_matches_the_template() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/PLUGINS.md")).unwrap();
    let manifest = std::fs::read_to_string(root.join("plugins/template/Cargo.toml")).unwrap();
    let dependencies = block_after(&guide, "<!-- dependencies:");
    assert!(
        manifest.contains(dependencies),
        "docs/PLUGINS.md quotes dependencies the template does not have:\n{dependencies}"
    );

    // The sample report lists the checks the real command prints for the template.
    let template = template_target().join("debug/libtributary_plugin_template.so");
    if !template.is_file() {
        let copy = template_copy();
        let built = cargo(copy.path(), &["build", "--lib"], &[]);
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    let plugins = PluginDir::with(&[]);
    let shipped = plugins.path().join("libtemplate.so");
    std::fs::copy(&template, &shipped).unwrap();
    let (code, report) = check(
        &shipped,
        &[
            "--config",
            r#"{"packages": [{"name": "redis", "version": "7.2.0"}, {"name": "nginx", "version": "1.25.1"}]}"#,
        ],
    );
    assert_eq!(code, 0, "{report}");
    let sample = block_after(&guide, "<!-- report:");
    let checks = |text: &str| lines_starting(text, "ok ");
    assert_eq!(checks(sample), checks(&report));
    let command = guide
        .lines()
        .find(|l| l.starts_with("tributary plugin check"))
        .unwrap();
    assert!(
        command.contains("libtributary_plugin_template.so"),
        "{command}"
    );
}
