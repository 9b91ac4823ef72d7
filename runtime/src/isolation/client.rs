//! The host side of an isolated source: spawning, calling, killing and restarting its runner.

use std::{
    collections::HashMap,
    io::{BufReader, BufWriter},
    os::{
        fd::AsRawFd,
        unix::{net::UnixStream, process::CommandExt},
    },
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use super::{describe_exit, pb};
use tributary_plugin_api::{Detail, ErrorKind, ListRequest, PackageSource, PluginError, Summary};

use super::{frame, runner, RunnerSpec, RUNNER_ARG, RUNNER_PROTOCOL_VERSION};

/// The first wait before a dead runner is started again; it doubles per death in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Reply = Result<pb::response::Result, PluginError>;

/// One live runner.
struct Running {
    pid: u32,
    /// The runner's process group (its pid), killed as a whole; see [`Group`].
    group: Arc<Group>,
    writer: Arc<Mutex<BufWriter<UnixStream>>>,
    /// The host end of the socket: shut down to unblock the reader.
    stream: UnixStream,
    pending: Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>,
}

/// A runner's process group. The runner leads it (`process_group(0)` at spawn), so whatever it
/// starts (a plugin's helpers, a detached grandchild) is in it too unless it leaves on purpose.
///
/// The group id stays valid while the runner is not reaped: [`watch`] waits for the runner's exit
/// without reaping it (`WNOWAIT`), kills the group, then reaps, all under this lock, so no kill can
/// reach a process that reused the number.
struct Group {
    /// `Some(pgid)` until the runner is reaped.
    pgid: Mutex<Option<libc::pid_t>>,
}

impl Group {
    fn new(pid: u32) -> Arc<Group> {
        let group = Arc::new(Group {
            pgid: Mutex::new(Some(pid as libc::pid_t)),
        });
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid as libc::pid_t);
        register_exit_hook();
        group
    }

    /// SIGKILL to every process of the group (nothing once the runner is reaped).
    fn kill(&self) {
        if let Some(pgid) = *self.pgid.lock().unwrap_or_else(|p| p.into_inner()) {
            // SAFETY: the group leader is our unreaped child, so `pgid` still names its group.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    /// Kills what is left of the group, then reaps the (already exited) runner.
    fn kill_and_reap(&self, child: &mut Child) -> std::io::Result<ExitStatus> {
        let mut pgid = self.pgid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = pgid.take() {
            // SAFETY: as in `kill`: the leader is not reaped yet.
            unsafe {
                libc::killpg(id, libc::SIGKILL);
            }
            LIVE_GROUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|g| *g != id);
        }
        child.wait()
    }
}

/// The groups of runners not reaped yet: killed when the server process exits.
static LIVE_GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// Registers (once) an `atexit` hook that kills every live runner group: a runner dies with the
/// server anyway (`PR_SET_PDEATHSIG`), but what it started does not.
fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn kill_live_groups() {
        // try_lock: a thread that held the lock when `exit` was called will never release it.
        if let Ok(groups) = LIVE_GROUPS.try_lock() {
            for pgid in groups.iter() {
                // SAFETY: each group's leader is an unreaped child of this process.
                unsafe {
                    libc::killpg(*pgid, libc::SIGKILL);
                }
            }
        }
    }
    ONCE.call_once(|| {
        // SAFETY: registers a function with no preconditions.
        unsafe {
            libc::atexit(kill_live_groups);
        }
    });
}

/// Blocks until the process `pid` (our child) has exited, without reaping it.
fn wait_exited(pid: u32) -> std::io::Result<()> {
    loop {
        // SAFETY: waitid writes into the zeroed siginfo it is given.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[derive(Default)]
struct State {
    running: Option<Arc<Running>>,
    /// A start is under way (on its own thread) since this instant, with this runner pid once
    /// spawned.
    starting: Option<(Instant, Option<u32>)>,
    /// The first start failed (no hello in time, a failed constructor, a crash before the hello):
    /// the source never served, and is failed for good (a reload builds it again).
    start_failed: Option<PluginError>,
    /// A runner said hello at least once: later failed starts are retried with back-off.
    ever_started: bool,
    /// The source was dropped: a start that ends now kills its runner.
    retired: bool,
    /// Starts after the first, successful or not.
    restarts: u64,
    /// Why the last runner ended.
    last_exit: Option<String>,
    /// Deaths in a row since the last call that was answered.
    deaths_in_a_row: u32,
    /// No start before this instant.
    retry_at: Option<Instant>,
    next_id: u64,
}

/// A runner's state and the condition variable a change of it is announced on (a start ending).
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: std::sync::Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A [`PackageSource`] whose calls run in a runner process.
pub struct RunnerSource {
    spec: Arc<RunnerSpec>,
    shared: Arc<Shared>,
}

/// What `ListPlugins` and metrics can read about a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerStatus {
    /// The live runner's pid, or the pid of the one starting.
    pub pid: Option<u32>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    /// A start under way: how long it has taken so far.
    pub starting: Option<Duration>,
    /// Why the first start failed (the source never served).
    pub start_failed: Option<PluginError>,
}

impl RunnerSource {
    /// Begins the first start of a runner and returns at once: the runner loads its library and
    /// builds its source on a thread of its own, within the source timeout. Until it says hello the
    /// source's calls fail at once as `starting`; when the start fails they fail with its reason.
    pub fn start(spec: RunnerSpec) -> RunnerSource {
        let source = RunnerSource {
            spec: Arc::new(spec),
            shared: Arc::new(Shared::default()),
        };
        let mut state = source.shared.lock();
        begin_start(&source.spec, &source.shared, &mut state);
        drop(state);
        source
    }

    pub fn status(&self) -> RunnerStatus {
        self.handle().status()
    }

    /// A handle that reads this runner's status after the source was boxed for the engine.
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle(self.shared.clone())
    }
}

/// Reads a runner's status (pid, restarts, last exit) for `ListPlugins` and metrics.
#[derive(Clone)]
pub struct RunnerHandle(Arc<Shared>);

impl RunnerHandle {
    pub fn status(&self) -> RunnerStatus {
        let state = self.0.lock();
        RunnerStatus {
            pid: state
                .running
                .as_ref()
                .map(|r| r.pid)
                .or(state.starting.and_then(|(_, pid)| pid)),
            restarts: state.restarts,
            last_exit: state.last_exit.clone(),
            starting: state.starting.map(|(since, _)| since.elapsed()),
            start_failed: state.start_failed.clone(),
        }
    }

    /// Waits until the start under way (if any) has ended, or `deadline`; then `Err` with the
    /// reason when the first start failed.
    pub fn wait_started(&self, deadline: Instant) -> Result<(), PluginError> {
        let mut state = self.0.lock();
        while state.starting.is_some() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match &state.start_failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Starts a runner on a thread of its own unless a start is under way; the thread records the
/// outcome in `state` and announces it on `shared.changed`.
fn begin_start(spec: &Arc<RunnerSpec>, shared: &Arc<Shared>, state: &mut State) {
    if state.starting.is_some() {
        return;
    }
    state.starting = Some((Instant::now(), None));
    let (spec, shared) = (spec.clone(), shared.clone());
    let thread_shared = shared.clone();
    let started = std::thread::Builder::new()
        .name(format!("runner-start-{}", spec.source))
        .spawn(move || {
            let shared = thread_shared;
            let result = spawn(&spec, &shared);
            let mut state = shared.lock();
            state.starting = None;
            match result {
                Ok(running) if state.retired => {
                    running.group.kill();
                }
                Ok(running) => {
                    state.running = Some(running);
                    state.ever_started = true;
                }
                Err(e) if state.ever_started => {
                    state.deaths_in_a_row += 1;
                    state.retry_at = Some(Instant::now() + backoff(state.deaths_in_a_row));
                    state.last_exit = Some(e.message.to_string());
                    tracing::warn!(source = %spec.source, "{}", e.message);
                }
                Err(e) => {
                    tracing::warn!(source = %spec.source, "source failed: {e}");
                    state.last_exit = Some(e.message.to_string());
                    state.start_failed = Some(e);
                }
            }
            drop(state);
            shared.changed.notify_all();
        });
    if let Err(e) = started {
        state.starting = None;
        let e = PluginError::unavailable(format!("runner start thread: {e}"));
        if state.ever_started {
            state.last_exit = Some(e.message.to_string());
        } else {
            state.start_failed = Some(e);
        }
    }
}

/// The error of a call made while the runner starts.
fn starting_error(spec: &RunnerSpec, since: Instant) -> PluginError {
    PluginError::new(
        ErrorKind::Starting,
        format!(
            "runner is starting (for {} ms; it has up to the source timeout of {} ms to load its library and build the source)",
            since.elapsed().as_millis(),
            spec.call_timeout.as_millis()
        ),
    )
}

/// Spawns a runner and waits for its hello, at most the source timeout.
fn spawn(spec: &RunnerSpec, shared: &Arc<Shared>) -> Result<Arc<Running>, PluginError> {
    let (host, child_end) =
        UnixStream::pair().map_err(|e| PluginError::unavailable(format!("runner socket: {e}")))?;
    let mut command = Command::new(&spec.program);
    command
        .arg(RUNNER_ARG)
        .arg(&spec.library)
        .arg(&spec.plugin)
        .arg(if spec.strict_permissions {
            "strict"
        } else {
            "lax"
        })
        .arg(&spec.sha256)
        .args(
            spec.allow_read
                .iter()
                .flat_map(|p| [std::ffi::OsStr::new("--read"), p.as_os_str()]),
        )
        .args(
            spec.allow_write
                .iter()
                .flat_map(|p| [std::ffi::OsStr::new("--write"), p.as_os_str()]),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own process group: the runner and all it starts are killed together.
        .process_group(0);
    for name in &spec.env_remove {
        command.env_remove(name);
    }
    let child_fd = child_end.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;
    let memory = spec.memory_limit_mb.map(|mb| mb.saturating_mul(1 << 20));
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (dup2, fcntl, close_range, prctl, setrlimit).
    unsafe {
        command.pre_exec(move || harden_child(child_fd, parent, memory));
    }
    let child = spawn_from_keeper(command)
        .map_err(|e| PluginError::unavailable(format!("cannot start runner: {e}")))?;
    drop(child_end);
    let pid = child.id();
    let group = Group::new(pid);
    if let Some((_, at)) = &mut shared.lock().starting {
        *at = Some(pid);
    }

    let reader_stream = host
        .try_clone()
        .map_err(|e| PluginError::unavailable(format!("runner socket: {e}")))?;
    let writer = host
        .try_clone()
        .map_err(|e| PluginError::unavailable(format!("runner socket: {e}")))?;
    let mut reader = BufReader::new(reader_stream);
    let start = pb::Request {
        id: 0,
        call: Some(pb::request::Call::Start(pb::Start {
            config: spec.config_json.clone(),
            source_name: spec.source.clone(),
            base_dir: spec.base_dir.to_string_lossy().into_owned(),
            source_timeout_ms: spec.call_timeout.as_millis() as u64,
        })),
    };
    // A failed write shows up as a missing hello below.
    let _ = frame::write(&mut &host, &start);

    // The hello, with a bound on how long loading may take.
    host.set_read_timeout(Some(spec.call_timeout)).ok();
    let hello = frame::read::<pb::Response>(&mut reader);
    host.set_read_timeout(None).ok();
    let mut child = child;
    let hello = match hello {
        Ok(Some(pb::Response {
            result: Some(pb::response::Result::Hello(hello)),
            ..
        })) => hello,
        other => {
            group.kill();
            let status = group.kill_and_reap(&mut child).ok();
            let why = match other {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    format!(
                            "it did not load its library and build the source within the source timeout of {} ms",
                            spec.call_timeout.as_millis()
                        )
                }
                Err(e) => format!("no hello: {e}"),
                Ok(_) => "no hello".to_owned(),
            };
            return Err(PluginError::new(
                ErrorKind::Crashed,
                format!(
                    "runner for source {:?} failed to start ({why}); {}",
                    spec.source,
                    status.map(describe_exit).unwrap_or_default()
                ),
            ));
        }
    };
    if hello.version != RUNNER_PROTOCOL_VERSION {
        group.kill();
        let _ = group.kill_and_reap(&mut child);
        return Err(PluginError::unavailable(format!(
            "runner speaks protocol {}, the server {RUNNER_PROTOCOL_VERSION}",
            hello.version
        )));
    }
    if let Some(e) = hello.error {
        // The runner exits after a failed hello; what it started goes with it.
        let _ = group.kill_and_reap(&mut child);
        return Err(runner::error_from_pb(e));
    }

    let running = Arc::new(Running {
        pid,
        group,
        writer: Arc::new(Mutex::new(BufWriter::new(writer))),
        stream: host,
        pending: Arc::new(Mutex::new(HashMap::new())),
    });
    let (state, watched, source) = (shared.clone(), running.clone(), spec.source.clone());
    let watcher = std::thread::Builder::new()
        .name(format!("runner-wait-{}", spec.source))
        .spawn(move || watch(child, watched, state, source));
    if let Err(e) = watcher {
        // The child went with the closure: kill the group; the runner ends as a zombie.
        running.group.kill();
        return Err(PluginError::unavailable(format!(
            "runner watcher thread: {e}"
        )));
    }
    let watched = running.clone();
    std::thread::Builder::new()
        .name(format!("runner-{}", spec.source))
        .spawn(move || read_loop(reader, watched))
        .map_err(|e| {
            running.group.kill();
            PluginError::unavailable(format!("runner reader thread: {e}"))
        })?;
    tracing::info!(source = %spec.source, pid, "runner started");
    Ok(running)
}

impl RunnerSource {
    /// The live runner. When there is none: the reason of a failed first start, or `starting`
    /// while a start is under way, or a start begun (when the last runner died and its back-off
    /// has passed) and `starting`.
    fn runner(&self) -> Result<(Arc<Running>, u64), PluginError> {
        let mut state = self.shared.lock();
        state.next_id += 1;
        let id = state.next_id;
        if let Some(running) = &state.running {
            return Ok((running.clone(), id));
        }
        if let Some(e) = &state.start_failed {
            return Err(e.clone());
        }
        if let Some((since, _)) = state.starting {
            return Err(starting_error(&self.spec, since));
        }
        let last = state.last_exit.clone().unwrap_or_default();
        if let Some(at) = state.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(PluginError::new(
                    ErrorKind::Crashed,
                    format!(
                        "runner restarts in {} ms; it {last}",
                        (at - now).as_millis()
                    ),
                ));
            }
        }
        state.restarts += 1;
        begin_start(&self.spec, &self.shared, &mut state);
        Err(starting_error(&self.spec, Instant::now()))
    }

    fn send(&self, call: pb::request::Call) -> Reply {
        let (running, id) = self.runner()?;
        let (tx, rx) = mpsc::channel();
        running.pending.lock().unwrap().insert(id, tx);
        let request = pb::Request {
            id,
            call: Some(call),
        };
        if let Err(e) = frame::write(&mut *running.writer.lock().unwrap(), &request) {
            running.pending.lock().unwrap().remove(&id);
            // The reader sees the same broken socket and records why.
            return Err(PluginError::new(
                ErrorKind::Crashed,
                format!("runner is gone: {e}"),
            ));
        }
        match rx.recv_timeout(self.spec.call_timeout) {
            Ok(reply) => {
                if reply.is_ok() {
                    self.shared.lock().deaths_in_a_row = 0;
                }
                reply
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    source = %self.spec.source,
                    pid = running.pid,
                    "a call exceeded the source timeout of {} ms; killing the runner",
                    self.spec.call_timeout.as_millis()
                );
                kill(&running, "a call exceeded the source timeout");
                Err(PluginError::new(
                    ErrorKind::Crashed,
                    format!(
                        "runner killed: a call exceeded the source timeout of {} ms",
                        self.spec.call_timeout.as_millis()
                    ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(PluginError::new(
                ErrorKind::Crashed,
                "runner ended without an answer",
            )),
        }
    }
}

impl Drop for RunnerSource {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.retired = true;
        if let Some(running) = state.running.take() {
            // The source is retired (a reload) or the server is stopping: the runner and all it
            // started are killed; the watcher thread reaps it.
            let _ = running.stream.shutdown(std::net::Shutdown::Both);
            running.group.kill();
        }
    }
}

/// Spawns `command` from one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked the child ends, and restarts happen on blocking-pool threads that end when idle: forking
/// from a thread that lives as long as the process keeps the signal for the server's death only.
fn spawn_from_keeper(command: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: std::sync::OnceLock<Mutex<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("runner-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("runner spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap()
        .send((command, tx))
        .map_err(|_| std::io::Error::other("runner spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("runner spawner thread is gone"))?
}

/// Marks why the runner is being killed and kills it; the reader thread reaps it.
fn kill(running: &Running, why: &str) {
    KILL_REASONS
        .lock()
        .unwrap()
        .push((running.pid, why.to_owned()));
    running.group.kill();
}

/// Why the host killed a runner, by pid, for the reader thread's report.
static KILL_REASONS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

fn take_kill_reason(pid: u32) -> Option<String> {
    let mut reasons = KILL_REASONS.lock().unwrap();
    let at = reasons.iter().position(|(p, _)| *p == pid)?;
    Some(reasons.swap_remove(at).1)
}

fn backoff(deaths: u32) -> Duration {
    let doublings = deaths.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Delivers the runner's answers to the calls waiting for them, until its socket closes. A socket
/// that closes while the runner lives (it closed its end) kills the runner; its exit is [`watch`]'s.
fn read_loop(mut reader: BufReader<UnixStream>, running: Arc<Running>) {
    while let Ok(Some(response)) = frame::read::<pb::Response>(&mut reader) {
        let reply = match response.result {
            Some(pb::response::Result::Error(e)) => Err(runner::error_from_pb(e)),
            Some(result) => Ok(result),
            None => Err(PluginError::internal("runner sent an empty response")),
        };
        if let Some(tx) = running.pending.lock().unwrap().remove(&response.id) {
            let _ = tx.send(reply);
        }
    }
    running.group.kill();
}

/// Waits for the runner's exit (not for its socket: a process it started may hold the socket
/// open for ever), kills its whole group, reaps it, and records why it ended so that the next call
/// starts a new one.
fn watch(mut child: Child, running: Arc<Running>, shared: Arc<Shared>, source: String) {
    let waited = wait_exited(running.pid);
    let status = running.group.kill_and_reap(&mut child);
    // Unblocks the reader, whatever still holds the other end.
    let _ = running.stream.shutdown(std::net::Shutdown::Both);
    let killed_for = take_kill_reason(running.pid);
    // A runner exits 0 only when its socket closed: the server is shutting down or let it go.
    let clean = killed_for.is_none() && status.as_ref().is_ok_and(|s| s.success());
    let reason = match (killed_for, status) {
        (Some(why), _) => format!("was killed by the server: {why}"),
        (None, Ok(status)) => describe_exit(status),
        (None, Err(e)) => format!(
            "ended; waiting for it failed: {}",
            waited.err().unwrap_or(e)
        ),
    };
    let reason = format!("runner (pid {}) {reason}", running.pid);
    let retired = {
        let mut state = shared.lock();
        let current = state
            .running
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &running));
        if current {
            state.running = None;
        }
        state.deaths_in_a_row += 1;
        state.retry_at = Some(Instant::now() + backoff(state.deaths_in_a_row));
        state.last_exit = Some(reason.clone());
        !current
    };
    if retired || clean {
        tracing::debug!(source = %source, "{reason}");
    } else {
        tracing::warn!(source = %source, "{reason}");
    }
    for (_, tx) in running.pending.lock().unwrap().drain() {
        let _ = tx.send(Err(PluginError::new(ErrorKind::Crashed, reason.clone())));
    }
}

/// Runs in the forked child before `exec`: moves the socket to descriptor 3, closes every other
/// inherited descriptor above 2, dies with the parent, forbids privilege gain, caps memory.
fn harden_child(fd: i32, parent: libc::pid_t, memory: Option<u64>) -> std::io::Result<()> {
    // SAFETY: plain system calls on descriptors and limits of this (child) process.
    unsafe {
        if fd == 3 {
            // dup2 onto itself keeps close-on-exec: clear it explicitly.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        } else if libc::dup2(fd, 3) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Every descriptor from 4 up is closed (close_range exists since Linux 5.9; on older kernels
        // the descriptors are close-on-exec anyway when Rust opened them).
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died between fork and prctl.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(bytes) = memory {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

impl PackageSource for RunnerSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        match self.send(pb::request::Call::List(runner::list_to_pb(request)))? {
            pb::response::Result::List(list) => Ok(list
                .items
                .into_iter()
                .map(runner::summary_from_pb)
                .collect()),
            _ => Err(PluginError::internal(
                "runner answered a list with another kind",
            )),
        }
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        let call = pb::request::Call::Detail(pb::DetailCall {
            identifier: identifier.to_owned(),
        });
        match self.send(call)? {
            pb::response::Result::Detail(d) => Ok(runner::detail_from_pb(d)),
            _ => Err(PluginError::internal(
                "runner answered a detail with another kind",
            )),
        }
    }

    /// Named calls (`status@1`, ...) go to the runner like `list` and `detail`; the host decides
    /// which to make from the capabilities the library declares.
    fn call(&self, method: &str, version: u32, payload: &str) -> Result<String, PluginError> {
        let call = pb::request::Call::Named(pb::NamedCall {
            method: method.to_owned(),
            version,
            payload: payload.to_owned(),
        });
        match self.send(call)? {
            pb::response::Result::Text(text) => Ok(text),
            _ => Err(PluginError::internal(
                "runner answered a named call with another kind",
            )),
        }
    }
}
