//! The documented keys of the extension slots. A key means the same in every version of 1.x once
//! it is listed here; a minor version only adds keys.
//!
//! Rules for every slot ([`crate::Summary::extensions`], [`crate::Detail::extensions`],
//! [`crate::ListRequest::extensions`], [`crate::HostContext::extensions`]):
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
