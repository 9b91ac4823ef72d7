//! Parsing a large `index.yaml` in pieces, on several threads.
//!
//! Almost all the time of reading a large index goes into the YAML parser, which runs on one
//! thread. An index in the block layout `helm repo index` writes can be cut, between two charts,
//! into pieces that are documents of their own:
//! ```yaml
//! apiVersion: v1          # the header: single-line top-level keys only
//! entries:
//!   apache:               # a chart key: exactly the indentation of the first key
//!   - version: 10.2.4     # anything more indented, or a sequence item, belongs to the chart
//!   nginx:                # the next piece may start here
//!   - ...
//! generated: "..."        # the trailer: from the first top-level line after `entries:`
//! ```
//! Each piece is parsed as `entries:` followed by its lines; the header and trailer are parsed
//! together, to check the rest of the file. A cut inside a multi-line construct (a quoted scalar, a
//! flow collection) leaves that construct open at the end of its piece, which then fails to parse;
//! an anchor used in another piece fails the same way. On any failure, or any layout this module
//! does not recognise, the caller parses the whole file instead, so the result and the errors (with
//! their line numbers) are always those of parsing the whole file.

use std::{
    mem,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    thread,
};

use tributary_plugin_api::Summary;

use crate::index::{parse_piece, parse_whole, Charts, Extra, MAX_WHOLE_YAML};

/// Where a file's `entries` block is, and where its charts start.
struct Layout<'a> {
    /// Everything before the block: the header, ending with the `entries:` line.
    header: &'a str,
    /// The lines of the block.
    block: &'a str,
    /// Everything after the block.
    trailer: &'a str,
    /// The offsets in `block` of the lines that start a chart.
    keys: Vec<usize>,
}

/// The lines of `text` with their byte offsets, each line with its line break.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').scan(0, |offset, line| {
        let start = *offset;
        *offset += line.len();
        Some((start, line))
    })
}

/// A line without its line break.
fn content(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// Whether a line holds nothing but spaces or a comment.
fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = content(line).trim_start_matches(' ');
    trimmed.is_empty() || trimmed.starts_with('#')
}

impl<'a> Layout<'a> {
    fn find(text: &'a str) -> Option<Layout<'a>> {
        let mut lines = lines(text);

        // The header: single-line `key: value` pairs up to `entries:`, nothing that could span lines.
        let block_start = loop {
            let (offset, line) = lines.next()?;
            if is_blank_or_comment(line) {
                continue;
            }
            let line_content = content(line);
            if line_content.trim_end_matches(' ') == "entries:" {
                break offset + line.len();
            }
            if line.starts_with([' ', '\t', '-', '.', '%'])
                || line_content.starts_with("entries")
                || line_content.contains([
                    '"', '\'', '[', ']', '{', '}', '|', '>', '&', '*', '!', '?', '@', '`',
                ])
            {
                return None;
            }
        };

        // The block: every line up to the next top-level line. Its first key sets the indentation.
        let mut indent = None;
        let mut keys = Vec::new();
        let mut block_end = text.len();
        for (offset, line) in lines {
            if is_blank_or_comment(line) {
                continue;
            }
            let spaces = line.len() - line.trim_start_matches(' ').len();
            if spaces == 0 {
                block_end = offset;
                break;
            }
            let indent = *indent.get_or_insert(spaces);
            let first = line.as_bytes()[spaces];
            if spaces == indent && !matches!(first, b'-' | b'\t') {
                keys.push(offset - block_start);
            }
        }
        if keys.is_empty() {
            return None;
        }
        Some(Layout {
            header: &text[..block_start],
            block: &text[block_start..block_end],
            trailer: &text[block_end..],
            keys,
        })
    }

    /// The pieces of the block, cut at chart keys, each about `piece_size` bytes or more, with the
    /// number of chart keys each holds.
    fn pieces(&self, piece_size: usize) -> Vec<(&'a str, usize)> {
        let mut pieces = Vec::new();
        let (mut start, mut first) = (0, 0);
        for (i, &key) in self.keys.iter().enumerate().skip(1) {
            if key - start >= piece_size {
                pieces.push((&self.block[start..key], i - first));
                (start, first) = (key, i);
            }
        }
        pieces.push((&self.block[start..], self.keys.len() - first));
        pieces
    }
}

/// How many chart keys `text` has when it is in the layout this module cuts (charts or empty
/// entries alike), found without parsing it.
pub(crate) fn chart_keys(text: &str) -> Option<usize> {
    Layout::find(text).map(|layout| layout.keys.len())
}

/// Parses `text` in pieces of about `piece_size` bytes on up to `threads` threads. `None` when the
/// file's layout is not one this module cuts, or when any piece fails to parse: the caller then
/// parses the whole file.
///
/// The arrays the charts are kept in are sized once, for every chart key of the file, and each
/// piece moves its charts into its own range of them as soon as it is parsed; the ranges of entries
/// that were not charts (no versions) are closed up at the end. So the charts are never held twice
/// but for the pieces being parsed, and no array grows by doubling.
pub(crate) fn parse_in_pieces(text: &str, threads: usize, piece_size: usize) -> Option<Charts> {
    let layout = Layout::find(text)?;

    let rest = format!("{}{}", layout.header, layout.trailer);
    if !parse_whole(&rest).ok()?.summaries.is_empty() {
        return None;
    }

    let pieces = layout.pieces(piece_size);
    // A piece over the size parsed whole is not parsed at all, as a whole index over it is not;
    // pieces much larger than `piece_size` (one chart with many versions) are parsed one at a time
    // after the others, not side by side.
    if pieces.iter().any(|(p, _)| p.len() > MAX_WHOLE_YAML) {
        return None;
    }
    let is_big = |piece: &str| piece.len() > 2 * piece_size;

    let mut charts = Charts::with_capacity(layout.keys.len());
    charts
        .summaries
        .resize_with(layout.keys.len(), Summary::default);
    charts.extras.resize_with(layout.keys.len(), Extra::default);
    let mut ranges = Vec::with_capacity(pieces.len());
    let (mut summaries, mut extras) = (&mut charts.summaries[..], &mut charts.extras[..]);
    for &(_, keys) in &pieces {
        let (these, rest) = mem::take(&mut summaries).split_at_mut(keys);
        summaries = rest;
        let (these_extras, rest) = mem::take(&mut extras).split_at_mut(keys);
        extras = rest;
        ranges.push(Mutex::new((these, these_extras)));
    }

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // Pieces with more charts than this module counted keys (a key such as `-name:`, which it takes
    // for a sequence item): kept apart, put in their place at the end.
    let overflow: Mutex<Vec<(usize, Charts)>> = Mutex::new(Vec::new());
    let parse = |i: usize, document: &mut String| {
        let (piece, keys) = pieces[i];
        document.clear();
        document.push_str("entries:\n");
        document.push_str(piece);
        let mut range = ranges[i].lock().unwrap_or_else(|e| e.into_inner());
        let (summaries, extras) = &mut *range;
        match parse_piece(document, keys) {
            Ok(parsed) if parsed.len() <= keys => {
                for (slot, summary) in summaries.iter_mut().zip(parsed.summaries) {
                    *slot = summary;
                }
                for (slot, extra) in extras.iter_mut().zip(parsed.extras) {
                    *slot = extra;
                }
            }
            Ok(parsed) => overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((i, parsed)),
            Err(_) => failed.store(true, Ordering::Relaxed),
        }
    };
    let work = || {
        let mut document = String::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(piece, _)) = pieces.get(i) else {
                break;
            };
            if !is_big(piece) {
                parse(i, &mut document);
            }
        }
    };
    thread::scope(|scope| {
        for _ in 1..threads.min(pieces.len()) {
            scope.spawn(work);
        }
        work();
    });
    let mut document = String::new();
    for (i, &(piece, _)) in pieces.iter().enumerate() {
        if is_big(piece) && !failed.load(Ordering::Relaxed) {
            parse(i, &mut document);
        }
    }
    drop(document);
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    drop(ranges);

    let mut overflow = overflow.into_inner().unwrap_or_else(|e| e.into_inner());
    if !overflow.is_empty() {
        overflow.sort_unstable_by_key(|&(i, _)| i);
        return Some(with_overflow(charts, &pieces, overflow));
    }
    // A built chart has a name; the slots left empty are the entries that were not charts.
    if charts.summaries.iter().any(|s| s.name.is_empty()) {
        let keep: Vec<bool> = charts
            .summaries
            .iter()
            .map(|s| !s.name.is_empty())
            .collect();
        charts.retain(&keep);
        charts.shrink_to_fit();
    }
    Some(charts)
}

/// The charts of every piece in order, from its range of `charts` or, for the pieces in
/// `overflow` (sorted by piece), from their own parse. The slow path of a layout this module
/// miscounted: the charts are copied once more.
fn with_overflow(
    charts: Charts,
    pieces: &[(&str, usize)],
    overflow: Vec<(usize, Charts)>,
) -> Charts {
    let built = charts
        .summaries
        .iter()
        .filter(|s| !s.name.is_empty())
        .count();
    let extra: usize = overflow.iter().map(|(_, parsed)| parsed.len()).sum();
    let mut all = Charts::with_capacity(built + extra);
    let mut slots = charts.summaries.into_iter().zip(charts.extras);
    let mut overflow = overflow.into_iter().peekable();
    for (i, &(_, keys)) in pieces.iter().enumerate() {
        let range = slots.by_ref().take(keys);
        match overflow.next_if(|&(j, _)| j == i) {
            Some((_, parsed)) => {
                range.for_each(drop);
                all.summaries.extend(parsed.summaries);
                all.extras.extend(parsed.extras);
            }
            None => {
                for (summary, extra) in range.filter(|(s, _)| !s.name.is_empty()) {
                    all.summaries.push(summary);
                    all.extras.push(extra);
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(text: &str) -> Option<Vec<&str>> {
        let layout = Layout::find(text)?;
        Some(
            layout
                .keys
                .iter()
                .map(|&k| content(layout.block[k..].split_inclusive('\n').next().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn finds_the_chart_keys_of_the_helm_layout() {
        let text = "apiVersion: v1\n# comment\nentries:\n  a:\n  - version: 1.0.0\n    description: |\n      x:\n  b:\n  - version: 1\n# c\n  c: []\ngenerated: \"2023\"\nserverInfo:\n  x: y\n";
        assert_eq!(keys_of(text).unwrap(), ["  a:", "  b:", "  c: []"]);
        let layout = Layout::find(text).unwrap();
        assert_eq!(layout.header, "apiVersion: v1\n# comment\nentries:\n");
        assert_eq!(layout.trailer, "generated: \"2023\"\nserverInfo:\n  x: y\n");

        let crlf = text.replace('\n', "\r\n");
        assert_eq!(keys_of(&crlf).unwrap(), ["  a:", "  b:", "  c: []"]);

        let four = "entries:\n    a:\n      - version: 1.0.0\n    b: []\n";
        assert_eq!(keys_of(four).unwrap(), ["    a:", "    b: []"]);
    }

    #[test]
    fn other_layouts_are_not_cut() {
        for text in [
            "entries: {a: [{version: 1.0.0}]}\n",
            "entries: null\n",
            "entries:\ngenerated: x\n",
            "generated: \"x\"\nentries:\n  a: []\n",
            "serverInfo:\n  x: y\nentries:\n  a: []\n",
            "---\nentries:\n  a: []\n",
            "apiVersion: v1\n",
            "",
        ] {
            assert!(Layout::find(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn pieces_cover_the_block() {
        let text = "entries:\n  a:\n  - version: 1.0.0\n  b:\n  - version: 1.0.0\n  c:\n  - version: 1.0.0\n";
        let layout = Layout::find(text).unwrap();
        assert_eq!(layout.pieces(usize::MAX), [(layout.block, 3)]);
        let pieces = layout.pieces(1);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|&(_, keys)| keys == 1));
        let texts: Vec<&str> = pieces.iter().map(|&(p, _)| p).collect();
        assert_eq!(texts.concat(), layout.block);
        assert!(texts
            .iter()
            .all(|p| p.starts_with("  ") && p.ends_with("1.0.0\n")));
        let two = layout.pieces("  a:\n  - version: 1.0.0\n  b:\n".len());
        assert_eq!(
            two.iter().map(|&(_, keys)| keys).collect::<Vec<_>>(),
            [2, 1]
        );
    }

    /// Parses in pieces of single charts and checks the result against parsing the whole text.
    fn pieces_agree(text: &str) -> bool {
        let whole = parse_whole(text);
        match parse_in_pieces(text, 3, 1) {
            Some(charts) => {
                assert_eq!(charts, whole.unwrap(), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_examples_parse_the_same_in_pieces() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/charts");
        for file in ["bitnami-index.yaml", "community-index.yaml"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(pieces_agree(&text), "{file} was not cut");
            let crlf = text.replace('\n', "\r\n");
            assert!(pieces_agree(&crlf), "{file} with CRLF was not cut");
        }
    }

    #[test]
    fn constructs_that_span_a_cut_fall_back_to_the_whole_file() {
        // An anchor in one chart, its alias in another.
        let alias = "entries:\n  a:\n  - version: 1.0.0\n    keywords: &k [x, y]\n  b:\n  - version: 1.0.0\n    keywords: *k\n";
        assert!(parse_whole(alias).is_ok());
        assert!(!pieces_agree(alias));
        // A quoted scalar whose next line looks like a chart key.
        let quoted = "entries:\n  a:\n  - version: 1.0.0\n    description: \"one\n  b: two\"\n";
        assert!(!pieces_agree(quoted));
        // A flow sequence likewise.
        let flow = "entries:\n  a:\n  - version: 1.0.0\n    keywords: [x,\n  b: y]\n";
        assert!(!pieces_agree(flow));
        // A broken trailer, and a second `entries`.
        assert!(!pieces_agree("entries:\n  a: []\n  b: []\ngenerated: [\n"));
        assert!(!pieces_agree("entries:\n  a: []\nentries:\n  b: []\n"));
        // An invalid chart.
        assert!(!pieces_agree("entries:\n  a: []\n  b: 3\n"));
    }

    #[test]
    fn cuts_agree_with_the_whole_file() {
        let text = "apiVersion: v1\nentries:\n  a:\n  - version: 1.0.0\n    description: |\n      line one\n\n      line three\n  # between\n  b:\n  - version: 2.0.0\n    description: plain\n      continued\n    keywords: [x,\n      y]\n  \"c\":\n  - version: 3.0.0\n    description: \"quoted\n      on two lines\"\ngenerated: \"2023\"\n";
        assert!(pieces_agree(text));
        assert_eq!(parse_whole(text).unwrap().len(), 3);
    }

    #[test]
    fn entries_that_are_not_charts_leave_no_gap() {
        let text = "entries:\n  a: []\n  b:\n  - version: 1.0.0\n  c: ~\n  d: []\n  e:\n  - version: 2.0.0\n    home: h\n  f: []\n";
        assert!(pieces_agree(text));
        let charts = parse_in_pieces(text, 2, 1).unwrap();
        let names: Vec<&str> = charts.summaries.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "e"]);
        assert_eq!(charts.extras[1].home_url, "h");
        assert_eq!(charts.summaries.capacity(), 2);
        assert_eq!(charts.extras.capacity(), 2);
        // Every key a chart: the arrays are exactly as long.
        let full = "entries:\n  a:\n  - version: 1.0.0\n  b:\n  - version: 1.0.0\n";
        let charts = parse_in_pieces(full, 2, 1).unwrap();
        assert_eq!((charts.len(), charts.summaries.capacity()), (2, 2));
    }

    #[test]
    fn keys_taken_for_sequence_items_keep_their_charts() {
        // `-b` is a chart name, but its line starts with `-`: the first piece holds two charts
        // where one key was counted.
        let text = "entries:\n  a:\n  - version: 1.0.0\n  -b:\n  - version: 2.0.0\n  c: []\n  d:\n  - version: 3.0.0\n  e:\n  - version: 4.0.0\n";
        assert_eq!(chart_keys(text), Some(4));
        assert!(pieces_agree(text));
        let charts = parse_in_pieces(text, 2, 1).unwrap();
        let names: Vec<&str> = charts.summaries.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "-b", "d", "e"]);
        assert_eq!(charts.summaries.capacity(), 4);
    }

    #[test]
    fn a_chart_larger_than_a_whole_parse_is_not_parsed() {
        let mut text = String::from("entries:\n  small:\n  - version: 1.0.0\n  big:\n");
        while text.len() <= MAX_WHOLE_YAML + 100 {
            text.push_str("  - version: 1.0.0\n");
        }
        text.push_str("  after:\n  - version: 1.0.0\n");
        assert!(parse_in_pieces(&text, 2, crate::index::PIECE_SIZE).is_none());
    }

    #[test]
    fn a_large_index_is_parsed_in_pieces() {
        let mut text = String::from("apiVersion: v1\nentries:\n");
        let mut chart = 0;
        while text.len() < crate::index::SPLIT_SIZE + 1000 {
            text.push_str(&format!("  chart-{chart}:\n"));
            for minor in 0..5 {
                text.push_str(&format!(
                    "  - version: 1.{minor}.0\n    appVersion: \"{chart}\"\n    description: Chart {chart}, a chart.\n    keywords: [k{minor}]\n    urls: [https://example.com/chart-{chart}-1.{minor}.0.tgz]\n"
                ));
            }
            chart += 1;
        }
        text.push_str("generated: \"2023-11-21T20:30:00Z\"\n");
        let whole = parse_whole(&text).unwrap();
        assert_eq!(whole.len(), chart);
        assert_eq!(
            parse_in_pieces(&text, 2, crate::index::PIECE_SIZE),
            Some(whole)
        );
    }
}
