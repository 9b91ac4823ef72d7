//! The plugin's configuration, checked key by key so that every error names the key at fault.
//!
//! Secrets (passwords, tokens, header values) are never part of the configuration itself: the
//! configuration names the environment variable or the file that holds each one, and the value is
//! read when a request is made. Neither the value nor anything derived from it is ever put into an
//! error or a log line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Map, Value};
use tributary_plugin_api::{resolve_path, PluginError};
use url::Url;

/// One configured repository: its name and where its index is read from.
#[derive(Debug, Clone)]
pub(crate) struct Repository {
    pub name: String,
    pub location: Location,
    pub limits: Limits,
}

/// What one repository's index may cost, whatever it is read from. With the defaults, one
/// repository's index cannot take more than the memory figure the README gives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most bytes of an index read (of a local file, an HTTP body once decompressed, or the
    /// document an OCI refresh writes).
    pub max_index_size: u64,
    /// The most charts an index may have; an index with more is refused whole.
    pub max_charts: usize,
    /// The most versions an index may have, every chart together; likewise.
    pub max_versions: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A local `index.yaml`, read again whenever its modification time or size changes.
    File(PathBuf),
    /// A repository served over HTTP(S), refreshed in the background.
    Http(Box<Remote>),
}

/// How a remote repository is fetched.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// The URL of the index itself.
    pub index_url: Url,
    /// The repository URL, ending with `/`: relative chart URLs resolve against it.
    pub base_url: Url,
    pub credentials: Vec<Credential>,
    /// Send the credentials to other hosts too when the repository redirects there.
    pub pass_credentials: bool,
    /// PEM certificates trusted instead of the system's CA store: the CA that issued the server's
    /// certificate (a self-signed server certificate only when it is not marked as a CA).
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_tls_verify: bool,
    pub refresh_interval: Duration,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// For an `oci://` repository: where its charts are (`index_url` is then the registry's base).
    pub oci: Option<crate::oci::OciTarget>,
}

/// Where a secret is read from. Its value is read on every use, so a rotated token is picked up
/// at the next refresh.
#[derive(Debug, Clone)]
pub(crate) enum Secret {
    /// A value written in the configuration (a user name only: never a password).
    Plain(String),
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// The secret's value; the error names the variable or the file, never a value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Plain(value) => Ok(value.clone()),
            Secret::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(value),
                Ok(_) => Err(format!("environment variable {var} is empty")),
                Err(_) => Err(format!("environment variable {var} is not set")),
            },
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

/// One set of credentials, sent as a request header.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    Basic { username: Secret, password: Secret },
    Bearer(Secret),
    Header { name: String, value: Secret },
}

impl Credential {
    /// The header this credential adds: `(name, value)`.
    pub fn header(&self) -> Result<(String, String), String> {
        use base64::Engine as _;
        Ok(match self {
            Credential::Basic { username, password } => {
                let pair = format!("{}:{}", username.read()?, password.read()?);
                (
                    "Authorization".to_owned(),
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                )
            }
            Credential::Bearer(token) => (
                "Authorization".to_owned(),
                format!("Bearer {}", token.read()?),
            ),
            Credential::Header { name, value } => (name.clone(), value.read()?),
        })
    }
}

/// Defaults for remote repositories.
pub(crate) const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_INDEX_SIZE: u64 = 64 << 20;
pub(crate) const DEFAULT_MAX_CHARTS: usize = 20_000;
pub(crate) const DEFAULT_MAX_VERSIONS: usize = 200_000;
/// Defaults for OCI repositories: tags listed for one chart, tags listed in one refresh of the
/// repository (semantic versions or not), and pages of lists followed in one refresh.
pub(crate) const DEFAULT_MAX_TAGS_PER_CHART: usize = 10_000;
pub(crate) const DEFAULT_MAX_TAGS: usize = 20_000;
pub(crate) const DEFAULT_MAX_LIST_PAGES: usize = 1_000;

/// The top level, read by the shared helper ([`tributary_plugin_api::config::parse`]: the host's
/// `$` keys ignored, an unknown key named); each repository table is then checked key by key below,
/// since its keys depend on one another (remote-only keys, secrets given one way only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    repositories: Option<Value>,
}

fn invalid(message: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_config(format!("helm config: {message}"))
}

/// The keys a repository table may have; those after `max_versions` apply to remote repositories
/// only, and the last five to `oci://` repositories only.
const KEYS: &[&str] = &[
    "name",
    "url",
    "max_index_size",
    "max_charts",
    "max_versions",
    "username",
    "username_env",
    "password_env",
    "password_file",
    "token_env",
    "token_file",
    "headers",
    "pass_credentials",
    "ca_file",
    "insecure_skip_tls_verify",
    "refresh_interval",
    "connect_timeout",
    "timeout",
    "charts",
    "plain_http",
    "max_tags_per_chart",
    "max_tags",
    "max_list_pages",
];
/// Where the remote-only keys start in [`KEYS`].
const REMOTE_KEYS: usize = 5;
/// Where the `oci://`-only keys start in [`KEYS`].
const OCI_KEYS: usize = KEYS.len() - 5;

/// Parses the JSON configuration into the list of repositories, relative paths resolved against
/// `base_dir` (the host's [`tributary_plugin_api::Host::base_dir`]).
pub(crate) fn parse(config: &str, base_dir: Option<&Path>) -> Result<Vec<Repository>, PluginError> {
    let config: Config = tributary_plugin_api::config::parse("helm", config)?;
    const SHAPE: &str =
        "a list of { name, url } tables, url a local index.yaml or an http(s) repository URL";
    let list = match config.repositories {
        None | Some(Value::Null) => {
            return Err(invalid(format_args!("repositories is missing ({SHAPE})")))
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format_args!("repositories must be {SHAPE}"))),
    };
    if list.is_empty() {
        return Err(invalid(format_args!("repositories is empty; give {SHAPE}")));
    }

    let mut repositories: Vec<Repository> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let key = format!("repositories[{i}]");
        let Value::Object(table) = entry else {
            return Err(invalid(format_args!(
                "{key} must be a {{ name, url }} table"
            )));
        };
        if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(invalid(format_args!(
                "{key}.{unknown} is not a known key (expected one of {})",
                KEYS.join(", ")
            )));
        }
        let name = string_field(table.get("name"), &key, "name")?;
        if name.contains('/') {
            return Err(invalid(format_args!(
                "{key}.name {name:?} must not contain '/' (it prefixes chart identifiers)"
            )));
        }
        if let Some(first) = repositories.iter().position(|r| r.name == name) {
            return Err(invalid(format_args!(
                "{key}.name {name:?} is already used by repositories[{first}]"
            )));
        }
        let url = string_field(table.get("url"), &key, "url")?;
        let location = match scheme(url) {
            None | Some("file") => {
                if let Some(remote_key) = table
                    .keys()
                    .find(|k| KEYS[REMOTE_KEYS..].contains(&k.as_str()))
                {
                    return Err(invalid(format_args!(
                        "{key}.{remote_key} applies to http(s) repositories only; \
                         {key}.url {url:?} is a local file"
                    )));
                }
                let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
                if path.as_os_str().is_empty() {
                    return Err(invalid(format_args!("{key}.url {url:?} names no file")));
                }
                Location::File(resolve_path(base_dir, path))
            }
            Some(scheme @ ("http" | "https" | "oci")) => {
                if scheme != "oci" {
                    if let Some(oci_key) = KEYS[OCI_KEYS..].iter().find(|k| table.contains_key(**k))
                    {
                        return Err(invalid(format_args!(
                            "{key}.{oci_key} applies to oci:// repositories only"
                        )));
                    }
                }
                Location::Http(Box::new(remote(table, &key, name, url, base_dir)?))
            }
            Some(_) => {
                return Err(invalid(format_args!(
                    "{key}.url {url:?} of repository {name:?} is not supported: give a local \
                     path, a file:// URL, an http(s):// URL or an oci:// registry namespace"
                )));
            }
        };
        let limits = Limits {
            max_index_size: count(table, &key, "max_index_size")?
                .map_or(DEFAULT_MAX_INDEX_SIZE, |n| n as u64),
            max_charts: count(table, &key, "max_charts")?.unwrap_or(DEFAULT_MAX_CHARTS),
            max_versions: count(table, &key, "max_versions")?.unwrap_or(DEFAULT_MAX_VERSIONS),
        };
        repositories.push(Repository {
            name: name.to_owned(),
            location,
            limits,
        });
    }
    Ok(repositories)
}

/// The remote settings of a repository table whose `url` is http(s).
fn remote(
    table: &Map<String, Value>,
    key: &str,
    name: &str,
    url: &str,
    base_dir: Option<&Path>,
) -> Result<Remote, PluginError> {
    let parsed = Url::parse(url).map_err(|e| {
        invalid(format_args!(
            "{key}.url of repository {name:?} is not a URL: {e}"
        ))
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(format_args!(
            "{key}.url of repository {name:?} carries credentials; give them with \
             username/password_env/password_file instead, so that they are never logged"
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format_args!("{key}.url {url:?} names no host")));
    }
    let (index_url, base_url, oci) = if parsed.scheme() == "oci" {
        let (registry, target) = oci_target(table, key, &parsed)?;
        let scheme = if optional_bool(table, key, "plain_http")?.unwrap_or(false) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{registry}/"))
            .map_err(|e| invalid(format_args!("{key}.url {url:?}: {e}")))?;
        (base.clone(), base, Some(target))
    } else {
        let (index, base) = index_and_base(parsed);
        (index, base, None)
    };

    let path = |field: &str| -> Result<Option<PathBuf>, PluginError> {
        Ok(optional_string(table, key, field)?.map(|p| resolve_path(base_dir, Path::new(p))))
    };
    let secret = |env: &str, file: &str| -> Result<Option<Secret>, PluginError> {
        match (optional_string(table, key, env)?, path(file)?) {
            (Some(_), Some(_)) => Err(invalid(format_args!(
                "{key}: give {env} or {file}, not both"
            ))),
            (Some(var), None) => Ok(Some(Secret::Env(var.to_owned()))),
            (None, Some(file)) => Ok(Some(Secret::File(file))),
            (None, None) => Ok(None),
        }
    };

    let mut credentials = Vec::new();
    let username = match (
        optional_string(table, key, "username")?,
        optional_string(table, key, "username_env")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(format_args!(
                "{key}: give username or username_env, not both"
            )))
        }
        (Some(user), None) => Some(Secret::Plain(user.to_owned())),
        (None, Some(var)) => Some(Secret::Env(var.to_owned())),
        (None, None) => None,
    };
    let password = secret("password_env", "password_file")?;
    match (username, password) {
        (Some(username), Some(password)) => {
            credentials.push(Credential::Basic { username, password })
        }
        (Some(_), None) => {
            return Err(invalid(format_args!(
                "{key}: username needs password_env or password_file"
            )))
        }
        (None, Some(_)) => {
            return Err(invalid(format_args!(
                "{key}: password_env/password_file needs username or username_env"
            )))
        }
        (None, None) => {}
    }
    if let Some(token) = secret("token_env", "token_file")? {
        if !credentials.is_empty() {
            return Err(invalid(format_args!(
                "{key}: give basic auth (username, password) or a bearer token, not both"
            )));
        }
        credentials.push(Credential::Bearer(token));
    }
    match table.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (header, source) in headers {
                let field = format!("{key}.headers.{header}");
                if ureq::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(invalid(format_args!("{field}: not a valid header name")));
                }
                let value = match source {
                    Value::Object(source) => {
                        match (source.get("env"), source.get("file"), source.len()) {
                            (Some(Value::String(var)), None, 1) if !var.is_empty() => {
                                Secret::Env(var.clone())
                            }
                            (None, Some(Value::String(file)), 1) if !file.is_empty() => {
                                Secret::File(resolve_path(base_dir, Path::new(file)))
                            }
                            _ => {
                                return Err(invalid(format_args!(
                                    "{field} must be {{ env = \"VAR\" }} or {{ file = \"path\" }}"
                                )))
                            }
                        }
                    }
                    _ => {
                        return Err(invalid(format_args!(
                            "{field} must be {{ env = \"VAR\" }} or {{ file = \"path\" }} \
                             (header values are secrets: never written in the configuration)"
                        )))
                    }
                };
                credentials.push(Credential::Header {
                    name: header.clone(),
                    value,
                });
            }
        }
        Some(_) => {
            return Err(invalid(format_args!(
                "{key}.headers must be a table of header name = {{ env | file }}"
            )))
        }
    }
    // Every secret must be readable now: a typo is a configuration error, not a refresh failure.
    for credential in &credentials {
        credential
            .header()
            .map_err(|e| invalid(format_args!("{key} (repository {name:?}): {e}")))?;
    }

    Ok(Remote {
        index_url,
        base_url,
        credentials,
        pass_credentials: optional_bool(table, key, "pass_credentials")?.unwrap_or(false),
        ca_file: path("ca_file")?,
        insecure_skip_tls_verify: optional_bool(table, key, "insecure_skip_tls_verify")?
            .unwrap_or(false),
        refresh_interval: seconds(table, key, "refresh_interval")?
            .unwrap_or(DEFAULT_REFRESH_INTERVAL),
        connect_timeout: seconds(table, key, "connect_timeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        timeout: seconds(table, key, "timeout")?.unwrap_or(DEFAULT_TIMEOUT),
        oci,
    })
}

/// The registry (`host[:port]`) and the target of an `oci://registry/namespace` URL.
fn oci_target(
    table: &Map<String, Value>,
    key: &str,
    url: &Url,
) -> Result<(String, crate::oci::OciTarget), PluginError> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format_args!(
            "{key}.url {:?}: an oci:// URL has no query or fragment",
            url.as_str()
        )));
    }
    let host = url.host_str().unwrap_or_default();
    let registry = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let namespace = url.path().trim_matches('/').to_owned();
    let charts = match table.get("charts") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if !list.is_empty() => Some(
            list.iter()
                .enumerate()
                .map(|(i, chart)| match chart {
                    Value::String(c) if !c.is_empty() && !c.contains('/') => Ok(c.clone()),
                    _ => Err(invalid(format_args!(
                        "{key}.charts[{i}] must be a chart name (a non-empty string without '/')"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(invalid(format_args!(
                "{key}.charts must be a non-empty list of chart names (leave it out to list \
                 the namespace through the registry's catalog)"
            )))
        }
    };
    Ok((
        registry.clone(),
        crate::oci::OciTarget {
            registry,
            namespace,
            charts,
            max_tags_per_chart: count(table, key, "max_tags_per_chart")?
                .unwrap_or(DEFAULT_MAX_TAGS_PER_CHART),
            max_tags: count(table, key, "max_tags")?.unwrap_or(DEFAULT_MAX_TAGS),
            max_list_pages: count(table, key, "max_list_pages")?.unwrap_or(DEFAULT_MAX_LIST_PAGES),
        },
    ))
}

/// The index URL and the repository URL (ending with `/`) of a configured URL: a URL whose last
/// segment names a `.yaml`, `.yml` or `.json` file is the index itself; any other is the repository,
/// whose index is `index.yaml` beneath it, as Helm reads it.
pub(crate) fn index_and_base(mut url: Url) -> (Url, Url) {
    url.set_fragment(None);
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("")
        .to_ascii_lowercase();
    if [".yaml", ".yml", ".json"].iter().any(|e| last.ends_with(e)) {
        let base = url.join("./").unwrap_or_else(|_| url.clone());
        (url, base)
    } else {
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let index = url.join("index.yaml").unwrap_or_else(|_| url.clone());
        (index, url)
    }
}

/// The scheme of `url` when it has one (`https` in `https://...`).
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some(scheme)
}

fn string_field<'a>(
    value: Option<&'a Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, PluginError> {
    match value {
        None | Some(Value::Null) => Err(invalid(format_args!("{key}.{field} is missing"))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(invalid(format_args!("{key}.{field} is empty")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format_args!("{key}.{field} must be a string"))),
    }
}

fn optional_string<'a>(
    table: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, PluginError> {
    match table.get(field) {
        None | Some(Value::Null) => Ok(None),
        value => string_field(value, key, field).map(Some),
    }
}

fn optional_bool(
    table: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<bool>, PluginError> {
    match table.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format_args!("{key}.{field} must be true or false"))),
    }
}

/// A limit given as a positive whole number.
fn count(table: &Map<String, Value>, key: &str, field: &str) -> Result<Option<usize>, PluginError> {
    match table.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| *n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid(format_args!(
                    "{key}.{field} must be a positive whole number"
                ))
            }),
    }
}

/// A duration given as a positive number of seconds (fractions allowed).
fn seconds(
    table: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<Duration>, PluginError> {
    match table.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                invalid(format_args!(
                    "{key}.{field} must be a positive number of seconds"
                ))
            }),
    }
}
