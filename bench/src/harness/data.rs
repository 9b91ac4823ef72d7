//! In-memory sources and the engine calls the engine scenarios make.

use std::{sync::Arc, time::Duration};

use tributary_plugin_api::{
    ffi::source_box, Detail, Filter, ListRequest, PackageSource, PluginError, RString, Summary,
};
use tributary_runtime::{
    call::SourceHandle as Source,
    merge::{self as engine, token::MergeKey, MergeOptions, Page, PageRequest},
};

/// The name of generated item `i`: zero-padded so that byte order is index order.
pub fn item_name(i: usize) -> String {
    format!("pkg-{i:010}")
}

/// A summary with the fields a real catalog fills (six heap strings).
pub fn summary(name: &str, identifier: &str) -> Summary {
    Summary {
        identifier: RString::from(identifier),
        name: RString::from(name),
        display_name: RString::from(name),
        latest_version: RString::from("1.2.3"),
        short_description: RString::from("an in-memory package for the benchmarks"),
        repository: RString::from("bench"),
        ..Summary::default()
    }
}

/// How items are spread over the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Item `i` goes to source `i % k`: every page draws evenly from every source.
    RoundRobin,
    /// Source `j` holds one contiguous range of names: a page draws from one source at a time.
    Ranges,
}

/// `total` items over `k` sources, each source's items sorted by `(name, identifier)`.
pub fn items(total: usize, k: usize, spread: Spread) -> Vec<Arc<Vec<Summary>>> {
    let per = total.div_ceil(k);
    let mut sources: Vec<Vec<Summary>> = (0..k).map(|_| Vec::with_capacity(per)).collect();
    for i in 0..total {
        let j = owner(i, total, k, spread);
        sources[j].push(summary(&item_name(i), &format!("id{i:010}")));
    }
    sources.into_iter().map(Arc::new).collect()
}

/// The source that holds item `i`.
pub fn owner(i: usize, total: usize, k: usize, spread: Spread) -> usize {
    match spread {
        Spread::RoundRobin => i % k,
        Spread::Ranges => i / total.div_ceil(k),
    }
}

/// The name of in-memory source `j`; names sort in index order.
pub fn source_name(j: usize) -> String {
    format!("m{j:02}")
}

/// A sorted vector served through the plugin interface, as the `catalog` plugin serves its file.
pub struct MemorySource {
    pub items: Arc<Vec<Summary>>,
}

impl PackageSource for MemorySource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        Ok(request.select(&self.items))
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        Err(PluginError::not_found(format!("no item {identifier:?}")))
    }
}

/// One engine source per vector, wrapped exactly as a loaded plugin's source is, named in order.
pub fn memory_sources(data: &[Arc<Vec<Summary>>]) -> Vec<Arc<Source>> {
    data.iter()
        .enumerate()
        .map(|(j, items)| {
            Arc::new(Source::new(
                &source_name(j),
                "memory",
                source_box(MemorySource {
                    items: items.clone(),
                }),
            ))
        })
        .collect()
}

/// The key of item `i` as the page that ended on it would carry it in its token.
pub fn key_of(i: usize, total: usize, k: usize, spread: Spread) -> MergeKey {
    MergeKey {
        name: item_name(i),
        source: source_name(owner(i, total, k, spread)),
        identifier: format!("id{i:010}"),
    }
}

/// The engine options of every engine scenario: a timeout no run reaches, and no page byte budget
/// (scenario 1 serves 1,000,000 items as one page, which the API's 3 MiB budget would cut short).
pub fn options() -> MergeOptions {
    MergeOptions {
        source_timeout: Duration::from_secs(60),
        max_page_bytes: usize::MAX / 2,
        ..MergeOptions::default()
    }
}

/// A page request without a filter.
pub fn page_request(page_size: usize, after: Option<MergeKey>) -> PageRequest {
    PageRequest {
        page_size,
        after,
        order: Default::default(),
        filter: Filter::default(),
        deadline: None,
    }
}

/// One page; a failed source is a broken benchmark, not a figure.
pub async fn page(sources: &[Arc<Source>], page_size: usize, after: Option<MergeKey>) -> Page {
    static OPTIONS: std::sync::OnceLock<MergeOptions> = std::sync::OnceLock::new();
    let options = OPTIONS.get_or_init(options);
    let page = engine::merge_page(sources, page_request(page_size, after), options)
        .await
        .unwrap_or_else(|f| panic!("engine failed: {f}"));
    assert!(
        page.failures.is_empty(),
        "a source failed: {}",
        page.failures[0]
    );
    page
}

/// The key a token would carry after this page, `None` at the end.
pub fn next_key(sources: &[Arc<Source>], page: &Page) -> Option<MergeKey> {
    if !page.more {
        return None;
    }
    page.items.last().map(|last| MergeKey {
        name: last.summary.name.to_string(),
        source: sources[last.source].name.to_string(),
        identifier: last.summary.identifier.to_string(),
    })
}

/// Merges `data` with `itertools::kmerge_by` on one thread, cloning each item once as a source does
/// when it answers: the same output as one engine page over the whole catalog.
pub fn kmerge(data: &[Arc<Vec<Summary>>]) -> Vec<(usize, Summary)> {
    itertools::kmerge_by(
        data.iter()
            .enumerate()
            .map(|(j, items)| items.iter().map(move |s| (j, s))),
        |a: &(usize, &Summary), b: &(usize, &Summary)| {
            (a.1.name.as_bytes(), a.0, a.1.identifier.as_bytes())
                < (b.1.name.as_bytes(), b.0, b.1.identifier.as_bytes())
        },
    )
    .map(|(j, s)| (j, s.clone()))
    .collect()
}

/// The same merge over references, without cloning: the floor of any merge.
pub fn kmerge_refs(data: &[Arc<Vec<Summary>>]) -> Vec<(usize, &Summary)> {
    itertools::kmerge_by(
        data.iter()
            .enumerate()
            .map(|(j, items)| items.iter().map(move |s| (j, s))),
        |a: &(usize, &Summary), b: &(usize, &Summary)| {
            (a.1.name.as_bytes(), a.0, a.1.identifier.as_bytes())
                < (b.1.name.as_bytes(), b.0, b.1.identifier.as_bytes())
        },
    )
    .collect()
}

/// The page of `page_size` items after `after`, by the shortest route over the same vectors: each
/// source seeks its start by binary search (as a source serving a sorted vector does), the slices
/// are merged by reference with `itertools::kmerge_by`, and the page's items are cloned once, so
/// that the output is owned as the engine's is. The floor of a page of the merged catalog.
pub fn kmerge_page(
    data: &[Arc<Vec<Summary>>],
    page_size: usize,
    after: &MergeKey,
) -> Vec<(usize, Summary)> {
    itertools::kmerge_by(
        data.iter().enumerate().map(|(j, items)| {
            let name = after.name.as_bytes();
            let start = match source_name(j).as_str().cmp(after.source.as_str()) {
                // Every item named `after.name` was served from sources before the key's.
                std::cmp::Ordering::Less => items.partition_point(|s| s.name.as_bytes() <= name),
                std::cmp::Ordering::Equal => items.partition_point(|s| {
                    (s.name.as_bytes(), s.identifier.as_bytes())
                        <= (name, after.identifier.as_bytes())
                }),
                std::cmp::Ordering::Greater => items.partition_point(|s| s.name.as_bytes() < name),
            };
            items[start..].iter().map(move |s| (j, s))
        }),
        |a: &(usize, &Summary), b: &(usize, &Summary)| {
            (a.1.name.as_bytes(), a.0, a.1.identifier.as_bytes())
                < (b.1.name.as_bytes(), b.0, b.1.identifier.as_bytes())
        },
    )
    .take(page_size)
    .map(|(j, s)| (j, s.clone()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn spreads() {
        for spread in [Spread::RoundRobin, Spread::Ranges] {
            let data = items(100, 3, spread);
            assert_eq!(data.iter().map(|d| d.len()).sum::<usize>(), 100);
            for (j, d) in data.iter().enumerate() {
                assert!(d.windows(2).all(|w| w[0].key_cmp(&w[1]).is_lt()));
                for s in d.iter() {
                    let i: usize = s.name.as_str()[4..].parse().unwrap();
                    assert_eq!(owner(i, 100, 3, spread), j);
                }
            }
        }
    }

    #[test]
    fn engine_page_equals_kmerge() {
        let data = items(1000, 3, Spread::RoundRobin);
        let sources = memory_sources(&data);
        let merged = kmerge(&data);
        assert_eq!(kmerge_refs(&data).len(), 1000);
        let rt = runtime();
        let whole = rt.block_on(page(&sources, 1000, None));
        let engine: Vec<(usize, String)> = whole
            .items
            .iter()
            .map(|i| (i.source, i.summary.identifier.to_string()))
            .collect();
        let base: Vec<(usize, String)> = merged
            .iter()
            .map(|(j, s)| (*j, s.identifier.to_string()))
            .collect();
        assert_eq!(engine, base);

        // Paging by key from the middle continues exactly after the key.
        let after = key_of(499, 1000, 3, Spread::RoundRobin);
        let p = rt.block_on(page(&sources, 10, Some(after)));
        assert_eq!(p.items[0].summary.name.as_str(), item_name(500));
        let next = next_key(&sources, &p).unwrap();
        assert_eq!(next, key_of(509, 1000, 3, Spread::RoundRobin));
        // The page baseline gives the same page.
        let key = key_of(499, 1000, 3, Spread::RoundRobin);
        let base: Vec<(usize, String)> = kmerge_page(&data, 10, &key)
            .iter()
            .map(|(j, s)| (*j, s.identifier.to_string()))
            .collect();
        let engine: Vec<(usize, String)> = p
            .items
            .iter()
            .map(|i| (i.source, i.summary.identifier.to_string()))
            .collect();
        assert_eq!(engine, base);
    }
}
