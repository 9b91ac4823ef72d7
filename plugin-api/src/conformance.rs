//! The conformance kit (feature `conformance`): the checks a source must pass, runnable from a
//! plugin's own `cargo test` against its [`PackageSource`] and, by `tributary plugin check`, against
//! a loaded library through the real FFI boundary ([`SourceBox`]).
//!
//! ```ignore
//! #[test]
//! fn conforms() {
//!     let source = MyPlugin::new_source(Host::detached("test", None), r#"{"path":"fixtures/a.json"}"#).unwrap();
//!     let report = tributary_plugin_api::conformance::check(&source, &Options::default());
//!     assert!(report.passed(), "{report}");
//! }
//! ```
//!
//! What is checked, each a line of the [`Report`]:
//! - every answer passes the host's own checks ([`crate::contract`]: [`contract::check_list`],
//!   [`contract::check_detail`], [`contract::check_error`]; the same functions the server runs), so
//!   the full listing (pages of 1000) keeps strictly increasing `(name, identifier)`, non-empty unique
//!   identifiers, valid bounded fields and at most `limit` items, with a short page only at the end;
//! - paging with random limits (1 to 20) gives exactly the full listing;
//! - seeks before the first item, at every sampled item (resume after it), at `name + "\0"` (the
//!   first key after every identifier of that name) and after the last item;
//! - every filter field: a query taken from a listed name, a category, a repository, deprecated
//!   packages left out by default and kept with `include_deprecated`; the answer must be exactly
//!   the full listing filtered by [`Filter::matches`];
//! - when [`Options::capabilities`] declares `list.sort@1`: listings by relevance and by update
//!   time, paged with random limits, are exactly the full listing's matches ordered by
//!   [`OrderKey`], every page passing [`contract::check_list`] for its order;
//! - when it declares `facets@1`: the answer for a few filters equals [`Facets::count`] over the
//!   full listing;
//! - the detail of every listed identifier passes [`contract::check_detail`] and names the listed
//!   package;
//! - error kinds: an unknown identifier is `not_found`, an unknown `call` is `unsupported`;
//! - no call panicked (a panic is reported as a failure wherever it happens).

use std::fmt;

use abi_stable::std_types::{ROption, RResult, RStr, RString};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    capabilities, contract,
    facets::{Facets, FacetsRequest},
    order::{OrderKey, Sort},
    query::Query,
    types::{Detail, ErrorKind, Filter, ListRequest, PluginError, SeekKey, Summary},
    PackageSource, SourceBox,
};

/// What the kit calls: a [`PackageSource`] in the same process, or a loaded library's [`SourceBox`].
pub trait Subject {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError>;
    fn detail(&self, identifier: &str) -> Result<Detail, PluginError>;
    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError>;
}

impl<S: PackageSource> Subject for S {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        crate::guard(|| PackageSource::list(self, request))
    }
    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        crate::guard(|| PackageSource::detail(self, identifier))
    }
    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        crate::guard(|| PackageSource::call(self, method, version, payload))
    }
}

/// Calls through the FFI boundary, exactly as the host does.
pub struct Ffi<'a>(pub &'a SourceBox);

impl Subject for Ffi<'_> {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        match self.0.list(request) {
            RResult::ROk(items) => Ok(items.into_vec()),
            RResult::RErr(e) => Err(e),
        }
    }
    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        self.0.detail(RStr::from_str(identifier)).into_result()
    }
    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        self.0
            .call(RStr::from_str(method), version, RStr::from_str(payload))
            .into_result()
            .map(RString::into_string)
    }
}

/// How hard to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of the random limits and samples; a report names it so a failure can be replayed.
    pub seed: u64,
    /// Rounds of paging with random limits.
    pub rounds: usize,
    /// Stop reading the listing after this many items (the checks then cover a prefix).
    pub max_items: usize,
    /// Items whose seeks and details are checked (sampled evenly when there are more).
    pub samples: usize,
    /// Capabilities the source declares: a declared method is not expected to be `unsupported`.
    pub capabilities: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0x7472_6962,
            rounds: 5,
            max_items: 20_000,
            samples: 200,
            capabilities: Vec::new(),
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `None` when it passed; otherwise what went wrong.
    pub failure: Option<String>,
}

/// The outcome of [`check`]. `Display` prints one line per check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Items of the full listing read (pages of 1000, up to [`Options::max_items`]); when the
    /// listing broke a rule, the items read up to and including the page that broke it.
    pub items: usize,
    pub seed: u64,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.failure.is_none())
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.failure.is_some()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.failure {
                None => writeln!(f, "  ok    {}", c.name)?,
                Some(why) => writeln!(f, "  FAIL  {}: {why}", c.name)?,
            }
        }
        write!(
            f,
            "{} of {} checks passed over {} items (seed {})",
            self.checks.len() - self.failures(),
            self.checks.len(),
            self.items,
            self.seed
        )
    }
}

fn request(after: Option<(&str, &str)>, limit: u32, filter: &Filter) -> ListRequest {
    ListRequest {
        after: match after {
            Some((name, identifier)) => ROption::RSome(SeekKey {
                name: RString::from(name),
                identifier: RString::from(identifier),
            }),
            None => ROption::RNone,
        },
        limit,
        filter: filter.clone(),
        extensions: Default::default(),
    }
}

fn everything() -> Filter {
    Filter {
        include_deprecated: true,
        ..Filter::default()
    }
}

fn describe(e: &PluginError) -> String {
    // An error the host would not pass on (invalid UTF-8, an unbounded message) is itself a failure.
    if let Err(v) = contract::check_error(e) {
        return v.into_message();
    }
    if e.kind == ErrorKind::Panic {
        format!("the source panicked: {}", e.message)
    } else {
        e.to_string()
    }
}

/// Why [`page_through`] stopped early, and how many items it had read by then (the page that broke
/// a rule counts: it was read whole before it was checked).
struct Stopped {
    read: usize,
    why: String,
}

/// Pages through the listing from `after` with `limits` (cycled), checking each answer against
/// the contract; at most `max` items.
fn page_through(
    subject: &dyn Subject,
    after: Option<(String, String)>,
    filter: &Filter,
    limits: &mut dyn FnMut() -> u32,
    max: usize,
) -> Result<Vec<Summary>, Stopped> {
    let mut out: Vec<Summary> = Vec::new();
    let mut after = after;
    loop {
        let limit = limits();
        let req = request(
            after.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
            limit,
            filter,
        );
        let page = subject.list(&req).map_err(|e| Stopped {
            read: out.len(),
            why: describe(&e),
        })?;
        let stop = |why: String| Stopped {
            read: out.len() + page.len(),
            why,
        };
        // The host's own rules (crate::contract): limit, fields, unique identifiers, order, after
        // the seek key. Pages chain through `after`, so the order holds across pages too.
        contract::check_list(&req, &page).map_err(|v| stop(v.into_message()))?;
        if let Some(item) = page.iter().find(|item| !filter.matches(item)) {
            return Err(stop(format!(
                "item ({:?}, {:?}) does not match the filter {filter:?}",
                item.name.as_str(),
                item.identifier.as_str()
            )));
        }
        let full = page.len() as u32 >= limit;
        out.extend(page);
        if !full || out.len() >= max {
            return Ok(out);
        }
        let last = out.last().expect("a full page has items");
        after = Some((last.name.to_string(), last.identifier.to_string()));
    }
}

/// Pages through the listing in `sort` with `limits`, checking each answer against the contract
/// (which checks the order) and the filter.
fn page_sorted(
    subject: &dyn Subject,
    filter: &Filter,
    sort: Sort,
    query: &Query,
    limits: &mut dyn FnMut() -> u32,
) -> Result<Vec<Summary>, Stopped> {
    let mut out: Vec<Summary> = Vec::new();
    let mut req = request(None, 1, filter);
    req.set_order(sort, None);
    loop {
        req.limit = limits();
        let page = subject.list(&req).map_err(|e| Stopped {
            read: out.len(),
            why: describe(&e),
        })?;
        let stop = |why: String| Stopped {
            read: out.len() + page.len(),
            why,
        };
        contract::check_list(&req, &page).map_err(|v| stop(v.into_message()))?;
        if let Some(item) = page.iter().find(|item| !filter.matches(item)) {
            return Err(stop(format!(
                "item ({:?}, {:?}) does not match the filter {filter:?}",
                item.name.as_str(),
                item.identifier.as_str()
            )));
        }
        let full = page.len() as u32 >= req.limit;
        out.extend(page);
        if !full {
            return Ok(out);
        }
        let last = out.last().expect("a full page has items");
        req.set_order(sort, Some(&OrderKey::of(sort, query, last)));
    }
}

fn ids(items: &[Summary]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|s| (s.name.to_string(), s.identifier.to_string()))
        .collect()
}

fn compare(got: &[Summary], want: &[Summary]) -> Option<String> {
    if ids(got) == ids(want) {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.key_cmp(w) != std::cmp::Ordering::Equal)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{} items (expected {}); first difference at position {at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        got.get(at)
            .map(|s| (s.name.as_str(), s.identifier.as_str())),
        want.get(at)
            .map(|s| (s.name.as_str(), s.identifier.as_str()))
    ))
}

/// Runs every check against `subject`.
pub fn check(subject: &dyn Subject, options: &Options) -> Report {
    let mut report = Report {
        seed: options.seed,
        ..Report::default()
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let push = |report: &mut Report, name: String, failure: Option<String>| {
        report.checks.push(Check { name, failure });
    };

    let all = match page_through(
        subject,
        None,
        &everything(),
        &mut || 1000,
        options.max_items,
    ) {
        Ok(all) => all,
        Err(stopped) => {
            report.items = stopped.read;
            push(
                &mut report,
                "full listing keeps the contract".into(),
                Some(stopped.why),
            );
            return report;
        }
    };
    report.items = all.len();
    let unique = {
        let mut seen: Vec<&str> = all.iter().map(|s| s.identifier.as_str()).collect();
        seen.sort_unstable();
        seen.windows(2)
            .find(|w| w[0] == w[1])
            .map(|w| format!("identifier {:?} is listed twice", w[0]))
    };
    push(
        &mut report,
        "full listing keeps the contract".into(),
        unique,
    );

    for round in 0..options.rounds {
        let got = page_through(
            subject,
            None,
            &everything(),
            &mut || rng.random_range(1..=20),
            options.max_items,
        );
        let failure = match got {
            Ok(got) => compare(&got, &all),
            Err(stopped) => Some(stopped.why),
        };
        push(
            &mut report,
            format!("paging with random limits, round {}", round + 1),
            failure,
        );
    }

    // Seeks.
    let step = (all.len() / options.samples.max(1)).max(1);
    let sampled: Vec<usize> = (0..all.len()).step_by(step).collect();
    let seek = |after: (String, String), want: &[Summary], limit: u32| -> Option<String> {
        match page_through(
            subject,
            Some(after),
            &everything(),
            &mut || limit,
            want.len() + 1,
        ) {
            Ok(got) => compare(&got, want),
            Err(stopped) => Some(stopped.why),
        }
    };
    let mut failure = seek((String::new(), String::new()), &all, 1000);
    push(&mut report, "seek before the first item".into(), failure);
    failure = None;
    for &i in &sampled {
        let item = &all[i];
        let want = &all[i + 1..(i + 1 + 5).min(all.len())];
        let got = subject.list(&request(
            Some((item.name.as_str(), item.identifier.as_str())),
            5,
            &everything(),
        ));
        let f = match got {
            Ok(got) => compare(&got, want).map(|d| {
                format!(
                    "after ({:?}, {:?}): {d}",
                    item.name.as_str(),
                    item.identifier.as_str()
                )
            }),
            Err(e) => Some(describe(&e)),
        };
        if f.is_some() {
            failure = f;
            break;
        }
    }
    push(
        &mut report,
        format!("seek between items ({} sampled)", sampled.len()),
        failure,
    );
    failure = None;
    for &i in &sampled {
        let name = format!("{}\0", all[i].name);
        let start = all.partition_point(|s| s.name.as_bytes() <= all[i].name.as_bytes());
        let want = &all[start..(start + 5).min(all.len())];
        let f = match subject.list(&request(Some((&name, "")), 5, &everything())) {
            Ok(got) => compare(&got, want).map(|d| format!("after name {name:?}: {d}")),
            Err(e) => Some(describe(&e)),
        };
        if f.is_some() {
            failure = f;
            break;
        }
    }
    push(&mut report, "seek at name + \"\\0\"".into(), failure);
    let failure = match all.last() {
        Some(last) if all.len() < options.max_items => {
            match subject.list(&request(
                Some((last.name.as_str(), last.identifier.as_str())),
                10,
                &everything(),
            )) {
                Ok(got) if got.is_empty() => None,
                Ok(got) => Some(format!("{} items after the last one", got.len())),
                Err(e) => Some(describe(&e)),
            }
        }
        _ => None,
    };
    push(&mut report, "seek after the last item".into(), failure);

    // Filters: each field alone, against the definition applied to the full listing.
    let mut filters: Vec<(String, Filter)> =
        vec![("deprecated left out by default".into(), Filter::default())];
    let mut name_query: Option<String> = None;
    if let Some(item) = all.get(rng.random_range(0..all.len().max(1))) {
        let name = item.name.to_lowercase();
        let chars: Vec<char> = name.chars().collect();
        let from = rng.random_range(0..chars.len().max(1)).min(chars.len());
        // One word of the query syntax, which a plugin built against 1.0 (one substring) reads
        // the same: no whitespace or quote, no leading `-`, not `or`.
        let query: String = chars[from..]
            .iter()
            .take_while(|c| !c.is_whitespace() && **c != '"')
            .take(3)
            .collect::<String>()
            .trim_start_matches('-')
            .to_owned();
        if !query.is_empty() && query != "or" {
            name_query = Some(query.clone());
        }
    }
    if let Some(query) = name_query.clone() {
        filters.push((
            format!("filter query {query:?}"),
            Filter {
                query: RString::from(query),
                include_deprecated: true,
                ..Filter::default()
            },
        ));
    }
    if let Some(category) = all.iter().find_map(|s| s.categories.first()) {
        filters.push((
            format!("filter category {:?}", category.as_str()),
            Filter {
                categories: vec![category.clone()].into(),
                include_deprecated: true,
                ..Filter::default()
            },
        ));
    }
    if let Some(repository) = all.iter().map(|s| &s.repository).find(|r| !r.is_empty()) {
        filters.push((
            format!("filter repository {:?}", repository.as_str()),
            Filter {
                repositories: vec![repository.clone()].into(),
                include_deprecated: true,
                ..Filter::default()
            },
        ));
    }
    filters.push((
        "filter that matches nothing".into(),
        Filter {
            query: RString::from("\u{1}no such package\u{1}"),
            include_deprecated: true,
            ..Filter::default()
        },
    ));
    for (name, filter) in filters {
        let want: Vec<Summary> = all.iter().filter(|s| filter.matches(s)).cloned().collect();
        let failure = match page_through(subject, None, &filter, &mut || 7, options.max_items) {
            Ok(got) => compare(&got, &want),
            Err(stopped) => Some(stopped.why),
        };
        push(&mut report, name, failure);
    }

    // Sort orders, when declared: every order against the full listing sorted by its key.
    let complete = all.len() < options.max_items;
    if complete && capabilities::declares(&options.capabilities, capabilities::LIST_SORT, 1) {
        let mut orders = vec![(Sort::Updated, String::new())];
        if let Some(query) = &name_query {
            orders.push((Sort::Relevance, query.clone()));
            orders.push((Sort::Updated, query.clone()));
        }
        orders.push((Sort::Relevance, "a or e -zz".into()));
        for (sort, query) in orders {
            let filter = Filter {
                query: RString::from(query.as_str()),
                include_deprecated: true,
                ..Filter::default()
            };
            let parsed = Query::parse(&query).expect("the kit's queries parse");
            let mut want: Vec<(OrderKey, &Summary)> = all
                .iter()
                .filter(|s| filter.matches(s))
                .map(|s| (OrderKey::of(sort, &parsed, s), s))
                .collect();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<Summary> = want.into_iter().map(|(_, s)| s.clone()).collect();
            let failure = match page_sorted(subject, &filter, sort, &parsed, &mut || {
                rng.random_range(1..=20)
            }) {
                Ok(got) => compare(&got, &want),
                Err(stopped) => Some(stopped.why),
            };
            push(
                &mut report,
                format!("list.sort@1: {sort} order, query {query:?}"),
                failure,
            );
        }
    }

    // Facets, when declared: the counts of the full listing's matches.
    if complete && capabilities::declares(&options.capabilities, capabilities::FACETS, 1) {
        let mut filters = vec![everything(), Filter::default()];
        if let Some(query) = &name_query {
            filters.push(Filter {
                query: RString::from(query.as_str()),
                ..Filter::default()
            });
        }
        if let Some(category) = all.iter().find_map(|s| s.categories.first()) {
            filters.push(Filter {
                categories: vec![category.clone()].into(),
                include_deprecated: true,
                ..Filter::default()
            });
        }
        for filter in filters {
            let compiled = filter.compile().expect("the kit's queries parse");
            let want = Facets::count(&compiled, &all);
            let payload = FacetsRequest::from_filter(&filter).to_json();
            let failure = match subject.call(capabilities::FACETS, 1, &payload) {
                Ok(answer) => match Facets::from_json(&answer) {
                    Ok(got) if got == want => None,
                    Ok(got) => Some(format!(
                        "answered {}, expected {}",
                        got.to_json(),
                        want.to_json()
                    )),
                    Err(e) => Some(e),
                },
                Err(e) => Some(describe(&e)),
            };
            push(&mut report, format!("facets@1 for {payload}"), failure);
        }
    }

    // Details.
    let mut failure = None;
    for item in &all {
        let f = match subject.detail(&item.identifier) {
            Ok(d) => match contract::check_detail(&item.identifier, &d) {
                Err(v) => Some(format!("detail of {:?}: {v}", item.identifier.as_str())),
                Ok(()) if d.summary.name != item.name => Some(format!(
                    "detail of {:?} names the package {:?}, listed as {:?}",
                    item.identifier.as_str(),
                    d.summary.name.as_str(),
                    item.name.as_str()
                )),
                Ok(()) => None,
            },
            Err(e) => Some(format!(
                "detail of {:?}: {}",
                item.identifier.as_str(),
                describe(&e)
            )),
        };
        if f.is_some() {
            failure = f;
            break;
        }
    }
    push(
        &mut report,
        format!("detail of every listed identifier ({})", all.len()),
        failure,
    );

    // Error kinds.
    let unknown = "\u{1}conformance: no such identifier";
    let failure = match subject.detail(unknown) {
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => Some(format!("expected not_found, got {}", describe(&e))),
        Ok(_) => Some("expected not_found, got a detail".into()),
    };
    push(
        &mut report,
        "unknown identifier is not_found".into(),
        failure,
    );
    let method = "conformance.unknown";
    let failure = if options
        .capabilities
        .iter()
        .any(|c| c.starts_with("conformance.unknown@"))
    {
        None
    } else {
        match subject.call(method, 1, "{}") {
            Err(e) if e.kind == ErrorKind::Unsupported => None,
            Err(e) => Some(format!("expected unsupported, got {}", describe(&e))),
            Ok(answer) => Some(format!("expected unsupported, got an answer {answer:?}")),
        }
    };
    push(&mut report, "unknown call is unsupported".into(), failure);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Extension;

    struct Sorted(Vec<Summary>);

    impl PackageSource for Sorted {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            Ok(request.select(&self.0))
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            self.0
                .iter()
                .find(|s| s.identifier.as_str() == identifier)
                .map(|s| Detail {
                    summary: s.clone(),
                    ..Detail::default()
                })
                .ok_or_else(|| PluginError::not_found("no"))
        }
    }

    /// Ignores the seek key (a stale seek).
    struct Stale(Sorted);

    impl PackageSource for Stale {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            let mut r = request.clone();
            r.after = ROption::RNone;
            PackageSource::list(&self.0, &r)
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            PackageSource::detail(&self.0, identifier)
        }
    }

    fn items() -> Vec<Summary> {
        let mut v: Vec<Summary> = (0..60)
            .map(|i| Summary {
                identifier: RString::from(format!("id{}", i % 7)),
                name: RString::from(format!("pkg-{:02}", i / 2)),
                categories: vec![RString::from(["db", "web"][i % 2])].into(),
                repository: RString::from(["r1", "r2", "r3"][i % 3]),
                deprecated: i % 11 == 0,
                extensions: vec![Extension::new("x-test", "1")].into(),
                ..Summary::default()
            })
            .collect();
        v.sort_by(Summary::key_cmp);
        v.dedup_by(|a, b| a.key_cmp(b) == std::cmp::Ordering::Equal);
        v
    }

    #[test]
    fn a_correct_source_passes_and_a_stale_one_fails() {
        let mut unique = items();
        for (i, s) in unique.iter_mut().enumerate() {
            s.identifier = RString::from(format!("id{i}"));
        }
        let good = check(&Sorted(unique.clone()), &Options::default());
        assert!(good.passed(), "{good}");
        assert!(good.checks.len() >= 15, "{good}");

        let stale = check(&Stale(Sorted(unique)), &Options::default());
        assert!(!stale.passed());
        let failed: Vec<&str> = stale
            .checks
            .iter()
            .filter(|c| c.failure.is_some())
            .map(|c| c.name.as_str())
            .collect();
        assert!(failed.contains(&"seek after the last item"), "{stale}");
        assert!(!failed.contains(&"seek before the first item"), "{stale}");
    }

    /// Answers `facets@1` by counting, optionally one too many; with `by_name`, ignores the sort.
    struct Discovering {
        items: Sorted,
        by_name: bool,
        miscount: bool,
    }

    impl PackageSource for Discovering {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            let mut r = request.clone();
            if self.by_name {
                r.set_order(Sort::Name, None);
                r.after = request.after.clone();
            }
            PackageSource::list(&self.items, &r)
        }
        fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
            PackageSource::detail(&self.items, identifier)
        }
        fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
            if (method, version) != ("facets", 1) {
                return Err(PluginError::unsupported("no"));
            }
            let filter = FacetsRequest::from_json(payload)?.to_filter();
            let mut facets = Facets::count(&filter.compile().unwrap(), &self.items.0);
            facets.total += u64::from(self.miscount);
            Ok(facets.to_json())
        }
    }

    #[test]
    fn declared_sorts_and_facets_are_checked() {
        let mut unique = items();
        for (i, s) in unique.iter_mut().enumerate() {
            s.identifier = RString::from(format!("id{i}"));
            s.short_description = RString::from(["an apple", "pears", "a"][i % 3]);
            s.display_name = RString::from(["", "Apple", ""][i % 3]);
            if i % 4 != 0 {
                s.extensions.push(Extension::new(
                    crate::keys::SUMMARY_UPDATED,
                    format!("2024-01-{:02}T00:00:00Z", 1 + i % 9),
                ));
            }
        }
        let options = Options {
            capabilities: vec!["list.sort@1".into(), "facets@1".into()],
            ..Options::default()
        };
        let source = |by_name, miscount| Discovering {
            items: Sorted(unique.clone()),
            by_name,
            miscount,
        };
        let good = check(&source(false, false), &options);
        assert!(good.passed(), "{good}");
        let named = |report: &Report, prefix: &str| {
            report
                .checks
                .iter()
                .filter(|c| c.name.starts_with(prefix))
                .map(|c| c.failure.is_some())
                .collect::<Vec<bool>>()
        };
        assert_eq!(named(&good, "list.sort@1").len(), 4, "{good}");
        assert_eq!(named(&good, "facets@1").len(), 4, "{good}");

        let unsorted = check(&source(true, false), &options);
        // Both orders by update time and the relevance of `a or e -zz` differ from the order by
        // name; every item of the query from a name scores the same, so that order is the name's.
        assert_eq!(
            named(&unsorted, "list.sort@1"),
            [true, false, true, true],
            "{unsorted}"
        );
        assert!(
            !named(&unsorted, "facets@1").iter().any(|f| *f),
            "{unsorted}"
        );
        let miscounted = check(&source(false, true), &options);
        assert!(
            named(&miscounted, "facets@1").iter().all(|f| *f),
            "{miscounted}"
        );
        assert!(
            !named(&miscounted, "list.sort@1").iter().any(|f| *f),
            "{miscounted}"
        );
    }

    #[test]
    fn the_hosts_field_rules_apply() {
        // The server discards answers that break crate::contract; the kit must fail them too.
        let mut unique = items();
        for (i, s) in unique.iter_mut().enumerate() {
            s.identifier = RString::from(format!("id{i}"));
        }
        unique[5].display_name = RString::from("d".repeat(contract::MAX_TEXT_BYTES + 1));
        let report = check(&Sorted(unique), &Options::default());
        assert_eq!(
            report.checks[0].failure.as_deref(),
            Some("item \"id5\" has a display_name of 65537 bytes, at most 65536 are allowed"),
            "{report}"
        );
    }

    /// Answers its items as they are, in whatever order, from the seek key on (by position).
    struct AsIs(Vec<Summary>);

    impl PackageSource for AsIs {
        fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
            let from = match &request.after {
                ROption::RSome(key) => self
                    .0
                    .iter()
                    .position(|s| s.identifier == key.identifier)
                    .map_or(self.0.len(), |i| i + 1),
                ROption::RNone => 0,
            };
            Ok(self.0[from..]
                .iter()
                .take(request.limit as usize)
                .cloned()
                .collect())
        }
        fn detail(&self, _: &str) -> Result<Detail, PluginError> {
            Err(PluginError::not_found("no"))
        }
    }

    fn numbered(n: usize) -> Vec<Summary> {
        (0..n)
            .map(|i| Summary {
                identifier: RString::from(format!("id{i:04}")),
                name: RString::from(format!("pkg-{i:04}")),
                ..Summary::default()
            })
            .collect()
    }

    #[test]
    fn a_failed_order_check_counts_the_items_read() {
        // 248 items in one page, two of them swapped: the report counts the 248 read.
        let mut items = numbered(248);
        items.swap(100, 101);
        let report = check(&AsIs(items), &Options::default());
        assert_eq!(report.items, 248, "{report}");
        assert_eq!(
            report.to_string(),
            format!(
                "  FAIL  full listing keeps the contract: items out of order: (\"pkg-0100\", \"id0100\") \
                 came after (\"pkg-0101\", \"id0101\"); sources must sort by name, then identifier, as bytes\n\
                 0 of 1 checks passed over 248 items (seed {})",
                Options::default().seed
            )
        );

        // Out of order on the second page of 1000: both pages were read.
        let mut items = numbered(1500);
        items.swap(1200, 1201);
        let report = check(&AsIs(items), &Options::default());
        assert_eq!(report.items, 1500, "{report}");
        assert!(
            report.to_string().ends_with(&format!(
                "0 of 1 checks passed over 1500 items (seed {})",
                Options::default().seed
            )),
            "{report}"
        );

        // A listing that keeps the order reads everything too.
        let report = check(&AsIs(numbered(248)), &Options::default());
        assert_eq!(report.items, 248, "{report}");
    }

    #[test]
    fn duplicate_identifiers_and_panics_are_reported() {
        let dup = check(&Sorted(items()), &Options::default());
        assert_eq!(
            dup.checks[0].failure.as_deref(),
            Some("identifier \"id0\" appears twice in one answer (items named \"pkg-03\" and another)"),
            "{dup}"
        );

        struct Panics;
        impl PackageSource for Panics {
            fn list(&self, _: &ListRequest) -> Result<Vec<Summary>, PluginError> {
                panic!("list exploded")
            }
            fn detail(&self, _: &str) -> Result<Detail, PluginError> {
                unreachable!()
            }
        }
        let report = check(&Panics, &Options::default());
        assert!(!report.passed());
        let why = report.checks[0].failure.as_deref().unwrap();
        assert!(
            why.starts_with("the source panicked: panicked: list exploded"),
            "{why}"
        );
    }
}
