//! The query syntax of [`Filter::query`](crate::Filter::query) (interface 1.1): what a search box
//! accepts, compiled once into a [`Query`] that is cheap to match.
//!
//! # Syntax
//! Like a web search engine's:
//!
//! | query | matches an item when |
//! |---|---|
//! | `nginx` | `nginx` occurs in it |
//! | `nginx ingress` | both `nginx` and `ingress` occur in it (in any order, in any of the fields) |
//! | `"ingress controller"` | the phrase `ingress controller` occurs in it, space included |
//! | `nginx -bitnami` | `nginx` occurs and `bitnami` does not |
//! | `nginx -"helm chart"` | `nginx` occurs and the phrase `helm chart` does not |
//! | `redis or valkey` | `redis` occurs, or `valkey` occurs |
//! | `postgres operator OR mysql -legacy` | (`postgres` and `operator`) or (`mysql` and not `legacy`) |
//! | `-deprecated` | `deprecated` does not occur (a group of exclusions alone is allowed) |
//! | *(empty or only spaces)* | always |
//!
//! - Terms are separated by whitespace. A term *occurs* in an item when it is a case-insensitive
//!   substring of its name, display name or short description: the rule of interface 1.0, so a
//!   query of one word means what it meant in 1.0.
//! - A `"` always opens or closes a phrase, also inside a word: `a"b c"` is the word `a` and the
//!   phrase `b c`. A phrase is one term, its whitespace kept as written.
//! - A `-` at the start of a term excludes it. Elsewhere `-` is an ordinary character (`cert-manager`
//!   is one word).
//! - The word `or`, in any case, standing alone and unquoted, separates groups. The terms of a
//!   group must all hold (AND); an item matches when any group does (OR). `"or"` and `-or` are
//!   terms.
//! - Terms are lower-cased when the query is parsed (`str::to_lowercase`), and fields are
//!   lower-cased the same way when matched.
//!
//! Errors, each a [`QueryError`] with the 1-based *character* position it refers to: an
//! unterminated quote, an empty phrase `""`, a `-` followed by nothing or by whitespace, an `or`
//! with no term before or after it, two `or`s in a row, a query over [`MAX_QUERY_BYTES`] bytes
//! or with more than [`MAX_TERMS`] terms.
//!
//! # For plugins built against 1.0
//! A 1.0 plugin matches the whole query text as one substring, so for `a b` it keeps only the items
//! containing `a b` literally. The host therefore sends such plugins
//! [`Query::required_substring`] instead (a substring every match contains) and applies the full
//! query to what they answer.

use std::borrow::Cow;

use crate::items::SummaryFields;
use crate::types::{Filter, Summary};

/// The longest query, in bytes: as long as a name (`contract::MAX_KEY_BYTES`; a test keeps the two
/// equal).
pub const MAX_QUERY_BYTES: usize = 1024;

/// The most terms in one query, exclusions included (`or` is not a term).
pub const MAX_TERMS: usize = 32;

/// A query that could not be parsed: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The 1-based character (not byte) position in the query text the error refers to.
    pub position: usize,
    /// One line saying what is wrong, naming the position; `Display` prefixes it with `query: `.
    pub message: String,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query: {}", self.message)
    }
}

impl std::error::Error for QueryError {}

/// A parsed query: groups of terms, an item matching when every term of some group holds.
///
/// Build it with [`Query::parse`] once per request and match it against many items; matching
/// allocates only for fields that are not ASCII. The default is the empty query, which matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    groups: Vec<Group>,
}

/// Terms that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Group {
    /// Lower-cased terms that must occur, in query order.
    include: Vec<String>,
    /// Lower-cased terms that must not occur.
    exclude: Vec<String>,
}

/// One token of the query text.
enum Token {
    Term {
        text: String,
        exclude: bool,
    },
    /// The separator `or`, at this 1-based position.
    Or(usize),
}

impl Query {
    /// Parses `text` (see the module documentation for the syntax).
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.len() > MAX_QUERY_BYTES {
            let position = text
                .char_indices()
                .position(|(at, c)| at + c.len_utf8() > MAX_QUERY_BYTES)
                .map_or(1, |i| i + 1);
            return Err(QueryError {
                position,
                message: format!(
                    "the query is longer than {MAX_QUERY_BYTES} bytes (the limit is passed at position {position})"
                ),
            });
        }
        let chars: Vec<char> = text.chars().collect();
        let tokens = tokenize(&chars)?;
        let mut groups: Vec<Group> = Vec::new();
        let mut current = Group::default();
        let mut last_or: Option<usize> = None;
        for token in tokens {
            match token {
                Token::Term { text, exclude } => {
                    if exclude {
                        current.exclude.push(text);
                    } else {
                        current.include.push(text);
                    }
                    last_or = None;
                }
                Token::Or(position) => {
                    if current.include.is_empty() && current.exclude.is_empty() {
                        let message = if groups.is_empty() {
                            format!("\"or\" at position {position} has no term before it")
                        } else {
                            format!("\"or\" at position {position} follows another \"or\"")
                        };
                        return Err(QueryError { position, message });
                    }
                    groups.push(std::mem::take(&mut current));
                    last_or = Some(position);
                }
            }
        }
        if let Some(position) = last_or {
            return Err(QueryError {
                position,
                message: format!("\"or\" at position {position} has no term after it"),
            });
        }
        if !current.include.is_empty() || !current.exclude.is_empty() {
            groups.push(current);
        }
        Ok(Query { groups })
    }

    /// Whether the query has no term: it matches everything.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// How many terms the query has, exclusions included.
    pub fn terms(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.include.len() + g.exclude.len())
            .sum()
    }

    /// Whether `item` matches: the query is empty, or every term of some group holds (a term that
    /// must occur is a case-insensitive substring of the name, display name or short description;
    /// a term that must not occur is a substring of none of them).
    pub fn matches(&self, item: &Summary) -> bool {
        self.matches_item(item)
    }

    /// [`Query::matches`] for an item kept in any form.
    pub fn matches_item<'a>(&self, item: impl SummaryFields<'a>) -> bool {
        self.eval(item, false).is_some()
    }

    /// A lower-case substring that every item this query matches contains in its name, display
    /// name or short description: the longest term that must occur (the first of equal length)
    /// when the query has exactly one group; `None` when it has several groups or no such term.
    ///
    /// A source that knows only substring matching (interface 1.0) is sent this instead of the
    /// query; what it answers is a superset of the matches, filtered again with [`Query::matches`].
    pub fn required_substring(&self) -> Option<String> {
        match self.groups.as_slice() {
            [only] => only
                .include
                .iter()
                .reduce(|best, t| if t.len() > best.len() { t } else { best })
                .cloned(),
            _ => None,
        }
    }

    /// The terms that must occur, group by group.
    pub(crate) fn groups_include(&self) -> impl Iterator<Item = &[String]> {
        self.groups.iter().map(|g| g.include.as_slice())
    }

    /// The one term that must occur, when the query is one group with exactly one such term
    /// (exclusions aside): its relevance is then that term's field score alone.
    pub(crate) fn single_term(&self) -> Option<&str> {
        match self.groups.as_slice() {
            [group] if group.include.len() == 1 => Some(&group.include[0]),
            _ => None,
        }
    }

    /// Whether an item matches exactly when it has, for some group, every term's one byte
    /// trigram: every group has terms that must occur, each exactly three bytes long, and no
    /// exclusion. Trigrams of the lower-cased fields (`SearchIndex`) then decide the query
    /// without reading the item's text.
    pub(crate) fn is_decided_by_trigrams(&self) -> bool {
        !self.groups.is_empty()
            && self.groups.iter().all(|g| {
                g.exclude.is_empty()
                    && !g.include.is_empty()
                    && g.include.iter().all(|t| t.len() == 3)
            })
    }

    /// Whether no item can score above 0: the query has no term that must occur.
    pub(crate) fn scores_nothing(&self) -> bool {
        self.groups.iter().all(|g| g.include.is_empty())
    }

    /// `None` when `item` does not match a non-empty query; otherwise its relevance
    /// (`order::relevance`): the best sum of term scores over the matching groups.
    pub(crate) fn score<'a>(&self, item: impl SummaryFields<'a>) -> Option<u32> {
        self.eval(item, true)
    }

    /// Whether `item` matches, given its name already as [`folded`] leaves it (`name`, from a
    /// search index's copy of the names): the item's own fields are read only when a term is not
    /// decided by the name (a term absent from it, or an exclusion).
    pub(crate) fn matches_with_name<'a>(&self, name: &str, item: impl SummaryFields<'a>) -> bool {
        if self.is_empty() {
            return true;
        }
        self.eval_fields(&Fields::with_name(Cow::Borrowed(name), item), false)
            .is_some()
    }

    /// `None` when `item` does not match; otherwise its score when `scored`, else 0 (matching
    /// alone stops at the first group that matches and needs no more than a substring search).
    fn eval<'a>(&self, item: impl SummaryFields<'a>, scored: bool) -> Option<u32> {
        if self.is_empty() {
            return Some(0);
        }
        self.eval_fields(&Fields::of(item), scored)
    }

    fn eval_fields<'a, S: SummaryFields<'a>>(
        &self,
        fields: &Fields<'_, 'a, S>,
        scored: bool,
    ) -> Option<u32> {
        let mut best: Option<u32> = None;
        for group in &self.groups {
            if group.exclude.iter().any(|t| fields.contains(t)) {
                continue;
            }
            let mut sum = 0u32;
            let mut all = true;
            for term in &group.include {
                let score = if scored {
                    fields.term_score(term)
                } else {
                    u32::from(fields.contains(term))
                };
                if score == 0 {
                    all = false;
                    break;
                }
                sum += score;
            }
            if all {
                if !scored {
                    return Some(0);
                }
                best = Some(best.map_or(sum, |b| b.max(sum)));
            }
        }
        best
    }
}

/// Splits the query text into terms and `or`s.
fn tokenize(chars: &[char]) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut terms = 0usize;
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let exclude = chars[i] == '-';
        if exclude {
            i += 1;
            if i == chars.len() || chars[i].is_whitespace() {
                return Err(QueryError {
                    position: start + 1,
                    message: format!(
                        "\"-\" at position {} is not followed by a word or a quoted phrase",
                        start + 1
                    ),
                });
            }
        }
        let text: String;
        if chars[i] == '"' {
            let open = i + 1;
            let close = chars[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .map(|at| i + 1 + at)
                .ok_or_else(|| QueryError {
                    position: open,
                    message: format!("unterminated quote opened at position {open}"),
                })?;
            if close == i + 1 {
                return Err(QueryError {
                    position: open,
                    message: format!("empty quoted phrase at position {open}"),
                });
            }
            text = chars[i + 1..close].iter().collect();
            i = close + 1;
        } else {
            let end = chars[i..]
                .iter()
                .position(|&c| c.is_whitespace() || c == '"')
                .map_or(chars.len(), |at| i + at);
            text = chars[i..end].iter().collect();
            i = end;
            let alone = (start == 0 || chars[start - 1].is_whitespace())
                && (end == chars.len() || chars[end].is_whitespace());
            if !exclude && alone && text.eq_ignore_ascii_case("or") {
                tokens.push(Token::Or(start + 1));
                continue;
            }
        }
        terms += 1;
        if terms > MAX_TERMS {
            return Err(QueryError {
                position: start + 1,
                message: format!(
                    "the query has more than {MAX_TERMS} terms (term {terms} starts at position {})",
                    start + 1
                ),
            });
        }
        tokens.push(Token::Term {
            text: text.to_lowercase(),
            exclude,
        });
    }
    Ok(tokens)
}

/// The three matched fields of one item, ready for case-insensitive search: ASCII text as it is
/// (compared ignoring ASCII case), other text lower-cased once. The display name and description
/// are prepared only when a term gets to them: most terms are decided by the name.
struct Fields<'n, 'a, S> {
    name: Cow<'n, str>,
    item: S,
    display_name: std::cell::OnceCell<Cow<'a, str>>,
    short_description: std::cell::OnceCell<Cow<'a, str>>,
}

/// The field scores of one term, highest first (the `order` module documents the table).
pub(crate) const SCORE_NAME_EQUALS: u32 = 64;
pub(crate) const SCORE_NAME_STARTS: u32 = 32;
pub(crate) const SCORE_NAME_WORD: u32 = 16;
pub(crate) const SCORE_NAME_CONTAINS: u32 = 8;
pub(crate) const SCORE_DISPLAY_NAME: u32 = 4;
pub(crate) const SCORE_DESCRIPTION: u32 = 2;

impl<'n, 'a, S: SummaryFields<'a>> Fields<'n, 'a, S> {
    fn of(item: S) -> Fields<'a, 'a, S> {
        Fields::with_name(folded(item.name()), item)
    }

    /// The fields of `item`, whose name is given already [`folded`].
    fn with_name(name: Cow<'n, str>, item: S) -> Fields<'n, 'a, S> {
        Fields {
            name,
            item,
            display_name: std::cell::OnceCell::new(),
            short_description: std::cell::OnceCell::new(),
        }
    }

    fn display_name(&self) -> &str {
        self.display_name
            .get_or_init(|| folded(self.item.display_name()))
    }

    fn short_description(&self) -> &str {
        self.short_description
            .get_or_init(|| folded(self.item.short_description()))
    }

    fn contains(&self, term: &str) -> bool {
        contains(&self.name, term)
            || contains(self.display_name(), term)
            || contains(self.short_description(), term)
    }

    /// The best score of `term` over the fields; 0 when it occurs in none.
    fn term_score(&self, term: &str) -> u32 {
        let name = self.name.as_bytes();
        let t = term.as_bytes();
        if name.eq_ignore_ascii_case(t) {
            return SCORE_NAME_EQUALS;
        }
        if name.len() >= t.len() && name[..t.len()].eq_ignore_ascii_case(t) {
            return SCORE_NAME_STARTS;
        }
        let mut in_name = false;
        for at in occurrences(&self.name, term) {
            in_name = true;
            let before = self.name[..at].chars().next_back();
            let after = self.name[at + t.len()..].chars().next();
            if !before.is_some_and(char::is_alphanumeric)
                && !after.is_some_and(char::is_alphanumeric)
            {
                return SCORE_NAME_WORD;
            }
        }
        if in_name {
            SCORE_NAME_CONTAINS
        } else if contains(self.display_name(), term) {
            SCORE_DISPLAY_NAME
        } else if contains(self.short_description(), term) {
            SCORE_DESCRIPTION
        } else {
            0
        }
    }
}

/// `text` ready for [`contains`]: borrowed when ASCII, lower-cased otherwise.
pub(crate) fn folded(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// The byte offsets at which `needle` (lower case) occurs in `haystack` (from [`folded`]),
/// overlapping occurrences included.
///
/// Comparing bytes ignoring ASCII case is exact for both forms of the haystack: an ASCII haystack
/// compared so is its lower-cased form, and a lower-cased one has no upper-case ASCII left. A match
/// of a UTF-8 needle starts and ends on character boundaries.
fn occurrences<'h>(haystack: &'h str, needle: &'h str) -> impl Iterator<Item = usize> + 'h {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    // An empty range when the needle is longer than the haystack.
    let starts = match h.len().checked_sub(n.len()) {
        Some(last) => 0..last + 1,
        None => 0..0,
    };
    starts.filter(move |&at| h[at..at + n.len()].eq_ignore_ascii_case(n))
}

/// Whether `needle` (lower case) occurs in `haystack` (from [`folded`]).
fn contains(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if h.len() < n.len() {
        return false;
    }
    let first = n[0];
    let other = first.to_ascii_uppercase();
    h[..=h.len() - n.len()]
        .iter()
        .enumerate()
        .any(|(at, &b)| (b == first || b == other) && h[at..at + n.len()].eq_ignore_ascii_case(n))
}

/// A [`Filter`] with its query parsed: what listings match items against, so that nothing is
/// parsed per item. Build it with [`Filter::compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledFilter {
    query: Query,
    categories: Vec<String>,
    repositories: Vec<String>,
    include_deprecated: bool,
}

impl CompiledFilter {
    /// Compiles `filter`; the error is its query's ([`Query::parse`]).
    pub fn new(filter: &Filter) -> Result<CompiledFilter, QueryError> {
        Ok(CompiledFilter {
            query: Query::parse(&filter.query)?,
            categories: filter.categories.iter().map(|c| c.to_string()).collect(),
            repositories: filter.repositories.iter().map(|r| r.to_string()).collect(),
            include_deprecated: filter.include_deprecated,
        })
    }

    /// The parsed query.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The categories of which an item must have one (none: any).
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The repositories of which an item must be in one (none: any).
    pub fn repositories(&self) -> &[String] {
        &self.repositories
    }

    /// Whether deprecated items are kept.
    pub fn include_deprecated(&self) -> bool {
        self.include_deprecated
    }

    /// Whether the filter keeps every item (an empty query, no categories or repositories, and
    /// deprecated items included).
    pub fn is_empty(&self) -> bool {
        self.query.is_empty()
            && self.categories.is_empty()
            && self.repositories.is_empty()
            && self.include_deprecated
    }

    /// Whether `item` matches: the definition of [`Filter::matches`], without parsing.
    pub fn matches(&self, item: &Summary) -> bool {
        self.matches_item(item)
    }

    /// [`CompiledFilter::matches`] for an item kept in any form.
    pub fn matches_item<'a>(&self, item: impl SummaryFields<'a>) -> bool {
        self.admits(item) && self.query.matches_item(item)
    }

    /// `None` when `item` does not match; otherwise its relevance to the query
    /// (`order::relevance`), found in the same pass.
    pub fn score(&self, item: &Summary) -> Option<u32> {
        self.score_item(item)
    }

    /// [`CompiledFilter::score`] for an item kept in any form.
    pub fn score_item<'a>(&self, item: impl SummaryFields<'a>) -> Option<u32> {
        if !self.admits(item) {
            return None;
        }
        self.query.score(item)
    }

    /// Whether `item` passes everything but the query.
    fn admits<'a>(&self, item: impl SummaryFields<'a>) -> bool {
        (self.include_deprecated || !item.deprecated())
            && (self.repositories.is_empty() || {
                let repository = item.repository();
                self.repositories.iter().any(|r| r == repository)
            })
            && (self.categories.is_empty()
                || item
                    .categories()
                    .any(|c| self.categories.iter().any(|w| w == c)))
    }
}

impl Filter {
    /// The definition of a match, shared by the host and the plugins: not deprecated unless
    /// [`Filter::include_deprecated`], in one of [`Filter::repositories`] and with one of
    /// [`Filter::categories`] when they are given, and matching the query ([`crate::Query::matches`]). A
    /// query that does not parse matches nothing.
    ///
    /// This parses the query on every call: to test many items, [`Filter::compile`] once and use
    /// [`CompiledFilter::matches`].
    ///
    /// This function is behaviour each plugin compiles in: a plugin keeps the copy it was built with,
    /// so a change to it reaches plugins only when they are rebuilt (the host re-applies the filter,
    /// so answers stay correct meanwhile). Interface 1.1 changed it for queries of several words
    /// (1.0 took the whole query as one substring). See `COMPATIBILITY.md`.
    pub fn matches(&self, item: &Summary) -> bool {
        self.compile().is_ok_and(|filter| filter.matches(item))
    }

    /// Parses the query once: the compiled filter matches without parsing.
    pub fn compile(&self) -> Result<CompiledFilter, QueryError> {
        CompiledFilter::new(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_query_is_as_long_as_a_name() {
        assert_eq!(MAX_QUERY_BYTES, crate::contract::MAX_KEY_BYTES);
    }

    use super::*;
    use abi_stable::std_types::RString;

    fn item(name: &str, display: &str, description: &str) -> Summary {
        Summary {
            identifier: RString::from(name),
            name: RString::from(name),
            display_name: RString::from(display),
            short_description: RString::from(description),
            ..Summary::default()
        }
    }

    fn groups(text: &str) -> Vec<(Vec<&str>, Vec<&str>)> {
        // Leaks are fine in a test: the strings outlive the parsed query.
        let query: &'static Query = Box::leak(Box::new(Query::parse(text).unwrap()));
        query
            .groups
            .iter()
            .map(|g| {
                (
                    g.include.iter().map(String::as_str).collect(),
                    g.exclude.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    fn error(text: &str) -> (usize, String) {
        let e = Query::parse(text).unwrap_err();
        (e.position, e.to_string())
    }

    #[test]
    fn parses_terms_phrases_exclusions_and_groups() {
        assert_eq!(groups(""), []);
        assert_eq!(groups(" \t\n "), []);
        assert!(Query::parse("  ").unwrap().is_empty());
        assert_eq!(groups("Nginx"), [(vec!["nginx"], vec![])]);
        assert_eq!(
            groups("  NGINX   Ingress "),
            [(vec!["nginx", "ingress"], vec![])]
        );
        assert_eq!(
            groups(r#""Ingress  Controller" nginx"#),
            [(vec!["ingress  controller", "nginx"], vec![])]
        );
        assert_eq!(
            groups(r#"nginx -bitnami -"Helm Chart""#),
            [(vec!["nginx"], vec!["bitnami", "helm chart"])]
        );
        assert_eq!(
            groups("redis OR valkey oR x"),
            [
                (vec!["redis"], vec![]),
                (vec!["valkey"], vec![]),
                (vec!["x"], vec![])
            ]
        );
        // `or` quoted, excluded or inside a word is a term.
        assert_eq!(
            groups(r#"a "or" b -or oracle or- x-or"#),
            [(vec!["a", "or", "b", "oracle", "or-", "x-or"], vec!["or"])]
        );
        // A quote always opens or closes a phrase; `-` inside a word is a character.
        assert_eq!(
            groups(r#"a"b c"d cert-manager --x"#),
            [(vec!["a", "b c", "d", "cert-manager"], vec!["-x"])]
        );
        // An `or` glued to a phrase is a term.
        assert_eq!(groups(r#"or"x""#), [(vec!["or", "x"], vec![])]);
        // Exclusions alone make a group.
        assert_eq!(
            groups("-old or new"),
            [(vec![], vec!["old"]), (vec!["new"], vec![])]
        );
        // Non-ASCII text is lower-cased too.
        assert_eq!(groups("ÉCOLE Straße"), [(vec!["école", "straße"], vec![])]);
    }

    #[test]
    fn errors_name_their_position() {
        assert_eq!(
            error(r#"nginx "ingress"#),
            (
                7,
                "query: unterminated quote opened at position 7".to_owned()
            )
        );
        assert_eq!(
            error(r#"a -"b"#),
            (
                4,
                "query: unterminated quote opened at position 4".to_owned()
            )
        );
        assert_eq!(
            error(r#"é """#),
            (3, "query: empty quoted phrase at position 3".to_owned())
        );
        assert_eq!(
            error("a -"),
            (
                3,
                "query: \"-\" at position 3 is not followed by a word or a quoted phrase"
                    .to_owned()
            )
        );
        assert_eq!(
            error("a - b"),
            (
                3,
                "query: \"-\" at position 3 is not followed by a word or a quoted phrase"
                    .to_owned()
            )
        );
        assert_eq!(
            error("OR a"),
            (
                1,
                "query: \"or\" at position 1 has no term before it".to_owned()
            )
        );
        assert_eq!(
            error("a or  OR b"),
            (
                7,
                "query: \"or\" at position 7 follows another \"or\"".to_owned()
            )
        );
        assert_eq!(
            error("a b or"),
            (
                5,
                "query: \"or\" at position 5 has no term after it".to_owned()
            )
        );
        let long = format!("ü{}", "a".repeat(MAX_QUERY_BYTES - 2));
        assert!(Query::parse(&long).is_ok());
        assert_eq!(
            error(&format!("{long}bc")),
            (
                1024,
                "query: the query is longer than 1024 bytes (the limit is passed at position 1024)"
                    .to_owned()
            )
        );
        let many = vec!["ab"; MAX_TERMS].join(" ");
        assert!(Query::parse(&format!("{many} or -x")).is_err());
        assert!(Query::parse(&many).is_ok());
        assert_eq!(
            error(&format!("{many} or cd")),
            (
                100,
                "query: the query has more than 32 terms (term 33 starts at position 100)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn matches_every_term_of_some_group() {
        let nginx = item(
            "nginx-ingress",
            "NGINX Ingress Controller",
            "Ingress controller for Kubernetes using NGINX as a reverse proxy",
        );
        let redis = item("redis", "Redis", "An in-memory data store, by Bitnami");
        let cases: &[(&str, [bool; 2])] = &[
            ("", [true, true]),
            ("nginx", [true, false]),
            ("NGINX", [true, false]),
            ("ingress proxy", [true, false]),
            ("proxy ingress", [true, false]),
            ("ingress redis", [false, false]),
            (r#""reverse proxy""#, [true, false]),
            (r#""proxy reverse""#, [false, false]),
            ("reverse proxy", [true, false]),
            ("-bitnami", [true, false]),
            ("in -bitnami", [true, false]),
            (r#"-"in-memory""#, [true, false]),
            ("redis or nginx", [true, true]),
            ("redis -store or nginx -proxy", [false, false]),
            ("redis or -proxy", [false, true]),
            ("nothing", [false, false]),
            ("a", [true, true]),
        ];
        for (text, want) in cases {
            let query = Query::parse(text).unwrap();
            assert_eq!(
                [query.matches(&nginx), query.matches(&redis)],
                *want,
                "{text:?}"
            );
        }
        // Case-insensitive beyond ASCII, on both sides.
        let school = item("école", "", "STRASSE and STRAẞE");
        assert!(Query::parse("ÉCOLE").unwrap().matches(&school));
        assert!(Query::parse("straße").unwrap().matches(&school));
        assert!(!Query::parse("Ecole").unwrap().matches(&school));
    }

    #[test]
    fn a_one_word_query_means_what_it_meant_in_1_0() {
        // 1.0: the lower-cased field contains the (lower-case) query.
        let old = |q: &str, s: &Summary| {
            [&s.name, &s.display_name, &s.short_description]
                .iter()
                .any(|f| f.to_lowercase().contains(q))
        };
        let items = [
            item("Ab-c", "ÀBC", "x y"),
            item("zz", "", "Éa-b"),
            item("ßx", "K", "k"),
        ];
        for q in ["a", "ab", "b-c", "àb", "éa", "ß", "k", "x", "q", "c-", "zz"] {
            let query = Query::parse(q).unwrap();
            for s in &items {
                assert_eq!(query.matches(s), old(q, s), "{q:?} on {s:?}");
            }
        }
    }

    #[test]
    fn the_required_substring_is_in_every_match() {
        let required = |text: &str| Query::parse(text).unwrap().required_substring();
        assert_eq!(required(""), None);
        assert_eq!(required("Nginx"), Some("nginx".to_owned()));
        assert_eq!(required("ab cde fgh -xyzzyx"), Some("cde".to_owned()));
        assert_eq!(
            required(r#"ab "Reverse Proxy" cd"#),
            Some("reverse proxy".to_owned())
        );
        assert_eq!(required("-old"), None);
        assert_eq!(required("redis or valkey"), None);
        assert_eq!(required("redis or redis"), None);
    }
}
