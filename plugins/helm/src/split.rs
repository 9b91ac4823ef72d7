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
//!
//! A local file is cut without holding its text ([`scan_file`], [`parse_file_in_pieces`]): a first
//! read, in small chunks, finds the pieces by the same rules (checking the nesting and the UTF-8 of
//! every line on the way, and keeping only the header, the trailer and a hash of each piece); then
//! each thread reads the next piece at its place in the file, checks it against its hash and parses
//! it. Only the pieces being parsed are held. A file that does not read the same way twice (it
//! changed in between) is read whole instead, like any other file this does not cut.

use std::{
    fs::File,
    hash::{DefaultHasher, Hasher},
    mem,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    thread,
};

use tributary_plugin_api::Summary;

use crate::{
    depth,
    extra::Extra,
    index::{parse_piece, parse_whole, Charts, MAX_WHOLE_YAML},
};

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

/// Where a line is in the layout this module cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A line of the header, before `entries:`.
    Header,
    /// The `entries:` line.
    Entries,
    /// A line of the block that starts a chart.
    Key,
    /// Any other line of the block.
    Block,
    /// A line of the trailer: the first top-level line after `entries:` and every line after it.
    Trailer,
}

/// Where the lines read so far are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Part {
    #[default]
    Header,
    Block,
    Trailer,
}

/// Tells the lines of a file apart, one line at a time, by the layout's rules: the same for a text
/// in memory ([`Layout::find`]) and for a file read in chunks ([`scan_file`]).
#[derive(Default)]
struct Scanner {
    part: Part,
    /// The indentation of the block's chart keys: that of its first line that is not blank.
    indent: Option<usize>,
}

impl Scanner {
    /// The kind of the next line (with its line break); `None` when the file is not in the layout.
    fn line(&mut self, line: &str) -> Option<Kind> {
        match self.part {
            // The header: single-line `key: value` pairs up to `entries:`, nothing that could
            // span lines.
            Part::Header => {
                if is_blank_or_comment(line) {
                    return Some(Kind::Header);
                }
                let line_content = content(line);
                if line_content.trim_end_matches(' ') == "entries:" {
                    self.part = Part::Block;
                    return Some(Kind::Entries);
                }
                if line.starts_with([' ', '\t', '-', '.', '%'])
                    || line_content.starts_with("entries")
                    || line_content.contains([
                        '"', '\'', '[', ']', '{', '}', '|', '>', '&', '*', '!', '?', '@', '`',
                    ])
                {
                    return None;
                }
                Some(Kind::Header)
            }
            // The block: every line up to the next top-level line. Its first key sets the
            // indentation.
            Part::Block => {
                if is_blank_or_comment(line) {
                    return Some(Kind::Block);
                }
                let spaces = line.len() - line.trim_start_matches(' ').len();
                if spaces == 0 {
                    self.part = Part::Trailer;
                    return Some(Kind::Trailer);
                }
                let indent = *self.indent.get_or_insert(spaces);
                let first = line.as_bytes()[spaces];
                if spaces == indent && !matches!(first, b'-' | b'\t') {
                    Some(Kind::Key)
                } else {
                    Some(Kind::Block)
                }
            }
            Part::Trailer => Some(Kind::Trailer),
        }
    }
}

impl<'a> Layout<'a> {
    fn find(text: &'a str) -> Option<Layout<'a>> {
        let mut scanner = Scanner::default();
        let mut block_start = None;
        let mut block_end = text.len();
        let mut keys = Vec::new();
        for (offset, line) in lines(text) {
            match scanner.line(line)? {
                Kind::Entries => block_start = Some(offset + line.len()),
                Kind::Key => keys.push(offset - block_start?),
                Kind::Trailer => {
                    block_end = offset;
                    break;
                }
                Kind::Header | Kind::Block => {}
            }
        }
        let block_start = block_start?;
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
pub(crate) fn parse_in_pieces(text: &str, threads: usize, piece_size: usize) -> Option<Charts> {
    let layout = Layout::find(text)?;
    let rest = format!("{}{}", layout.header, layout.trailer);
    let pieces = layout.pieces(piece_size);
    let sizes: Vec<(usize, usize)> = pieces.iter().map(|&(p, keys)| (p.len(), keys)).collect();
    parse_pieces(
        &rest,
        layout.keys.len(),
        &sizes,
        threads,
        piece_size,
        |i, document| {
            document.push_str(pieces[i].0);
            true
        },
    )
}

/// Parses the pieces of a file on up to `threads` threads: `rest` is the file without its block,
/// `pieces` the size and the number of chart keys of each piece (`keys` in all), and `read(i,
/// document)` appends the text of piece `i` to `document`, or says that it could not.
///
/// The arrays the charts are kept in are sized once, for every chart key of the file, and each
/// piece moves its charts into its own range of them as soon as it is parsed; the ranges of entries
/// that were not charts (no versions) are closed up at the end. So the charts are never held twice
/// but for the pieces being parsed, and no array grows by doubling.
fn parse_pieces(
    rest: &str,
    keys: usize,
    pieces: &[(usize, usize)],
    threads: usize,
    piece_size: usize,
    read: impl Fn(usize, &mut String) -> bool + Sync,
) -> Option<Charts> {
    if !parse_whole(rest).ok()?.summaries.is_empty() {
        return None;
    }

    // A piece over the size parsed whole is not parsed at all, as a whole index over it is not;
    // pieces much larger than `piece_size` (one chart with many versions) are parsed one at a time
    // after the others, not side by side.
    if pieces.iter().any(|&(size, _)| size > MAX_WHOLE_YAML) {
        return None;
    }
    let is_big = |size: usize| size > 2 * piece_size;

    let mut charts = Charts::with_capacity(keys);
    charts.summaries.resize_with(keys, Summary::default);
    charts.extras.resize_with(keys, Extra::default);
    let mut ranges = Vec::with_capacity(pieces.len());
    let (mut summaries, mut extras) = (&mut charts.summaries[..], &mut charts.extras[..]);
    for &(_, keys) in pieces {
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
        let (_, keys) = pieces[i];
        document.clear();
        document.push_str("entries:\n");
        if !read(i, document) {
            failed.store(true, Ordering::Relaxed);
            return;
        }
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
            let Some(&(size, _)) = pieces.get(i) else {
                break;
            };
            if !is_big(size) {
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
    for (i, &(size, _)) in pieces.iter().enumerate() {
        if is_big(size) && !failed.load(Ordering::Relaxed) {
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
        return Some(with_overflow(charts, pieces, overflow));
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

/// A file's layout as [`scan_file`] read it: where its pieces are, and the rest of the file.
pub(crate) struct FileLayout {
    /// The header and the trailer, one after the other: the file without its block.
    rest: String,
    pieces: Vec<FilePiece>,
    /// The chart keys of the file (charts or empty entries alike).
    pub keys: usize,
    /// The bytes read.
    pub size: u64,
}

/// One piece of a file's block.
#[derive(Debug, PartialEq, Eq)]
struct FilePiece {
    /// Where it starts in the file.
    start: u64,
    len: usize,
    /// The chart keys it holds.
    keys: usize,
    /// A hash of its bytes, to tell whether the file still holds them when the piece is read again.
    hash: u64,
}

/// The longest line [`scan_file`] reads: a line longer than this (a whole index in JSON on one
/// line, say) is not held to find out; the file is read whole instead.
const MAX_LINE: usize = 1 << 20;

/// What [`scan_file`] knows of the file so far.
struct Scan {
    scanner: Scanner,
    depth: depth::Lines,
    piece_size: u64,
    rest: String,
    /// Where the block starts, once the `entries:` line is read.
    block_start: Option<u64>,
    pieces: Vec<FilePiece>,
    /// The piece being read: its start, its keys and the hash of its lines so far.
    piece: Option<(u64, usize, DefaultHasher)>,
    keys: usize,
}

impl Scan {
    /// Reads one line starting at `offset` (with its line break: the text after the last line
    /// break comes without one, maybe empty).
    fn line(&mut self, offset: u64, line: &[u8]) -> Option<()> {
        let text = std::str::from_utf8(line).ok()?;
        self.depth
            .line(text.strip_suffix('\n').unwrap_or(text))
            .ok()?;
        if text.is_empty() {
            return Some(());
        }
        let kind = self.scanner.line(text)?;
        match kind {
            Kind::Header | Kind::Entries | Kind::Trailer => {
                self.rest.push_str(text);
                if self.rest.len() > MAX_WHOLE_YAML {
                    return None;
                }
                if kind == Kind::Entries {
                    let start = offset + line.len() as u64;
                    self.block_start = Some(start);
                    self.piece = Some((start, 0, DefaultHasher::new()));
                } else if kind == Kind::Trailer {
                    self.close(offset);
                }
            }
            Kind::Key | Kind::Block => {
                let (start, ..) = self.piece.as_ref()?;
                if kind == Kind::Key && self.keys > 0 && offset - start >= self.piece_size {
                    self.close(offset);
                    self.piece = Some((offset, 0, DefaultHasher::new()));
                }
                let (_, keys, hash) = self.piece.as_mut()?;
                if kind == Kind::Key {
                    *keys += 1;
                    self.keys += 1;
                }
                hash.write(line);
            }
        }
        Some(())
    }

    /// Ends the piece being read at `end`.
    fn close(&mut self, end: u64) {
        if let Some((start, keys, hash)) = self.piece.take() {
            self.pieces.push(FilePiece {
                start,
                len: usize::try_from(end - start).unwrap_or(usize::MAX),
                keys,
                hash: hash.finish(),
            });
        }
    }
}

/// Reads `file` in chunks of `chunk` bytes and finds its pieces of about `piece_size` bytes, by
/// the rules [`Layout::find`] and [`Layout::pieces`] apply to a text in memory, holding only the
/// line being read, the header and the trailer. `None` when the file is not in the layout, nests
/// deeper than [`depth::MAX_DEPTH`], is not UTF-8, has a line over [`MAX_LINE`] or is longer than
/// `max_size`: the caller then reads it whole, which refuses it or parses it as before.
pub(crate) fn scan_file(
    file: &File,
    piece_size: usize,
    chunk: usize,
    max_size: u64,
) -> Option<FileLayout> {
    let mut scan = Scan {
        scanner: Scanner::default(),
        depth: depth::Lines::new(depth::MAX_DEPTH),
        piece_size: piece_size as u64,
        rest: String::new(),
        block_start: None,
        pieces: Vec::new(),
        piece: None,
        keys: 0,
    };
    let mut buffer = vec![0; chunk.max(1)];
    // The start of a line that a chunk cut, and where it is in the file.
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut size = 0u64;
    loop {
        let read = match read_at(file, &mut buffer, size) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        size += read as u64;
        if size > max_size {
            return None;
        }
        let mut bytes = &buffer[..read];
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (head, tail) = bytes.split_at(end + 1);
            if line.is_empty() {
                scan.line(offset, head)?;
                offset += head.len() as u64;
            } else {
                line.extend_from_slice(head);
                scan.line(offset, &line)?;
                offset += line.len() as u64;
                line.clear();
            }
            bytes = tail;
        }
        line.extend_from_slice(bytes);
        if line.len() > MAX_LINE {
            return None;
        }
    }
    scan.line(offset, &line)?;
    scan.block_start?;
    scan.close(size);
    if scan.keys == 0 {
        return None;
    }
    Some(FileLayout {
        rest: scan.rest,
        pieces: scan.pieces,
        keys: scan.keys,
        size,
    })
}

#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buffer, offset)
}

/// Elsewhere files are read whole.
#[cfg(not(unix))]
fn read_at(_: &File, _: &mut [u8], _: u64) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Fills `buffer` from `offset` of `file`; `false` when the file ends before.
fn read_exact_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> bool {
    while !buffer.is_empty() {
        match read_at(file, buffer, offset) {
            Ok(0) => return false,
            Ok(read) => {
                buffer = &mut buffer[read..];
                offset += read as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Parses the pieces [`scan_file`] found in `file` as [`parse_in_pieces`] parses those of a text:
/// each thread reads its next piece from the file as it comes to it, so that only the pieces being
/// parsed are held. `None` as for [`parse_in_pieces`], and when a piece is no longer what the scan
/// read (the file changed since): the caller then reads the whole file.
pub(crate) fn parse_file_in_pieces(
    file: &File,
    layout: &FileLayout,
    threads: usize,
    piece_size: usize,
) -> Option<Charts> {
    let sizes: Vec<(usize, usize)> = layout.pieces.iter().map(|p| (p.len, p.keys)).collect();
    parse_pieces(
        &layout.rest,
        layout.keys,
        &sizes,
        threads,
        piece_size,
        |i, document| {
            let piece = &layout.pieces[i];
            let mut bytes = mem::take(document).into_bytes();
            let at = bytes.len();
            bytes.resize(at + piece.len, 0);
            if !read_exact_at(file, &mut bytes[at..], piece.start) {
                return false;
            }
            let mut hash = DefaultHasher::new();
            hash.write(&bytes[at..]);
            if hash.finish() != piece.hash {
                return false;
            }
            match String::from_utf8(bytes) {
                Ok(text) => {
                    *document = text;
                    true
                }
                Err(_) => false,
            }
        },
    )
}

/// The charts of every piece in order, from its range of `charts` or, for the pieces in
/// `overflow` (sorted by piece), from their own parse. The slow path of a layout this module
/// miscounted: the charts are copied once more.
fn with_overflow(
    charts: Charts,
    pieces: &[(usize, usize)],
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
        assert_eq!(charts.extras[1].home_url(), "h");
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

    /// A file of its own holding `text`, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(text: &[u8]) -> TempFile {
            use std::sync::atomic::AtomicU64;
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "tributary-helm-split-{}-{}.yaml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn open(&self) -> File {
            File::open(&self.0).unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Odd layouts: comments and blank lines between charts and before the first, keys quoted,
    /// named like `-b`, entries that are not charts, block scalars with lines like keys, a
    /// trailer, CRLF line breaks, no line break at the end, four-space indentation.
    const ODD: [&str; 9] = [
        "apiVersion: v1\n# comment\n\nentries:\n  # before\n\n  a:\n  - version: 1.0.0\n    description: |\n      x:\n  y:\n\n  # between\n  b:\n  - version: 1\n# c\n  c: []\ngenerated: \"2023\"\nserverInfo:\n  x: y\n",
        "entries:\n  a:\n  - version: 1.0.0\n  -b:\n  - version: 2.0.0\n  c: []\n  d:\n  - version: 3.0.0\n  e:\n  - version: 4.0.0\n",
        "entries:\n  a: []\n  b:\n  - version: 1.0.0\n  c: ~\n  d: []\n  e:\n  - version: 2.0.0\n    home: h\n  f: []\n",
        "apiVersion: v1\nentries:\n  a:\n  - version: 1.0.0\n    description: |\n      line one\n\n      line three\n  # between\n  b:\n  - version: 2.0.0\n    description: plain\n      continued\n    keywords: [x,\n      y]\n  \"c\":\n  - version: 3.0.0\n    description: \"quoted\n      on two lines\"\ngenerated: \"2023\"\n",
        "apiVersion: v1\r\nentries:\r\n  a:\r\n  - version: 1.0.0\r\n  b:\r\n  - version: 2.0.0\r\n    home: h\r\ngenerated: x\r\n",
        "entries:\n  a:\n  - version: 1.0.0\n  b:\n  - version: 2.0.0\n    home: \"h\u{e9}\"",
        "entries:\n    a:\n      - version: 1.0.0\n        home: h\n    b: []\n    c:\n      - version: 2.0.0\n\n\n",
        "entries:\n  a:\n  - version: 1.0.0\n    keywords: &k [x, y]\n  b:\n  - version: 1.0.0\n    keywords: *k\n",
        "entries:\n  a:\n  - version: 1.0.0\n    description: \"one\n  b: two\"\n",
    ];

    fn examples() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/charts");
        let mut texts: Vec<String> = ["bitnami-index.yaml", "community-index.yaml"]
            .iter()
            .map(|file| std::fs::read_to_string(dir.join(file)).unwrap())
            .collect();
        texts.push(texts[0].replace('\n', "\r\n"));
        texts.extend(ODD.iter().map(|t| t.to_string()));
        texts
    }

    #[test]
    fn a_file_is_cut_where_its_text_is() {
        for text in examples() {
            let file = TempFile::new(text.as_bytes());
            let layout = Layout::find(&text);
            let block_start = layout.as_ref().map(|l| l.header.len() as u64);
            for piece_size in [1, 40, 1000, 256 << 10, usize::MAX] {
                let expected = layout.as_ref().map(|layout| {
                    let mut at = 0;
                    let pieces: Vec<(u64, usize, usize)> = layout
                        .pieces(piece_size)
                        .iter()
                        .map(|&(piece, keys)| {
                            let start = block_start.unwrap() + at as u64;
                            at += piece.len();
                            (start, piece.len(), keys)
                        })
                        .collect();
                    (format!("{}{}", layout.header, layout.trailer), pieces)
                });
                for chunk in [1, 2, 7, 100, 64 << 10] {
                    let scanned =
                        scan_file(&file.open(), piece_size, chunk, u64::MAX).map(|scanned| {
                            assert_eq!(scanned.size, text.len() as u64);
                            assert_eq!(Some(scanned.keys), chart_keys(&text));
                            let pieces: Vec<(u64, usize, usize)> = scanned
                                .pieces
                                .iter()
                                .map(|p| (p.start, p.len, p.keys))
                                .collect();
                            (scanned.rest, pieces)
                        });
                    assert_eq!(scanned, expected, "{piece_size} {chunk}: {text}");
                }
            }
        }
    }

    #[test]
    fn a_file_parses_as_its_text_in_pieces() {
        for (i, text) in examples().into_iter().enumerate() {
            let file = TempFile::new(text.as_bytes());
            let whole = parse_whole(&text);
            for piece_size in [1, 40, 1000, 64 << 10] {
                let from_text = parse_in_pieces(&text, 3, piece_size);
                for chunk in [3, 64 << 10] {
                    let file = file.open();
                    let from_file = scan_file(&file, piece_size, chunk, u64::MAX)
                        .and_then(|layout| parse_file_in_pieces(&file, &layout, 3, piece_size));
                    assert_eq!(from_file, from_text, "{piece_size} {chunk}: {text}");
                    match from_file {
                        Some(charts) => assert_eq!(&charts, whole.as_ref().unwrap(), "{text}"),
                        // The examples, and the odd layouts but the last two (an alias and a
                        // quoted scalar in another piece), are always cut.
                        None => assert!(i >= 10 && piece_size < text.len(), "{text}"),
                    }
                }
            }
        }
    }

    #[test]
    fn files_that_cannot_be_read_in_pieces_are_left_to_the_whole_read() {
        let ok = "entries:\n  a:\n  - version: 1.0.0\n";
        let scan = |text: &[u8]| scan_file(&TempFile::new(text).open(), 1, 5, u64::MAX).is_some();
        assert!(scan(ok.as_bytes()));
        // Not UTF-8, in the block or in the trailer.
        assert!(!scan(b"entries:\n  a:\n  - version: \xff\n"));
        assert!(!scan(b"entries:\n  a:\n  - version: 1.0.0\nx: \xc3\n"));
        // Nested too deep.
        let deep = format!("{ok}    keywords: {}x{}\n", "[".repeat(70), "]".repeat(70));
        assert!(crate::depth::check(&deep, crate::depth::MAX_DEPTH).is_err());
        assert!(!scan(deep.as_bytes()));
        // A line over the longest read, and a file over the size allowed.
        let long = format!("{ok}    description: {}\n", "x".repeat(MAX_LINE));
        assert!(!scan(long.as_bytes()));
        let file = TempFile::new(ok.as_bytes());
        assert!(scan_file(&file.open(), 1, 5, ok.len() as u64).is_some());
        assert!(scan_file(&file.open(), 1, 5, ok.len() as u64 - 1).is_none());
        // Layouts not cut, as for a text in memory.
        for text in [
            "entries: {a: [{version: 1.0.0}]}\n",
            "{\"entries\": {}}",
            "entries:\ngenerated: x\n",
            "generated: \"x\"\nentries:\n  a: []\n",
            "apiVersion: v1\n",
            "",
        ] {
            assert!(!scan(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn a_file_that_changed_since_its_scan_is_not_parsed_in_pieces() {
        let text = "entries:\n  a:\n  - version: 1.0.0\n  b:\n  - version: 2.0.0\n  c:\n  - version: 3.0.0\n";
        let file = TempFile::new(text.as_bytes());
        let layout = scan_file(&file.open(), 1, 64, u64::MAX).unwrap();
        assert_eq!(layout.pieces.len(), 3);
        assert!(parse_file_in_pieces(&file.open(), &layout, 2, 1).is_some());
        // The same length, other bytes.
        std::fs::write(&file.0, text.replace("2.0.0", "2.0.1")).unwrap();
        assert!(parse_file_in_pieces(&file.open(), &layout, 2, 1).is_none());
        // Shorter.
        std::fs::write(&file.0, &text[..text.len() - 4]).unwrap();
        assert!(parse_file_in_pieces(&file.open(), &layout, 2, 1).is_none());
        // Back as it was.
        std::fs::write(&file.0, text).unwrap();
        assert!(parse_file_in_pieces(&file.open(), &layout, 2, 1).is_some());
    }
}
