//! Reading items where a source keeps them (part of the kit: no host needs it).
//!
//! The kit's matching, ordering, counting and indexing read an item's fields through
//! [`SummaryFields`] and a sorted collection of items through [`Items`], so that a source may keep
//! its listing in another form than `Vec<Summary>` (such as the kit's `CompactSummaries`)
//! and make a [`Summary`] only for the items a call returns ([`SummaryFields::to_summary`]). Both
//! are implemented for the interface's own types: `&Summary` is an item, `[Summary]` (and
//! `Vec<Summary>`) a collection.

use std::cmp::Ordering;
use std::ops::Range;

use abi_stable::std_types::RString;

use crate::types::{SeekKey, Summary};

/// The fields of one item that listings read, borrowed for `'a` from where the item is kept.
///
/// An implementation is a small copyable handle (`&'a Summary`, or a view into a compact store);
/// every string it gives lives as long as the store, not as long as the handle.
pub trait SummaryFields<'a>: Copy {
    /// The item's categories, in their order.
    type Categories: Iterator<Item = &'a str> + Clone;

    /// [`Summary::identifier`].
    fn identifier(self) -> &'a str;
    /// [`Summary::name`].
    fn name(self) -> &'a str;
    /// [`Summary::display_name`].
    fn display_name(self) -> &'a str;
    /// [`Summary::short_description`].
    fn short_description(self) -> &'a str;
    /// [`Summary::latest_version`].
    fn latest_version(self) -> &'a str;
    /// [`Summary::repository`].
    fn repository(self) -> &'a str;
    /// [`Summary::deprecated`].
    fn deprecated(self) -> bool;
    /// [`Summary::categories`].
    fn categories(self) -> Self::Categories;
    /// The value of the first extension whose key is `key` (its bytes compared), when present and
    /// UTF-8; `None` otherwise.
    fn extension(self, key: &str) -> Option<&'a str>;
    /// The item as the interface's [`Summary`], equal to the one it was made from.
    fn to_summary(self) -> Summary;
}

/// The categories of a [`Summary`], as `&str`.
pub type SummaryCategories<'a> =
    std::iter::Map<std::slice::Iter<'a, RString>, fn(&'a RString) -> &'a str>;

impl<'a> SummaryFields<'a> for &'a Summary {
    type Categories = SummaryCategories<'a>;

    #[inline]
    fn identifier(self) -> &'a str {
        &self.identifier
    }
    #[inline]
    fn name(self) -> &'a str {
        &self.name
    }
    #[inline]
    fn display_name(self) -> &'a str {
        &self.display_name
    }
    #[inline]
    fn short_description(self) -> &'a str {
        &self.short_description
    }
    #[inline]
    fn latest_version(self) -> &'a str {
        &self.latest_version
    }
    #[inline]
    fn repository(self) -> &'a str {
        &self.repository
    }
    #[inline]
    fn deprecated(self) -> bool {
        self.deprecated
    }
    #[inline]
    fn categories(self) -> SummaryCategories<'a> {
        self.categories.iter().map(RString::as_str)
    }
    fn extension(self, key: &str) -> Option<&'a str> {
        // Bytes first: the contract checks no extension, so a value may not be UTF-8.
        let value = self
            .extensions
            .iter()
            .find(|e| e.key.as_bytes() == key.as_bytes())?
            .value
            .as_bytes();
        std::str::from_utf8(value).ok()
    }
    fn to_summary(self) -> Summary {
        self.clone()
    }
}

/// A collection of items addressed by position, sorted by `(name, identifier)` as bytes
/// ([`Summary::key_cmp`]) where the kit asks for a sorted one.
pub trait Items {
    /// The handle to one item.
    type Item<'a>: SummaryFields<'a>
    where
        Self: 'a;

    /// How many items there are.
    fn len(&self) -> usize;

    /// The item at `position` (below [`Items::len`]; panics otherwise).
    fn item(&self, position: usize) -> Self::Item<'_>;

    /// Whether there is no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Items for [Summary] {
    type Item<'a> = &'a Summary;

    #[inline]
    fn len(&self) -> usize {
        <[Summary]>::len(self)
    }

    #[inline]
    fn item(&self, position: usize) -> &Summary {
        &self[position]
    }
}

impl Items for Vec<Summary> {
    type Item<'a> = &'a Summary;

    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }

    #[inline]
    fn item(&self, position: usize) -> &Summary {
        &self[position]
    }
}

/// Compares two items by `(name, identifier)`, as bytes ([`Summary::key_cmp`]).
pub fn key_cmp<'a, 'b>(a: impl SummaryFields<'a>, b: impl SummaryFields<'b>) -> Ordering {
    a.name()
        .as_bytes()
        .cmp(b.name().as_bytes())
        .then_with(|| a.identifier().as_bytes().cmp(b.identifier().as_bytes()))
}

/// Whether `item` comes strictly after `key` in `(name, identifier)` byte order
/// ([`Summary::is_after`]).
#[inline]
pub fn is_after<'a>(item: impl SummaryFields<'a>, key: &SeekKey) -> bool {
    (item.name().as_bytes(), item.identifier().as_bytes())
        > (key.name.as_bytes(), key.identifier.as_bytes())
}

/// The first position in `range` of `items` for which `pred` is false, `pred` being true for a
/// prefix of the range and false for the rest (`slice::partition_point` over a range of items).
pub(crate) fn partition_point<'a, I: Items + ?Sized>(
    items: &'a I,
    range: Range<usize>,
    mut pred: impl FnMut(I::Item<'a>) -> bool,
) -> usize {
    let (mut low, mut high) = (range.start, range.end);
    while low < high {
        let mid = low + (high - low) / 2;
        if pred(items.item(mid)) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}
