//! Discovery through a real server: sort orders (name, relevance, updated), the query syntax and
//! facet counts, merged across sources of a plugin that lists in the order and counts its own
//! matches (`catalog`, which declares `list.sort@1` and `facets@1`) and sources of one that does not
//! (`testkit`: the host orders and counts its matches). Pages and counts are compared with a
//! brute-force oracle over the same items: every item, the definition of a match and the relevance
//! score of `tributary-plugin-api`, one sort. Set TRIBUTARY_TEST_SEED to replay a run.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::json;
use tonic::Code;
use tributary_plugin_api::{
    order::{normalize_timestamp, relevance},
    Extension, Filter, Query, RString, Summary,
};
use tributary_proto::v1 as pb;
use tributary_tests::{config, key, list_request, source, PluginDir, TestServer};

const WORDS: &[&str] = &["redis", "cache", "nginx", "web", "db", "redis-ha", "Proxy"];
const CATEGORIES: &[&str] = &["db", "web", "ops"];
const REPOSITORIES: &[&str] = &["r1", "r2"];
const DATES: &[&str] = &[
    "2024-03-01T10:00:00Z",
    "2024-03-01T12:00:00+02:00",
    "2023-12-31T23:30:00-01:00",
    "2022-06-15T08:00:00.5Z",
    "",
];
const QUERIES: &[&str] = &[
    "redis",
    "redis cache",
    "\"redis-ha\"",
    "redis -cache",
    "db or web",
    "proxy",
    "-redis",
    "nothing-matches",
];

#[derive(Clone, Debug)]
struct Item {
    source: String,
    id: String,
    name: String,
    display: String,
    description: String,
    categories: Vec<String>,
    repository: String,
    updated: String,
}

impl Item {
    /// The summary the plugins send, for the oracle's use of the plugin-api definitions.
    fn summary(&self) -> Summary {
        Summary {
            identifier: RString::from(self.id.as_str()),
            name: RString::from(self.name.as_str()),
            display_name: RString::from(self.display.as_str()),
            short_description: RString::from(self.description.as_str()),
            categories: self.categories.iter().map(|c| c.as_str().into()).collect(),
            repository: RString::from(self.repository.as_str()),
            extensions: normalize_timestamp(&self.updated)
                .map(|t| Extension::new(tributary_plugin_api::keys::SUMMARY_UPDATED, t))
                .into_iter()
                .collect(),
            ..Summary::default()
        }
    }
}

fn seed() -> u64 {
    std::env::var("TRIBUTARY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

fn random_items(rng: &mut StdRng, source: &str, n: usize) -> Vec<Item> {
    (0..n)
        .map(|j| {
            let word = |rng: &mut StdRng| *WORDS.choose(rng).unwrap();
            Item {
                source: source.to_owned(),
                id: format!("{source}-{j}"),
                name: format!("{}{}", word(rng), ["", "-a", "-b", ""][j % 4]),
                display: word(rng).to_uppercase(),
                description: format!("{} {}", word(rng), word(rng)),
                categories: CATEGORIES
                    .iter()
                    .filter(|_| rng.random_bool(0.4))
                    .map(|c| c.to_string())
                    .collect(),
                repository: REPOSITORIES.choose(rng).unwrap().to_string(),
                updated: DATES.choose(rng).unwrap().to_string(),
            }
        })
        .collect()
}

/// A `catalog` source's JSON file, or a `testkit` source's inline items.
fn source_config(
    dir: &std::path::Path,
    name: &str,
    plugin: &str,
    items: &[Item],
) -> serde_json::Value {
    match plugin {
        "catalog" => {
            let packages: Vec<_> = items
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id, "name": i.name, "display_name": i.display,
                        "short_description": i.description, "categories": i.categories,
                        "repository": i.repository, "created": i.updated, "latest_version": "1.0.0",
                    })
                })
                .collect();
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, json!({ "packages": packages }).to_string()).unwrap();
            json!({ "path": path })
        }
        _ => {
            let items: Vec<_> = items
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id, "name": i.name, "display_name": i.display,
                        "description": i.description, "categories": i.categories,
                        "repository": i.repository, "updated": i.updated,
                    })
                })
                .collect();
            json!({ "items": items })
        }
    }
}

/// The oracle: every match of the query, in the order asked for, as `name@source/identifier`.
fn oracle(items: &[Item], query: &str, sort: pb::SortOrder) -> Vec<String> {
    let filter = Filter {
        query: query.to_lowercase().into(),
        ..Filter::default()
    };
    let parsed = Query::parse(&query.to_lowercase()).unwrap();
    let mut kept: Vec<(u32, Option<String>, &Item)> = items
        .iter()
        .filter(|i| filter.matches(&i.summary()))
        .map(|i| {
            let summary = i.summary();
            (
                relevance(&parsed, &summary),
                normalize_timestamp(&i.updated),
                i,
            )
        })
        .collect();
    kept.sort_by(|a, b| {
        let primary = match sort {
            pb::SortOrder::Relevance => b.0.cmp(&a.0),
            // Newest first; no date last.
            pb::SortOrder::Updated => match (&a.1, &b.1) {
                (Some(x), Some(y)) => y.cmp(x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            },
            _ => std::cmp::Ordering::Equal,
        };
        primary.then_with(|| {
            (
                a.2.name.as_bytes(),
                a.2.source.as_bytes(),
                a.2.id.as_bytes(),
            )
                .cmp(&(
                    b.2.name.as_bytes(),
                    b.2.source.as_bytes(),
                    b.2.id.as_bytes(),
                ))
        })
    });
    kept.iter()
        .map(|(_, _, i)| format!("{}@{}/{}", i.name, i.source, i.id))
        .collect()
}

/// The oracle's counts: (total, by source, by repository, by category).
type Counts = (
    u64,
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
);

/// Every source counted appears under sources, with 0 when nothing of it matches.
fn oracle_counts(items: &[Item], sources: &[String], query: &str) -> Counts {
    let filter = Filter {
        query: query.to_lowercase().into(),
        ..Filter::default()
    };
    let mut counts = Counts::default();
    for s in sources {
        counts.1.insert(s.clone(), 0);
    }
    for i in items.iter().filter(|i| filter.matches(&i.summary())) {
        counts.0 += 1;
        *counts.1.entry(i.source.clone()).or_default() += 1;
        *counts.2.entry(i.repository.clone()).or_default() += 1;
        for c in &i.categories {
            *counts.3.entry(c.clone()).or_default() += 1;
        }
    }
    counts
}

fn counts_of(facets: &pb::Facets, total: u64) -> Counts {
    let map = |v: &[pb::FacetCount]| v.iter().map(|c| (c.value.clone(), c.count)).collect();
    (
        total,
        map(&facets.sources),
        map(&facets.repositories),
        map(&facets.categories),
    )
}

/// Random catalogs over `catalog` and `testkit` sources; every query in every order, random page
/// sizes, facets asked on the first page: the pages concatenated and the counts must be the
/// oracle's.
#[tokio::test]
async fn random_catalogs_in_every_order_page_and_count_to_the_oracle() {
    let seed = seed();
    println!("TRIBUTARY_TEST_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let plugins = PluginDir::with(&["catalog", "testkit"]);
    let data = tempfile::tempdir_in(plugins.path()).unwrap();
    for trial in 0..6 {
        let mut items = Vec::new();
        let mut sources = Vec::new();
        let mut names = Vec::new();
        for (s, plugin) in [
            (0, "catalog"),
            (1, "testkit"),
            (2, "catalog"),
            (3, "testkit"),
        ]
        .into_iter()
        .take(rng.random_range(2..=4))
        {
            let name = format!("s{trial}{s}");
            let n = rng.random_range(0..30);
            let mine = random_items(&mut rng, &name, n);
            sources.push(source(
                &name,
                plugin,
                source_config(data.path(), &name, plugin, &mine),
            ));
            names.push(name);
            items.extend(mine);
        }
        let server = TestServer::start(config(plugins.path(), data.path(), sources)).await;
        let mut client = server.packages().await;
        for query in QUERIES {
            for sort in [
                pb::SortOrder::Name,
                pb::SortOrder::Relevance,
                pb::SortOrder::Updated,
            ] {
                let mut got = Vec::new();
                let mut token = String::new();
                let mut sizes = Vec::new();
                for page in 0..500 {
                    let size = rng.random_range(1..=7);
                    sizes.push(size);
                    let mut request = list_request(
                        size,
                        &token,
                        Some(pb::FilterOptions {
                            query: query.to_string(),
                            ..Default::default()
                        }),
                    );
                    request.sort = sort as i32;
                    request.include_facets = page == 0;
                    let response = client
                        .list_available_package_summaries(request)
                        .await
                        .unwrap_or_else(|e| panic!("seed {seed} {query:?} {sort:?}: {e}"))
                        .into_inner();
                    assert!(
                        response.failed_sources.is_empty(),
                        "{:?}",
                        response.failed_sources
                    );
                    if page == 0 {
                        let facets = response.facets.as_ref().expect("facets were asked for");
                        assert!(facets.complete, "{:?}", facets.missing_sources);
                        assert_eq!(
                            counts_of(facets, response.total_size.expect("total_size")),
                            oracle_counts(&items, &names, query),
                            "seed {seed} trial {trial}: counts of {query:?}"
                        );
                    } else {
                        assert_eq!(response.total_size, None, "not asked for");
                        assert!(response.facets.is_none());
                    }
                    got.extend(response.available_package_summaries.iter().map(key));
                    if response.next_page_token.is_empty() {
                        break;
                    }
                    token = response.next_page_token;
                }
                assert_eq!(
                    got,
                    oracle(&items, query, sort),
                    "seed {seed} trial {trial}: {query:?} by {sort:?}, sizes {sizes:?}"
                );
            }
        }
        server.stop().await;
    }
}

/// Bad discovery requests are INVALID_ARGUMENT naming the problem; nothing else breaks.
#[tokio::test]
async fn bad_sorts_queries_and_tokens_name_the_problem() {
    let plugins = PluginDir::with(&["testkit"]);
    let items =
        json!({ "items": [{ "name": "redis", "id": "r" }, { "name": "redis-ha", "id": "h" }] });
    let server = TestServer::start(config(
        plugins.path(),
        plugins.path(),
        vec![source("a", "testkit", items)],
    ))
    .await;
    let mut client = server.packages().await;
    let ask = |query: &str, sort: i32, token: &str| {
        let mut request = list_request(
            1,
            token,
            Some(pb::FilterOptions {
                query: query.to_owned(),
                ..Default::default()
            }),
        );
        request.sort = sort;
        request
    };
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    };
    let e = client
        .list_available_package_summaries(ask("redis \"ha", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(
        refused(e),
        "filter.query: unterminated quote opened at position 7"
    );
    let e = client
        .list_available_package_summaries(ask("redis or", 0, ""))
        .await
        .unwrap_err();
    assert!(refused(e).starts_with("filter.query: "));
    let e = client
        .list_available_package_summaries(ask("", pb::SortOrder::Relevance as i32, ""))
        .await
        .unwrap_err();
    assert_eq!(
        refused(e),
        "sort SORT_ORDER_RELEVANCE needs a filter.query: without one there is nothing to rank by"
    );
    let e = client
        .list_available_package_summaries(ask("redis", 9, ""))
        .await
        .unwrap_err();
    assert!(refused(e).starts_with("sort has no value 9"));
    // A token of one order is refused in another, naming both.
    let first = client
        .list_available_package_summaries(ask("redis", pb::SortOrder::Relevance as i32, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first
            .available_package_summaries
            .iter()
            .map(key)
            .collect::<Vec<_>>(),
        ["redis@a/r"],
        "the exact name first"
    );
    let e = client
        .list_available_package_summaries(ask("redis", 0, &first.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(
        refused(e),
        "page_token was issued for sort order relevance, this request asks for name: send the sort of the first page, or start again without a token"
    );
    let next = client
        .list_available_package_summaries(ask(
            "redis",
            pb::SortOrder::Relevance as i32,
            &first.next_page_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.available_package_summaries
            .iter()
            .map(key)
            .collect::<Vec<_>>(),
        ["redis-ha@a/h"]
    );
    server.stop().await;
}
