//! The runner: `tributary __runner <library>`, started by [`super::client`] with its socket on
//! descriptor 3; the first frame it reads carries the source configuration. As
//! `tributary __runner --inspect <library> <strict|lax>` it only opens and checks the library for
//! the server and prints what it found ([`crate::loader::inspect`]).
//!
//! It loads the library with [`crate::loader::load_all`], builds the source, says hello (with the
//! constructor's error, if any) and answers each request on its own thread, so that several calls can
//! be in flight. It exits when the socket closes: the server went away.

use std::{
    io::{BufReader, BufWriter},
    os::{fd::FromRawFd, unix::net::UnixStream},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use super::pb;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use tributary_plugin_api::{
    Detail, ErrorKind, Extension, Filter, ListRequest, Maintainer, PluginError, SeekKey, SourceBox,
    Summary, Version,
};

use super::{frame, RUNNER_PROTOCOL_VERSION};

/// The runner's `main`. `args` are the arguments after `__runner`: the library path, the plugin name,
/// `strict` or `lax`, and the SHA-256 the library must have (empty: any).
pub fn main(args: &[String]) -> ExitCode {
    if let [flag, library, strict] = args {
        if flag == "--inspect" {
            return crate::loader::inspector_main(
                std::path::Path::new(library),
                strict == "strict",
            );
        }
    }
    let usage = "tributary __runner: expected <library> <plugin> <strict|lax> [<sha256> [--read PATH | --write PATH]...] or --inspect <library> <strict|lax>";
    let (library, plugin, strict, sha256, extra) = match args {
        [library, plugin, strict] => (library, plugin, strict, "", &[][..]),
        [library, plugin, strict, sha256, extra @ ..] => {
            (library, plugin, strict, sha256.as_str(), extra)
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let mut allow = Allowed::default();
    for pair in extra.chunks(2) {
        match pair {
            [flag, path] if flag == "--read" => allow.read.push(PathBuf::from(path)),
            [flag, path] if flag == "--write" => allow.write.push(PathBuf::from(path)),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    // SAFETY: the host passes the runner's end of the socket pair as descriptor 3, and nothing else in
    // this process owns it.
    let stream = unsafe { UnixStream::from_raw_fd(3) };
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tributary __runner: {e}");
            return ExitCode::from(1);
        }
    });
    let config = match frame::read::<pb::Request>(&mut reader) {
        Ok(Some(pb::Request {
            call: Some(pb::request::Call::Start(start)),
            ..
        })) => start,
        Ok(None) => return ExitCode::SUCCESS,
        other => {
            eprintln!("tributary __runner: expected a start frame, got {other:?}");
            return ExitCode::from(1);
        }
    };

    // Before the plugin's code runs: read-only access to what it needs, no writes (Landlock).
    match confine(
        std::path::Path::new(library),
        std::path::Path::new(&config.base_dir),
        &allow,
    ) {
        Ok(landlock::RulesetStatus::FullyEnforced) => {}
        Ok(status) => eprintln!(
            "tributary __runner: source {:?}: the kernel enforces the file-access limits only partly or not at all ({status:?})",
            config.source_name
        ),
        Err(e) => eprintln!(
            "tributary __runner: source {:?}: file-access limits not applied: {e}",
            config.source_name
        ),
    }
    let built = build(
        PathBuf::from(library),
        plugin,
        strict == "strict",
        sha256,
        &config,
    );
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(Mutex::new(BufWriter::new(w))),
        Err(e) => {
            eprintln!("tributary __runner: {e}");
            return ExitCode::from(1);
        }
    };
    let hello = pb::Response {
        id: 0,
        result: Some(pb::response::Result::Hello(pb::Hello {
            version: RUNNER_PROTOCOL_VERSION,
            pid: std::process::id(),
            error: built.as_ref().err().map(error_to_pb),
        })),
    };
    if frame::write(&mut *writer.lock().unwrap(), &hello).is_err() {
        return ExitCode::from(1);
    }
    let Ok(source) = built else {
        return ExitCode::SUCCESS;
    };
    let source = Arc::new(source);
    loop {
        match frame::read::<pb::Request>(&mut reader) {
            Ok(Some(request)) => {
                let (source, writer) = (source.clone(), writer.clone());
                std::thread::spawn(move || {
                    let response = answer(&source, request);
                    // A write error means the host is gone; the read loop will see it too.
                    let _ = frame::write(&mut *writer.lock().unwrap(), &response);
                });
            }
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tributary __runner: reading from the server: {e}");
                return ExitCode::from(1);
            }
        }
    }
}

/// Paths an isolated source may use besides the defaults of [`confine`].
#[derive(Debug, Default)]
pub struct Allowed {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

/// Limits this process's file access with Landlock (best effort: what the kernel supports): files
/// below these paths may be read (and folders listed, programs executed), nothing may be written,
/// created, removed or renamed anywhere:
/// - the plugin library (the path given and its target);
/// - the source's base directory (the config file's folder: relative paths in its config);
/// - `/usr`, `/lib`, `/lib64`, `/etc` (shared libraries, CA certificates, DNS configuration);
/// - `/proc/<own pid>`, `/dev/null`, `/dev/urandom`.
///
/// plus the source's `allow_read` paths, and its `allow_write` paths for reading and writing.
///
/// Descriptors opened before (the socket to the server, standard error) keep working; the network is
/// not limited.
pub fn confine(
    library: &std::path::Path,
    base_dir: &std::path::Path,
    allow: &Allowed,
) -> Result<landlock::RulesetStatus, landlock::RulesetError> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI,
    };
    let abi = ABI::V5;
    let mut readable: Vec<PathBuf> = vec![library.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(library) {
        readable.push(real);
    }
    if !base_dir.as_os_str().is_empty() {
        readable.push(base_dir.to_path_buf());
    }
    for system in [
        "/usr",
        "/lib",
        "/lib64",
        "/etc",
        "/dev/null",
        "/dev/urandom",
    ] {
        readable.push(PathBuf::from(system));
    }
    readable.push(PathBuf::from(format!("/proc/{}", std::process::id())));
    readable.extend(allow.read.iter().cloned());
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(&readable, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(&allow.write, AccessFs::from_all(abi)))?
        .restrict_self()?;
    Ok(status.ruleset)
}

fn build(
    library: PathBuf,
    plugin: &str,
    strict: bool,
    sha256: &str,
    start: &pb::Start,
) -> Result<SourceBox, PluginError> {
    let mut files = crate::loader::load_all(std::slice::from_ref(&library), strict);
    let file = files.pop().expect("one file in, one out");
    if !sha256.is_empty() && !file.sha256.is_empty() && file.sha256 != sha256 {
        return Err(PluginError::unavailable(format!(
            "library {} changed on disk since the server loaded it (sha256 {}, now {}): reload to run the new version",
            library.display(),
            &sha256[..sha256.len().min(12)],
            &file.sha256[..file.sha256.len().min(12)]
        )));
    }
    let loaded = file.outcome.map_err(|reason| {
        PluginError::unavailable(format!(
            "library {} was rejected: {reason}",
            library.display()
        ))
    })?;
    if loaded.meta.name != plugin {
        return Err(PluginError::unavailable(format!(
            "library {} now holds plugin {:?}, not {plugin:?}",
            library.display(),
            loaded.meta.name
        )));
    }
    loaded.new_source(
        &start.source_name,
        &start.config,
        std::path::Path::new(&start.base_dir),
        std::time::Duration::from_millis(start.source_timeout_ms),
    )
}

fn answer(source: &SourceBox, request: pb::Request) -> pb::Response {
    let result = match request.call {
        Some(pb::request::Call::List(call)) => match source.list(&list_from_pb(call)) {
            RResult::ROk(items) => pb::response::Result::List(pb::Summaries {
                items: items.iter().map(summary_to_pb).collect(),
            }),
            RResult::RErr(e) => pb::response::Result::Error(error_to_pb(&e)),
        },
        Some(pb::request::Call::Detail(call)) => {
            match source.detail(RStr::from_str(&call.identifier)) {
                RResult::ROk(d) => pb::response::Result::Detail(detail_to_pb(&d)),
                RResult::RErr(e) => pb::response::Result::Error(error_to_pb(&e)),
            }
        }
        Some(pb::request::Call::Named(call)) => match source.call(
            RStr::from_str(&call.method),
            call.version,
            RStr::from_str(&call.payload),
        ) {
            RResult::ROk(text) => pb::response::Result::Text(text.into_string()),
            RResult::RErr(e) => pb::response::Result::Error(error_to_pb(&e)),
        },
        Some(pb::request::Call::Start(_)) | None => {
            pb::response::Result::Error(error_to_pb(&PluginError::new(
                ErrorKind::InvalidArgument,
                "not a list, detail or named call",
            )))
        }
    };
    pb::Response {
        id: request.id,
        result: Some(result),
    }
}

fn strings(v: &RVec<RString>) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rstrings(v: Vec<String>) -> RVec<RString> {
    v.into_iter().map(RString::from).collect()
}

pub(crate) fn error_to_pb(e: &PluginError) -> pb::Error {
    pb::Error {
        kind: e.kind.0,
        message: e.message.to_string(),
    }
}

pub(crate) fn error_from_pb(e: pb::Error) -> PluginError {
    PluginError::new(ErrorKind(e.kind), e.message)
}

pub(crate) fn list_to_pb(r: &ListRequest) -> pb::ListCall {
    pb::ListCall {
        after: match &r.after {
            ROption::RSome(k) => Some(pb::SeekKey {
                name: k.name.to_string(),
                identifier: k.identifier.to_string(),
            }),
            ROption::RNone => None,
        },
        limit: r.limit,
        filter: Some(pb::Filter {
            query: r.filter.query.to_string(),
            categories: strings(&r.filter.categories),
            repositories: strings(&r.filter.repositories),
            include_deprecated: r.filter.include_deprecated,
        }),
        extensions: extensions_to_pb(&r.extensions),
    }
}

fn extensions_to_pb(v: &RVec<Extension>) -> Vec<pb::Extension> {
    v.iter()
        .map(|e| pb::Extension {
            key: e.key.to_string(),
            value: e.value.to_string(),
        })
        .collect()
}

fn extensions_from_pb(v: Vec<pb::Extension>) -> RVec<Extension> {
    v.into_iter()
        .map(|e| Extension {
            key: e.key.into(),
            value: e.value.into(),
        })
        .collect()
}

fn list_from_pb(c: pb::ListCall) -> ListRequest {
    let filter = c.filter.unwrap_or_default();
    ListRequest {
        after: match c.after {
            Some(k) => ROption::RSome(SeekKey {
                name: k.name.into(),
                identifier: k.identifier.into(),
            }),
            None => ROption::RNone,
        },
        limit: c.limit,
        filter: Filter {
            query: filter.query.into(),
            categories: rstrings(filter.categories),
            repositories: rstrings(filter.repositories),
            include_deprecated: filter.include_deprecated,
        },
        extensions: extensions_from_pb(c.extensions),
    }
}

fn summary_to_pb(s: &Summary) -> pb::Summary {
    pb::Summary {
        identifier: s.identifier.to_string(),
        name: s.name.to_string(),
        display_name: s.display_name.to_string(),
        latest_version: s.latest_version.to_string(),
        latest_app_version: s.latest_app_version.to_string(),
        short_description: s.short_description.to_string(),
        icon_url: s.icon_url.to_string(),
        categories: strings(&s.categories),
        repository: s.repository.to_string(),
        deprecated: s.deprecated,
        extensions: extensions_to_pb(&s.extensions),
    }
}

pub(crate) fn summary_from_pb(s: pb::Summary) -> Summary {
    Summary {
        identifier: s.identifier.into(),
        name: s.name.into(),
        display_name: s.display_name.into(),
        latest_version: s.latest_version.into(),
        latest_app_version: s.latest_app_version.into(),
        short_description: s.short_description.into(),
        icon_url: s.icon_url.into(),
        categories: rstrings(s.categories),
        repository: s.repository.into(),
        deprecated: s.deprecated,
        extensions: extensions_from_pb(s.extensions),
    }
}

fn detail_to_pb(d: &Detail) -> pb::Detail {
    pb::Detail {
        summary: Some(summary_to_pb(&d.summary)),
        versions: d
            .versions
            .iter()
            .map(|v| pb::Version {
                version: v.version.to_string(),
                app_version: v.app_version.to_string(),
                created: v.created.to_string(),
                digest: v.digest.to_string(),
            })
            .collect(),
        home_url: d.home_url.to_string(),
        source_urls: strings(&d.source_urls),
        maintainers: d
            .maintainers
            .iter()
            .map(|m| pb::Maintainer {
                name: m.name.to_string(),
                email: m.email.to_string(),
                url: m.url.to_string(),
            })
            .collect(),
        readme: d.readme.to_string(),
        keywords: strings(&d.keywords),
        extensions: extensions_to_pb(&d.extensions),
    }
}

pub(crate) fn detail_from_pb(d: pb::Detail) -> Detail {
    Detail {
        summary: summary_from_pb(d.summary.unwrap_or_default()),
        versions: d
            .versions
            .into_iter()
            .map(|v| Version {
                version: v.version.into(),
                app_version: v.app_version.into(),
                created: v.created.into(),
                digest: v.digest.into(),
            })
            .collect(),
        home_url: d.home_url.into(),
        source_urls: rstrings(d.source_urls),
        maintainers: d
            .maintainers
            .into_iter()
            .map(|m| Maintainer {
                name: m.name.into(),
                email: m.email.into(),
                url: m.url.into(),
            })
            .collect(),
        readme: d.readme.into(),
        keywords: rstrings(d.keywords),
        extensions: extensions_from_pb(d.extensions),
    }
}
