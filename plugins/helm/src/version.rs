//! Chart versions: Helm's lenient semantic versions and the order of a chart's releases.

use std::cmp::Ordering;

use semver::{BuildMetadata, Prerelease};

/// Parses a chart version the way Helm does: semantic versioning with an optional leading `v` and
/// an optional minor and patch (`"v1.2"` is `1.2.0`, `"3"` is `3.0.0`). `None` when the text is not
/// a version at all (`"latest"`, `"1.2.3.4"`, `""`).
pub(crate) fn parse_lenient(text: &str) -> Option<semver::Version> {
    let text = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    let core_end = text.find(['-', '+']).unwrap_or(text.len());
    let (core, suffix) = text.split_at(core_end);

    let mut numbers = [0u64; 3];
    for (i, part) in core.split('.').enumerate() {
        if i == numbers.len() || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        numbers[i] = part.parse().ok()?;
    }

    let (pre, build) = match suffix.split_once('+') {
        Some((pre, build)) => (pre, Some(build)),
        None => (suffix, None),
    };
    let pre = match pre.strip_prefix('-') {
        Some("") => return None,
        Some(pre) => Prerelease::new(pre).ok()?,
        None => Prerelease::EMPTY,
    };
    let build = match build {
        Some("") => return None,
        Some(build) => BuildMetadata::new(build).ok()?,
        None => BuildMetadata::EMPTY,
    };
    Some(semver::Version {
        major: numbers[0],
        minor: numbers[1],
        patch: numbers[2],
        pre,
        build,
    })
}

/// The order of a chart's versions, newest first, and which of them is the latest.
pub(crate) struct Ranking {
    /// Indexes into the given versions: valid versions by descending precedence, then the versions
    /// that do not parse, in their original order.
    pub order: Vec<usize>,
    /// The index (into the given versions) of the latest version: the highest stable release, else
    /// the highest pre-release, else the first version given.
    pub latest: usize,
}

/// Ranks versions given as text. `versions` must not be empty.
pub(crate) fn rank<'a>(versions: impl ExactSizeIterator<Item = &'a str>) -> Ranking {
    let mut parsed: Vec<(Option<semver::Version>, usize)> = versions
        .enumerate()
        .map(|(i, text)| (parse_lenient(text), i))
        .collect();
    // Stable: equal versions (and all invalid ones) keep their order in the file.
    parsed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) => b.cmp(a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    let latest = parsed
        .iter()
        .find(|(v, _)| v.as_ref().is_some_and(|v| v.pre.is_empty()))
        .or_else(|| parsed.first())
        .map_or(0, |(_, i)| *i);
    Ranking {
        order: parsed.into_iter().map(|(_, i)| i).collect(),
        latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Option<String> {
        parse_lenient(text).map(|v| v.to_string())
    }

    #[test]
    fn lenient_parsing() {
        assert_eq!(v("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("v1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("v1.2").as_deref(), Some("1.2.0"));
        assert_eq!(v("1.2").as_deref(), Some("1.2.0"));
        assert_eq!(v("3").as_deref(), Some("3.0.0"));
        assert_eq!(v("01.02.03").as_deref(), Some("1.2.3"));
        assert_eq!(v("1.2-rc.1").as_deref(), Some("1.2.0-rc.1"));
        assert_eq!(
            v("1.2.3-rc-1+build.5").as_deref(),
            Some("1.2.3-rc-1+build.5")
        );
        assert_eq!(v("1.2.3+20240101").as_deref(), Some("1.2.3+20240101"));
        for bad in [
            "", "latest", "v", "1.2.3.4", "1..2", "1.2.3-", "1.2.3+", "1.2.x", " 1.2.3", "1.2.3 ",
            "-1.2.3",
        ] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
    }

    fn ranked(versions: &[&str]) -> (Vec<String>, String) {
        let ranking = rank(versions.iter().copied());
        (
            ranking
                .order
                .iter()
                .map(|&i| versions[i].to_owned())
                .collect(),
            versions[ranking.latest].to_owned(),
        )
    }

    #[test]
    fn stable_release_beats_newer_pre_release() {
        let (order, latest) = ranked(&["1.0.0", "2.0.0-rc.1", "1.5.0", "1.5.0-beta.2"]);
        assert_eq!(order, ["2.0.0-rc.1", "1.5.0", "1.5.0-beta.2", "1.0.0"]);
        assert_eq!(latest, "1.5.0");
    }

    #[test]
    fn only_pre_releases_gives_the_highest_pre_release() {
        let (order, latest) = ranked(&["0.1.0-alpha.1", "0.1.0-beta", "0.1.0-alpha.10"]);
        assert_eq!(order, ["0.1.0-beta", "0.1.0-alpha.10", "0.1.0-alpha.1"]);
        assert_eq!(latest, "0.1.0-beta");
    }

    #[test]
    fn v_prefix_and_short_versions_compare_numerically() {
        let (order, latest) = ranked(&["v1.9", "v1.10.0", "1.2", "v2-alpha"]);
        assert_eq!(order, ["v2-alpha", "v1.10.0", "v1.9", "1.2"]);
        assert_eq!(latest, "v1.10.0");
    }

    #[test]
    fn non_semver_versions_come_last_in_file_order() {
        let (order, latest) = ranked(&["nightly", "0.9.0", "latest", "1.0.0"]);
        assert_eq!(order, ["1.0.0", "0.9.0", "nightly", "latest"]);
        assert_eq!(latest, "1.0.0");

        let (order, latest) = ranked(&["nightly", "latest"]);
        assert_eq!(order, ["nightly", "latest"]);
        assert_eq!(latest, "nightly");
    }

    #[test]
    fn equal_versions_keep_file_order() {
        let (order, latest) = ranked(&["v1.0.0", "1.0", "1.0.0"]);
        assert_eq!(order, ["v1.0.0", "1.0", "1.0.0"]);
        assert_eq!(latest, "v1.0.0");
    }
}
