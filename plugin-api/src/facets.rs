//! Counts of the matches of a filter (interface 1.1): how many items match in all, per repository
//! and per category, and how many of them are deprecated; and the named call `facets@1`
//! ([`crate::capabilities::FACETS`]) through which a source answers them.
//!
//! # `facets@1`
//! Payload (JSON object, every key optional; unknown keys are ignored):
//! ```json
//! {"query": "nginx -legacy", "categories": ["web"], "repositories": ["bitnami"], "include_deprecated": false}
//! ```
//! the fields of a [`Filter`], with the same meaning and defaults ([`FacetsRequest`]). Answer (JSON
//! object, [`Facets::to_json`]):
//! ```json
//! {"total": 12, "repositories": {"bitnami": 10, "community": 2}, "categories": {"web": 7}, "deprecated": 0}
//! ```
//! A source declaring `facets@1` answers it over the same items and with the same definition of a
//! match as its `list` (`SearchIndex::facets` or [`Facets::count`]); a payload that is not
//! such an object, or whose query does not parse, is [`crate::ErrorKind::InvalidArgument`] naming
//! the key. [`call`] does all of it around a count (a search index's, say).
//!
//! # Bounds
//! Each map holds at most [`MAX_FACET_VALUES`] distinct values of at most
//! [`crate::contract::MAX_KEY_BYTES`] bytes each: values past the bound, longer ones, and the empty
//! value (an item with no repository) are counted in `total` but not in the map. An answer over the
//! bounds is refused by [`Facets::from_json`], so an answer costs at most about 20 MB.
//!
//! The JSON forms need `serde_json`, which this crate depends on in every configuration (not only
//! with the `config` feature): both sides of the call must read and write exactly the same shape,
//! escaping included, and a plugin built without default features must still be able to answer.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::contract::MAX_KEY_BYTES;
use crate::items::{Items, SummaryFields};
use crate::query::CompiledFilter;
use crate::types::{Filter, PluginError, Summary};

/// The most distinct values in one map of [`Facets`].
pub const MAX_FACET_VALUES: usize = 10_000;

/// Counts of the items that match a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    /// Matching items.
    pub total: u64,
    /// Matching items per repository (items without one are not counted here).
    pub repositories: BTreeMap<String, u64>,
    /// Matching items per category: an item counts once for each distinct category it has.
    pub categories: BTreeMap<String, u64>,
    /// Matching items that are deprecated: 0 unless the filter includes deprecated items.
    pub deprecated: u64,
}

/// Adds `count` to `value` in `map`, within the bounds.
fn bump(map: &mut BTreeMap<String, u64>, value: &str, count: u64) {
    if value.is_empty() || value.len() > MAX_KEY_BYTES {
        return;
    }
    if let Some(n) = map.get_mut(value) {
        *n += count;
    } else if map.len() < MAX_FACET_VALUES {
        map.insert(value.to_owned(), count);
    }
}

impl Facets {
    /// Counts one matching item.
    pub fn add(&mut self, item: &Summary) {
        self.add_item(item);
    }

    /// [`Facets::add`] for an item kept in any form.
    pub fn add_item<'a>(&mut self, item: impl SummaryFields<'a>) {
        self.total += 1;
        self.deprecated += u64::from(item.deprecated());
        bump(&mut self.repositories, item.repository(), 1);
        let categories = item.categories();
        for (i, category) in categories.clone().enumerate() {
            if !categories.clone().take(i).any(|c| c == category) {
                bump(&mut self.categories, category, 1);
            }
        }
    }

    /// Adds the counts of `other` (of items distinct from this one's: another source's).
    pub fn merge(&mut self, other: &Facets) {
        self.total += other.total;
        self.deprecated += other.deprecated;
        for (value, count) in &other.repositories {
            bump(&mut self.repositories, value, *count);
        }
        for (value, count) in &other.categories {
            bump(&mut self.categories, value, *count);
        }
    }

    /// Counts the items of `items` that match `filter`, testing every one (what
    /// `SearchIndex::facets` answers through its index).
    pub fn count(filter: &CompiledFilter, items: &[Summary]) -> Facets {
        Facets::count_items(filter, items)
    }

    /// [`Facets::count`] over items kept in any form.
    pub fn count_items<I: Items + ?Sized>(filter: &CompiledFilter, items: &I) -> Facets {
        let mut facets = Facets::default();
        for p in 0..items.len() {
            let item = items.item(p);
            if filter.matches_item(item) {
                facets.add_item(item);
            }
        }
        facets
    }

    /// The `facets@1` answer: `{"total": n, "repositories": {..}, "categories": {..},
    /// "deprecated": n}`.
    pub fn to_json(&self) -> String {
        let counts = |map: &BTreeMap<String, u64>| {
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect(),
            )
        };
        let mut object = Map::new();
        object.insert("total".into(), Value::from(self.total));
        object.insert("repositories".into(), counts(&self.repositories));
        object.insert("categories".into(), counts(&self.categories));
        object.insert("deprecated".into(), Value::from(self.deprecated));
        Value::Object(object).to_string()
    }

    /// Reads a `facets@1` answer. Every key is required; unknown keys are ignored. The error names
    /// the key at fault, and refuses maps over the bounds (see the module documentation).
    pub fn from_json(text: &str) -> Result<Facets, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("facets answer: not JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or("facets answer: not a JSON object")?;
        let number = |key: &str| -> Result<u64, String> {
            object
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("facets answer: key `{key}`: expected a count"))
        };
        let map = |key: &str| -> Result<BTreeMap<String, u64>, String> {
            let entries = object.get(key).and_then(Value::as_object).ok_or_else(|| {
                format!("facets answer: key `{key}`: expected an object of counts")
            })?;
            if entries.len() > MAX_FACET_VALUES {
                return Err(format!(
                    "facets answer: key `{key}`: {} values, at most {MAX_FACET_VALUES} are allowed",
                    entries.len()
                ));
            }
            entries
                .iter()
                .map(|(k, v)| {
                    if k.is_empty() || k.len() > MAX_KEY_BYTES {
                        return Err(format!(
                            "facets answer: key `{key}`: a value of {} bytes (1 to {MAX_KEY_BYTES} are allowed)",
                            k.len()
                        ));
                    }
                    v.as_u64().map(|n| (k.clone(), n)).ok_or_else(|| {
                        format!("facets answer: key `{key}`: expected a count for {k:?}")
                    })
                })
                .collect()
        };
        Ok(Facets {
            total: number("total")?,
            repositories: map("repositories")?,
            categories: map("categories")?,
            deprecated: number("deprecated")?,
        })
    }
}

/// The facet values of every item of a sorted slice, as small numbers, so that counting the
/// matches of a filter reads a few bytes per match instead of the items' strings (built with a
/// `SearchIndex`, which counts through it).
///
/// Per item, one row of 8 bytes: its repository's number and one bit for deprecated, and where its
/// distinct categories end in one shared list of category numbers (4 bytes each).
#[derive(Debug, Default, Clone)]
pub(crate) struct FacetTable {
    /// The distinct repository values, by number (the empty value and long ones included: the
    /// filter's repositories are matched against them; [`bump`] leaves them out of the counts).
    repositories: Vec<String>,
    /// The distinct category values, by number.
    categories: Vec<String>,
    /// Per item, read together when it is counted.
    rows: Vec<Row>,
    item_categories: Vec<u32>,
}

/// One item of a [`FacetTable`].
#[derive(Debug, Default, Clone, Copy)]
struct Row {
    /// Its repository's number, with [`DEPRECATED`] set when it is deprecated.
    repository: u32,
    /// The end of its distinct categories' numbers in `item_categories` (they start where the
    /// previous item's end).
    categories_end: u32,
}

/// The bit of [`Row::repository`] that says the item is deprecated.
const DEPRECATED: u32 = 1 << 31;

impl FacetTable {
    pub(crate) fn build<I: Items + ?Sized>(sorted: &I) -> FacetTable {
        fn number<'a>(
            numbers: &mut std::collections::HashMap<&'a str, u32>,
            values: &mut Vec<String>,
            value: &'a str,
        ) -> u32 {
            *numbers.entry(value).or_insert_with(|| {
                values.push(value.to_owned());
                u32::try_from(values.len() - 1).expect("at most 2^32 distinct values")
            })
        }
        let mut table = FacetTable {
            rows: Vec::with_capacity(sorted.len()),
            ..FacetTable::default()
        };
        let mut repositories = std::collections::HashMap::new();
        let mut categories = std::collections::HashMap::new();
        for p in 0..sorted.len() {
            let item = sorted.item(p);
            let repository = number(
                &mut repositories,
                &mut table.repositories,
                item.repository(),
            );
            assert!(repository < DEPRECATED, "at most 2^31 repositories");
            let start = table.item_categories.len();
            for category in item.categories() {
                let n = number(&mut categories, &mut table.categories, category);
                if !table.item_categories[start..].contains(&n) {
                    table.item_categories.push(n);
                }
            }
            table.rows.push(Row {
                repository: repository | if item.deprecated() { DEPRECATED } else { 0 },
                categories_end: u32::try_from(table.item_categories.len())
                    .expect("at most 2^32 categories"),
            });
        }
        table.item_categories.shrink_to_fit();
        table.repositories.shrink_to_fit();
        table.categories.shrink_to_fit();
        table
    }

    #[inline]
    fn categories_of(&self, position: usize) -> &[u32] {
        let start = position
            .checked_sub(1)
            .map_or(0, |p| self.rows[p].categories_end as usize);
        &self.item_categories[start..self.rows[position].categories_end as usize]
    }

    /// What `filter` asks of an item besides its query ([`CompiledFilter`]'s deprecated,
    /// repositories and categories), as the numbers of this table.
    pub(crate) fn admission(&self, filter: &CompiledFilter) -> Admission {
        let wanted = |values: &[String], wanted: &[String]| {
            (!wanted.is_empty()).then(|| {
                values
                    .iter()
                    .map(|v| wanted.iter().any(|w| w == v))
                    .collect()
            })
        };
        Admission {
            include_deprecated: filter.include_deprecated(),
            repositories: wanted(&self.repositories, filter.repositories()),
            categories: wanted(&self.categories, filter.categories()),
        }
    }

    /// Whether the item at `position` passes `admission`: what `CompiledFilter::matches` checks
    /// besides the query.
    #[inline]
    pub(crate) fn admits(&self, admission: &Admission, position: usize) -> bool {
        let repository = self.rows[position].repository;
        (admission.include_deprecated || repository & DEPRECATED == 0)
            && admission
                .repositories
                .as_ref()
                .is_none_or(|wanted| wanted[(repository & !DEPRECATED) as usize])
            && admission.categories.as_ref().is_none_or(|wanted| {
                self.categories_of(position)
                    .iter()
                    .any(|&c| wanted[c as usize])
            })
    }

    /// A count of no item yet.
    pub(crate) fn counter(&self) -> Counter<'_> {
        Counter {
            table: self,
            total: 0,
            deprecated: 0,
            repositories: vec![0; self.repositories.len()],
            categories: vec![0; self.categories.len()],
            repositories_seen: Vec::new(),
            categories_seen: Vec::new(),
        }
    }
}

/// A filter's demands besides its query, in a [`FacetTable`]'s numbers.
pub(crate) struct Admission {
    include_deprecated: bool,
    /// By repository number, whether it is wanted (`None`: any).
    repositories: Option<Vec<bool>>,
    /// By category number, whether it is wanted (`None`: any).
    categories: Option<Vec<bool>>,
}

/// Counts of items of a [`FacetTable`], added by position.
pub(crate) struct Counter<'t> {
    table: &'t FacetTable,
    total: u64,
    deprecated: u64,
    repositories: Vec<u64>,
    categories: Vec<u64>,
    /// The numbers counted, in the order each was first counted: the order in which
    /// [`Facets::add`] would have met them, which decides the values kept past
    /// [`MAX_FACET_VALUES`].
    repositories_seen: Vec<u32>,
    categories_seen: Vec<u32>,
}

impl Counter<'_> {
    /// Counts the item at `position` (as [`Facets::add`] counts it).
    #[inline]
    pub(crate) fn add(&mut self, position: usize) {
        let table = self.table;
        let row = table.rows[position];
        self.total += 1;
        self.deprecated += u64::from(row.repository & DEPRECATED != 0);
        let repository = row.repository & !DEPRECATED;
        let count = &mut self.repositories[repository as usize];
        if *count == 0 {
            self.repositories_seen.push(repository);
        }
        *count += 1;
        for &category in table.categories_of(position) {
            let count = &mut self.categories[category as usize];
            if *count == 0 {
                self.categories_seen.push(category);
            }
            *count += 1;
        }
    }

    /// The counts, within the bounds as [`Facets::add`] keeps them.
    pub(crate) fn into_facets(self) -> Facets {
        let mut facets = Facets {
            total: self.total,
            deprecated: self.deprecated,
            ..Facets::default()
        };
        let kept =
            |map: &mut BTreeMap<String, u64>, seen: &[u32], values: &[String], counts: &[u64]| {
                for &n in seen {
                    bump(map, &values[n as usize], counts[n as usize]);
                }
            };
        let table = self.table;
        kept(
            &mut facets.repositories,
            &self.repositories_seen,
            &table.repositories,
            &self.repositories,
        );
        kept(
            &mut facets.categories,
            &self.categories_seen,
            &table.categories,
            &self.categories,
        );
        facets
    }
}

/// The payload of `facets@1`: the filter whose matches are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FacetsRequest {
    /// [`Filter::query`].
    pub query: String,
    /// [`Filter::categories`].
    pub categories: Vec<String>,
    /// [`Filter::repositories`].
    pub repositories: Vec<String>,
    /// [`Filter::include_deprecated`].
    pub include_deprecated: bool,
}

impl FacetsRequest {
    /// The request counting the matches of `filter`.
    pub fn from_filter(filter: &Filter) -> FacetsRequest {
        FacetsRequest {
            query: filter.query.to_string(),
            categories: filter.categories.iter().map(|c| c.to_string()).collect(),
            repositories: filter.repositories.iter().map(|r| r.to_string()).collect(),
            include_deprecated: filter.include_deprecated,
        }
    }

    /// The filter whose matches this request counts.
    pub fn to_filter(&self) -> Filter {
        Filter {
            query: self.query.as_str().into(),
            categories: self.categories.iter().map(|c| c.as_str().into()).collect(),
            repositories: self
                .repositories
                .iter()
                .map(|r| r.as_str().into())
                .collect(),
            include_deprecated: self.include_deprecated,
        }
    }

    /// The payload, as the host sends it.
    pub fn to_json(&self) -> String {
        let strings = |values: &[String]| Value::from(values.to_vec());
        let mut object = Map::new();
        object.insert("query".into(), Value::from(self.query.as_str()));
        object.insert("categories".into(), strings(&self.categories));
        object.insert("repositories".into(), strings(&self.repositories));
        object.insert(
            "include_deprecated".into(),
            Value::from(self.include_deprecated),
        );
        Value::Object(object).to_string()
    }

    /// Reads a payload: every key optional (defaults as in [`Filter::default`]), unknown keys
    /// ignored, an empty payload read as `{}`. A malformed one is
    /// [`crate::ErrorKind::InvalidArgument`] naming the key. The query is not parsed here (see
    /// [`Filter::compile`]).
    pub fn from_json(payload: &str) -> Result<FacetsRequest, PluginError> {
        let invalid =
            |what: String| PluginError::invalid_argument(format!("facets@1 payload: {what}"));
        if payload.trim().is_empty() {
            return Ok(FacetsRequest::default());
        }
        let value: Value =
            serde_json::from_str(payload).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("not a JSON object".to_owned()))?;
        let strings = |key: &str| -> Result<Vec<String>, PluginError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| invalid(format!("key `{key}`: expected an array of strings"))),
                Some(_) => Err(invalid(format!(
                    "key `{key}`: expected an array of strings"
                ))),
            }
        };
        Ok(FacetsRequest {
            query: match object.get("query") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(query)) => query.clone(),
                Some(_) => return Err(invalid("key `query`: expected a string".to_owned())),
            },
            categories: strings("categories")?,
            repositories: strings("repositories")?,
            include_deprecated: match object.get("include_deprecated") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        "key `include_deprecated`: expected true or false".to_owned(),
                    ))
                }
            },
        })
    }
}

/// Answers a `facets@1` call: reads the payload, checks that its query parses, and writes the
/// answer of `count` for its filter. A malformed payload or a query that does not parse is
/// `ErrorKind::InvalidArgument` naming the key. Over a search index:
/// `facets::call(payload, |filter| index.facets(filter, &sorted))`.
pub fn call(payload: &str, count: impl FnOnce(&Filter) -> Facets) -> Result<String, PluginError> {
    let filter = FacetsRequest::from_json(payload)?.to_filter();
    if let Err(e) = filter.compile() {
        return Err(PluginError::invalid_argument(format!(
            "facets@1 payload: key `query`: {e}"
        )));
    }
    Ok(count(&filter).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// JSON text as a value, so that comparisons do not depend on the order of keys.
    fn value(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn item(repository: &str, categories: &[&str], deprecated: bool) -> Summary {
        Summary {
            identifier: "i".into(),
            name: "n".into(),
            repository: repository.into(),
            categories: categories.iter().map(|c| (*c).into()).collect(),
            deprecated,
            ..Summary::default()
        }
    }

    #[test]
    fn counts_add_merge_and_round_trip() {
        let mut a = Facets::default();
        a.add(&item("r1", &["db", "web", "db"], false));
        a.add(&item("", &[""], true));
        let mut b = Facets::default();
        b.add(&item("r1", &["web"], false));
        b.add(&item("r2", &[], false));
        a.merge(&b);
        let json = a.to_json();
        assert_eq!(
            value(&json),
            value(
                r#"{"total":4,"repositories":{"r1":2,"r2":1},"categories":{"db":1,"web":2},"deprecated":1}"#
            )
        );
        assert_eq!(Facets::from_json(&json), Ok(a));
    }

    #[test]
    fn maps_are_bounded() {
        let mut facets = Facets::default();
        for i in 0..MAX_FACET_VALUES + 5 {
            facets.add(&item(
                &format!("r{i}"),
                &[&"c".repeat(MAX_KEY_BYTES + 1)],
                false,
            ));
        }
        assert_eq!(facets.total, MAX_FACET_VALUES as u64 + 5);
        assert_eq!(facets.repositories.len(), MAX_FACET_VALUES);
        assert!(facets.categories.is_empty());
        let mut over = Map::new();
        for i in 0..=MAX_FACET_VALUES {
            over.insert(format!("r{i}"), Value::from(1));
        }
        let text = serde_json::json!({"total": 1, "repositories": over, "categories": {}, "deprecated": 0});
        assert_eq!(
            Facets::from_json(&text.to_string()),
            Err(
                "facets answer: key `repositories`: 10001 values, at most 10000 are allowed".into()
            )
        );
        assert_eq!(
            Facets::from_json(r#"{"total": -1}"#),
            Err("facets answer: key `total`: expected a count".into())
        );
        assert_eq!(
            Facets::from_json(
                r#"{"total": 1, "deprecated": 0, "repositories": {"": 1}, "categories": {}}"#
            ),
            Err(
                "facets answer: key `repositories`: a value of 0 bytes (1 to 1024 are allowed)"
                    .into()
            )
        );
    }

    #[test]
    fn requests_round_trip_and_name_bad_keys() {
        let request = FacetsRequest {
            query: "nginx -\"helm chart\"".into(),
            categories: vec!["web".into()],
            repositories: vec!["r1".into(), "r2".into()],
            include_deprecated: true,
        };
        assert_eq!(
            FacetsRequest::from_json(&request.to_json()),
            Ok(request.clone())
        );
        assert_eq!(FacetsRequest::from_filter(&request.to_filter()), request);
        assert_eq!(FacetsRequest::from_json(""), Ok(FacetsRequest::default()));
        assert_eq!(
            FacetsRequest::from_json(r#"{"query": null, "x-new": 1}"#),
            Ok(FacetsRequest::default())
        );
        let error = |payload: &str| {
            let e = FacetsRequest::from_json(payload).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            e.message.to_string()
        };
        assert_eq!(error("[]"), "facets@1 payload: not a JSON object");
        assert_eq!(
            error(r#"{"query": 1}"#),
            "facets@1 payload: key `query`: expected a string"
        );
        assert_eq!(
            error(r#"{"categories": ["a", 2]}"#),
            "facets@1 payload: key `categories`: expected an array of strings"
        );
        assert_eq!(
            error(r#"{"repositories": "r1"}"#),
            "facets@1 payload: key `repositories`: expected an array of strings"
        );
        assert_eq!(
            error(r#"{"include_deprecated": "yes"}"#),
            "facets@1 payload: key `include_deprecated`: expected true or false"
        );
        assert!(error("{").starts_with("facets@1 payload: not JSON: "));
    }

    #[test]
    fn the_call_answers_over_an_index() {
        let mut items = vec![
            Summary {
                identifier: "a".into(),
                name: "nginx".into(),
                repository: "r1".into(),
                categories: vec!["web".into()].into(),
                ..Summary::default()
            },
            Summary {
                identifier: "b".into(),
                name: "redis".into(),
                repository: "r2".into(),
                deprecated: true,
                ..Summary::default()
            },
        ];
        items.sort_by(Summary::key_cmp);
        let index = crate::SearchIndex::build(&items);
        let answer =
            |payload: &str| value(&call(payload, |filter| index.facets(filter, &items)).unwrap());
        assert_eq!(
            answer(r#"{"query": "nginx or redis", "include_deprecated": true}"#),
            value(
                r#"{"total":2,"repositories":{"r1":1,"r2":1},"categories":{"web":1},"deprecated":1}"#
            )
        );
        assert_eq!(
            answer("{}"),
            value(r#"{"total":1,"repositories":{"r1":1},"categories":{"web":1},"deprecated":0}"#)
        );
        let e = call(r#"{"query": "a \"b"}"#, |filter| {
            index.facets(filter, &items)
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            e.message.as_str(),
            "facets@1 payload: key `query`: query: unterminated quote opened at position 3"
        );
    }
}
