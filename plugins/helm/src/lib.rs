//! `helm`: serves the charts of Helm chart repositories from their indexes (local files or over
//! HTTP(S)) and from OCI registries.
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
//! [[source.config.repositories]]
//! name = "private"
//! url = "https://charts.example.com/stable" # the repository; index.yaml is appended
//! username = "reader"
//! password_env = "CHARTS_PASSWORD"          # or password_file; token_env / token_file for a bearer
//! refresh_interval = 300                    # seconds
//! ```
//! Repository names are unique and contain no `/`. A `url` may also be an OCI registry namespace,
//! `oci://registry/namespace` with `charts = [...]` (see [`oci`]). The keys of remote repositories
//! are listed in the README ("Helm repositories: local, HTTP(S), OCI").
//!
//! `ca_file` (PEM) replaces the system's CA store for one repository: it holds the CA certificate
//! that issued the server's certificate. A self-signed server certificate can be its own `ca_file`
//! only when it is not marked as a CA (`openssl req -x509` marks it `CA:TRUE` unless given
//! `-addext basicConstraints=critical,CA:FALSE`); rustls refuses a CA certificate presented as the
//! server's (`CaUsedAsEndEntity`), and the fetch error then says what to do (see
//! `fetch::certificate_hint`).
//!
//! Every chart of every repository is one package, identified as `"<repository>/<chart>"`. Its
//! latest version is the highest stable release by semantic versioning (Helm's lenient form: `v1.2`
//! is `1.2.0`), or the highest pre-release when the chart has no stable release; versions that are
//! not semantic versions are listed after all others. The summary and the detail's description,
//! links, maintainers, keywords and `deprecated` flag come from that latest version; the categories
//! are its annotations `category` and `artifacthub.io/category`. The summary's `package.updated`
//! ([`keys::SUMMARY_UPDATED`]) is that version's `created`, normalised to UTC (none when it is
//! missing or not RFC 3339), so that listings sort by update time (`list.sort@1`); `facets@1`
//! counts matches per repository and category.
//!
//! # Refresh
//! A local index is read again whenever its modification time or size changes. A remote index is
//! fetched by a thread of its own every `refresh_interval` (with jitter), never on a request:
//! conditional requests, gzip, and a SHA-256 of the body so that an unchanged index is not parsed
//! again. Every index is parsed off the request path and swapped in whole. A read that fails (a
//! transport error, a timeout, an HTTP error, invalid YAML, an index over one of the repository's
//! limits, or an index with no charts where the previous one had some) keeps the last good index
//! serving and is logged; a source answers with an error only when none of its repositories has an
//! index. A chart the host's contract would refuse is dropped from its index and reported, so that
//! it costs only itself.
//!
//! # Layout
//! - [`config`]: the configuration, key by key; secrets named, never held in it.
//! - [`fetch`]: one HTTP(S) fetch with redirects, credentials and validators.
//! - [`oci`]: reading the charts of an OCI registry into an index document.
//! - [`index`] and [`split`]: parsing an index into charts (a large local file in pieces as it is
//!   read, never held whole), its nesting bounded first by [`depth`]; [`version`]: ranking
//!   versions; [`extra`]: the rest of a chart's detail kept compact, its versions read by
//!   [`versions`].

mod config;
mod depth;
mod extra;
mod fetch;
mod index;
mod oci;
mod split;
mod version;
mod versions;

use std::{
    mem,
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard, RwLock},
    time::{Duration, SystemTime},
};

use sha2::{Digest, Sha256};
use tributary_plugin_api::{
    capabilities,
    compact::{give_back_freed_memory, CompactSummaries, CompactSummary},
    contract, export_plugin, facets,
    items::{key_cmp, Items, SummaryFields},
    keys, Detail, Extension, Host, ListRequest, PackageSource, Plugin, PluginError, RString,
    SearchIndex, Summary,
};
use url::Url;

use crate::{
    config::{Limits, Location, Remote, Repository},
    extra::{rstrings, ExtraRef, Extras},
    fetch::{Fetched, Validators},
};

/// The plugin: metadata and the constructor.
pub struct HelmPlugin;

impl Plugin for HelmPlugin {
    const NAME: &'static str = "helm";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Helm chart repositories: local index files, HTTP(S) repositories and OCI registries";
    /// `status@1`: each repository's last good refresh, last error and chart count.
    /// `list.sort@1`: listings by relevance and by update time (the latest version's `created`).
    /// `facets@1`: counts of the matches per repository and category.
    const CAPABILITIES: &'static [&'static str] = &["status@1", "list.sort@1", "facets@1"];

    type Source = HelmSource;

    fn new_source(host: Host, config: &str) -> Result<HelmSource, PluginError> {
        let repositories = config::parse(config, host.base_dir())?;
        let mut agents = Vec::new();
        for repo in &repositories {
            if let Location::Http(remote) = &repo.location {
                if remote.insecure_skip_tls_verify {
                    host.warn(&format!(
                        "helm repository {:?}: TLS certificates are not verified \
                         (insecure_skip_tls_verify); anyone on the path can serve its index",
                        repo.name
                    ));
                }
                let agent = fetch::agent(remote).map_err(|e| {
                    PluginError::invalid_config(format!(
                        "helm config: repository {:?}: {e}",
                        repo.name
                    ))
                })?;
                agents.push(agent);
            }
        }
        // Local files are read now: a missing or broken file at start is the operator's to fix.
        let mut indexes = Vec::with_capacity(repositories.len());
        let mut states = Vec::with_capacity(repositories.len());
        for repo in &repositories {
            let mut state = RepoState::default();
            indexes.push(match &repo.location {
                Location::File(path) => {
                    state.stamp = stamp(path);
                    let index = RepoIndex::read_file(&repo.name, path, repo.limits)?;
                    state.last_success = Some(SystemTime::now());
                    state.last_error = index.dropped(&repo.name);
                    if let Some(dropped) = &state.last_error {
                        host.warn(dropped);
                    }
                    Some(Arc::new(index))
                }
                Location::Http(_) => None,
            });
            states.push(state);
        }
        let loaded = Arc::new(Loaded::new(indexes));
        give_back_freed_memory();
        let shared = Arc::new(Shared {
            loaded: RwLock::new(loaded),
            states: Mutex::new(states),
            swapping: Mutex::new(()),
            reading: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            repositories,
            host,
        });
        let mut agents = agents.into_iter();
        for (i, repo) in shared.repositories.iter().enumerate() {
            if let Location::Http(remote) = &repo.location {
                let agent = agents.next().expect("one agent per remote repository");
                let (shared, remote) = (shared.clone(), remote.clone());
                std::thread::Builder::new()
                    .name(format!("helm-refresh-{}", repo.name))
                    .spawn(move || refresh_loop(&shared, i, &remote, &agent))
                    .map_err(|e| {
                        PluginError::internal(format!("cannot start a refresh thread: {e}"))
                    })?;
            }
        }
        Ok(HelmSource { shared })
    }
}

export_plugin!(HelmPlugin);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// One repository's index as last read: summaries sorted by name (which, within a repository, is the
/// `(name, identifier)` order), kept compact, and the rest of each chart's detail beside them.
struct RepoIndex {
    summaries: CompactSummaries,
    /// Built with the index, off the request path: a query costs what it finds.
    search: SearchIndex,
    /// Every chart's detail beyond its summary, in the summaries' order.
    extras: Extras,
    /// Charts left out because their summary or detail would break the host's contract (a field
    /// over its size limit, too many versions): how many, and the first one's reason.
    dropped: Option<(usize, String)>,
}

/// Why an index file gave no index: the file could not be read, or the index in it is refused
/// (the message completes "index <where> ...").
enum FileError {
    Read(std::io::Error),
    Index(String),
}

impl RepoIndex {
    fn read_file(name: &str, path: &Path, limits: Limits) -> Result<RepoIndex, PluginError> {
        let unavailable = |what: String| {
            PluginError::unavailable(format!(
                "helm repository {name:?}: index {} {what}",
                path.display()
            ))
        };
        let cannot_read = |e: std::io::Error| {
            PluginError::unavailable(format!(
                "helm repository {name:?}: cannot read index {}: {e}",
                path.display()
            ))
        };
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        RepoIndex::from_file(name, &file, None, limits)
            .map(|(index, _)| index)
            .map_err(|e| match e {
                FileError::Read(e) => cannot_read(e),
                FileError::Index(what) => unavailable(what),
            })
    }

    /// The index in `file`, read from its start, and whether it was read in pieces: a large index
    /// in Helm's layout is parsed as it is read, piece by piece, never held whole; any other from
    /// its whole text. Relative chart URLs resolve against `base` when given.
    fn from_file(
        name: &str,
        file: &std::fs::File,
        base: Option<&Url>,
        limits: Limits,
    ) -> Result<(RepoIndex, bool), FileError> {
        use std::io::Read as _;
        if let Some(charts) = index::parse_file(file, limits) {
            return charts
                .and_then(|charts| RepoIndex::build(name, charts, base))
                .map(|index| (index, true))
                .map_err(FileError::Index);
        }
        let mut bytes = Vec::new();
        let most = limits.max_index_size.saturating_add(1);
        // Room for the whole file at once: grown by doubling as it is read, the vector would hold
        // up to twice the text. A file longer than the limit fills the room and is refused.
        // (`parse_file` reads at positions: this reads from the start.)
        file.metadata()
            .and_then(|meta| {
                let size = meta.len().min(most);
                bytes.reserve_exact(usize::try_from(size).unwrap_or(0));
                (&*file).take(most).read_to_end(&mut bytes)
            })
            .map_err(FileError::Read)?;
        if bytes.len() as u64 > limits.max_index_size {
            return Err(FileError::Index(format!(
                "is refused: it is larger than max_index_size ({} bytes)",
                limits.max_index_size
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| FileError::Index("is not valid: it is not UTF-8 text".to_owned()))?;
        RepoIndex::parse(name, &text, base, limits)
            .map(|index| (index, false))
            .map_err(FileError::Index)
    }

    /// Parses an index's text. Relative chart URLs resolve against `base` when given. The error
    /// completes "index <where> ...".
    fn parse(
        name: &str,
        text: &str,
        base: Option<&Url>,
        limits: Limits,
    ) -> Result<RepoIndex, String> {
        let charts = index::parse(text, limits)?;
        RepoIndex::build(name, charts, base)
    }

    /// The index of the charts parsed from an index: identifiers set, relative chart URLs resolved
    /// against `base` when given, sorted, charts the host would refuse left out, the search index
    /// built. The error completes "index <where> ...".
    fn build(
        name: &str,
        mut charts: index::Charts,
        base: Option<&Url>,
    ) -> Result<RepoIndex, String> {
        let repository = RString::from(name);
        for (s, extra) in charts.summaries.iter_mut().zip(&mut charts.extras) {
            let mut identifier = String::with_capacity(name.len() + 1 + s.name.len());
            identifier.push_str(name);
            identifier.push('/');
            identifier.push_str(&s.name);
            s.identifier = RString::from(identifier);
            s.repository = repository.clone();
            if let (Some(base), false) = (base, extra.chart_url().is_empty()) {
                if let Ok(url) = base.join(extra.chart_url()) {
                    extra.set_chart_url(url.as_str()).ok_or_else(|| {
                        format!(
                            "is refused: chart {:?}: its detail would hold more than 4 GiB of \
                             text with its chart URL resolved",
                            s.name.as_str()
                        )
                    })?;
                }
            }
        }
        sort_charts(&mut charts);
        if let Some(pair) = charts
            .summaries
            .windows(2)
            .find(|pair| pair[0].name == pair[1].name)
        {
            return Err(format!(
                "is not valid: chart {:?} appears twice in entries",
                pair[0].name.as_str()
            ));
        }
        // A chart the host would refuse is left out here, so that it costs only itself: served,
        // it would fail every page that reaches it, and with it the whole source.
        let mut dropped: Option<(usize, String)> = None;
        let keep: Vec<bool> = charts
            .summaries
            .iter()
            .zip(&charts.extras)
            .map(|(summary, extra)| {
                let checked = contract::check_summary(summary).and_then(|()| {
                    let detail = detail_of(summary.clone(), extra.view());
                    contract::check_detail(&summary.identifier, &detail)
                });
                match checked {
                    Ok(()) => true,
                    Err(violation) => {
                        match &mut dropped {
                            Some((count, _)) => *count += 1,
                            None => dropped = Some((1, violation.into_message())),
                        }
                        false
                    }
                }
            })
            .collect();
        if dropped.is_some() {
            charts.retain(&keep);
            charts.shrink_to_fit();
        }
        drop(keep);
        let index::Charts { summaries, extras } = charts;
        let summaries = CompactSummaries::new(summaries)
            .map_err(|_| "is refused: its summaries would hold 4 GiB of text or more".to_owned())?;
        let extras = Extras::new(extras)
            .map_err(|_| "is refused: its details would hold 4 GiB of text or more".to_owned())?;
        debug_assert_eq!(extras.len(), summaries.len());
        Ok(RepoIndex {
            search: SearchIndex::build_items(&summaries),
            summaries,
            extras,
            dropped,
        })
    }

    /// "N charts dropped: <the first one's reason>", when charts were left out.
    fn dropped(&self, name: &str) -> Option<String> {
        self.dropped.as_ref().map(|(count, first)| {
            format!(
                "helm repository {name:?}: {count} chart{} dropped: {first}",
                if *count == 1 { "" } else { "s" }
            )
        })
    }

    /// The position of the chart named `name`.
    fn find(&self, name: &str) -> Option<usize> {
        let (mut low, mut high) = (0, self.summaries.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self
                .summaries
                .get(mid)
                .name()
                .as_bytes()
                .cmp(name.as_bytes())
            {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}

/// Sorts the charts by `(name, identifier)`, the summaries and the rest of each chart alike, in
/// place: by a permutation of positions when they are not in order already (Helm writes its
/// entries sorted by name).
fn sort_charts(charts: &mut index::Charts) {
    let summaries = &mut charts.summaries;
    if summaries.is_sorted_by(|a, b| a.key_cmp(b).is_le()) {
        return;
    }
    let mut order: Vec<usize> = (0..summaries.len()).collect();
    order.sort_unstable_by(|&a, &b| summaries[a].key_cmp(&summaries[b]));
    permute(&mut order, |a, b| {
        summaries.swap(a, b);
        charts.extras.swap(a, b);
    });
}

/// Applies a permutation in place, one cycle at a time, by swaps: afterwards position `i` holds
/// what position `order[i]` held. `order` is left as the identity.
fn permute(order: &mut [usize], mut swap: impl FnMut(usize, usize)) {
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != start {
            let from = order[at];
            swap(at, from);
            order[at] = at;
            at = from;
        }
        order[at] = at;
    }
}

/// The indexes served: one per repository (none until its first good read), and their summaries
/// merged in `(name, identifier)` order. Replaced whole, never changed in place.
struct Loaded {
    /// In configuration order.
    indexes: Vec<Option<Arc<RepoIndex>>>,
    /// The merged listing, as positions `(n, i)`: item `i` of the `n`th index present; empty when
    /// one index alone is the listing.
    merged: Vec<(u32, u32)>,
    merged_search: SearchIndex,
}

/// The listing served: one index's summaries, or several merged.
enum Listing<'a> {
    One(&'a CompactSummaries),
    Merged {
        /// The summaries of the indexes present, in configuration order.
        stores: Vec<&'a CompactSummaries>,
        order: &'a [(u32, u32)],
    },
}

impl Items for Listing<'_> {
    type Item<'b>
        = CompactSummary<'b>
    where
        Self: 'b;

    #[inline]
    fn len(&self) -> usize {
        match self {
            Listing::One(store) => store.len(),
            Listing::Merged { order, .. } => order.len(),
        }
    }

    #[inline]
    fn item(&self, position: usize) -> CompactSummary<'_> {
        match self {
            Listing::One(store) => store.get(position),
            Listing::Merged { stores, order } => {
                let (n, i) = order[position];
                stores[n as usize].get(i as usize)
            }
        }
    }
}

impl Loaded {
    fn new(indexes: Vec<Option<Arc<RepoIndex>>>) -> Loaded {
        let present = indexes.iter().flatten().count();
        let mut loaded = Loaded {
            indexes,
            merged: Vec::new(),
            merged_search: SearchIndex::default(),
        };
        if present > 1 {
            let stores: Vec<&CompactSummaries> = loaded
                .indexes
                .iter()
                .flatten()
                .map(|i| &i.summaries)
                .collect();
            let mut merged: Vec<(u32, u32)> = stores
                .iter()
                .enumerate()
                .flat_map(|(n, store)| (0..store.len() as u32).map(move |i| (n as u32, i)))
                .collect();
            merged.sort_unstable_by(|&(a, i), &(b, j)| {
                key_cmp(
                    stores[a as usize].get(i as usize),
                    stores[b as usize].get(j as usize),
                )
            });
            let search = SearchIndex::build_items(&Listing::Merged {
                stores,
                order: &merged,
            });
            loaded.merged = merged;
            loaded.merged_search = search;
        }
        loaded
    }

    /// The listing and its search index.
    fn summaries(&self) -> (Listing<'_>, &SearchIndex) {
        let mut present = self.indexes.iter().flatten();
        match (present.next(), present.next()) {
            (Some(only), None) => (Listing::One(&only.summaries), &only.search),
            _ => (
                Listing::Merged {
                    stores: self
                        .indexes
                        .iter()
                        .flatten()
                        .map(|i| &i.summaries)
                        .collect(),
                    order: &self.merged,
                },
                &self.merged_search,
            ),
        }
    }

    fn has_any(&self) -> bool {
        self.indexes.iter().any(Option::is_some)
    }
}

/// What is known of one repository's reads.
#[derive(Default, Clone)]
struct RepoState {
    /// A local file's stamp at its last read, good or not.
    stamp: Stamp,
    /// What the server said of the index served, and the SHA-256 of its body.
    validators: Validators,
    sha256: Option<[u8; 32]>,
    last_success: Option<SystemTime>,
    /// The error of the last read when it failed.
    last_error: Option<String>,
    /// How many bodies were parsed (an unchanged body, by its SHA-256, is not).
    parses: u64,
    /// How many of those were parsed in pieces from their copy in a temporary file.
    parsed_in_pieces: u64,
}

impl RepoState {
    /// "last refreshed at ..." or "never read".
    fn since(&self) -> String {
        match self.last_success {
            Some(at) => format!(
                "last good refresh {}s ago",
                at.elapsed().unwrap_or_default().as_secs()
            ),
            None => "no index read yet".to_owned(),
        }
    }
}

/// What a source's calls and its refresh threads share.
struct Shared {
    /// The host's view: logs go to the host's log, tagged with the source name.
    host: Host,
    repositories: Vec<Repository>,
    loaded: RwLock<Arc<Loaded>>,
    states: Mutex<Vec<RepoState>>,
    /// Held while an index is swapped in, so that two swaps do not lose one another.
    swapping: Mutex<()>,
    /// Held while local files are read again, so that concurrent calls read a change once.
    reading: Mutex<()>,
    /// Set when the source is dropped; the refresh threads then end.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// The `status@1` answer: per repository, when its index was last read well (seconds since the
    /// Unix epoch, and ago), the last error (empty after a good read), and the charts served.
    fn status(&self) -> serde_json::Value {
        let loaded = self.snapshot();
        let states = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let repositories: Vec<serde_json::Value> = self
            .repositories
            .iter()
            .zip(states)
            .zip(loaded.indexes.iter())
            .map(|((repo, state), index)| {
                let unix = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                };
                serde_json::json!({
                    "name": repo.name,
                    "last_success_unix": state.last_success.map(unix),
                    "last_success_ago_s": state.last_success.map(|t| t.elapsed().unwrap_or_default().as_secs()),
                    "last_error": state.last_error.clone().unwrap_or_default(),
                    "charts": index.as_ref().map_or(0, |i| i.summaries.len()),
                    "dropped": index.as_ref().and_then(|i| i.dropped.as_ref()).map_or(0, |d| d.0),
                })
            })
            .collect();
        serde_json::json!({ "repositories": repositories })
    }

    /// The report of the charts dropped from the index served for repository `i`.
    fn dropped(&self, i: usize) -> Option<String> {
        self.snapshot().indexes[i]
            .as_ref()
            .and_then(|index| index.dropped(&self.repositories[i].name))
    }

    fn snapshot(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn states(&self) -> MutexGuard<'_, Vec<RepoState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in `index` for repository `i`, unless it has no charts while the index it replaces
    /// had some (a file caught mid-write, a server answering an empty document): that is an error.
    fn swap(&self, i: usize, index: RepoIndex) -> Result<(), String> {
        let _swapping = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = self.snapshot();
        if let Some(previous) = &loaded.indexes[i] {
            if index.summaries.is_empty() && !previous.summaries.is_empty() {
                return Err(format!(
                    "has no charts while the index served has {}; keeping that one",
                    previous.summaries.len()
                ));
            }
        }
        let mut indexes = loaded.indexes.clone();
        indexes[i] = Some(Arc::new(index));
        let fresh = Arc::new(Loaded::new(indexes));
        let previous = mem::replace(
            &mut *self.loaded.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        // The index replaced is freed here unless a call still holds it.
        drop((previous, loaded));
        give_back_freed_memory();
        Ok(())
    }

    /// Waits up to `timeout`; true when the source was dropped meanwhile.
    fn wait_for_stop(&self, timeout: Duration) -> bool {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        let (stop, _) = self
            .wake
            .wait_timeout_while(stop, timeout, |stop| !*stop)
            .unwrap_or_else(|e| e.into_inner());
        *stop
    }

    /// Reads again the local files that changed since their last read.
    fn refresh_files(&self) {
        let changed = |i: usize, path: &Path| self.states()[i].stamp != stamp(path);
        let files = || {
            self.repositories
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match &r.location {
                    Location::File(path) => Some((i, r, path)),
                    Location::Http(_) => None,
                })
        };
        if !files().any(|(i, _, path)| changed(i, path)) {
            return;
        }
        // One reader at a time: calls that waited find the files already read.
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        for (i, repo, path) in files() {
            let now = stamp(path);
            if self.states()[i].stamp == now {
                continue;
            }
            let result = RepoIndex::read_file(&repo.name, path, repo.limits)
                .map_err(|e| e.message.to_string())
                .and_then(|index| {
                    self.swap(i, index).map_err(|e| {
                        format!(
                            "helm repository {:?}: index {} {e}",
                            repo.name,
                            path.display()
                        )
                    })
                });
            let mut states = self.states();
            states[i].stamp = now;
            match result {
                Ok(()) => {
                    states[i].last_success = Some(SystemTime::now());
                    states[i].last_error = self.dropped(i);
                }
                Err(error) => {
                    self.host.warn(&error);
                    states[i].last_error = Some(error);
                }
            }
        }
    }

    /// Fetches repository `i` once and swaps in its index when it changed.
    fn refresh_remote(
        &self,
        i: usize,
        remote: &Remote,
        agent: &ureq::Agent,
        oci_cache: &mut oci::Cache,
    ) {
        let name = &self.repositories[i].name;
        let limits = self.repositories[i].limits;
        let (validators, sha) = {
            let states = self.states();
            (states[i].validators.clone(), states[i].sha256)
        };
        let started = std::time::Instant::now();
        let mut refused = Vec::new();
        let fetched = match &remote.oci {
            Some(target) => oci::refresh(agent, remote, target, limits.max_charts, oci_cache)
                .and_then(|refreshed| {
                    refused = refreshed.refused;
                    let body = refreshed.document.into_bytes();
                    if body.len() as u64 > limits.max_index_size {
                        return Err(format!(
                            "the index of its charts is larger than max_index_size ({} bytes)",
                            limits.max_index_size
                        ));
                    }
                    Ok(Fetched::Body(body, Validators::default()))
                }),
            None => fetch::fetch(agent, remote, limits.max_index_size, &validators),
        };
        let mut changed_index = false;
        let result = match fetched {
            Ok(Fetched::NotModified) => Ok(None),
            Ok(Fetched::Spooled(file, digest, validators)) => {
                if sha == Some(digest) {
                    Ok(Some((validators, digest)))
                } else {
                    self.states()[i].parses += 1;
                    RepoIndex::from_file(name, &file, Some(&remote.base_url), limits)
                        .map_err(|e| match e {
                            FileError::Read(e) => format!("cannot be read back from its copy: {e}"),
                            FileError::Index(what) => what,
                        })
                        .and_then(|(index, in_pieces)| {
                            self.states()[i].parsed_in_pieces += u64::from(in_pieces);
                            self.swap(i, index)
                        })
                        .map(|()| {
                            changed_index = true;
                            Some((validators, digest))
                        })
                        .map_err(|e| format!("index {} {e}", fetch::shown(&remote.index_url)))
                }
            }
            Ok(Fetched::Body(body, validators)) => {
                let digest: [u8; 32] = Sha256::digest(&body).into();
                if sha == Some(digest) {
                    Ok(Some((validators, digest)))
                } else {
                    self.states()[i].parses += 1;
                    String::from_utf8(body)
                        .map_err(|_| "is not UTF-8 text".to_owned())
                        .and_then(|text| {
                            RepoIndex::parse(name, &text, Some(&remote.base_url), limits)
                        })
                        .and_then(|index| self.swap(i, index))
                        .map(|()| {
                            changed_index = true;
                            Some((validators, digest))
                        })
                        .map_err(|e| format!("index {} {e}", fetch::shown(&remote.index_url)))
                }
            }
            Err(e) => Err(e),
        };
        let mut states = self.states();
        let state = &mut states[i];
        match result {
            Ok(changed) => {
                if changed_index || state.last_error.is_some() {
                    let requests = match remote.oci {
                        Some(_) => format!(", {} requests", oci_cache.requests),
                        None => String::new(),
                    };
                    self.host.info(&format!(
                        "helm repository {name:?}: index {} read ({} ms{requests})",
                        fetch::shown(&remote.index_url),
                        started.elapsed().as_millis()
                    ));
                }
                if let Some((validators, digest)) = changed {
                    state.validators = validators;
                    state.sha256 = Some(digest);
                }
                state.last_success = Some(SystemTime::now());
                // The other charts are served; the refused and dropped ones are reported until
                // they come within the limits.
                let refused = refused.first().map(|first| {
                    format!(
                        "helm repository {name:?}: {} chart{} refused: {first}",
                        refused.len(),
                        if refused.len() == 1 { "" } else { "s" }
                    )
                });
                let reports: Vec<String> = refused.into_iter().chain(self.dropped(i)).collect();
                state.last_error = (!reports.is_empty()).then(|| reports.join("; "));
                if let (Some(report), true) = (&state.last_error, changed_index) {
                    self.host.warn(report);
                }
            }
            Err(error) => {
                let error = format!("helm repository {name:?}: {error}");
                self.host.warn(&format!(
                    "{error} ({}; {})",
                    state.since(),
                    if state.sha256.is_some() {
                        "serving the last good index"
                    } else {
                        "nothing to serve from it yet"
                    }
                ));
                state.last_error = Some(error);
            }
        }
    }

    /// The current indexes, local files that changed read again first; an error only when no
    /// repository has an index.
    fn current(&self) -> Result<Arc<Loaded>, PluginError> {
        self.refresh_files();
        let loaded = self.snapshot();
        if loaded.has_any() {
            return Ok(loaded);
        }
        Err(self.no_index(None))
    }

    /// The error of a repository (or of every one) that has no index to serve.
    fn no_index(&self, only: Option<usize>) -> PluginError {
        let states = self.states();
        let reasons: Vec<String> = (0..self.repositories.len())
            .filter(|&i| only.is_none_or(|only| only == i))
            .map(|i| match &states[i].last_error {
                Some(error) => error.clone(),
                None => format!(
                    "helm repository {:?}: the first fetch of its index has not finished",
                    self.repositories[i].name
                ),
            })
            .collect();
        PluginError::unavailable(reasons.join("; "))
    }
}

/// Fetches a remote repository every `refresh_interval` (jittered) until the source is dropped.
fn refresh_loop(shared: &Shared, i: usize, remote: &Remote, agent: &ureq::Agent) {
    let mut oci_cache = oci::Cache::default();
    loop {
        shared.refresh_remote(i, remote, agent, &mut oci_cache);
        if shared.wait_for_stop(fetch::jittered(remote.refresh_interval)) {
            return;
        }
    }
}

/// A chart's detail: its summary, the rest beside it, and its download URL.
fn detail_of(summary: Summary, extra: ExtraRef<'_>) -> Detail {
    Detail {
        readme: summary.short_description.clone(),
        summary,
        versions: extra.versions().to_rvec(),
        home_url: RString::from(extra.home_url()),
        source_urls: rstrings(extra.source_urls()),
        maintainers: extra.maintainers_rvec(),
        keywords: rstrings(extra.keywords()),
        extensions: if extra.chart_url().is_empty() {
            Default::default()
        } else {
            vec![Extension {
                key: RString::from(keys::DETAIL_DOWNLOAD_URL),
                value: RString::from(extra.chart_url()),
            }]
            .into()
        },
    }
}

/// One configured set of Helm repositories.
pub struct HelmSource {
    shared: Arc<Shared>,
}

impl Drop for HelmSource {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
    }
}

impl PackageSource for HelmSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        let loaded = self.shared.current()?;
        let (summaries, search) = loaded.summaries();
        Ok(search.select_items(request, &summaries))
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        let not_found = || PluginError::not_found(format!("no chart with id {identifier:?}"));
        let (repo, chart) = identifier.split_once('/').ok_or_else(not_found)?;
        let position = self
            .shared
            .repositories
            .iter()
            .position(|r| r.name == repo)
            .ok_or_else(not_found)?;
        let loaded = self
            .shared
            .current()
            .map_err(|_| self.shared.no_index(Some(position)))?;
        let index = loaded.indexes[position]
            .as_ref()
            .ok_or_else(|| self.shared.no_index(Some(position)))?;
        let i = index.find(chart).ok_or_else(not_found)?;
        Ok(detail_of(
            index.summaries.get(i).to_summary(),
            index.extras.get(i),
        ))
    }

    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        match (method, version) {
            (capabilities::STATUS, 1) => Ok(self.shared.status().to_string()),
            (capabilities::FACETS, 1) => {
                let loaded = self.shared.current()?;
                let (summaries, search) = loaded.summaries();
                facets::call(payload, |filter| search.facets_items(filter, &summaries))
            }
            _ => Err(PluginError::unsupported(format!(
                "the helm plugin has no operation {method} version {version}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
