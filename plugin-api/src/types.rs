//! FFI-safe data exchanged between the host and a plugin.
//!
//! Every type is `#[repr(C)]` and derives `StableAbi`, so `abi_stable` checks its layout when a library
//! is loaded. Changing a field here changes the interface: see `COMPATIBILITY.md`.

use std::cmp::Ordering;

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

use crate::keys;
use crate::order::{self, OrderKey, Sort};
use crate::query::{CompiledFilter, QueryError};

/// One package as it appears in a listing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The source's own identifier, unique within the source and never empty.
    pub identifier: RString,
    /// The package name; the primary sort key.
    pub name: RString,
    pub display_name: RString,
    pub latest_version: RString,
    pub latest_app_version: RString,
    pub short_description: RString,
    pub icon_url: RString,
    pub categories: RVec<RString>,
    /// The repository within the source that holds the package (may be empty).
    pub repository: RString,
    /// The package is deprecated. Listings leave deprecated packages out unless the filter asks for
    /// them ([`Filter::include_deprecated`]).
    pub deprecated: bool,
    /// Extension slot: further facts as key/value pairs, keys documented in [`crate::keys`]. A host
    /// ignores keys it does not know; a source leaves out keys it has no value for.
    pub extensions: RVec<Extension>,
}

/// One key/value pair of an extension slot ([`Summary::extensions`], [`Detail::extensions`],
/// [`ListRequest::extensions`], and the `extensions` of the host context a source is built with).
///
/// Extension slots are how the interface grows inside a major version: the layout of every type is
/// frozen at 1.0 (see `COMPATIBILITY.md`), but a new key is not part of the layout. Keys are
/// lower-case, dot-separated and documented in [`crate::keys`]; a value is text (JSON text when the
/// key's documentation says so). Keys starting with `x-` are private to a plugin and its operators.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extension {
    pub key: RString,
    pub value: RString,
}

impl Extension {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Extension {
        Extension {
            key: RString::from(key.into()),
            value: RString::from(value.into()),
        }
    }
}

/// The value of `key` in an extension slot, if present (the first one when repeated).
pub fn extension<'a>(slot: &'a [Extension], key: &str) -> Option<&'a str> {
    slot.iter()
        .find(|e| e.key.as_str() == key)
        .map(|e| e.value.as_str())
}

impl Summary {
    /// Compares two items of one source by `(name, identifier)`, as bytes: the order a source keeps.
    pub fn key_cmp(&self, other: &Summary) -> Ordering {
        self.name
            .as_bytes()
            .cmp(other.name.as_bytes())
            .then_with(|| self.identifier.as_bytes().cmp(other.identifier.as_bytes()))
    }

    /// Whether this item comes strictly after `key` in `(name, identifier)` byte order.
    pub fn is_after(&self, key: &SeekKey) -> bool {
        (self.name.as_bytes(), self.identifier.as_bytes())
            > (key.name.as_bytes(), key.identifier.as_bytes())
    }
}

/// A position in a source's `(name, identifier)` order. A listing resumes strictly after it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeekKey {
    pub name: RString,
    pub identifier: RString,
}

/// What a listing keeps. Empty fields do not filter.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A search query ([`crate::query`]): whitespace-separated terms, each a case-insensitive
    /// substring of the name, display name or short description, all of which must occur;
    /// `"quoted phrases"`, `-exclusions` and `or` between groups (interface 1.1). A query of one word
    /// means what it meant in 1.0. Empty: no condition.
    pub query: RString,
    /// Any of these categories (exact match).
    pub categories: RVec<RString>,
    /// Any of these repositories (exact match).
    pub repositories: RVec<RString>,
    /// Keep deprecated packages too. `false` (the default) leaves them out, as Artifact Hub and
    /// Kubeapps do.
    pub include_deprecated: bool,
}

impl Filter {
    /// Whether the filter keeps nothing out.
    ///
    /// Not empty by default: the default filter leaves deprecated packages out.
    pub fn is_empty(&self) -> bool {
        self.query.is_empty()
            && self.categories.is_empty()
            && self.repositories.is_empty()
            && self.include_deprecated
    }

    /// The definition of a match, shared by the host and the plugins: not deprecated unless
    /// [`Filter::include_deprecated`], in one of [`Filter::repositories`] and with one of
    /// [`Filter::categories`] when they are given, and matching the query ([`crate::Query::matches`]). A
    /// query that does not parse matches nothing.
    ///
    /// This parses the query on every call: to test many items, [`Filter::compile`] once and use
    /// [`CompiledFilter::matches`].
    ///
    /// This function is behaviour each plugin compiles in: a plugin keeps the copy it was built with,
    /// so a change to it reaches plugins only when they are rebuilt (the host re-applies the filter,
    /// so answers stay correct meanwhile). Interface 1.1 changed it for queries of several words
    /// (1.0 took the whole query as one substring). See `COMPATIBILITY.md`.
    pub fn matches(&self, item: &Summary) -> bool {
        self.compile().is_ok_and(|filter| filter.matches(item))
    }

    /// Parses the query once: the compiled filter matches without parsing.
    pub fn compile(&self) -> Result<CompiledFilter, QueryError> {
        CompiledFilter::new(self)
    }
}

/// One call to [`crate::PackageSource::list`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Return only items strictly after this key; `None` for the start of the listing.
    pub after: ROption<SeekKey>,
    /// The most items to return; fewer only when the listing ends. Always at least 1.
    pub limit: u32,
    pub filter: Filter,
    /// Extension slot for request facts added after 1.0 (keys in [`crate::keys`]). A source ignores
    /// keys it does not know.
    pub extensions: RVec<Extension>,
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
                    .filter(|t| order::is_normalized(t))
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
        let Ok(filter) = self.filter.compile() else {
            return Vec::new();
        };
        let limit = self.limit as usize;
        let after = self.after_key();
        if let Some(seek) = order::by_name(self.sort(), &filter, after.as_ref()) {
            let start = match seek {
                Some(key) => sorted.partition_point(|item| !item.is_after(&key)),
                None => 0,
            };
            let rest = &sorted[start..];
            if filter.is_empty() {
                return rest[..limit.min(rest.len())].to_vec();
            }
            return rest
                .iter()
                .filter(|item| filter.matches(item))
                .take(limit)
                .cloned()
                .collect();
        }
        let mut first = order::First::new(self.sort(), after.as_ref(), limit);
        for item in sorted {
            first.offer(&filter, item);
        }
        first.into_items()
    }
}

/// One published version of a package.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub version: RString,
    pub app_version: RString,
    /// When the version was published, as the source gives it.
    pub created: RString,
    pub digest: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintainer {
    pub name: RString,
    pub email: RString,
    pub url: RString,
}

/// Everything a source knows about one package.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub summary: Summary,
    /// Every version, newest first.
    pub versions: RVec<Version>,
    pub home_url: RString,
    pub source_urls: RVec<RString>,
    pub maintainers: RVec<Maintainer>,
    /// A long description or README text.
    pub readme: RString,
    pub keywords: RVec<RString>,
    /// Extension slot: further facts as key/value pairs (keys in [`crate::keys`]).
    pub extensions: RVec<Extension>,
}

/// The kind of a [`PluginError`]. A number rather than an enum so that a newer plugin can send a
/// kind an older host does not know: the host treats unknown kinds as [`ErrorKind::Internal`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

#[allow(non_upper_case_globals)]
impl ErrorKind {
    /// The source configuration is wrong; the message names the key.
    pub const InvalidConfig: ErrorKind = ErrorKind(1);
    /// The identifier (or another named thing) does not exist.
    pub const NotFound: ErrorKind = ErrorKind(2);
    /// The source cannot answer now (its backend is down, a file is missing); retrying may help.
    pub const Unavailable: ErrorKind = ErrorKind(3);
    /// A bug or an unexpected state in the plugin.
    pub const Internal: ErrorKind = ErrorKind(4);
    /// The plugin panicked; set by [`crate::guard`].
    pub const Panic: ErrorKind = ErrorKind(5);
    /// The request itself is wrong (for example a malformed identifier).
    pub const InvalidArgument: ErrorKind = ErrorKind(6);
    /// The source does not implement this operation or version (the answer to a
    /// [`crate::PackageSource::call`] it does not know).
    pub const Unsupported: ErrorKind = ErrorKind(7);
    /// The process that ran the source died (process isolation only); the message gives the signal
    /// or exit status. Set by the host, never by a plugin.
    pub const Crashed: ErrorKind = ErrorKind(8);
    /// The process that runs the source is starting (process isolation only): no call was made.
    /// Set by the host, never by a plugin.
    pub const Starting: ErrorKind = ErrorKind(9);

    /// A stable lower-case name, used in logs and in API responses.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "invalid_config",
            2 => "not_found",
            3 => "unavailable",
            4 => "internal",
            5 => "panic",
            6 => "invalid_argument",
            7 => "unsupported",
            8 => "crashed",
            9 => "starting",
            _ => "internal",
        }
    }
}

/// An error returned by a plugin: a kind the host maps to a gRPC code, and a one-line message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for PluginError {}

/// What a plugin says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
    /// [`crate::INTERFACE_VERSION`] as the plugin was compiled against it.
    pub interface_major: u32,
    pub interface_minor: u32,
    /// Optional abilities the plugin declares (names in [`crate::capabilities`]): a host uses an
    /// ability only when it is declared, so a plugin built before the ability existed is never asked.
    pub capabilities: RVec<RString>,
}
