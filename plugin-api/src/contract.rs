//! The checks the host applies to every plugin answer, public so that plugin authors (and their
//! tests) run exactly the same rules.
//!
//! The host calls [`check_list_dropping`] on every `list` answer, [`check_detail`] on every `detail`
//! answer and [`check_error`] on every error a plugin returns. A breach is that source's failure
//! (`contract_violation`): the answer is discarded, never served; except that in a `list` answer an
//! item whose key is sound but another field breaks the rules is left out alone (and counted), so
//! one bad item costs only itself. [`check_list`] (what the conformance kit runs) treats that item
//! as a breach too: a plugin should never send it. Every check is cheap (linear in
//! the answer) and every [`Violation`] message is bounded: values from the answer are quoted at most
//! [`QUOTE_BYTES`] bytes long.
//!
//! What is checked:
//! - every text field is valid UTF-8 (an `RString` built with `unsafe` code could hold anything) and
//!   within its size limit ([`MAX_KEY_BYTES`] for names, identifiers and categories, [`MAX_TEXT_BYTES`]
//!   for other short fields, [`MAX_README_BYTES`] for a detail's readme);
//! - identifiers are non-empty and unique within one answer;
//! - a list answer has at most `request.limit` items, strictly after `request.after`, in strictly
//!   increasing `(name, identifier)` byte order; or, when the request asks for another order
//!   ([`ListRequest::sort`], interface 1.1), in strictly increasing [`crate::OrderKey`] of that
//!   order and strictly after [`ListRequest::after_key`], relevance scores recomputed with the
//!   request's query (a query that does not parse scores every item 0);
//! - a detail answer is about the identifier asked for and has at most [`MAX_VERSIONS`] versions and
//!   [`MAX_ENTRIES`] entries in each other list;
//! - an error message is valid UTF-8 and at most [`MAX_MESSAGE_BYTES`] long.

use std::{cmp::Ordering, collections::HashSet};

use abi_stable::std_types::{ROption, RString};

use crate::{
    order::{relevance, KeyRef, Primary, Sort},
    query::Query,
    Detail, ErrorKind, ListRequest, PluginError, Summary,
};

/// Longest name, identifier or category, in bytes: clients send these back, and the host accepts no
/// longer ones in requests.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest other short text field (descriptions, versions, URLs), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest readme in a detail answer, in bytes.
pub const MAX_README_BYTES: usize = 1024 * 1024;
/// Most categories on one item.
pub const MAX_CATEGORIES: usize = 64;
/// Most versions in one detail answer.
pub const MAX_VERSIONS: usize = 10_000;
/// Most entries in a detail's other lists (source URLs, maintainers, keywords).
pub const MAX_ENTRIES: usize = 1024;
/// Longest plugin error message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest quotation of a plugin's value inside a [`Violation`] message, in bytes.
pub const QUOTE_BYTES: usize = 64;

/// How an answer broke the contract: a one-line message naming the item and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    message: String,
}

impl Violation {
    fn new(message: String) -> Violation {
        Violation { message }
    }

    /// The message, bounded in length.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, owned.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Violation {}

/// Quotes at most `max` bytes of `bytes` (lossy UTF-8, cut on a character boundary, `…` when cut), as
/// a debug string. Use it wherever a value of unbounded length goes into a message.
pub fn quote(bytes: &[u8], max: usize) -> String {
    let mut cut = bytes.len().min(max);
    // Back off to a character boundary when the bytes are UTF-8 up to the cut.
    if let Err(e) = std::str::from_utf8(&bytes[..cut]) {
        if e.error_len().is_none() {
            cut = e.valid_up_to();
        }
    }
    let mut text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        text.push('…');
    }
    format!("{text:?}")
}

fn q(value: &RString) -> String {
    quote(value.as_bytes(), QUOTE_BYTES)
}

/// Checks one text field: size and UTF-8. `owner` names the item for the message.
/// What a checked field belongs to, as messages name it; formatted only when a check fails.
#[derive(Clone, Copy)]
enum Owner<'a> {
    AnItem,
    Item(&'a RString),
    Detail(&'a str),
    Error(ErrorKind),
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::AnItem => f.write_str("an item"),
            Owner::Item(identifier) => write!(f, "item {}", q(identifier)),
            Owner::Detail(identifier) => {
                write!(f, "detail {}", quote(identifier.as_bytes(), QUOTE_BYTES))
            }
            Owner::Error(kind) => write!(f, "error of kind {}", kind.name()),
        }
    }
}

fn check_text(owner: Owner<'_>, field: &str, value: &RString, max: usize) -> Result<(), Violation> {
    let bytes = value.as_bytes();
    if bytes.len() > max {
        return Err(Violation::new(format!(
            "{owner} has a {field} of {} bytes, at most {max} are allowed",
            bytes.len()
        )));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(Violation::new(format!(
            "{owner} has a {field} that is not valid UTF-8"
        )));
    }
    Ok(())
}

fn check_count(owner: Owner<'_>, field: &str, count: usize, max: usize) -> Result<(), Violation> {
    if count > max {
        return Err(Violation::new(format!(
            "{owner} has {count} {field}, at most {max} are allowed"
        )));
    }
    Ok(())
}

/// Checks one item's fields: a non-empty identifier, every text field valid UTF-8 and within its
/// limit, at most [`MAX_CATEGORIES`] categories.
pub fn check_summary(item: &Summary) -> Result<(), Violation> {
    check_key(item)?;
    check_other_fields(item)
}

/// The fields that place an item in the order: a non-empty identifier and a name, each valid UTF-8
/// within [`MAX_KEY_BYTES`].
fn check_key(item: &Summary) -> Result<(), Violation> {
    // The key fields first, so that later messages may quote them.
    if item.identifier.is_empty() {
        check_text(Owner::AnItem, "name", &item.name, MAX_KEY_BYTES)?;
        return Err(Violation::new(format!(
            "item named {} has an empty identifier",
            q(&item.name)
        )));
    }
    check_text(Owner::AnItem, "identifier", &item.identifier, MAX_KEY_BYTES)?;
    check_text(
        Owner::Item(&item.identifier),
        "name",
        &item.name,
        MAX_KEY_BYTES,
    )
}

/// Every field but the key (see [`check_key`], which must have passed).
fn check_other_fields(item: &Summary) -> Result<(), Violation> {
    let owner = Owner::Item(&item.identifier);
    for (field, value) in [
        ("display_name", &item.display_name),
        ("latest_version", &item.latest_version),
        ("latest_app_version", &item.latest_app_version),
        ("short_description", &item.short_description),
        ("icon_url", &item.icon_url),
        ("repository", &item.repository),
    ] {
        check_text(owner, field, value, MAX_TEXT_BYTES)?;
    }
    check_count(owner, "categories", item.categories.len(), MAX_CATEGORIES)?;
    for category in item.categories.iter() {
        check_text(owner, "categories[]", category, MAX_KEY_BYTES)?;
    }
    Ok(())
}

/// Checks a `list` answer against `request`: every item by [`check_summary`], at most
/// `request.limit` items, unique identifiers, strictly after `request.after`, strictly increasing
/// `(name, identifier)` byte order. When the request asks for another order
/// ([`ListRequest::sort`]): strictly increasing [`crate::OrderKey`] of that order, the first item
/// strictly after [`ListRequest::after_key`].
pub fn check_list(request: &ListRequest, items: &[Summary]) -> Result<(), Violation> {
    check_list_with(request, items, |_, violation| Err(violation))
}

/// What [`check_list_dropping`] took out of an answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// How many items were taken out.
    pub count: usize,
    /// Why the first of them was.
    pub first: Option<Violation>,
}

/// [`check_list`], except that an item whose key (identifier and name) is sound but another field
/// breaks the contract (a description past [`MAX_TEXT_BYTES`], say) is taken out of `items` and
/// counted rather than failing the whole answer: one bad item costs only itself. A broken key, the
/// order, duplicates, the seek and the count still fail the answer; in the order by name the dropped
/// items' keys take part in the order check (in another order they do not: their fields may not be
/// readable enough to score them).
pub fn check_list_dropping<T>(request: &ListRequest, items: &mut T) -> Result<Dropped, Violation>
where
    T: std::ops::DerefMut<Target = [Summary]> + Retain,
{
    let mut bad: Vec<usize> = Vec::new();
    let mut dropped = Dropped::default();
    check_list_with(request, items, |i, violation| {
        bad.push(i);
        dropped.count += 1;
        dropped.first.get_or_insert(violation);
        Ok(())
    })?;
    if !bad.is_empty() {
        let mut index = 0;
        items.retain_items(|_| {
            let keep = bad.binary_search(&index).is_err();
            index += 1;
            keep
        });
    }
    Ok(dropped)
}

/// Vectors [`check_list_dropping`] can take items out of.
pub trait Retain {
    /// Keeps the items for which `keep` is true, in order.
    fn retain_items(&mut self, keep: impl FnMut(&Summary) -> bool);
}

impl Retain for Vec<Summary> {
    fn retain_items(&mut self, keep: impl FnMut(&Summary) -> bool) {
        self.retain(keep);
    }
}

impl Retain for abi_stable::std_types::RVec<Summary> {
    fn retain_items(&mut self, keep: impl FnMut(&Summary) -> bool) {
        self.retain(keep);
    }
}

/// The list checks; `bad_item` decides what an item whose fields other than its key break the
/// contract does to the answer (its index, the violation).
fn check_list_with(
    request: &ListRequest,
    items: &[Summary],
    mut bad_item: impl FnMut(usize, Violation) -> Result<(), Violation>,
) -> Result<(), Violation> {
    if items.len() > request.limit as usize {
        return Err(Violation::new(format!(
            "returned {} items, more than the {} asked for",
            items.len(),
            request.limit
        )));
    }
    let sort = request.sort();
    let query = match sort {
        Sort::Relevance => Query::parse(&request.filter.query).unwrap_or_default(),
        _ => Query::default(),
    };
    let after = request.after_key();
    let mut previous: Option<&Summary> = None;
    let mut previous_key: Option<KeyRef<'_>> = None;
    // A page-sized answer compares identifiers pairwise; a larger one hashes them.
    let small = items.len() <= 16;
    let mut identifiers = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        check_key(item)?;
        let sound = match check_other_fields(item) {
            Ok(()) => true,
            Err(violation) => {
                bad_item(i, violation)?;
                false
            }
        };
        let repeated = if small {
            items[..i]
                .iter()
                .any(|earlier| earlier.identifier.as_str() == item.identifier.as_str())
        } else {
            !identifiers.insert(item.identifier.as_str())
        };
        if repeated {
            return Err(Violation::new(format!(
                "identifier {} appears twice in one answer (items named {} and another)",
                q(&item.identifier),
                q(&item.name)
            )));
        }
        if sort != Sort::Name {
            if sound {
                let score = match sort {
                    Sort::Relevance => relevance(&query, item),
                    _ => 0,
                };
                let key = KeyRef::of(sort, score, item);
                check_ordered(sort, previous_key, after.as_ref().map(|a| a.as_ref()), key)?;
                previous_key = Some(key);
            }
            continue;
        }
        match previous {
            Some(prev) => {
                if prev.key_cmp(item) != Ordering::Less {
                    return Err(Violation::new(format!(
                        "items out of order: ({}, {}) came after ({}, {}); sources must sort by name, then identifier, as bytes",
                        q(&item.name),
                        q(&item.identifier),
                        q(&prev.name),
                        q(&prev.identifier)
                    )));
                }
            }
            None => {
                if let ROption::RSome(key) = &request.after {
                    if !item.is_after(key) {
                        return Err(Violation::new(format!(
                            "item ({}, {}) is not after the requested key ({}, {})",
                            q(&item.name),
                            q(&item.identifier),
                            q(&key.name),
                            q(&key.identifier)
                        )));
                    }
                }
            }
        }
        previous = Some(item);
    }
    Ok(())
}

/// Checks that `key` comes strictly after `previous` (the key of the item before it in the answer)
/// or, for the first item, strictly after `after` (the request's seek point), in `sort`.
fn check_ordered(
    sort: Sort,
    previous: Option<KeyRef<'_>>,
    after: Option<KeyRef<'_>>,
    key: KeyRef<'_>,
) -> Result<(), Violation> {
    let show = |key: &KeyRef<'_>| {
        let at = format!(
            "({}, {})",
            quote(key.name.as_bytes(), QUOTE_BYTES),
            quote(key.identifier.as_bytes(), QUOTE_BYTES)
        );
        match key.primary {
            Primary::Score(score) => format!("{at} scoring {score}"),
            Primary::Updated(Some(time)) => format!("{at} updated {time}"),
            Primary::Updated(None) => format!("{at} without an update time"),
            Primary::Name => at,
        }
    };
    match previous {
        Some(prev) if prev >= key => Err(Violation::new(format!(
            "items out of {sort} order: {} came after {}; sources asked for list.sort={sort} must sort by {}",
            show(&key),
            show(&prev),
            match sort {
                Sort::Relevance => "score descending, then name, then identifier, as bytes",
                _ => "update time descending (items without one last), then name, then identifier, as bytes",
            }
        ))),
        None => match after {
            Some(after) if key <= after => Err(Violation::new(format!(
                "item {} is not after the requested key {} in {sort} order",
                show(&key),
                show(&after)
            ))),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks a `detail` answer for `identifier`: its summary by [`check_summary`] and about
/// `identifier`, every other field valid UTF-8 within its limit, bounded list lengths.
pub fn check_detail(identifier: &str, detail: &Detail) -> Result<(), Violation> {
    check_summary(&detail.summary)?;
    if detail.summary.identifier.as_str() != identifier {
        return Err(Violation::new(format!(
            "asked for identifier {}, answered with a package whose identifier is {}",
            quote(identifier.as_bytes(), QUOTE_BYTES),
            q(&detail.summary.identifier)
        )));
    }
    let owner = Owner::Detail(identifier);
    check_text(owner, "home_url", &detail.home_url, MAX_TEXT_BYTES)?;
    check_text(owner, "readme", &detail.readme, MAX_README_BYTES)?;
    check_count(owner, "versions", detail.versions.len(), MAX_VERSIONS)?;
    for v in detail.versions.iter() {
        for (field, value) in [
            ("versions[].version", &v.version),
            ("versions[].app_version", &v.app_version),
            ("versions[].created", &v.created),
            ("versions[].digest", &v.digest),
        ] {
            check_text(owner, field, value, MAX_TEXT_BYTES)?;
        }
    }
    check_count(owner, "source_urls", detail.source_urls.len(), MAX_ENTRIES)?;
    for url in detail.source_urls.iter() {
        check_text(owner, "source_urls[]", url, MAX_TEXT_BYTES)?;
    }
    check_count(owner, "maintainers", detail.maintainers.len(), MAX_ENTRIES)?;
    for m in detail.maintainers.iter() {
        for (field, value) in [
            ("maintainers[].name", &m.name),
            ("maintainers[].email", &m.email),
            ("maintainers[].url", &m.url),
        ] {
            check_text(owner, field, value, MAX_TEXT_BYTES)?;
        }
    }
    check_count(owner, "keywords", detail.keywords.len(), MAX_ENTRIES)?;
    for k in detail.keywords.iter() {
        check_text(owner, "keywords[]", k, MAX_KEY_BYTES)?;
    }
    Ok(())
}

/// Checks a plugin error: its message is valid UTF-8 and at most [`MAX_MESSAGE_BYTES`] long.
pub fn check_error(error: &PluginError) -> Result<(), Violation> {
    check_text(
        Owner::Error(error.kind),
        "message",
        &error.message,
        MAX_MESSAGE_BYTES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Maintainer, SeekKey, Version};
    use abi_stable::std_types::RVec;

    fn item(name: &str, id: &str) -> Summary {
        Summary {
            name: name.into(),
            identifier: id.into(),
            ..Summary::default()
        }
    }

    fn request(limit: u32, after: Option<(&str, &str)>) -> ListRequest {
        ListRequest {
            after: match after {
                Some((n, i)) => ROption::RSome(SeekKey {
                    name: n.into(),
                    identifier: i.into(),
                }),
                None => ROption::RNone,
            },
            limit,
            ..ListRequest::default()
        }
    }

    /// An `RString` holding arbitrary bytes, as `unsafe` plugin code could build.
    fn raw(bytes: &[u8]) -> RString {
        let v: RVec<u8> = bytes.to_vec().into();
        // SAFETY: only ever read through `as_bytes` by the checks under test.
        unsafe { RString::from_utf8_unchecked(v) }
    }

    #[test]
    fn good_lists_pass() {
        let items = [item("a", "1"), item("a", "2"), item("b", "0")];
        assert_eq!(check_list(&request(3, None), &items), Ok(()));
        assert_eq!(check_list(&request(5, Some(("a", "0"))), &items), Ok(()));
        assert_eq!(check_list(&request(1, None), &[]), Ok(()));
    }

    #[test]
    fn list_breaches_are_named() {
        let msg = |r: ListRequest, items: &[Summary]| check_list(&r, items).unwrap_err().message;
        assert_eq!(
            msg(request(1, None), &[item("a", "1"), item("b", "1")]),
            "returned 2 items, more than the 1 asked for"
        );
        assert_eq!(
            msg(request(5, None), &[item("b", "1"), item("a", "2")]),
            "items out of order: (\"a\", \"2\") came after (\"b\", \"1\"); sources must sort by name, then identifier, as bytes"
        );
        assert_eq!(
            msg(request(5, None), &[item("a", "1"), item("b", "1")]),
            "identifier \"1\" appears twice in one answer (items named \"b\" and another)"
        );
        assert_eq!(
            msg(request(5, Some(("b", "1"))), &[item("b", "1")]),
            "item (\"b\", \"1\") is not after the requested key (\"b\", \"1\")"
        );
        assert_eq!(
            msg(request(5, None), &[item("a", "")]),
            "item named \"a\" has an empty identifier"
        );
    }

    #[test]
    fn field_sizes_and_utf8_are_checked() {
        let mut long = item("a", "1");
        long.short_description = "x".repeat(MAX_TEXT_BYTES + 1).into();
        assert_eq!(
            check_summary(&long).unwrap_err().message,
            format!(
                "item \"1\" has a short_description of {} bytes, at most {MAX_TEXT_BYTES} are allowed",
                MAX_TEXT_BYTES + 1
            )
        );
        let mut bad = item("a", "1");
        bad.icon_url = raw(b"\xff\xfe");
        assert_eq!(
            check_summary(&bad).unwrap_err().message,
            "item \"1\" has a icon_url that is not valid UTF-8"
        );
        let mut many = item("a", "1");
        many.categories = (0..=MAX_CATEGORIES)
            .map(|i| RString::from(i.to_string()))
            .collect();
        assert_eq!(
            check_summary(&many).unwrap_err().message,
            format!("item \"1\" has 65 categories, at most {MAX_CATEGORIES} are allowed")
        );
        // A huge identifier is refused without being quoted whole.
        let huge = item("a", &"i".repeat(1 << 20));
        let m = check_summary(&huge).unwrap_err().message;
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn detail_answers_get_the_same_checks() {
        let good = Detail {
            summary: item("a", "id"),
            versions: vec![Version {
                version: "1.0.0".into(),
                ..Version::default()
            }]
            .into(),
            maintainers: vec![Maintainer::default()].into(),
            ..Detail::default()
        };
        assert_eq!(check_detail("id", &good), Ok(()));
        assert_eq!(
            check_detail("other", &good).unwrap_err().message,
            "asked for identifier \"other\", answered with a package whose identifier is \"id\""
        );
        let mut bad = good.clone();
        bad.versions[0].app_version = raw(b"\xc3");
        assert_eq!(
            check_detail("id", &bad).unwrap_err().message,
            "detail \"id\" has a versions[].app_version that is not valid UTF-8"
        );
        let mut bad = good.clone();
        bad.summary.display_name = raw(b"ok\x80");
        assert_eq!(
            check_detail("id", &bad).unwrap_err().message,
            "item \"id\" has a display_name that is not valid UTF-8"
        );
        let mut big = good;
        big.readme = "r".repeat(MAX_README_BYTES + 1).into();
        assert!(check_detail("id", &big)
            .unwrap_err()
            .message
            .starts_with("detail \"id\" has a readme of 1048577 bytes"));
    }

    #[test]
    fn error_messages_are_bounded_utf8() {
        assert_eq!(
            check_error(&PluginError::unavailable("backend down")),
            Ok(())
        );
        let long = PluginError::internal("m".repeat(MAX_MESSAGE_BYTES + 1));
        assert_eq!(
            check_error(&long).unwrap_err().message,
            format!("error of kind internal has a message of 4097 bytes, at most {MAX_MESSAGE_BYTES} are allowed")
        );
        let bad = PluginError {
            kind: ErrorKind::Panic,
            message: raw(b"\xff"),
        };
        assert_eq!(
            check_error(&bad).unwrap_err().message,
            "error of kind panic has a message that is not valid UTF-8"
        );
    }

    #[test]
    fn quotes_are_cut_on_character_boundaries() {
        assert_eq!(quote("héllo".as_bytes(), 2), "\"h…\"");
        assert_eq!(quote(b"abc", 64), "\"abc\"");
        assert_eq!(quote(b"\xffab", 2), "\"\u{fffd}a…\"");
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use crate::{keys, order::OrderKey, Extension, Filter};

    fn item(name: &str, description: &str, updated: Option<&str>) -> Summary {
        Summary {
            name: name.into(),
            identifier: name.into(),
            short_description: description.into(),
            extensions: updated
                .map(|u| Extension::new(keys::SUMMARY_UPDATED, u))
                .into_iter()
                .collect(),
            ..Summary::default()
        }
    }

    fn request(query: &str, sort: Sort, after: Option<OrderKey>) -> ListRequest {
        let mut request = ListRequest {
            limit: 10,
            filter: Filter {
                query: query.into(),
                ..Filter::default()
            },
            ..ListRequest::default()
        };
        request.set_order(sort, after.as_ref());
        request
    }

    #[test]
    fn relevance_order_is_checked_with_the_requests_query() {
        let items = [
            item("nginx", "", None),
            item("nginx-ingress", "", None),
            item("ingress-nginx", "", None),
            item("a", "an nginx proxy", None),
        ];
        let by_score = request("nginx", Sort::Relevance, None);
        assert_eq!(check_list(&by_score, &items), Ok(()));
        // The same answer by name is out of order.
        assert!(check_list(&request("nginx", Sort::Name, None), &items).is_err());
        let swapped = [items[1].clone(), items[0].clone()];
        assert_eq!(
            check_list(&by_score, &swapped).unwrap_err().message,
            "items out of relevance order: (\"nginx\", \"nginx\") scoring 64 came after (\"nginx-ingress\", \"nginx-ingress\") scoring 32; sources asked for list.sort=relevance must sort by score descending, then name, then identifier, as bytes"
        );
        let after = OrderKey::Relevance {
            score: 32,
            name: "nginx-ingress".into(),
            identifier: "nginx-ingress".into(),
        };
        let resumed = request("nginx", Sort::Relevance, Some(after));
        assert_eq!(check_list(&resumed, &items[2..]), Ok(()));
        assert_eq!(
            check_list(&resumed, &items[1..]).unwrap_err().message,
            "item (\"nginx-ingress\", \"nginx-ingress\") scoring 32 is not after the requested key (\"nginx-ingress\", \"nginx-ingress\") scoring 32 in relevance order"
        );
    }

    #[test]
    fn update_order_puts_undated_items_last() {
        let items = [
            item("z", "", Some("2024-01-01T00:00:00Z")),
            item("a", "", Some("2023-01-01T00:00:00Z")),
            item("b", "", Some("2023-01-01T00:00:00Z")),
            item("a0", "", None),
            item("c", "", Some("2023-01-01")),
        ];
        let newest = request("", Sort::Updated, None);
        assert_eq!(check_list(&newest, &items), Ok(()));
        let undated_first = [items[3].clone(), items[0].clone()];
        assert_eq!(
            check_list(&newest, &undated_first).unwrap_err().message,
            "items out of updated order: (\"z\", \"z\") updated 2024-01-01T00:00:00Z came after (\"a0\", \"a0\") without an update time; sources asked for list.sort=updated must sort by update time descending (items without one last), then name, then identifier, as bytes"
        );
        let after_undated = request(
            "",
            Sort::Updated,
            Some(OrderKey::Updated {
                updated: None,
                name: "a".into(),
                identifier: "a".into(),
            }),
        );
        assert_eq!(check_list(&after_undated, &items[3..]), Ok(()));
        assert!(check_list(&after_undated, &items[2..3]).is_err());
    }

    #[test]
    fn set_order_writes_and_clears_the_seek_facts() {
        let mut request = ListRequest {
            extensions: vec![Extension::new("x-other", "kept")].into(),
            ..ListRequest::default()
        };
        let key = OrderKey::Relevance {
            score: 48,
            name: "n".into(),
            identifier: "i".into(),
        };
        request.set_order(Sort::Relevance, Some(&key));
        assert_eq!(request.sort(), Sort::Relevance);
        assert_eq!(request.after_key(), Some(key));
        assert_eq!(
            crate::extension(&request.extensions, keys::REQUEST_AFTER_SCORE),
            Some("48")
        );
        let key = OrderKey::Updated {
            updated: None,
            name: "n".into(),
            identifier: "i".into(),
        };
        request.set_order(Sort::Updated, Some(&key));
        assert_eq!(request.after_key(), Some(key));
        assert_eq!(
            crate::extension(&request.extensions, keys::REQUEST_AFTER_UPDATED),
            Some("")
        );
        assert_eq!(
            crate::extension(&request.extensions, keys::REQUEST_AFTER_SCORE),
            None
        );
        request.set_order(Sort::Name, None);
        assert_eq!(
            request.extensions.as_slice(),
            [Extension::new("x-other", "kept")]
        );
        assert_eq!(request.after, ROption::RNone);
        assert_eq!(request.sort(), Sort::Name);
        // Missing seek facts read as the lowest position of their kind.
        request.extensions = vec![Extension::new(keys::REQUEST_SORT, "relevance")].into();
        request.after = ROption::RSome(crate::SeekKey {
            name: "n".into(),
            identifier: "i".into(),
        });
        assert_eq!(
            request.after_key(),
            Some(OrderKey::Relevance {
                score: 0,
                name: "n".into(),
                identifier: "i".into()
            })
        );
        request.extensions = vec![Extension::new(keys::REQUEST_SORT, "newest")].into();
        assert_eq!(request.sort(), Sort::Name);
    }
}

#[cfg(test)]
mod dropping_tests {
    use super::*;
    use crate::SeekKey;

    fn item(name: &str) -> Summary {
        Summary {
            name: name.into(),
            identifier: name.into(),
            ..Default::default()
        }
    }

    fn request() -> ListRequest {
        ListRequest {
            limit: 10,
            ..Default::default()
        }
    }

    #[test]
    fn an_item_with_a_bad_field_is_dropped_alone() {
        let mut items = vec![item("a"), item("b"), item("c"), item("d")];
        items[1].short_description = "x".repeat(MAX_TEXT_BYTES + 1).into();
        items[3].categories = (0..=MAX_CATEGORIES).map(|i| i.to_string().into()).collect();
        let dropped = check_list_dropping(&request(), &mut items).unwrap();
        assert_eq!(dropped.count, 2);
        assert_eq!(
            dropped.first.unwrap().message(),
            "item \"b\" has a short_description of 65537 bytes, at most 65536 are allowed"
        );
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        // `check_list` still fails the answer: plugin authors see every breach.
        let mut again = vec![item("a"), item("b")];
        again[1].short_description = "x".repeat(MAX_TEXT_BYTES + 1).into();
        assert!(check_list(&request(), &again).is_err());
    }

    #[test]
    fn keys_order_and_seek_still_fail_the_answer() {
        let mut empty_id = vec![item("a"), item("b")];
        empty_id[1].identifier = "".into();
        assert!(check_list_dropping(&request(), &mut empty_id).is_err());
        let mut long_name = vec![item("a"), item(&"b".repeat(MAX_KEY_BYTES + 1))];
        assert!(check_list_dropping(&request(), &mut long_name).is_err());
        // A dropped item's key still takes part in the order check.
        let mut unordered = vec![item("c"), item("a")];
        unordered[0].short_description = "x".repeat(MAX_TEXT_BYTES + 1).into();
        assert!(check_list_dropping(&request(), &mut unordered)
            .unwrap_err()
            .message()
            .starts_with("items out of order"));
        let mut before_seek = vec![item("a")];
        let seek = ListRequest {
            after: ROption::RSome(SeekKey {
                name: "b".into(),
                identifier: "b".into(),
            }),
            ..request()
        };
        assert!(check_list_dropping(&seek, &mut before_seek).is_err());
    }
}
