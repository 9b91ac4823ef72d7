use std::{
    cmp::Ordering,
    fs,
    path::{Path, PathBuf},
};

use serde_json::json;
use tributary_plugin_api::{
    keys, Detail, ErrorKind, Extension, Facets, Filter, Host, ListRequest, Maintainer, OrderKey,
    PackageSource, Plugin, PluginError,
    ROption::{RNone, RSome},
    RString, RVec, SeekKey, Sort, Summary, Version,
};

use crate::{config::Limits, HelmPlugin, HelmSource};

/// The default limits.
const LIMITS: Limits = Limits {
    max_index_size: crate::config::DEFAULT_MAX_INDEX_SIZE,
    max_charts: crate::config::DEFAULT_MAX_CHARTS,
    max_versions: crate::config::DEFAULT_MAX_VERSIONS,
};

/// A folder of its own under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("tributary-helm-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const ALPHA: &str = r#"apiVersion: v1
entries:
  nginx:
  - annotations:
      category: Infrastructure
      licenses: Apache-2.0
    apiVersion: v2
    appVersion: 1.25.1
    created: "2023-07-10T10:12:48.000Z"
    dependencies:
    - name: common
      repository: oci://registry-1.docker.io/bitnamicharts
      tags: [bitnami-common]
      version: 2.x.x
    description: NGINX web server
    digest: 6c0b0b1e
    home: https://nginx.org
    icon: https://example.com/nginx.png
    keywords:
    - nginx
    - http
    kubeVersion: ">=1.19.0-0"
    maintainers:
    - name: Alice
      email: alice@example.com
      url: https://example.com/alice
    - name: Bob
    name: nginx
    sources:
    - https://github.com/example/nginx
    type: application
    urls:
    - https://charts.example.com/nginx-15.1.0.tgz
    version: 15.1.0
  - appVersion: 1.26.0
    created: "2023-08-01T00:00:00Z"
    description: NGINX web server (preview)
    digest: 9f9f
    version: 16.0.0-rc.1
  - appVersion: 1.25.0
    created: "2023-06-01T00:00:00Z"
    description: NGINX web server, older
    digest: 1234
    version: 15.0.2
  redis:
  - appVersion: "7.0"
    description: Redis nightly
    version: latest
  - appVersion: "7.2"
    description: Redis key-value store
    version: v7.2
  empty: []
  nothing:
generated: "2023-08-01T00:00:00Z"
serverInfo:
  contextPath: /charts
"#;

const BETA: &str = r#"apiVersion: v1
entries:
  nginx:
  - version: 1.0.0
  apache:
  - appVersion: 2.4.57
    deprecated: true
    description: Apache HTTP Server (deprecated)
    version: 10.0.0
  - appVersion: 2.4.56
    description: Apache HTTP Server
    version: 9.9.9
  Zeta:
  - annotations:
      category: Testing
    appVersion: 1.10
    description: null
    icon: ~
    keywords: [zeta, "", null]
    version: "2"
generated: "2023-08-01T00:00:00Z"
"#;

fn source_for(dir: &TempDir, repos: &[(&str, &str)]) -> Result<HelmSource, PluginError> {
    let repositories: Vec<_> = repos
        .iter()
        .map(|(name, file)| json!({ "name": name, "url": file }))
        .collect();
    // The folder relative paths resolve against comes from the host, not the config.
    HelmPlugin::new_source(
        Host::detached("helm", Some(dir.0.clone())),
        &json!({ "repositories": repositories, "$base_dir": "/ignored: host keys are stripped" })
            .to_string(),
    )
}

fn two_repos(dir: &TempDir) -> HelmSource {
    dir.write("alpha.yaml", ALPHA);
    dir.write("beta.yaml", BETA);
    source_for(dir, &[("alpha", "alpha.yaml"), ("beta", "beta.yaml")]).unwrap()
}

fn strings(values: &[&str]) -> RVec<RString> {
    values.iter().map(|v| RString::from(*v)).collect()
}

#[allow(clippy::too_many_arguments)]
fn summary(
    repository: &str,
    name: &str,
    latest_version: &str,
    latest_app_version: &str,
    short_description: &str,
    icon_url: &str,
    categories: &[&str],
) -> Summary {
    Summary {
        identifier: format!("{repository}/{name}").into(),
        name: name.into(),
        display_name: name.into(),
        latest_version: latest_version.into(),
        latest_app_version: latest_app_version.into(),
        short_description: short_description.into(),
        icon_url: icon_url.into(),
        categories: strings(categories),
        repository: repository.into(),
        ..Summary::default()
    }
}

fn expected_summaries() -> Vec<Summary> {
    vec![
        summary("beta", "Zeta", "2", "1.10", "", "", &["Testing"]),
        Summary {
            deprecated: true,
            ..summary(
                "beta",
                "apache",
                "10.0.0",
                "2.4.57",
                "Apache HTTP Server (deprecated)",
                "",
                &[],
            )
        },
        Summary {
            // The latest version's `created`, normalised to UTC.
            extensions: RVec::from(vec![Extension::new(
                keys::SUMMARY_UPDATED,
                "2023-07-10T10:12:48Z",
            )]),
            ..summary(
                "alpha",
                "nginx",
                "15.1.0",
                "1.25.1",
                "NGINX web server",
                "https://example.com/nginx.png",
                &["Infrastructure"],
            )
        },
        summary("beta", "nginx", "1.0.0", "", "", "", &[]),
        summary(
            "alpha",
            "redis",
            "v7.2",
            "7.2",
            "Redis key-value store",
            "",
            &[],
        ),
    ]
}

fn request(after: Option<(&str, &str)>, limit: u32, filter: Filter) -> ListRequest {
    ListRequest {
        after: match after {
            Some((name, identifier)) => RSome(SeekKey {
                name: name.into(),
                identifier: identifier.into(),
            }),
            None => RNone,
        },
        limit,
        // These tests predate the deprecated filter and expect every chart.
        filter: Filter {
            include_deprecated: true,
            ..filter
        },
        extensions: RVec::new(),
    }
}

fn all(source: &HelmSource) -> Vec<Summary> {
    source
        .list(&request(None, 1000, Filter::default()))
        .unwrap()
}

fn ids(items: &[Summary]) -> Vec<&str> {
    items.iter().map(|s| s.identifier.as_str()).collect()
}

fn keys_strictly_increasing(items: &[Summary]) -> bool {
    items
        .windows(2)
        .all(|pair| pair[0].key_cmp(&pair[1]) == Ordering::Less)
}

fn version(version: &str, app_version: &str, created: &str, digest: &str) -> Version {
    Version {
        version: version.into(),
        app_version: app_version.into(),
        created: created.into(),
        digest: digest.into(),
    }
}

#[test]
fn plugin_metadata() {
    assert_eq!(HelmPlugin::NAME, "helm");
    assert_eq!(
        HelmPlugin::DESCRIPTION,
        "Helm chart repositories: local index files, HTTP(S) repositories and OCI registries"
    );
}

#[test]
fn two_repositories_list_in_exact_order() {
    let dir = TempDir::new("two-repos");
    let source = two_repos(&dir);
    let items = all(&source);
    assert_eq!(items, expected_summaries());
    assert!(keys_strictly_increasing(&items));
}

#[test]
fn listings_sort_by_relevance_and_update_time_and_facets_count() {
    let dir = TempDir::new("sorts");
    let source = two_repos(&dir);
    assert!(HelmPlugin::CAPABILITIES.contains(&"list.sort@1"));
    assert!(HelmPlugin::CAPABILITIES.contains(&"facets@1"));
    let sorted = |sort: Sort, query: &str, after: Option<OrderKey>| {
        let mut request = request(
            None,
            10,
            Filter {
                query: query.into(),
                ..Filter::default()
            },
        );
        request.set_order(sort, after.as_ref());
        ids(&source.list(&request).unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    // Only alpha/nginx has a date (alpha/redis has none, beta none at all): first, the rest by name.
    assert_eq!(
        sorted(Sort::Updated, "", None),
        [
            "alpha/nginx",
            "beta/Zeta",
            "beta/apache",
            "beta/nginx",
            "alpha/redis"
        ]
    );
    let after_nginx = OrderKey::Updated {
        updated: Some("2023-07-10T10:12:48Z".into()),
        name: "nginx".into(),
        identifier: "alpha/nginx".into(),
    };
    assert_eq!(
        sorted(Sort::Updated, "", Some(after_nginx)),
        ["beta/Zeta", "beta/apache", "beta/nginx", "alpha/redis"]
    );
    // `nginx` is the name of two charts (64 each), `http` in apache's description (2); `server`
    // is in alpha/nginx's and beta/apache's descriptions, and the first also has `nginx`.
    assert_eq!(
        sorted(Sort::Relevance, "nginx or http", None),
        ["alpha/nginx", "beta/nginx", "beta/apache"]
    );
    assert_eq!(
        sorted(Sort::Relevance, "server -nginx", None),
        ["beta/apache"]
    );

    let facets = |payload: &str| Facets::from_json(&source.call("facets", 1, payload).unwrap());
    let all = facets(r#"{"include_deprecated": true}"#).unwrap();
    assert_eq!(all.total, 5);
    assert_eq!(all.deprecated, 1);
    assert_eq!(
        all.repositories.into_iter().collect::<Vec<_>>(),
        [("alpha".to_owned(), 2), ("beta".to_owned(), 3)]
    );
    assert_eq!(
        all.categories.into_iter().collect::<Vec<_>>(),
        [("Infrastructure".to_owned(), 1), ("Testing".to_owned(), 1)]
    );
    let nginx = facets(r#"{"query": "nginx"}"#).unwrap();
    assert_eq!((nginx.total, nginx.deprecated), (2, 0));
    let error = source
        .call("facets", 1, r#"{"repositories": "alpha"}"#)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        error.message.as_str(),
        "facets@1 payload: key `repositories`: expected an array of strings"
    );
    let error = source.call("facets", 2, "{}").unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unsupported);
}

#[test]
fn single_repository_lists_its_own_charts() {
    let dir = TempDir::new("single");
    dir.write("beta.yaml", BETA);
    let source = source_for(&dir, &[("beta", "beta.yaml")]).unwrap();
    assert_eq!(
        ids(&all(&source)),
        ["beta/Zeta", "beta/apache", "beta/nginx"]
    );
}

#[test]
fn detail_of_a_full_chart() {
    let dir = TempDir::new("detail-full");
    let source = two_repos(&dir);
    let detail = source.detail("alpha/nginx").unwrap();
    assert_eq!(
        detail,
        Detail {
            summary: expected_summaries()[2].clone(),
            versions: RVec::from(vec![
                version("16.0.0-rc.1", "1.26.0", "2023-08-01T00:00:00Z", "9f9f"),
                version("15.1.0", "1.25.1", "2023-07-10T10:12:48.000Z", "6c0b0b1e"),
                version("15.0.2", "1.25.0", "2023-06-01T00:00:00Z", "1234"),
            ]),
            home_url: "https://nginx.org".into(),
            source_urls: strings(&["https://github.com/example/nginx"]),
            maintainers: RVec::from(vec![
                Maintainer {
                    name: "Alice".into(),
                    email: "alice@example.com".into(),
                    url: "https://example.com/alice".into(),
                },
                Maintainer {
                    name: "Bob".into(),
                    ..Maintainer::default()
                },
            ]),
            readme: "NGINX web server".into(),
            keywords: strings(&["nginx", "http"]),
            extensions: RVec::from(vec![tributary_plugin_api::Extension {
                key: tributary_plugin_api::keys::DETAIL_DOWNLOAD_URL.into(),
                value: "https://charts.example.com/nginx-15.1.0.tgz".into(),
            }]),
        }
    );
}

#[test]
fn detail_with_missing_optional_fields() {
    let dir = TempDir::new("detail-minimal");
    let source = two_repos(&dir);
    assert_eq!(
        source.detail("beta/nginx").unwrap(),
        Detail {
            summary: expected_summaries()[3].clone(),
            versions: RVec::from(vec![version("1.0.0", "", "", "")]),
            ..Detail::default()
        }
    );
    let zeta = source.detail("beta/Zeta").unwrap();
    assert_eq!(zeta.summary, expected_summaries()[0]);
    assert_eq!(zeta.keywords, strings(&["zeta"]));
    assert_eq!(zeta.readme, "");
}

#[test]
fn non_semver_versions_are_kept_after_valid_ones() {
    let dir = TempDir::new("detail-non-semver");
    let source = two_repos(&dir);
    let redis = source.detail("alpha/redis").unwrap();
    assert_eq!(
        redis.versions,
        RVec::from(vec![
            version("v7.2", "7.2", "", ""),
            version("latest", "7.0", "", ""),
        ])
    );
    assert_eq!(redis.readme, "Redis key-value store");
}

#[test]
fn deprecated_chart() {
    let dir = TempDir::new("deprecated");
    let source = two_repos(&dir);
    let apache = source.detail("beta/apache").unwrap();
    assert!(apache.summary.deprecated);
    assert_eq!(apache.summary, expected_summaries()[1]);
    assert_eq!(ids_of_versions(&apache.versions), ["10.0.0", "9.9.9"]);
    assert!(!source.detail("alpha/nginx").unwrap().summary.deprecated);
}

fn ids_of_versions(versions: &[Version]) -> Vec<&str> {
    versions.iter().map(|v| v.version.as_str()).collect()
}

#[test]
fn deprecated_only_when_the_latest_version_says_so() {
    let dir = TempDir::new("deprecated-old");
    dir.write(
        "r.yaml",
        "entries:\n  old:\n  - version: 2.0.0\n  - version: 1.0.0\n    deprecated: true\n",
    );
    let source = source_for(&dir, &[("r", "r.yaml")]).unwrap();
    assert!(!source.detail("r/old").unwrap().summary.deprecated);
}

#[test]
fn unknown_identifiers_are_not_found() {
    let dir = TempDir::new("not-found");
    let source = two_repos(&dir);
    for id in [
        "nginx",
        "gamma/nginx",
        "alpha/apache",
        "alpha/",
        "",
        "/nginx",
        "alpha/empty",
    ] {
        let err = source.detail(id).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{id:?}");
        assert!(err.message.contains(&format!("{id:?}")), "{err}");
    }
}

#[test]
fn list_seeks_after_a_key() {
    let dir = TempDir::new("seek");
    let source = two_repos(&dir);
    let page = |after, limit, filter| source.list(&request(after, limit, filter)).unwrap();

    assert_eq!(
        ids(&page(None, 2, Filter::default())),
        ["beta/Zeta", "beta/apache"]
    );
    assert_eq!(
        ids(&page(Some(("apache", "beta/apache")), 2, Filter::default())),
        ["alpha/nginx", "beta/nginx"]
    );
    assert_eq!(
        ids(&page(Some(("nginx", "alpha/nginx")), 2, Filter::default())),
        ["beta/nginx", "alpha/redis"]
    );
    // A key that is not an item: resume at the next item after it.
    assert_eq!(
        ids(&page(Some(("b", "")), 10, Filter::default())),
        ["alpha/nginx", "beta/nginx", "alpha/redis"]
    );
    assert_eq!(
        ids(&page(Some(("nginx", "beta/nginx")), 10, Filter::default())),
        ["alpha/redis"]
    );
    assert!(page(Some(("redis", "alpha/redis")), 10, Filter::default()).is_empty());

    let alpha_only = Filter {
        repositories: strings(&["alpha"]),
        ..Filter::default()
    };
    assert_eq!(
        ids(&page(
            Some(("apache", "beta/apache")),
            1,
            alpha_only.clone()
        )),
        ["alpha/nginx"]
    );
    assert_eq!(
        ids(&page(Some(("nginx", "alpha/nginx")), 5, alpha_only)),
        ["alpha/redis"]
    );
    let by_category = Filter {
        categories: strings(&["Testing", "Infrastructure"]),
        ..Filter::default()
    };
    assert_eq!(
        ids(&page(None, 5, by_category)),
        ["beta/Zeta", "alpha/nginx"]
    );
    let by_query = Filter {
        query: "http server".into(),
        ..Filter::default()
    };
    assert_eq!(ids(&page(None, 5, by_query)), ["beta/apache"]);
}

#[test]
fn empty_and_null_entries() {
    let dir = TempDir::new("empty");
    dir.write("null.yaml", "apiVersion: v1\nentries:\ngenerated: x\n");
    dir.write("empty.yaml", "apiVersion: v1\nentries: {}\n");
    dir.write("none.yaml", "apiVersion: v1\n");
    dir.write("lists.yaml", "apiVersion: v1\nentries:\n  a: []\n  b: ~\n");
    let source = source_for(
        &dir,
        &[
            ("null", "null.yaml"),
            ("empty", "empty.yaml"),
            ("none", "none.yaml"),
            ("lists", "lists.yaml"),
        ],
    )
    .unwrap();
    assert!(all(&source).is_empty());
}

#[test]
fn many_versions_are_ranked() {
    let dir = TempDir::new("many");
    let mut text = String::from("apiVersion: v1\nentries:\n  big:\n");
    for minor in 0..300 {
        text.push_str(&format!(
            "  - version: 1.{minor}.0\n    appVersion: \"{minor}\"\n"
        ));
        text.push_str(&format!("  - version: 1.{minor}.1-rc.1\n"));
    }
    dir.write("big.yaml", &text);
    let source = source_for(&dir, &[("r", "big.yaml")]).unwrap();
    let detail = source.detail("r/big").unwrap();
    assert_eq!(detail.versions.len(), 600);
    assert_eq!(detail.summary.latest_version, "1.299.0");
    assert_eq!(detail.summary.latest_app_version, "299");
    assert_eq!(
        ids_of_versions(&detail.versions[..3]),
        ["1.299.1-rc.1", "1.299.0", "1.298.1-rc.1"]
    );
    assert_eq!(detail.versions.last().unwrap().version, "1.0.0");
}

#[test]
fn duplicate_chart_names_are_an_error() {
    let dir = TempDir::new("duplicate-chart");
    let path = dir.write(
        "dup.yaml",
        "entries:\n  a:\n  - version: 1.0.0\n  a:\n  - version: 2.0.0\n",
    );
    match source_for(&dir, &[("r", "dup.yaml")]) {
        // A parser that rejects duplicate keys itself is as good.
        Err(err) => {
            assert_eq!(err.kind, ErrorKind::Unavailable);
            assert!(err.message.contains(&path.display().to_string()), "{err}");
        }
        Ok(_) => panic!("a duplicate chart was accepted"),
    }
}

fn config_error(config: serde_json::Value) -> String {
    let err = match HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()) {
        Err(err) => err,
        Ok(_) => panic!("accepted {config}"),
    };
    assert_eq!(err.kind, ErrorKind::InvalidConfig, "{err}");
    err.message.to_string()
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        (json!({}), "helm config: repositories is missing"),
        (json!({ "repositories": null }), "helm config: repositories is missing"),
        (json!({ "repositories": [] }), "helm config: repositories is empty"),
        (
            json!({ "repositories": "bitnami" }),
            "helm config: repositories must be a list",
        ),
        (
            json!({ "repositories": ["bitnami"] }),
            "helm config: repositories[0] must be a { name, url } table",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "a.yaml" }, { "name": "b" }] }),
            "helm config: repositories[1].url is missing",
        ),
        (
            json!({ "repositories": [{ "url": "a.yaml" }] }),
            "helm config: repositories[0].name is missing",
        ),
        (
            json!({ "repositories": [{ "name": "", "url": "a.yaml" }] }),
            "helm config: repositories[0].name is empty",
        ),
        (
            json!({ "repositories": [{ "name": 3, "url": "a.yaml" }] }),
            "helm config: repositories[0].name must be a string",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "" }] }),
            "helm config: repositories[0].url is empty",
        ),
        (
            json!({ "repositories": [{ "name": "a/b", "url": "a.yaml" }] }),
            "helm config: repositories[0].name \"a/b\" must not contain '/'",
        ),
        (
            json!({ "repositories": [
                { "name": "a", "url": "a.yaml" },
                { "name": "b", "url": "b.yaml" },
                { "name": "a", "url": "c.yaml" },
            ] }),
            "helm config: repositories[2].name \"a\" is already used by repositories[0]",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "a.yaml", "path": "x" }] }),
            "helm config: repositories[0].path is not a known key",
        ),
        (
            json!({ "repositories": [{ "name": "f", "url": "ftp://charts.example.com/index.yaml" }] }),
            "repository \"f\" is not supported: give a local path, a file:// URL, an http(s):// URL or an oci:// registry namespace",
        ),
        (
            json!({ "repositories": [{ "name": "o", "url": "oci://r.example/ns", "charts": ["a/b"] }] }),
            "helm config: repositories[0].charts[0] must be a chart name",
        ),
        (
            json!({ "repositories": [{ "name": "h", "url": "https://h.example/", "charts": ["a"] }] }),
            "helm config: repositories[0].charts applies to oci:// repositories only",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "a.yaml", "token_env": "T" }] }),
            "helm config: repositories[0].token_env applies to http(s) repositories only",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://u:p@h.example/" }] }),
            "helm config: repositories[0].url of repository \"a\" carries credentials",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://h.example/", "username": "u" }] }),
            "helm config: repositories[0]: username needs password_env or password_file",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://h.example/", "token_env": "TRIBUTARY_TEST_UNSET_VARIABLE" }] }),
            "helm config: repositories[0] (repository \"a\"): environment variable TRIBUTARY_TEST_UNSET_VARIABLE is not set",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://h.example/", "headers": { "X-Key": "s3cret" } }] }),
            "helm config: repositories[0].headers.X-Key must be { env = \"VAR\" } or { file = \"path\" } (header values are secrets",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://h.example/", "refresh_interval": 0 }] }),
            "helm config: repositories[0].refresh_interval must be a positive number of seconds",
        ),
        (
            json!({ "repositories": [{ "name": "a", "url": "https://h.example/", "ca_file": "/nonexistent/ca.pem" }] }),
            "helm config: repository \"a\": cannot read ca_file /nonexistent/ca.pem",
        ),
        (json!({ "repos": [] }), "unknown field `repos`"),
        (
            json!({ "repositories": [{ "name": "a", "url": "a.yaml" }], "colour": 3 }),
            "helm config: unknown field `colour`, expected `repositories`",
        ),
    ];
    for (config, expected) in cases {
        let message = config_error(config.clone());
        assert!(message.contains(expected), "{config}: {message:?}");
        assert!(!message.contains("s3cret"), "a secret in {message:?}");
    }
    let err = HelmPlugin::new_source(Host::detached("helm", None), "not json")
        .err()
        .unwrap();
    assert!(err.message.starts_with("helm config: "), "{err}");
}

#[test]
fn unreadable_and_invalid_files_are_unavailable() {
    let dir = TempDir::new("unavailable");
    let missing = dir.0.join("missing.yaml");
    let err = source_for(&dir, &[("m", "missing.yaml")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(
        err.message.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("\"m\""), "{err}");

    let bad = dir.write(
        "bad.yaml",
        "entries:\n  a:\n  - version: 1.0.0\n   bad: [\n",
    );
    let err = source_for(&dir, &[("b", "bad.yaml")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains(&bad.display().to_string()), "{err}");
    assert!(err.message.contains("line 4"), "{err}");

    dir.write(
        "wrong.yaml",
        "entries:\n  a:\n  - version: 1.0.0\n    deprecated: [yes]\n",
    );
    let err = source_for(&dir, &[("w", "wrong.yaml")]).err().unwrap();
    assert!(err.message.contains("deprecated"), "{err}");
    assert!(err.message.contains("line 4 column 17"), "{err}");
}

#[test]
fn file_urls_and_absolute_paths() {
    let dir = TempDir::new("file-url");
    let path = dir.write("beta.yaml", BETA);
    let config = json!({ "repositories": [
        { "name": "url", "url": format!("file://{}", path.display()) },
    ] });
    let source = HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()).unwrap();
    assert_eq!(all(&source).len(), 3);

    let config = json!({ "repositories": [{ "name": "abs", "url": path }] });
    let source = HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()).unwrap();
    assert_eq!(ids(&all(&source)), ["abs/Zeta", "abs/apache", "abs/nginx"]);
}

/// Rewrites a file so that its stamp changes: the size differs, and the time is moved forward in
/// case the file system's clock granularity is coarse.
fn rewrite(path: &Path, text: &str) {
    let before = fs::metadata(path).unwrap().modified().unwrap();
    fs::write(path, text).unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(before + std::time::Duration::from_secs(2))
        .unwrap();
}

#[test]
fn reload_after_the_file_changes() {
    let dir = TempDir::new("reload");
    let alpha = dir.write("alpha.yaml", ALPHA);
    dir.write("beta.yaml", BETA);
    let source = source_for(&dir, &[("alpha", "alpha.yaml"), ("beta", "beta.yaml")]).unwrap();
    assert_eq!(all(&source).len(), 5);

    let added = ALPHA.replace(
        "  empty: []\n",
        "  empty: []\n  memcached:\n  - version: 7.0.0\n    description: Memcached\n",
    );
    rewrite(&alpha, &added);
    assert_eq!(
        ids(&all(&source)),
        [
            "beta/Zeta",
            "beta/apache",
            "alpha/memcached",
            "alpha/nginx",
            "beta/nginx",
            "alpha/redis"
        ]
    );
    assert_eq!(
        source.detail("alpha/memcached").unwrap().readme,
        "Memcached"
    );

    // A broken file keeps the last good index serving, and so does a missing one.
    let with_memcached = all(&source);
    let with_memcached = ids(&with_memcached);
    rewrite(&alpha, "entries:\n  a: [\n");
    assert_eq!(ids(&all(&source)), with_memcached);
    assert_eq!(
        source.detail("alpha/memcached").unwrap().readme,
        "Memcached"
    );
    let states = source.shared.states();
    let error = states[0].last_error.as_deref().unwrap();
    assert!(error.contains(&alpha.display().to_string()), "{error}");
    assert!(error.contains("line"), "{error}");
    assert!(states[1].last_error.is_none());
    drop(states);

    fs::remove_file(&alpha).unwrap();
    assert_eq!(ids(&all(&source)), with_memcached);
    let error = source.shared.states()[0].last_error.clone().unwrap();
    assert!(error.contains("cannot read index"), "{error}");

    // Another repository changes while this one is missing: it is read at once.
    let beta = dir.0.join("beta.yaml");
    rewrite(
        &beta,
        &BETA.replace("  Zeta:\n", "  yarn:\n  - version: 1.0.0\n  Zeta:\n"),
    );
    assert!(ids(&all(&source)).contains(&"beta/yarn"));

    dir.write(
        "alpha.yaml",
        "apiVersion: v1\nentries:\n  solo:\n  - version: 0.1.0\n",
    );
    assert_eq!(
        ids(&all(&source)),
        [
            "beta/Zeta",
            "beta/apache",
            "beta/nginx",
            "alpha/solo",
            "beta/yarn"
        ]
    );
    assert!(source.detail("alpha/nginx").unwrap_err().kind == ErrorKind::NotFound);
    assert!(source.shared.states()[0].last_error.is_none());
}

#[test]
fn an_emptied_file_is_reported_not_served() {
    let dir = TempDir::new("emptied");
    let alpha = dir.write("alpha.yaml", ALPHA);
    let source = source_for(&dir, &[("alpha", "alpha.yaml")]).unwrap();
    let before = all(&source);
    let before = ids(&before);
    assert_eq!(before, ["alpha/nginx", "alpha/redis"]);
    for text in ["", "apiVersion: v1\n", "apiVersion: v1\nentries: {}\n"] {
        rewrite(&alpha, text);
        assert_eq!(ids(&all(&source)), before, "{text:?}");
        let error = source.shared.states()[0].last_error.clone().unwrap();
        assert!(
            error.contains("has no charts while the index served has 2; keeping that one")
                || error.contains("is not valid"),
            "{error}"
        );
    }
    // A file that starts empty is served as empty: nothing was lost.
    dir.write("empty.yaml", "apiVersion: v1\nentries: {}\n");
    let empty = source_for(&dir, &[("empty", "empty.yaml")]).unwrap();
    assert!(all(&empty).is_empty());
}

#[test]
fn json_indexes_relative_urls_and_artifacthub_categories() {
    let dir = TempDir::new("json");
    dir.write(
        "index.json",
        r#"{"apiVersion":"v1","entries":{"web":[{"version":"1.0.0","description":"Web",
        "annotations":{"artifacthub.io/category":"networking","category":"Web"},
        "urls":["charts/web-1.0.0.tgz"]},{"version":"0.9.0","deprecated":true}]}}"#,
    );
    let source = source_for(&dir, &[("j", "index.json")]).unwrap();
    let items = all(&source);
    assert_eq!(ids(&items), ["j/web"]);
    assert_eq!(items[0].categories, strings(&["Web", "networking"]));
    assert!(!source.detail("j/web").unwrap().summary.deprecated);

    let base = url::Url::parse("https://charts.example.com/stable/").unwrap();
    let text = "entries:\n  a:\n  - version: 1.0.0\n    urls: [a-1.0.0.tgz]\n  b:\n  - version: 1.0.0\n    urls: [https://cdn.example.com/b.tgz]\n";
    let index = crate::RepoIndex::parse("r", text, Some(&base), LIMITS).unwrap();
    let urls: Vec<&str> = index.extras.iter().map(|e| e.chart_url()).collect();
    assert_eq!(
        urls,
        [
            "https://charts.example.com/stable/a-1.0.0.tgz",
            "https://cdn.example.com/b.tgz"
        ]
    );
}

#[test]
fn repository_urls_name_the_index() {
    let pair = |s: &str| {
        let (index, base) = crate::config::index_and_base(url::Url::parse(s).unwrap());
        (index.to_string(), base.to_string())
    };
    assert_eq!(
        pair("https://h.example/charts"),
        (
            "https://h.example/charts/index.yaml".into(),
            "https://h.example/charts/".into()
        )
    );
    assert_eq!(
        pair("https://h.example/charts/"),
        (
            "https://h.example/charts/index.yaml".into(),
            "https://h.example/charts/".into()
        )
    );
    assert_eq!(
        pair("https://h.example/charts/index.yaml"),
        (
            "https://h.example/charts/index.yaml".into(),
            "https://h.example/charts/".into()
        )
    );
    assert_eq!(
        pair("https://h.example/x/index.json"),
        (
            "https://h.example/x/index.json".into(),
            "https://h.example/x/".into()
        )
    );
}

#[test]
fn concurrent_calls_see_a_consistent_listing() {
    let dir = TempDir::new("threads");
    let alpha = dir.write("alpha.yaml", ALPHA);
    dir.write("beta.yaml", BETA);
    let source = source_for(&dir, &[("alpha", "alpha.yaml"), ("beta", "beta.yaml")]).unwrap();
    rewrite(
        &alpha,
        &ALPHA.replace("  empty: []\n", "  extra:\n  - version: 1.0.0\n"),
    );
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let items = all(&source);
                assert_eq!(items.len(), 6);
                assert!(keys_strictly_increasing(&items));
            });
        }
    });
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The conformance kit (the checks `tributary plugin check` runs) over the two example indexes
/// merged into one source: random limits, every kind of seek, every filter field, every detail.
#[test]
fn the_example_indexes_conform() {
    use tributary_plugin_api::conformance::{check, Options};
    let config = json!({
        "repositories": [
            { "name": "bitnami", "url": "charts/bitnami-index.yaml" },
            { "name": "community", "url": "charts/community-index.yaml" },
        ],
    });
    let source = HelmPlugin::new_source(
        Host::detached("helm", Some(examples_dir())),
        &config.to_string(),
    )
    .unwrap();
    let report = check(
        &source,
        &Options {
            capabilities: HelmPlugin::CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            ..Options::default()
        },
    );
    assert!(report.passed(), "{report}");
    assert!(report.items >= 10, "{report}");
}

#[test]
fn example_indexes_load() {
    let examples = examples_dir();
    let config = json!({
        "repositories": [
            { "name": "bitnami", "url": "charts/bitnami-index.yaml" },
            { "name": "community", "url": "charts/community-index.yaml" },
        ],
    });
    let source =
        HelmPlugin::new_source(Host::detached("helm", Some(examples)), &config.to_string())
            .unwrap();
    let items = all(&source);
    assert!(keys_strictly_increasing(&items));
    let count = |repo: &str| items.iter().filter(|s| s.repository == repo).count();
    assert!(count("bitnami") >= 10, "{}", count("bitnami"));
    assert!(count("community") >= 5, "{}", count("community"));

    let mut deprecated = 0;
    let mut pre_releases = 0;
    let mut names = std::collections::HashMap::<&str, usize>::new();
    for item in &items {
        *names.entry(item.name.as_str()).or_default() += 1;
        assert!(!item.latest_version.is_empty(), "{}", item.identifier);
        let detail = source.detail(&item.identifier).unwrap();
        assert_eq!(detail.summary, *item);
        assert!(detail.versions.len() >= 2, "{}", item.identifier);
        deprecated += usize::from(detail.summary.deprecated);
        pre_releases += detail
            .versions
            .iter()
            .filter(|v| v.version.contains('-'))
            .count();
        // The latest is a stable release whenever the chart has one.
        if detail.versions.iter().any(|v| !v.version.contains('-')) {
            assert!(!item.latest_version.contains('-'), "{}", item.identifier);
        }
    }
    assert!(deprecated >= 1);
    assert!(pre_releases >= 1);
    assert!(
        names.values().any(|&n| n > 1),
        "no chart name in both repositories"
    );
    assert!(items.iter().any(|s| s.icon_url.is_empty()));
    assert!(items.iter().any(|s| s.latest_app_version.is_empty()));
    assert!(items.iter().any(|s| !s.categories.is_empty()));
}

#[test]
fn example_files_exist_and_catalog_ids_are_unique() {
    // The example host configuration names these files; they must all exist.
    let examples = examples_dir();
    let toml = fs::read_to_string(examples.join("tributary.toml")).unwrap();
    for file in [
        "charts/bitnami-index.yaml",
        "charts/community-index.yaml",
        "catalog.json",
    ] {
        assert!(toml.contains(file), "tributary.toml does not name {file}");
        assert!(examples.join(file).is_file(), "{file} is missing");
    }
    let catalog: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(examples.join("catalog.json")).unwrap()).unwrap();
    let packages = catalog["packages"].as_array().unwrap();
    let mut identifiers: Vec<&str> = packages
        .iter()
        .map(|p| p.get("id").unwrap_or(&p["name"]).as_str().unwrap())
        .collect();
    identifiers.sort_unstable();
    let before = identifiers.len();
    identifiers.dedup();
    assert_eq!(
        identifiers.len(),
        before,
        "duplicate package ids in catalog.json"
    );
}

#[test]
fn the_remote_example_config_parses() {
    let text = fs::read_to_string(examples_dir().join("remote.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    std::env::set_var("CHARTS_PASSWORD", "example");
    let mut kinds = Vec::new();
    for source in file["source"].as_array().unwrap() {
        let config = serde_json::to_string(&source["config"]).unwrap();
        for repo in crate::config::parse(&config, None).unwrap() {
            kinds.push(match repo.location {
                crate::config::Location::File(_) => "file".to_owned(),
                crate::config::Location::Http(remote) => match remote.oci {
                    Some(target) => format!("oci {}", target.charts.unwrap().join(",")),
                    None => remote.index_url.to_string(),
                },
            });
        }
    }
    assert_eq!(
        kinds,
        [
            "https://charts.jetstack.io/index.yaml",
            "https://prometheus-community.github.io/helm-charts/index.yaml",
            "https://charts.internal.example.com/stable/index.yaml",
            "oci nginx,redis,postgresql",
        ]
    );
}

/// Serves `body` with `200 OK` and no validators to every request on a loopback port, counting
/// the requests, until `stop` is set.
fn plain_server(
    body: &'static str,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::{
        io::{Read, Write},
        sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Arc,
        },
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (count, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (c, st) = (count.clone(), stop.clone());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            c.fetch_add(1, Ordering::Relaxed);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, count, stop)
}

#[test]
fn an_unchanged_body_is_not_parsed_again() {
    let (url, requests, stop) = plain_server(BETA);
    let config = json!({ "repositories": [{ "name": "p", "url": url, "refresh_interval": 0.05 }] });
    let source = HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()).unwrap();
    for _ in 0..2000 {
        if requests.load(std::sync::atomic::Ordering::Relaxed) >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(requests.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    assert_eq!(ids(&all(&source)), ["p/Zeta", "p/apache", "p/nginx"]);
    let state = source.shared.states()[0].clone();
    assert_eq!(state.parses, 1, "one parse for several identical bodies");
    assert!(state.last_error.is_none());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn secrets_are_read_from_the_environment_and_files() {
    use crate::config::{Credential, Secret};
    let path = std::env::var("PATH").unwrap();
    assert_eq!(Secret::Env("PATH".into()).read().unwrap(), path);
    let dir = TempDir::new("secrets");
    let token = dir.write("token", "t0k3n\n");
    let bearer = Credential::Bearer(Secret::File(token));
    assert_eq!(
        bearer.header().unwrap(),
        ("Authorization".to_owned(), "Bearer t0k3n".to_owned())
    );
    let basic = Credential::Basic {
        username: Secret::Plain("u".into()),
        password: Secret::File(dir.write("password", "p")),
    };
    assert_eq!(basic.header().unwrap().1, "Basic dTpw");
    let missing = Secret::File(dir.0.join("nothing")).read().unwrap_err();
    assert!(missing.starts_with("cannot read secret file "), "{missing}");
}

/// Answers every request with the headers of a 100 kB index, then one byte of it every `pause`,
/// each connection on a thread of its own; counts the requests.
fn dribbling_server(
    pause: std::time::Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::{
        io::{Read, Write},
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                c.fetch_add(1, Ordering::Relaxed);
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\napiVersion: v1\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                // Ends when the client gives up and the connection is closed.
                while stream.write_all(b" ").is_ok() {
                    std::thread::sleep(pause);
                }
            });
        }
    });
    (url, count)
}

#[test]
fn timeout_bounds_the_whole_transfer_of_a_dribbling_upstream() {
    use std::{sync::atomic::Ordering, time::Instant};
    // A byte every 100 ms: no single read waits for anything like the 1 s timeout.
    let (url, requests) = dribbling_server(std::time::Duration::from_millis(100));
    let config = json!({ "repositories": [{
        "name": "slow", "url": url, "timeout": 1, "refresh_interval": 0.1
    }] });
    let started = Instant::now();
    let source = HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()).unwrap();
    let mut error = None;
    while started.elapsed() < std::time::Duration::from_secs(20) {
        error = source.shared.states()[0].last_error.clone();
        if error.is_some() && requests.load(Ordering::Relaxed) >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "first failure and a second request after {:?}",
        started.elapsed()
    );
    let error = error.expect("the refresh fails instead of waiting for ever");
    assert!(
        error.contains("helm repository \"slow\"")
            && error.contains("timed out")
            && error.contains("within timeout (1 s)"),
        "{error}"
    );
    assert!(
        requests.load(Ordering::Relaxed) >= 2,
        "a later refresh runs after the one that timed out"
    );
    let unavailable = source
        .list(&request(None, 10, Filter::default()))
        .unwrap_err();
    assert!(
        unavailable.message.contains("within timeout (1 s)"),
        "{unavailable:?}"
    );
}

#[test]
fn deeply_nested_indexes_are_refused_before_parsing() {
    let dir = TempDir::new("deep");
    let head = "apiVersion: v1\nentries:\n  deep:\n  - version: 1.0.0\n    annotations:\n      x: ";
    let levels = 200_000;
    let flow = format!("{head}{}{}\n", "[".repeat(levels), "]".repeat(levels));
    let sequences = format!("{head}\n        {}x\n", "- ".repeat(levels));
    let mut blocks = String::from(head);
    for level in 0..100 {
        blocks.push_str(&format!("\n{}k{level}:", " ".repeat(8 + level)));
    }
    blocks.push_str(" end\n");
    for (file, text) in [
        ("flow.yaml", &flow),
        ("sequences.yaml", &sequences),
        ("blocks.yaml", &blocks),
    ] {
        let path = dir.write(file, text);
        let started = std::time::Instant::now();
        let err = source_for(&dir, &[("d", file)]).err().unwrap();
        println!(
            "{file} ({} bytes) refused in {:?}",
            text.len(),
            started.elapsed()
        );
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(
            err.message.contains("helm repository \"d\"")
                && err.message.contains(&path.display().to_string())
                && err
                    .message
                    .contains("nests deeper than the depth limit of 64 levels (line "),
            "{err}"
        );
    }
    // JSON goes to its own parser, which skips an unknown value in one pass whatever its depth.
    let json_text = format!(
        "{{\"entries\": {{\"deep\": [{{\"version\": \"1.0.0\", \"annotations\": {{\"x\": {}{}}}}}]}}}}",
        "[".repeat(levels),
        "]".repeat(levels)
    );
    dir.write("deep.json", &json_text);
    let started = std::time::Instant::now();
    let source = source_for(&dir, &[("j", "deep.json")]).unwrap();
    println!("deep.json read in {:?}", started.elapsed());
    assert_eq!(ids(&all(&source)), ["j/deep"]);

    // An index nested within the limit still loads, annotations and all.
    let mut shallow = String::from(head);
    shallow.push_str(&format!("{}{}\n", "[".repeat(40), "]".repeat(40)));
    shallow.push_str("    description: nested, but not too deep\n");
    dir.write("shallow.yaml", &shallow);
    let source = source_for(&dir, &[("s", "shallow.yaml")]).unwrap();
    assert_eq!(ids(&all(&source)), ["s/deep"]);
}

#[test]
fn nesting_the_scan_counts_short_is_refused_by_the_parser() {
    // The scan counts a sequence written at its key's indentation as one level with its items'
    // mappings: this index is within its bound, twice as deep in fact. The parser refuses it
    // itself, as it reads, before that depth costs more stack than a thread has.
    let dir = TempDir::new("compact");
    let mut text =
        String::from("entries:\n  deep:\n  - version: 1.0.0\n    annotations:\n      x:\n");
    for level in 0..59 {
        text.push_str(&format!("{}- k{level}:\n", " ".repeat(6 + 2 * level)));
    }
    text.push_str(&format!("{}- end\n", " ".repeat(6 + 2 * 59)));
    assert!(crate::depth::check(&text, crate::depth::MAX_DEPTH).is_ok());
    let path = dir.write("compact.yaml", &text);
    let err = source_for(&dir, &[("c", "compact.yaml")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(
        err.message.contains(&path.display().to_string())
            && err
                .message
                .contains("is not valid: YAML document too large or too complex"),
        "{err}"
    );
}

/// A source of one local repository `file` in `dir`, with `extra` keys in its table.
fn limited_source(
    dir: &TempDir,
    file: &str,
    extra: serde_json::Value,
) -> Result<HelmSource, PluginError> {
    let mut table = json!({ "name": "r", "url": file });
    for (k, v) in extra.as_object().unwrap() {
        table[k] = v.clone();
    }
    HelmPlugin::new_source(
        Host::detached("helm", Some(dir.0.clone())),
        &json!({ "repositories": [table] }).to_string(),
    )
}

#[test]
fn an_index_over_max_charts_or_max_index_size_is_refused_naming_the_count() {
    let dir = TempDir::new("limits");
    let names: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
    // Helm's layout (counted before parsing), a flow mapping and JSON (counted while parsing).
    let block: String = names
        .iter()
        .map(|n| format!("  {n}:\n  - version: 1.0.0\n"))
        .collect();
    let block = format!("apiVersion: v1\nentries:\n{block}");
    let flow = format!(
        "entries: {{{}}}\n",
        names
            .iter()
            .map(|n| format!("{n}: [{{version: 1.0.0}}]"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let json_text = json!({
        "entries": names.iter().map(|n| (n.clone(), json!([{ "version": "1.0.0" }])))
            .collect::<serde_json::Map<_, _>>()
    })
    .to_string();
    for (file, text) in [
        ("block.yaml", &block),
        ("flow.yaml", &flow),
        ("index.json", &json_text),
    ] {
        dir.write(file, text);
        let err = limited_source(&dir, file, json!({ "max_charts": 20 }))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(
            err.message.contains("helm repository \"r\"")
                && err
                    .message
                    .contains("is refused: it has 30 charts, more than max_charts (20)"),
            "{file}: {err}"
        );
        let source = limited_source(&dir, file, json!({ "max_charts": 30 })).unwrap();
        assert_eq!(all(&source).len(), 30, "{file}");
        let err = limited_source(&dir, file, json!({ "max_versions": 29 }))
            .err()
            .unwrap();
        assert!(
            err.message
                .contains("is refused: it has more than max_versions (29) versions"),
            "{file}: {err}"
        );
        assert!(limited_source(&dir, file, json!({ "max_versions": 30 })).is_ok());

        let size = text.len() as u64;
        let err = limited_source(&dir, file, json!({ "max_index_size": size - 1 }))
            .err()
            .unwrap();
        assert!(
            err.message.contains(&format!(
                "is refused: it is larger than max_index_size ({} bytes)",
                size - 1
            )),
            "{file}: {err}"
        );
        assert!(limited_source(&dir, file, json!({ "max_index_size": size })).is_ok());
    }
}

#[test]
fn a_large_yaml_index_that_cannot_be_cut_is_refused() {
    let dir = TempDir::new("whole");
    let mut flow = String::from("entries: {a: [");
    while flow.len() <= crate::index::MAX_WHOLE_YAML {
        flow.push_str("{version: 1.0.0},");
    }
    flow.push_str("]}\n");
    dir.write("flow.yaml", &flow);
    let err = limited_source(&dir, "flow.yaml", json!({})).err().unwrap();
    assert!(
        err.message
            .contains("is refused: YAML over 8 MiB is read only in pieces of at most 8 MiB"),
        "{err}"
    );
}

#[test]
fn limit_keys_are_checked() {
    for (table, expected) in [
        (
            json!({ "name": "a", "url": "a.yaml", "max_charts": 0 }),
            "repositories[0].max_charts must be a positive whole number",
        ),
        (
            json!({ "name": "a", "url": "a.yaml", "max_index_size": "1 MB" }),
            "repositories[0].max_index_size must be a positive whole number",
        ),
        (
            json!({ "name": "a", "url": "https://h.example", "max_tags": 10 }),
            "repositories[0].max_tags applies to oci:// repositories only",
        ),
        (
            json!({ "name": "a", "url": "a.yaml", "max_list_pages": 10 }),
            "repositories[0].max_list_pages applies to http(s) repositories only",
        ),
        (
            json!({ "name": "a", "url": "oci://h.example/x", "charts": ["c"], "max_tags_per_chart": -1 }),
            "repositories[0].max_tags_per_chart must be a positive whole number",
        ),
    ] {
        let error = config_error(json!({ "repositories": [table] }));
        assert!(error.contains(expected), "{error}");
    }
}

/// This process's resident set size and its peak since the last [`reset_peak`], in MiB.
fn memory_mib() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Loads `text` as a local repository with `extra` keys and prints what it cost.
fn measure(what: &str, text: String, extra: serde_json::Value) {
    let dir = TempDir::new("figures");
    let size = text.len();
    dir.write("index.yaml", &text);
    drop(text);
    let (before, _) = memory_mib();
    reset_peak();
    let started = std::time::Instant::now();
    let source = limited_source(&dir, "index.yaml", extra);
    let elapsed = started.elapsed();
    let (after, peak) = memory_mib();
    let outcome = match &source {
        Ok(source) => format!("{} charts served", all(source).len()),
        Err(e) => format!("refused: {e}"),
    };
    println!(
        "FIGURE {what}: {:.1} MB index, {:.2} s, resident {before} MiB before, {after} MiB after \
         (+{} MiB), peak {peak} MiB (+{} MiB); {outcome}",
        size as f64 / 1e6,
        elapsed.as_secs_f64(),
        after.saturating_sub(before),
        peak.saturating_sub(before),
    );
}

/// An index of `charts` minimal charts in Helm's layout, `versions` minimal versions each.
fn minimal_index(charts: usize, versions: usize) -> String {
    let mut text = String::from("apiVersion: v1\nentries:\n");
    for c in 0..charts {
        text.push_str(&format!("  chart-{c:07}:\n"));
        for v in 0..versions {
            text.push_str(&format!("  - name: chart-{c:07}\n    version: 1.0.{v}\n"));
        }
    }
    text
}

/// Memory figures for the README, each in a process of its own: run in release,
/// `cargo test --release -p tributary-plugin-helm figures_ -- --ignored --nocapture --test-threads 1`
/// prints them, but the peak of one figure is only its own when run alone (`--exact tests::NAME`).
#[test]
#[ignore = "a measurement, not a check; run on demand"]
fn figures_1m_charts_with_max_charts_raised() {
    measure(
        "1M minimal charts, max_charts = 1000000",
        minimal_index(1_000_000, 1),
        json!({ "max_charts": 1_000_000, "max_versions": 1_000_000 }),
    );
}

#[test]
#[ignore = "a measurement, not a check; run on demand"]
fn figures_1m_charts_with_the_defaults() {
    measure(
        "1M minimal charts, defaults",
        minimal_index(1_000_000, 1),
        json!({}),
    );
}

#[test]
#[ignore = "a measurement, not a check; run on demand"]
fn figures_max_charts_filling_max_index_size() {
    // max_charts charts, max_versions versions among them, and the latest version of each with a
    // description long enough to fill max_index_size: everything the defaults let an index keep.
    let size = crate::config::DEFAULT_MAX_INDEX_SIZE as usize;
    let charts = crate::config::DEFAULT_MAX_CHARTS;
    let versions = crate::config::DEFAULT_MAX_VERSIONS / charts;
    let long = "x".repeat(size / charts * 95 / 100 - versions * 50 - 100);
    let mut text = String::from("apiVersion: v1\nentries:\n");
    for c in 0..charts {
        text.push_str(&format!("  chart-{c:07}:\n"));
        for v in (0..versions).rev() {
            let description = if v == versions - 1 {
                long.as_str()
            } else {
                "d"
            };
            text.push_str(&format!(
                "  - name: chart-{c:07}\n    version: 1.0.{v}\n    description: {description}\n"
            ));
        }
    }
    measure(
        "the defaults' most: max_charts, max_versions, max_index_size",
        text,
        json!({}),
    );
}

#[test]
#[ignore = "a measurement, not a check; run on demand"]
fn figures_flow_layout_parsed_whole() {
    // Not Helm's layout: parsed as one document, not in pieces, up to MAX_WHOLE_YAML.
    // FIGURE_DIVISOR=n: 1/n of it.
    let divisor: usize = std::env::var("FIGURE_DIVISOR").map_or(1, |d| d.parse().unwrap());
    let size = crate::index::MAX_WHOLE_YAML * 98 / 100 / divisor;
    let charts = crate::config::DEFAULT_MAX_CHARTS;
    let mut text = String::from("entries: {");
    let per_chart = size / charts;
    for c in 0..charts {
        text.push_str(&format!("c{c}: ["));
        let start = text.len();
        while text.len() - start < per_chart - 8 {
            text.push_str("{},");
        }
        text.push_str("], ");
    }
    text.push_str("}\n");
    measure("flow layout up to the size parsed whole", text, json!({}));
}

#[test]
fn charts_that_would_break_the_contract_are_dropped_and_reported() {
    use tributary_plugin_api::contract;
    let dir = TempDir::new("contract");
    let long = "x".repeat(70_000);
    let many: String = (0..contract::MAX_VERSIONS + 1)
        .map(|v| format!("  - version: 0.0.{v}\n"))
        .collect();
    dir.write(
        "third.yaml",
        &format!(
            "entries:\n  aaa:\n  - version: 1.0.0\n  big:\n  - version: 1.0.0\n    description: {long}\n  many:\n{many}  zzz:\n  - version: 1.0.0\n"
        ),
    );
    dir.write("trusted.yaml", BETA);
    let source = source_for(
        &dir,
        &[("third", "third.yaml"), ("trusted", "trusted.yaml")],
    )
    .unwrap();
    // Every page, whatever its size, conforms: the charts the host would refuse are not served.
    let items = all(&source);
    assert_eq!(
        ids(&items),
        [
            "trusted/Zeta",
            "third/aaa",
            "trusted/apache",
            "trusted/nginx",
            "third/zzz"
        ]
    );
    for limit in [1, 2, 3, 1000] {
        let mut after: Option<(String, String)> = None;
        loop {
            let key = after.as_ref().map(|(n, i)| (n.as_str(), i.as_str()));
            let request = request(key, limit, Filter::default());
            let page = source.list(&request).unwrap();
            contract::check_list(&request, &page).unwrap();
            match page.last() {
                Some(last) if page.len() == limit as usize => {
                    after = Some((last.name.to_string(), last.identifier.to_string()));
                }
                _ => break,
            }
        }
    }
    let status = source.call("status", 1, "").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let third = &status["repositories"][0];
    assert_eq!(third["charts"], 2, "{status}");
    assert_eq!(third["dropped"], 2, "{status}");
    let error = third["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("helm repository \"third\": 2 charts dropped: ")
            && error.contains("\"third/big\"")
            && error.contains("short_description"),
        "{error}"
    );
    assert_eq!(status["repositories"][1]["last_error"], "", "{status}");
    assert_eq!(status["repositories"][1]["dropped"], 0, "{status}");
}

#[test]
fn permute_moves_every_position_to_its_place() {
    use rand::{seq::SliceRandom, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    for len in [0, 1, 2, 3, 7, 100, 1000] {
        for _ in 0..20 {
            let mut order: Vec<usize> = (0..len).collect();
            order.shuffle(&mut rng);
            let wanted: Vec<usize> = order.iter().map(|&i| i * 10).collect();
            let mut values: Vec<usize> = (0..len).map(|i| i * 10).collect();
            crate::permute(&mut order, |a, b| values.swap(a, b));
            assert_eq!(values, wanted);
            assert!(order.iter().enumerate().all(|(i, &o)| i == o));
        }
    }
}

#[test]
fn charts_out_of_order_are_sorted_with_their_details() {
    let dir = TempDir::new("unsorted");
    // Names in an order that is not theirs, with an empty entry among them; each chart's home
    // names it, so that a detail kept beside another chart's summary shows.
    let names = ["m", "b", "z", "a", "q", "c", "y", "d"];
    let mut text = String::from("apiVersion: v1\nentries:\n  empty: []\n");
    for name in names {
        text.push_str(&format!(
            "  {name}:\n  - version: 1.0.0\n    home: https://{name}.example\n    keywords: [{name}]\n"
        ));
    }
    dir.write("unsorted.yaml", &text);
    let source = source_for(&dir, &[("r", "unsorted.yaml")]).unwrap();
    let listed = all(&source);
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    let wanted: Vec<String> = sorted.iter().map(|n| format!("r/{n}")).collect();
    assert_eq!(ids(&listed), wanted);
    for name in names {
        let detail = source.detail(&format!("r/{name}")).unwrap();
        assert_eq!(detail.summary.name, name);
        assert_eq!(detail.home_url, format!("https://{name}.example"));
        assert_eq!(detail.keywords, strings(&[name]));
    }
}

/// An index of at least `size` bytes in Helm's layout, with the odd entries of real ones: charts
/// that are not charts (`[]`, `~`), a name like `-b` (whose line looks like a sequence item), a
/// quoted name, comments and blank lines between charts, block scalars with lines like chart keys.
fn large_index(size: usize) -> String {
    let mut text = String::from("apiVersion: v1\nentries:\n");
    let mut chart = 0;
    while text.len() < size {
        match chart % 97 {
            13 => text.push_str(&format!("  empty-{chart:05}: []\n")),
            14 => text.push_str(&format!("  null-{chart:05}: ~\n")),
            15 => text.push_str(&format!("  # about chart {chart}\n\n")),
            _ => {}
        }
        let name = match chart % 211 {
            5 => format!("-b{chart:05}"),
            6 => format!("\"quoted-{chart:05}\""),
            _ => format!("chart-{chart:05}"),
        };
        text.push_str(&format!("  {name}:\n"));
        for minor in 0..(1 + chart % 4) {
            text.push_str(&format!(
                "  - version: 1.{minor}.0\n    appVersion: \"{chart}\"\n    created: \"2023-07-10T10:12:4{minor}.000Z\"\n    description: |\n      Chart {chart}, a chart.\n      chart-{chart:05}:\n    keywords: [k{minor}, \"x\"]\n    maintainers:\n    - name: m{chart}\n    urls: [https://example.com/chart-{chart}-1.{minor}.0.tgz]\n"
            ));
        }
        chart += 1;
    }
    text.push_str("generated: \"2023-11-21T20:30:00Z\"\nserverInfo: {}\n");
    text
}

#[test]
fn a_large_index_file_is_read_in_pieces_as_its_text_is_parsed() {
    let dir = TempDir::new("large");
    let text = large_index(crate::index::SPLIT_SIZE + 1000);
    let path = dir.write("index.yaml", &text);
    let charts = crate::index::parse(&text, LIMITS).unwrap();
    let listed = charts.len();
    assert!(listed > 1000);
    let versions: usize = charts.extras.iter().map(|e| e.versions().len()).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let with = |max_charts: usize, max_versions: usize| Limits {
        max_charts,
        max_versions,
        ..LIMITS
    };
    let keys = crate::split::chart_keys(&text).unwrap();
    for limits in [
        LIMITS,
        with(keys, versions),
        with(keys - 1, versions),
        with(listed, versions - 1),
    ] {
        let file = fs::File::open(&path).unwrap();
        let from_file = crate::index::parse_file(&file, limits);
        // Read in pieces wherever the text would be parsed in pieces.
        assert_eq!(from_file.is_some(), threads > 1);
        if let Some(from_file) = from_file {
            assert_eq!(from_file, crate::index::parse(&text, limits));
        }
    }
    // Through the source: the listing's first page and every detail of it, and the errors.
    let source = limited_source(&dir, "index.yaml", json!({})).unwrap();
    let items = all(&source);
    assert_eq!(items.len(), 1000);
    let mut names: Vec<&str> = charts.summaries.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        items.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        names[..1000]
    );
    for summary in &items {
        let i = charts
            .summaries
            .iter()
            .position(|s| s.name == summary.name)
            .unwrap();
        assert_eq!(summary.latest_version, charts.summaries[i].latest_version);
        let detail = source.detail(&summary.identifier).unwrap();
        assert_eq!(detail.versions, charts.extras[i].versions().to_rvec());
    }
    let err = limited_source(&dir, "index.yaml", json!({ "max_charts": keys - 1 }))
        .err()
        .unwrap();
    assert!(
        err.message.contains(&format!(
            "is refused: it has {keys} charts, more than max_charts ({})",
            keys - 1
        )),
        "{err}"
    );
    let err = limited_source(&dir, "index.yaml", json!({ "max_versions": versions - 1 }))
        .err()
        .unwrap();
    assert!(
        err.message.contains(&format!(
            "is refused: it has more than max_versions ({}) versions",
            versions - 1
        )),
        "{err}"
    );
    let size = text.len() as u64;
    let err = limited_source(&dir, "index.yaml", json!({ "max_index_size": size - 1 }))
        .err()
        .unwrap();
    assert!(
        err.message.contains(&format!(
            "is refused: it is larger than max_index_size ({} bytes)",
            size - 1
        )),
        "{err}"
    );
    assert!(limited_source(&dir, "index.yaml", json!({ "max_index_size": size })).is_ok());
    // A file the pieces do not read (a chart's text not UTF-8) is refused as its text is.
    let mut bytes = text.into_bytes();
    let at = bytes.len() / 2;
    bytes[at] = 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = limited_source(&dir, "index.yaml", json!({})).err().unwrap();
    assert!(
        err.message.contains("is not valid: it is not UTF-8 text"),
        "{err}"
    );
}

/// Every item of `source`, paged through 1,000 at a time.
fn every_item(source: &HelmSource) -> Vec<Summary> {
    let mut items: Vec<Summary> = Vec::new();
    loop {
        let after = items
            .last()
            .map(|s| (s.name.to_string(), s.identifier.to_string()));
        let page = source
            .list(&request(
                after.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
                1000,
                Filter::default(),
            ))
            .unwrap();
        let done = page.len() < 1000;
        items.extend(page);
        if done {
            return items;
        }
    }
}

/// A large index served over HTTP is copied into a temporary file as it arrives and parsed from
/// that copy in pieces, as a local file is: every chart and every detail equal to those of the
/// same text read from a local file, and an unchanged body is not parsed again.
#[test]
fn a_large_index_over_http_is_parsed_in_pieces_from_its_copy() {
    let text: &'static str =
        Box::leak(large_index(crate::index::SPLIT_SIZE + 1000).into_boxed_str());
    let dir = TempDir::new("large-http");
    dir.write("index.yaml", text);
    let local = limited_source(&dir, "index.yaml", json!({})).unwrap();
    let (url, requests, stop) = plain_server(text);
    let config = json!({ "repositories": [{ "name": "r", "url": url, "refresh_interval": 0.05 }] });
    let remote = HelmPlugin::new_source(Host::detached("helm", None), &config.to_string()).unwrap();
    for _ in 0..2000 {
        if requests.load(std::sync::atomic::Ordering::Relaxed) >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let state = remote.shared.states()[0].clone();
    assert!(state.last_error.is_none(), "{:?}", state.last_error);
    assert_eq!(state.parses, 1, "one parse for several identical bodies");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        state.parsed_in_pieces,
        u64::from(threads > 1),
        "read in pieces wherever a local file is"
    );
    let items = every_item(&remote);
    assert!(items.len() > 1000, "{}", items.len());
    assert_eq!(items, every_item(&local));
    for summary in items.iter().step_by(7) {
        assert_eq!(
            remote.detail(&summary.identifier).unwrap(),
            local.detail(&summary.identifier).unwrap()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
