//! Reading a Helm repository's `index.yaml` (or `index.json`: content that opens with `{` is read
//! as JSON, as Helm 4 accepts it).
//!
//! The file looks like this (keys are as `helm repo index` writes them; any other key is ignored):
//! ```yaml
//! apiVersion: v1
//! entries:
//!   nginx:
//!     - version: 15.1.0
//!       appVersion: 1.25.1
//!       description: NGINX Open Source is a web server ...
//!       home: https://bitnami.com
//!       icon: https://bitnami.com/assets/stacks/nginx/img/nginx-stack-220x234.png
//!       sources: [https://github.com/bitnami/charts/tree/main/bitnami/nginx]
//!       keywords: [nginx, http, web]
//!       maintainers: [{ name: VMware, url: https://github.com/bitnami/charts }]
//!       annotations: { category: Infrastructure }   # or artifacthub.io/category
//!       deprecated: false
//!       created: "2023-07-10T10:12:48.000Z"
//!       digest: 6c0b…
//!       urls: [https://charts.bitnami.com/bitnami/nginx-15.1.0.tgz]
//! generated: "2023-07-10T10:20:00Z"
//! ```
//! Each version is read into borrowed, minimal structs; a chart's versions are turned into its
//! summary and detail as soon as its list has been read, so that only one chart's raw versions are
//! held at a time.

use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::{
    de::{self, DeserializeSeed, MapAccess, Visitor},
    Deserialize, Deserializer,
};
use tributary_plugin_api::{keys, order::normalize_timestamp, Extension, RString, RVec, Summary};

use crate::{
    config::Limits,
    depth,
    extra::{Extra, Parts},
    split,
    version::rank,
};

/// One chart of an index: its summary (without `identifier` and `repository`, which the caller sets)
/// and the rest of its detail.
#[derive(Debug, PartialEq)]
pub(crate) struct Chart {
    pub summary: Summary,
    pub extra: Extra,
}

/// Charts as two arrays side by side, the summaries apart so that they are one slice for listings:
/// position `i` of each is one chart.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Charts {
    pub summaries: Vec<Summary>,
    pub extras: Vec<Extra>,
}

impl Charts {
    pub(crate) fn with_capacity(capacity: usize) -> Charts {
        Charts {
            summaries: Vec::with_capacity(capacity),
            extras: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.summaries.len()
    }

    fn push(&mut self, chart: Chart) {
        self.summaries.push(chart.summary);
        self.extras.push(chart.extra);
    }

    /// Keeps the charts for which `keep` is true, in order.
    pub(crate) fn retain(&mut self, keep: &[bool]) {
        let mut flags = keep.iter();
        self.extras.retain(|_| *flags.next().unwrap_or(&false));
        let mut flags = keep.iter();
        self.summaries.retain(|_| *flags.next().unwrap_or(&false));
    }

    /// Gives back the capacity beyond the charts.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.summaries.shrink_to_fit();
        self.extras.shrink_to_fit();
    }
}

/// Files at least this large are parsed in pieces on several threads (the `split` module).
pub(crate) const SPLIT_SIZE: usize = 1 << 20;
/// The size of one piece.
pub(crate) const PIECE_SIZE: usize = 256 << 10;
/// The most threads one parse uses.
const MAX_THREADS: usize = 8;

/// Parses the text of an `index.yaml` into its charts, in the file's order. Charts with no versions
/// (or an empty name) are left out. An index with more than `max_charts` entries is refused: in
/// the layout Helm writes they are counted before parsing, in any other while parsing, without
/// building the charts past the limit; likewise past `max_versions` versions in all. A YAML index
/// larger than [`MAX_WHOLE_YAML`] is read only in pieces. The error completes "index <where> ...".
pub(crate) fn parse(text: &str, limits: Limits) -> Result<Charts, String> {
    let max_charts = limits.max_charts;
    let too_many = |count: usize| too_many(count, max_charts);
    let entries = if text.trim_start().starts_with('{') {
        let mut json = serde_json::Deserializer::from_str(text);
        let entries = IndexSeed {
            limits,
            capacity: 0,
        }
        .deserialize(&mut json)
        .and_then(|entries| json.end().map(|()| entries))
        .map_err(|e| format!("is not valid: JSON: {e}"))?;
        Some(entries)
    } else {
        // Before the parser, naming the line (the parser's own bound is a little higher).
        depth::check(text, depth::MAX_DEPTH).map_err(|e| format!("is refused: it {e}"))?;
        if let Some(count) = split::chart_keys(text).filter(|&count| count > max_charts) {
            return Err(too_many(count));
        }
        None
    };
    let entries = match entries {
        Some(entries) => entries,
        None => parse_yaml(text, limits)?,
    };
    within_limits(entries, limits)
}

/// Parses the YAML index in `file` as [`parse`] parses its text, reading it in pieces as they are
/// parsed, so that the whole text is never held: for a file of at least [`SPLIT_SIZE`] bytes in the
/// layout `helm repo index` writes, when [`parse`] would parse it in pieces. `None` for any other
/// file, or one that the pieces do not read (it changed while read, a construct spans a cut, it
/// has an error): the caller then reads its text and calls [`parse`], which gives the same charts,
/// or the error with its line.
pub(crate) fn parse_file(file: &std::fs::File, limits: Limits) -> Option<Result<Charts, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = file.metadata().ok()?.len();
    if threads < 2 || size < SPLIT_SIZE as u64 || size > limits.max_index_size {
        return None;
    }
    const CHUNK: usize = 64 << 10;
    let layout = split::scan_file(file, PIECE_SIZE, CHUNK, limits.max_index_size)?;
    if layout.size < SPLIT_SIZE as u64 {
        return None;
    }
    // The text is UTF-8, nests within the bound and has this many chart keys: what `parse` says of it.
    if layout.keys > limits.max_charts {
        return Some(Err(too_many(layout.keys, limits.max_charts)));
    }
    let charts = split::parse_file_in_pieces(file, &layout, threads.min(MAX_THREADS), PIECE_SIZE)?;
    drop(layout);
    // Counted before: pieces are cut in Helm's layout only.
    Some(within_limits(
        Entries {
            listed: charts.len(),
            charts,
            versions_over: false,
        },
        limits,
    ))
}

/// The error of an index with `count` charts, over `max_charts`.
fn too_many(count: usize, max_charts: usize) -> String {
    format!("is refused: it has {count} charts, more than max_charts ({max_charts})")
}

/// The charts of `entries`, or the error when they are over `max_charts` or `max_versions`.
fn within_limits(entries: Entries, limits: Limits) -> Result<Charts, String> {
    if entries.listed > limits.max_charts {
        return Err(too_many(entries.listed, limits.max_charts));
    }
    let versions: usize = entries
        .charts
        .extras
        .iter()
        .map(|e| e.versions().len())
        .sum();
    if entries.versions_over || versions > limits.max_versions {
        return Err(format!(
            "is refused: it has more than max_versions ({}) versions",
            limits.max_versions
        ));
    }
    Ok(entries.charts)
}

/// The largest YAML index parsed as one document, on one thread (the densest YAML, 8.3 MB of
/// `{},` in one flow sequence, takes about 1.3 s and 35 MiB): a larger index is read only when it
/// can be cut into pieces (the layout `helm repo index` writes), parsed side by side, or as JSON.
pub(crate) const MAX_WHOLE_YAML: usize = 8 << 20;

/// Parses a YAML index, in pieces on several threads when it is large and in Helm's layout.
fn parse_yaml(text: &str, limits: Limits) -> Result<Entries, String> {
    if text.len() >= SPLIT_SIZE {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > 1 {
            if let Some(charts) = split::parse_in_pieces(text, threads.min(MAX_THREADS), PIECE_SIZE)
            {
                // Counted before: pieces are cut in Helm's layout only.
                return Ok(Entries {
                    listed: charts.len(),
                    charts,
                    versions_over: false,
                });
            }
        }
    }
    if text.len() > MAX_WHOLE_YAML {
        return Err(format!(
            "is refused: YAML over {0} MiB is read only in pieces of at most {0} MiB (the \
             layout `helm repo index` writes, no chart's entry over {0} MiB), or as JSON",
            MAX_WHOLE_YAML >> 20
        ));
    }
    parse_document(text, limits, 0).map_err(|e| format!("is not valid: {}", yaml_error(text, &e)))
}

/// Parses the text of an `index.yaml` as one document, with no limit on its charts.
pub(crate) fn parse_whole(text: &str) -> Result<Charts, serde_saphyr::Error> {
    parse_piece(text, 0)
}

/// [`parse_whole`] for a document of about `charts` charts: its arrays are sized for them.
pub(crate) fn parse_piece(text: &str, charts: usize) -> Result<Charts, serde_saphyr::Error> {
    let limits = Limits {
        max_index_size: u64::MAX,
        max_charts: usize::MAX,
        max_versions: usize::MAX,
    };
    Ok(parse_document(text, limits, charts)?.charts)
}

/// Parses one YAML document with [`IndexSeed`], as the YAML 1.2 core schema reads it; its arrays
/// start with room for `charts` charts.
fn parse_document(
    text: &str,
    limits: Limits,
    charts: usize,
) -> Result<Entries, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        // The nesting was bounded before (`depth::check`), which counts one level less for each
        // sequence written at its key's indentation (Helm writes two such on a path).
        // The parser stops on its own a little past that bound: each level costs stack, about
        // 8 KiB in a release build and 25 KiB in a debug one, on threads of 2 MiB. The size of an
        // index is bounded by `max_index_size` and its content by `max_charts` and `max_versions`,
        // so the counts of events, nodes and scalar bytes are not.
        budget: serde_saphyr::budget! {
            max_depth: depth::MAX_DEPTH + 8,
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            max_total_scalar_bytes: usize::MAX,
        },
        // Only `true` and `false` are booleans (YAML 1.2), not `yes`, `no`, `on` or `off`.
        strict_booleans: true,
        // A repeated key reaches the visitor: a chart key is counted and refused later as a
        // duplicate, a repeated field of a version is an error.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        // `<<` is a key like any other (and not one read).
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        // Errors are told on one line by `yaml_error`.
        with_snippet: false,
    };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |document| {
        IndexSeed {
            limits,
            capacity: charts,
        }
        .deserialize(document)
    })
}

/// A YAML error on one line: what is wrong (in the parser's words for users), where (`at line L
/// column C`), and the start of that line of `text`.
fn yaml_error(text: &str, error: &serde_saphyr::Error) -> String {
    let formatter = serde_saphyr::UserMessageFormatter.with_localizer(&Wording);
    let mut message = error.render_with_options(serde_saphyr::render_options! {
        formatter: &formatter,
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let line = error
        .location()
        .filter(|at| *at != serde_saphyr::Location::UNKNOWN)
        .and_then(|at| {
            let index = usize::try_from(at.line()).ok()?.checked_sub(1)?;
            text.split('\n').nth(index)
        })
        .map(|line| line.trim_matches([' ', '\t', '\r']))
        .filter(|line| !line.is_empty());
    if let Some(line) = line {
        const MAX: usize = 80;
        let cut = (0..=MAX.min(line.len()))
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        let more = if cut < line.len() { "..." } else { "" };
        message.push_str(&format!(": `{}{more}`", &line[..cut]));
    }
    message
}

/// Where a YAML error is, as the JSON errors say it (serde_json): `at line L column C`.
struct Wording;

impl serde_saphyr::localizer::Localizer for Wording {
    fn attach_location<'a>(&self, base: Cow<'a, str>, at: serde_saphyr::Location) -> Cow<'a, str> {
        if at == serde_saphyr::Location::UNKNOWN {
            return base;
        }
        Cow::Owned(format!(
            "{base} at line {} column {}",
            at.line(),
            at.column()
        ))
    }
}

/// Reads an index document: its `entries` with [`EntriesSeed`], every other key skipped.
struct IndexSeed {
    limits: Limits,
    /// The charts the arrays start with room for.
    capacity: usize,
}

impl<'de> DeserializeSeed<'de> for IndexSeed {
    type Value = Entries;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entries, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IndexSeed {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index: a mapping with entries")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Entries, E> {
        Ok(Entries::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.as_str() != "entries" {
                map.next_value::<de::IgnoredAny>()?;
            } else if entries.is_some() {
                return Err(de::Error::duplicate_field("entries"));
            } else {
                entries = Some(map.next_value_seed(EntriesSeed {
                    limits: self.limits,
                    capacity: self.capacity,
                })?);
            }
        }
        Ok(entries.unwrap_or_default())
    }
}

/// A string that may be null or missing (both read as empty), borrowed from the input when it can be.
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    /// The text in a string of its own, of exactly its length (the parser's owned strings may
    /// have room to spare).
    fn into_rstring(self) -> RString {
        match self.0 {
            Cow::Borrowed(text) => RString::from(text),
            Cow::Owned(mut text) => {
                text.shrink_to_fit();
                RString::from(text)
            }
        }
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<Text<'a>>);

        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_option(TextVisitor(PhantomData))
    }
}

/// One element of a chart's version list; only the fields Tributary serves.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVersion<'a> {
    #[serde(borrow, default)]
    version: Text<'a>,
    #[serde(borrow, default)]
    app_version: Text<'a>,
    #[serde(borrow, default)]
    description: Text<'a>,
    #[serde(borrow, default)]
    home: Text<'a>,
    #[serde(borrow, default)]
    icon: Text<'a>,
    #[serde(borrow, default)]
    sources: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    keywords: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    maintainers: Option<Vec<RawMaintainer<'a>>>,
    #[serde(default)]
    deprecated: Option<bool>,
    #[serde(borrow, default)]
    annotations: Option<RawAnnotations<'a>>,
    #[serde(borrow, default)]
    created: Text<'a>,
    #[serde(borrow, default)]
    digest: Text<'a>,
    #[serde(borrow, default)]
    urls: Option<Vec<Text<'a>>>,
}

#[derive(Deserialize)]
struct RawMaintainer<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    email: Text<'a>,
    #[serde(borrow, default)]
    url: Text<'a>,
}

/// The annotations Tributary reads: `category` (Kubeapps) and `artifacthub.io/category`
/// (Artifact Hub).
#[derive(Deserialize)]
struct RawAnnotations<'a> {
    #[serde(borrow, default)]
    category: Text<'a>,
    #[serde(borrow, default, rename = "artifacthub.io/category")]
    artifacthub_category: Text<'a>,
}

/// The `entries` mapping, read into finished charts.
#[derive(Default)]
struct Entries {
    /// The first `max_charts` charts.
    charts: Charts,
    /// The entries the mapping has, charts or not, built or not.
    listed: usize,
    /// Whether the charts had more than `max_versions` versions: charts were no longer built.
    versions_over: bool,
}

/// Reads the `entries` mapping; past `max_charts` entries or `max_versions` versions, only
/// counts the entries.
struct EntriesSeed {
    limits: Limits,
    capacity: usize,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Entries;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entries, D::Error> {
        struct EntriesVisitor {
            limits: Limits,
            capacity: usize,
        }

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from chart names to lists of versions")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let hint = map.size_hint().unwrap_or(self.capacity);
                let mut entries = Entries {
                    charts: Charts::with_capacity(hint.min(self.limits.max_charts)),
                    listed: 0,
                    versions_over: false,
                };
                let mut versions = 0usize;
                while let Some(name) = map.next_key::<Text<'de>>()? {
                    entries.listed += 1;
                    if entries.listed > self.limits.max_charts || entries.versions_over {
                        entries.charts = Charts::default();
                        map.next_value::<de::IgnoredAny>()?;
                        continue;
                    }
                    let raw: Option<Vec<RawVersion<'de>>> = map.next_value()?;
                    if let Some(chart) =
                        build_chart(name, raw.unwrap_or_default()).map_err(de::Error::custom)?
                    {
                        versions += chart.extra.versions().len();
                        entries.versions_over = versions > self.limits.max_versions;
                        entries.charts.push(chart);
                    }
                }
                Ok(entries)
            }
        }

        deserializer.deserialize_option(EntriesVisitor {
            limits: self.limits,
            capacity: self.capacity,
        })
    }
}

/// The items of `values` that `keep`, turned by `into`, in a vector of exactly their number (a
/// filtered `collect` starts at four, so that one maintainer would hold the room of four).
fn exact<T, U>(values: Vec<T>, keep: impl Fn(&T) -> bool, into: impl Fn(T) -> U) -> RVec<U> {
    let mut kept = RVec::with_capacity(values.iter().filter(|v| keep(v)).count());
    kept.extend(values.into_iter().filter(|v| keep(v)).map(into));
    kept
}

/// The non-empty strings of a list.
fn non_empty<'a>(values: &'a Option<Vec<Text<'_>>>) -> Vec<&'a str> {
    values
        .iter()
        .flatten()
        .map(Text::as_str)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Turns one chart's raw versions into a [`Chart`]; `None` for an empty list or an empty name.
fn build_chart(name: Text<'_>, mut raw: Vec<RawVersion<'_>>) -> Result<Option<Chart>, String> {
    if raw.is_empty() || name.as_str().is_empty() {
        return Ok(None);
    }
    let ranking = rank(raw.iter().map(|v| v.version.as_str()));
    let latest_version = RString::from(raw[ranking.latest].version.as_str());
    let latest_app_version = RString::from(raw[ranking.latest].app_version.as_str());
    // The latest version's publication time, for the order by update time; none when the index
    // gives none or one that is not RFC 3339.
    let updated = normalize_timestamp(raw[ranking.latest].created.as_str());

    // The record of the rest of the detail, its strings borrowed from the versions read.
    let latest = &raw[ranking.latest];
    let extra = Extra::new(&Parts {
        versions: ranking
            .order
            .iter()
            .map(|&i| {
                let v = &raw[i];
                [
                    v.version.as_str(),
                    v.app_version.as_str(),
                    v.created.as_str(),
                    v.digest.as_str(),
                ]
            })
            .collect(),
        home_url: latest.home.as_str(),
        source_urls: non_empty(&latest.sources),
        maintainers: latest
            .maintainers
            .iter()
            .flatten()
            .map(|m| [m.name.as_str(), m.email.as_str(), m.url.as_str()])
            .filter(|fields| fields.iter().any(|f| !f.is_empty()))
            .collect(),
        keywords: non_empty(&latest.keywords),
        chart_url: latest
            .urls
            .iter()
            .flatten()
            .map(|u| u.as_str().trim())
            .find(|u| !u.is_empty())
            .unwrap_or_default(),
        deprecated: latest.deprecated.unwrap_or(false),
    })
    .ok_or_else(|| {
        format!(
            "chart {:?}: its detail holds more than 4 GiB of text",
            name.as_str()
        )
    })?;

    let mut latest = raw.swap_remove(ranking.latest);
    drop(raw);
    let mut categories: RVec<RString> = RVec::new();
    if let Some(annotations) = latest.annotations.take() {
        let mut distinct: Vec<&str> = Vec::with_capacity(2);
        for category in [&annotations.category, &annotations.artifacthub_category] {
            let category = category.as_str().trim();
            if !category.is_empty() && !distinct.contains(&category) {
                distinct.push(category);
            }
        }
        categories = exact(distinct, |_| true, RString::from);
    }
    let name = name.into_rstring();

    Ok(Some(Chart {
        summary: Summary {
            identifier: RString::new(),
            display_name: name.clone(),
            name,
            latest_version,
            latest_app_version,
            short_description: latest.description.into_rstring(),
            icon_url: latest.icon.into_rstring(),
            categories,
            repository: RString::new(),
            deprecated: latest.deprecated.unwrap_or(false),
            extensions: updated
                .map(|time| Extension::new(keys::SUMMARY_UPDATED, time))
                .into_iter()
                .collect(),
        },
        extra,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keeps_no_room_to_spare() {
        let kept = exact(vec![1, 0, 2, 0, 3], |&v| v != 0, |v| v * 2);
        assert_eq!(kept.as_slice(), [2, 4, 6]);
        assert_eq!(kept.capacity(), 3);
        let one = exact(vec!["x"], |_| true, RString::from);
        assert_eq!(one.capacity(), 1);
        assert_eq!(exact(vec![0], |&v| v != 0, |v| v).capacity(), 0);
    }

    #[test]
    fn owned_text_is_kept_at_its_length() {
        let mut owned = String::with_capacity(100);
        owned.push_str("escaped \"text\"");
        let text = Text(Cow::Owned(owned)).into_rstring();
        assert_eq!(text, "escaped \"text\"");
        assert_eq!(text.capacity(), text.len());
    }

    #[test]
    fn charts_are_kept_side_by_side() {
        let text = "entries:\n  a:\n  - version: 1.0.0\n    home: ha\n  b:\n  - version: 1.0.0\n    home: hb\n  c:\n  - version: 1.0.0\n    home: hc\n";
        let mut charts = parse_whole(text).unwrap();
        charts.retain(&[true, false, true]);
        charts.shrink_to_fit();
        let names: Vec<&str> = charts.summaries.iter().map(|s| s.name.as_str()).collect();
        let homes: Vec<&str> = charts.extras.iter().map(|e| e.home_url()).collect();
        assert_eq!((names, homes), (vec!["a", "c"], vec!["ha", "hc"]));
        assert_eq!(charts.summaries.capacity(), 2);
    }

    #[test]
    fn small_lists_are_at_their_length() {
        let text = "entries:\n  a:\n  - version: 1.0.0\n    keywords: [k, '', j]\n    sources: [s]\n    maintainers: [{name: m}, {}]\n    annotations: {category: C, artifacthub.io/category: ' C '}\n";
        let charts = parse_whole(text).unwrap();
        let (summary, extra) = (&charts.summaries[0], &charts.extras[0]);
        assert_eq!(summary.categories.as_slice(), ["C"]);
        assert_eq!(summary.categories.capacity(), 1);
        assert_eq!(extra.keywords().collect::<Vec<_>>(), ["k", "j"]);
        assert_eq!(extra.source_urls().collect::<Vec<_>>(), ["s"]);
        assert_eq!(extra.maintainers().collect::<Vec<_>>(), [["m", "", ""]]);
        assert_eq!(extra.versions().len(), 1);
        // The record's two allocations hold exactly its strings: "1.0.0", an empty home URL, "s",
        // "m" and two empty strings, "k", "j" and an empty chart URL (a boxed text and slice
        // have no room to spare).
        assert_eq!(extra.lengths(), ("1.0.0smkj".len(), 4 + 1 + 1 + 3 + 2 + 1));
    }

    /// The detail of every chart of `text`, made from its record, against the detail the plugin
    /// made from the same index before it kept the record compact (the versions as `Version`s, the
    /// other strings and lists as the interface's): every field, in the same order.
    fn details_as_before(text: &str) {
        use std::collections::BTreeMap;
        use tributary_plugin_api::{Detail, Maintainer, Version};

        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(borrow)]
            entries: BTreeMap<String, Option<Vec<RawVersion<'a>>>>,
        }
        /// `non_empty` as it was.
        fn non_empty(values: Option<Vec<Text<'_>>>) -> RVec<RString> {
            exact(
                values.unwrap_or_default(),
                |t| !t.as_str().is_empty(),
                Text::into_rstring,
            )
        }
        let mut index: Raw = serde_saphyr::from_str(text).unwrap();
        let charts = parse_whole(text).unwrap();
        let mut compared = 0;
        for (summary, extra) in charts.summaries.iter().zip(&charts.extras) {
            let mut raw = index
                .entries
                .get_mut(summary.name.as_str())
                .and_then(Option::take)
                .unwrap();
            // What `build_chart` made before, step for step.
            let ranking = rank(raw.iter().map(|v| v.version.as_str()));
            let versions: RVec<Version> = ranking
                .order
                .iter()
                .map(|&i| {
                    let v = &mut raw[i];
                    Version {
                        version: std::mem::take(&mut v.version).into_rstring(),
                        app_version: std::mem::take(&mut v.app_version).into_rstring(),
                        created: std::mem::take(&mut v.created).into_rstring(),
                        digest: std::mem::take(&mut v.digest).into_rstring(),
                    }
                })
                .collect();
            let mut latest = raw.swap_remove(ranking.latest);
            let chart_url = latest
                .urls
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.as_str().trim().to_owned())
                .find(|u| !u.is_empty())
                .unwrap_or_default();
            // And what `detail_of` made of it.
            let before = Detail {
                readme: summary.short_description.clone(),
                summary: summary.clone(),
                versions,
                home_url: latest.home.into_rstring(),
                source_urls: non_empty(latest.sources),
                maintainers: exact(
                    latest.maintainers.unwrap_or_default(),
                    |m| {
                        !(m.name.as_str().is_empty()
                            && m.email.as_str().is_empty()
                            && m.url.as_str().is_empty())
                    },
                    |m| Maintainer {
                        name: m.name.into_rstring(),
                        email: m.email.into_rstring(),
                        url: m.url.into_rstring(),
                    },
                ),
                keywords: non_empty(latest.keywords),
                extensions: if chart_url.is_empty() {
                    Default::default()
                } else {
                    vec![Extension {
                        key: RString::from(keys::DETAIL_DOWNLOAD_URL),
                        value: RString::from(chart_url),
                    }]
                    .into()
                },
            };
            assert_eq!(
                crate::detail_of(summary.clone(), extra.view()),
                before,
                "{}",
                summary.name.as_str()
            );
            assert_eq!(extra.deprecated, latest.deprecated.unwrap_or(false));
            compared += before.versions.len();
        }
        assert!(compared > 0);
    }

    #[test]
    fn details_are_materialised_as_they_were_built_before() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/charts");
        for file in ["bitnami-index.yaml", "community-index.yaml"] {
            details_as_before(&std::fs::read_to_string(dir.join(file)).unwrap());
        }
        // Versions out of order, not semantic, missing fields, quoted, escaped and non-ASCII.
        details_as_before(
            "entries:\n  a:\n  - version: 1.0.0\n    appVersion: \"1.0\"\n    created: 2023-07-10T10:12:48.000Z\n    digest: abc\n  - version: 2.0.0-rc.1\n    appVersion: \"two \\\"é\\\"\"\n  - version: nightly\n    created: ~\n  - version: v1.2\n    digest: ''\n  - appVersion: none\n  b:\n  - version: 0.1.0\n    created: '2020-01-01'\n",
        );
        // Lists with empty and null items, maintainers with empty fields or none, URLs to trim,
        // an empty home URL, escaped and non-ASCII strings.
        details_as_before(
            "entries:\n  c:\n  - version: 2.0.0\n    home: ''\n    sources: ['', \"https://s/«é»\", null, ' ']\n    maintainers: [{}, {name: '', email: e@x}, {name: Zoë, url: ~}, {email: ''}]\n    keywords: [null, k1, '', \"k\\\"2\"]\n    deprecated: true\n    urls: ['', '  ', ' charts/c-2.0.0.tgz ', other.tgz]\n  - version: 1.0.0\n    home: https://old\n  d:\n  - version: 1.0.0\n    home: https://d.example/中\n    sources: []\n    maintainers: []\n    keywords: []\n    urls: []\n  e:\n  - version: 1.0.0\n    urls: [https://e/e.tgz]\n",
        );
    }
}
