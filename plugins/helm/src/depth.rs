//! A bound on how deeply a YAML index nests, checked in one pass over its text before the YAML
//! parser sees it: an index nested too deep is refused naming the line, before any parsing, the
//! same whether it would be parsed whole or in pieces.
//!
//! This scan counts, line by line, the block collections that enclose a line (its indentation
//! against the indentations above it, plus each `- ` or `? ` that opens a line) and the flow
//! collections (`[`, `{`) open at each point, skipping quoted scalars, block scalars (`|`, `>`) and
//! comments. It may count a little more than the parser nests (a plain scalar continued on a more
//! indented line counts one level), and one less for a sequence written at the indentation of its
//! key (`key:` with `- ` below it, as Helm writes each chart's versions). The parser stops at a
//! bound of its own, a little past this one, while it reads.

/// The deepest nesting read: an index as `helm repo index` writes it nests about eight levels.
pub(crate) const MAX_DEPTH: usize = 64;

/// `Err` with the reason when `text` nests deeper than `limit` levels anywhere.
pub(crate) fn check(text: &str, limit: usize) -> Result<(), String> {
    let mut lines = Lines::new(limit);
    for line in text.split('\n') {
        lines.line(line)?;
    }
    Ok(())
}

/// The scan of [`check`] fed one line at a time, for a text read in pieces: the lines of
/// `text.split('\n')`, in order, give the result of `check(text)`.
pub(crate) struct Lines(Scan);

impl Lines {
    pub(crate) fn new(limit: usize) -> Lines {
        Lines(Scan {
            limit,
            stack: Vec::new(),
            flow: 0,
            quote: None,
            block_scalar: None,
            line: 0,
        })
    }

    /// The next line, without its `\n` (a `\r` before it is ignored).
    pub(crate) fn line(&mut self, line: &str) -> Result<(), String> {
        self.0.line += 1;
        self.0
            .line(line.strip_suffix('\r').unwrap_or(line).as_bytes())
    }
}

struct Scan {
    limit: usize,
    /// The columns of the block collections enclosing the current line.
    stack: Vec<usize>,
    /// Flow collections open.
    flow: usize,
    /// The quote of a quoted scalar still open at the end of the previous line.
    quote: Option<u8>,
    /// Inside a block scalar: the indentation from which a line is its content.
    block_scalar: Option<usize>,
    line: usize,
}

fn is_blank(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t'))
}

impl Scan {
    fn check(&self) -> Result<(), String> {
        let depth = self.stack.len() + self.flow;
        if depth > self.limit {
            return Err(format!(
                "nests deeper than the depth limit of {} levels (line {}); refused before parsing",
                self.limit, self.line
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        let indent = line.iter().take_while(|&&c| c == b' ').count();
        let blank = line[indent..].iter().all(|c| matches!(c, b' ' | b'\t'));
        if let Some(content) = self.block_scalar {
            if blank || indent >= content {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut at = 0;
        if let Some(quote) = self.quote {
            match close_quote(line, 0, quote) {
                Some(end) => {
                    self.quote = None;
                    at = end;
                }
                None => return Ok(()),
            }
            if self.flow == 0 {
                return self.plain(line, at, 0);
            }
        } else if self.flow == 0 {
            if blank || line[indent] == b'#' {
                return Ok(());
            }
            if indent == 0 {
                if line[0] == b'%' {
                    return Ok(());
                }
                if (line.starts_with(b"---") || line.starts_with(b"...")) && is_blank(line.get(3)) {
                    self.stack.clear();
                    return self.node(line, 3, 0);
                }
            }
            while self.stack.last().is_some_and(|&col| col >= indent) {
                self.stack.pop();
            }
            self.stack.push(indent);
            self.check()?;
            // `- `, `? ` and `: ` at the start of a line each open a collection nested in the last.
            at = indent;
            let mut owner = indent;
            while matches!(line.get(at), Some(b'-' | b'?' | b':')) && is_blank(line.get(at + 1)) {
                owner = at;
                at += 1;
                while matches!(line.get(at), Some(b' ' | b'\t')) {
                    at += 1;
                }
                if at >= line.len() || line[at] == b'#' {
                    return Ok(());
                }
                self.stack.push(at);
                self.check()?;
            }
            return self.node(line, at, owner);
        }
        let end = self.flow_scan(line, at)?;
        self.plain(line, end, 0)
    }

    /// A node starting at `at` (after spaces) in block context, in the collection at column
    /// `owner`.
    fn node(&mut self, line: &[u8], mut at: usize, owner: usize) -> Result<(), String> {
        loop {
            while matches!(line.get(at), Some(b' ' | b'\t')) {
                at += 1;
            }
            // Properties (`&anchor`, `!tag`) come before the node itself.
            if matches!(line.get(at), Some(b'&' | b'!')) {
                while !is_blank(line.get(at)) {
                    at += 1;
                }
                continue;
            }
            break;
        }
        match line.get(at) {
            None | Some(b'#') => Ok(()),
            Some(b'[' | b'{') => {
                let end = self.flow_scan(line, at)?;
                self.plain(line, end, at)
            }
            Some(&quote @ (b'"' | b'\'')) => match close_quote(line, at + 1, quote) {
                Some(end) => self.plain(line, end, at),
                None => {
                    self.quote = Some(quote);
                    Ok(())
                }
            },
            Some(b'|' | b'>') => {
                // Its lines are those indented past the collection it is in.
                self.block_scalar = Some(owner + 1);
                Ok(())
            }
            Some(_) => self.plain(line, at, at),
        }
    }

    /// The rest of a line in block context from `at`: a plain scalar, up to a `: ` that starts a
    /// value (of the mapping whose key starts at column `key`) or a comment.
    fn plain(&mut self, line: &[u8], mut at: usize, key: usize) -> Result<(), String> {
        if self.flow > 0 || self.quote.is_some() {
            return Ok(());
        }
        while at < line.len() {
            match line[at] {
                b':' if is_blank(line.get(at + 1)) => return self.node(line, at + 1, key),
                b'#' if at == 0 || matches!(line[at - 1], b' ' | b'\t') => return Ok(()),
                _ => at += 1,
            }
        }
        Ok(())
    }

    /// Scans flow content from `at` until the flow collections close (returns the position after
    /// the last `]` or `}`) or the line ends (returns its length, collections still open).
    fn flow_scan(&mut self, line: &[u8], mut at: usize) -> Result<usize, String> {
        while at < line.len() {
            match line[at] {
                b'[' | b'{' => {
                    self.flow += 1;
                    self.check()?;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    if self.flow == 0 {
                        return Ok(at + 1);
                    }
                }
                quote @ (b'"' | b'\'') => match close_quote(line, at + 1, quote) {
                    Some(end) => {
                        at = end;
                        continue;
                    }
                    None => {
                        self.quote = Some(quote);
                        return Ok(line.len());
                    }
                },
                b'#' if at == 0 || matches!(line[at - 1], b' ' | b'\t') => return Ok(line.len()),
                _ => {}
            }
            at += 1;
        }
        Ok(line.len())
    }
}

/// The position after the quote that closes a scalar opened by `quote`, searching from `at`.
fn close_quote(line: &[u8], mut at: usize, quote: u8) -> Option<usize> {
    while at < line.len() {
        match line[at] {
            b'\\' if quote == b'"' => at += 2,
            b'\'' if quote == b'\'' && line.get(at + 1) == Some(&b'\'') => at += 2,
            c if c == quote => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check(text, limit).is_ok()
    }

    #[test]
    fn block_nesting_is_counted() {
        let text = "a:\n  b:\n    c:\n      d: 1\n";
        assert!(depth_ok(text, 4));
        assert!(!depth_ok(text, 3));
        // Back out and in again: the depth is that of the deepest line, not a sum.
        let text = "a:\n  b: 1\nc:\n  d: 1\ne:\n  f: 1\n";
        assert!(depth_ok(text, 2));
        let seqs = "- - - - x\n";
        assert!(depth_ok(seqs, 5));
        assert!(!depth_ok(seqs, 4));
    }

    #[test]
    fn flow_nesting_is_counted_across_lines() {
        assert!(depth_ok("a: [[[x]]]\n", 4));
        assert!(!depth_ok("a: [[[x]]]\n", 3));
        assert!(!depth_ok("a: [\n [\n  [\n   {b: x}]]]\n", 4));
        assert!(depth_ok("a: [\n [\n  [\n   {b: x}]]]\n", 5));
        assert!(!depth_ok("a: &anchor !!seq [[[x]]]\n", 3));
        assert!(!depth_ok("--- [[[[x]]]]\n", 3));
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        let text = "a:\n  description: see [the docs] {x} [[[[\n  q: \"[[[[\\\" [[[\"\n  s: '[[[['' [['\n  \
                    c: x # [[[[\n  m: \"two\n    [[[[ lines\"\n  b: |\n    [[[[ {{{{\n      - - - - -\n\n    x\n  e: >-\n    [[[\nz: 1\n";
        assert!(depth_ok(text, 2), "{:?}", check(text, 2));
        assert!(!depth_ok(text, 1));
    }

    #[test]
    fn the_example_indexes_nest_shallowly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/charts");
        for file in ["bitnami-index.yaml", "community-index.yaml"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(depth_ok(&text, 12), "{file}: {:?}", check(&text, 12));
        }
    }
}
