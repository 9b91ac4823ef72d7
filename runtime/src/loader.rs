//! Finding and loading plugin libraries.
//!
//! Every file in the plugin directory named like a shared library (`lib*.so` on Linux) is opened with
//! `abi_stable`'s `lib_header_from_path` + `init_root_module`, one library at a time: the cached
//! `RootModule::load_from*` functions would hand back the first module for every file. A file that
//! fails for any reason is recorded with a one-line reason and skipped; the others still load.
//!
//! No code runs from a file someone can change under the server. Each candidate is resolved once
//! (a symlink to its target), opened with `O_NOFOLLOW | O_NONBLOCK` and checked on the opened
//! descriptor (`fstat`: a regular file; with strict permissions, owned by root or this user and not
//! writable by group or others) before anything else reads it: a FIFO is refused without blocking.
//! Its bytes are copied into a private, sealed memfd, hashed (SHA-256), and `dlopen` loads that copy
//! through `/proc/self/fd/N`. Overwriting, truncating or deleting the file in the plugin directory
//! then cannot touch the running code.
//!
//! Opening a library runs its ELF initialisers before any check. With an [`Inspection`] (the
//! registry asks for one when a source is isolated), each library is first opened in a child process
//! ([`inspect`]) and only those that in-process sources name are opened here.
//!
//! Libraries are never unloaded (`abi_stable` leaks them on purpose): each memfd stays open and mapped
//! for the life of the process.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use tributary_plugin_api::{PluginMod_Ref, INTERFACE_VERSION};

/// What a library says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    pub description: String,
    pub interface: (u32, u32),
    /// Optional abilities the plugin declares (`method@version`).
    pub capabilities: Vec<String>,
}

/// A library that loaded: its metadata and its root module.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub meta: PluginMeta,
    pub path: PathBuf,
    /// `None` when the library was checked in an inspector child process only
    /// ([`Inspection`]): it was never opened in this process.
    pub module: Option<PluginMod_Ref>,
}

impl LoadedPlugin {
    /// Builds a source of this plugin in this process: the one constructor the registry, the
    /// runner of an isolated source and `tributary plugin check` all use. `config_text` is the
    /// source's JSON configuration (see [`source_config_text`]); the source is told its name, the
    /// folder relative paths resolve against and how long a call may take.
    pub fn new_source(
        &self,
        source_name: &str,
        config_text: &str,
        base_dir: &Path,
        call_timeout: std::time::Duration,
    ) -> Result<tributary_plugin_api::SourceBox, tributary_plugin_api::PluginError> {
        let Some(module) = self.module else {
            return Err(tributary_plugin_api::PluginError::internal(format!(
                "plugin {:?} was only inspected in a child process, not opened in this one",
                self.meta.name
            )));
        };
        let context = crate::context::context(source_name, base_dir, call_timeout);
        (module.new_source())(&context, abi_stable::std_types::RStr::from_str(config_text))
            .into_result()
    }
}

/// A source's JSON configuration as its plugin receives it: the `[[source]]`'s `config` table with
/// the host's `$base_dir` key added (unless the table sets it).
pub fn source_config_text(
    config: &serde_json::Map<String, serde_json::Value>,
    base_dir: &Path,
) -> String {
    let mut config = config.clone();
    config
        .entry(tributary_plugin_api::BASE_DIR_KEY.to_owned())
        .or_insert_with(|| base_dir.to_string_lossy().into_owned().into());
    serde_json::Value::Object(config).to_string()
}

/// Which libraries are checked in a child process instead of this one (see [`inspect`]): all of
/// them; then only those whose plugin an in-process source names are opened here.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The `tributary` binary (its hidden runner mode does the inspection).
    pub program: PathBuf,
    /// The plugins that in-process sources name: these are opened in this process too.
    pub in_process: Vec<String>,
}

/// How long an inspector child may take to open one library.
const INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One library file and what became of it.
#[derive(Clone)]
pub struct PluginFile {
    pub path: PathBuf,
    /// SHA-256 of the bytes that were loaded (lower-case hex); empty when the file was refused before
    /// its bytes were read.
    pub sha256: String,
    /// Known whenever the library's metadata could be read, even if it was then rejected.
    pub meta: Option<PluginMeta>,
    pub outcome: Result<LoadedPlugin, Rejection>,
    /// When these bytes were first loaded (or read and rejected). A library kept across a reload
    /// keeps its time.
    pub loaded_at: std::time::SystemTime,
}

/// Why a library was not loaded: a kind for code and metrics, the one-line detail for operators
/// (`Display` writes both the detail and, on a reload, which earlier version keeps serving).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub kind: RejectionKind,
    /// What was found, naming the file and the figure (an owner, a mode, a version).
    pub detail: String,
    /// On a reload: the version that keeps serving the plugin's name instead ("name version,
    /// sha256 prefix").
    pub previous_kept: Option<String>,
}

/// The kinds of [`Rejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The file, or a folder above it, is not safe to run code from (its owner or its mode).
    Insecure,
    /// The file could not be read, is not a regular file, changed while it was checked, or could
    /// not be copied.
    Unreadable,
    /// Not a Tributary plugin: not a shared library, or no root module, or its root module failed to
    /// initialise.
    NotAPlugin,
    /// Built for another interface: another major version, abi_stable release, C ABI or layout.
    Incompatible,
    /// Opening it crashed or hung the inspector process (the server never opened it).
    Crashed,
    /// Its metadata is unusable (an invalid plugin name).
    InvalidMetadata,
    /// Another file already serves its plugin name.
    Duplicate,
    /// A source the previous version served could not be built with it (on a reload).
    SourceFailed,
}

impl RejectionKind {
    /// The kind's name, as logs and the JSON of the inspector process write it.
    pub fn name(self) -> &'static str {
        match self {
            RejectionKind::Insecure => "insecure",
            RejectionKind::Unreadable => "unreadable",
            RejectionKind::NotAPlugin => "not_a_plugin",
            RejectionKind::Incompatible => "incompatible",
            RejectionKind::Crashed => "crashed",
            RejectionKind::InvalidMetadata => "invalid_metadata",
            RejectionKind::Duplicate => "duplicate",
            RejectionKind::SourceFailed => "source_failed",
        }
    }
}

impl Rejection {
    pub fn new(kind: RejectionKind, detail: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            detail: detail.into(),
            previous_kept: None,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)?;
        if let Some(kept) = &self.previous_kept {
            write!(f, "; the previous version ({kept}) keeps serving")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// Why the plugin directory could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("plugin_dir {0} does not exist")]
    Missing(PathBuf),
    #[error("plugin_dir {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read plugin_dir {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether a file name looks like a shared library of this platform.
pub fn is_library_name(name: &str) -> bool {
    name.starts_with(std::env::consts::DLL_PREFIX)
        && name.ends_with(std::env::consts::DLL_SUFFIX)
        && name.len() > std::env::consts::DLL_PREFIX.len() + std::env::consts::DLL_SUFFIX.len()
}

/// The library files in `dir`, sorted by path so that loading (and duplicate resolution) is
/// deterministic.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let meta = std::fs::metadata(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ScanError::Missing(dir.to_path_buf()),
        _ => ScanError::Read {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(ScanError::NotADirectory(dir.to_path_buf()));
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ScanError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .filter(|e| e.file_name().to_str().is_some_and(is_library_name))
        .map(|e| e.path())
        .collect();
    paths.sort();
    Ok(paths)
}

/// The hidden first argument that runs the binary as a runner (an isolated source's process, or a
/// library inspection).
pub const RUNNER_ARG: &str = "__runner";

/// "killed by signal 11 (SIGSEGV)" or "exited with status 3".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        // SAFETY: strsignal returns a pointer to a static or thread-local string.
        let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(signal)) }
            .to_string_lossy()
            .into_owned();
        format!("was killed by signal {signal} ({name})")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

/// Why a path may not be trusted with code: owned by someone other than this user or root, or
/// writable by group or others. `None` when it is safe (the check sshd's StrictModes makes).
pub fn insecure_reason(path: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot inspect {what} {}: {e}", path.display())),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let hint = "refusing to load plugins from it (set allow_insecure_plugin_dir = true to allow this during development)";
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!(
            "{what} {} is owned by uid {}, neither this user (uid {me}) nor root: {hint}",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Some(format!(
            "{what} {} is writable by {who} (mode {mode:04o}): {hint}",
            path.display()
        ));
    }
    None
}

/// Like [`insecure_reason`], for `path` and every folder above it, after resolving symlinks once: the
/// canonical target and each of its folders up to `/` must be owned by root or this user and not
/// writable by group or others. A sticky world-writable folder such as `/tmp` does not pass: anyone
/// can create a name there before the operator does.
pub fn insecure_path_reason(path: &Path, what: &str) -> Option<String> {
    if let Some(reason) = insecure_reason(path, what) {
        return Some(reason);
    }
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) => return Some(format!("cannot resolve {what} {}: {e}", path.display())),
    };
    if real != path {
        if let Some(reason) = insecure_reason(&real, &format!("{what} target")) {
            return Some(reason);
        }
    }
    let mut above = path.parent().map(Path::to_path_buf);
    if let Some(parent) = &above {
        if parent.as_os_str().is_empty() {
            above = None;
        }
    }
    let folders = real
        .ancestors()
        .skip(1)
        .map(Path::to_path_buf)
        .chain(above.iter().flat_map(|p| {
            std::fs::canonicalize(p)
                .map(|c| c.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
                .unwrap_or_default()
        }));
    for folder in folders {
        if let Some(reason) = insecure_reason(&folder, &format!("folder above {what}")) {
            return Some(reason);
        }
    }
    None
}

/// Loads every library in `paths`. Never fails as a whole: each file gets its own outcome. With
/// `strict`, a file that [`insecure_reason`] objects to is rejected without being opened.
///
/// Two files that hold the same plugin name: the first in path order is loaded, the others are
/// rejected as duplicates.
pub fn load_all(paths: &[PathBuf], strict: bool) -> Vec<PluginFile> {
    load_all_reusing(paths, strict, &[])
}

/// [`load_all`] for a reload: a file whose bytes hash to a library of `previous` that loaded is not
/// loaded again (no second copy is mapped); it reuses that library, its metadata and its load time.
///
/// Two files that hold the same plugin name: the file that served that plugin in `previous` (same
/// path) keeps it and the newcomer is rejected, whatever their names; when neither served it, the
/// first in path order is loaded, as at start.
pub fn load_all_reusing(
    paths: &[PathBuf],
    strict: bool,
    previous: &[PluginFile],
) -> Vec<PluginFile> {
    load_all_with(paths, strict, previous, None)
}

/// [`load_all_reusing`], with `inspection`: each library is first opened in a child process
/// ([`inspect`]); only one whose plugin an in-process source names is then opened here.
pub fn load_all_with(
    paths: &[PathBuf],
    strict: bool,
    previous: &[PluginFile],
    inspection: Option<&Inspection>,
) -> Vec<PluginFile> {
    let mut files: Vec<PluginFile> = Vec::with_capacity(paths.len());
    for path in paths {
        let unsafe_file = if strict {
            insecure_path_reason(path, "plugin file")
        } else {
            None
        };
        files.push(match unsafe_file {
            Some(reason) => PluginFile {
                path: path.clone(),
                sha256: String::new(),
                meta: None,
                outcome: Err(Rejection::new(RejectionKind::Insecure, reason)),
                loaded_at: std::time::SystemTime::now(),
            },
            None => match inspection {
                None => load_one(path, strict, previous),
                Some(inspection) => {
                    let file = inspect(path, strict, previous, inspection);
                    match &file.outcome {
                        Ok(p)
                            if p.module.is_none()
                                && inspection.in_process.contains(&p.meta.name) =>
                        {
                            load_one(path, strict, previous)
                        }
                        _ => file,
                    }
                }
            },
        });
    }
    reject_duplicates(&mut files, previous);
    for file in &files {
        let reused = previous
            .iter()
            .any(|f| f.outcome.is_ok() && f.sha256 == file.sha256 && f.loaded_at == file.loaded_at);
        match &file.outcome {
            Ok(_) if reused => {}
            Ok(p) => tracing::info!(
                path = %file.path.display(),
                sha256 = %file.sha256,
                plugin = %p.meta.name,
                version = %p.meta.version,
                "loaded plugin"
            ),
            Err(reason) => tracing::warn!(
                path = %file.path.display(),
                kind = reason.kind.name(),
                "rejected plugin library: {reason}"
            ),
        }
    }
    files
}

/// One loaded file per plugin name: the one that served the name in `previous` (by path) if it
/// loaded again, else the first in `files`' (path) order. The others are rejected, naming it.
fn reject_duplicates(files: &mut [PluginFile], previous: &[PluginFile]) {
    let name_of = |f: &PluginFile| f.outcome.as_ref().ok().map(|p| p.meta.name.clone());
    // (plugin name, index of the file that keeps it, whether that file was serving it)
    let mut keepers: Vec<(String, usize, bool)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let Some(name) = name_of(file) else { continue };
        if keepers.iter().any(|(n, _, _)| *n == name) {
            continue;
        }
        let serving = previous
            .iter()
            .filter(|f| name_of(f).as_ref() == Some(&name))
            .find_map(|old| {
                files
                    .iter()
                    .position(|f| f.path == old.path && name_of(f).as_ref() == Some(&name))
            });
        keepers.push((name, serving.unwrap_or(i), serving.is_some()));
    }
    for (name, keep, serving) in keepers {
        let kept = files[keep].path.clone();
        for (i, file) in files.iter_mut().enumerate() {
            if i == keep || name_of(file).as_ref() != Some(&name) {
                continue;
            }
            file.outcome = Err(Rejection::new(
                RejectionKind::Duplicate,
                if serving {
                    format!(
                        "duplicate plugin name {name:?}: already served by {}",
                        kept.display()
                    )
                } else {
                    format!(
                    "duplicate plugin name {name:?}: already loaded from {} (the first file in name order)",
                    kept.display()
                )
                },
            ));
        }
    }
}

/// Opens the library at `path` (a symbolic link resolved once) and checks the descriptor it will be
/// read through: a regular file and, when `strict`, owned by this user or root and writable by no
/// one else. The file and its resolved path.
fn open_checked(path: &Path, strict: bool) -> Result<(std::fs::File, PathBuf), Rejection> {
    let unreadable = |detail: String| Rejection::new(RejectionKind::Unreadable, detail);
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Resolve a symlink once; the target is then opened without following anything further.
    let real = std::fs::canonicalize(path)
        .map_err(|e| unreadable(format!("cannot resolve {}: {e}", path.display())))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| unreadable(format!("cannot open {}: {e}", real.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| unreadable(format!("cannot inspect {}: {e}", real.display())))?;
    if !meta.file_type().is_file() {
        return Err(unreadable(format!(
            "{} is not a regular file (a FIFO, device, socket or directory is never loaded)",
            real.display()
        )));
    }
    if strict {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(Rejection::new(
                RejectionKind::Insecure,
                format!(
                    "plugin file {} is owned by uid {}, neither this user (uid {me}) nor root",
                    real.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Rejection::new(
                RejectionKind::Insecure,
                format!(
                    "plugin file {} is writable by group or others (mode {:04o})",
                    real.display(),
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok((file, real))
}

/// The size of the pieces in which a library is hashed and copied.
const COPY_CHUNK: usize = 64 * 1024;

/// Reads `file` (at `real`) to its end in pieces of [`COPY_CHUNK`] bytes, giving each to `each`;
/// its SHA-256, in hex. No copy of the whole library is held in memory.
fn hash_in_pieces(
    file: &mut std::fs::File,
    real: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), Rejection>,
) -> Result<String, Rejection> {
    use sha2::Digest;
    use std::io::Read;
    let mut hasher = sha2::Sha256::new();
    let mut piece = vec![0u8; COPY_CHUNK];
    loop {
        let n = match file.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Rejection::new(
                    RejectionKind::Unreadable,
                    format!("cannot read {}: {e}", real.display()),
                ))
            }
        };
        hasher.update(&piece[..n]);
        each(&piece[..n])?;
    }
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of the library at `path`, after the checks of [`open_checked`], read in pieces.
fn hash_checked(path: &Path, strict: bool) -> Result<String, Rejection> {
    let (mut file, real) = open_checked(path, strict)?;
    hash_in_pieces(&mut file, &real, |_| Ok(()))
}

/// Copies the library open as `file` (at `real`) into a sealed anonymous file (`memfd`), hashing
/// it on the way: the bytes hashed are the bytes loaded, and a library file replaced after this
/// cannot change what is loaded. Returns the copy, still open, and the SHA-256. The copy is read in
/// pieces, so that loading a library never holds a second copy of it in the heap (whose pages the
/// allocator would keep through the start).
fn private_copy(
    file: &mut std::fs::File,
    real: &Path,
    name: &str,
) -> Result<(std::fs::File, String), Rejection> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let unreadable = |detail: String| Rejection::new(RejectionKind::Unreadable, detail);
    let cname = std::ffi::CString::new(format!("tributary-plugin-{name}"))
        .map_err(|_| unreadable("file name holds a NUL byte".to_owned()))?;
    // SAFETY: cname is a valid NUL-terminated string; the flags are valid for memfd_create.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(unreadable(format!(
            "cannot create a private copy: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd was just created and is owned here.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    let sha256 = hash_in_pieces(file, real, |piece| {
        copy.write_all(piece)
            .map_err(|e| unreadable(format!("cannot write the private copy: {e}")))
    })?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor this function owns.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(unreadable(format!(
            "cannot seal the private copy: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok((copy, sha256))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_one(path: &Path, strict: bool, previous: &[PluginFile]) -> PluginFile {
    let rejected = |sha256: &str, meta: Option<PluginMeta>, reason: Rejection| PluginFile {
        path: path.to_path_buf(),
        sha256: sha256.to_owned(),
        meta,
        outcome: Err(reason),
        loaded_at: std::time::SystemTime::now(),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (copy, sha256) = match open_checked(path, strict)
        .and_then(|(mut file, real)| private_copy(&mut file, &real, &file_name))
    {
        Ok(copied) => copied,
        Err(reason) => return rejected("", None, reason),
    };
    // Reused only when it was opened in this process (not only inspected in a child).
    if let Some(known) = previous
        .iter()
        .find(|f| f.sha256 == sha256 && f.outcome.as_ref().is_ok_and(|p| p.module.is_some()))
    {
        let mut file = known.clone();
        file.path = path.to_path_buf();
        if let Ok(loaded) = &mut file.outcome {
            loaded.path = path.to_path_buf();
        }
        return file;
    }
    // The descriptor stays open for the life of the process, as the library stays mapped.
    let copy = PathBuf::from(format!("/proc/self/fd/{}", {
        use std::os::fd::IntoRawFd;
        copy.into_raw_fd()
    }));
    let rejected = |meta: Option<PluginMeta>, reason: Rejection| rejected(&sha256, meta, reason);
    let module =
        match lib_header_from_path(&copy).and_then(|h| h.init_root_module::<PluginMod_Ref>()) {
            Ok(module) => module,
            Err(e) => return rejected(None, describe(&e)),
        };
    let info = (module.info())();
    let meta = PluginMeta {
        name: info.name.into_string(),
        version: info.version.into_string(),
        description: info.description.into_string(),
        interface: (info.interface_major, info.interface_minor),
        capabilities: info.capabilities.iter().map(|c| c.to_string()).collect(),
    };
    if meta.interface.0 != INTERFACE_VERSION.0 {
        let reason = format!(
            "built for plugin interface {}.{}, this host speaks {}.x: rebuild the plugin against tributary-plugin-api {}.x",
            meta.interface.0, meta.interface.1, INTERFACE_VERSION.0, INTERFACE_VERSION.0
        );
        return rejected(
            Some(meta),
            Rejection::new(RejectionKind::Incompatible, reason),
        );
    }
    if meta.name.is_empty()
        || meta
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        let reason = format!(
            "invalid plugin name {:?}: it must be non-empty with no spaces",
            meta.name
        );
        return rejected(
            Some(meta),
            Rejection::new(RejectionKind::InvalidMetadata, reason),
        );
    }
    PluginFile {
        path: path.to_path_buf(),
        sha256,
        meta: Some(meta.clone()),
        loaded_at: std::time::SystemTime::now(),
        outcome: Ok(LoadedPlugin {
            meta,
            path: path.to_path_buf(),
            module: Some(module),
        }),
    }
}

/// What an inspector child reports about one library (one JSON line on its stdout).
#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    sha256: String,
    name: Option<String>,
    version: String,
    description: String,
    interface: (u32, u32),
    capabilities: Vec<String>,
    rejected: Option<Rejection>,
}

/// The inspector child's side (`tributary __runner --inspect <library> <strict|lax>`): loads the
/// library as the server would and prints a [`Report`] line.
pub fn inspector_main(library: &Path, strict: bool) -> std::process::ExitCode {
    let file = load_all(&[library.to_path_buf()], strict)
        .pop()
        .expect("one file in, one out");
    let meta = file.meta.clone();
    let report = Report {
        sha256: file.sha256.clone(),
        name: meta.as_ref().map(|m| m.name.clone()),
        version: meta.as_ref().map(|m| m.version.clone()).unwrap_or_default(),
        description: meta
            .as_ref()
            .map(|m| m.description.clone())
            .unwrap_or_default(),
        interface: meta.as_ref().map(|m| m.interface).unwrap_or_default(),
        capabilities: meta.map(|m| m.capabilities).unwrap_or_default(),
        rejected: file.outcome.err(),
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report is JSON")
    );
    std::process::ExitCode::SUCCESS
}

/// Checks `path` without opening it in this process. On a reload its bytes are read and hashed here
/// (no code runs) and a library already loaded with the same bytes is reused; otherwise a child process
/// (the runner binary in its inspector mode) opens it, runs the same checks and reports the
/// metadata. A child that crashes (an ELF initialiser that aborts, say), hangs or says nothing makes
/// the library rejected with that reason.
pub fn inspect(
    path: &Path,
    strict: bool,
    previous: &[PluginFile],
    inspection: &Inspection,
) -> PluginFile {
    let rejected = |sha256: &str, meta: Option<PluginMeta>, reason: Rejection| PluginFile {
        path: path.to_path_buf(),
        sha256: sha256.to_owned(),
        meta,
        outcome: Err(reason),
        loaded_at: std::time::SystemTime::now(),
    };
    // On a reload, the bytes are hashed here first, so that a library already loaded is reused
    // without a child. At start there is nothing to reuse: the child's checks and hash are enough.
    let known_sha256 = if previous.iter().any(|f| f.outcome.is_ok()) {
        let sha256 = match hash_checked(path, strict) {
            Ok(sha256) => sha256,
            Err(reason) => return rejected("", None, reason),
        };
        if let Some(known) = previous
            .iter()
            .find(|f| f.outcome.is_ok() && f.sha256 == sha256)
        {
            let mut file = known.clone();
            file.path = path.to_path_buf();
            if let Ok(loaded) = &mut file.outcome {
                loaded.path = path.to_path_buf();
            }
            return file;
        }
        Some(sha256)
    } else {
        None
    };
    let report = match run_inspector(path, strict, &inspection.program) {
        Ok(report) => report,
        Err(reason) => {
            return rejected(
                known_sha256.as_deref().unwrap_or(""),
                None,
                Rejection::new(RejectionKind::Crashed, reason),
            )
        }
    };
    let sha256 = known_sha256.unwrap_or_else(|| report.sha256.clone());
    if report.sha256 != sha256 {
        return rejected(
            &sha256,
            None,
            Rejection::new(
                RejectionKind::Unreadable,
                "the file changed while it was being inspected",
            ),
        );
    }
    let meta = report.name.map(|name| PluginMeta {
        name,
        version: report.version,
        description: report.description,
        interface: report.interface,
        capabilities: report.capabilities,
    });
    match (report.rejected, meta) {
        (Some(reason), meta) => rejected(&sha256, meta, reason),
        (None, None) => rejected(
            &sha256,
            None,
            Rejection::new(
                RejectionKind::NotAPlugin,
                "the inspector reported no plugin",
            ),
        ),
        (None, Some(meta)) => PluginFile {
            path: path.to_path_buf(),
            sha256,
            meta: Some(meta.clone()),
            loaded_at: std::time::SystemTime::now(),
            outcome: Ok(LoadedPlugin {
                meta,
                path: path.to_path_buf(),
                module: None,
            }),
        },
    }
}

fn run_inspector(path: &Path, strict: bool, program: &Path) -> Result<Report, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(program)
        .arg(RUNNER_ARG)
        .arg("--inspect")
        .arg(path)
        .arg(if strict { "strict" } else { "lax" })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start an inspector process ({}): {e}",
                program.display()
            )
        })?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + INSPECT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Ok(None) => {
                // SAFETY: the child (the group's leader) is not reaped yet.
                unsafe {
                    libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "opening the library did not finish within {} s (in an inspector process; the server never opened it)",
                    INSPECT_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the inspector process failed: {e}")),
        }
    };
    // SAFETY: as above; what the library's code started goes with the inspector.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "the library crashed the process that opened it: it {} (in an inspector process; the server never opened it)",
            describe_exit(status)
        ));
    }
    serde_json::from_str::<Report>(text.trim())
        .map_err(|e| format!("the inspector process answered no report ({e})"))
}

/// One line saying why a library could not be loaded. `AbiInstability` reports can run to a thousand
/// lines: the full text goes to the debug log, the line to the operator.
fn describe(error: &LibraryError) -> Rejection {
    use RejectionKind::{Incompatible, NotAPlugin};
    let (kind, detail) = match error {
        LibraryError::OpenError { err, .. } => (
            NotAPlugin,
            format!("not a loadable shared library: {}", first_line(&err.to_string())),
        ),
        LibraryError::GetSymbolError { .. } => (
            NotAPlugin,
            "not a Tributary plugin: it exports no abi_stable root module (was it built with tributary_plugin_api::export_plugin!?)".to_owned(),
        ),
        LibraryError::InvalidAbiHeader(header) => (
            Incompatible,
            format!(
                "built with an incompatible abi_stable ({header:?}): rebuild against this host's tributary-plugin-api"
            ),
        ),
        LibraryError::InvalidCAbi { .. } => (
            Incompatible,
            "built by a compiler with an incompatible C ABI: rebuild the plugin".to_owned(),
        ),
        LibraryError::ParseVersionError(e) => {
            (Incompatible, format!("unreadable interface version: {e}"))
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => (
            Incompatible,
            format!(
                "built for plugin interface {}.{}, this host speaks {}.x: rebuild the plugin against tributary-plugin-api {}.x",
                actual_version.major, actual_version.minor, expected_version.major, expected_version.major
            ),
        ),
        LibraryError::AbiInstability(details) => {
            tracing::debug!("layout mismatch details: {details}");
            (
                Incompatible,
                "plugin interface layout does not match this host's (same major version, different types): rebuild the plugin against this host's tributary-plugin-api; details at debug log level".to_owned(),
            )
        }
        LibraryError::RootModule { err, .. } => (
            NotAPlugin,
            format!(
                "the plugin's root module failed to initialise: {}",
                first_line(&err.to_string())
            ),
        ),
        LibraryError::Many(errors) => {
            return errors
                .iter()
                .map(describe)
                .next()
                .unwrap_or_else(|| Rejection::new(NotAPlugin, "unknown load error"))
        }
    };
    Rejection::new(kind, detail)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_library_name("libcatalog.so"));
        assert!(!is_library_name("lib.so"));
        assert!(!is_library_name("catalog.so"));
        assert!(!is_library_name("libcatalog.so.1"));
        assert!(!is_library_name("libcatalog.rlib"));
    }

    #[test]
    fn permissions_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tributary-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let set =
            |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o755);
        assert_eq!(insecure_reason(&dir, "plugin_dir"), None);
        set(0o775);
        let reason = insecure_reason(&dir, "plugin_dir").unwrap();
        assert!(
            reason.contains("writable by its group (mode 0775)"),
            "{reason}"
        );
        set(0o1777);
        let reason = insecure_reason(&dir, "plugin_dir").unwrap();
        assert!(
            reason.contains("writable by group and others (mode 1777)"),
            "{reason}"
        );
        assert!(reason.contains("allow_insecure_plugin_dir"), "{reason}");
        set(0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scan_errors_name_the_path() {
        let missing = Path::new("/nonexistent/tributary-plugins");
        assert!(scan(missing)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/tributary-plugins does not exist"));
        let file = std::env::current_exe().unwrap();
        assert!(scan(&file)
            .unwrap_err()
            .to_string()
            .contains("is not a directory"));
    }

    #[test]
    fn each_rejection_has_its_kind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tributary-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("libtext.so");
        std::fs::write(&text, "not a library").unwrap();
        let fifo = dir.join("libfifo.so");
        let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        let missing = dir.join("libmissing.so");
        let files = load_all(&[text.clone(), fifo.clone(), missing], false);
        let kinds: Vec<_> = files
            .iter()
            .map(|f| f.outcome.as_ref().err().map(|r| r.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                Some(RejectionKind::NotAPlugin),
                Some(RejectionKind::Unreadable),
                Some(RejectionKind::Unreadable)
            ]
        );
        let fifo_reason = files[1].outcome.as_ref().err().unwrap().to_string();
        assert!(
            fifo_reason.ends_with(
                "is not a regular file (a FIFO, device, socket or directory is never loaded)"
            ),
            "{fifo_reason}"
        );

        std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o666)).unwrap();
        let insecure = open_checked(&text, true).unwrap_err();
        assert_eq!(insecure.kind, RejectionKind::Insecure);
        assert!(
            insecure
                .detail
                .contains("writable by group or others (mode 0666)"),
            "{insecure}"
        );

        // A reload's rejection names the version kept; the kind travels through JSON unchanged.
        let mut kept = Rejection::new(RejectionKind::Duplicate, "duplicate plugin name \"a\"");
        kept.previous_kept = Some("a 1.0.0, sha256 0123456789ab".to_owned());
        assert_eq!(
            kept.to_string(),
            "duplicate plugin name \"a\"; the previous version (a 1.0.0, sha256 0123456789ab) keeps serving"
        );
        let json = serde_json::to_string(&kept).unwrap();
        assert!(json.contains("\"kind\":\"duplicate\""), "{json}");
        assert_eq!(serde_json::from_str::<Rejection>(&json).unwrap(), kept);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
