//! Start-up as an operator meets it (`tributary serve` and `tributary plugins` as real processes):
//! a source that cannot start stops the start unless `start_degraded` says otherwise, TOML errors as
//! the toml crate prints them, the exact line that allows an insecure plugin folder, TLS and auth
//! files checked before any plugin is loaded, and plugin paths shown without `..`.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
};

use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{artifacts, keys, list, PluginDir};

use crate::binary::{terminate, write_config};

fn run(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(&artifacts().binary)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run tributary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `catalog` rejects the unknown key `pth` (a typo of `path`); `one` is fine.
const TYPO: &str = r#"
[[source]]
name = "one"
plugin = "testkit"
config = { items = [{ name = "a" }] }
[[source]]
name = "docs"
plugin = "catalog"
config = { pth = "catalog.json" }
"#;

#[tokio::test]
async fn a_source_whose_plugin_rejects_its_config_stops_the_start() {
    let plugins = PluginDir::with(&["testkit", "catalog"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), TYPO);

    let serve = Command::new(&artifacts().binary)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&serve);
    assert_eq!(serve.status.code(), Some(3), "{err}");
    assert!(
        err.contains("source \"docs\" (plugin \"catalog\") cannot start")
            && err.contains("unknown field `pth`"),
        "{err}"
    );
    assert!(err.contains("start_degraded = true"), "{err}");
    assert!(
        !String::from_utf8_lossy(&serve.stdout).contains("listening on"),
        "it served"
    );

    // `tributary plugins` lists the failure and exits non-zero.
    let plugins_run = run(&["plugins"], &config);
    let out = String::from_utf8_lossy(&plugins_run.stdout);
    assert_eq!(plugins_run.status.code(), Some(5), "{out}");
    assert!(out.contains("failed    docs <- plugin catalog"), "{out}");
    assert!(out.contains("ready     one <- plugin testkit"), "{out}");

    // Opting in: the server starts, serves `one`, and says why `docs` is missing.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("start_degraded = true\n{text}")).unwrap();
    let mut child = Command::new(&artifacts().binary)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    let address = line.trim().trim_start_matches("listening on ").to_owned();
    let mut client = PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@one/a"]);
    assert_eq!(
        page.failed_sources
            .iter()
            .map(|f| f.source.as_str())
            .collect::<Vec<_>>(),
        ["docs"]
    );
    let mut err = child.stderr.take().unwrap();
    assert_eq!(terminate(child).code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut err, &mut log).unwrap();
    assert!(
        log.contains("start_degraded = true: serving without this source") && log.contains("docs"),
        "{log}"
    );
}

#[test]
fn toml_errors_keep_their_lines_and_a_misplaced_top_level_key_says_where_it_goes() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    // As the README's trial advice was once followed: appended after the last [[source]].
    let config = write_config(
        dir.path(),
        plugins.path(),
        "[[source]]\nname = \"one\"\nplugin = \"testkit\"\nallow_insecure_plugin_dir = true\n",
    );
    let output = run(&["plugins"], &config);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    let expected = format!(
        "tributary: config file {}:\nTOML parse error at line 6, column 1\n  |\n6 | allow_insecure_plugin_dir = true\n  | ^^^^^^^^^^^^^^^^^^^^^^^^^\nunknown field `allow_insecure_plugin_dir`",
        config.display()
    );
    assert!(
        err.starts_with(&expected),
        "{err}\n---\nwanted it to start with\n{expected}"
    );
    assert!(
        err.contains("hint: `allow_insecure_plugin_dir` is a top-level key")
            && err.contains("Move it above line 3, the first table header."),
        "{err}"
    );
}

#[test]
fn an_insecure_plugin_folder_names_the_line_to_add_and_where() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "[[source]]\nname = \"one\"\nplugin = \"testkit\"\n",
    );
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = run(&["plugins"], &config);
    let err = stderr(&output);
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(output.status.code(), Some(4), "{err}");
    assert!(
        err.contains("is writable by group and others (mode 0777)"),
        "{err}"
    );
    let expected = format!(
        "tributary: to allow it for a trial, add this line to {} at the top level, above line 3 (the first [table] or [[source]] header; below it the key would belong to that table):\n    allow_insecure_plugin_dir = true\n",
        config.display()
    );
    assert!(
        err.ends_with(&expected),
        "{err}\n---\nwanted it to end with\n{expected}"
    );

    // Followed as written: the start goes on, with a warning for as long as it is on.
    let text = std::fs::read_to_string(&config).unwrap();
    let (head, tail) = text.split_at(text.find("[[source]]").unwrap());
    std::fs::write(
        &config,
        format!("{head}allow_insecure_plugin_dir = true\n{tail}"),
    )
    .unwrap();
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = run(&["plugins"], &config);
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        err.contains("allow_insecure_plugin_dir = true: plugin files and folders that other users can change are loaded"),
        "{err}"
    );
}

#[test]
fn tls_and_auth_files_are_checked_before_any_plugin_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    // A plugin folder that does not exist would be exit code 4, found while loading plugins.
    let missing = dir.path().join("no-plugins-here");
    for (section, file) in [
        ("[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n", "server.pem"),
        (
            "[auth]\ntokens_file = \"tokens\"\n[[auth.identity]]\nname = \"ci\"\nsources = [\"*\"]\n",
            "tokens",
        ),
    ] {
        let config = write_config(dir.path(), &missing, section);
        let output = run(&["serve"], &config);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{section}: {err}");
        assert!(err.contains(file), "{section}: {err}");
        assert!(!err.contains("no-plugins-here"), "{section}: {err}");
    }
}

#[test]
fn the_plugin_directory_is_shown_without_dot_dot() {
    let plugins = PluginDir::with(&["testkit"]);
    // Below the tests' private folder: a plugin path through a world-writable /tmp is refused.
    let dir = tempfile::tempdir_in(tributary_tests::private_root()).unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    std::os::unix::fs::symlink(plugins.path(), dir.path().join("plugins")).unwrap();
    let config = examples.join("tributary.toml");
    std::fs::write(
        &config,
        "plugin_dir = \"../plugins\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let output = run(&["plugins"], &config);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        out.lines().next().unwrap_or_default(),
        format!("plugin directory: {}", dir.path().join("plugins").display()),
        "{out}{}",
        stderr(&output)
    );
}
