//! The root module and the source trait object: the exact surface the host loads.
//!
//! The host never calls a plugin's Rust traits directly. [`root_module`] wraps a [`Plugin`] in a
//! [`PluginMod`] whose functions, and the [`Source`] object's methods, all run under [`guard`].

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
    types::{Detail, ListRequest, PluginError, PluginInfo, Summary},
    PackageSource, Plugin, INTERFACE_VERSION,
};

/// A source as the host holds it: an FFI-safe trait object.
#[sabi_trait]
pub trait Source: Send + Sync {
    /// See [`PackageSource::list`].
    fn list(&self, request: &ListRequest) -> RResult<RVec<Summary>, PluginError>;

    /// See [`PackageSource::detail`].
    #[sabi(last_prefix_field)]
    fn detail(&self, identifier: RStr<'_>) -> RResult<Detail, PluginError>;
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
    pub new_source: extern "C" fn(config: RStr<'_>) -> RResult<SourceBox, PluginError>,
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
}

extern "C" fn info<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: RString::from(P::NAME),
        version: RString::from(P::VERSION),
        description: RString::from(P::DESCRIPTION),
        interface_major: INTERFACE_VERSION.0,
        interface_minor: INTERFACE_VERSION.1,
    }
}

extern "C" fn new_source<P: Plugin>(config: RStr<'_>) -> RResult<SourceBox, PluginError> {
    guard(|| {
        P::new_source(config.as_str())
            .map(|source| Source_TO::from_value(Guarded(source), TD_Opaque))
    })
    .into()
}

/// Builds the root module for `P`. Called by the code [`crate::export_plugin!`] generates.
#[doc(hidden)]
pub fn root_module<P: Plugin>() -> PluginMod_Ref {
    use abi_stable::prefix_type::PrefixTypeTrait;
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
