//! A chart's versions, kept compact until a detail asks for them.
//!
//! A detail lists every version of its chart with four strings: the version, its app version,
//! when it was created and its digest. Kept as the interface's [`Version`]s, each version costs
//! 128 bytes and four allocations of its own, more than its text for most charts. A chart's
//! record (`extra::Extra`) keeps them first among its strings, one after the other, and
//! where each ends; [`Versions`] reads them there, and [`Versions::to_rvec`] makes the `Version`s
//! when a detail is asked for, equal to the ones the strings were given as.

use tributary_plugin_api::{RString, RVec, Version};

/// The strings of one version: version, app version, created, digest.
pub(crate) type Fields<'a> = [&'a str; 4];

/// The versions of one chart, in the order a detail lists them: a view of its record's strings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Versions<'a> {
    /// The record's strings, the versions' first.
    text: &'a str,
    /// Where each of the versions' strings ends in `text`: four per version.
    ends: &'a [u32],
}

impl<'a> Versions<'a> {
    /// The versions whose strings end at `ends` in `text`, the first at 0, four a version.
    pub(crate) fn new(text: &'a str, ends: &'a [u32]) -> Versions<'a> {
        debug_assert_eq!(ends.len() % 4, 0);
        Versions { text, ends }
    }

    pub(crate) fn len(self) -> usize {
        self.ends.len() / 4
    }

    /// The strings of version `i`.
    pub(crate) fn get(self, i: usize) -> Fields<'a> {
        let start = |j: usize| match j {
            0 => 0,
            j => self.ends[j - 1] as usize,
        };
        let text = self.text;
        std::array::from_fn(|k| {
            let j = 4 * i + k;
            &text[start(j)..self.ends[j] as usize]
        })
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Fields<'a>> + 'a {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// The versions as the interface's values, for a detail.
    pub(crate) fn to_rvec(self) -> RVec<Version> {
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
    use crate::extra::{Extra, Parts};

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
            // Followed by the record's other strings, which are not versions.
            let extra = Extra::new(&Parts {
                versions: fields.clone(),
                home_url: "https://home",
                keywords: vec!["k"],
                chart_url: "c.tgz",
                ..Parts::default()
            })
            .unwrap();
            let versions = extra.versions();
            assert_eq!(versions.len(), fields.len());
            assert_eq!(versions.iter().collect::<Vec<_>>(), fields);
            let wanted: RVec<Version> = fields.iter().copied().map(version).collect();
            assert_eq!(versions.to_rvec(), wanted);
            assert_eq!(versions.to_rvec().capacity(), fields.len());
        }
    }
}
