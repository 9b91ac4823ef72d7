//! The deployment files carry server configurations of their own (the container image's default and
//! the Kubernetes ConfigMap): both must be valid configurations with the sources the docs describe.

use std::path::Path;

use tributary_runtime::config::{Config, Overrides};

fn repo_file(relative: &str) -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    (path, text)
}

fn check(path: &Path, text: &str, plugin_dir: &str) {
    let config = Config::parse(
        text,
        path,
        Path::new("/etc/tributary"),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(config.listen, "0.0.0.0:50051".parse().unwrap());
    assert_eq!(config.plugin_dir, Path::new(plugin_dir));
    let names: Vec<(&str, &str)> = config
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.plugin.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("bitnami", "helm"),
            ("community", "helm"),
            ("internal", "catalog")
        ]
    );
}

#[test]
fn the_image_config_is_valid() {
    let (path, text) = repo_file("deploy/tributary.toml");
    check(&path, &text, "/opt/tributary/plugins");
}

#[test]
fn the_configmap_config_is_valid() {
    let (path, text) = repo_file("deploy/kubernetes/configmap.yaml");
    // The block scalar after `tributary.toml: |`, indented four spaces.
    let (_, block) = text
        .split_once("tributary.toml: |\n")
        .expect("configmap.yaml has a tributary.toml block");
    let toml: String = block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    check(&path, &toml, "/plugins");
}
