//! Hostile requests against the real service (in process, no network, so that many run quickly):
//! random page sizes, mutated tokens, oversized and odd filters. Every answer is a page or
//! INVALID_ARGUMENT; nothing panics. TRIBUTARY_FUZZ_CASES sets the count (default 20,000) and
//! TRIBUTARY_FUZZ_SEED replays a run.

use std::{collections::BTreeMap, sync::Arc};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tonic::{Code, Request};
use tributary_host::service::Catalog;
use tributary_plugin_api::{
    ffi::source_box, Detail, ListRequest, PackageSource, PluginError, RString, Summary,
};
use tributary_proto::v1::{self as pb, packages_service_server::PackagesService};
use tributary_runtime::{call::SourceHandle as Source, merge::MergeOptions, registry::Registry};

struct VecSource(Vec<Summary>);

impl PackageSource for VecSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        Ok(request.select(&self.0))
    }
    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        Err(PluginError::not_found(identifier))
    }
}

fn source(name: &str, names: &[&str]) -> Source {
    let mut items: Vec<Summary> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Summary {
            identifier: RString::from(format!("{n}#{i}")),
            name: RString::from(*n),
            categories: vec![RString::from(if i % 2 == 0 { "db" } else { "web" })].into(),
            repository: RString::from("r"),
            ..Summary::default()
        })
        .collect();
    items.sort_by(|a, b| a.key_cmp(b));
    Source::new(name, "in-process", source_box(VecSource(items)))
}

const ODD: &[&str] = &[
    "", "null", "{}", "a", "é", "日本", "\u{0}", "db", "web", "r", "one", "two", "zzz", "💥",
];

fn odd_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => ODD[rng.random_range(0..ODD.len())].to_owned(),
        1 => "x".repeat(rng.random_range(250..1100)),
        2 => (0..rng.random_range(0..20))
            .map(|_| rng.random::<char>())
            .collect(),
        _ => "ab".repeat(rng.random_range(0..5)),
    }
}

fn odd_list(rng: &mut StdRng) -> Vec<String> {
    let n = match rng.random_range(0..10) {
        0 => rng.random_range(90..130),
        1..=4 => 0,
        _ => rng.random_range(1..4),
    };
    (0..n).map(|_| odd_string(rng)).collect()
}

fn mutate(rng: &mut StdRng, token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    match rng.random_range(0..5) {
        0 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = b"AZaz09-_/+="[rng.random_range(0..11)];
        }
        1 => bytes.truncate(rng.random_range(0..=bytes.len())),
        2 => bytes.extend_from_slice(b"AA"),
        3 => return odd_string(rng),
        _ => {}
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn hostile_requests_get_pages_or_invalid_argument() {
    let cases: u64 = std::env::var("TRIBUTARY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("TRIBUTARY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("TRIBUTARY_FUZZ_SEED={seed} TRIBUTARY_FUZZ_CASES={cases}");
    let mut rng = StdRng::seed_from_u64(seed);
    let registry = Registry::from_sources(vec![
        source("one", &["a", "b", "c", "é", "日本", "x\u{0}", "x"]),
        source("two", &["a", "ab", "b", "zz"]),
    ]);
    let catalog = Catalog::new(
        Arc::new(registry),
        MergeOptions::default(),
        Default::default(),
    );

    let mut tokens: Vec<String> = Vec::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..cases {
        let filter = match rng.random_range(0..3) {
            0 => None,
            _ => Some(pb::FilterOptions {
                query: odd_string(&mut rng),
                categories: odd_list(&mut rng),
                repositories: odd_list(&mut rng),
                sources: odd_list(&mut rng),
                include_deprecated: rng.random_bool(0.5),
            }),
        };
        let page_size = match rng.random_range(0..6) {
            0 => i32::MIN,
            1 => i32::MAX,
            2 => rng.random_range(-3..0),
            _ => rng.random_range(0..6),
        };
        let page_token = match (rng.random_range(0..3), tokens.is_empty()) {
            (0, _) | (_, true) => String::new(),
            (1, false) => tokens[rng.random_range(0..tokens.len())].clone(),
            _ => {
                let base = tokens[rng.random_range(0..tokens.len())].clone();
                mutate(&mut rng, &base)
            }
        };
        let request = pb::ListAvailablePackageSummariesRequest {
            page_size,
            page_token,
            filter,
            // Every order, and a value that is none (INVALID_ARGUMENT).
            sort: rng.random_range(0..=4),
            include_facets: rng.random_bool(0.2),
        };
        let code = match catalog
            .list_available_package_summaries(Request::new(request))
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                assert!(response.failed_sources.is_empty());
                if !response.next_page_token.is_empty() && tokens.len() < 1000 {
                    tokens.push(response.next_page_token);
                }
                Code::Ok
            }
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(!status.message().is_empty());
                status.code()
            }
        };
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    println!("fuzzed {cases} list requests: {codes:?}, 0 panics, no other code");
    assert!(
        codes.get("Ok").copied().unwrap_or(0) > 0
            && codes.get("InvalidArgument").copied().unwrap_or(0) > 0
    );
}
