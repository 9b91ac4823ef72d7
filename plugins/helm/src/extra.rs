//! The rest of a chart's detail beyond its summary, kept compact until a detail asks for it.
//!
//! A detail gives, besides the summary, every version of the chart (four strings each) and, from
//! the latest version, its home URL, source URLs, maintainers (a name, an email and a URL each),
//! keywords and the URL to download the chart from. Kept as the interface's strings and vectors,
//! these took a 192-byte struct and an allocation for every non-empty string and list: more than
//! their text for most charts. [`Extra`] keeps them in two allocations a chart, all the strings one
//! after the other and where each ends, with the counts that say which string is which; a detail
//! makes the interface's values from them when it is asked for (`detail_of` in lib.rs), equal to
//! the ones they were given as.

use tributary_plugin_api::{Maintainer, RString, RVec};

use crate::versions::{Fields, Versions};

/// The parts of a chart's detail, as [`Extra::new`] takes them: borrowed from the index's text,
/// already filtered as a detail lists them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parts<'a> {
    /// Every version's strings, in the order a detail lists them.
    pub versions: Vec<Fields<'a>>,
    pub home_url: &'a str,
    pub source_urls: Vec<&'a str>,
    /// Each maintainer's name, email and URL.
    pub maintainers: Vec<[&'a str; 3]>,
    pub keywords: Vec<&'a str>,
    /// Where to download the latest version from, as the index gives it (maybe relative); empty
    /// for none.
    pub chart_url: &'a str,
    pub deprecated: bool,
}

/// What a chart's detail holds beyond its summary (the README is the summary's description), in
/// two allocations: its strings one after the other in `text`, in this order, and where each ends
/// in `ends`:
/// - every version's four strings ([`Versions`]), `4 × versions` strings;
/// - the home URL, one string;
/// - the source URLs, `source_urls` strings;
/// - each maintainer's name, email and URL, `3 × maintainers` strings;
/// - the keywords, the strings up to the last;
/// - the chart URL, the last string (so that it can be replaced alone).
///
/// An empty string is an end equal to the one before: each string is told apart, empty or not.
/// The default record, of no strings at all, reads as a chart of no versions and empty strings
/// and lists (split.rs fills arrays of these before it parses into them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extra {
    /// Every string, one after the other.
    text: Box<str>,
    /// Where each string ends in `text`.
    ends: Box<[u32]>,
    /// How many versions; the first `4 × versions` strings are theirs.
    versions: u32,
    /// How many source URLs follow the home URL.
    source_urls: u32,
    /// How many maintainers follow the source URLs.
    maintainers: u32,
    /// The latest version's `deprecated` flag (the summary's own copy is the one served).
    pub deprecated: bool,
}

impl Extra {
    /// The record of `parts`; `None` when its strings come to more than 4 GiB together (offsets
    /// are 32 bits: a chart within the host's contract has at most 10,000 versions of strings up
    /// to 64 KiB, 2.6 GB, and a few more strings of the latest version).
    pub(crate) fn new(parts: &Parts<'_>) -> Option<Extra> {
        let versions = parts.versions.iter().flatten();
        let maintainers = parts.maintainers.iter().flatten();
        let strings = versions
            .chain([&parts.home_url])
            .chain(&parts.source_urls)
            .chain(maintainers)
            .chain(&parts.keywords)
            .chain([&parts.chart_url]);
        let bytes: usize = strings.clone().map(|s| s.len()).sum();
        if u32::try_from(bytes).is_err() {
            return None;
        }
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(strings.clone().count());
        for string in strings {
            text.push_str(string);
            // Within the bound checked above.
            ends.push(text.len() as u32);
        }
        Some(Extra {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            versions: u32::try_from(parts.versions.len()).ok()?,
            source_urls: u32::try_from(parts.source_urls.len()).ok()?,
            maintainers: u32::try_from(parts.maintainers.len()).ok()?,
            deprecated: parts.deprecated,
        })
    }

    /// The record, read in place.
    pub(crate) fn view(&self) -> ExtraRef<'_> {
        ExtraRef {
            text: &self.text,
            ends: &self.ends,
            versions: self.versions,
            source_urls: self.source_urls,
            maintainers: self.maintainers,
        }
    }

    /// Every version, in the order a detail lists them.
    pub(crate) fn versions(&self) -> Versions<'_> {
        self.view().versions()
    }

    #[cfg(test)]
    pub(crate) fn home_url(&self) -> &str {
        self.view().home_url()
    }

    #[cfg(test)]
    pub(crate) fn source_urls(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.view().source_urls()
    }

    #[cfg(test)]
    /// Each maintainer's name, email and URL.
    pub(crate) fn maintainers(&self) -> impl ExactSizeIterator<Item = [&str; 3]> + '_ {
        self.view().maintainers()
    }

    #[cfg(test)]
    pub(crate) fn keywords(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.view().keywords()
    }

    /// Where to download the latest version from; empty for none.
    pub(crate) fn chart_url(&self) -> &str {
        self.view().chart_url()
    }

    /// Replaces the chart URL (with its absolute form: lib.rs resolves it against the repository's
    /// URL after parsing), in a new text of exactly its length; `None`, and the record unchanged,
    /// when its strings would come to more than 4 GiB.
    pub(crate) fn set_chart_url(&mut self, url: &str) -> Option<()> {
        if self.ends.is_empty() {
            // The default record: an empty home URL, then the chart URL.
            let parts = Parts {
                chart_url: url,
                deprecated: self.deprecated,
                ..Parts::default()
            };
            *self = Extra::new(&parts)?;
            return Some(());
        }
        let last = self.ends.len() - 1;
        let start = match last {
            0 => 0,
            last => self.ends[last - 1] as usize,
        };
        let end = u32::try_from(start + url.len()).ok()?;
        let mut text = String::with_capacity(start + url.len());
        text.push_str(&self.text[..start]);
        text.push_str(url);
        self.text = text.into_boxed_str();
        self.ends[last] = end;
        Some(())
    }
}

/// A chart's record read in place: in an [`Extra`] or in a repository's [`Extras`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtraRef<'a> {
    /// The chart's strings, one after the other.
    text: &'a str,
    /// Where each string ends in `text`.
    ends: &'a [u32],
    versions: u32,
    source_urls: u32,
    maintainers: u32,
}

impl<'a> ExtraRef<'a> {
    /// Where string `j` starts in `text`.
    fn start(self, j: usize) -> usize {
        match j {
            0 => 0,
            j => self.ends[j - 1] as usize,
        }
    }

    /// String `j`; empty past the last (the default record has none).
    fn string(self, j: usize) -> &'a str {
        match self.ends.get(j) {
            Some(&end) => &self.text[self.start(j)..end as usize],
            None => "",
        }
    }

    /// Strings `from` up to `to`, not included.
    fn strings(self, from: usize, to: usize) -> impl ExactSizeIterator<Item = &'a str> {
        (from..to).map(move |j| self.string(j))
    }

    /// The position of the home URL: the first string after the versions'.
    fn home(self) -> usize {
        4 * self.versions as usize
    }

    /// The position of the first maintainer's name.
    fn first_maintainer(self) -> usize {
        self.home() + 1 + self.source_urls as usize
    }

    /// The position of the first keyword.
    fn first_keyword(self) -> usize {
        self.first_maintainer() + 3 * self.maintainers as usize
    }

    /// The position of the chart URL, the last string (that of the default record is past the
    /// strings, and reads as empty).
    fn chart(self) -> usize {
        self.ends.len().saturating_sub(1).max(self.first_keyword())
    }

    /// Every version, in the order a detail lists them.
    pub(crate) fn versions(self) -> Versions<'a> {
        let ends = &self.ends[..self.home().min(self.ends.len())];
        Versions::new(self.text, ends)
    }

    pub(crate) fn home_url(self) -> &'a str {
        self.string(self.home())
    }

    pub(crate) fn source_urls(self) -> impl ExactSizeIterator<Item = &'a str> {
        self.strings(self.home() + 1, self.first_maintainer())
    }

    /// Each maintainer's name, email and URL.
    pub(crate) fn maintainers(self) -> impl ExactSizeIterator<Item = [&'a str; 3]> {
        let first = self.first_maintainer();
        (0..self.maintainers as usize)
            .map(move |i| std::array::from_fn(|k| self.string(first + 3 * i + k)))
    }

    pub(crate) fn keywords(self) -> impl ExactSizeIterator<Item = &'a str> {
        self.strings(self.first_keyword(), self.chart())
    }

    /// Where to download the latest version from; empty for none.
    pub(crate) fn chart_url(self) -> &'a str {
        self.string(self.chart())
    }

    /// The interface's maintainers, for a detail.
    pub(crate) fn maintainers_rvec(self) -> RVec<Maintainer> {
        let mut maintainers = RVec::with_capacity(self.maintainers as usize);
        maintainers.extend(self.maintainers().map(|[name, email, url]| Maintainer {
            name: RString::from(name),
            email: RString::from(email),
            url: RString::from(url),
        }));
        maintainers
    }
}

/// Every chart's record of one repository in three allocations, in the charts' order: all their
/// strings one after the other in one text, where each ends (counted from its chart's first
/// string), and a 16-byte record a chart. Against a [`Extra`] a chart (48 bytes and two
/// allocations of its own, each with `malloc`'s header and rounding), a chart costs its strings,
/// 4 bytes a string and 16; and nothing is left between other allocations when the parse's
/// records are freed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    text: Box<str>,
    ends: Box<[u32]>,
    records: Box<[Stored]>,
}

/// One chart of an [`Extras`]: where its text and its ends end (they start where the previous
/// chart's end), and its counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stored {
    text_end: u32,
    ends_end: u32,
    versions: u16,
    source_urls: u16,
    maintainers: u16,
}

impl Extras {
    /// The records of `extras`, in their order, consumed as they are copied; given back
    /// unchanged when they do not fit: their text comes to 4 GiB or more, or a chart has more
    /// than 65,535 versions, source URLs or maintainers (the host's contract allows 10,000
    /// versions and 1,024 entries of a list: charts past it are left out before this).
    pub(crate) fn new(extras: Vec<Extra>) -> Result<Extras, Vec<Extra>> {
        let bytes: usize = extras.iter().map(|e| e.text.len()).sum();
        let strings: usize = extras.iter().map(|e| e.ends.len()).sum();
        let counts_fit = extras.iter().all(|e| {
            [e.versions, e.source_urls, e.maintainers]
                .iter()
                .all(|&n| u16::try_from(n).is_ok())
        });
        if u32::try_from(bytes).is_err() || u32::try_from(strings).is_err() || !counts_fit {
            return Err(extras);
        }
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(strings);
        let mut records = Vec::with_capacity(extras.len());
        for extra in extras {
            text.push_str(&extra.text);
            ends.extend_from_slice(&extra.ends);
            // Within the bounds checked above.
            records.push(Stored {
                text_end: text.len() as u32,
                ends_end: ends.len() as u32,
                versions: extra.versions as u16,
                source_urls: extra.source_urls as u16,
                maintainers: extra.maintainers as u16,
            });
        }
        Ok(Extras {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            records: records.into_boxed_slice(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The record of the chart at `position` (panics past the end).
    pub(crate) fn get(&self, position: usize) -> ExtraRef<'_> {
        let record = &self.records[position];
        let (text_start, ends_start) = match position.checked_sub(1) {
            None => (0, 0),
            Some(p) => (self.records[p].text_end, self.records[p].ends_end),
        };
        ExtraRef {
            text: &self.text[text_start as usize..record.text_end as usize],
            ends: &self.ends[ends_start as usize..record.ends_end as usize],
            versions: record.versions.into(),
            source_urls: record.source_urls.into(),
            maintainers: record.maintainers.into(),
        }
    }

    /// The records, in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = ExtraRef<'_>> + '_ {
        (0..self.len()).map(|p| self.get(p))
    }
}

#[cfg(test)]
impl Extra {
    /// The lengths of the record's two allocations: its text's bytes and its strings' ends.
    pub(crate) fn lengths(&self) -> (usize, usize) {
        (self.text.len(), self.ends.len())
    }
}

/// The interface's strings, for a detail: a vector of exactly their number.
pub(crate) fn rstrings<'a>(strings: impl ExactSizeIterator<Item = &'a str>) -> RVec<RString> {
    let mut all = RVec::with_capacity(strings.len());
    all.extend(strings.map(RString::from));
    all
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use tributary_plugin_api::{keys, Detail, Extension, Summary, Version};

    use super::*;

    /// Owned parts, for tests that make them at random.
    #[derive(Debug, Default)]
    struct Owned {
        versions: Vec<[String; 4]>,
        home_url: String,
        source_urls: Vec<String>,
        maintainers: Vec<[String; 3]>,
        keywords: Vec<String>,
        chart_url: String,
        deprecated: bool,
    }

    impl Owned {
        fn parts(&self) -> Parts<'_> {
            Parts {
                versions: self
                    .versions
                    .iter()
                    .map(|v| v.each_ref().map(String::as_str))
                    .collect(),
                home_url: &self.home_url,
                source_urls: self.source_urls.iter().map(String::as_str).collect(),
                maintainers: self
                    .maintainers
                    .iter()
                    .map(|m| m.each_ref().map(String::as_str))
                    .collect(),
                keywords: self.keywords.iter().map(String::as_str).collect(),
                chart_url: &self.chart_url,
                deprecated: self.deprecated,
            }
        }

        /// The detail the plugin made of these parts when it kept them as the interface's values
        /// (`detail_of` before the compact record), written from them directly.
        fn detail(&self, summary: &Summary) -> Detail {
            let rstrings = |all: &[String]| -> RVec<RString> {
                all.iter().map(|s| RString::from(s.as_str())).collect()
            };
            Detail {
                readme: summary.short_description.clone(),
                summary: summary.clone(),
                versions: self
                    .versions
                    .iter()
                    .map(|[version, app_version, created, digest]| Version {
                        version: version.as_str().into(),
                        app_version: app_version.as_str().into(),
                        created: created.as_str().into(),
                        digest: digest.as_str().into(),
                    })
                    .collect(),
                home_url: self.home_url.as_str().into(),
                source_urls: rstrings(&self.source_urls),
                maintainers: self
                    .maintainers
                    .iter()
                    .map(|[name, email, url]| Maintainer {
                        name: name.as_str().into(),
                        email: email.as_str().into(),
                        url: url.as_str().into(),
                    })
                    .collect(),
                keywords: rstrings(&self.keywords),
                extensions: if self.chart_url.is_empty() {
                    RVec::new()
                } else {
                    RVec::from(vec![Extension {
                        key: keys::DETAIL_DOWNLOAD_URL.into(),
                        value: self.chart_url.as_str().into(),
                    }])
                },
            }
        }
    }

    /// A string at random: empty a third of the time, else up to 12 characters, some of them not
    /// ASCII (of two, three and four bytes in UTF-8).
    fn string(rng: &mut impl Rng) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', '/', ':', ' ', '.', 'é', '«', '»', 'ß', '中', '😀',
        ];
        if rng.random_range(0..3) == 0 {
            return String::new();
        }
        (0..rng.random_range(1..=12))
            .map(|_| CHARS[rng.random_range(0..CHARS.len())])
            .collect()
    }

    /// Parts at random: 0 to 4 of each list (so often none), strings as [`string`] makes them.
    fn random_parts(rng: &mut impl Rng) -> Owned {
        fn count(rng: &mut impl Rng) -> usize {
            rng.random_range(0..=4)
        }
        Owned {
            versions: (0..count(rng))
                .map(|_| std::array::from_fn(|_| string(rng)))
                .collect(),
            home_url: string(rng),
            source_urls: (0..count(rng)).map(|_| string(rng)).collect(),
            maintainers: (0..count(rng))
                .map(|_| std::array::from_fn(|_| string(rng)))
                .collect(),
            keywords: (0..count(rng)).map(|_| string(rng)).collect(),
            chart_url: string(rng),
            deprecated: rng.random(),
        }
    }

    #[test]
    fn random_details_come_back_as_the_plugin_made_them_before() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let summary = Summary {
            name: "chart".into(),
            short_description: "a «chart»".into(),
            ..Summary::default()
        };
        for _ in 0..5000 {
            let owned = random_parts(&mut rng);
            let extra = Extra::new(&owned.parts()).unwrap();
            let made = crate::detail_of(summary.clone(), extra.view());
            assert_eq!(made, owned.detail(&summary), "{owned:?}");
            // Every field, on its own.
            assert_eq!(extra.versions().len(), owned.versions.len());
            assert_eq!(extra.home_url(), owned.home_url);
            assert!(extra
                .source_urls()
                .eq(owned.source_urls.iter().map(String::as_str)));
            assert_eq!(extra.keywords().len(), owned.keywords.len());
            assert_eq!(extra.chart_url(), owned.chart_url);
            assert_eq!(extra.deprecated, owned.deprecated);
            // Two allocations of exactly the strings.
            let strings = 4 * owned.versions.len()
                + 2
                + owned.source_urls.len()
                + 3 * owned.maintainers.len()
                + owned.keywords.len();
            assert_eq!(extra.ends.len(), strings);
            assert_eq!(extra.text.len(), *extra.ends.last().unwrap() as usize);

            // The chart URL replaced, as lib.rs does with its absolute form.
            let mut replaced = extra.clone();
            let url = string(&mut rng);
            replaced.set_chart_url(&url).unwrap();
            let owned = Owned {
                chart_url: url,
                ..owned
            };
            assert_eq!(replaced, Extra::new(&owned.parts()).unwrap());
            assert_eq!(
                crate::detail_of(summary.clone(), replaced.view()),
                owned.detail(&summary)
            );
        }
    }

    #[test]
    fn the_default_record_is_a_chart_of_nothing() {
        let extra = Extra::default();
        let detail = crate::detail_of(Summary::default(), extra.view());
        assert_eq!(detail, Owned::default().detail(&Summary::default()));
        assert_eq!(extra.versions().len(), 0);
        let mut replaced = extra.clone();
        replaced.set_chart_url("https://example.com/c.tgz").unwrap();
        assert_eq!(replaced.chart_url(), "https://example.com/c.tgz");
        assert_eq!(replaced.home_url(), "");
        assert_eq!(replaced.keywords().len(), 0);
    }

    #[test]
    fn one_chart_takes_two_allocations_of_its_length() {
        let parts = Parts {
            versions: vec![["1.0.0", "1", "2024-01-01T00:00:00Z", "00"]; 3],
            home_url: "https://h",
            source_urls: vec!["s1", ""],
            maintainers: vec![["", "m@e", ""]],
            keywords: vec!["k"],
            chart_url: "",
            deprecated: true,
        };
        let extra = Extra::new(&parts).unwrap();
        assert_eq!(extra.text.len(), 3 * 28 + 9 + 2 + 3 + 1);
        assert_eq!(extra.ends.len(), 12 + 1 + 2 + 3 + 1 + 1);
        assert_eq!(extra.versions().get(2), parts.versions[2]);
        assert_eq!(extra.source_urls().collect::<Vec<_>>(), ["s1", ""]);
        assert_eq!(extra.maintainers().collect::<Vec<_>>(), [["", "m@e", ""]]);
        assert_eq!(extra.keywords().collect::<Vec<_>>(), ["k"]);
        assert_eq!(extra.chart_url(), "");
        // Two boxes, three counts and a flag (the bench's memory breakdown counts this size).
        assert_eq!(std::mem::size_of::<Extra>(), 48);
    }

    #[test]
    fn a_repository_of_records_reads_as_each_record() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let summary = Summary {
            name: "chart".into(),
            ..Summary::default()
        };
        let owned: Vec<Owned> = (0..2000).map(|_| random_parts(&mut rng)).collect();
        let mut extras: Vec<Extra> = owned
            .iter()
            .map(|o| Extra::new(&o.parts()).unwrap())
            .collect();
        // Records of no strings at all among them (split.rs fills arrays with these).
        extras[0] = Extra::default();
        extras[1000] = Extra::default();
        let expected: Vec<Detail> = extras
            .iter()
            .map(|e| crate::detail_of(summary.clone(), e.view()))
            .collect();
        let text: usize = extras.iter().map(|e| e.text.len()).sum();
        let strings: usize = extras.iter().map(|e| e.ends.len()).sum();
        let store = Extras::new(extras).unwrap();
        assert_eq!(store.len(), 2000);
        assert_eq!((store.text.len(), store.ends.len()), (text, strings));
        for (i, record) in store.iter().enumerate() {
            assert_eq!(
                crate::detail_of(summary.clone(), record),
                expected[i],
                "chart {i}"
            );
        }
        assert_eq!(store.get(1).chart_url(), owned[1].chart_url);
        assert_eq!(Extras::new(Vec::new()).unwrap().len(), 0);
        // The bench's memory breakdown counts this size.
        assert_eq!(std::mem::size_of::<Stored>(), 16);
    }

    #[test]
    fn counts_past_a_record_are_given_back() {
        let parts = Parts {
            source_urls: vec!["s"; 70_000],
            ..Parts::default()
        };
        let extras = vec![Extra::default(), Extra::new(&parts).unwrap()];
        let given_back = Extras::new(extras.clone()).unwrap_err();
        assert_eq!(given_back, extras);
    }
}
