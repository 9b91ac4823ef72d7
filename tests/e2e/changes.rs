//! Data that changes between pages: resuming by key neither repeats nor skips the items present
//! before and after the change.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;
use tributary_tests::{config, keys, list, source, PluginDir, TestServer};

fn write_catalog(path: &std::path::Path, names: &[&str]) {
    let packages: Vec<_> = names.iter().map(|n| json!({ "name": n })).collect();
    std::fs::write(path, json!({ "packages": packages }).to_string()).unwrap();
}

#[tokio::test]
async fn rewritten_catalog_between_pages() {
    let plugins = PluginDir::with(&["catalog"]);
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (data.path().join("a.json"), data.path().join("b.json"));
    write_catalog(&a, &["a1", "c1", "e1", "g1", "i1", "k1"]);
    write_catalog(&b, &["b1", "d1", "f1", "h1", "j1", "l1"]);
    let cfg = config(
        plugins.path(),
        data.path(),
        vec![
            source("a", "catalog", json!({ "path": "a.json" })),
            source("b", "catalog", json!({ "path": "b.json" })),
        ],
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.packages().await;

    let first = list(&mut client, 4, "", None).await;
    assert_eq!(
        keys(&first.available_package_summaries),
        ["a1@a/a1", "b1@b/b1", "c1@a/c1", "d1@b/d1"]
    );

    // Between pages: served items disappear, unserved ones disappear, new ones appear before and
    // after the resume point, and one source's data shifts entirely.
    std::thread::sleep(Duration::from_millis(50));
    write_catalog(&a, &["a0", "c1", "e1", "ee", "i1", "k1", "m1"]); // g1 removed, a0 + ee + m1 added
    write_catalog(&b, &["d1", "d2", "f1", "j1", "l1"]); // b1 + h1 removed, d2 added

    let mut rest = Vec::new();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = list(&mut client, 2, &token, None).await;
        assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
        rest.extend(keys(&page.available_package_summaries));
        token = page.next_page_token;
    }
    // Everything after the resume point in the new data, in order, once.
    assert_eq!(
        rest,
        [
            "d2@b/d2", "e1@a/e1", "ee@a/ee", "f1@b/f1", "i1@a/i1", "j1@b/j1", "k1@a/k1", "l1@b/l1",
            "m1@a/m1"
        ]
    );
    // The invariant in general form: items present before and after the change were served once.
    let before: BTreeSet<&str> = [
        "a1", "c1", "e1", "g1", "i1", "k1", "b1", "d1", "f1", "h1", "j1", "l1",
    ]
    .into();
    let after: BTreeSet<&str> = [
        "a0", "c1", "e1", "ee", "i1", "k1", "m1", "d1", "d2", "f1", "j1", "l1",
    ]
    .into();
    let served: Vec<String> = keys(&first.available_package_summaries)
        .into_iter()
        .chain(rest)
        .collect();
    for name in before.intersection(&after) {
        let count = served
            .iter()
            .filter(|k| k.starts_with(&format!("{name}@")))
            .count();
        assert_eq!(count, 1, "{name} served {count} times in {served:?}");
    }
    server.stop().await;
}
