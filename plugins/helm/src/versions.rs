//! A chart's versions, kept compact until a detail asks for them.
//!
//! A detail lists every version of its chart with four strings: the version, its app version,
//! when it was created and its digest. Kept as the interface's [`Version`]s, each version costs
//! 128 bytes and four allocations of its own, more than its text for most charts. [`Versions`]
//! keeps a chart's versions in two allocations: their strings one after the other, and where each
//! ends. [`Versions::to_rvec`] makes the `Version`s when a detail is asked for, equal to the ones
//! the strings were given as.

use tributary_plugin_api::{RString, RVec, Version};

/// The strings of one version: version, app version, created, digest.
pub(crate) type Fields<'a> = [&'a str; 4];

/// The versions of one chart, in the order a detail lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Versions {
    /// Every version's four strings, one after the other.
    text: Box<str>,
    /// Where each string ends in `text`: four per version.
    ends: Box<[u32]>,
}

impl Versions {
    /// The versions given, in their order; `None` when their strings come to more than 4 GiB
    /// together (offsets are 32 bits: a chart within the host's contract has at most 10,000
    /// versions of strings up to 64 KiB, 2.6 GB).
    pub(crate) fn new<'a>(versions: impl Iterator<Item = Fields<'a>> + Clone) -> Option<Versions> {
        let (mut count, mut bytes) = (0usize, 0usize);
        for fields in versions.clone() {
            count += 1;
            bytes += fields.iter().map(|f| f.len()).sum::<usize>();
        }
        if u32::try_from(bytes).is_err() {
            return None;
        }
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(4 * count);
        for fields in versions {
            for field in fields {
                text.push_str(field);
                // Within the bound checked above.
                ends.push(text.len() as u32);
            }
        }
        Some(Versions {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len() / 4
    }

    /// The strings of version `i`.
    pub(crate) fn get(&self, i: usize) -> Fields<'_> {
        let start = |j: usize| match j {
            0 => 0,
            j => self.ends[j - 1] as usize,
        };
        std::array::from_fn(|k| {
            let j = 4 * i + k;
            &self.text[start(j)..self.ends[j] as usize]
        })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Fields<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The versions as the interface's values, for a detail.
    pub(crate) fn to_rvec(&self) -> RVec<Version> {
        let mut versions = RVec::with_capacity(self.len());
        versions.extend(
            self.iter()
                .map(|[version, app_version, created, digest]| Version {
                    version: RString::from(version),
                    app_version: RString::from(app_version),
                    created: RString::from(created),
                    digest: RString::from(digest),
                }),
        );
        versions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(fields: Fields<'_>) -> Version {
        let [version, app_version, created, digest] = fields.map(RString::from);
        Version {
            version,
            app_version,
            created,
            digest,
        }
    }

    #[test]
    fn versions_come_back_as_they_were_given() {
        let cases: Vec<Vec<Fields<'static>>> = vec![
            vec![],
            vec![["1.0.0", "", "", ""]],
            vec![["", "", "", ""], ["", "", "", ""]],
            vec![
                ["2.0.0-rc.1", "v2", "2024-01-02T03:04:05.678Z", "ab12"],
                ["1.10.0", "1.25.1 «é»", "2023-07-10T10:12:48Z", ""],
                ["not semver", "", "yesterday", "sha256:ff"],
            ],
        ];
        for fields in cases {
            let versions = Versions::new(fields.iter().copied()).unwrap();
            assert_eq!(versions.len(), fields.len());
            assert_eq!(versions.iter().collect::<Vec<_>>(), fields);
            let wanted: RVec<Version> = fields.iter().copied().map(version).collect();
            assert_eq!(versions.to_rvec(), wanted);
            assert_eq!(versions.to_rvec().capacity(), fields.len());
        }
    }

    #[test]
    fn one_chart_takes_two_allocations_of_its_length() {
        let fields = [["1.0.0", "1", "2024-01-01T00:00:00Z", "00"]; 3];
        let versions = Versions::new(fields.iter().copied()).unwrap();
        assert_eq!(versions.text.len(), 3 * 28);
        assert_eq!(versions.ends.len(), 12);
        assert_eq!(versions.get(2), fields[2]);
    }
}
