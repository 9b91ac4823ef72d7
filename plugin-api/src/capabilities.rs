//! Capability names a plugin may declare in [`crate::Plugin::CAPABILITIES`].
//!
//! A capability is `method@version`: a plugin that declares it answers
//! [`crate::PackageSource::call`] for that method and version. A host calls a method only when the
//! plugin declares it, so a plugin built before the capability existed is never asked (and a
//! plugin asked anyway answers [`crate::ErrorKind::Unsupported`]). A host that does not know a
//! declared capability ignores it. Interface 1.0 defines one, [`STATUS`] (`status@1`), listed in
//! [`KNOWN`]; a minor version adds names here with the JSON shapes of their payload and answer.

/// `status@1`: the source's own state, for operators. The payload is empty; the answer is a JSON
/// object of the plugin's choosing (for example, per repository: the last successful refresh and the
/// last error), at most 64 KiB. The host shows it verbatim in `ListPlugins` as the source's
/// `status_json`, asking with a short deadline; a source that does not answer in time, or answers
/// something that is not a JSON object, shows none.
pub const STATUS: &str = "status";

/// Every capability this version of the interface defines, as `method@version`: what a host built
/// on it knows and uses. `tributary plugin check` marks any other declared capability as unknown.
pub const KNOWN: &[&str] = &["status@1"];

/// Whether `capability` (`method@version`) is one of [`KNOWN`].
pub fn is_known(capability: &str) -> bool {
    KNOWN.contains(&capability)
}

/// The capability string for `method` at `version`.
pub fn name(method: &str, version: u32) -> String {
    format!("{method}@{version}")
}

/// Whether `declared` includes `method` at `version`.
pub fn declares<S: AsRef<str>>(declared: &[S], method: &str, version: u32) -> bool {
    let wanted = name(method, version);
    declared.iter().any(|c| c.as_ref() == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_at_1_is_known_and_other_names_are_not() {
        assert_eq!(KNOWN, [name(STATUS, 1)]);
        assert!(is_known("status@1"));
        assert!(!is_known("status@2"));
        assert!(!is_known("detail.batch@1"));
        assert!(declares(KNOWN, STATUS, 1));
    }
}
