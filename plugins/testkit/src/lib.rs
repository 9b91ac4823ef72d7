//! `testkit`: a plugin for tests and benchmarks. It serves items given inline in its configuration or
//! generated on the fly, and misbehaves on demand: fail or panic in its constructor, and on the Nth
//! list call return an error, panic, sleep, hang, break the order or return too many items, or commit
//! a fault that ends its process (segfault, abort, stack overflow, runaway allocation, never return).
//!
//! Configuration (every key optional):
//! ```toml
//! config = { items = [{ name = "pkg-1", id = "a" }], generate = 1000, prefix = "pkg-",
//!            fail_new = "reason", panic_new = "reason", fail_new_when_exists = "/tmp/flag", read_on_new = "/etc/hostname", sleep_ms = 50,
//!            error_on_call = 2, panic_on_call = 2, panic_always = true, hang_on_call = 2, hang_ms = 2000,
//!            hang_in_place = true, unordered_on_call = 2, oversize_on_call = 2, stale_on_call = 2,
//!            duplicate_id_on_call = 2, ignore_filter = true,
//!            huge_field_on_call = 2, bad_utf8_on_call = 2, panic_in_detail = true,
//!            fault = "segfault", fault_on_call = 2, fault_marker = "/tmp/fired",
//!            description_bytes = 60000, bad_utf8_in_detail = true, long_error_in_detail = 100000,
//!            calls_file = "/tmp/calls", log_calls = true, fork_grandchild = "/tmp/grandchild.pid",
//!            sleep_new_ms = 60000, stop_new = true }
//! ```
//! `fork_grandchild` makes the constructor start a detached grandchild (fork, fork again, the middle
//! process exits) that inherits every descriptor of the process, its socket to the host included,
//! and sleeps until it is killed; its pid is written to the given file. `sleep_new_ms` makes the
//! constructor sleep that long; `stop_new` makes it stop its own process (`SIGSTOP`).
//! Outside the configuration: with `TRIBUTARY_TESTKIT_INIT_FAULT` set to `always` (or to the path of
//! a file that exists) in its environment, a process that opens the library aborts in the library's
//! ELF initialiser (before any check can run).
//! Items also take `deprecated = true`. `*_on_call` counts list calls from 1; `calls_file` gets one
//! line per list call, so that a test can count calls made after a response was sent; `log_calls`
//! writes one line per list call into the host's log, with the time the call has left.
//! `hang_in_place` moves the hang to the first call from `hang_on_call` on that the host makes in
//! place (not on the source's own threads), so that a test of calls in place gets its hang there
//! even when an earlier call went to the threads.

use std::{
    io::Write,
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use serde::Deserialize;
use tributary_plugin_api::{
    config, export_plugin, Detail, Host, ListRequest, PackageSource, Plugin, PluginError, ROption,
    RString, RVec, SeekKey, Summary,
};

pub struct TestkitPlugin;

impl Plugin for TestkitPlugin {
    const NAME: &'static str = "testkit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Test items and faults on demand";

    type Source = TestkitSource;

    fn new_source(host: Host, config: &str) -> Result<TestkitSource, PluginError> {
        let config: Config = config::parse("testkit", config)?;
        if let Some(reason) = &config.fail_new {
            return Err(PluginError::invalid_config(reason.clone()));
        }
        if let Some(reason) = &config.panic_new {
            panic!("{reason}");
        }
        if let Some(path) = &config.read_on_new {
            // A plugin reading a file of its choice: allowed in-process, limited in isolation.
            std::fs::read(host.resolve(std::path::Path::new(path))).map_err(|e| {
                PluginError::unavailable(format!("testkit: cannot read {path}: {e}"))
            })?;
        }
        if config.sleep_new_ms > 0 {
            std::thread::sleep(Duration::from_millis(config.sleep_new_ms));
        }
        if config.stop_new {
            // SAFETY: raise has no preconditions; the process stops until SIGCONT or SIGKILL.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
        if let Some(pid_file) = &config.fork_grandchild {
            let pid = fork_grandchild().map_err(|e| {
                PluginError::unavailable(format!("testkit: fork_grandchild failed: {e}"))
            })?;
            std::fs::write(host.resolve(pid_file), pid.to_string()).map_err(|e| {
                PluginError::unavailable(format!(
                    "testkit: cannot write {}: {e}",
                    pid_file.display()
                ))
            })?;
        }
        if let Some(flag) = &config.fail_new_when_exists {
            if host.resolve(std::path::Path::new(flag)).exists() {
                return Err(PluginError::invalid_config(format!(
                    "testkit: {flag} exists (fail_new_when_exists)"
                )));
            }
        }
        let mut items: Vec<Summary> = config.items.iter().map(Item::to_summary).collect();
        items.sort_by(|a, b| a.key_cmp(b));
        if config.log_calls {
            host.info(&format!("testkit source ready with {} items", items.len()));
        }
        Ok(TestkitSource {
            items,
            calls: AtomicU64::new(0),
            hung: AtomicBool::new(false),
            config,
            host,
        })
    }
}

export_plugin!(TestkitPlugin);

/// An ELF initialiser: it runs when the library is opened (`dlopen`), before any check of the host
/// can run. With `TRIBUTARY_TESTKIT_INIT_FAULT` set to `always`, or to the path of a file that
/// exists, it aborts the process that opens the library, as a library whose load-time constructor
/// crashes would.
#[used]
#[link_section = ".init_array"]
static INIT_FAULT: extern "C" fn() = init_fault;

extern "C" fn init_fault() {
    // SAFETY: getenv and access with NUL-terminated strings, then abort; only libc calls this early.
    unsafe {
        let value = libc::getenv(c"TRIBUTARY_TESTKIT_INIT_FAULT".as_ptr());
        if value.is_null() {
            return;
        }
        if libc::strcmp(value, c"always".as_ptr()) == 0 || libc::access(value, libc::F_OK) == 0 {
            libc::abort();
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    items: Vec<Item>,
    /// Serve this many generated items (names `{prefix}{index:010}`) instead of the inline ones.
    #[serde(default)]
    generate: u64,
    #[serde(default = "default_prefix")]
    prefix: String,
    /// Generated items' description length in bytes (default: a short text).
    description_bytes: Option<usize>,
    fail_new: Option<String>,
    panic_new: Option<String>,
    /// The constructor fails while this file exists (a new build that cannot start, for reloads).
    fail_new_when_exists: Option<String>,
    /// The constructor reads this file and fails when it cannot.
    read_on_new: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    error_on_call: Option<u64>,
    panic_on_call: Option<u64>,
    /// Every list call panics, with the same message.
    #[serde(default)]
    panic_always: bool,
    hang_on_call: Option<u64>,
    /// How long a "hang" lasts (default 60 s). Keep it finite: a runtime waits for its blocking
    /// threads when it shuts down.
    #[serde(default = "default_hang_ms")]
    hang_ms: u64,
    /// The hang waits for a call made in place: the first list call from `hang_on_call` on that
    /// does not run on one of the source's own threads (the host names them `src:<source>`).
    #[serde(default)]
    hang_in_place: bool,
    unordered_on_call: Option<u64>,
    oversize_on_call: Option<u64>,
    /// Ignore the seek key: answer from the start of the listing.
    stale_on_call: Option<u64>,
    /// Answer as a plugin that does not implement filtering: every item, whatever the filter.
    #[serde(default)]
    ignore_filter: bool,
    /// Give the second item the first one's identifier.
    duplicate_id_on_call: Option<u64>,
    /// Give the first item a 1 MiB description.
    huge_field_on_call: Option<u64>,
    /// Give the first item a display name that is not valid UTF-8.
    bad_utf8_on_call: Option<u64>,
    #[serde(default)]
    panic_in_detail: bool,
    /// A fault no in-process guard survives: "segfault" (a write through a null pointer), "abort",
    /// "stack_overflow", "allocate" (until an allocation fails) or "never_return".
    fault: Option<Fault>,
    /// The list call (from 1) on which `fault` fires.
    fault_on_call: Option<u64>,
    /// When given, `fault` fires only while this file does not exist, and creates it just before: a
    /// restarted process then serves normally.
    fault_marker: Option<PathBuf>,
    /// Answer `detail` with a display name that is not valid UTF-8.
    #[serde(default)]
    bad_utf8_in_detail: bool,
    /// Fail `detail` with an error whose message is this many bytes long.
    long_error_in_detail: Option<usize>,
    calls_file: Option<PathBuf>,
    #[serde(default)]
    log_calls: bool,
    /// Start a detached grandchild that keeps every inherited descriptor and sleeps; write its pid
    /// into this file.
    fork_grandchild: Option<PathBuf>,
    /// The constructor sleeps this long first.
    #[serde(default)]
    sleep_new_ms: u64,
    /// The constructor stops its own process (SIGSTOP).
    #[serde(default)]
    stop_new: bool,
}

/// Forks twice: the grandchild keeps the process's descriptors and sleeps until killed; the middle
/// child exits at once, so the grandchild is nobody's child here. Returns the grandchild's pid.
fn fork_grandchild() -> std::io::Result<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: plain system calls; between fork and _exit the children call only async-signal-safe
    // functions (fork, write, pause, _exit).
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let middle = libc::fork();
        if middle < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if middle == 0 {
            let grandchild = libc::fork();
            if grandchild == 0 {
                loop {
                    libc::pause();
                }
            }
            let bytes = grandchild.to_ne_bytes();
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut bytes = [0u8; 4];
        let read = libc::read(fds[0], bytes.as_mut_ptr().cast(), bytes.len());
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(middle, &mut status, 0);
        let pid = i32::from_ne_bytes(bytes);
        if read != 4 || pid <= 0 {
            return Err(std::io::Error::other("the grandchild did not start"));
        }
        Ok(pid)
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Fault {
    Segfault,
    Abort,
    StackOverflow,
    Allocate,
    NeverReturn,
}

impl Fault {
    fn fire(self) -> ! {
        match self {
            // SAFETY: none; this is the fault.
            Fault::Segfault => unsafe {
                std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1);
                unreachable!("a write through a null pointer returned")
            },
            Fault::Abort => std::process::abort(),
            Fault::StackOverflow => {
                fn deeper(n: u64) -> u64 {
                    if n == u64::MAX {
                        return 0;
                    }
                    let frame = std::hint::black_box([n; 512]);
                    deeper(frame[(n % 512) as usize] + 1) + frame[0]
                }
                deeper(0);
                unreachable!("unbounded recursion returned")
            }
            Fault::Allocate => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Zeroed memory is mapped but not touched: the address-space cap (RLIMIT_AS)
                    // stops it quickly, without using the machine's memory on the way.
                    held.push(vec![0u8; 64 << 20]);
                    std::hint::black_box(&held);
                }
            }
            Fault::NeverReturn => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
        }
    }
}

fn default_hang_ms() -> u64 {
    60_000
}

fn default_prefix() -> String {
    "pkg-".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    name: String,
    id: Option<String>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    deprecated: bool,
    /// The latest version's time (RFC 3339), sent as `package.updated` once normalised; this
    /// plugin does not declare `list.sort@1`, so the host orders its items by it.
    #[serde(default)]
    updated: String,
}

impl Item {
    fn to_summary(&self) -> Summary {
        Summary {
            identifier: RString::from(self.id.clone().unwrap_or_else(|| self.name.clone())),
            name: RString::from(self.name.as_str()),
            display_name: RString::from(self.display_name.as_str()),
            short_description: RString::from(self.description.as_str()),
            categories: self
                .categories
                .iter()
                .map(|c| RString::from(c.as_str()))
                .collect(),
            repository: RString::from(self.repository.as_str()),
            latest_version: RString::from(self.version.as_str()),
            deprecated: self.deprecated,
            extensions: tributary_plugin_api::order::normalize_timestamp(&self.updated)
                .map(|t| {
                    tributary_plugin_api::Extension::new(
                        tributary_plugin_api::keys::SUMMARY_UPDATED,
                        t,
                    )
                })
                .into_iter()
                .collect(),
            ..Summary::default()
        }
    }
}

/// Writes generated item `index`'s name, `{prefix}{index:010}`, into `buf` (cleared first).
fn write_name(buf: &mut String, prefix: &str, index: u64) {
    buf.clear();
    buf.push_str(prefix);
    write_digits(buf, index, 10);
}

/// Writes generated item `index`'s identifier, `g{index}`, into `buf` (cleared first).
fn write_identifier(buf: &mut String, index: u64) {
    buf.clear();
    buf.push('g');
    write_digits(buf, index, 1);
}

/// Appends `n` in decimal, zero-padded to `width` digits (what `format!("{n:0width$}")` writes,
/// without the formatting machinery: generated listings write a name per item and per search step).
fn write_digits(buf: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 || at == digits.len() {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    buf.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

pub struct TestkitSource {
    config: Config,
    items: Vec<Summary>,
    calls: AtomicU64,
    /// Set once the hang of `hang_in_place` has begun.
    hung: AtomicBool,
    host: Host,
}

impl TestkitSource {
    /// Whether list call `call` is the one that hangs.
    fn hangs_now(&self, call: u64) -> bool {
        let Some(from) = self.config.hang_on_call else {
            return false;
        };
        if !self.config.hang_in_place {
            return call == from;
        }
        let on_own_thread = std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with("src:"));
        call >= from && !on_own_thread && !self.hung.swap(true, Ordering::SeqCst)
    }

    fn generated(&self, index: u64) -> Summary {
        let mut name = String::with_capacity(self.config.prefix.len() + 10);
        write_name(&mut name, &self.config.prefix, index);
        let mut identifier = String::with_capacity(21);
        write_identifier(&mut identifier, index);
        Summary {
            identifier: RString::from(identifier),
            display_name: RString::from(name.as_str()),
            name: RString::from(name),
            latest_version: RString::from("1.0.0"),
            short_description: match self.config.description_bytes {
                Some(n) => RString::from("d".repeat(n)),
                None => RString::from("generated item"),
            },
            repository: RString::from("generated"),
            ..Summary::default()
        }
    }

    /// Whether generated item `index` comes after `key`, building only its name (and its identifier
    /// when the names tie) in `buf`.
    fn generated_is_after(&self, index: u64, key: &SeekKey, buf: &mut String) -> bool {
        write_name(buf, &self.config.prefix, index);
        match buf.as_bytes().cmp(key.name.as_bytes()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                write_identifier(buf, index);
                buf.as_bytes() > key.identifier.as_bytes()
            }
        }
    }

    /// Generated items, sought by binary search over their indices.
    fn list_generated(&self, request: &ListRequest, out: &mut Vec<Summary>) {
        let n = self.config.generate;
        let start = match &request.after {
            ROption::RNone => 0,
            ROption::RSome(key) => {
                let (mut lo, mut hi) = (0u64, n);
                let mut buf = String::new();
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.generated_is_after(mid, key, &mut buf) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            }
        };
        let mut i = start;
        while i < n && out.len() < request.limit as usize {
            let item = self.generated(i);
            if request.filter.matches(&item) {
                out.push(item);
            }
            i += 1;
        }
    }
}

impl PackageSource for TestkitSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(path) = &self.config.calls_file {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "list {call}");
            }
        }
        if self.config.log_calls {
            let left = match self.host.time_left() {
                Some(left) => format!("{} ms left", left.as_millis()),
                None => "no deadline".to_owned(),
            };
            self.host.info(&format!("list call {call}: {left}"));
        }
        let on = |n: Option<u64>| n == Some(call);
        if self.config.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.config.sleep_ms));
        }
        if let (Some(fault), true) = (self.config.fault, on(self.config.fault_on_call)) {
            let armed = match &self.config.fault_marker {
                Some(marker) => std::fs::File::create_new(marker).is_ok(),
                None => true,
            };
            if armed {
                fault.fire();
            }
        }
        if self.hangs_now(call) {
            self.host.info(&format!(
                "list call {call} hangs for {} ms",
                self.config.hang_ms
            ));
            std::thread::sleep(Duration::from_millis(self.config.hang_ms));
        }
        if on(self.config.error_on_call) {
            return Err(PluginError::unavailable(format!(
                "injected error on call {call}"
            )));
        }
        if on(self.config.panic_on_call) {
            panic!("injected panic on call {call}");
        }
        if self.config.panic_always {
            panic!("injected panic on every call");
        }
        let unfiltered;
        let request = if self.config.ignore_filter {
            unfiltered = ListRequest {
                filter: Default::default(),
                ..request.clone()
            };
            &unfiltered
        } else {
            request
        };
        let stale;
        let request = if on(self.config.stale_on_call) {
            stale = ListRequest {
                after: ROption::RNone,
                ..request.clone()
            };
            &stale
        } else {
            request
        };
        let mut page = Vec::new();
        if self.config.generate > 0 {
            page.reserve(request.limit.min(1024) as usize);
            self.list_generated(request, &mut page);
        } else {
            page = request.select(&self.items);
        }
        if on(self.config.duplicate_id_on_call) && page.len() >= 2 {
            page[1].identifier = page[0].identifier.clone();
            page[1].name = RString::from(format!("{}-dup", page[0].name));
            page.sort_by(|a, b| a.key_cmp(b));
        }
        if let (true, Some(first)) = (on(self.config.huge_field_on_call), page.first_mut()) {
            first.short_description = RString::from("x".repeat(1 << 20));
        }
        if let (true, Some(first)) = (on(self.config.bad_utf8_on_call), page.first_mut()) {
            // SAFETY: deliberately not UTF-8, to prove the host checks; the host only inspects bytes.
            first.display_name =
                unsafe { RString::from_utf8_unchecked(vec![0x66, 0xff, 0xfe].into()) };
        }
        if on(self.config.unordered_on_call) && page.len() >= 2 {
            page.swap(0, 1);
        }
        if on(self.config.oversize_on_call) {
            let extra = page.last().cloned().unwrap_or_default();
            page.push(extra);
        }
        Ok(page)
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        if self.config.panic_in_detail {
            panic!("injected panic in detail");
        }
        if let Some(len) = self.config.long_error_in_detail {
            return Err(PluginError::unavailable("e".repeat(len)));
        }
        let generated = identifier
            .strip_prefix('g')
            .and_then(|i| i.parse::<u64>().ok())
            .filter(|&i| i < self.config.generate && identifier == format!("g{i}"))
            .map(|i| self.generated(i));
        let summary = match generated {
            Some(summary) => summary,
            None => self
                .items
                .iter()
                .find(|s| s.identifier.as_str() == identifier)
                .cloned()
                .ok_or_else(|| PluginError::not_found(format!("no item with id {identifier:?}")))?,
        };
        let mut summary = summary;
        if self.config.bad_utf8_in_detail {
            // SAFETY: deliberately not UTF-8, to prove the host checks; the host only inspects bytes.
            summary.display_name =
                unsafe { RString::from_utf8_unchecked(vec![0x66, 0xff, 0xfe].into()) };
        }
        Ok(Detail {
            summary,
            versions: RVec::new(),
            ..Detail::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use tributary_plugin_api::{
        conformance::{check, Options},
        ErrorKind,
    };

    use super::*;

    fn source(config: &str) -> TestkitSource {
        TestkitPlugin::new_source(Host::detached("kit", None), config).unwrap()
    }

    #[test]
    fn generated_names_are_zero_padded_indices() {
        let mut buf = String::from("stale");
        for (index, width) in [
            (0u64, 10),
            (7, 10),
            (1234567890, 10),
            (98765432101, 10),
            (0, 1),
            (42, 1),
        ] {
            write_digits(&mut buf, index, width);
            assert_eq!(buf, format!("stale{index:0width$}"));
            buf.truncate(5);
        }
        write_name(&mut buf, "pkg-", 17);
        assert_eq!(buf, "pkg-0000000017");
        write_identifier(&mut buf, 17);
        assert_eq!(buf, "g17");
    }

    #[test]
    fn inline_and_generated_items_conform() {
        let inline = source(
            r#"{"items":[{"name":"b","categories":["db"],"repository":"r"},{"name":"a","id":"2"},
                {"name":"a","id":"1","deprecated":true},{"name":"c","description":"Cee"}]}"#,
        );
        let report = check(&inline, &Options::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.items, 4);
        let generated = source(r#"{"generate":700}"#);
        let report = check(&generated, &Options::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.items, 700);
    }

    #[test]
    fn faults_fail_the_kit() {
        let stale = source(r#"{"generate":50,"stale_on_call":3}"#);
        assert!(!check(&stale, &Options::default()).passed());
        let panics = source(r#"{"items":[{"name":"a"}],"panic_in_detail":true}"#);
        let report = check(&panics, &Options::default());
        let failure = report
            .checks
            .iter()
            .find_map(|c| c.failure.clone())
            .unwrap();
        assert!(
            failure.starts_with(
                "detail of \"a\": the source panicked: panicked: injected panic in detail"
            ),
            "{report}"
        );
        let e = TestkitPlugin::new_source(Host::detached("kit", None), r#"{"generate":"x"}"#)
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert_eq!(
            e.message.as_str(),
            "testkit config: key `generate`: invalid type: string \"x\", expected u64"
        );
    }
}
