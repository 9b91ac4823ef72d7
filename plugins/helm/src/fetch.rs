//! Fetching a remote repository's index over HTTP(S) with a blocking client (no async runtime in
//! the plugin).
//!
//! Redirects are followed here rather than by the client, so that credentials go only to the
//! repository's own host (scheme-independent host and port, as Helm compares them since
//! CVE-2021-32690) unless `pass_credentials` is set. Requests are conditional on the validators of
//! the last index served (`If-None-Match`, `If-Modified-Since`), ask for gzip, and read at most
//! `max_index_size` bytes. `timeout` bounds the whole fetch, redirects and body included: an
//! upstream that dribbles its answer cannot hold a refresh past it.
//!
//! A body is copied, as it arrives, into an unnamed temporary file (in `TMPDIR`), hashed on the
//! way: the index is then parsed from the file in pieces like a local one, and the text is never
//! held whole in memory beside the charts made of it. When no temporary file can be made (a
//! read-only or full `TMPDIR`), the body is read into memory as before.

use std::{
    io::{Read as _, Seek as _, Write as _},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use ureq::{
    tls::{Certificate, RootCerts, TlsConfig},
    Agent,
};
use url::Url;

use crate::config::Remote;

/// The most redirects followed for one fetch.
const MAX_REDIRECTS: usize = 10;

/// What the server said about the index last served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The outcome of one fetch.
pub(crate) enum Fetched {
    /// `304 Not Modified`: the index last served is current.
    NotModified,
    /// A body, and the validators to send next time.
    Body(Vec<u8>, Validators),
    /// A body copied into an unnamed temporary file (positioned at its start), its SHA-256, and
    /// the validators to send next time.
    Spooled(std::fs::File, [u8; 32], Validators),
}

/// Where a body was read to.
enum Spool {
    /// An unnamed temporary file, positioned at its start, and the body's SHA-256.
    File(std::fs::File, [u8; 32]),
    /// Memory: no temporary file could be made, or writing to it failed (a full `TMPDIR`), in
    /// which case what it held was read back and the rest of the body read after it.
    Memory(Vec<u8>),
}

/// Reads `body` (the reader enforces the size limit) into a temporary file made by `temporary`,
/// hashing it on the way; into memory, with room for `length` bytes when known, when there is no
/// such file or it cannot be written. `Err` only from reading the body.
fn spool(
    body: &mut dyn std::io::Read,
    length: usize,
    temporary: impl FnOnce() -> std::io::Result<std::fs::File>,
) -> std::io::Result<Spool> {
    use sha2::{Digest, Sha256};
    let in_memory = |body: &mut dyn std::io::Read, mut bytes: Vec<u8>| {
        body.read_to_end(&mut bytes).map(|_| Spool::Memory(bytes))
    };
    let Ok(mut file) = temporary() else {
        return in_memory(body, Vec::with_capacity(length));
    };
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    // Bytes of the body written to the file so far.
    let mut written = 0;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buffer[..n]);
        if file.write_all(&buffer[..n]).is_err() {
            // What the file holds before this piece (a failed write may have left part of it),
            // then the piece, then the rest of the body.
            let mut bytes = Vec::with_capacity(length.max(written + n));
            let read_back = file.rewind().and_then(|()| file.read_to_end(&mut bytes));
            if read_back.is_err() || bytes.len() < written {
                // The body's start is lost, and it cannot be read again.
                return Err(std::io::Error::other(
                    "its temporary copy could not be written or read back",
                ));
            }
            bytes.truncate(written);
            bytes.extend_from_slice(&buffer[..n]);
            return in_memory(body, bytes);
        }
        written += n;
    }
    if file.rewind().is_err() {
        return Err(std::io::Error::other(
            "its temporary copy could not be read back",
        ));
    }
    Ok(Spool::File(file, hash.finalize().into()))
}

/// An unnamed file in the system's temporary folder, gone when closed.
fn temporary_file() -> std::io::Result<std::fs::File> {
    tempfile::tempfile()
}

/// Builds the client of one repository: its roots (the system's, or the given CA bundle), its
/// timeouts, no automatic redirects and no status-as-error. `timeout` is the budget of one whole
/// request, from the connection to the last byte of the body (not of each read: a server sending a
/// byte now and then would otherwise hold the request for ever).
pub(crate) fn agent(remote: &Remote) -> Result<Agent, String> {
    let roots = match &remote.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(|e| format!("ca_file {} is not valid PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(remote.insecure_skip_tls_verify)
        .build();
    let config = Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(concat!("tributary-helm/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(remote.connect_timeout))
        .timeout_global(Some(remote.timeout))
        .build();
    Ok(config.into())
}

/// A URL as it may appear in a log line or an error (query strings can carry tokens).
pub(crate) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Whether `a` and `b` name the same host and port (the scheme aside, as Helm compares them).
fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Fetches the index once. Errors are one line, naming the URL and what went wrong.
pub(crate) fn fetch(
    agent: &Agent,
    remote: &Remote,
    max_index_size: u64,
    validators: &Validators,
) -> Result<Fetched, String> {
    let mut url = remote.index_url.clone();
    // One budget for the whole fetch: each redirect gets what the previous hops left.
    let deadline = Instant::now() + remote.timeout;
    for _ in 0..=MAX_REDIRECTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(&url, remote));
        }
        let mut request = agent
            .get(url.as_str())
            .config()
            .timeout_global(Some(left))
            .build();
        if let Some(etag) = &validators.etag {
            request = request.header("If-None-Match", etag);
        }
        if let Some(date) = &validators.last_modified {
            request = request.header("If-Modified-Since", date);
        }
        if remote.pass_credentials || same_host(&url, &remote.index_url) {
            for credential in &remote.credentials {
                let (name, value) = credential.header()?;
                request = request.header(name, value);
            }
        }
        let mut response = request.call().map_err(|e| describe(&url, remote, e))?;
        let status = response.status().as_u16();
        match status {
            200 => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let next = Validators {
                    etag: header("etag"),
                    last_modified: header("last-modified"),
                };
                let length = response.body().content_length();
                let read_error = |e: std::io::Error| match ureq::Error::from(e) {
                    ureq::Error::BodyExceedsLimit(_) => format!(
                        "{}: the index is larger than max_index_size ({max_index_size} bytes)",
                        shown(&url),
                    ),
                    e => describe(&url, remote, e),
                };
                let mut reader = response
                    .body_mut()
                    .with_config()
                    .limit(max_index_size)
                    .reader();
                // Room for the whole body at once, if it is read into memory, when its length is
                // known (not when it comes compressed) and within the limit: grown by doubling as
                // it is read, the vector would hold up to twice the index.
                let length = length
                    .filter(|&length| length <= max_index_size)
                    .and_then(|length| usize::try_from(length).ok())
                    .unwrap_or(0);
                return match spool(&mut reader, length, temporary_file).map_err(read_error)? {
                    Spool::File(file, digest) => Ok(Fetched::Spooled(file, digest, next)),
                    Spool::Memory(body) => Ok(Fetched::Body(body, next)),
                };
            }
            304 => return Ok(Fetched::NotModified),
            301 | 302 | 303 | 307 | 308 => {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{}: HTTP {status} without a Location", shown(&url)))?;
                let next = url.join(location).map_err(|e| {
                    format!("{}: HTTP {status} to a bad Location: {e}", shown(&url))
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(format!(
                        "{}: redirected to a {} URL",
                        shown(&url),
                        next.scheme()
                    ));
                }
                url = next;
            }
            401 | 403 => {
                return Err(format!(
                    "{}: HTTP {status} (check the repository's credentials)",
                    shown(&url)
                ))
            }
            _ => return Err(format!("{}: HTTP {status}", shown(&url))),
        }
    }
    Err(format!(
        "{}: more than {MAX_REDIRECTS} redirects",
        shown(&remote.index_url)
    ))
}

/// One line for a client error; a timeout names the `timeout` key and its value; a refused
/// certificate says what to do.
pub(crate) fn describe(url: &Url, remote: &Remote, error: ureq::Error) -> String {
    match &error {
        ureq::Error::Timeout(ureq::Timeout::Connect) => format!(
            "{}: no connection within connect_timeout ({} s)",
            shown(url),
            remote.connect_timeout.as_secs_f64()
        ),
        ureq::Error::Timeout(_) => timed_out(url, remote),
        _ => {
            let what = error.to_string();
            format!(
                "{}: {what}{}",
                shown(url),
                certificate_hint(&what, remote.ca_file.as_deref())
            )
        }
    }
}

/// The error of a request that did not finish within `timeout`.
pub(crate) fn timed_out(url: &Url, remote: &Remote) -> String {
    format!(
        "{}: timed out: no complete answer within timeout ({} s)",
        shown(url),
        remote.timeout.as_secs_f64()
    )
}

/// What to do about a certificate the TLS client refused, for the two refusals an operator with a
/// private repository meets first (rustls names them in the error's text).
pub(crate) fn certificate_hint(error: &str, ca_file: Option<&Path>) -> String {
    if error.contains("CaUsedAsEndEntity") {
        return "; the server presents a CA certificate as its own (a self-signed certificate made \
                by `openssl req -x509` is marked CA:TRUE unless told otherwise): give the server a \
                certificate issued by a CA and put that CA in ca_file, or make the self-signed \
                certificate with `-addext basicConstraints=critical,CA:FALSE`"
            .to_owned();
    }
    if error.contains("UnknownIssuer") {
        return match ca_file {
            Some(path) => format!(
                "; no certificate in ca_file {} signed the server's certificate: ca_file must hold \
                 the CA certificate that issued it (or the server's own self-signed certificate, \
                 when that is not marked as a CA)",
                path.display()
            ),
            None => "; the system's CA store does not hold the CA that signed the server's \
                     certificate: set ca_file to that CA's certificate"
                .to_owned(),
        };
    }
    String::new()
}

/// A refresh interval with up to ±10% of jitter, so that many sources started together do not
/// refresh together.
pub(crate) fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_body_is_copied_into_the_file_and_hashed() {
        use sha2::{Digest, Sha256};
        let text = body(200_000);
        let Spool::File(mut file, digest) = spool(&mut &text[..], 0, tempfile::tempfile).unwrap()
        else {
            panic!("a temporary file was made");
        };
        let mut copy = Vec::new();
        file.read_to_end(&mut copy).unwrap();
        assert_eq!(copy, text);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&text)));
    }

    #[test]
    fn without_a_writable_file_the_body_is_read_into_memory() {
        let text = body(200_000);
        // No file at all.
        let Spool::Memory(bytes) = spool(&mut &text[..], text.len(), || {
            Err(std::io::Error::other("no TMPDIR"))
        })
        .unwrap() else {
            panic!("read into memory");
        };
        assert_eq!(bytes, text);
        // A file that takes no writes (opened for reading only): what was read of the body so far
        // is kept, and the rest read after it.
        let named = tempfile::NamedTempFile::new().unwrap();
        let path = named.path().to_owned();
        let Spool::Memory(bytes) = spool(&mut &text[..], 0, || std::fs::File::open(&path)).unwrap()
        else {
            panic!("read into memory");
        };
        assert_eq!(bytes, text);
    }

    #[test]
    fn hosts_compare_without_scheme() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_host(
            &u("https://a.example/x"),
            &u("https://a.example:443/y")
        ));
        assert!(!same_host(
            &u("https://a.example/x"),
            &u("https://b.example/x")
        ));
        assert!(!same_host(
            &u("http://127.0.0.1:1/"),
            &u("http://127.0.0.1:2/")
        ));
        assert!(!same_host(
            &u("http://127.0.0.1:1/"),
            &u("http://localhost:1/")
        ));
    }

    #[test]
    fn refused_certificates_say_what_to_do() {
        let ca_used = "io: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        assert!(certificate_hint(ca_used, Some(Path::new("ca.pem")))
            .starts_with("; the server presents a CA certificate as its own"));
        let unknown = "io: invalid peer certificate: UnknownIssuer";
        assert!(
            certificate_hint(unknown, Some(Path::new("/etc/ca.pem"))).starts_with(
                "; no certificate in ca_file /etc/ca.pem signed the server's certificate"
            )
        );
        assert!(certificate_hint(unknown, None).starts_with("; the system's CA store"));
        assert_eq!(certificate_hint("HTTP 404", None), "");
    }

    #[test]
    fn shown_urls_lose_queries() {
        let u = Url::parse("https://a.example/index.yaml?token=s3cret").unwrap();
        assert_eq!(shown(&u), "https://a.example/index.yaml");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }
}
