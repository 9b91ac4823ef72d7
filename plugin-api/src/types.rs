//! FFI-safe data exchanged between the host and a plugin.
//!
//! Every type is `#[repr(C)]` and derives `StableAbi`, so `abi_stable` checks its layout when a library
//! is loaded. Changing a field here changes the interface: see `COMPATIBILITY.md`.

use std::cmp::Ordering;

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

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
    /// A search query (the `query` module): whitespace-separated terms, each a case-insensitive
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
    /// The plugin panicked; set by the panic guard (`guard`).
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
