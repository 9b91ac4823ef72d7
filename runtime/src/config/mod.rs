//! The server configuration: the TOML file, its validation, and the plain [`Config`] struct the rest of
//! the host (and the tests) work with.
//!
//! Everything is parsed and checked before anything is bound or loaded, and every error names the key
//! that is wrong.

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

mod server;

pub use server::{
    default_max_connections, open_file_limit, validate_identities, AuthSettings, ClientAuth,
    IdentitySettings, TlsSettings, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_REQUEST_BODY_TIMEOUT, DEFAULT_STALL_TIMEOUT, HANDSHAKE_TIMEOUT, RESERVED_DESCRIPTORS,
};

/// Calls in flight per source when the configuration says nothing.
pub const DEFAULT_MAX_CALLS: usize = 64;
/// The first back-off after a timeout when the configuration says nothing.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// The call limits of one source (`max_calls_per_source`, `unhealthy_backoff_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub max_calls: usize,
    pub backoff: Duration,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_calls: DEFAULT_MAX_CALLS,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// The address served when neither the file nor the command line names one.
/// A page's byte budget when the configuration says nothing: below the 4 MiB that gRPC clients
/// accept by default, with room for the response's other fields.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;
/// The least `max_page_bytes` accepts: one item of maximal size always fits.
pub const MIN_PAGE_BYTES: usize = 1024 * 1024;
/// The most `max_page_bytes` accepts.
pub const MAX_PAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// The most `max_calls_per_source` accepts: each call in flight holds one of the source's threads.
pub const MAX_CALLS_PER_SOURCE: usize = 256;
/// The most a duration key in milliseconds accepts (one hour); larger values overflow deadlines.
pub const MAX_MILLIS: u64 = 3_600_000;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default `max_requests_in_flight`.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 1024;
/// Default `request_queue_ms`.
pub const DEFAULT_REQUEST_QUEUE_WAIT: Duration = Duration::from_millis(1000);
/// Default `reload_debounce_ms`.
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);
/// Default `max_retired_libraries`.
pub const DEFAULT_MAX_RETIRED_LIBRARIES: usize = 32;
/// How long one plugin call may take before the source counts as unavailable for that request.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_searches_in_flight`: the CPUs this process may use (asked once: the answer reads
/// cgroup files).
pub fn default_max_searches_in_flight() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Default `request_timeout_ms`: the longest one list or detail request runs, whatever the client's
/// deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub plugin_dir: PathBuf,
    /// The folder relative paths resolve against: the config file's folder. Passed to plugins as
    /// `$base_dir` in every source configuration.
    pub base_dir: PathBuf,
    pub sources: Vec<SourceConfig>,
    pub on_source_error: OnSourceError,
    pub source_timeout: Duration,
    /// Calls in flight per source, and the first back-off after a source timeout.
    pub call_limits: CallLimits,
    /// A page's byte budget (`max_page_bytes`): the page ends early, with a token, before the next
    /// item would take it past this.
    pub max_page_bytes: usize,
    /// Refuse plugin files and a plugin directory that others can write (the
    /// loader's `insecure_reason`). On unless `allow_insecure_plugin_dir = true`.
    pub strict_permissions: bool,
    /// Where Prometheus metrics are served (`GET /metrics`); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the listener (`[tls]`), paths resolved against `base_dir`.
    pub tls: Option<TlsSettings>,
    /// Who may call, and what each caller sees (`[auth]`); `None`: everyone sees everything.
    pub auth: Option<AuthSettings>,
    /// The log filter (`RUST_LOG` syntax, e.g. `info` or `warn,tributary_host=debug`) when `RUST_LOG`
    /// is not set; `None`: `info` for `serve`, `warn` for the other commands.
    pub log_level: Option<String>,
    /// `max_requests_in_flight`: list and detail requests running at once; more wait
    /// `request_queue_ms` for a slot, then fail with RESOURCE_EXHAUSTED.
    pub max_requests_in_flight: usize,
    pub request_queue_wait: Duration,
    /// `idle_timeout_ms`: how long a connection may go without a request before it is closed.
    pub idle_timeout: Duration,
    /// `stall_timeout_ms`: how long a response may wait for its client to take any of it before
    /// the connection is closed.
    pub stall_timeout: Duration,
    /// `request_body_timeout_ms`: how long after a request started its body may still arrive.
    pub request_body_timeout: Duration,
    /// `max_streams_per_connection`: HTTP/2 calls open at once on one connection.
    pub max_streams_per_connection: u32,
    /// `max_searches_in_flight`: list requests with a query running at once; more wait like
    /// requests over `max_requests_in_flight` do.
    pub max_searches_in_flight: usize,
    /// `handshake_timeout_ms`: how long a new connection may take to send its first byte
    /// (plaintext) or to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// `request_timeout_ms`: the longest a list or detail request runs (a client's shorter deadline
    /// cuts it shorter).
    pub request_timeout: Duration,
    /// `cors_allowed_origins`: web origins whose pages may call the API (gRPC-web with CORS).
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    /// `max_connections`: the most connections open at once (the server's listener); by default
    /// 10000 or the open-file limit minus a reserve, whichever is lower.
    pub max_connections: usize,
    /// `watch`: reload when a library in the plugin directory or the config file changes (see
    /// the server's reload); SIGHUP and the Reload RPC reload either way.
    pub watch: bool,
    /// `web_ui`: serve the catalog web page at `/`; on by default.
    pub web_ui: bool,
    /// `inline_calls`: call sources that answer in microseconds in place on the server's own
    /// threads, under a watchdog (calls in place); on by default.
    pub inline_calls: bool,
    /// `reload_debounce_ms`: how long the directory and the config file must stay unchanged before
    /// the watcher reloads.
    pub reload_debounce: Duration,
    /// `max_retired_libraries`: past this many replaced or removed libraries (still mapped), each
    /// reload warns that a restart gives their memory back.
    pub max_retired_libraries: usize,
    /// `start_degraded`: start serving even when a `[[source]]` cannot be built at start (its plugin
    /// rejected its config, its library was rejected). Off by default: such a source stops the start
    /// with a configuration error naming it.
    pub start_degraded: bool,
}

/// One `[[source]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub plugin: String,
    /// The `config` table as a JSON object.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// `isolation = "process"`: run the source in a child process (a runner);
    /// `None` runs it in the server's process (`"in-process"`, the default).
    pub isolation: Option<ProcessIsolation>,
}

/// The settings of a source run with `isolation = "process"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessIsolation {
    /// `memory_limit_mb`: the runner's address-space limit (`RLIMIT_AS`), in MiB.
    pub memory_limit_mb: Option<u64>,
    /// `env_remove`: environment variables the runner does not inherit.
    pub env_remove: Vec<String>,
    /// `allow_read`: folders or files (relative to the config file's folder) the runner may read
    /// besides its library, that folder and the system folders (the
    /// runner's Landlock rules).
    pub allow_read: Vec<PathBuf>,
    /// `allow_write`: folders or files the runner may also write, create and remove files in.
    pub allow_write: Vec<PathBuf>,
}

/// `isolation` of a `[[source]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Isolation {
    #[default]
    InProcess,
    Process,
}

/// What a list request does when one of its sources fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSourceError {
    /// Serve the page from the other sources and name the failed one in `failed_sources`.
    #[default]
    Skip,
    /// Fail the whole request with UNAVAILABLE naming the source.
    Fail,
}

/// A configuration error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}:\n{message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    on_source_error: OnSourceError,
    source_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    stall_timeout_ms: Option<u64>,
    request_body_timeout_ms: Option<u64>,
    max_streams_per_connection: Option<u32>,
    max_searches_in_flight: Option<usize>,
    max_calls_per_source: Option<usize>,
    #[serde(default)]
    allow_insecure_plugin_dir: bool,
    unhealthy_backoff_ms: Option<u64>,
    metrics_listen: Option<String>,
    tls: Option<FileTls>,
    auth: Option<FileAuth>,
    max_page_bytes: Option<usize>,
    log_level: Option<String>,
    watch: Option<bool>,
    web_ui: Option<bool>,
    inline_calls: Option<bool>,
    max_connections: Option<usize>,
    max_requests_in_flight: Option<usize>,
    request_queue_ms: Option<u64>,
    cors_allowed_origins: Option<Vec<String>>,
    reload_debounce_ms: Option<u64>,
    max_retired_libraries: Option<usize>,
    start_degraded: Option<bool>,
    #[serde(default)]
    source: Vec<FileSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    tokens_file: Option<PathBuf>,
    #[serde(default)]
    identity: Vec<IdentitySettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth: ClientAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    name: String,
    plugin: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    isolation: Isolation,
    memory_limit_mb: Option<u64>,
    env_remove: Option<Vec<String>>,
    allow_read: Option<Vec<PathBuf>>,
    allow_write: Option<Vec<PathBuf>>,
}

/// Overrides from the command line; `None` keeps the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub plugin_dir: Option<PathBuf>,
}

/// `value` when it lies in `range` (both ends included), `default` when the file leaves the key out;
/// otherwise the message every number key gives: the value and the range to give.
fn bounded(value: Option<u64>, range: RangeInclusive<u64>, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "{n} is out of range: give {} to {}",
            range.start(),
            range.end()
        )),
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Config {
    /// Every key at its default, as a file holding only `plugin_dir = "."` sets it: no sources, the
    /// plugin directory and the base folder the current one. One definition of the defaults: the
    /// parser's.
    fn default() -> Config {
        Config::parse(
            "plugin_dir = \".\"\n",
            Path::new("(defaults)"),
            Path::new("."),
            &Overrides::default(),
        )
        .expect("the defaults are a valid configuration")
    }
}

impl Config {
    /// Reads and validates a config file, applying command-line overrides.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = read_regular_file(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let mut config = Config::parse(&text, path, &base_dir, overrides)?;
        config.plugin_dir = without_dot_dot(&config.plugin_dir);
        Ok(config)
    }

    /// Parses and validates config text. `path` is used in messages only.
    pub fn parse(
        text: &str,
        path: &Path,
        base_dir: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(&e, text),
        })?;

        let (listen_key, listen) = match (&overrides.listen, &file.listen) {
            (Some(l), _) => ("--listen", l.as_str()),
            (None, Some(l)) => ("listen", l.as_str()),
            (None, None) => ("listen", DEFAULT_LISTEN),
        };
        let listen: SocketAddr = listen.parse().map_err(|e| {
            invalid(
                listen_key.to_owned(),
                format!("{listen:?} is not an IP address and port ({e})"),
            )
        })?;

        // A command-line path is relative to the working directory; a file path to the file's folder.
        let plugin_dir = match (&overrides.plugin_dir, &file.plugin_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => base_dir.join(dir),
            (None, None) => return Err(invalid(
                "plugin_dir".into(),
                "missing: name the folder that holds the plugin libraries (or pass --plugin-dir)"
                    .into(),
            )),
        };

        let metrics_listen = match &file.metrics_listen {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "metrics_listen".to_owned(),
                    format!("{text:?} is not an IP address and port ({e})"),
                )
            })?),
        };

        let tls = match file.tls {
            None => None,
            Some(t) => {
                if t.client_auth != ClientAuth::None && t.client_ca_file.is_none() {
                    return Err(invalid(
                        "tls.client_ca_file".into(),
                        "missing: client_auth asks for client certificates, name the CA bundle that verifies them".into(),
                    ));
                }
                Some(TlsSettings {
                    cert_file: base_dir.join(t.cert_file),
                    key_file: base_dir.join(t.key_file),
                    client_ca_file: t.client_ca_file.map(|p| base_dir.join(p)),
                    client_auth: t.client_auth,
                })
            }
        };

        // Every number is checked against its range by one rule, naming the key.
        let bounded = |key: &str, value, range, default| {
            bounded(value, range, default).map_err(|message| invalid(key.into(), message))
        };
        // Durations in milliseconds: at least 1, at most an hour (larger values overflow deadlines).
        let millis = |key: &str, value: Option<u64>, default: Duration| {
            bounded(key, value, 1..=MAX_MILLIS, millis_of(default)).map(Duration::from_millis)
        };
        let source_timeout = millis(
            "source_timeout_ms",
            file.source_timeout_ms,
            DEFAULT_SOURCE_TIMEOUT,
        )?;
        let request_timeout = millis(
            "request_timeout_ms",
            file.request_timeout_ms,
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        let idle_timeout = millis(
            "idle_timeout_ms",
            file.idle_timeout_ms,
            DEFAULT_IDLE_TIMEOUT,
        )?;
        let handshake_timeout = millis(
            "handshake_timeout_ms",
            file.handshake_timeout_ms,
            HANDSHAKE_TIMEOUT,
        )?;
        let stall_timeout = millis(
            "stall_timeout_ms",
            file.stall_timeout_ms,
            DEFAULT_STALL_TIMEOUT,
        )?;
        let request_body_timeout = millis(
            "request_body_timeout_ms",
            file.request_body_timeout_ms,
            DEFAULT_REQUEST_BODY_TIMEOUT,
        )?;
        let max_streams_per_connection = bounded(
            "max_streams_per_connection",
            file.max_streams_per_connection.map(u64::from),
            1..=10_000,
            u64::from(DEFAULT_MAX_STREAMS_PER_CONNECTION),
        )? as u32;

        let mut call_limits = CallLimits::default();
        call_limits.max_calls = bounded(
            "max_calls_per_source",
            file.max_calls_per_source.map(as_u64),
            1..=MAX_CALLS_PER_SOURCE as u64,
            call_limits.max_calls as u64,
        )? as usize;
        call_limits.backoff = millis(
            "unhealthy_backoff_ms",
            file.unhealthy_backoff_ms,
            call_limits.backoff,
        )?;

        let mut cors_allowed_origins = Vec::new();
        for (i, origin) in file.cors_allowed_origins.iter().flatten().enumerate() {
            let valid = url::Url::parse(origin).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
            });
            match (valid, http::HeaderValue::from_str(origin)) {
                (Some(_), Ok(value)) => cors_allowed_origins.push(value),
                _ => {
                    return Err(invalid(
                        format!("cors_allowed_origins[{i}]"),
                        format!("{origin:?} is not an origin such as \"https://catalog.example.com\" (scheme, host, optional port; no path)"),
                    ))
                }
            }
        }
        let count = |key: &str, value: Option<usize>, range: RangeInclusive<usize>, default| {
            bounded(
                key,
                value.map(as_u64),
                as_u64(*range.start())..=as_u64(*range.end()),
                as_u64(default),
            )
            .map(|n| n as usize)
        };
        let max_requests_in_flight = count(
            "max_requests_in_flight",
            file.max_requests_in_flight,
            1..=100_000,
            DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        )?;
        // 0: a request that finds every slot taken fails at once.
        let request_queue_wait = Duration::from_millis(bounded(
            "request_queue_ms",
            file.request_queue_ms,
            0..=MAX_MILLIS,
            millis_of(DEFAULT_REQUEST_QUEUE_WAIT),
        )?);
        let max_searches_in_flight = count(
            "max_searches_in_flight",
            file.max_searches_in_flight,
            1..=100_000,
            default_max_searches_in_flight(),
        )?;
        let max_connections = count(
            "max_connections",
            file.max_connections,
            1..=1_000_000,
            default_max_connections(),
        )?;
        let reload_debounce = Duration::from_millis(bounded(
            "reload_debounce_ms",
            file.reload_debounce_ms,
            10..=60_000,
            millis_of(DEFAULT_RELOAD_DEBOUNCE),
        )?);
        let max_retired_libraries = count(
            "max_retired_libraries",
            file.max_retired_libraries,
            0..=100_000,
            DEFAULT_MAX_RETIRED_LIBRARIES,
        )?;
        let max_page_bytes = count(
            "max_page_bytes",
            file.max_page_bytes,
            MIN_PAGE_BYTES..=MAX_PAGE_BYTES_LIMIT,
            DEFAULT_MAX_PAGE_BYTES,
        )?;

        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut sources = Vec::with_capacity(file.source.len());
        for (i, s) in file.source.iter().enumerate() {
            if s.name.is_empty() {
                return Err(invalid(
                    format!("source[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if s.name.chars().any(char::is_control) {
                return Err(invalid(
                    format!("source[{i}].name"),
                    format!("{:?} contains control characters", s.name),
                ));
            }
            if s.plugin.is_empty() {
                return Err(invalid(
                    format!("source[{i}].plugin"),
                    "must not be empty".into(),
                ));
            }
            if let Some(first) = seen.insert(&s.name, i) {
                return Err(invalid(
                    format!("source[{i}].name"),
                    format!("{:?} is already the name of source[{first}]", s.name),
                ));
            }
            let config = match &s.config {
                None => serde_json::Map::new(),
                Some(table) => match serde_json::to_value(table) {
                    Ok(serde_json::Value::Object(map)) => map,
                    Ok(_) => unreachable!("a TOML table serializes to a JSON object"),
                    Err(e) => {
                        return Err(invalid(
                            format!("source[{i}].config"),
                            format!("cannot be expressed as JSON: {e}"),
                        ))
                    }
                },
            };
            let isolation = match s.isolation {
                Isolation::Process => Some(ProcessIsolation {
                    memory_limit_mb: s.memory_limit_mb,
                    env_remove: s.env_remove.clone().unwrap_or_default(),
                    allow_read: s
                        .allow_read
                        .iter()
                        .flatten()
                        .map(|p| base_dir.join(p))
                        .collect(),
                    allow_write: s
                        .allow_write
                        .iter()
                        .flatten()
                        .map(|p| base_dir.join(p))
                        .collect(),
                }),
                Isolation::InProcess => {
                    if s.memory_limit_mb.is_some()
                        || s.env_remove.is_some()
                        || s.allow_read.is_some()
                        || s.allow_write.is_some()
                    {
                        return Err(invalid(
                            format!("source[{i}].isolation"),
                            "memory_limit_mb, env_remove, allow_read and allow_write need isolation = \"process\"".into(),
                        ));
                    }
                    None
                }
            };
            if s.memory_limit_mb == Some(0) {
                return Err(invalid(
                    format!("source[{i}].memory_limit_mb"),
                    "must be at least 1".into(),
                ));
            }
            sources.push(SourceConfig {
                name: s.name.clone(),
                plugin: s.plugin.clone(),
                config,
                isolation,
            });
        }

        let auth = match file.auth {
            None => None,
            Some(a) => {
                let names: Vec<&str> = sources
                    .iter()
                    .map(|s: &SourceConfig| s.name.as_str())
                    .collect();
                validate_identities(&a.identity, &names)
                    .map_err(|(key, message)| invalid(key, message))?;
                if a.identity.is_empty() {
                    return Err(invalid(
                        "auth.identity".into(),
                        "missing: [auth] needs at least one [[auth.identity]]".into(),
                    ));
                }
                Some(AuthSettings {
                    tokens_file: a.tokens_file.map(|p| base_dir.join(p)),
                    identities: a.identity,
                })
            }
        };

        if let Some(level) = &file.log_level {
            tracing_subscriber::EnvFilter::builder()
                .parse(level)
                .map_err(|e| {
                    invalid(
                        "log_level".into(),
                        format!("{level:?} is not a log filter such as \"info\" or \"warn,tributary_host=debug\" ({e})"),
                    )
                })?;
        }

        Ok(Config {
            listen,
            plugin_dir,
            base_dir: base_dir.to_path_buf(),
            sources,
            on_source_error: file.on_source_error,
            source_timeout,
            call_limits,
            max_page_bytes,
            strict_permissions: !file.allow_insecure_plugin_dir,
            metrics_listen,
            tls,
            auth,
            log_level: file.log_level,
            watch: file.watch.unwrap_or(true),
            web_ui: file.web_ui.unwrap_or(true),
            inline_calls: file.inline_calls.unwrap_or(true),
            max_connections,
            max_requests_in_flight,
            request_queue_wait,
            request_timeout,
            handshake_timeout,
            idle_timeout,
            stall_timeout,
            request_body_timeout,
            max_streams_per_connection,
            max_searches_in_flight,
            cors_allowed_origins,
            reload_debounce,
            max_retired_libraries,
            start_degraded: file.start_degraded.unwrap_or(false),
        })
    }
}

/// Reads a file that must be a regular file, without ever blocking in `open` (a FIFO put in the
/// config file's place would otherwise hold the reading thread until a writer appears).
pub fn read_regular_file(path: &Path) -> std::io::Result<String> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// `path` with each `folder/..` pair removed where `folder` is a real folder (not a symbolic link,
/// whose `..` is the link target's parent), so that logs and listings show
/// `/repo/target/release` rather than `/repo/examples/../target/release`.
fn without_dot_dot(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_)))
                    && std::fs::symlink_metadata(&out).is_ok_and(|m| m.is_dir()) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    out
}

/// The keys of the file's top level (outside every `[table]`) that hold a value rather than a
/// table, for the hint given when one of them is written below a table header, where TOML makes it
/// part of that table. Read from the parser's own field list, so that it cannot miss a key.
pub fn top_level_keys() -> Vec<&'static str> {
    /// A deserializer that only records the fields a struct asks for.
    struct Fields(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("field names only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = FileConfig::deserialize(&mut fields);
    fields
        .0
        .iter()
        .copied()
        .filter(|key| !["tls", "auth", "source"].contains(key))
        .collect()
}

/// The 1-based number of the first line that opens a table (`[tls]`, `[[source]]`, ...): top-level
/// keys go above it.
pub fn first_table_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with('['))
        .map(|i| i + 1)
}

/// The toml crate's message as it formats it (several lines: the position, the line quoted, a caret,
/// the reason), plus a hint when a top-level key was written inside a table.
fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let mut message = e.to_string().trim_end().to_owned();
    let misplaced = top_level_keys()
        .into_iter()
        .find(|key| e.message().contains(&format!("unknown field `{key}`")));
    if let (Some(key), Some(line)) = (misplaced, first_table_line(text)) {
        message.push_str(&format!(
            "\nhint: `{key}` is a top-level key; below a table header ([tls], [auth], [[source]], ...) TOML makes it part of that table. Move it above line {line}, the first table header."
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("t.toml"),
            Path::new("/etc/trib"),
            &Overrides::default(),
        )
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
            listen = "127.0.0.1:6000"
            plugin_dir = "plugins"
            on_source_error = "fail"
            source_timeout_ms = 250
            max_calls_per_source = 4
            unhealthy_backoff_ms = 500
            metrics_listen = "127.0.0.1:9464"
            log_level = "warn,tributary_host=debug"
            [[source]]
            name = "bitnami"
            plugin = "helm"
            config = { repositories = [{ name = "bitnami", url = "charts/i.yaml" }] }
            [[source]]
            name = "local"
            plugin = "catalog"
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.plugin_dir, Path::new("/etc/trib/plugins"));
        assert_eq!(c.on_source_error, OnSourceError::Fail);
        assert_eq!(c.source_timeout, Duration::from_millis(250));
        assert_eq!(
            c.call_limits,
            CallLimits {
                max_calls: 4,
                backoff: Duration::from_millis(500)
            }
        );
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log_level.as_deref(), Some("warn,tributary_host=debug"));
        assert_eq!(c.sources.len(), 2);
        assert_eq!(
            serde_json::Value::Object(c.sources[0].config.clone()),
            serde_json::json!({"repositories": [{"name": "bitnami", "url": "charts/i.yaml"}]})
        );
        assert!(c.sources[1].config.is_empty());
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse(
            "plugin_dir = \"/p\"",
            Path::new("t.toml"),
            Path::new("/x"),
            &Overrides {
                listen: Some("127.0.0.1:0".into()),
                plugin_dir: Some("rel".into()),
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.plugin_dir, Path::new("rel"));
        assert_eq!(c.source_timeout, DEFAULT_SOURCE_TIMEOUT);
        assert_eq!(c.on_source_error, OnSourceError::Skip);
        assert_eq!(c.stall_timeout, DEFAULT_STALL_TIMEOUT);
        assert_eq!(c.request_body_timeout, DEFAULT_REQUEST_BODY_TIMEOUT);
        assert_eq!(c.max_streams_per_connection, 100);
    }

    #[test]
    fn the_top_level_keys_are_the_parsers_own() {
        let keys = top_level_keys();
        for key in [
            "listen",
            "stall_timeout_ms",
            "request_body_timeout_ms",
            "max_streams_per_connection",
            "start_degraded",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert!(!keys.contains(&"source"), "{keys:?}");
        assert_eq!(keys.len(), 27, "{keys:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("plugin_dir = 'p'\nlisten = 'nope'", "key `listen`"),
            ("listen = '127.0.0.1:1'", "key `plugin_dir`"),
            ("plugin_dir = 'p'\nbogus = 1", "unknown field `bogus`"),
            ("plugin_dir = 'p'\n[[source]]\nname='a'\nplugin='x'\nextra=1", "unknown field `extra`"),
            (
                "plugin_dir = 'p'\n[[source]]\nname='a'\nplugin='x'\n[[source]]\nname='a'\nplugin='y'",
                "key `source[1].name`: \"a\" is already the name of source[0]",
            ),
            ("plugin_dir = 'p'\n[[source]]\nname=''\nplugin='x'", "key `source[0].name`"),
            ("plugin_dir = 'p'\n[[source]]\nname='a'", "missing field `plugin`"),
            ("plugin_dir = 'p'\nsource_timeout_ms = 0", "key `source_timeout_ms`"),
            ("plugin_dir = 'p'\nrequest_timeout_ms = 0", "key `request_timeout_ms`: 0 is out of range: give 1 to 3600000"),
            (
                "plugin_dir = 'p'\nhandshake_timeout_ms = 3600001",
                "key `handshake_timeout_ms`: 3600001 is out of range: give 1 to 3600000",
            ),
            ("plugin_dir = 'p'\nweb_ui = 'yes'", "web_ui"),
            ("plugin_dir = 'p'\nidle_timeout_ms = 0", "key `idle_timeout_ms`: 0 is out of range: give 1 to 3600000"),
            ("plugin_dir = 'p'\nstall_timeout_ms = 0", "key `stall_timeout_ms`: 0 is out of range: give 1 to 3600000"),
            ("plugin_dir = 'p'\nrequest_body_timeout_ms = 0", "key `request_body_timeout_ms`: 0 is out of range: give 1 to 3600000"),
            ("plugin_dir = 'p'\nmax_streams_per_connection = 0", "key `max_streams_per_connection`: 0 is out of range: give 1 to 10000"),
            ("plugin_dir = 'p'\nmax_searches_in_flight = 0", "key `max_searches_in_flight`: 0 is out of range"),
            ("plugin_dir = 'p'\nmax_calls_per_source = 0", "key `max_calls_per_source`"),
            ("plugin_dir = 'p'\nunhealthy_backoff_ms = 0", "key `unhealthy_backoff_ms`"),
            ("plugin_dir = 'p'\nmetrics_listen = ':9'", "key `metrics_listen`"),
            (
                "plugin_dir = 'p'\nreload_debounce_ms = 5",
                "key `reload_debounce_ms`: 5 is out of range: give 10 to 60000",
            ),
            (
                "plugin_dir = 'p'\nmax_retired_libraries = 100001",
                "key `max_retired_libraries`: 100001 is out of range: give 0 to 100000",
            ),
            (
                "plugin_dir = 'p'\n[tls]\ncert_file = 'c'\nkey_file = 'k'\nclient_auth = 'required'",
                "key `tls.client_ca_file`",
            ),
            ("plugin_dir = 'p'\n[tls]\ncert_file = 'c'", "missing field `key_file`"),
            ("plugin_dir = 'p'\n[auth]\ntokens_file = 't'", "key `auth.identity`"),
            ("plugin_dir = 'p'\nlog_level = 'info,=='", "key `log_level`"),
            (
                "plugin_dir = 'p'\n[[auth.identity]]\nname = 'ci'\nsources = ['nope']",
                "key `auth.identity[0].sources[0]`: no [[source]] is named \"nope\"",
            ),
            (
                "plugin_dir = 'p'\nmax_calls_per_source = 4611686018427387904",
                "key `max_calls_per_source`: 4611686018427387904 is out of range: give 1 to 256",
            ),
            (
                "plugin_dir = 'p'\nsource_timeout_ms = 18446744073709551615",
                "key `source_timeout_ms`: 18446744073709551615 is out of range: give 1 to 3600000",
            ),
            (
                "plugin_dir = 'p'\nmax_page_bytes = 1000",
                "key `max_page_bytes`: 1000 is out of range: give 1048576 to 67108864",
            ),
            (
                "plugin_dir = 'p'\nunhealthy_backoff_ms = 3600001",
                "key `unhealthy_backoff_ms`: 3600001 is out of range: give 1 to 3600000",
            ),
            ("plugin_dir = 'p'\non_source_error = 'explode'", "unknown variant `explode`"),
            ("plugin_dir = = 'p'", "t.toml"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text:?}: {err:?} lacks {expected:?}"
            );
        }
    }
}
