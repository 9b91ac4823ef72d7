//! A search index over a source's sorted items, so that a filtered listing costs what it finds rather
//! than the size of the catalog.
//!
//! [`ListRequest::select`] answers a filtered request by scanning forward from the seek position and
//! testing every item: a query that matches nothing reads the whole catalog on every call. A
//! [`SearchIndex`] built once over the same sorted slice (off the request path, when the source loads
//! its data) keeps, for every byte trigram of the lower-cased name, display name and short description,
//! the sorted positions of the items that contain it, and the positions of every category and
//! repository value. [`SearchIndex::select`] then walks only the candidates:
//! - a query of three bytes or more: the positions of its rarest trigram, each checked against the
//!   query's other trigrams by binary search before the item itself is tested;
//! - otherwise categories, or repositories: the union of their values' positions;
//! - a query of one or two bytes and nothing else: a scan, as `select` does (such a query matches
//!   much of any catalog, so the scan ends early).
//!
//! Every candidate is confirmed with [`Filter::matches`], the definition of a match, so the answer is
//! exactly `ListRequest::select`'s, only cheaper. Positions are `u32`: an index holds up to 2^32 items.

use std::collections::HashMap;

use abi_stable::std_types::ROption;

use crate::types::{Filter, ListRequest, Summary};

/// Positions (indexes into the sorted slice) of the items that have some property, ascending.
type Postings = Vec<u32>;

/// A search index over one sorted slice of items. Rebuild it whenever the slice changes.
#[derive(Debug, Default, Clone)]
pub struct SearchIndex {
    trigrams: HashMap<[u8; 3], Postings>,
    categories: HashMap<String, Postings>,
    repositories: HashMap<String, Postings>,
    len: usize,
}

impl SearchIndex {
    /// Indexes `sorted`, which must be in [`Summary::key_cmp`] order (as `ListRequest::select` wants).
    pub fn build(sorted: &[Summary]) -> SearchIndex {
        let mut index = SearchIndex {
            len: sorted.len(),
            ..SearchIndex::default()
        };
        let mut lowered = String::new();
        for (position, item) in sorted.iter().enumerate() {
            let position =
                u32::try_from(position).expect("a search index holds at most 2^32 items");
            for field in [&item.name, &item.display_name, &item.short_description] {
                lowered.clear();
                lowered.push_str(field);
                lower_in_place(&mut lowered);
                for gram in lowered.as_bytes().windows(3) {
                    push_once(
                        index
                            .trigrams
                            .entry([gram[0], gram[1], gram[2]])
                            .or_default(),
                        position,
                    );
                }
            }
            for category in item.categories.iter() {
                push_once(
                    index.categories.entry(category.to_string()).or_default(),
                    position,
                );
            }
            push_once(
                index
                    .repositories
                    .entry(item.repository.to_string())
                    .or_default(),
                position,
            );
        }
        for postings in index
            .trigrams
            .values_mut()
            .chain(index.categories.values_mut())
            .chain(index.repositories.values_mut())
        {
            postings.shrink_to_fit();
        }
        index
    }

    /// How many items the index was built over.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Answers `request` from `sorted`, the slice this index was built over: the same items as
    /// [`ListRequest::select`], found through the index.
    pub fn select(&self, request: &ListRequest, sorted: &[Summary]) -> Vec<Summary> {
        debug_assert_eq!(sorted.len(), self.len, "the index belongs to another slice");
        let filter = &request.filter;
        if filter.is_empty() || sorted.len() != self.len {
            return request.select(sorted);
        }
        let start = match &request.after {
            ROption::RSome(key) => sorted.partition_point(|item| !item.is_after(key)),
            ROption::RNone => 0,
        };
        let limit = request.limit as usize;
        let mut out = Vec::new();
        let mut take = |position: u32| {
            let item = &sorted[position as usize];
            if filter.matches(item) {
                out.push(item.clone());
            }
            out.len() < limit
        };
        match self.plan(filter) {
            Plan::Nothing => {}
            Plan::Trigrams(mut lists) => {
                lists.sort_by_key(|l| l.len());
                let (driver, others) = lists.split_first().expect("a query plan has a trigram");
                for &position in tail(driver, start) {
                    if others.iter().all(|l| l.binary_search(&position).is_ok()) && !take(position)
                    {
                        break;
                    }
                }
            }
            Plan::Union(lists) => {
                let mut heads: Vec<&[u32]> = lists.iter().map(|l| tail(l, start)).collect();
                // The smallest head among the lists, each position once (an item can carry several
                // of the wanted categories).
                while let Some(position) = heads.iter().filter_map(|h| h.first()).min().copied() {
                    for head in heads.iter_mut() {
                        if head.first() == Some(&position) {
                            *head = &head[1..];
                        }
                    }
                    if !take(position) {
                        break;
                    }
                }
            }
            Plan::Scan => {
                for position in start..sorted.len() {
                    if !take(position as u32) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Which positions to visit for `filter`.
    fn plan<'a>(&'a self, filter: &Filter) -> Plan<'a> {
        let query = filter.query.as_str();
        // The host sends the query lower-cased; any other query is answered by a scan, which is
        // always exact.
        if query.len() >= 3 && !query.chars().any(char::is_uppercase) {
            let mut lists = Vec::new();
            for gram in query.as_bytes().windows(3) {
                match self.trigrams.get(&[gram[0], gram[1], gram[2]]) {
                    Some(list) => lists.push(list.as_slice()),
                    None => return Plan::Nothing,
                }
            }
            return Plan::Trigrams(lists);
        }
        let values = |map: &'a HashMap<String, Postings>,
                      wanted: &[abi_stable::std_types::RString]| {
            wanted
                .iter()
                .filter_map(|v| map.get(v.as_str()).map(Vec::as_slice))
                .collect::<Vec<&[u32]>>()
        };
        if !filter.categories.is_empty() {
            return Plan::Union(values(&self.categories, &filter.categories));
        }
        if !filter.repositories.is_empty() {
            return Plan::Union(values(&self.repositories, &filter.repositories));
        }
        Plan::Scan
    }
}

enum Plan<'a> {
    /// No item can match.
    Nothing,
    /// Items in every one of these lists may match.
    Trigrams(Vec<&'a [u32]>),
    /// Items in any of these lists may match.
    Union(Vec<&'a [u32]>),
    /// Every item may match.
    Scan,
}

/// The part of `list` at or after `start`.
fn tail(list: &[u32], start: usize) -> &[u32] {
    &list[list.partition_point(|&p| (p as usize) < start)..]
}

/// Appends `position` unless it is already the last entry (items are indexed in order).
fn push_once(list: &mut Postings, position: u32) {
    if list.last() != Some(&position) {
        list.push(position);
    }
}

/// Lower-cases `text` as the filter does: ASCII in place, anything else through `to_lowercase`.
fn lower_in_place(text: &mut String) {
    if text.is_ascii() {
        text.make_ascii_lowercase();
    } else {
        *text = text.to_lowercase();
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RString, RVec};

    use super::*;
    use crate::types::SeekKey;

    /// A small deterministic generator (xorshift), so that failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn word(&mut self, len: usize) -> String {
            (0..len)
                .map(|_| ALPHABET[self.below(ALPHABET.len())])
                .collect()
        }
        /// A word of `min` to `min + spread - 1` characters.
        fn word_upto(&mut self, spread: usize, min: usize) -> String {
            let len = min + self.below(spread);
            self.word(len)
        }
    }

    const ALPHABET: &[&str] = &["a", "b", "c", "n", "x", "A", "N", "é", "É", "-", " ", "ß"];

    fn items(rng: &mut Rng, n: usize) -> Vec<Summary> {
        let mut items: Vec<Summary> = (0..n)
            .map(|i| Summary {
                identifier: RString::from(format!("id-{i}")),
                name: RString::from(rng.word_upto(6, 1)),
                display_name: RString::from(rng.word_upto(5, 0)),
                short_description: RString::from(rng.word_upto(12, 0)),
                categories: (0..rng.below(3))
                    .map(|_| RString::from(["db", "web", "ops", "ml"][rng.below(4)]))
                    .collect(),
                repository: RString::from(["r1", "r2", ""][rng.below(3)]),
                deprecated: rng.below(5) == 0,
                ..Summary::default()
            })
            .collect();
        items.sort_by(Summary::key_cmp);
        items
    }

    fn strings(values: &[&str]) -> RVec<RString> {
        values.iter().map(|v| RString::from(*v)).collect()
    }

    #[test]
    fn answers_exactly_what_select_answers() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let queries = [
            "", "a", "an", "ann", "xa-", "é", "éa", "ée", "ßn", "nnn", "zzz", "c c",
        ];
        for round in 0..40 {
            let n = 1 + rng.below(300);
            let sorted = items(&mut rng, n);
            let index = SearchIndex::build(&sorted);
            for _ in 0..60 {
                let query = if rng.below(4) == 0 {
                    rng.word_upto(4, 1).to_lowercase()
                } else {
                    queries[rng.below(queries.len())].to_owned()
                };
                let categories: &[&str] =
                    [&[][..], &["db"], &["web", "ml"], &["none"]][rng.below(4)];
                let repositories: &[&str] = [&[][..], &["r1"], &["r2", ""]][rng.below(3)];
                let item = &sorted[rng.below(sorted.len())];
                let after = match rng.below(3) {
                    0 => ROption::RNone,
                    1 => ROption::RSome(SeekKey {
                        name: item.name.clone(),
                        identifier: item.identifier.clone(),
                    }),
                    _ => ROption::RSome(SeekKey {
                        name: RString::from(rng.word(2)),
                        identifier: RString::new(),
                    }),
                };
                let limit = 1 + rng.below(20) as u32;
                let request = ListRequest {
                    after,
                    limit,
                    filter: Filter {
                        query: RString::from(query),
                        categories: strings(categories),
                        repositories: strings(repositories),
                        include_deprecated: rng.below(2) == 0,
                    },
                    extensions: RVec::new(),
                };
                assert_eq!(
                    index.select(&request, &sorted),
                    request.select(&sorted),
                    "round {round}: {request:?}"
                );
            }
        }
    }

    #[test]
    fn a_query_with_an_unknown_trigram_visits_nothing() {
        let sorted = items(&mut Rng(7), 50);
        let index = SearchIndex::build(&sorted);
        assert!(matches!(
            index.plan(&Filter {
                query: RString::from("qqq"),
                ..Filter::default()
            }),
            Plan::Nothing
        ));
    }
}
