//! `catalog`: serves packages from a JSON file. The smallest complete Tributary plugin, written to be
//! copied: start a new plugin from this file.
//!
//! Configuration (the `config` table of a `[[source]]`):
//! ```toml
//! config = { path = "catalog.json" }   # relative to the Tributary config file's folder
//! ```
//! The file holds `{ "packages": [ { "name": "nginx", "latest_version": "1.2.3", ... } ] }`; see
//! [`Package`] for every field. The file is read again whenever its modification time or size
//! changes, so an edited catalog is served on the next request without a restart.
//!
//! Listings are answered through a [`SearchIndex`] in the order asked for: by name, by relevance
//! or by update time (`list.sort@1`; a package's `created` is its update time); `facets@1` counts
//! the matches per repository and category.
//!
//! A package the host would refuse (a field over its size limit, too many versions: the rules of
//! [`tributary_plugin_api::contract`]) is left out when the file is read, logged, and counted in
//! the `status@1` answer: it costs only itself, not every page that would reach it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use serde::Deserialize;
use tributary_plugin_api::{
    capabilities,
    compact::{give_back_freed_memory, CompactDetails, CompactSummaries},
    config, contract, export_plugin, facets,
    items::SummaryFields,
    keys,
    order::normalize_timestamp,
    Detail, Extension, Host, ListRequest, Maintainer, PackageSource, Plugin, PluginError, RString,
    RVec, SearchIndex, Summary, Version,
};

/// The plugin: metadata and the constructor.
pub struct CatalogPlugin;

impl Plugin for CatalogPlugin {
    const NAME: &'static str = "catalog";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Packages listed in a JSON file";
    /// `status@1`: the packages served, and those dropped with the first one's reason.
    /// `list.sort@1`: listings by relevance and by update time (each package's `created`).
    /// `facets@1`: counts of the matches per repository and category.
    const CAPABILITIES: &'static [&'static str] = &["status@1", "list.sort@1", "facets@1"];

    type Source = CatalogSource;

    fn new_source(host: Host, config: &str) -> Result<CatalogSource, PluginError> {
        let config: Config = config::parse("catalog", config)?;
        let path = config.path.ok_or_else(|| {
            PluginError::invalid_config(
                "catalog config: missing key `path` (the catalog JSON file)",
            )
        })?;
        let path = host.resolve(&path);
        let loaded = Loaded::read(&path)?;
        give_back_freed_memory();
        host.debug(&format!(
            "read {} packages from {}",
            loaded.summaries.len(),
            path.display()
        ));
        if let Some(dropped) = loaded.dropped() {
            host.warn(&dropped);
        }
        Ok(CatalogSource {
            path,
            loaded: RwLock::new(Arc::new(loaded)),
            host,
        })
    }
}

export_plugin!(CatalogPlugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<PathBuf>,
}

/// The catalog file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    packages: Vec<Package>,
}

/// One package of the catalog file. Only `name` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Unique within the file; defaults to `name`.
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    latest_version: String,
    #[serde(default)]
    latest_app_version: String,
    /// When the latest version was published, RFC 3339 (`2023-07-10T10:12:48Z`, offsets and
    /// fractions accepted): the latest version's `created`, and the summary's `package.updated`
    /// normalised to UTC, by which listings sort by update time. Optional.
    #[serde(default)]
    created: String,
    #[serde(default)]
    short_description: String,
    #[serde(default)]
    icon_url: String,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    home_url: String,
    #[serde(default)]
    source_urls: Vec<String>,
    #[serde(default)]
    readme: String,
    #[serde(default)]
    deprecated: bool,
    #[serde(default)]
    keywords: Vec<String>,
    /// Older versions; the latest version is added to them.
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    maintainers: Vec<String>,
}

/// The catalog as last read: summaries sorted by `(name, identifier)`, their search index, and the
/// details beside them.
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    /// Kept compact (the kit's [`CompactSummaries`]): a `Summary` is made only for what a call
    /// returns.
    summaries: CompactSummaries,
    index: SearchIndex,
    /// Position `i` is the rest of the detail of `summaries[i]`, compact (the kit's
    /// [`CompactDetails`]): a detail answered is made from it and the summary.
    details: CompactDetails,
    /// The positions of the summaries in the order of their identifiers, to find a detail.
    by_identifier: Vec<u32>,
    /// Packages left out because they would break the host's contract: how many, and the first
    /// one's reason.
    dropped: Option<(usize, String)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn strings(values: Vec<String>) -> RVec<RString> {
    values.into_iter().map(RString::from).collect()
}

impl Loaded {
    fn read(path: &Path) -> Result<Loaded, PluginError> {
        let stamp = stamp(path);
        let cannot_read = |e: &dyn std::fmt::Display| {
            PluginError::unavailable(format!("cannot read catalog {}: {e}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(|e| cannot_read(&e))?;
        // Parsed as it is read: the file's text is never held whole beside what is made of it.
        let file: CatalogFile = serde_json::from_reader(std::io::BufReader::with_capacity(
            64 << 10,
            file,
        ))
        .map_err(|e| {
            if e.is_io() {
                cannot_read(&e)
            } else {
                PluginError::unavailable(format!("catalog {} is not valid: {e}", path.display()))
            }
        })?;

        let mut details: Vec<Detail> = file.packages.into_iter().map(to_detail).collect();
        details.sort_by(|a, b| a.summary.key_cmp(&b.summary));
        for pair in details.windows(2) {
            if pair[0].summary.identifier == pair[1].summary.identifier {
                return Err(PluginError::unavailable(format!(
                    "catalog {}: package id {:?} appears twice",
                    path.display(),
                    pair[0].summary.identifier.as_str()
                )));
            }
        }
        if let Some(empty) = details.iter().find(|d| d.summary.identifier.is_empty()) {
            return Err(PluginError::unavailable(format!(
                "catalog {}: package {:?} has an empty id",
                path.display(),
                empty.summary.name.as_str()
            )));
        }
        let mut dropped: Option<(usize, String)> = None;
        details.retain(|d| match contract::check_detail(&d.summary.identifier, d) {
            Ok(()) => true,
            Err(violation) => {
                match &mut dropped {
                    Some((count, _)) => *count += 1,
                    None => dropped = Some((1, violation.into_message())),
                }
                false
            }
        });
        let mut summaries = Vec::with_capacity(details.len());
        let mut compact = CompactDetails::with_room_for(&details);
        for mut detail in details {
            // The details' text of all packages is bounded as the summaries' is below.
            if !compact.push(&detail) {
                return Err(PluginError::unavailable(format!(
                    "catalog {}: its packages' details would hold 4 GiB of text or more",
                    path.display()
                )));
            }
            summaries.push(std::mem::take(&mut detail.summary));
        }
        compact.shrink_to_fit();
        let details = compact;
        let summaries = CompactSummaries::new(summaries).map_err(|_| {
            PluginError::unavailable(format!(
                "catalog {}: its packages would hold 4 GiB of text or more",
                path.display()
            ))
        })?;
        // Fewer than 2^32 summaries: each has an identifier of a byte or more in under 4 GiB.
        let mut by_identifier: Vec<u32> = (0..summaries.len() as u32).collect();
        by_identifier.sort_unstable_by(|&a, &b| {
            let identifier = |i: u32| summaries.get(i as usize).identifier();
            identifier(a).cmp(identifier(b))
        });
        Ok(Loaded {
            stamp,
            index: SearchIndex::build_items(&summaries),
            summaries,
            details,
            by_identifier,
            dropped,
        })
    }

    /// "N packages dropped: <the first one's reason>", when packages were left out.
    fn dropped(&self) -> Option<String> {
        self.dropped.as_ref().map(|(count, first)| {
            format!(
                "{count} package{} dropped: {first}",
                if *count == 1 { "" } else { "s" }
            )
        })
    }
}

fn to_detail(p: Package) -> Detail {
    let identifier = p.id.unwrap_or_else(|| p.name.clone());
    let mut versions: Vec<Version> = Vec::with_capacity(p.versions.len() + 1);
    if !p.latest_version.is_empty() {
        versions.push(Version {
            version: RString::from(p.latest_version.as_str()),
            app_version: RString::from(p.latest_app_version.as_str()),
            created: RString::from(p.created.as_str()),
            ..Version::default()
        });
    }
    versions.extend(
        p.versions
            .into_iter()
            .filter(|v| *v != p.latest_version)
            .map(|v| Version {
                version: RString::from(v),
                ..Version::default()
            }),
    );
    Detail {
        summary: Summary {
            identifier: RString::from(identifier),
            name: RString::from(p.name),
            display_name: RString::from(p.display_name),
            latest_version: RString::from(p.latest_version),
            latest_app_version: RString::from(p.latest_app_version),
            short_description: RString::from(p.short_description),
            icon_url: RString::from(p.icon_url),
            categories: strings(p.categories),
            repository: RString::from(p.repository),
            deprecated: p.deprecated,
            extensions: normalize_timestamp(&p.created)
                .map(|time| Extension::new(keys::SUMMARY_UPDATED, time))
                .into_iter()
                .collect(),
        },
        versions: RVec::from(versions),
        home_url: RString::from(p.home_url),
        source_urls: strings(p.source_urls),
        maintainers: p
            .maintainers
            .into_iter()
            .map(|name| Maintainer {
                name: RString::from(name),
                ..Maintainer::default()
            })
            .collect(),
        readme: RString::from(p.readme),
        keywords: strings(p.keywords),
        extensions: RVec::new(),
    }
}

/// One configured catalog.
pub struct CatalogSource {
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    host: Host,
}

impl CatalogSource {
    /// The current catalog, read again first if the file changed since the last read.
    fn current(&self) -> Result<Arc<Loaded>, PluginError> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if loaded.stamp == stamp(&self.path) {
            return Ok(loaded);
        }
        let fresh = Arc::new(Loaded::read(&self.path).inspect_err(|e| {
            self.host
                .warn(&format!("catalog changed but cannot be served: {e}"))
        })?);
        if let Some(dropped) = fresh.dropped() {
            self.host.warn(&dropped);
        }
        let previous = std::mem::replace(
            &mut *self.loaded.write().unwrap_or_else(|e| e.into_inner()),
            fresh.clone(),
        );
        // The catalog replaced is freed here unless a call still holds it.
        drop(previous);
        give_back_freed_memory();
        Ok(fresh)
    }
}

impl PackageSource for CatalogSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        let loaded = self.current()?;
        Ok(loaded.index.select_items(request, &loaded.summaries))
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        let loaded = self.current()?;
        let summaries = &loaded.summaries;
        let found = loaded
            .by_identifier
            .binary_search_by(|&i| summaries.get(i as usize).identifier().cmp(identifier))
            .map_err(|_| PluginError::not_found(format!("no package with id {identifier:?}")))?;
        let at = loaded.by_identifier[found] as usize;
        Ok(loaded.details.detail(at, summaries.get(at).to_summary()))
    }

    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        match (method, version) {
            (capabilities::STATUS, 1) => {
                let loaded = self.current()?;
                Ok(serde_json::json!({
                    "packages": loaded.summaries.len(),
                    "dropped": loaded.dropped.as_ref().map_or(0, |d| d.0),
                    "last_error": loaded.dropped().unwrap_or_default(),
                })
                .to_string())
            }
            (capabilities::FACETS, 1) => {
                let loaded = self.current()?;
                facets::call(payload, |filter| {
                    loaded.index.facets_items(filter, &loaded.summaries)
                })
            }
            _ => Err(PluginError::unsupported(format!(
                "the catalog plugin has no operation {method} version {version}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tributary_plugin_api::conformance::{check, Options};

    use super::*;

    #[test]
    fn the_example_catalog_conforms() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let source = CatalogPlugin::new_source(
            Host::detached("internal", Some(examples)),
            r#"{"path":"catalog.json","$base_dir":"ignored: the host context gives the base"}"#,
        )
        .unwrap();
        let report = check(
            &source,
            &Options {
                capabilities: CatalogPlugin::CAPABILITIES
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                ..Options::default()
            },
        );
        assert!(report.passed(), "{report}");
        assert!(report.items >= 10, "{report}");
    }

    /// Every detail is the package as the file gives it (`to_detail`), its summary the one listed.
    #[test]
    fn each_detail_is_its_package_whole() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let source = CatalogPlugin::new_source(
            Host::detached("internal", Some(examples.clone())),
            r#"{"path":"catalog.json"}"#,
        )
        .unwrap();
        let text = std::fs::read_to_string(examples.join("catalog.json")).unwrap();
        let file: CatalogFile = serde_json::from_str(&text).unwrap();
        let expected: Vec<Detail> = file.packages.into_iter().map(to_detail).collect();
        let listed = source
            .list(&ListRequest {
                limit: 1000,
                filter: tributary_plugin_api::Filter {
                    include_deprecated: true,
                    ..Default::default()
                },
                ..ListRequest::default()
            })
            .unwrap();
        assert_eq!(listed.len(), expected.len());
        for summary in &listed {
            let detail = source.detail(&summary.identifier).unwrap();
            assert_eq!(&detail.summary, summary);
            let want = expected
                .iter()
                .find(|d| d.summary.identifier == summary.identifier)
                .unwrap();
            assert_eq!(&detail, want);
        }
        // Found by a search of the identifiers: one that is not there, before, between and
        // after them, is not found.
        let mut ids: Vec<&str> = listed.iter().map(|s| s.identifier.as_str()).collect();
        ids.sort_unstable();
        let absent = [
            String::new(),
            format!("{}\0", ids[0]),
            format!("{}~", ids[ids.len() - 1]),
        ];
        for id in &absent {
            let error = source.detail(id).unwrap_err();
            assert_eq!(
                error.kind,
                tributary_plugin_api::ErrorKind::NotFound,
                "{id:?}"
            );
        }
    }

    #[test]
    fn packages_sort_by_update_time_and_facets_count() {
        let dir = std::env::temp_dir().join(format!(
            "tributary-catalog-sort-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let catalog = serde_json::json!({ "packages": [
            { "name": "a", "created": "2023-01-01T00:00:00+01:00", "repository": "r1" },
            { "name": "b", "created": "not a time", "categories": ["db", "db"] },
            { "name": "c", "created": "2022-12-31T23:30:00Z", "repository": "r1", "latest_version": "1" },
            { "name": "d", "created": "2024-02-29T00:00:00.5Z", "deprecated": true },
        ] });
        std::fs::write(dir.join("catalog.json"), catalog.to_string()).unwrap();
        let source = CatalogPlugin::new_source(
            Host::detached("c", Some(dir.clone())),
            r#"{"path":"catalog.json"}"#,
        )
        .unwrap();
        let mut request = ListRequest {
            limit: 10,
            ..ListRequest::default()
        };
        request.set_order(tributary_plugin_api::Sort::Updated, None);
        let names: Vec<String> = source
            .list(&request)
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        // a is 2022-12-31T23:00:00Z, before c; b has no valid time; d is deprecated.
        assert_eq!(names, ["c", "a", "b"]);
        let c = source.detail("c").unwrap();
        assert_eq!(
            tributary_plugin_api::order::updated(&c.summary),
            Some("2022-12-31T23:30:00Z")
        );
        assert_eq!(c.versions[0].created.as_str(), "2022-12-31T23:30:00Z");
        let facets = tributary_plugin_api::Facets::from_json(
            &source
                .call("facets", 1, r#"{"include_deprecated": true}"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!((facets.total, facets.deprecated), (4, 1));
        assert_eq!(facets.repositories.get("r1"), Some(&2));
        assert_eq!(facets.categories.get("db"), Some(&1));
        let error = source.call("facets", 1, r#"{"query": "-"}"#).unwrap_err();
        assert_eq!(
            error.message.as_str(),
            "facets@1 payload: key `query`: query: \"-\" at position 1 is not followed by a word or a quoted phrase"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_errors_name_the_key() {
        let host = || Host::detached("c", None);
        let e = CatalogPlugin::new_source(host(), r#"{"path": 3}"#)
            .err()
            .unwrap();
        assert_eq!(
            e.message.as_str(),
            "catalog config: key `path`: invalid type: integer `3`, expected path string"
        );
        let e = CatalogPlugin::new_source(host(), r#"{"paht": "x"}"#)
            .err()
            .unwrap();
        assert!(
            e.message
                .starts_with("catalog config: unknown field `paht`"),
            "{e}"
        );
    }

    #[test]
    fn packages_that_would_break_the_contract_are_dropped_and_reported() {
        let dir =
            std::env::temp_dir().join(format!("tributary-catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = "x".repeat(contract::MAX_TEXT_BYTES + 1);
        let catalog = serde_json::json!({ "packages": [
            { "name": "a" },
            { "name": "b", "short_description": long },
            { "name": "c", "categories": vec!["k"; contract::MAX_CATEGORIES + 1] },
            { "name": "d" },
        ] });
        std::fs::write(dir.join("catalog.json"), catalog.to_string()).unwrap();
        let source = CatalogPlugin::new_source(
            Host::detached("c", Some(dir.clone())),
            r#"{"path":"catalog.json"}"#,
        )
        .unwrap();
        let report = check(&source, &Options::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.items, 2, "{report}");
        let status: serde_json::Value =
            serde_json::from_str(&source.call("status", 1, "").unwrap()).unwrap();
        assert_eq!(status["packages"], 2, "{status}");
        assert_eq!(status["dropped"], 2, "{status}");
        let error = status["last_error"].as_str().unwrap();
        assert!(
            error.starts_with("2 packages dropped: ") && error.contains("short_description"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
