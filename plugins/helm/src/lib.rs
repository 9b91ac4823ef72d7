//! `helm`: serves the charts of Helm chart repositories from their `index.yaml` files.
//!
//! Configuration (the `config` table of a `[[source]]`):
//! ```toml
//! [[source]]
//! name = "charts"
//! plugin = "helm"
//! [[source.config.repositories]]
//! name = "bitnami"
//! url = "charts/bitnami-index.yaml"        # relative to the Tributary config file's folder
//! [[source.config.repositories]]
//! name = "community"
//! url = "file:///srv/charts/index.yaml"
//! ```
//! or inline: `config = { repositories = [{ name = "bitnami", url = "charts/bitnami-index.yaml" }] }`.
//!
//! `url` names a local file, as a path or a `file://` URL; remote repositories (`https://...`) are
//! not supported yet. Repository names are unique and contain no `/`.
//!
//! Every chart of every repository is one package, identified as `"<repository>/<chart>"`. Its
//! latest version is the highest stable release by semantic versioning (Helm's lenient form: `v1.2`
//! is `1.2.0`), or the highest pre-release when the chart has no stable release; versions that are
//! not semantic versions are listed after all others. The summary and the detail's description,
//! links, maintainers, keywords and `deprecated` flag come from that latest version; the category is
//! the Artifact Hub annotation `category`.
//!
//! Each index file is read again whenever its modification time or size changes, so a refreshed
//! index is served on the next request without a restart.

mod config;
mod index;
mod split;
mod version;

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use tributary_plugin_api::{
    export_plugin, Detail, Host, ListRequest, PackageSource, Plugin, PluginError, RString, Summary,
};

use crate::{config::Repository, index::Extra};

/// The plugin: metadata and the constructor.
pub struct HelmPlugin;

impl Plugin for HelmPlugin {
    const NAME: &'static str = "helm";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Helm chart repositories (index.yaml)";

    type Source = HelmSource;

    fn new_source(_host: Host, config: &str) -> Result<HelmSource, PluginError> {
        let repositories = config::parse(config)?;
        let indexes = repositories
            .iter()
            .map(|repo| RepoIndex::read(repo).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let failures = vec![None; indexes.len()];
        Ok(HelmSource {
            repositories,
            loaded: RwLock::new(Arc::new(Loaded::new(indexes, failures))),
            reloading: Mutex::new(()),
        })
    }
}

export_plugin!(HelmPlugin);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// One repository's index as last read: summaries sorted by name (which, within a repository, is the
/// `(name, identifier)` order) and the rest of each chart's detail beside them.
struct RepoIndex {
    stamp: Stamp,
    summaries: Vec<Summary>,
    extras: Vec<Extra>,
}

impl RepoIndex {
    fn read(repo: &Repository) -> Result<RepoIndex, PluginError> {
        let path = &repo.path;
        let stamp = stamp(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            PluginError::unavailable(format!(
                "helm repository {:?}: cannot read index {}: {e}",
                repo.name,
                path.display()
            ))
        })?;
        let mut charts = index::parse(&text).map_err(|e| {
            PluginError::unavailable(format!(
                "helm repository {:?}: index {} is not valid: {e}",
                repo.name,
                path.display()
            ))
        })?;
        drop(text);

        let repository = RString::from(repo.name.as_str());
        for chart in &mut charts {
            let s = &mut chart.summary;
            s.identifier = RString::from(format!("{}/{}", repo.name, s.name));
            s.repository = repository.clone();
        }
        charts.sort_unstable_by(|a, b| a.summary.key_cmp(&b.summary));
        if let Some(pair) = charts
            .windows(2)
            .find(|pair| pair[0].summary.name == pair[1].summary.name)
        {
            return Err(PluginError::unavailable(format!(
                "helm repository {:?}: index {}: chart {:?} appears twice in entries",
                repo.name,
                path.display(),
                pair[0].summary.name.as_str()
            )));
        }
        let (summaries, extras) = charts.into_iter().map(|c| (c.summary, c.extra)).unzip();
        Ok(RepoIndex {
            stamp,
            summaries,
            extras,
        })
    }

    /// The position of the chart named `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.summaries
            .binary_search_by(|s| s.name.as_bytes().cmp(name.as_bytes()))
            .ok()
    }
}

/// Every repository's index, and their summaries merged in `(name, identifier)` order.
struct Loaded {
    /// In configuration order.
    indexes: Vec<Arc<RepoIndex>>,
    /// Beside each index: the stamp of the file and the error of its last read when that read failed
    /// (the index is then the one read before).
    failures: Vec<Option<(Stamp, PluginError)>>,
    /// The merged listing; empty when there is one repository, whose own list is the listing.
    merged: Vec<Summary>,
}

impl Loaded {
    fn new(indexes: Vec<Arc<RepoIndex>>, failures: Vec<Option<(Stamp, PluginError)>>) -> Loaded {
        let merged = if indexes.len() == 1 {
            Vec::new()
        } else {
            let mut merged: Vec<Summary> = indexes
                .iter()
                .flat_map(|index| index.summaries.iter().cloned())
                .collect();
            merged.sort_unstable_by(Summary::key_cmp);
            merged
        };
        Loaded {
            indexes,
            failures,
            merged,
        }
    }

    fn summaries(&self) -> &[Summary] {
        match self.indexes.as_slice() {
            [only] => &only.summaries,
            _ => &self.merged,
        }
    }

    /// Whether the file of repository `i`, whose stamp is now `now`, changed since it was last read.
    fn is_stale(&self, i: usize, now: &Stamp) -> bool {
        match &self.failures[i] {
            Some((failed, _)) => failed != now,
            None => self.indexes[i].stamp != *now,
        }
    }

    /// The error of the first repository whose last read failed.
    fn failure(&self) -> Option<&PluginError> {
        self.failures.iter().flatten().map(|(_, e)| e).next()
    }
}

/// One configured set of Helm repositories.
pub struct HelmSource {
    repositories: Vec<Repository>,
    loaded: RwLock<Arc<Loaded>>,
    /// Held while indexes are read again, so that concurrent calls read a changed file once.
    reloading: Mutex<()>,
}

impl HelmSource {
    fn snapshot(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stamps of the repositories' files as they are now.
    fn stamps(&self) -> Vec<Stamp> {
        self.repositories.iter().map(|r| stamp(&r.path)).collect()
    }

    /// `loaded` as a result: the error of a file that failed to read, if any.
    fn result(loaded: Arc<Loaded>) -> Result<Arc<Loaded>, PluginError> {
        match loaded.failure() {
            Some(error) => Err(error.clone()),
            None => Ok(loaded),
        }
    }

    /// The current indexes, those whose file changed since the last read read again first. A file
    /// that fails to read is read again only once it changes; until then its error is returned.
    fn current(&self) -> Result<Arc<Loaded>, PluginError> {
        let loaded = self.snapshot();
        let stamps = self.stamps();
        if !(0..stamps.len()).any(|i| loaded.is_stale(i, &stamps[i])) {
            return Self::result(loaded);
        }

        let _reloading = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        // Another call may have read the files while this one waited.
        let loaded = self.snapshot();
        let stamps = self.stamps();
        let mut indexes = loaded.indexes.clone();
        let mut failures = loaded.failures.clone();
        let mut changed = false;
        for (i, repo) in self.repositories.iter().enumerate() {
            if !loaded.is_stale(i, &stamps[i]) {
                continue;
            }
            changed = true;
            match RepoIndex::read(repo) {
                Ok(index) => {
                    indexes[i] = Arc::new(index);
                    failures[i] = None;
                }
                Err(error) => failures[i] = Some((stamps[i], error)),
            }
        }
        if !changed {
            return Self::result(loaded);
        }
        let fresh = Arc::new(Loaded::new(indexes, failures));
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Self::result(fresh)
    }
}

impl PackageSource for HelmSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        Ok(request.select(self.current()?.summaries()))
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        let not_found = || PluginError::not_found(format!("no chart with id {identifier:?}"));
        let (repo, chart) = identifier.split_once('/').ok_or_else(not_found)?;
        let position = self
            .repositories
            .iter()
            .position(|r| r.name == repo)
            .ok_or_else(not_found)?;
        let loaded = self.current()?;
        let index = &loaded.indexes[position];
        let i = index.find(chart).ok_or_else(not_found)?;
        let summary = index.summaries[i].clone();
        let extra = index.extras[i].clone();
        Ok(Detail {
            readme: summary.short_description.clone(),
            summary,
            versions: extra.versions,
            home_url: extra.home_url,
            source_urls: extra.source_urls,
            maintainers: extra.maintainers,
            keywords: extra.keywords,
            extensions: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests;
