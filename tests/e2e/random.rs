//! Randomised merges: random sources (duplicate names within and across sources, unicode, names that
//! differ only by a trailing NUL, empty display names), random page-size sequences, random filters.
//! The concatenated pages must equal the oracle: a plain sort of everything by
//! (name bytes, source, identifier). Set TRIBUTARY_TEST_SEED to replay a run.

use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::json;
use tributary_proto::v1 as pb;
use tributary_tests::{config, page_through, source, PluginDir, TestServer};

const SOURCE_NAMES: &[&str] = &["a", "b", "bb", "src-ü", "Z", "源", "z z"];
const NAMES: &[&str] = &[
    "nginx",
    "Nginx",
    "nginx-ingress",
    "redis",
    "redis",
    "café",
    "cafe",
    "Ωmega",
    "日本",
    "a",
    "A",
    "x",
    "x\u{0}",
    "x\u{0}y",
    "pkg-1",
    "pkg-10",
    "pkg-2",
    "zz",
];
const CATEGORIES: &[&str] = &["db", "web", "ops"];
const REPOSITORIES: &[&str] = &["r1", "r2", "r3"];

#[derive(Clone, Debug)]
struct Item {
    source: String,
    id: String,
    name: String,
    display: String,
    description: String,
    categories: Vec<String>,
    repository: String,
}

fn seed() -> u64 {
    std::env::var("TRIBUTARY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

fn random_catalog(rng: &mut StdRng) -> Vec<Item> {
    let count = rng.random_range(1..=5);
    let sources: Vec<&str> = SOURCE_NAMES.choose_multiple(rng, count).copied().collect();
    let mut items = Vec::new();
    for source in sources {
        let n = rng.random_range(0..40);
        for j in 0..n {
            let name = NAMES.choose(rng).unwrap().to_string();
            items.push(Item {
                source: source.to_owned(),
                id: format!("i{j}"),
                display: if rng.random_bool(0.5) {
                    String::new()
                } else {
                    name.to_uppercase()
                },
                description: if rng.random_bool(0.3) {
                    "A Web thing".into()
                } else {
                    String::new()
                },
                name,
                categories: CATEGORIES
                    .iter()
                    .filter(|_| rng.random_bool(0.4))
                    .map(|c| c.to_string())
                    .collect(),
                repository: REPOSITORIES.choose(rng).unwrap().to_string(),
            });
        }
    }
    items
}

fn random_filter(rng: &mut StdRng, items: &[Item]) -> pb::FilterOptions {
    let mut f = pb::FilterOptions::default();
    if rng.random_bool(0.5) {
        f.query = ["NGI", "x", "web", "é", "1", "redis", "nothing"]
            .choose(rng)
            .unwrap()
            .to_string();
    }
    if rng.random_bool(0.3) {
        f.categories = CATEGORIES
            .iter()
            .filter(|_| rng.random_bool(0.5))
            .map(|c| c.to_string())
            .collect();
    }
    if rng.random_bool(0.3) {
        f.repositories = REPOSITORIES
            .iter()
            .filter(|_| rng.random_bool(0.5))
            .map(|c| c.to_string())
            .collect();
    }
    if rng.random_bool(0.3) {
        let mut sources: Vec<String> = items.iter().map(|i| i.source.clone()).collect();
        sources.sort();
        sources.dedup();
        f.sources = sources
            .into_iter()
            .filter(|_| rng.random_bool(0.6))
            .collect();
    }
    f
}

fn oracle(items: &[Item], filter: Option<&pb::FilterOptions>) -> Vec<String> {
    let mut kept: Vec<&Item> = items
        .iter()
        .filter(|i| {
            let Some(f) = filter else { return true };
            let q = f.query.to_lowercase();
            (q.is_empty()
                || i.name.to_lowercase().contains(&q)
                || i.display.to_lowercase().contains(&q)
                || i.description.to_lowercase().contains(&q))
                && (f.categories.is_empty()
                    || i.categories.iter().any(|c| f.categories.contains(c)))
                && (f.repositories.is_empty() || f.repositories.contains(&i.repository))
                && (f.sources.is_empty() || f.sources.contains(&i.source))
        })
        .collect();
    kept.sort_by(|a, b| {
        (a.name.as_bytes(), a.source.as_bytes(), a.id.as_bytes()).cmp(&(
            b.name.as_bytes(),
            b.source.as_bytes(),
            b.id.as_bytes(),
        ))
    });
    kept.iter()
        .map(|i| format!("{}@{}/{}", i.name, i.source, i.id))
        .collect()
}

async fn run_trials(seed: u64, trials: usize, with_filters: bool) {
    let plugins = PluginDir::with(&["testkit"]);
    let mut rng = StdRng::seed_from_u64(seed);
    for trial in 0..trials {
        let items = random_catalog(&mut rng);
        let mut by_source: std::collections::BTreeMap<&str, Vec<serde_json::Value>> =
            Default::default();
        for i in &items {
            by_source.entry(&i.source).or_default().push(json!({
                "name": i.name, "id": i.id, "display_name": i.display, "description": i.description,
                "categories": i.categories, "repository": i.repository,
            }));
        }
        // A source with no items still takes part.
        let sources = by_source
            .iter()
            .map(|(name, items)| source(name, "testkit", json!({ "items": items })))
            .collect();
        let server = TestServer::start(config(plugins.path(), plugins.path(), sources)).await;
        let mut client = server.packages().await;
        let sizes: Vec<i32> = (0..8)
            .map(|_| match rng.random_range(0..10) {
                0 => 0,
                1 => 1000,
                _ => rng.random_range(1..=7),
            })
            .collect();
        let filter = with_filters.then(|| random_filter(&mut rng, &items));
        let pages = page_through(&mut client, &sizes, filter.clone(), 500).await;
        let got = pages.concat();
        let expected = oracle(&items, filter.as_ref());
        assert_eq!(
            got, expected,
            "seed {seed} trial {trial}: sizes {sizes:?} filter {filter:?} pages {pages:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn random_catalogs_page_to_the_oracle() {
    let seed = seed();
    println!("TRIBUTARY_TEST_SEED={seed}");
    run_trials(seed, 30, false).await;
}

#[tokio::test]
async fn random_catalogs_with_filters_page_to_the_oracle() {
    let seed = seed();
    println!("TRIBUTARY_TEST_SEED={seed}");
    run_trials(seed ^ 0x5eed, 30, true).await;
}
