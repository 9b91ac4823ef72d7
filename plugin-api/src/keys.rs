//! The documented keys of the extension slots. A key means the same in every version of 1.x once
//! it is listed here; a minor version only adds keys.
//!
//! Rules for every slot (`Summary::extensions`, `Detail::extensions`,
//! `ListRequest::extensions`, `HostContext::extensions`):
//! - keys are lower-case, dot-separated; keys starting with `x-` are private to a plugin and its
//!   operators and never get a meaning here;
//! - a reader ignores keys it does not know and uses a default for keys that are absent, so a host
//!   or plugin of another minor version degrades to what it knew;
//! - a value is text; the key's documentation says when it is JSON text or a number.

/// Host context: the operator's source timeout in milliseconds (decimal), the longest any call to
/// this source may take. Sent by hosts of interface 1.0 and later.
pub const CONTEXT_SOURCE_TIMEOUT_MS: &str = "host.source_timeout_ms";

/// Detail: the absolute URL of the latest version's package archive (for a Helm chart, its `.tgz`),
/// relative URLs already resolved against the repository. The host shows it in the API's
/// `AvailablePackageDetail.extensions`.
pub const DETAIL_DOWNLOAD_URL: &str = "package.download_url";

/// Host context: the host's process id (decimal), for messages that must tell two hosts apart.
/// Sent by hosts of interface 1.0 and later.
pub const CONTEXT_HOST_PID: &str = "host.pid";

/// Summary (interface 1.1): when the package's latest version was published, in UTC as
/// `YYYY-MM-DDTHH:MM:SSZ` (see `order::normalize_timestamp`, so that byte order is time
/// order). Absent when the source does not know. The order `order::Sort::Updated` sorts by
/// it; a value not in that exact form counts as absent (`order::updated`).
pub const SUMMARY_UPDATED: &str = "package.updated";

/// List request (interface 1.1): the order of the listing, `relevance` or `updated`
/// (`order::Sort`); absent means by name, as in 1.0. Sent only to sources that declare
/// `capabilities::LIST_SORT` (`list.sort@1`), which then return their matches in that order
/// and strictly after the seek point described by `ListRequest::after` together with
/// [`REQUEST_AFTER_SCORE`] or [`REQUEST_AFTER_UPDATED`]. Read it with `ListRequest::sort`
/// (an unknown value reads as by name); write it with `ListRequest::set_order`.
pub const REQUEST_SORT: &str = "list.sort";

/// List request (interface 1.1), with `list.sort = relevance` and a seek key: the relevance score
/// (`order::relevance`) of the item the listing resumes after, in decimal. Missing or
/// malformed, it reads as 0 (the lowest score).
pub const REQUEST_AFTER_SCORE: &str = "list.after_score";

/// List request (interface 1.1), with `list.sort = updated` and a seek key: the update time
/// ([`SUMMARY_UPDATED`], normalised) of the item the listing resumes after, or the empty string when
/// that item has none (the seek point is among the undated items, which come last). Missing or
/// malformed, it reads as the empty string.
pub const REQUEST_AFTER_UPDATED: &str = "list.after_updated";
