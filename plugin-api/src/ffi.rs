//! The root module and the source trait object: the exact surface the host loads.
//!
//! The host never calls a plugin's Rust traits directly. [`root_module`] wraps a [`Plugin`] in a
//! [`PluginMod`] whose functions, and the [`Source`] object's methods, all run under [`guard`].
//!
//! Everything here is frozen for interface 1.x: `abi_stable` rejects a library whose types differ in
//! any way from the host's (a host whose types gained a field rejects every older plugin). What may
//! grow goes through the open ends designed in: [`HostContext::extensions`], the extension slots of
//! [`Summary`] and [`crate::Detail`], [`PluginInfo::capabilities`], [`Source::call`] and
//! [`HostContext::call`]. See `COMPATIBILITY.md`.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_trait::TD_Opaque,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::{
    guard,
    host::Host,
    types::{Detail, Extension, ListRequest, PluginError, PluginInfo, Summary},
    PackageSource, Plugin, INTERFACE_VERSION,
};

/// What the host tells a source when it builds it, and how the source calls back into the host.
///
/// The host owns it and lends it for the duration of [`PluginMod::new_source`]; the plugin copies
/// what it keeps (the [`Host`] handle does). The function pointers point into the host binary and
/// stay valid for the life of the process.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct HostContext {
    /// The `[[source]]` name this source serves under (unique in the host).
    pub source_name: RString,
    /// The folder of the host's configuration file: relative paths in the configuration are
    /// relative to it. Empty when the host has no configuration file.
    pub base_dir: RString,
    /// The host's interface version (the plugin's own is [`crate::INTERFACE_VERSION`]).
    pub interface_major: u32,
    pub interface_minor: u32,
    /// The host program and its version, for messages (`"tributary 0.1.0"`).
    pub host_version: RString,
    /// Writes `message` to the host's log at `level` ([`crate::host::Level`]), tagged with `source`.
    pub log: extern "C" fn(level: u32, source: RStr<'_>, message: RStr<'_>),
    /// Milliseconds left for the call this thread is running for the host (a `list`, a `detail`, a
    /// `call`), or `u64::MAX` when the thread runs no call with a deadline.
    pub time_left_ms: extern "C" fn() -> u64,
    /// A call into the host by name and version, for host services added after 1.0. A host answers
    /// [`crate::ErrorKind::Unsupported`] for a method or version it does not have.
    pub call: extern "C" fn(
        method: RStr<'_>,
        version: u32,
        payload: RStr<'_>,
    ) -> RResult<RString, PluginError>,
    /// Further facts about the host and this source, keys in [`crate::keys`]. A plugin ignores
    /// keys it does not know and uses a default for keys a host does not send.
    pub extensions: RVec<Extension>,
}

/// A source as the host holds it: an FFI-safe trait object.
#[sabi_trait]
pub trait Source: Send + Sync {
    /// See [`PackageSource::list`].
    fn list(&self, request: &ListRequest) -> RResult<RVec<Summary>, PluginError>;

    /// See [`PackageSource::detail`].
    fn detail(&self, identifier: RStr<'_>) -> RResult<Detail, PluginError>;

    /// See [`PackageSource::call`].
    #[sabi(last_prefix_field)]
    fn call(
        &self,
        method: RStr<'_>,
        version: u32,
        payload: RStr<'_>,
    ) -> RResult<RString, PluginError>;
}

/// The boxed, type-erased source the host receives from a constructor.
pub type SourceBox = Source_TO<'static, RBox<()>>;

/// The root module of a plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's metadata.
    pub info: extern "C" fn() -> PluginInfo,

    /// Builds one source from its JSON configuration.
    #[sabi(last_prefix_field)]
    pub new_source:
        extern "C" fn(host: &HostContext, config: RStr<'_>) -> RResult<SourceBox, PluginError>,
}

impl RootModule for PluginMod_Ref {
    declare_root_module_statics! {PluginMod_Ref}
    const BASE_NAME: &'static str = "tributary_plugin";
    const NAME: &'static str = "tributary_plugin";
    // The interface's major version, not this crate's package version: abi_stable rejects a library
    // whose major differs, and accepts any minor. See COMPATIBILITY.md.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}

/// Wraps a plugin's source so that every call is guarded.
struct Guarded<S>(S);

impl<S: PackageSource> Source for Guarded<S> {
    fn list(&self, request: &ListRequest) -> RResult<RVec<Summary>, PluginError> {
        guard(|| self.0.list(request).map(RVec::from)).into()
    }

    fn detail(&self, identifier: RStr<'_>) -> RResult<Detail, PluginError> {
        guard(|| self.0.detail(identifier.as_str())).into()
    }

    fn call(
        &self,
        method: RStr<'_>,
        version: u32,
        payload: RStr<'_>,
    ) -> RResult<RString, PluginError> {
        guard(|| {
            self.0
                .call(method.as_str(), version, payload.as_str())
                .map(RString::from)
        })
        .into()
    }
}

extern "C" fn info<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: RString::from(P::NAME),
        version: RString::from(P::VERSION),
        description: RString::from(P::DESCRIPTION),
        interface_major: INTERFACE_VERSION.0,
        interface_minor: INTERFACE_VERSION.1,
        capabilities: P::CAPABILITIES.iter().map(|c| RString::from(*c)).collect(),
    }
}

extern "C" fn new_source<P: Plugin>(
    host: &HostContext,
    config: RStr<'_>,
) -> RResult<SourceBox, PluginError> {
    guard(|| {
        P::new_source(Host::from_context(host), config.as_str())
            .map(|source| Source_TO::from_value(Guarded(source), TD_Opaque))
    })
    .into()
}

/// Builds the root module for `P`. Called by the code [`crate::export_plugin!`] generates.
#[doc(hidden)]
pub fn root_module<P: Plugin>() -> PluginMod_Ref {
    use abi_stable::prefix_type::PrefixTypeTrait;
    // Runs once, when the host loads the library: from here on this library's own copy of std
    // reports panics to `guard` instead of printing them.
    crate::panic::install_hook();
    PluginMod {
        info: info::<P>,
        new_source: new_source::<P>,
    }
    .leak_into_prefix()
}

/// Wraps an in-process [`PackageSource`] exactly as a loaded plugin's source is wrapped, so that the
/// host's engine (and its benchmarks) can run a source linked into the same binary.
pub fn source_box<S: PackageSource>(source: S) -> SourceBox {
    Source_TO::from_value(Guarded(source), TD_Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_stable_version_is_the_interface_major() {
        let v = abi_stable::sabi_types::VersionNumber::new(
            <PluginMod_Ref as RootModule>::VERSION_STRINGS,
        )
        .unwrap();
        assert_eq!(v.major, INTERFACE_VERSION.0);
        assert_eq!((v.minor, v.patch), (0, 0), "only the major is a gate");
    }
}
