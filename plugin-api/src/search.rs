//! A search index over a source's sorted items, so that a filtered listing costs what it finds rather
//! than the size of the catalog.
//!
//! [`ListRequest::select`] answers a filtered request by testing items one by one: a query that
//! matches nothing reads the whole catalog on every call. A [`SearchIndex`] built once over the same
//! sorted slice (off the request path, when the source loads its data) keeps, for every byte
//! trigram of the lower-cased name, display name and short description, the sorted positions of
//! the items that contain it; the positions of every category and repository value; and the items
//! in update-time order. [`SearchIndex::select`] and [`SearchIndex::facets`] then visit only the
//! candidates:
//! - a query whose every group ([`crate::query`]) has a term that must occur of three bytes or
//!   more: for each group, the positions of the rarest trigram of those terms, each checked against
//!   the group's other trigrams by binary search; the union of the groups. A group with a trigram
//!   no item has contributes nothing;
//! - otherwise categories, or repositories: the union of their values' positions;
//! - otherwise (no query, or a group whose terms are all shorter, or only exclusions): every item.
//!
//! Every candidate is confirmed with the full match ([`crate::CompiledFilter`]), so the answer is
//! exactly `ListRequest::select`'s, only cheaper.
//!
//! # Cost of a page
//! - By name: the candidates from the seek position on, until `limit` matches are found.
//! - By relevance, a query with one term that must occur: when the items named for the term (score
//!   64) or starting with it (32) fill the page, two binary searches over the names and the page
//!   itself, plus a score for each name that is not lower-case ASCII (at most 4,096 of them, else as
//!   below). When they do not fill it (the last page of those, or a query whose best matches score
//!   less), the rest of the page is the best of the other candidates: each visited, only those
//!   outside the names' range scored. A page resumed below 32, and every other query: every
//!   candidate (from the start, as the seek point is a score) scored and kept in a bounded heap of
//!   `limit`: `O(c log limit)` for `c` candidates, on every page. A query without terms that must occur scores every item 0, so it is answered as by
//!   name.
//! - By update time: with no query, category or repository to narrow it, the items in update-time
//!   order from the seek position on, until `limit` matches; otherwise as by relevance.
//!
//! # Cost of the counts
//! [`SearchIndex::facets`] visits every candidate and counts each match from a table of numbers
//! (its repository, its distinct categories, one bit for deprecated), not from its strings. The
//! query is confirmed on the index's own copy of the names (contiguous, in position order), and
//! only for a term the name does not decide (absent from it, or an exclusion) on the item's other
//! fields; not at all when the candidates are exactly its matches: every term that must occur is
//! three bytes long (one trigram) and no group has exclusions, or the query is empty. So `sql`
//! costs a few nanoseconds per match, `postgresql` a substring search in the copy of the name per
//! candidate. The table costs 8 bytes per item and 4 per distinct category of each item, the
//! names their bytes and 4 bytes per item.
//!
//! Positions are `u32`: an index holds up to 2^32 items.

use std::collections::HashMap;

use crate::facets::{FacetTable, Facets};
use crate::items::{self, Items, SummaryFields};
use crate::order::{self, KeyRef, OrderKey, Sort};
use crate::query::CompiledFilter;
use crate::types::{Filter, ListRequest, SeekKey, Summary};

/// Whether `item`'s `(name, identifier)` comes after `seek` (always, without one).
fn after_seek_item<'a>(item: impl SummaryFields<'a>, seek: Option<(&[u8], &[u8])>) -> bool {
    seek.is_none_or(|s| (item.name().as_bytes(), item.identifier().as_bytes()) > s)
}

/// Positions (indexes into the sorted slice) of the items that have some property, ascending.
type Postings = Vec<u32>;

/// A search index over one sorted slice of items. Rebuild it whenever the slice changes.
#[derive(Debug, Default, Clone)]
pub struct SearchIndex {
    trigrams: HashMap<[u8; 3], Postings>,
    categories: HashMap<String, Postings>,
    repositories: HashMap<String, Postings>,
    /// Every position, in [`Sort::Updated`] order.
    by_updated: Vec<u32>,
    /// The positions of the items whose name is not lower-case ASCII (see
    /// [`SearchIndex::relevance_by_name`]).
    irregular_names: Postings,
    /// Every item's repository, categories and deprecation as numbers, for the counts.
    facet_table: FacetTable,
    /// Every item's name as the query matches it (`query::folded`), one after the other, so that
    /// a count confirms a term found in the name without reading the item.
    names: String,
    /// Where each item's name ends in `names` (it starts where the previous one's ends).
    name_ends: Vec<u32>,
    len: usize,
}

/// The most items with a name that is not lower-case ASCII for which a relevance page of one term
/// is still answered from the names ([`SearchIndex::relevance_by_name`]); past it, by scoring every
/// candidate.
const MAX_IRREGULAR_NAMES: usize = 4096;

impl SearchIndex {
    /// Indexes `sorted`, which must be in [`Summary::key_cmp`] order (as `ListRequest::select` wants).
    pub fn build(sorted: &[Summary]) -> SearchIndex {
        SearchIndex::build_items(sorted)
    }

    /// [`SearchIndex::build`] over items kept in any form, sorted the same way.
    pub fn build_items<I: Items + ?Sized>(sorted: &I) -> SearchIndex {
        let mut index = SearchIndex {
            len: sorted.len(),
            ..SearchIndex::default()
        };
        let mut lowered = String::new();
        for position in 0..sorted.len() {
            let item = sorted.item(position);
            let position =
                u32::try_from(position).expect("a search index holds at most 2^32 items");
            for field in [item.name(), item.display_name(), item.short_description()] {
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
            for category in item.categories() {
                push_once(
                    index.categories.entry(category.to_string()).or_default(),
                    position,
                );
            }
            push_once(
                index
                    .repositories
                    .entry(item.repository().to_string())
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
        let mut by_updated: Vec<(KeyRef<'_>, u32)> = (0..sorted.len())
            .map(|position| {
                (
                    KeyRef::of(Sort::Updated, 0, sorted.item(position)),
                    position as u32,
                )
            })
            .collect();
        by_updated.sort_unstable();
        index.by_updated = by_updated.into_iter().map(|(_, p)| p).collect();
        index.irregular_names = (0..sorted.len())
            .filter(|&position| {
                !sorted
                    .item(position)
                    .name()
                    .bytes()
                    .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
            })
            .map(|position| position as u32)
            .collect();
        index.facet_table = FacetTable::build(sorted);
        index.name_ends.reserve_exact(sorted.len());
        for position in 0..sorted.len() {
            let item = sorted.item(position);
            index.names.push_str(&crate::query::folded(item.name()));
            index.name_ends.push(
                u32::try_from(index.names.len())
                    .expect("a search index holds at most 4 GiB of names"),
            );
        }
        index.names.shrink_to_fit();
        index
    }

    /// The name of the item at `position`, as the query matches it.
    fn name(&self, position: usize) -> &str {
        let start = position
            .checked_sub(1)
            .map_or(0, |p| self.name_ends[p] as usize);
        &self.names[start..self.name_ends[position] as usize]
    }

    /// A relevance page of a query with one term that must occur, when the items whose name is the
    /// term (score 64) or starts with it (32) fill it: found from the names, without scoring the
    /// other candidates. In the name-sorted slice, the lower-case ASCII names that start with the
    /// term form one range, whose first items are those equal to it; the few other names are
    /// scored one by one. When those do not fill the page, its rest is the best of the other
    /// candidates, scored (the range's positions are skipped without reading their items). `None`
    /// (the caller scores every candidate) when the page resumes below 32, or when more than
    /// [`MAX_IRREGULAR_NAMES`] names are not lower-case ASCII. Each item served is confirmed with
    /// its score and the filter.
    fn relevance_by_name<I: Items + ?Sized>(
        &self,
        plan: &Plan<'_>,
        filter: &CompiledFilter,
        after: Option<&OrderKey>,
        limit: usize,
        sorted: &I,
    ) -> Option<Vec<Summary>> {
        use crate::query::{SCORE_NAME_EQUALS, SCORE_NAME_STARTS};
        let term = filter.query().single_term()?;
        if self.irregular_names.len() > MAX_IRREGULAR_NAMES {
            return None;
        }
        let (after_score, seek) = match after {
            None => (u32::MAX, None),
            Some(OrderKey::Relevance {
                score,
                name,
                identifier,
            }) => (*score, Some((name.as_bytes(), identifier.as_bytes()))),
            Some(_) => return None,
        };
        if after_score < SCORE_NAME_STARTS {
            return None;
        }
        let t = term.as_bytes();
        let len = sorted.len();
        let lo = items::partition_point(sorted, 0..len, |i| i.name().as_bytes() < t);
        let exact = items::partition_point(sorted, lo..len, |i| i.name().as_bytes() == t);
        let hi = items::partition_point(sorted, exact..len, |i| i.name().as_bytes().starts_with(t));
        // The other names that score 64 or 32, with their scores, ascending.
        let irregular: Vec<(usize, u32)> = self
            .irregular_names
            .iter()
            .map(|&p| p as usize)
            .filter(|p| !(lo..hi).contains(p))
            .filter_map(|p| Some((p, filter.score_item(sorted.item(p))?)))
            .filter(|&(_, score)| score >= SCORE_NAME_STARTS)
            .collect();
        let mut out = Vec::with_capacity(limit);
        for (tier, range) in [
            (SCORE_NAME_EQUALS, lo..exact),
            (SCORE_NAME_STARTS, exact..hi),
        ] {
            if tier > after_score {
                continue;
            }
            let seek = seek.filter(|_| tier == after_score);
            let after_seek = |p: usize| after_seek_item(sorted.item(p), seek);
            let start =
                items::partition_point(sorted, range.clone(), |i| !after_seek_item(i, seek));
            let mut regular = (start..range.end).peekable();
            let mut others = irregular
                .iter()
                .filter(|&&(p, score)| score == tier && after_seek(p))
                .map(|&(p, _)| p)
                .peekable();
            loop {
                let p = match (regular.peek(), others.peek()) {
                    (Some(&a), Some(&b)) if b < a => others.next(),
                    (Some(_), _) => regular.next(),
                    (None, Some(_)) => others.next(),
                    (None, None) => break,
                };
                let item = sorted.item(p.expect("a position"));
                if filter.score_item(item) != Some(tier) {
                    continue;
                }
                out.push(item.to_summary());
                if out.len() == limit {
                    return Some(out);
                }
            }
        }
        // The items of lower scores follow, all after `after` (which is at 32 or above): the
        // candidates outside the range and the irregular names already served, scored.
        let mut rest = order::First::new(Sort::Relevance, None, limit - out.len());
        self.walk(plan, 0, |p| {
            let p = p as usize;
            if !(lo..hi).contains(&p) && irregular.binary_search_by_key(&p, |&(q, _)| q).is_err() {
                rest.offer(filter, sorted.item(p));
            }
            true
        });
        out.extend(rest.into_items());
        Some(out)
    }

    /// How many items the index was built over.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Answers `request` from `sorted`, the slice this index was built over: the same items as
    /// [`ListRequest::select`], in the requested order, found through the index (see the module
    /// documentation for the cost).
    pub fn select(&self, request: &ListRequest, sorted: &[Summary]) -> Vec<Summary> {
        self.select_items(request, sorted)
    }

    /// [`SearchIndex::select`] over items kept in any form (those this index was built over);
    /// the items returned are made with [`SummaryFields::to_summary`].
    pub fn select_items<'s, I: Items + ?Sized>(
        &self,
        request: &ListRequest,
        sorted: &'s I,
    ) -> Vec<Summary> {
        debug_assert_eq!(sorted.len(), self.len, "the index belongs to another slice");
        if sorted.len() != self.len {
            return request.select_items(sorted);
        }
        let Ok(filter) = request.filter.compile() else {
            return Vec::new();
        };
        let limit = request.limit as usize;
        if limit == 0 {
            return Vec::new();
        }
        let sort = request.sort();
        let after = request.after_key();
        let mut out = Vec::new();
        let mut take = |item: I::Item<'s>| {
            if filter.matches_item(item) {
                out.push(item.to_summary());
            }
            out.len() < limit
        };
        if let Some(seek) = order::by_name(sort, &filter, after.as_ref()) {
            let start = seek.map_or(0, |key| seek_position(sorted, &key));
            if filter.is_empty() {
                return (start..(start + limit).min(sorted.len()))
                    .map(|p| sorted.item(p).to_summary())
                    .collect();
            }
            self.walk(&self.plan(&filter), start, |p| {
                take(sorted.item(p as usize))
            });
            return out;
        }
        let plan = self.plan(&filter);
        if sort == Sort::Updated && matches!(plan, Plan::Scan) {
            let start = after.as_ref().map_or(0, |after| {
                let after = after.as_ref();
                self.by_updated.partition_point(|&p| {
                    KeyRef::of(Sort::Updated, 0, sorted.item(p as usize)) <= after
                })
            });
            for &p in &self.by_updated[start..] {
                if !take(sorted.item(p as usize)) {
                    break;
                }
            }
            return out;
        }
        if sort == Sort::Relevance {
            if let Some(page) =
                self.relevance_by_name(&plan, &filter, after.as_ref(), limit, sorted)
            {
                return page;
            }
        }
        let mut first = order::First::new(sort, after.as_ref(), limit);
        self.walk(&plan, 0, |p| {
            first.offer(&filter, sorted.item(p as usize));
            true
        });
        first.into_items()
    }

    /// Counts the items of `sorted` (the slice this index was built over) that match `filter`,
    /// visiting only the candidates. A query that does not parse matches nothing.
    ///
    /// Each candidate is counted from the index's numbers for its repository, categories and
    /// deprecation, not from its strings. Its query is confirmed on the index's copy of its name
    /// and, for the terms the name does not decide, on the item's other fields; not at all when the
    /// candidates are exactly the query's matches: when every term that must occur is exactly
    /// three bytes (its one trigram) and no group has exclusions
    /// ([`Query::is_decided_by_trigrams`](crate::query::Query)), or the query is empty.
    pub fn facets(&self, filter: &Filter, sorted: &[Summary]) -> Facets {
        self.facets_items(filter, sorted)
    }

    /// [`SearchIndex::facets`] over items kept in any form (those this index was built over).
    pub fn facets_items<I: Items + ?Sized>(&self, filter: &Filter, sorted: &I) -> Facets {
        debug_assert_eq!(sorted.len(), self.len, "the index belongs to another slice");
        let Ok(filter) = filter.compile() else {
            return Facets::default();
        };
        if sorted.len() != self.len {
            return Facets::count_items(&filter, sorted);
        }
        let plan = self.plan(&filter);
        let query = filter.query();
        let decided = query.is_empty() || query.is_decided_by_trigrams();
        let table = &self.facet_table;
        let admission = table.admission(&filter);
        let mut counter = table.counter();
        self.walk(&plan, 0, |p| {
            let p = p as usize;
            if table.admits(&admission, p)
                && (decided || query.matches_with_name(self.name(p), sorted.item(p)))
            {
                counter.add(p);
            }
            true
        });
        counter.into_facets()
    }

    /// Calls `visit` with the candidate positions of `plan` at or after `start`, ascending, each
    /// once, until it returns `false`.
    fn walk(&self, plan: &Plan<'_>, start: usize, mut visit: impl FnMut(u32) -> bool) {
        match plan {
            Plan::Nothing => {}
            Plan::Scan => {
                for position in start..self.len {
                    if !visit(position as u32) {
                        break;
                    }
                }
            }
            Plan::Walks(walks) => {
                let mut walks: Vec<Walk<'_>> = walks
                    .iter()
                    .map(|w| Walk {
                        driver: tail(w.driver, start),
                        others: w.others.clone(),
                    })
                    .collect();
                if let [walk] = walks.as_mut_slice() {
                    while let Some(position) = walk.head() {
                        walk.driver = &walk.driver[1..];
                        if !visit(position) {
                            break;
                        }
                    }
                    return;
                }
                // The smallest head among the walks, each position once (an item can be a
                // candidate of several groups, or carry several of the wanted categories).
                while let Some(position) = walks.iter_mut().filter_map(Walk::head).min() {
                    for walk in walks.iter_mut() {
                        if walk.driver.first() == Some(&position) {
                            walk.driver = &walk.driver[1..];
                        }
                    }
                    if !visit(position) {
                        break;
                    }
                }
            }
        }
    }

    /// Which positions to visit for `filter`.
    fn plan<'a>(&'a self, filter: &CompiledFilter) -> Plan<'a> {
        let query = filter.query();
        if !query.is_empty() {
            if let Some(walks) = self.query_walks(query.groups_include()) {
                return if walks.is_empty() {
                    Plan::Nothing
                } else {
                    Plan::Walks(walks)
                };
            }
        }
        let values = |map: &'a HashMap<String, Postings>, wanted: &[String]| {
            Plan::Walks(
                wanted
                    .iter()
                    .filter_map(|v| map.get(v.as_str()))
                    .map(|list| Walk {
                        driver: list,
                        others: Vec::new(),
                    })
                    .collect(),
            )
        };
        if !filter.categories().is_empty() {
            return values(&self.categories, filter.categories());
        }
        if !filter.repositories().is_empty() {
            return values(&self.repositories, filter.repositories());
        }
        Plan::Scan
    }

    /// One walk per group of a query that can match, from the trigrams of the group's terms that
    /// must occur and are at least three bytes long; `None` when some group has no such term.
    fn query_walks<'a, 'q>(
        &'a self,
        groups: impl Iterator<Item = &'q [String]>,
    ) -> Option<Vec<Walk<'a>>> {
        let mut walks = Vec::new();
        for terms in groups {
            let mut lists: Vec<&'a [u32]> = Vec::new();
            let mut impossible = false;
            let mut indexable = false;
            for term in terms.iter().filter(|t| t.len() >= 3) {
                indexable = true;
                for gram in term.as_bytes().windows(3) {
                    match self.trigrams.get(&[gram[0], gram[1], gram[2]]) {
                        Some(list) => lists.push(list),
                        None => impossible = true,
                    }
                }
            }
            if !indexable {
                return None;
            }
            if impossible {
                continue;
            }
            lists.sort_by_key(|l| l.len());
            lists.dedup_by(|a, b| std::ptr::eq(*a, *b));
            let (driver, others) = lists
                .split_first()
                .expect("a term of 3 bytes has a trigram");
            walks.push(Walk {
                driver,
                others: others.to_vec(),
            });
        }
        Some(walks)
    }
}

/// The position of the first item after `key` in `sorted`.
fn seek_position<I: Items + ?Sized>(sorted: &I, key: &SeekKey) -> usize {
    items::partition_point(sorted, 0..sorted.len(), |item| !items::is_after(item, key))
}

/// Which positions may match.
enum Plan<'a> {
    /// No item can match.
    Nothing,
    /// Items that one of these walks yields may match.
    Walks(Vec<Walk<'a>>),
    /// Every item may match.
    Scan,
}

/// The positions of `driver` that are also in every one of `others`.
struct Walk<'a> {
    driver: &'a [u32],
    others: Vec<&'a [u32]>,
}

impl Walk<'_> {
    /// Drops the positions at the start of `driver` that some other list lacks; the first one
    /// left. The other lists are consumed as the driver advances (positions only grow), each
    /// skipped forward by galloping search: a leapfrog intersection.
    fn head(&mut self) -> Option<u32> {
        'driver: while let Some(&position) = self.driver.first() {
            for list in self.others.iter_mut() {
                *list = gallop(list, position);
                match list.first() {
                    Some(&p) if p == position => {}
                    Some(&p) => {
                        self.driver = gallop(self.driver, p);
                        continue 'driver;
                    }
                    None => {
                        self.driver = &[];
                        return None;
                    }
                }
            }
            return Some(position);
        }
        None
    }
}

/// The part of `list` (ascending) from the first position at or after `position`, found by
/// galloping from the start: `O(log d)` for a distance `d`, so a walk through a list in order costs
/// about its length.
fn gallop(list: &[u32], position: u32) -> &[u32] {
    if list.first().is_none_or(|&p| p >= position) {
        return list;
    }
    // list[low] < position; find a high end with list[high] >= position (or the end).
    let mut low = 0;
    let mut step = 1;
    while low + step < list.len() && list[low + step] < position {
        low += step;
        step *= 2;
    }
    let high = (low + step).min(list.len());
    let at = low + 1 + list[low + 1..high].partition_point(|&p| p < position);
    &list[at..]
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

    use abi_stable::std_types::ROption;

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
        let filter = Filter {
            query: RString::from("qqq"),
            ..Filter::default()
        }
        .compile()
        .unwrap();
        assert!(matches!(index.plan(&filter), Plan::Nothing));
    }

    /// Words the oracle test builds items and queries from, so that queries match.
    const WORDS: &[&str] = &[
        "nginx", "ingress", "redis", "cache", "proxy", "web", "db", "postgres", "operator", "helm",
        "chart", "Ñandú", "STRAẞE", "ab", "x", "or",
    ];

    const DATES: &[&str] = &[
        "2023-07-10T10:12:48Z",
        "2023-07-10T10:12:48Z",
        "2024-02-29T23:59:59Z",
        "2019-01-01T00:00:00Z",
        "2023-07-10T10:12:49Z",
        "2023-07-10",
    ];

    fn words(rng: &mut Rng, max: usize, sep: &str) -> String {
        (0..rng.below(max + 1))
            .map(|_| WORDS[rng.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(sep)
    }

    fn worded_items(rng: &mut Rng, n: usize) -> Vec<Summary> {
        let mut items: Vec<Summary> = (0..n)
            .map(|i| {
                let mut name = words(rng, 2, "-");
                if name.is_empty() || rng.below(3) == 0 {
                    name.push_str(&rng.word_upto(3, 1));
                }
                let mut extensions = Vec::new();
                if rng.below(4) != 0 {
                    extensions.push(crate::Extension::new(
                        crate::keys::SUMMARY_UPDATED,
                        DATES[rng.below(DATES.len())],
                    ));
                }
                Summary {
                    identifier: RString::from(format!("id-{}", rng.below(n * 4) + i * n * 4)),
                    name: RString::from(name),
                    display_name: RString::from(words(rng, 2, " ")),
                    short_description: RString::from(words(rng, 6, " ")),
                    categories: (0..rng.below(3))
                        .map(|_| RString::from(["db", "web", "ops", ""][rng.below(4)]))
                        .collect(),
                    repository: RString::from(["r1", "r2", ""][rng.below(3)]),
                    deprecated: rng.below(6) == 0,
                    extensions: extensions.into(),
                    ..Summary::default()
                }
            })
            .collect();
        items.sort_by(Summary::key_cmp);
        items
    }

    /// A query from the words: up to three groups of up to three terms, some of them phrases,
    /// exclusions, short words or in another case.
    fn worded_query(rng: &mut Rng) -> String {
        if rng.below(8) == 0 {
            return String::new();
        }
        let groups: Vec<String> = (0..1 + rng.below(3) * rng.below(2))
            .map(|_| {
                (0..1 + rng.below(3))
                    .map(|_| {
                        let word = WORDS[rng.below(WORDS.len())];
                        let word = match rng.below(4) {
                            0 => word.to_uppercase(),
                            1 => word.chars().take(1 + rng.below(3)).collect(),
                            _ => word.to_owned(),
                        };
                        let term = if rng.below(5) == 0 {
                            format!("\"{word} {}\"", WORDS[rng.below(WORDS.len())])
                        } else if word.eq_ignore_ascii_case("or") {
                            format!("\"{word}\"")
                        } else {
                            word
                        };
                        if rng.below(5) == 0 {
                            format!("-{term}")
                        } else {
                            term
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        groups.join(if rng.below(2) == 0 { " or " } else { " OR " })
    }

    fn random_filter(rng: &mut Rng) -> Filter {
        let categories: &[&str] =
            [&[][..], &[][..], &["db"], &["web", "ops"], &["none"]][rng.below(5)];
        let repositories: &[&str] = [&[][..], &[][..], &["r1"], &["r2", ""]][rng.below(4)];
        Filter {
            query: RString::from(worded_query(rng)),
            categories: strings(categories),
            repositories: strings(repositories),
            include_deprecated: rng.below(2) == 0,
        }
    }

    /// A one-term relevance page is answered from the names when the items named for the term or
    /// starting with it fill it, names that are not lower-case ASCII included (they sort elsewhere
    /// in the slice); every page size, resumed at every item, equals the scan's answer.
    #[test]
    fn one_term_relevance_pages_from_the_names_equal_the_scan() {
        let names = [
            "REDIS-ha", "Redis", "my-redis", "redis", "redis", "redis-a", "redis-b", "redis-c",
            "redisx", "xredis", "Ωredis", "zzz",
        ];
        let mut sorted: Vec<Summary> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Summary {
                identifier: format!("id{i}").into(),
                name: (*name).into(),
                short_description: if *name == "zzz" { "a redis tool" } else { "" }.into(),
                ..Summary::default()
            })
            .collect();
        sorted.sort_by(|a, b| a.key_cmp(b));
        let index = SearchIndex::build(&sorted);
        for query in ["redis", "redis -x", "REDIS"] {
            let filter = Filter {
                query: query.to_lowercase().into(),
                ..Filter::default()
            };
            for limit in 1..=13u32 {
                let mut request = ListRequest {
                    limit,
                    filter: filter.clone(),
                    ..ListRequest::default()
                };
                request.set_order(Sort::Relevance, None);
                let mut pages = 0;
                loop {
                    let got = index.select(&request, &sorted);
                    assert_eq!(
                        ids(&got),
                        ids(&request.select(&sorted)),
                        "{query:?} limit {limit} after {:?}",
                        request.after_key()
                    );
                    pages += 1;
                    let Some(last) = got.last() else { break };
                    let key =
                        OrderKey::of(Sort::Relevance, filter.compile().unwrap().query(), last);
                    request.set_order(Sort::Relevance, Some(&key));
                    assert!(pages < 20);
                }
            }
        }
    }

    /// Every sort, paged to the end with random limits, answers exactly the brute-force listing:
    /// every match, ordered by its [`OrderKey`], cut into pages at the seek keys.
    #[test]
    fn every_sort_pages_through_exactly_the_oracle() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut pages = 0;
        let mut nonempty = 0;
        for round in 0..12 {
            let n = 50 + rng.below(300);
            let sorted = worded_items(&mut rng, n);
            let index = SearchIndex::build(&sorted);
            for _ in 0..25 {
                let filter = random_filter(&mut rng);
                let compiled = filter.compile().expect("generated queries parse");
                for sort in [Sort::Name, Sort::Relevance, Sort::Updated] {
                    let mut oracle: Vec<(OrderKey, &Summary)> = sorted
                        .iter()
                        .filter(|item| compiled.matches(item))
                        .map(|item| (OrderKey::of(sort, compiled.query(), item), item))
                        .collect();
                    oracle.sort_by(|a, b| a.0.cmp(&b.0));
                    let want: Vec<Summary> = oracle.iter().map(|(_, i)| (*i).clone()).collect();
                    nonempty += usize::from(!want.is_empty());
                    let mut got: Vec<Summary> = Vec::new();
                    let mut request = ListRequest {
                        filter: filter.clone(),
                        ..ListRequest::default()
                    };
                    request.set_order(sort, None);
                    loop {
                        let spread = if rng.below(2) == 0 { 4 } else { 60 };
                        request.limit = 1 + rng.below(spread) as u32;
                        let page = index.select(&request, &sorted);
                        pages += 1;
                        assert_eq!(
                            page,
                            request.select(&sorted),
                            "round {round}, {sort}: {request:?}"
                        );
                        crate::contract::check_list(&request, &page)
                            .unwrap_or_else(|v| panic!("round {round}, {sort}: {v}: {request:?}"));
                        let full = page.len() == request.limit as usize;
                        got.extend(page);
                        if !full {
                            break;
                        }
                        let last = got.last().expect("a full page has items");
                        let key = OrderKey::of(sort, compiled.query(), last);
                        request.set_order(sort, Some(&key));
                        assert_eq!(request.after_key(), Some(key));
                    }
                    assert_eq!(ids(&got), ids(&want), "round {round}, {sort}, {:?}", filter);
                }
            }
        }
        assert!(
            pages > 1000 && nonempty > 300,
            "{pages} pages, {nonempty} non-empty"
        );
    }

    fn ids(items: &[Summary]) -> Vec<&str> {
        items.iter().map(|i| i.identifier.as_str()).collect()
    }

    #[test]
    fn facets_count_exactly_the_matches() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut decided = 0;
        for _ in 0..6 {
            let n = 1 + rng.below(400);
            let sorted = worded_items(&mut rng, n);
            let index = SearchIndex::build(&sorted);
            for _ in 0..40 {
                let filter = random_filter(&mut rng);
                let mut want = Facets::default();
                for item in sorted.iter().filter(|i| filter.matches(i)) {
                    want.total += 1;
                    want.deprecated += u64::from(item.deprecated);
                    if !item.repository.is_empty() {
                        *want
                            .repositories
                            .entry(item.repository.to_string())
                            .or_default() += 1;
                    }
                    let mut seen: Vec<&str> = item
                        .categories
                        .iter()
                        .map(|c| c.as_str())
                        .filter(|c| !c.is_empty())
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    for c in seen {
                        *want.categories.entry(c.to_owned()).or_default() += 1;
                    }
                }
                assert_eq!(index.facets(&filter, &sorted), want, "{filter:?}");
                if !filter.include_deprecated {
                    assert_eq!(want.deprecated, 0);
                }
                let query = filter.compile().unwrap();
                decided += usize::from(query.query().is_decided_by_trigrams());
            }
        }
        // The queries the trigrams decide (counted without reading the items' text) were among
        // those compared.
        assert!(decided >= 10, "{decided} queries decided by trigrams");
    }

    /// Three-byte terms decide a count from the trigrams alone, non-ASCII ones and terms in
    /// another case included; a longer term, an exclusion or a short term is confirmed on the text.
    #[test]
    fn queries_of_three_byte_terms_are_counted_from_the_trigrams() {
        let item = |id: &str, name: &str, description: &str| Summary {
            identifier: id.into(),
            name: name.into(),
            short_description: description.into(),
            repository: "r".into(),
            ..Summary::default()
        };
        let mut sorted = vec![
            item("1", "Ñandú", ""),
            item("2", "mysql", "a SQL server"),
            item("3", "sq-l", "s q l"),
            item("4", "postgresql", ""),
            item("5", "nginx", "NGINX proxy for ÑANDÚ"),
            item("6", "ysq-sql", ""),
        ];
        sorted.sort_by(Summary::key_cmp);
        let index = SearchIndex::build(&sorted);
        for (query, decided, total) in [
            ("sql", true, 3),
            ("SQL", true, 3),
            ("ÑA", true, 2),
            ("sql ysq", true, 2),
            ("sql or ngi", true, 4),
            ("sql -my", false, 2),
            ("sq", false, 4),
            // Both its trigrams are in "ysq-sql", the term is not.
            ("ysql", false, 1),
        ] {
            let filter = Filter {
                query: query.into(),
                ..Filter::default()
            };
            let compiled = filter.compile().unwrap();
            assert_eq!(
                compiled.query().is_decided_by_trigrams(),
                decided,
                "{query}"
            );
            let facets = index.facets(&filter, &sorted);
            assert_eq!(facets, Facets::count(&compiled, &sorted), "{query}");
            assert_eq!(facets.total, total, "{query}");
        }
    }

    /// Past [`crate::facets::MAX_FACET_VALUES`] distinct values, the index keeps the same values as
    /// counting item by item: the first met in the slice's order.
    #[test]
    fn counts_past_the_bound_keep_the_values_met_first() {
        let n = crate::facets::MAX_FACET_VALUES + 50;
        let mut sorted: Vec<Summary> = (0..n)
            .map(|i| Summary {
                identifier: format!("{i:06}").into(),
                name: format!("app{:06}", (i * 7919) % n).into(),
                repository: format!("repo{}", (i * 31) % n).into(),
                categories: vec![
                    RString::from(format!("c{}", (i * 17) % n)),
                    RString::from(""),
                    RString::from(format!("c{}", (i * 17) % n)),
                ]
                .into(),
                deprecated: i % 3 == 0,
                ..Summary::default()
            })
            .collect();
        sorted.sort_by(Summary::key_cmp);
        let index = SearchIndex::build(&sorted);
        for query in ["", "app", "app00"] {
            for include_deprecated in [false, true] {
                let filter = Filter {
                    query: query.into(),
                    include_deprecated,
                    ..Filter::default()
                };
                let want = Facets::count(&filter.compile().unwrap(), &sorted);
                assert_eq!(index.facets(&filter, &sorted), want, "{query:?}");
            }
        }
        let all = index.facets(
            &Filter {
                include_deprecated: true,
                ..Filter::default()
            },
            &sorted,
        );
        assert_eq!(all.total, n as u64);
        assert_eq!(all.repositories.len(), crate::facets::MAX_FACET_VALUES);
        assert_eq!(all.categories.len(), crate::facets::MAX_FACET_VALUES);
    }

    #[test]
    fn galloping_finds_the_first_position_at_or_after() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let mut list: Vec<u32> = (0..rng.below(300))
                .map(|_| rng.below(1000) as u32)
                .collect();
            list.sort_unstable();
            list.dedup();
            for position in [0, 1, 999, 1000, rng.below(1001) as u32] {
                let want = &list[list.partition_point(|&p| p < position)..];
                assert_eq!(gallop(&list, position), want, "{position} in {list:?}");
            }
        }
    }

    #[test]
    fn multi_group_queries_walk_only_candidates() {
        let sorted = worded_items(&mut Rng(11), 200);
        let index = SearchIndex::build(&sorted);
        let plan = |query: &str| {
            let filter = Filter {
                query: RString::from(query),
                ..Filter::default()
            }
            .compile()
            .unwrap();
            match index.plan(&filter) {
                Plan::Nothing => "nothing".to_owned(),
                Plan::Scan => "scan".to_owned(),
                Plan::Walks(walks) => format!("{} walks", walks.len()),
            }
        };
        assert_eq!(plan("nginx"), "1 walks");
        assert_eq!(plan("nginx or redis -cache"), "2 walks");
        assert_eq!(plan("nginx or qqq"), "1 walks");
        assert_eq!(plan("qqq or zzzz"), "nothing");
        assert_eq!(plan("nginx or ab"), "scan");
        assert_eq!(plan("-nginx"), "scan");
        assert_eq!(plan("ab x"), "scan");
        assert_eq!(plan("ab nginx"), "1 walks");
        assert_eq!(plan(""), "scan");
    }

    /// The same listing kept as [`CompactSummaries`] answers every request, count and page
    /// exactly as the slice does: through its own index, through the slice's, and without one.
    #[test]
    fn a_compact_listing_answers_as_the_slice() {
        use crate::compact::CompactSummaries;
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        for round in 0..10 {
            let n = rng.below(300);
            let sorted = worded_items(&mut rng, n);
            let compact = CompactSummaries::new(sorted.clone()).expect("a small listing fits");
            let index = SearchIndex::build(&sorted);
            let compact_index = SearchIndex::build_items(&compact);
            for _ in 0..40 {
                let filter = random_filter(&mut rng);
                let want = index.facets(&filter, &sorted);
                assert_eq!(
                    compact_index.facets_items(&filter, &compact),
                    want,
                    "{filter:?}"
                );
                assert_eq!(index.facets_items(&filter, &compact), want, "{filter:?}");
                let compiled = filter.compile().unwrap();
                assert_eq!(Facets::count_items(&compiled, &compact), want, "{filter:?}");
                for sort in [Sort::Name, Sort::Relevance, Sort::Updated] {
                    let mut request = ListRequest {
                        filter: filter.clone(),
                        ..ListRequest::default()
                    };
                    let after = (!sorted.is_empty() && rng.below(3) != 0).then(|| {
                        OrderKey::of(sort, compiled.query(), &sorted[rng.below(sorted.len())])
                    });
                    request.set_order(sort, after.as_ref());
                    request.limit = 1 + rng.below(40) as u32;
                    let want = request.select(&sorted);
                    assert_eq!(
                        compact_index.select_items(&request, &compact),
                        want,
                        "round {round}, {sort}: {request:?}"
                    );
                    assert_eq!(
                        request.select_items(&compact),
                        want,
                        "round {round}, {sort}: {request:?}"
                    );
                    assert_eq!(index.select(&request, &sorted), want);
                }
            }
        }
    }
}
