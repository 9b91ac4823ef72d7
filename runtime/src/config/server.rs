//! The settings of the network side (listener, TLS, authentication), as plain data with their
//! defaults: the server crate acts on them, the configuration only reads and checks them.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

/// Default `idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `stall_timeout_ms`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `request_body_timeout_ms`.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `max_streams_per_connection`.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Descriptors kept free for everything else (plugin files, private copies, runner sockets, logs).
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// The most connections by default, when the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The open-file limit of this process (soft), if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// [`DEFAULT_MAX_CONNECTIONS`], or fewer when the open-file limit minus
/// [`RESERVED_DESCRIPTORS`] is lower (at least 16).
pub fn default_max_connections() -> usize {
    let by_limit = open_file_limit()
        .map(|n| n.saturating_sub(RESERVED_DESCRIPTORS).max(16))
        .unwrap_or(u64::MAX);
    DEFAULT_MAX_CONNECTIONS.min(usize::try_from(by_limit).unwrap_or(usize::MAX))
}

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Client certificates are not asked for.
    #[default]
    None,
    /// Asked for and verified against `client_ca_file` when presented; clients without one connect.
    Optional,
    /// Every client must present a certificate that `client_ca_file` verifies.
    Required,
}

/// The `[tls]` settings, paths already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// The `[auth]` settings, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub tokens_file: Option<PathBuf>,
    pub identities: Vec<IdentitySettings>,
}

/// One `[[auth.identity]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    pub name: String,
    /// Source names, or `["*"]` for every source.
    pub sources: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// Client-certificate names (common name or DNS name) that authenticate as this identity.
    #[serde(default)]
    pub certificate_names: Vec<String>,
}

/// Checks the identities against the configured sources: names unique, every listed source exists.
pub fn validate_identities(
    identities: &[IdentitySettings],
    sources: &[&str],
) -> Result<(), (String, String)> {
    let mut seen = BTreeSet::new();
    for (i, identity) in identities.iter().enumerate() {
        if identity.name.trim().is_empty() || identity.name.chars().any(char::is_whitespace) {
            return Err((
                format!("auth.identity[{i}].name"),
                "must be a non-empty name without spaces".into(),
            ));
        }
        if !seen.insert(identity.name.as_str()) {
            return Err((
                format!("auth.identity[{i}].name"),
                format!("{:?} names another identity too", identity.name),
            ));
        }
        if identity.sources.is_empty() {
            return Err((
                format!("auth.identity[{i}].sources"),
                "must not be empty: list source names, or \"*\" for all".into(),
            ));
        }
        for (j, source) in identity.sources.iter().enumerate() {
            if source != "*" && !sources.contains(&source.as_str()) {
                return Err((
                    format!("auth.identity[{i}].sources[{j}]"),
                    format!("no [[source]] is named {source:?}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_must_name_configured_sources() {
        let identity = |name: &str, sources: &[&str]| IdentitySettings {
            name: name.into(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            admin: false,
            certificate_names: vec![],
        };
        assert!(
            validate_identities(&[identity("a", &["*"]), identity("b", &["x"])], &["x"]).is_ok()
        );
        assert_eq!(
            validate_identities(&[identity("a", &["y"])], &["x"])
                .unwrap_err()
                .0,
            "auth.identity[0].sources[0]"
        );
        assert_eq!(
            validate_identities(&[identity("a", &["x"]), identity("a", &["x"])], &["x"])
                .unwrap_err()
                .0,
            "auth.identity[1].name"
        );
        assert_eq!(
            validate_identities(&[identity("a", &[])], &["x"])
                .unwrap_err()
                .0,
            "auth.identity[0].sources"
        );
    }
}
