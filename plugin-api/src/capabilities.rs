//! Capability names a plugin may declare in `Plugin::CAPABILITIES`.
//!
//! A capability is `method@version`: a plugin that declares it answers
//! `PackageSource::call` for that method and version, or (for a capability that is not a
//! call, like [`LIST_SORT`]) honours the request keys it names. A host uses a capability only when
//! the plugin declares it, so a plugin built before the capability existed is never asked (and a
//! plugin called anyway answers `ErrorKind::Unsupported`). A host that does not know a
//! declared capability ignores it. Interface 1.0 defines [`STATUS`] (`status@1`); 1.1 adds
//! [`LIST_SORT`] (`list.sort@1`) and [`FACETS`] (`facets@1`). All are listed in [`KNOWN`]; a minor
//! version adds names here with the JSON shapes of their payload and answer.

/// `status@1`: the source's own state, for operators. The payload is empty; the answer is a JSON
/// object of the plugin's choosing (for example, per repository: the last successful refresh and the
/// last error), at most 64 KiB. The host shows it verbatim in `ListPlugins` as the source's
/// `status_json`, asking with a short deadline; a source that does not answer in time, or answers
/// something that is not a JSON object, shows none.
pub const STATUS: &str = "status";

/// `list.sort@1` (interface 1.1): the source honours the request key
/// `keys::REQUEST_SORT` for `relevance` (relevance version 1,
/// `order::RELEVANCE_VERSION`) and `updated`, with the seek keys
/// `keys::REQUEST_AFTER_SCORE` and `keys::REQUEST_AFTER_UPDATED`: it returns its
/// matches in the requested order (`order::OrderKey`), strictly after the seek point, at
/// most `limit`, and a short page only when no further match exists, the contract of the order by
/// name. `SearchIndex::select` and `ListRequest::select` do all of it. A source
/// that sorts by update time sends `keys::SUMMARY_UPDATED` on its summaries. Not a call:
/// `PackageSource::call` is not asked for it.
pub const LIST_SORT: &str = "list.sort";

/// `facets@1` (interface 1.1): counts of the matches of a filter, in total, per repository, per
/// category and deprecated. The payload is a `FacetsRequest` as JSON, the answer a
/// `Facets` as JSON; see `facets` for both shapes and their bounds.
/// `facets::call` answers it over a `SearchIndex`.
pub const FACETS: &str = "facets";

/// Every capability this version of the interface defines, as `method@version`: what a host built
/// on it knows and uses. `tributary plugin check` marks any other declared capability as unknown.
pub const KNOWN: &[&str] = &["status@1", "list.sort@1", "facets@1"];

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
    fn the_defined_capabilities_are_known_and_other_names_are_not() {
        assert_eq!(
            KNOWN,
            [name(STATUS, 1), name(LIST_SORT, 1), name(FACETS, 1)]
        );
        assert!(is_known("status@1"));
        assert!(is_known("list.sort@1"));
        assert!(is_known("facets@1"));
        assert!(!is_known("facets@2"));
        assert!(!is_known("status@2"));
        assert!(!is_known("detail.batch@1"));
        assert!(declares(KNOWN, STATUS, 1));
    }
}
