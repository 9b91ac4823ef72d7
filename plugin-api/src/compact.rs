//! A package's detail kept compact until it is asked for (part of the kit: no host needs it).
//!
//! A source that keeps every package's [`Detail`] as the interface's types pays for its fixed
//! records (a `Version` is 128 bytes, a `Maintainer` 96, each `RString` and `RVec` 32) and for one
//! allocation per string, often more than the text itself. [`CompactDetail`] keeps everything of a
//! detail but its summary in two allocations (every string one after the other, and where each
//! ends) and a few counts; [`CompactDetail::detail`] makes the `Detail` again, equal to the one it
//! was made from, when a call asks for it. The summary stays apart, with the source's listing.
//!
//! [`give_back_freed_memory`] is for after a source has read its data: what the parse freed goes
//! back to the system instead of staying resident.

use abi_stable::std_types::{RString, RVec};

use crate::types::{Detail, Extension, Maintainer, Summary, Version};

/// Everything of one [`Detail`] but its summary, in two allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactDetail {
    /// Every string, one after the other, in this order: home URL, readme, each version's four
    /// (version, app version, created, digest), each source URL, each maintainer's three (name,
    /// email, URL), each keyword, each extension's two (key, value).
    text: Box<str>,
    /// Where each string ends in `text`.
    ends: Box<[u32]>,
    /// How many versions, source URLs, maintainers, keywords and extensions.
    counts: [u32; 5],
}

impl CompactDetail {
    /// `detail` without its summary; `None` when its strings come to 4 GiB or more (offsets are 32
    /// bits: a detail within the host's contract has at most 10,000 versions of strings up to
    /// 64 KiB, 2.6 GB).
    pub fn new(detail: &Detail) -> Option<CompactDetail> {
        let strings = || {
            [detail.home_url.as_str(), detail.readme.as_str()]
                .into_iter()
                .chain(detail.versions.iter().flat_map(|v| {
                    [
                        v.version.as_str(),
                        v.app_version.as_str(),
                        v.created.as_str(),
                        v.digest.as_str(),
                    ]
                }))
                .chain(detail.source_urls.iter().map(|u| u.as_str()))
                .chain(
                    detail
                        .maintainers
                        .iter()
                        .flat_map(|m| [m.name.as_str(), m.email.as_str(), m.url.as_str()]),
                )
                .chain(detail.keywords.iter().map(|k| k.as_str()))
                .chain(
                    detail
                        .extensions
                        .iter()
                        .flat_map(|e| [e.key.as_str(), e.value.as_str()]),
                )
        };
        let (mut count, mut bytes) = (0usize, 0usize);
        for s in strings() {
            count += 1;
            bytes += s.len();
        }
        if u32::try_from(bytes).is_err() {
            return None;
        }
        let counts = [
            detail.versions.len(),
            detail.source_urls.len(),
            detail.maintainers.len(),
            detail.keywords.len(),
            detail.extensions.len(),
        ]
        .map(|n| n as u32);
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(count);
        for s in strings() {
            text.push_str(s);
            // Within the bound checked above.
            ends.push(text.len() as u32);
        }
        Some(CompactDetail {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            counts,
        })
    }

    /// The detail again, with `summary` as its summary.
    pub fn detail(&self, summary: Summary) -> Detail {
        let mut strings = Strings {
            compact: self,
            next: 0,
        };
        let [versions, source_urls, maintainers, keywords, extensions] =
            self.counts.map(|n| n as usize);
        let home_url = strings.next();
        let readme = strings.next();
        Detail {
            summary,
            versions: (0..versions)
                .map(|_| Version {
                    version: strings.next(),
                    app_version: strings.next(),
                    created: strings.next(),
                    digest: strings.next(),
                })
                .collect(),
            home_url,
            source_urls: (0..source_urls).map(|_| strings.next()).collect(),
            maintainers: (0..maintainers)
                .map(|_| Maintainer {
                    name: strings.next(),
                    email: strings.next(),
                    url: strings.next(),
                })
                .collect(),
            readme,
            keywords: (0..keywords).map(|_| strings.next()).collect::<RVec<_>>(),
            extensions: (0..extensions)
                .map(|_| Extension {
                    key: strings.next(),
                    value: strings.next(),
                })
                .collect(),
        }
    }

    /// The bytes this keeps on the heap (its strings and their ends), for memory accounts.
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + 4 * self.ends.len()
    }
}

/// Gives the memory `malloc` holds freed back to the system: call it after the source's data was
/// read and the old data dropped.
///
/// A plugin allocates with the C library's `malloc` (the host's allocator is its own); glibc's
/// keeps what is freed for later requests, and reading a catalog frees much: its text, the parsed
/// form it was converted from, the data it replaced. Data is read rarely and kept long, so that
/// memory would stay resident and unused until the next read. Does nothing off glibc.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: `malloc_trim` takes no pointers and is safe to call at any time, from any
        // thread (glibc locks each arena it trims). Its result only says whether memory was
        // given back.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The strings of a [`CompactDetail`], in their order.
struct Strings<'a> {
    compact: &'a CompactDetail,
    next: usize,
}

impl Strings<'_> {
    fn next(&mut self) -> RString {
        let ends = &self.compact.ends;
        let start = match self.next {
            0 => 0,
            i => ends[i - 1] as usize,
        };
        let end = ends[self.next] as usize;
        self.next += 1;
        RString::from(&self.compact.text[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so that the test needs nothing beyond the crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn string(&mut self) -> RString {
            const PIECES: [&str; 6] = ["", "a", "é", "https://example.com/x", "1.2.3", "日本"];
            let mut s = String::new();
            for _ in 0..self.below(4) {
                s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
            RString::from(s)
        }

        fn strings(&mut self, most: u64) -> RVec<RString> {
            (0..self.below(most + 1)).map(|_| self.string()).collect()
        }
    }

    fn random_detail(rng: &mut Rng) -> Detail {
        Detail {
            summary: Summary {
                name: rng.string(),
                identifier: RString::from("id"),
                ..Summary::default()
            },
            versions: (0..rng.below(5))
                .map(|_| Version {
                    version: rng.string(),
                    app_version: rng.string(),
                    created: rng.string(),
                    digest: rng.string(),
                })
                .collect(),
            home_url: rng.string(),
            source_urls: rng.strings(3),
            maintainers: (0..rng.below(3))
                .map(|_| Maintainer {
                    name: rng.string(),
                    email: rng.string(),
                    url: rng.string(),
                })
                .collect(),
            readme: rng.string(),
            keywords: rng.strings(4),
            extensions: (0..rng.below(3))
                .map(|_| Extension {
                    key: rng.string(),
                    value: rng.string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_detail_comes_back_as_it_was_given() {
        let mut rng = Rng(11);
        for _ in 0..2000 {
            let detail = random_detail(&mut rng);
            let compact = CompactDetail::new(&detail).unwrap();
            assert_eq!(compact.detail(detail.summary.clone()), detail);
        }
        let empty = Detail::default();
        let compact = CompactDetail::new(&empty).unwrap();
        assert_eq!(compact.detail(Summary::default()), empty);
        assert_eq!(compact, CompactDetail::new(&empty).unwrap());
    }

    #[test]
    fn its_record_is_small() {
        // Two boxes and five counts, against a `Detail`'s 552 bytes (224 without its summary).
        assert_eq!(std::mem::size_of::<CompactDetail>(), 56);
    }
}
