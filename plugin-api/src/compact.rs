//! A package's detail kept compact until it is asked for (part of the kit: no host needs it).
//!
//! A source that keeps every package's [`Detail`] as the interface's types pays for its fixed
//! records (a `Version` is 128 bytes, a `Maintainer` 96, each `RString` and `RVec` 32) and for one
//! allocation per string, often more than the text itself. [`CompactDetail`] keeps everything of a
//! detail but its summary in two allocations (every string one after the other, and where each
//! ends) and a few counts; [`CompactDetail::detail`] makes the `Detail` again, equal to the one it
//! was made from, when a call asks for it. The summary stays apart, with the source's listing.
//!
//! [`CompactSummaries`] does the same for a source's listing: every summary's strings in one text,
//! a fixed record of 40 bytes per item, and a summary made only for the items a call returns (it
//! implements [`Items`], which the kit's search, order and counts read).
//!
//! [`give_back_freed_memory`] is for after a source has read its data: what the parse freed goes
//! back to the system instead of staying resident.

use std::collections::HashMap;

use abi_stable::std_types::{RString, RVec};

use crate::items::{Items, SummaryFields};
use crate::types::{Detail, Extension, Maintainer, Summary, Version};

/// Everything of one [`Detail`] but its summary, in two allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactDetail {
    /// Every string, one after the other, in this order: home URL, readme, each version's four
    /// (version, app version, created, digest), each source URL, each maintainer's three (name,
    /// email, URL), each keyword, each extension's two (key, value).
    text: Box<str>,
    /// Where each string ends in `text`.
    ends: Box<[u32]>,
    /// How many versions, source URLs, maintainers, keywords and extensions.
    counts: [u32; 5],
}

impl CompactDetail {
    /// `detail` without its summary; `None` when its strings come to 4 GiB or more (offsets are 32
    /// bits: a detail within the host's contract has at most 10,000 versions of strings up to
    /// 64 KiB, 2.6 GB).
    pub fn new(detail: &Detail) -> Option<CompactDetail> {
        let strings = || detail_strings(detail);
        let (mut count, mut bytes) = (0usize, 0usize);
        for s in strings() {
            count += 1;
            bytes += s.len();
        }
        if u32::try_from(bytes).is_err() {
            return None;
        }
        let counts = [
            detail.versions.len(),
            detail.source_urls.len(),
            detail.maintainers.len(),
            detail.keywords.len(),
            detail.extensions.len(),
        ]
        .map(|n| n as u32);
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(count);
        for s in strings() {
            text.push_str(s);
            // Within the bound checked above.
            ends.push(text.len() as u32);
        }
        Some(CompactDetail {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            counts,
        })
    }

    /// The detail again, with `summary` as its summary.
    pub fn detail(&self, summary: Summary) -> Detail {
        make_detail(&self.text, &self.ends, self.counts, summary)
    }

    /// The bytes this keeps on the heap (its strings and their ends), for memory accounts.
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + 4 * self.ends.len()
    }
}

/// A listing's summaries in a few allocations: every string one after the other in one text, a
/// record of 40 bytes per item saying where its strings end, the distinct categories once.
///
/// Built from the summaries ([`CompactSummaries::new`]), it keeps their order and reads as
/// [`Items`]: [`crate::SearchIndex::build_items`], [`crate::SearchIndex::select_items`],
/// [`crate::SearchIndex::facets_items`] and [`crate::ListRequest::select_items`] take it where
/// they take a slice of summaries, and make a [`Summary`] only for the items they return. Against
/// `Vec<Summary>` (328 bytes per item and one allocation per non-empty string), an item costs its
/// text and 40 bytes, 4 more per category and 8 more per extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactSummaries {
    /// Per item, in order: identifier, name, display name, latest version, latest app version,
    /// short description, icon URL, repository, then each extension's key and value.
    text: Box<str>,
    records: Box<[Record]>,
    /// Where each extension's key and value end in `text`, two per extension, item after item.
    extension_ends: Box<[u32]>,
    /// Every item's categories, in order, as numbers into `category_ends`.
    item_categories: Box<[u32]>,
    /// The distinct categories, one after the other.
    category_text: Box<str>,
    /// Where each distinct category ends in `category_text`.
    category_ends: Box<[u32]>,
}

/// One item of a [`CompactSummaries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Record {
    /// Where its eight strings end in the text (the first starts where the previous item's text
    /// ends).
    ends: [u32; 8],
    /// The end of its extensions' ends in `extension_ends` (they start where the previous
    /// item's end).
    extensions_end: u32,
    /// The end of its categories in `item_categories`, with [`DEPRECATED`] set when it is
    /// deprecated.
    categories_end: u32,
}

/// The bit of [`Record::categories_end`] that says the item is deprecated.
const DEPRECATED: u32 = 1 << 31;

/// The positions of the strings of a [`Record`].
const IDENTIFIER: usize = 0;
const NAME: usize = 1;
const DISPLAY_NAME: usize = 2;
const LATEST_VERSION: usize = 3;
const LATEST_APP_VERSION: usize = 4;
const SHORT_DESCRIPTION: usize = 5;
const ICON_URL: usize = 6;
const REPOSITORY: usize = 7;

/// The eight strings of a summary, in the order of a [`Record`].
fn record_strings(s: &Summary) -> [&str; 8] {
    [
        &s.identifier,
        &s.name,
        &s.display_name,
        &s.latest_version,
        &s.latest_app_version,
        &s.short_description,
        &s.icon_url,
        &s.repository,
    ]
}

impl CompactSummaries {
    /// The summaries, in their order, each string copied once; given back unchanged when they
    /// do not fit (their strings come to 4 GiB or more, or they have 2^31 categories or more).
    ///
    /// The summaries are dropped one by one as they are copied, and every part is allocated at
    /// its final size, so the peak is the summaries and the store, never two stores.
    pub fn new(summaries: Vec<Summary>) -> Result<CompactSummaries, Vec<Summary>> {
        let (mut bytes, mut extensions, mut categories) = (0usize, 0usize, 0usize);
        for s in &summaries {
            bytes += record_strings(s).iter().map(|t| t.len()).sum::<usize>();
            bytes += s
                .extensions
                .iter()
                .map(|e| e.key.len() + e.value.len())
                .sum::<usize>();
            extensions += 2 * s.extensions.len();
            categories += s.categories.len();
        }
        if u32::try_from(bytes).is_err()
            || u32::try_from(extensions).is_err()
            || categories >= DEPRECATED as usize
        {
            return Err(summaries);
        }
        let mut text = String::with_capacity(bytes);
        let mut records = Vec::with_capacity(summaries.len());
        let mut extension_ends = Vec::with_capacity(extensions);
        let mut item_categories = Vec::with_capacity(categories);
        let mut numbers: HashMap<RString, u32> = HashMap::new();
        let mut category_text = String::new();
        let mut category_ends = Vec::new();
        // Within the bounds checked above: every offset below 2^32, every count below 2^31.
        let end = |text: &String| text.len() as u32;
        for s in summaries {
            let mut ends = [0u32; 8];
            for (at, t) in record_strings(&s).into_iter().enumerate() {
                text.push_str(t);
                ends[at] = end(&text);
            }
            for e in s.extensions.iter() {
                text.push_str(&e.key);
                extension_ends.push(end(&text));
                text.push_str(&e.value);
                extension_ends.push(end(&text));
            }
            for c in s.categories.iter() {
                let n = match numbers.get(c) {
                    Some(&n) => n,
                    None => {
                        category_text.push_str(c);
                        category_ends.push(
                            u32::try_from(category_text.len())
                                .expect("distinct categories of under 4 GiB"),
                        );
                        let n = (category_ends.len() - 1) as u32;
                        numbers.insert(c.clone(), n);
                        n
                    }
                };
                item_categories.push(n);
            }
            records.push(Record {
                ends,
                extensions_end: extension_ends.len() as u32,
                categories_end: item_categories.len() as u32
                    | if s.deprecated { DEPRECATED } else { 0 },
            });
        }
        debug_assert_eq!(text.len(), bytes);
        Ok(CompactSummaries {
            text: text.into_boxed_str(),
            records: records.into_boxed_slice(),
            extension_ends: extension_ends.into_boxed_slice(),
            item_categories: item_categories.into_boxed_slice(),
            category_text: category_text.into_boxed_str(),
            category_ends: category_ends.into_boxed_slice(),
        })
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The item at `position` (panics past the end).
    #[inline]
    pub fn get(&self, position: usize) -> CompactSummary<'_> {
        let record = &self.records[position];
        let start = match position.checked_sub(1) {
            None => 0,
            Some(p) => self.text_end(p),
        };
        CompactSummary {
            store: self,
            record,
            start,
            position: position as u32,
        }
    }

    /// The items, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = CompactSummary<'_>> + '_ {
        (0..self.len()).map(|p| self.get(p))
    }

    /// The bytes this keeps on the heap (its text, records, ends and categories), for memory
    /// accounts.
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
            + std::mem::size_of_val(&*self.records)
            + 4 * (self.extension_ends.len()
                + self.item_categories.len()
                + self.category_ends.len())
            + self.category_text.len()
    }

    /// Where the text of the item at `position` ends (its last string's end).
    #[inline]
    fn text_end(&self, position: usize) -> u32 {
        let record = &self.records[position];
        let first = match position.checked_sub(1) {
            None => 0,
            Some(p) => self.records[p].extensions_end,
        };
        if record.extensions_end > first {
            self.extension_ends[record.extensions_end as usize - 1]
        } else {
            record.ends[REPOSITORY]
        }
    }

    #[inline]
    fn category(&self, number: u32) -> &str {
        let n = number as usize;
        let start = match n.checked_sub(1) {
            None => 0,
            Some(p) => self.category_ends[p] as usize,
        };
        &self.category_text[start..self.category_ends[n] as usize]
    }
}

impl Items for CompactSummaries {
    type Item<'a> = CompactSummary<'a>;

    #[inline]
    fn len(&self) -> usize {
        self.records.len()
    }

    #[inline]
    fn item(&self, position: usize) -> CompactSummary<'_> {
        self.get(position)
    }
}

/// One item of a [`CompactSummaries`]: its fields, borrowed from the store.
#[derive(Debug, Clone, Copy)]
pub struct CompactSummary<'a> {
    store: &'a CompactSummaries,
    record: &'a Record,
    /// Where its text starts.
    start: u32,
    position: u32,
}

impl<'a> CompactSummary<'a> {
    /// Its position in the store.
    pub fn position(self) -> usize {
        self.position as usize
    }

    /// Its string at `at` of the record (`IDENTIFIER` to `REPOSITORY`).
    #[inline]
    fn string(self, at: usize) -> &'a str {
        let start = match at {
            0 => self.start,
            _ => self.record.ends[at - 1],
        };
        &self.store.text[start as usize..self.record.ends[at] as usize]
    }

    /// Its extensions' ends, two per extension.
    #[inline]
    fn extension_ends(self) -> &'a [u32] {
        let first = match self.position.checked_sub(1) {
            None => 0,
            Some(p) => self.store.records[p as usize].extensions_end,
        };
        &self.store.extension_ends[first as usize..self.record.extensions_end as usize]
    }

    /// Its extensions, as (key, value).
    pub fn extensions(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let text = &self.store.text;
        let mut start = self.record.ends[REPOSITORY] as usize;
        self.extension_ends().chunks_exact(2).map(move |pair| {
            let (key_end, value_end) = (pair[0] as usize, pair[1] as usize);
            let key = &text[start..key_end];
            let value = &text[key_end..value_end];
            start = value_end;
            (key, value)
        })
    }

    /// [`Summary::latest_app_version`].
    pub fn latest_app_version(self) -> &'a str {
        self.string(LATEST_APP_VERSION)
    }

    /// [`Summary::icon_url`].
    pub fn icon_url(self) -> &'a str {
        self.string(ICON_URL)
    }
}

/// The categories of a [`CompactSummary`].
#[derive(Debug, Clone)]
pub struct CompactCategories<'a> {
    store: &'a CompactSummaries,
    numbers: std::slice::Iter<'a, u32>,
}

impl<'a> Iterator for CompactCategories<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let n = *self.numbers.next()?;
        Some(self.store.category(n))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.numbers.size_hint()
    }
}

impl<'a> SummaryFields<'a> for CompactSummary<'a> {
    type Categories = CompactCategories<'a>;

    #[inline]
    fn identifier(self) -> &'a str {
        self.string(IDENTIFIER)
    }
    #[inline]
    fn name(self) -> &'a str {
        self.string(NAME)
    }
    #[inline]
    fn display_name(self) -> &'a str {
        self.string(DISPLAY_NAME)
    }
    #[inline]
    fn short_description(self) -> &'a str {
        self.string(SHORT_DESCRIPTION)
    }
    #[inline]
    fn latest_version(self) -> &'a str {
        self.string(LATEST_VERSION)
    }
    #[inline]
    fn repository(self) -> &'a str {
        self.string(REPOSITORY)
    }
    #[inline]
    fn deprecated(self) -> bool {
        self.record.categories_end & DEPRECATED != 0
    }
    #[inline]
    fn categories(self) -> CompactCategories<'a> {
        let first = match self.position.checked_sub(1) {
            None => 0,
            Some(p) => self.store.records[p as usize].categories_end & !DEPRECATED,
        };
        let end = self.record.categories_end & !DEPRECATED;
        CompactCategories {
            store: self.store,
            numbers: self.store.item_categories[first as usize..end as usize].iter(),
        }
    }
    fn extension(self, key: &str) -> Option<&'a str> {
        self.extensions()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|(_, v)| v)
    }
    fn to_summary(self) -> Summary {
        Summary {
            identifier: self.identifier().into(),
            name: self.name().into(),
            display_name: self.display_name().into(),
            latest_version: self.latest_version().into(),
            latest_app_version: self.latest_app_version().into(),
            short_description: self.short_description().into(),
            icon_url: self.icon_url().into(),
            categories: self.categories().map(RString::from).collect(),
            repository: self.repository().into(),
            deprecated: self.deprecated(),
            extensions: self
                .extensions()
                .map(|(key, value)| Extension {
                    key: key.into(),
                    value: value.into(),
                })
                .collect(),
        }
    }
}

/// Gives the memory `malloc` holds freed back to the system: call it after the source's data was
/// read and the old data dropped.
///
/// A plugin allocates with the C library's `malloc` (the host's allocator is its own); glibc's
/// keeps what is freed for later requests, and reading a catalog frees much: its text, the parsed
/// form it was converted from, the data it replaced. Data is read rarely and kept long, so that
/// memory would stay resident and unused until the next read. Does nothing off glibc.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: `malloc_trim` takes no pointers and is safe to call at any time, from any
        // thread (glibc locks each arena it trims). Its result only says whether memory was
        // given back.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The strings of `detail` but its summary's, in [`CompactDetail`]'s order.
fn detail_strings(detail: &Detail) -> impl Iterator<Item = &str> + Clone {
    [detail.home_url.as_str(), detail.readme.as_str()]
        .into_iter()
        .chain(detail.versions.iter().flat_map(|v| {
            [
                v.version.as_str(),
                v.app_version.as_str(),
                v.created.as_str(),
                v.digest.as_str(),
            ]
        }))
        .chain(detail.source_urls.iter().map(|u| u.as_str()))
        .chain(
            detail
                .maintainers
                .iter()
                .flat_map(|m| [m.name.as_str(), m.email.as_str(), m.url.as_str()]),
        )
        .chain(detail.keywords.iter().map(|k| k.as_str()))
        .chain(
            detail
                .extensions
                .iter()
                .flat_map(|e| [e.key.as_str(), e.value.as_str()]),
        )
}

/// The detail whose strings end at `ends` in `text` (the first at 0), in [`CompactDetail`]'s
/// order, with these `counts` and `summary` as its summary.
fn make_detail(text: &str, ends: &[u32], counts: [u32; 5], summary: Summary) -> Detail {
    let mut strings = Strings {
        text,
        ends,
        next: 0,
    };
    let [versions, source_urls, maintainers, keywords, extensions] = counts.map(|n| n as usize);
    let home_url = strings.next();
    let readme = strings.next();
    Detail {
        summary,
        versions: (0..versions)
            .map(|_| Version {
                version: strings.next(),
                app_version: strings.next(),
                created: strings.next(),
                digest: strings.next(),
            })
            .collect(),
        home_url,
        source_urls: (0..source_urls).map(|_| strings.next()).collect(),
        maintainers: (0..maintainers)
            .map(|_| Maintainer {
                name: strings.next(),
                email: strings.next(),
                url: strings.next(),
            })
            .collect(),
        readme,
        keywords: (0..keywords).map(|_| strings.next()).collect::<RVec<_>>(),
        extensions: (0..extensions)
            .map(|_| Extension {
                key: strings.next(),
                value: strings.next(),
            })
            .collect(),
    }
}

/// Many details without their summaries (a listing's, in its order), in three allocations: every
/// string one after the other in one text, where each ends (counted from its detail's first
/// string), and a 28-byte record a detail. Against a [`CompactDetail`] each (56 bytes and two
/// allocations of its own, with `malloc`'s header and rounding), a detail costs its strings, 4
/// bytes a string and 28; and nothing is left between other allocations when what a source read
/// is freed.
///
/// Filled by [`CompactDetails::push`] in the listing's order (then [`CompactDetails::shrink_to_fit`]);
/// [`CompactDetails::detail`] makes the interface's value again when it is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactDetails {
    text: String,
    ends: Vec<u32>,
    records: Vec<DetailRecord>,
}

/// One detail of a [`CompactDetails`]: where its text and its ends end (they start where the
/// previous detail's end), and how many versions, source URLs, maintainers, keywords and
/// extensions it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DetailRecord {
    text_end: u32,
    ends_end: u32,
    counts: [u32; 5],
}

impl CompactDetails {
    pub fn new() -> CompactDetails {
        CompactDetails::default()
    }

    /// An empty store with exactly the room that pushing `details` takes, so that it never
    /// grows (a vector grown by doubling may hold up to twice what it keeps).
    pub fn with_room_for(details: &[Detail]) -> CompactDetails {
        let (mut bytes, mut strings) = (0usize, 0usize);
        for s in details.iter().flat_map(detail_strings) {
            bytes += s.len();
            strings += 1;
        }
        CompactDetails {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
            records: Vec::with_capacity(details.len()),
        }
    }

    /// Adds `detail` (all but its summary) after the others; `false`, and nothing added, when
    /// the details' strings would come to 4 GiB or more, or their number to 2^32 or more.
    pub fn push(&mut self, detail: &Detail) -> bool {
        let Some(one) = CompactDetail::new(detail) else {
            return false;
        };
        self.push_compact(&one)
    }

    /// Adds a detail kept as a [`CompactDetail`]; `false`, and nothing added, as for
    /// [`CompactDetails::push`].
    pub fn push_compact(&mut self, detail: &CompactDetail) -> bool {
        let text_end = self.text.len() + detail.text.len();
        let ends_end = self.ends.len() + detail.ends.len();
        let (Ok(text_end), Ok(ends_end)) = (u32::try_from(text_end), u32::try_from(ends_end))
        else {
            return false;
        };
        self.text.push_str(&detail.text);
        self.ends.extend_from_slice(&detail.ends);
        self.records.push(DetailRecord {
            text_end,
            ends_end,
            counts: detail.counts,
        });
        true
    }

    /// Gives back the room kept for details to come.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.records.shrink_to_fit();
    }

    /// How many details.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The detail at `position` again, with `summary` as its summary (panics past the end).
    pub fn detail(&self, position: usize, summary: Summary) -> Detail {
        let record = &self.records[position];
        let (text_start, ends_start) = match position.checked_sub(1) {
            None => (0, 0),
            Some(p) => (self.records[p].text_end, self.records[p].ends_end),
        };
        make_detail(
            &self.text[text_start as usize..record.text_end as usize],
            &self.ends[ends_start as usize..record.ends_end as usize],
            record.counts,
            summary,
        )
    }

    /// The bytes this keeps on the heap (its strings, their ends and its records, with the room
    /// kept for more), for memory accounts.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + 4 * self.ends.capacity()
            + std::mem::size_of::<DetailRecord>() * self.records.capacity()
    }
}

/// The strings of one detail (in a [`CompactDetail`] or a [`CompactDetails`]), in their order.
struct Strings<'a> {
    /// The detail's strings, one after the other.
    text: &'a str,
    /// Where each ends in `text`.
    ends: &'a [u32],
    next: usize,
}

impl Strings<'_> {
    fn next(&mut self) -> RString {
        let start = match self.next {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        let end = self.ends[self.next] as usize;
        self.next += 1;
        RString::from(&self.text[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so that the test needs nothing beyond the crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn string(&mut self) -> RString {
            const PIECES: [&str; 6] = ["", "a", "é", "https://example.com/x", "1.2.3", "日本"];
            let mut s = String::new();
            for _ in 0..self.below(4) {
                s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
            RString::from(s)
        }

        fn strings(&mut self, most: u64) -> RVec<RString> {
            (0..self.below(most + 1)).map(|_| self.string()).collect()
        }
    }

    fn random_detail(rng: &mut Rng) -> Detail {
        Detail {
            summary: Summary {
                name: rng.string(),
                identifier: RString::from("id"),
                ..Summary::default()
            },
            versions: (0..rng.below(5))
                .map(|_| Version {
                    version: rng.string(),
                    app_version: rng.string(),
                    created: rng.string(),
                    digest: rng.string(),
                })
                .collect(),
            home_url: rng.string(),
            source_urls: rng.strings(3),
            maintainers: (0..rng.below(3))
                .map(|_| Maintainer {
                    name: rng.string(),
                    email: rng.string(),
                    url: rng.string(),
                })
                .collect(),
            readme: rng.string(),
            keywords: rng.strings(4),
            extensions: (0..rng.below(3))
                .map(|_| Extension {
                    key: rng.string(),
                    value: rng.string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_detail_comes_back_as_it_was_given() {
        let mut rng = Rng(11);
        for _ in 0..2000 {
            let detail = random_detail(&mut rng);
            let compact = CompactDetail::new(&detail).unwrap();
            assert_eq!(compact.detail(detail.summary.clone()), detail);
        }
        let empty = Detail::default();
        let compact = CompactDetail::new(&empty).unwrap();
        assert_eq!(compact.detail(Summary::default()), empty);
        assert_eq!(compact, CompactDetail::new(&empty).unwrap());
    }

    #[test]
    fn many_details_come_back_as_they_were_given() {
        let mut rng = Rng(12);
        let mut details: Vec<Detail> = (0..2000).map(|_| random_detail(&mut rng)).collect();
        // Details of no strings but their two, among the others.
        details[0] = Detail::default();
        details[1000] = Detail::default();
        let mut store = CompactDetails::new();
        assert!(store.is_empty());
        for (i, detail) in details.iter().enumerate() {
            if i % 2 == 0 {
                assert!(store.push(detail));
            } else {
                assert!(store.push_compact(&CompactDetail::new(detail).unwrap()));
            }
        }
        store.shrink_to_fit();
        assert_eq!(store.len(), details.len());
        for (i, detail) in details.iter().enumerate() {
            assert_eq!(
                store.detail(i, detail.summary.clone()),
                *detail,
                "detail {i}"
            );
        }
        // Three allocations: the strings, their ends and a record a detail.
        let strings: usize = details
            .iter()
            .map(|d| CompactDetail::new(d).unwrap().heap_bytes())
            .sum();
        assert_eq!(store.heap_bytes(), strings + 28 * details.len());
        assert_eq!(std::mem::size_of::<DetailRecord>(), 28);
        // Made with the room for them, the same store never grows.
        let mut roomy = CompactDetails::with_room_for(&details);
        assert_eq!(roomy.heap_bytes(), store.heap_bytes());
        for detail in &details {
            assert!(roomy.push(detail));
        }
        assert_eq!(roomy.heap_bytes(), store.heap_bytes());
        assert_eq!(roomy, store);
    }

    fn random_summary(rng: &mut Rng) -> Summary {
        Summary {
            identifier: rng.string(),
            name: rng.string(),
            display_name: rng.string(),
            latest_version: rng.string(),
            latest_app_version: rng.string(),
            short_description: rng.string(),
            icon_url: rng.string(),
            categories: rng.strings(3),
            repository: rng.string(),
            deprecated: rng.below(2) == 0,
            extensions: (0..rng.below(3))
                .map(|_| Extension {
                    key: rng.string(),
                    value: rng.string(),
                })
                .collect(),
        }
    }

    #[test]
    fn summaries_come_back_as_they_were_given() {
        let mut rng = Rng(23);
        for round in 0..200 {
            let summaries: Vec<Summary> = (0..rng.below(40))
                .map(|_| random_summary(&mut rng))
                .collect();
            let compact = CompactSummaries::new(summaries.clone()).unwrap();
            assert_eq!(compact.len(), summaries.len());
            for (i, want) in summaries.iter().enumerate() {
                let item = compact.get(i);
                assert_eq!(item.to_summary(), *want, "round {round}, item {i}");
                assert_eq!(item.position(), i);
                assert_eq!(
                    item.categories().collect::<Vec<_>>(),
                    want.categories
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                );
                for e in want.extensions.iter() {
                    assert_eq!(
                        item.extension(&e.key),
                        crate::extension(&want.extensions, &e.key)
                    );
                }
                assert_eq!(item.extension("absent key"), None);
            }
            assert_eq!(compact.iter().count(), summaries.len());
            // The text holds every string once, nothing else.
            let strings: usize = summaries
                .iter()
                .map(|s| {
                    record_strings(s).iter().map(|t| t.len()).sum::<usize>()
                        + s.extensions
                            .iter()
                            .map(|e| e.key.len() + e.value.len())
                            .sum::<usize>()
                })
                .sum();
            assert_eq!(compact.text.len(), strings);
        }
        let empty = CompactSummaries::new(Vec::new()).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty, CompactSummaries::default());
    }

    #[test]
    fn a_compact_record_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 40);
    }

    #[test]
    fn its_record_is_small() {
        // Two boxes and five counts, against a `Detail`'s 552 bytes (224 without its summary).
        assert_eq!(std::mem::size_of::<CompactDetail>(), 56);
    }
}
