//! Sort orders of a listing (interface 1.1): by name (1.0's only order), by relevance to the query,
//! by update time; and the relevance score, defined here once for the host and every plugin.
//!
//! # Relevance, version 1 ([`RELEVANCE_VERSION`])
//! A term of the query scores the best of these that holds (comparisons case-insensitive, as
//! matching is; "word" means bounded on each side by the start or end of the name or by a character
//! that is not alphanumeric):
//!
//! | the term ... | score |
//! |---|---|
//! | equals the name | 64 |
//! | starts the name | 32 |
//! | is a whole word of the name | 16 |
//! | occurs in the name | 8 |
//! | occurs in the display name | 4 |
//! | occurs in the short description | 2 |
//!
//! An item's score ([`relevance`]) is, over the groups of the query it matches, the highest sum of
//! the scores of the group's terms that must occur (exclusions score nothing); 0 when it matches
//! no group or the query is empty. For `nginx ingress` the item `nginx-ingress` scores 32 + 16 =
//! 48; for `redis or valkey` the item `valkey` scores 64.
//!
//! A changed table is a new relevance version, declared by a new capability version
//! (`list.sort@2`), never a silent change: the host merges the ordered pages of several sources and
//! re-checks their order with its own copy of [`relevance`].
//!
//! # Orders
//! [`OrderKey`] is the position of an item in one [`Sort`]; every order ends in `(name,
//! identifier)`, compared as bytes, so no two items of one source tie.
//!
//! | sort | key | order |
//! |---|---|---|
//! | [`Sort::Name`] | `(name, identifier)` | ascending |
//! | [`Sort::Relevance`] | `(score, name, identifier)` | score descending, then name and identifier ascending |
//! | [`Sort::Updated`] | `(updated, name, identifier)` | update time descending (newest first), items without one after every dated item, then name and identifier ascending |
//!
//! The update time of an item is its summary extension [`crate::keys::SUMMARY_UPDATED`]: the
//! latest version's publication time, normalised to UTC by [`normalize_timestamp`] so that byte
//! order is time order.

use std::{cmp::Ordering, collections::BinaryHeap};

use crate::items::{self, Items, SummaryFields};
use crate::keys;
use crate::query::{CompiledFilter, Query};
use crate::types::{extension, Extension, ListRequest, SeekKey, Summary};

/// The version of the relevance table ([`relevance`]) this crate implements; declared by the
/// capability `list.sort@1` ([`crate::capabilities::LIST_SORT`]).
pub const RELEVANCE_VERSION: u32 = 1;

/// How relevant `item` is to `query`: see the module documentation for the table. Deterministic
/// and independent of any other item, so every source and the host compute the same number.
pub fn relevance(query: &Query, item: &Summary) -> u32 {
    relevance_item(query, item)
}

/// [`relevance`] for an item kept in any form.
pub fn relevance_item<'a>(query: &Query, item: impl SummaryFields<'a>) -> u32 {
    query.score(item).unwrap_or(0)
}

/// The order of a listing. [`Sort::Name`] is the default and the order of every 1.0 source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Sort {
    /// By `(name, identifier)` ascending.
    #[default]
    Name,
    /// By relevance to the query, highest first ([`relevance`]).
    Relevance,
    /// By the latest version's publication time, newest first; undated items last.
    Updated,
}

impl Sort {
    /// The name used in requests ([`crate::keys::REQUEST_SORT`]) and APIs: `name`, `relevance`,
    /// `updated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Relevance => "relevance",
            Sort::Updated => "updated",
        }
    }

    /// The sort named `text` (exactly as [`Sort::as_str`] writes it); `None` for anything else.
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "name" => Some(Sort::Name),
            "relevance" => Some(Sort::Relevance),
            "updated" => Some(Sort::Updated),
            _ => None,
        }
    }
}

impl std::fmt::Display for Sort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The position of an item in one sort order; also a seek point (a listing resumes strictly after
/// it).
///
/// `Ord` (and [`OrderKey::is_after`]) is the sort's order and is meaningful only between keys of
/// the same sort; keys of different sorts compare by sort (name, relevance, updated), which means
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderKey {
    /// [`Sort::Name`]: `(name, identifier)` ascending.
    Name { name: String, identifier: String },
    /// [`Sort::Relevance`]: score descending, then `(name, identifier)` ascending.
    Relevance {
        score: u32,
        name: String,
        identifier: String,
    },
    /// [`Sort::Updated`]: `updated` (normalised, see [`normalize_timestamp`]) descending with
    /// `None` after every date, then `(name, identifier)` ascending.
    Updated {
        updated: Option<String>,
        name: String,
        identifier: String,
    },
}

impl OrderKey {
    /// The key of `item` in `sort`; `query` is used for [`Sort::Relevance`] only.
    pub fn of(sort: Sort, query: &Query, item: &Summary) -> OrderKey {
        OrderKey::of_item(sort, query, item)
    }

    /// [`OrderKey::of`] for an item kept in any form.
    pub fn of_item<'a>(sort: Sort, query: &Query, item: impl SummaryFields<'a>) -> OrderKey {
        let name = item.name().to_string();
        let identifier = item.identifier().to_string();
        match sort {
            Sort::Name => OrderKey::Name { name, identifier },
            Sort::Relevance => OrderKey::Relevance {
                score: relevance_item(query, item),
                name,
                identifier,
            },
            Sort::Updated => OrderKey::Updated {
                updated: updated_item(item).map(str::to_owned),
                name,
                identifier,
            },
        }
    }

    /// The sort this key belongs to.
    pub fn sort(&self) -> Sort {
        match self {
            OrderKey::Name { .. } => Sort::Name,
            OrderKey::Relevance { .. } => Sort::Relevance,
            OrderKey::Updated { .. } => Sort::Updated,
        }
    }

    /// The name of the item at this position.
    pub fn name(&self) -> &str {
        match self {
            OrderKey::Name { name, .. }
            | OrderKey::Relevance { name, .. }
            | OrderKey::Updated { name, .. } => name,
        }
    }

    /// The identifier of the item at this position.
    pub fn identifier(&self) -> &str {
        match self {
            OrderKey::Name { identifier, .. }
            | OrderKey::Relevance { identifier, .. }
            | OrderKey::Updated { identifier, .. } => identifier,
        }
    }

    /// The `(name, identifier)` part, as [`crate::ListRequest::after`] carries it in every sort.
    pub fn seek_key(&self) -> SeekKey {
        SeekKey {
            name: self.name().into(),
            identifier: self.identifier().into(),
        }
    }

    /// Whether this key comes strictly after `other` (both of the same sort).
    pub fn is_after(&self, other: &OrderKey) -> bool {
        self > other
    }

    /// The borrowed form, compared the same way.
    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        let (primary, name, identifier) = match self {
            OrderKey::Name { name, identifier } => (Primary::Name, name, identifier),
            OrderKey::Relevance {
                score,
                name,
                identifier,
            } => (Primary::Score(*score), name, identifier),
            OrderKey::Updated {
                updated,
                name,
                identifier,
            } => (Primary::Updated(updated.as_deref()), name, identifier),
        };
        KeyRef {
            primary,
            name,
            identifier,
        }
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_ref().cmp(&other.as_ref())
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An [`OrderKey`] borrowing from an item: what listings compute per match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRef<'a> {
    pub(crate) primary: Primary<'a>,
    pub(crate) name: &'a str,
    pub(crate) identifier: &'a str,
}

/// The part of a key before `(name, identifier)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Primary<'a> {
    Name,
    Score(u32),
    Updated(Option<&'a str>),
}

impl Primary<'_> {
    fn rank(&self) -> u8 {
        match self {
            Primary::Name => 0,
            Primary::Score(_) => 1,
            Primary::Updated(_) => 2,
        }
    }
}

impl Ord for Primary<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Primary::Score(a), Primary::Score(b)) => b.cmp(a),
            (Primary::Updated(a), Primary::Updated(b)) => match (a, b) {
                (Some(a), Some(b)) => b.as_bytes().cmp(a.as_bytes()),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Primary<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyRef<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.primary
            .cmp(&other.primary)
            .then_with(|| self.name.as_bytes().cmp(other.name.as_bytes()))
            .then_with(|| self.identifier.as_bytes().cmp(other.identifier.as_bytes()))
    }
}

impl PartialOrd for KeyRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> KeyRef<'a> {
    /// The key of `item` in `sort`, given its score when the sort is by relevance.
    pub(crate) fn of(sort: Sort, score: u32, item: impl SummaryFields<'a>) -> KeyRef<'a> {
        KeyRef {
            primary: match sort {
                Sort::Name => Primary::Name,
                Sort::Relevance => Primary::Score(score),
                Sort::Updated => Primary::Updated(updated_item(item)),
            },
            name: item.name(),
            identifier: item.identifier(),
        }
    }
}

/// When a listing in `sort` is the listing by name from some seek key (`Some(seek)`, `None` in
/// it for the start): for [`Sort::Name`], and for [`Sort::Relevance`] when no item can score
/// above 0 (a query without terms that must occur), where every key is `(0, name, identifier)`.
/// `None` when the order is another.
pub(crate) fn by_name(
    sort: Sort,
    filter: &CompiledFilter,
    after: Option<&OrderKey>,
) -> Option<Option<SeekKey>> {
    match (sort, after) {
        (Sort::Name, _) => Some(after.map(OrderKey::seek_key)),
        (Sort::Relevance, _) if !filter.query().scores_nothing() => None,
        // Every item scores 0, so every item comes after a seek point with a higher score.
        (Sort::Relevance, Some(OrderKey::Relevance { score, .. })) if *score > 0 => Some(None),
        (Sort::Relevance, _) => Some(after.map(OrderKey::seek_key)),
        (Sort::Updated, _) => None,
    }
}

/// The first `limit` matches after a seek point in one order, from items offered in any order:
/// a bounded max-heap, so `n` offers cost `O(n log limit)` time (most offers, once the heap is
/// full, one comparison) and `O(limit)` memory.
pub(crate) struct First<'k, 'a, S> {
    sort: Sort,
    after: Option<KeyRef<'k>>,
    limit: usize,
    heap: BinaryHeap<Entry<'a, S>>,
}

/// An item in a [`First`] heap, ordered by its key alone.
struct Entry<'a, S> {
    key: KeyRef<'a>,
    item: S,
}

impl<S> PartialEq for Entry<'_, S> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<S> Eq for Entry<'_, S> {}

impl<S> PartialOrd for Entry<'_, S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<S> Ord for Entry<'_, S> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl<'k, 'a, S: SummaryFields<'a>> First<'k, 'a, S> {
    pub(crate) fn new(sort: Sort, after: Option<&'k OrderKey>, limit: usize) -> First<'k, 'a, S> {
        First {
            sort,
            after: after.map(OrderKey::as_ref),
            limit,
            heap: BinaryHeap::with_capacity(limit.min(1024)),
        }
    }

    /// Keeps `item` if it matches `filter`, comes after the seek point and is among the first
    /// `limit` so far.
    pub(crate) fn offer(&mut self, filter: &CompiledFilter, item: S) {
        let score = match self.sort {
            Sort::Relevance => filter.score_item(item),
            _ => filter.matches_item(item).then_some(0),
        };
        let Some(score) = score else {
            return;
        };
        let key = KeyRef::of(self.sort, score, item);
        if self.after.is_some_and(|after| key <= after) {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push(Entry { key, item });
        } else if let Some(mut last) = self.heap.peek_mut() {
            if key < last.key {
                *last = Entry { key, item };
            }
        }
    }

    /// The kept items in order, as summaries.
    pub(crate) fn into_items(self) -> Vec<Summary> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|entry| entry.item.to_summary())
            .collect()
    }
}

/// The update time of `item`: its [`keys::SUMMARY_UPDATED`] extension when present and in the
/// normalised form `YYYY-MM-DDTHH:MM:SSZ` (a valid UTC date and time); `None` otherwise, so an item
/// with a malformed value sorts with the undated ones.
pub fn updated(item: &Summary) -> Option<&str> {
    updated_item(item)
}

/// [`updated`] for an item kept in any form.
pub fn updated_item<'a>(item: impl SummaryFields<'a>) -> Option<&'a str> {
    // `extension` compares bytes first: the contract checks no extension, so a value may not be
    // UTF-8 (it then reads as absent).
    let value = item.extension(keys::SUMMARY_UPDATED)?;
    is_normalized(value).then_some(value)
}

/// Whether `text` is exactly a timestamp as [`normalize_timestamp`] writes it.
pub fn is_normalized(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b[19] == b'Z'
        && b[10] == b'T'
        && &b[17..19] != b"60"
        && matches!(parse_rfc3339(text), Some(t) if t.offset_minutes == 0 && t.fraction_len == 0)
}

/// Normalises an RFC 3339 timestamp to UTC `YYYY-MM-DDTHH:MM:SSZ`, so that byte order is time
/// order: `2019-01-01T00:00:00.123456789+02:00` becomes `2018-12-31T22:00:00Z`.
///
/// Accepted: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of one or more digits (dropped), and `Z`
/// or an offset `+HH:MM` / `-HH:MM`; `t`, `z` and a space for `T` are accepted too (RFC 3339 allows
/// them), and whitespace around the text is ignored. The date must exist (leap years included), the time be at most `23:59:60` (a leap second
/// counts as `:59`), an offset at most `23:59`. `None` for anything else, and for a time whose UTC
/// year falls outside 0000-9999.
pub fn normalize_timestamp(text: &str) -> Option<String> {
    let t = parse_rfc3339(text.trim())?;
    let local =
        days_from_civil(t.year, t.month, t.day) * 86_400 + t.hour * 3600 + t.minute * 60 + t.second;
    let utc = local - t.offset_minutes * 60;
    let days = utc.div_euclid(86_400);
    let seconds = utc.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    ))
}

/// The fields of an RFC 3339 timestamp, validated.
struct Parsed {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    fraction_len: usize,
    /// East of UTC.
    offset_minutes: i64,
}

fn parse_rfc3339(text: &str) -> Option<Parsed> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut fraction_len = 0;
    if at(i, b".") {
        i += 1;
        while at(i, b"0123456789") {
            i += 1;
            fraction_len += 1;
        }
        if fraction_len == 0 {
            return None;
        }
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    Some(Parsed {
        year,
        month,
        day,
        hour,
        minute,
        second: second.min(59),
        fraction_len,
        offset_minutes,
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl ListRequest {
    /// The requested order ([`keys::REQUEST_SORT`]): by name when the key is absent or unknown.
    pub fn sort(&self) -> Sort {
        extension(&self.extensions, keys::REQUEST_SORT)
            .and_then(Sort::parse)
            .unwrap_or_default()
    }

    /// The seek point in the requested order: [`ListRequest::after`] with, for relevance,
    /// [`keys::REQUEST_AFTER_SCORE`] and, for update time, [`keys::REQUEST_AFTER_UPDATED`]. `None` at
    /// the start of the listing.
    ///
    /// A missing or malformed score reads as 0, a missing or malformed time as none: the lowest
    /// position of its kind, so that a request that lost its seek facts ends early rather than
    /// repeating items.
    pub fn after_key(&self) -> Option<OrderKey> {
        let after = self.after.as_ref().into_option()?;
        let (name, identifier) = (after.name.to_string(), after.identifier.to_string());
        Some(match self.sort() {
            Sort::Name => OrderKey::Name { name, identifier },
            Sort::Relevance => OrderKey::Relevance {
                score: extension(&self.extensions, keys::REQUEST_AFTER_SCORE)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                name,
                identifier,
            },
            Sort::Updated => OrderKey::Updated {
                updated: extension(&self.extensions, keys::REQUEST_AFTER_UPDATED)
                    .filter(|t| is_normalized(t))
                    .map(str::to_owned),
                name,
                identifier,
            },
        })
    }

    /// Asks for `sort`, resuming strictly after `after` (`None`: from the start): sets
    /// [`ListRequest::after`] and writes [`keys::REQUEST_SORT`], [`keys::REQUEST_AFTER_SCORE`] and
    /// [`keys::REQUEST_AFTER_UPDATED`] as needed, removing those that no longer apply (by name, none
    /// is written: the request is a 1.0 request). `after` should be a key of `sort`; of another sort,
    /// only its `(name, identifier)` is used.
    pub fn set_order(&mut self, sort: Sort, after: Option<&OrderKey>) {
        let mut extensions: Vec<Extension> = self
            .extensions
            .iter()
            .filter(|e| {
                ![
                    keys::REQUEST_SORT,
                    keys::REQUEST_AFTER_SCORE,
                    keys::REQUEST_AFTER_UPDATED,
                ]
                .contains(&e.key.as_str())
            })
            .cloned()
            .collect();
        if sort != Sort::Name {
            extensions.push(Extension::new(keys::REQUEST_SORT, sort.as_str()));
        }
        match after {
            Some(OrderKey::Relevance { score, .. }) if sort == Sort::Relevance => {
                extensions.push(Extension::new(keys::REQUEST_AFTER_SCORE, score.to_string()));
            }
            Some(OrderKey::Updated { updated, .. }) if sort == Sort::Updated => {
                extensions.push(Extension::new(
                    keys::REQUEST_AFTER_UPDATED,
                    updated.as_deref().unwrap_or(""),
                ));
            }
            _ => {}
        }
        self.extensions = extensions.into();
        self.after = after.map(OrderKey::seek_key).into();
    }

    /// Answers this request from items sorted by [`Summary::key_cmp`], in the requested order
    /// ([`ListRequest::sort`]).
    ///
    /// By name: seeks with a binary search, then clones up to `limit` matching items, so a page
    /// costs what it reads. By relevance or update time: tests every item, keeps the matches after
    /// the seek point ([`ListRequest::after_key`]) and the `limit` first of them in a bounded heap,
    /// so every page costs `O(n log limit)` for `n` items (a [`crate::SearchIndex`] brings `n` down
    /// to the candidates of the query). A query that does not parse matches nothing.
    pub fn select(&self, sorted: &[Summary]) -> Vec<Summary> {
        self.select_items(sorted)
    }

    /// [`ListRequest::select`] over items kept in any form, sorted the same way; the items
    /// returned are made with [`SummaryFields::to_summary`].
    pub fn select_items<I: Items + ?Sized>(&self, sorted: &I) -> Vec<Summary> {
        let Ok(filter) = self.filter.compile() else {
            return Vec::new();
        };
        let limit = self.limit as usize;
        let after = self.after_key();
        let len = sorted.len();
        if let Some(seek) = by_name(self.sort(), &filter, after.as_ref()) {
            let start = match seek {
                Some(key) => {
                    items::partition_point(sorted, 0..len, |item| !items::is_after(item, &key))
                }
                None => 0,
            };
            let rest = (start..len).map(|p| sorted.item(p));
            if filter.is_empty() {
                return rest.take(limit).map(SummaryFields::to_summary).collect();
            }
            return rest
                .filter(|&item| filter.matches_item(item))
                .take(limit)
                .map(SummaryFields::to_summary)
                .collect();
        }
        let mut first = First::new(self.sort(), after.as_ref(), limit);
        for p in 0..len {
            first.offer(&filter, sorted.item(p));
        }
        first.into_items()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Extension;
    use abi_stable::std_types::RString;

    fn item(name: &str, display: &str, description: &str) -> Summary {
        Summary {
            identifier: RString::from(name),
            name: RString::from(name),
            display_name: RString::from(display),
            short_description: RString::from(description),
            ..Summary::default()
        }
    }

    #[test]
    fn relevance_follows_the_table() {
        let items = [
            item("nginx", "NGINX", "Web server"),
            item(
                "nginx-ingress",
                "NGINX Ingress",
                "Ingress controller using nginx",
            ),
            item("ingress-nginx", "Ingress NGINX", "Ingress controller"),
            item("bitnami-nginxplus", "", ""),
            item("web", "Nginx based", "a proxy"),
            item("proxy", "Proxy", "nginx inside"),
            item("Ñandú", "", "ÑANDÚ bird"),
            item("redis", "Redis", "store"),
        ];
        let cases: &[(&str, [u32; 8])] = &[
            ("", [0, 0, 0, 0, 0, 0, 0, 0]),
            ("nginx", [64, 32, 16, 8, 4, 2, 0, 0]),
            ("NGINX", [64, 32, 16, 8, 4, 2, 0, 0]),
            ("nginx ingress", [0, 48, 48, 0, 0, 0, 0, 0]),
            ("ingress", [0, 16, 32, 0, 0, 0, 0, 0]),
            ("nginx -controller", [64, 0, 0, 8, 4, 2, 0, 0]),
            ("proxy or nginx", [64, 32, 16, 8, 4, 64, 0, 0]),
            ("nginx proxy or web", [2, 0, 0, 0, 64, 66, 0, 0]),
            ("-nginx", [0, 0, 0, 0, 0, 0, 0, 0]),
            ("ñandú", [0, 0, 0, 0, 0, 0, 64, 0]),
            ("dú", [0, 0, 0, 0, 0, 0, 8, 0]),
            ("ñ", [0, 0, 0, 0, 0, 0, 32, 0]),
            ("x", [8, 8, 8, 8, 4, 8, 0, 0]),
            ("e", [2, 8, 8, 0, 8, 2, 0, 8]),
        ];
        for (text, want) in cases {
            let query = Query::parse(text).unwrap();
            let got: Vec<u32> = items.iter().map(|i| relevance(&query, i)).collect();
            assert_eq!(got, want, "{text:?}");
        }
        // A whole word is bounded by non-alphanumeric characters, Unicode ones included.
        let word =
            |name: &str, term: &str| relevance(&Query::parse(term).unwrap(), &item(name, "", ""));
        assert_eq!(word("a.b_c", "b"), 16);
        assert_eq!(word("ab-c", "b"), 8);
        assert_eq!(word("xé-b", "b"), 16);
        assert_eq!(word("éb", "b"), 8);
        assert_eq!(word("b-bb", "bb"), 16);
        assert_eq!(word("abab ab", "ab"), 32);
        assert_eq!(word("xabab ab", "ab"), 16);
    }

    #[test]
    fn sorts_have_names() {
        for sort in [Sort::Name, Sort::Relevance, Sort::Updated] {
            assert_eq!(Sort::parse(sort.as_str()), Some(sort));
        }
        assert_eq!(Sort::parse("Name"), None);
        assert_eq!(Sort::default(), Sort::Name);
        assert_eq!(Sort::Updated.to_string(), "updated");
    }

    #[test]
    fn timestamps_are_normalized_to_utc() {
        let cases: &[(&str, Option<&str>)] = &[
            ("2023-07-10T10:12:48Z", Some("2023-07-10T10:12:48Z")),
            ("2023-07-10T10:12:48.000Z", Some("2023-07-10T10:12:48Z")),
            ("2023-07-10t10:12:48.5z", Some("2023-07-10T10:12:48Z")),
            ("2023-07-10 10:12:48+00:00", Some("2023-07-10T10:12:48Z")),
            ("2023-07-10T10:12:48-00:00", Some("2023-07-10T10:12:48Z")),
            // Offsets, crossing a day, a month and a year.
            (
                "2019-01-01T00:00:00.123456789+02:00",
                Some("2018-12-31T22:00:00Z"),
            ),
            ("2018-12-31T22:30:00-01:45", Some("2019-01-01T00:15:00Z")),
            ("2023-03-31T23:00:00-05:30", Some("2023-04-01T04:30:00Z")),
            ("2023-03-01T01:00:00+03:00", Some("2023-02-28T22:00:00Z")),
            // Leap days.
            ("2024-03-01T00:59:59+01:00", Some("2024-02-29T23:59:59Z")),
            ("2024-02-29T12:00:00Z", Some("2024-02-29T12:00:00Z")),
            ("2000-02-29T12:00:00Z", Some("2000-02-29T12:00:00Z")),
            ("2023-02-29T12:00:00Z", None),
            ("1900-02-29T12:00:00Z", None),
            ("2023-12-31T23:59:60Z", Some("2023-12-31T23:59:59Z")),
            ("1970-01-01T00:00:00+14:00", Some("1969-12-31T10:00:00Z")),
            ("0000-01-01T00:30:00+01:00", None),
            ("9999-12-31T23:30:00-01:00", None),
            // Garbage.
            ("", None),
            ("2023-07-10", None),
            ("2023-07-10T10:12:48", None),
            ("2023-07-10T10:12Z", None),
            ("2023-07-10T10:12:48.Z", None),
            ("2023-07-10T10:12:48+0200", None),
            ("2023-07-10T10:12:48+02:00 ", Some("2023-07-10T08:12:48Z")),
            ("2023-07-10T10:12:48Zjunk", None),
            ("2023-13-10T10:12:48Z", None),
            ("2023-04-31T10:12:48Z", None),
            ("2023-07-10T24:00:00Z", None),
            ("2023-07-10T10:12:48+24:00", None),
            ("２023-07-10T10:12:48Z", None),
            ("+2023-07-10T10:12:48Z", None),
            ("Mon, 10 Jul 2023 10:12:48 GMT", None),
        ];
        for (text, want) in cases {
            assert_eq!(normalize_timestamp(text).as_deref(), *want, "{text:?}");
        }
        // Every day of a few centuries survives the round trip of the day arithmetic.
        for days in (-800_000..3_000_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn updated_reads_only_normalized_values() {
        let with = |value: &str| Summary {
            extensions: vec![Extension::new(keys::SUMMARY_UPDATED, value)].into(),
            ..Summary::default()
        };
        assert_eq!(
            updated(&with("2023-07-10T10:12:48Z")),
            Some("2023-07-10T10:12:48Z")
        );
        assert_eq!(updated(&with("2023-07-10T10:12:48.0Z")), None);
        assert_eq!(updated(&with("2023-07-10T10:12:48+00:00")), None);
        assert_eq!(updated(&with("2023-02-30T10:12:48Z")), None);
        assert_eq!(updated(&with("")), None);
        assert_eq!(updated(&Summary::default()), None);
    }

    #[test]
    fn order_keys_order_each_sort() {
        let name = |n: &str, i: &str| OrderKey::Name {
            name: n.into(),
            identifier: i.into(),
        };
        let score = |s: u32, n: &str, i: &str| OrderKey::Relevance {
            score: s,
            name: n.into(),
            identifier: i.into(),
        };
        let upd = |u: Option<&str>, n: &str, i: &str| OrderKey::Updated {
            updated: u.map(str::to_owned),
            name: n.into(),
            identifier: i.into(),
        };
        let sorted = |mut keys: Vec<OrderKey>| {
            let want = keys.clone();
            keys.reverse();
            keys.sort();
            assert_eq!(keys, want);
            for pair in want.windows(2) {
                assert!(pair[1].is_after(&pair[0]) && !pair[0].is_after(&pair[1]));
            }
        };
        sorted(vec![
            name("A", "z"),
            name("a", "1"),
            name("a", "2"),
            name("b", ""),
            name("é", "0"),
        ]);
        sorted(vec![
            score(64, "z", "1"),
            score(16, "a", "1"),
            score(16, "a", "2"),
            score(16, "b", "0"),
            score(2, "a", "0"),
            score(0, "0", "0"),
        ]);
        sorted(vec![
            upd(Some("2024-01-01T00:00:00Z"), "z", "1"),
            upd(Some("2023-12-31T23:59:59Z"), "a", "1"),
            upd(Some("2023-12-31T23:59:59Z"), "b", "1"),
            upd(Some("1999-01-01T00:00:00Z"), "a", "1"),
            upd(None, "a", "1"),
            upd(None, "a", "2"),
            upd(None, "b", "0"),
        ]);
        assert!(!score(8, "a", "1").is_after(&score(8, "a", "1")));

        let dated = Summary {
            identifier: "id".into(),
            name: "nginx".into(),
            extensions: vec![Extension::new(
                keys::SUMMARY_UPDATED,
                "2023-07-10T10:12:48Z",
            )]
            .into(),
            ..Summary::default()
        };
        let query = Query::parse("ngi").unwrap();
        assert_eq!(
            OrderKey::of(Sort::Name, &query, &dated),
            name("nginx", "id")
        );
        assert_eq!(
            OrderKey::of(Sort::Relevance, &query, &dated),
            score(32, "nginx", "id")
        );
        assert_eq!(
            OrderKey::of(Sort::Updated, &query, &dated),
            upd(Some("2023-07-10T10:12:48Z"), "nginx", "id")
        );
        assert_eq!(
            OrderKey::of(Sort::Updated, &query, &dated).seek_key(),
            SeekKey {
                name: "nginx".into(),
                identifier: "id".into()
            }
        );
    }
}
