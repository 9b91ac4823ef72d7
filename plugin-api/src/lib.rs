//! The stable plugin interface of Tributary.
//!
//! A Tributary plugin is a `cdylib` that depends on this crate alone. It implements two ordinary Rust
//! traits, [`Plugin`] (metadata and a constructor) and [`PackageSource`] (the catalog calls), and
//! exports them with [`export_plugin!`]. The host loads the library, checks that its interface is
//! compatible, and builds one source per configured `[[source]]` from a JSON configuration.
//!
//! # Layout
//! - [`types`]: the FFI-safe data that crosses the boundary (summaries, details, requests, errors).
//! - [`contract`]: the checks the host applies to every answer and error, for plugin tests too.
//! - [`ffi`]: the root module and the `#[sabi_trait]` object; what the host sees.
//! - [`search`]: an index that answers filtered listings without scanning the whole catalog.
//! - [`query`], [`order`], [`facets`] (interface 1.1): the query syntax, the sort orders with the
//!   relevance score and update times, and facet counts.
//! - [`items`]: how the kit reads items, so that a source may keep them in another form than
//!   `Vec<Summary>`.
//! - [`compact`]: details kept in two allocations each until a call asks for one.
//! - [`export_plugin!`] and [`guard`]: how a plugin is exported, with every entry point run under
//!   `catch_unwind` so that a panic becomes an error value instead of ending the host process.
//!
//! # The contract every source keeps
//! Tributary merges the sources' listings into one catalog ordered by **name** (compared as UTF-8
//! bytes), then **source name**, then **identifier**. Within one source the source name is constant,
//! so a source orders its items by `(name, identifier)`, both compared as bytes (the order of
//! `str`'s `Ord`, which is what [`Summary::key_cmp`] implements). A locale collation, a
//! case-insensitive order or a database's default collation is *not* this order.
//!
//! A call to [`PackageSource::list`] with a [`ListRequest`] must return:
//! 1. only items that come **strictly after** `request.after` (all items when it is `None`);
//! 2. in **strictly increasing** `(name, identifier)` order (identifiers are unique within a source
//!    and never empty), or in the order the request asks for (see *Sort orders* below);
//! 3. **at most** `request.limit` items, and **fewer** than `request.limit` only when no further
//!    item exists: a short page tells the host the source is exhausted;
//! 4. only items that match `request.filter` ([`Filter::matches`] is the definition; by default it
//!    leaves deprecated packages out). The host re-applies the filter, so a source that skips
//!    filtering is still correct, only slower.
//!
//! The host checks 1-3 (and field sizes and UTF-8, see [`contract`]) on every response and treats a breach as that source's error (the page is
//! then served without it). Because the host resumes by *key*, not by offset, a source whose data
//! changes between two pages neither repeats nor skips the items that were present before and after
//! the change. [`ListRequest::select`] implements the whole contract over a sorted slice, including an
//! `O(log n)` seek.
//!
//! # Sort orders (interface 1.1)
//! A source that declares [`capabilities::LIST_SORT`] (`list.sort@1`) may be asked for another
//! order through the request key [`keys::REQUEST_SORT`] ([`ListRequest::sort`]): by relevance to
//! the query ([`order::relevance`]: score descending, then `(name, identifier)`) or by update time
//! ([`keys::SUMMARY_UPDATED`] descending, items without one last, then `(name, identifier)`). The
//! rules above hold with "order" meaning that sort's [`OrderKey`]: items strictly increasing by it,
//! strictly after the seek point [`ListRequest::after_key`] (`request.after` carries its `(name,
//! identifier)`, [`keys::REQUEST_AFTER_SCORE`] or [`keys::REQUEST_AFTER_UPDATED`] the rest), at most
//! `limit`, a short page only when no further match exists. [`contract::check_list`] checks the
//! requested order, recomputing scores with the request's query; [`ListRequest::select`] and
//! [`SearchIndex::select`] answer in any order. A source that does not declare the capability is
//! never asked: it keeps the order by name.
//!
//! # Search (interface 1.1)
//! [`Filter::query`] is a query of terms, `"phrases"`, `-exclusions` and `or` ([`query`]); the
//! named call `facets@1` ([`facets`]) counts the matches of a filter.
//!
//! Calls are synchronous and may come from several threads at once (`Send + Sync`). The host runs them
//! on threads of the source's own; a plugin must not rely on the host's async runtime (a `tokio` inside the
//! plugin is a different copy with its own thread-locals).
//!
//! # Compatibility
//! See `COMPATIBILITY.md` beside this crate: the interface version is [`INTERFACE_VERSION`], the host
//! accepts plugins of the same major version, the layout of every type here is checked by
//! `abi_stable` when the library is loaded and is frozen for all of 1.x, and 1.x grows through
//! extension keys, capabilities and named calls.

#![allow(non_local_definitions, non_camel_case_types)]

pub mod capabilities;
pub mod compact;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod contract;
pub mod facets;
pub mod ffi;
pub mod host;
pub mod items;
pub mod keys;
pub mod order;
pub mod panic;
pub mod query;
pub mod search;
pub mod types;

pub use facets::{Facets, FacetsRequest};
pub use ffi::{HostContext, PluginMod, PluginMod_Ref, SourceBox, Source_TO};
pub use host::{Host, Level};
pub use items::{Items, SummaryFields};
pub use order::{OrderKey, Sort};
pub use panic::guard;
pub use query::{CompiledFilter, Query, QueryError};
pub use search::SearchIndex;
pub use types::{
    extension, Detail, ErrorKind, Extension, Filter, ListRequest, Maintainer, PluginError,
    PluginInfo, SeekKey, Summary, Version,
};

/// Re-exported so that plugins and the export macro need no direct dependency on `abi_stable`.
pub use abi_stable;
pub use abi_stable::std_types::{ROption, RStr, RString, RVec};

/// The interface version this crate implements, `(major, minor)`.
///
/// The major version is also the version `abi_stable` checks when a library is loaded: a plugin built
/// against another major version is rejected before any of its code runs. A minor version adds only
/// extension keys, capabilities and named calls, which older plugins and hosts do without (see
/// `COMPATIBILITY.md`).
pub const INTERFACE_VERSION: (u32, u32) = (1, 1);

/// What a plugin library provides: metadata and a constructor for sources.
///
/// Implement it on a unit struct and export that struct with [`export_plugin!`].
pub trait Plugin {
    /// The plugin's name, as `[[source]] plugin = "..."` refers to it. Lower-case, no spaces.
    const NAME: &'static str;
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// One line saying what the plugin serves.
    const DESCRIPTION: &'static str;
    /// Optional abilities the sources of this plugin have, named in [`capabilities`]. A host uses an
    /// ability (through [`PackageSource::call`]) only when the plugin declares it.
    const CAPABILITIES: &'static [&'static str] = &[];

    /// The source type this plugin builds.
    type Source: PackageSource;

    /// Builds one source from its configuration, given as JSON text (an object; `{}` when the
    /// operator gave none; keys starting with `$` are the host's, see [`config`]). `host` tells the
    /// source its name and base folder and carries its log; keep it if the source logs. Return
    /// [`ErrorKind::InvalidConfig`] naming the bad key on bad input.
    fn new_source(host: Host, config: &str) -> Result<Self::Source, PluginError>;
}

/// One catalog of packages. See the crate docs for the contract `list` must keep.
pub trait PackageSource: Send + Sync + 'static {
    /// Up to `request.limit` summaries strictly after `request.after`, matching `request.filter`,
    /// in `(name, identifier)` byte order, or in the order the request asks for when the plugin
    /// declares `list.sort@1` (see the crate docs).
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError>;

    /// Everything the source knows about one package. [`ErrorKind::NotFound`] when the identifier is
    /// unknown.
    fn detail(&self, identifier: &str) -> Result<Detail, PluginError>;

    /// A named, versioned operation beyond `list` and `detail`, with JSON text in and out: how a
    /// minor version adds an operation without changing the layout. The host calls a method only
    /// when the plugin declares its capability ([`Plugin::CAPABILITIES`]). The default answers
    /// [`ErrorKind::Unsupported`], as a source must for any method or version it does not know.
    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        let _ = payload;
        Err(PluginError::unsupported(format!(
            "this source has no operation {method} version {version}"
        )))
    }
}

/// Exports a [`Plugin`] implementation as a Tributary plugin library.
///
/// ```ignore
/// pub struct MyPlugin;
/// impl tributary_plugin_api::Plugin for MyPlugin { /* ... */ }
/// tributary_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// The crate must be built as a `cdylib` with `panic = "unwind"` (the default): every entry point
/// runs under [`guard`], so a panic in the plugin reaches the host as an error value naming the
/// panic, never as a crash. With `panic = "abort"` a panic would end the host, so the macro refuses
/// to compile.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = ::core::assert!(
            ::core::cfg!(panic = "unwind"),
            "a Tributary plugin must be built with panic = \"unwind\": with panic = \"abort\" a panic in the plugin ends the host process (remove `panic = \"abort\"` from the Cargo profile)"
        );

        // The same static that `#[abi_stable::export_root_module]` emits, spelled with `$crate`
        // paths so that the plugin crate needs no direct dependency on `abi_stable`. It uses
        // abi_stable's hidden `__call_root_module_loader`, which is why abi_stable is pinned to an
        // exact version in this crate's manifest.
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            fn root_module() -> $crate::PluginMod_Ref {
                $crate::ffi::root_module::<$plugin>()
            }
            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(root_module)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginMod_Ref>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// The key under which the host passes the configuration file's folder inside every source's JSON
/// configuration (also [`Host::base_dir`]). Every key starting with `$` is reserved for the host:
/// [`config::parse`] removes them before parsing, so a plugin that rejects unknown keys keeps
/// working when a newer host adds one.
pub const BASE_DIR_KEY: &str = "$base_dir";

/// The prefix of configuration keys reserved for the host.
pub const HOST_KEY_PREFIX: char = '$';

/// Resolves `path` against `base_dir` unless it is absolute or no base was given.
pub fn resolve_path(
    base_dir: Option<&std::path::Path>,
    path: &std::path::Path,
) -> std::path::PathBuf {
    match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}
