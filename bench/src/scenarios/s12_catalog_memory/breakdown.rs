//! `tributary-bench memory-breakdown <generated|real|minimal> [--quick]`: where the memory of a
//! Helm repository goes, in a process of its own.
//!
//! The helm plugin's library is loaded into this process as the server loads it (the runtime's
//! loader: a sealed in-memory copy, opened) and a source built on one of scenario 12's indexes
//! through its interface, so that the same code reads the index on the same threads with the same
//! allocator (glibc's `malloc`, which both the library and this binary use). glibc's own counts
//! (`mallinfo2`) give the live heap. The breakdown then adds up, per component, the chunks of what
//! the source keeps, from its own listing and details:
//! - the summaries, kept compact (`CompactSummaries`): a record of 40 bytes per chart, every
//!   string of every summary one after the other in one text, the ends of the extensions' strings
//!   and the categories' numbers;
//! - the rest of each chart's detail (the plugin's `Extras`): a record of 16 bytes per chart, every
//!   string of every detail beyond the summary one after the other in one text, and where each
//!   ends;
//! - the search index: built again here over the same summaries (the same code,
//!   `SearchIndex::build`) and measured by glibc's counts; its trigram postings counted apart.
//!
//! What the components do not explain is shown as such: the live heap beyond them, and the resident
//! memory beyond the live heap (memory that `malloc` holds freed and has not given back to the
//! system; `malloc_trim(0)` then shows how much of it it can).

use std::{collections::HashMap, mem::size_of, time::Instant};

use tributary_plugin_api::{
    abi_stable::std_types::RResult, keys, Filter, ListRequest, RStr, SearchIndex, Summary,
};
use tributary_runtime::loader;

use super::{helm_config, Input};
use crate::harness::{
    process::{artifacts, own_vm_hwm_kib, own_vm_rss_kib, Workdir},
    Settings,
};

/// What glibc's `malloc` takes for a request of `size` bytes (x86-64): the request plus its 8-byte
/// header, rounded up to 16, at least 32. (Requests over the mmap threshold are given whole pages;
/// the few such blocks here, the large vectors, differ by under a page each.)
pub const fn chunk(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    let rounded = (size + 8 + 15) & !15;
    if rounded < 32 {
        32
    } else {
        rounded
    }
}

/// The record of one chart in the plugin's `Extras` (plugins/helm/src/extra.rs; a test there
/// checks its 16 bytes).
const DETAIL_RECORD: usize = 16;

/// The record of one chart in the plugin's `CompactSummaries` (plugin-api/src/compact.rs; a test
/// there checks its 40 bytes).
const COMPACT_SUMMARY_RECORD: usize = 40;

fn kib_bytes(kib: Option<u64>) -> usize {
    kib.unwrap_or(0) as usize * 1024
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// glibc's `struct mallinfo2`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Mallinfo2 {
        pub arena: usize,
        pub ordblks: usize,
        pub smblks: usize,
        pub hblks: usize,
        pub hblkhd: usize,
        pub usmblks: usize,
        pub fsmblks: usize,
        pub uordblks: usize,
        pub fordblks: usize,
        pub keepcost: usize,
    }

    extern "C" {
        fn mallinfo2() -> Mallinfo2;
        fn malloc_trim(pad: usize) -> i32;
    }

    /// glibc's counts over all its arenas.
    pub fn info() -> Option<Mallinfo2> {
        // SAFETY: both functions only read and trim glibc's own bookkeeping.
        Some(unsafe { mallinfo2() })
    }

    pub fn trim() {
        // SAFETY: as above.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Mallinfo2 {
        pub arena: usize,
        pub hblkhd: usize,
        pub uordblks: usize,
        pub fordblks: usize,
    }

    pub fn info() -> Option<Mallinfo2> {
        None
    }

    pub fn trim() {}
}

/// One line of the breakdown.
struct Component {
    what: &'static str,
    bytes: usize,
    how: &'static str,
}

/// Bytes `malloc` has given out and not taken back, every arena and mmapped block together.
fn in_use() -> usize {
    glibc::info().map_or(0, |m| m.uordblks + m.hblkhd)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The child mode; `args` are its arguments after `memory-breakdown`.
pub fn run_child(args: &[String]) -> Result<(), String> {
    let input = args
        .first()
        .and_then(|w| Input::from_word(w))
        .ok_or("memory-breakdown <generated|real|minimal> [--quick]")?;
    let settings = Settings {
        quick: args.iter().any(|a| a == "--quick"),
    };
    let work = Workdir::new();
    let written = input.write(&work.path().join("index.yaml"), &settings);
    let config = helm_config(&written.path).to_string();

    // The library, loaded as the server loads it.
    let library = artifacts().helm.clone();
    let files = loader::load_all(std::slice::from_ref(&library), false);
    let module = files[0]
        .outcome
        .as_ref()
        .map_err(|e| format!("{} does not load: {e}", library.display()))?
        .module
        .ok_or("load_all opens the library in this process")?;
    let context = tributary_runtime::context::context(
        "charts",
        std::path::Path::new(""),
        std::time::Duration::from_secs(600),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The peak from here on (writing the index above raised it): Linux resets VmHWM to VmRSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = kib_bytes(own_vm_rss_kib());
    let hwm_before = kib_bytes(own_vm_hwm_kib());
    let heap_before = in_use();

    let started = Instant::now();
    let source = match (module.new_source())(&context, RStr::from_str(&config)) {
        RResult::ROk(source) => source,
        RResult::RErr(e) => return Err(format!("the source: {e}")),
    };
    let load = started.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let rss_after = kib_bytes(own_vm_rss_kib());
    let hwm_after = kib_bytes(own_vm_hwm_kib());
    let malloc = glibc::info();
    let live = in_use().saturating_sub(heap_before);
    // What of the memory freed during the read malloc can give back, read now, before the listing
    // below allocates and frees its copies.
    glibc::trim();
    let rss_trimmed = kib_bytes(own_vm_rss_kib());

    // What the source keeps, from its own listing (copies, dropped before the search index is
    // measured).
    let everything = ListRequest {
        limit: u32::MAX,
        filter: Filter {
            include_deprecated: true,
            ..Filter::default()
        },
        ..ListRequest::default()
    };
    let summaries: Vec<Summary> = match source.list(&everything) {
        RResult::ROk(list) => list.into_vec(),
        RResult::RErr(e) => return Err(format!("the listing: {e}")),
    };
    let n = summaries.len();
    assert_eq!(n, written.charts, "every chart is listed");
    let sum = |f: &dyn Fn(&Summary) -> usize| summaries.iter().map(f).sum::<usize>();
    // The plugin keeps the summaries compact (`CompactSummaries`): every string once in one text,
    // a record per chart, the extensions' ends (two per extension) and the categories' numbers
    // (the distinct categories' text is left out: a few values).
    let extensions = sum(&|s| s.extensions.len());
    let categories = sum(&|s| s.categories.len());
    let strings = [
        sum(&|s| s.name.len() + s.display_name.len()),
        sum(&|s| s.identifier.len() + s.repository.len()),
        sum(&|s| s.latest_version.len() + s.latest_app_version.len()),
        sum(&|s| s.short_description.len()),
        sum(&|s| s.icon_url.len()),
        sum(&|s| {
            s.extensions
                .iter()
                .map(|e| e.key.len() + e.value.len())
                .sum::<usize>()
        }),
    ];
    let all_strings: usize = strings.iter().sum();
    let mut components = vec![
        Component {
            what: "summary records",
            bytes: chunk(n * COMPACT_SUMMARY_RECORD),
            how: "charts × 40 B (the ends of 8 strings, of the extensions and of the categories)",
        },
        Component {
            what: "summary text: name, and its copy as display name",
            bytes: strings[0],
            how: "the bytes of each string, from the listing",
        },
        Component {
            what:
                "summary text: identifier `big/<name>` and repository name, one of each per chart",
            bytes: strings[1],
            how: "as above",
        },
        Component {
            what: "summary text: latest version and app version",
            bytes: strings[2],
            how: "as above",
        },
        Component {
            what: "summary text: short description",
            bytes: strings[3],
            how: "as above",
        },
        Component {
            what: "summary text: icon URL",
            bytes: strings[4],
            how: "as above",
        },
        Component {
            what: "summary text: the update-time extension's key and value",
            bytes: strings[5] + (chunk(all_strings) - all_strings),
            how: "as above, and the chunk of the one text less its length",
        },
        Component {
            what: "summary: extensions' ends and categories' numbers",
            bytes: chunk(8 * extensions) + chunk(4 * categories),
            how: "the chunk of a u32 per extension key and value, and of a u32 per category",
        },
    ];

    // The rest of each chart's detail (its summary part is above). The plugin keeps it compact
    // and makes the detail's values when asked only: every string, the versions' four each and
    // the others', one after the other in one text for all charts, and a `u32` where each ends.
    let (mut ends, mut version_text, mut other_text) = (0, 0, 0);
    let mut version_count = 0;
    for summary in &summaries {
        let detail = match source.detail(RStr::from_str(&summary.identifier)) {
            RResult::ROk(detail) => detail,
            RResult::RErr(e) => return Err(format!("the detail of {}: {e}", summary.identifier)),
        };
        version_count += detail.versions.len();
        let versions: usize = detail
            .versions
            .iter()
            .map(|v| v.version.len() + v.app_version.len() + v.created.len() + v.digest.len())
            .sum();
        let chart_url = detail
            .extensions
            .iter()
            .find(|e| e.key.as_str() == keys::DETAIL_DOWNLOAD_URL)
            .map_or(0, |e| e.value.len());
        let others = detail.home_url.len()
            + detail.source_urls.iter().map(|s| s.len()).sum::<usize>()
            + detail
                .maintainers
                .iter()
                .map(|m| m.name.len() + m.email.len() + m.url.len())
                .sum::<usize>()
            + detail.keywords.iter().map(|k| k.len()).sum::<usize>()
            + chart_url;
        // Four a version; the home URL, each source URL, three a maintainer, each keyword, and
        // the chart URL (empty or not) one each.
        let strings = 4 * detail.versions.len()
            + 1
            + detail.source_urls.len()
            + 3 * detail.maintainers.len()
            + detail.keywords.len()
            + 1;
        ends += strings * size_of::<u32>();
        version_text += versions;
        other_text += others;
    }
    assert_eq!(version_count, written.versions, "every version is kept");
    components.extend([
        Component {
            what: "detail records (the plugin's `Extras`)",
            bytes: chunk(n * DETAIL_RECORD),
            how: "charts × 16 B (where its text and its ends end, three u16 counts)",
        },
        Component {
            what: "detail: where each string ends (a u32 each)",
            bytes: chunk(ends),
            how: "4 B × (4 a version + home + sources + 3 a maintainer + keywords + chart URL), \
                  from the details, in one chunk",
        },
        Component {
            what: "detail text: versions' version, app version, created, digest",
            bytes: version_text,
            how: "their lengths, from the details",
        },
        Component {
            what: "detail text: home, sources, maintainers, keywords, chart URL",
            bytes: chunk(version_text + other_text) - version_text,
            how: "their lengths, from the details, and the chunk of the one text less its length",
        },
    ]);

    // The search index, built again over the same summaries and measured; its postings counted.
    let mut postings: HashMap<[u8; 3], usize> = HashMap::new();
    let mut seen: Vec<[u8; 3]> = Vec::new();
    for s in &summaries {
        seen.clear();
        for field in [&s.name, &s.display_name, &s.short_description] {
            let lowered = field.to_lowercase();
            seen.extend(lowered.as_bytes().windows(3).map(|g| [g[0], g[1], g[2]]));
        }
        seen.sort_unstable();
        seen.dedup();
        for gram in &seen {
            *postings.entry(*gram).or_default() += 1;
        }
    }
    let posting_entries: usize = postings.values().sum();
    let posting_bytes: usize = postings.values().map(|&count| chunk(count * 4)).sum();
    let trigrams = postings.len();
    drop(postings);
    drop(seen);
    let before_index = in_use();
    let index = SearchIndex::build(&summaries);
    let index_bytes = in_use().saturating_sub(before_index);
    drop(index);
    components.extend([
        Component {
            what: "search index: trigram postings",
            bytes: posting_bytes,
            how: "a u32 per chart and distinct trigram of its name, display name and description",
        },
        Component {
            what: "search index: the rest (hash tables, categories, update-time order)",
            bytes: index_bytes.saturating_sub(posting_bytes),
            how: "SearchIndex::build over the listing, measured (mallinfo2), less the postings",
        },
    ]);
    let counted: usize = components.iter().map(|c| c.bytes).sum();
    drop(summaries);

    let resident = rss_after.saturating_sub(rss_before);
    components.push(Component {
        what: "other live heap",
        bytes: live.saturating_sub(counted),
        how: "malloc's bytes in use after the read (mallinfo2) less before, less the components",
    });
    components.push(Component {
        what: "freed, not given back by malloc",
        bytes: resident.saturating_sub(live.max(counted)),
        how: "VmRSS after the read less VmRSS before, less the live heap",
    });

    println!(
        "# {}: {} bytes, {} charts, {} versions; read in {:.2} s\n",
        input.word(),
        written.bytes,
        written.charts,
        written.versions,
        load.as_secs_f64()
    );
    println!("| component | bytes | share | per chart | how |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for c in &components {
        println!(
            "| {} | {:.1} MiB | {:.1}% | {:.0} B | {} |",
            c.what,
            mib(c.bytes),
            100.0 * c.bytes as f64 / resident.max(1) as f64,
            c.bytes as f64 / n as f64,
            c.how
        );
    }
    println!(
        "| **resident memory the index added** | {:.1} MiB | 100% | {:.0} B | VmRSS after the read \
         less VmRSS before |",
        mib(resident),
        resident as f64 / n as f64
    );
    println!();
    println!(
        "index text {:.1} MiB; live heap after the read {:.1} MiB, of which the components {:.1} \
         MiB; trigram postings: {posting_entries} entries in {trigrams} lists; search index \
         measured {:.1} MiB",
        mib(written.bytes as usize),
        mib(live),
        mib(counted),
        mib(index_bytes),
    );
    println!(
        "peak: VmHWM +{:.1} MiB over VmRSS before the read (VmHWM {:.1} MiB before, {:.1} MiB \
         after; VmRSS {:.1} MiB before, {:.1} MiB after)",
        mib(hwm_after.saturating_sub(rss_before)),
        mib(hwm_before),
        mib(hwm_after),
        mib(rss_before),
        mib(rss_after),
    );
    if let Some(m) = malloc {
        println!(
            "malloc (mallinfo2, all arenas): {:.1} MiB from the system for its arenas, {:.1} MiB \
             mmapped blocks, {:.1} MiB in use in the arenas, {:.1} MiB free in them",
            mib(m.arena),
            mib(m.hblkhd),
            mib(m.uordblks),
            mib(m.fordblks),
        );
    }
    println!(
        "malloc_trim(0) right after the read: VmRSS {:.1} -> {:.1} MiB ({:.1} MiB given back)",
        mib(rss_after),
        mib(rss_trimmed),
        mib(rss_after.saturating_sub(rss_trimmed)),
    );
    drop(source);
    Ok(())
}
