//! Process isolation (`isolation = "process"`): faults that end a process leave the server serving,
//! the faulty source is reported and serves again after its runner restarts; the same faults in the
//! server's own process end the server. Everything runs the real `tributary` binary as a child of the
//! test, so that no fault can touch the test process.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{artifacts, keys, list, list_request, PluginDir};

use crate::binary::{terminate, write_config};

/// The good source (in-process) and the faulty one; `{mode}` and `{fault}` are filled in.
fn sources(marker: &std::path::Path, fault: &str, isolated: bool) -> String {
    // The marker is written by the plugin: its folder is granted to the runner (`allow_write`).
    let isolation = if isolated {
        format!(
            "isolation = \"process\"\nmemory_limit_mb = 512\nallow_write = [{:?}]\n",
            marker.parent().unwrap().display().to_string()
        )
    } else {
        String::new()
    };
    format!(
        r#"source_timeout_ms = 3000
unhealthy_backoff_ms = 100
[[source]]
name = "good"
plugin = "testkit"
config = {{ items = [{{ name = "a" }}, {{ name = "c" }}, {{ name = "e" }}] }}
[[source]]
name = "bad"
plugin = "testkit"
{isolation}config = {{ items = [{{ name = "b" }}, {{ name = "d" }}], fault = "{fault}", fault_on_call = 1, fault_marker = {marker:?} }}
"#,
        marker = marker.display().to_string()
    )
}

/// Starts `tributary serve`; `memory_cap` sets the server's own address-space limit (in bytes).
fn spawn(config: &std::path::Path, memory_cap: Option<u64>) -> (Child, String) {
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--grace-ms", "300", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(bytes) = memory_cap {
        // SAFETY: setrlimit only, in the forked child.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().expect("start tributary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    tributary_tests::wait_until_started(&address);
    (child, address)
}

async fn client(address: &str) -> PackagesServiceClient<Channel> {
    PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

const ALL: [&str; 5] = ["a@good/a", "b@bad/b", "c@good/c", "d@bad/d", "e@good/e"];
const GOOD: [&str; 3] = ["a@good/a", "c@good/c", "e@good/e"];

/// The pids of `pid`'s children (every thread's `children` list).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no code).
pub(crate) fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: &[u32]) {
    let until = Instant::now() + Duration::from_secs(20);
    while !pids.iter().all(|p| is_gone(*p)) {
        assert!(
            Instant::now() < until,
            "runners {pids:?} outlived the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One fault in an isolated source: the first page is the good source's items exactly, with the
/// faulty source named with `kind`; later pages (after the runner restarts) are everything.
async fn isolated_fault(fault: &str, kinds: &[&str], reason: &str) {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fired");
    let config = write_config(dir.path(), plugins.path(), &sources(&marker, fault, true));
    let (child, address) = spawn(&config, None);
    let runners = children_of(child.id());
    assert_eq!(runners.len(), 1, "one runner for the one isolated source");
    let mut client = client(&address).await;

    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), GOOD, "{fault}");
    assert_eq!(
        page.failed_sources.len(),
        1,
        "{fault}: {:?}",
        page.failed_sources
    );
    let failed = &page.failed_sources[0];
    assert_eq!(failed.source, "bad");
    assert!(
        kinds.contains(&failed.kind.as_str()),
        "{fault}: kind {:?} ({})",
        failed.kind,
        failed.reason
    );
    assert!(marker.exists(), "{fault}: the fault fired");
    assert!(
        is_gone(runners[0]) || fault == "never_return",
        "{fault}: the runner died"
    );

    // The server itself never stopped: the good source keeps serving while the runner restarts,
    // and then the faulty source serves its items again.
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen_reason = failed.reason.contains(reason);
    let page = loop {
        let page = list(&mut client, 10, "", None).await;
        if page.failed_sources.is_empty() {
            break page;
        }
        assert_eq!(keys(&page.available_package_summaries), GOOD);
        seen_reason |= page.failed_sources[0].reason.contains(reason);
        assert!(
            Instant::now() < until,
            "{fault}: never served again: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(keys(&page.available_package_summaries), ALL, "{fault}");
    assert!(seen_reason, "{fault}: no failure said {reason:?}");
    let now = children_of(child.id());
    assert_eq!(now.len(), 1, "{fault}: one runner again");
    assert_ne!(now, runners, "{fault}: a new runner");
    assert_eq!(
        terminate(child).code(),
        Some(0),
        "{fault}: the server exits 0 on SIGTERM"
    );
    wait_gone(&now);
}

#[tokio::test]
async fn isolated_segfault() {
    isolated_fault("segfault", &["crashed"], "signal 11").await;
}

#[tokio::test]
async fn isolated_abort() {
    isolated_fault("abort", &["crashed"], "signal 6").await;
}

#[tokio::test]
async fn isolated_stack_overflow() {
    // Rust's guard page handler reports the overflow and aborts.
    isolated_fault("stack_overflow", &["crashed"], "signal").await;
}

#[tokio::test]
async fn isolated_allocation_past_the_memory_limit() {
    isolated_fault("allocate", &["crashed"], "signal").await;
}

#[tokio::test]
async fn isolated_call_that_never_returns_is_killed() {
    // The guard's deadline reports `timeout`; the runner is then killed, which frees the stuck call.
    isolated_fault("never_return", &["timeout", "crashed"], "").await;
}

/// The same faults in the server's own process end the server (the difference isolation makes). A
/// call that never returns does not end it, but holds one of its threads until it exits.
#[tokio::test]
async fn in_process_faults_end_the_server() {
    let cases = [
        ("segfault", libc::SIGSEGV),
        ("abort", libc::SIGABRT),
        ("stack_overflow", libc::SIGABRT),
        ("allocate", libc::SIGABRT),
    ];
    for (fault, signal) in cases {
        let plugins = PluginDir::with(&["testkit"]);
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("fired");
        let config = write_config(dir.path(), plugins.path(), &sources(&marker, fault, false));
        // Cap the server at 2 GiB so the runaway allocation ends it instead of straining the machine.
        let (mut child, address) = spawn(&config, Some(2 << 30));
        let mut client = client(&address).await;
        let answer = client
            .list_available_package_summaries(list_request(10, "", None))
            .await;
        assert!(answer.is_err(), "{fault}: the server answered: {answer:?}");
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(signal),
            "{fault}: in-process the server died of the fault: {status:?}"
        );
        assert!(marker.exists());
    }
}

/// `kill -9` of the server: its runners exit (their socket closes; `PR_SET_PDEATHSIG`).
#[tokio::test]
async fn runners_do_not_outlive_a_killed_server() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "[[source]]\nname = \"one\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"a\" }] }\n[[source]]\nname = \"two\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"b\" }] }\n",
    );
    let (mut child, address) = spawn(&config, None);
    let runners = children_of(child.id());
    assert_eq!(runners.len(), 2);
    let page = list(&mut client(&address).await, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a@one/a", "b@two/b"]
    );
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    wait_gone(&runners);
}

#[test]
fn a_bad_isolation_setting_names_the_key() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    for (extra, needle) in [
        ("isolation = \"sandbox\"\n", "unknown variant `sandbox`"),
        ("memory_limit_mb = 100\n", "key `source[0].isolation`"),
        (
            "isolation = \"process\"\nmemory_limit_mb = 0\n",
            "key `source[0].memory_limit_mb`",
        ),
    ] {
        let text = format!("[[source]]\nname = \"x\"\nplugin = \"testkit\"\n{extra}");
        let config = write_config(dir.path(), plugins.path(), &text);
        let output = Command::new(&artifacts().binary)
            .args(["plugins", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{extra}: {stderr}");
        assert!(stderr.contains(needle), "{extra}: {stderr}");
    }
}

/// What the runner is denied: inherited descriptors (only 0-3 remain), the variables in `env_remove`,
/// privilege gain (`NoNewPrivs`), address space past `memory_limit_mb`.
#[tokio::test]
async fn the_runner_gets_only_what_it_needs() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "[[source]]\nname = \"one\"\nplugin = \"testkit\"\nisolation = \"process\"\nmemory_limit_mb = 300\nenv_remove = [\"TRIBUTARY_TEST_SECRET\"]\nconfig = { items = [{ name = \"a\" }] }\n",
    );
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("TRIBUTARY_TEST_SECRET", "hunter2")
        .env("TRIBUTARY_TEST_KEPT", "kept")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    tributary_tests::wait_until_started(&address);
    let page = list(&mut client(&address).await, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@one/a"]);

    let runners = children_of(child.id());
    assert_eq!(runners.len(), 1);
    let runner = runners[0];
    let environ = std::fs::read(format!("/proc/{runner}/environ")).unwrap();
    let environ: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(environ.contains(&&b"TRIBUTARY_TEST_KEPT=kept"[..]));
    assert!(
        !environ
            .iter()
            .any(|v| v.starts_with(b"TRIBUTARY_TEST_SECRET")),
        "the secret was removed"
    );
    assert!(
        !environ
            .iter()
            .any(|v| v.starts_with(b"TRIBUTARY_RUNNER_CONFIG")),
        "the runner dropped its configuration variable after reading it"
    );
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{runner}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    // Above stdio, only the socket on 3, the runner's own clones of it (reader and writer), and the
    // sealed in-memory copy of the library the runner loaded itself.
    let link = |fd: u32| std::fs::read_link(format!("/proc/{runner}/fd/{fd}")).unwrap();
    assert_eq!(fds[..4], [0, 1, 2, 3]);
    assert!(link(3).to_string_lossy().starts_with("socket:["));
    let mut copies = 0;
    for fd in &fds[3..] {
        if link(*fd)
            .to_string_lossy()
            .starts_with("/memfd:tributary-plugin-")
        {
            copies += 1;
            continue;
        }
        assert_eq!(
            link(*fd),
            link(3),
            "descriptor {fd} is neither the runner's socket nor its library"
        );
    }
    assert_eq!(copies, 1, "one library copy");
    let status = std::fs::read_to_string(format!("/proc/{runner}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "{status}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{runner}/limits")).unwrap();
    let address_space = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap();
    assert_eq!(
        address_space.split_whitespace().collect::<Vec<_>>()[3..6],
        ["314572800", "314572800", "bytes"]
    );
    assert_eq!(terminate(child).code(), Some(0));
    wait_gone(&runners);
}

/// The figures of process isolation, printed (no timing is asserted): a 20-item page from an
/// isolated source vs the same source in-process, the time from a runner's crash to serving again,
/// and the memory of a runner. Run with
/// `cargo test -p tributary-tests --test e2e isolation::figures -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "prints figures; run on demand"]
async fn figures() {
    const PAGES: usize = 300;
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let mut medians = Vec::new();
    for isolation in ["", "isolation = \"process\"\n"] {
        let config = write_config(
            dir.path(),
            plugins.path(),
            &format!("[[source]]\nname = \"s\"\nplugin = \"testkit\"\n{isolation}config = {{ generate = 10000 }}\n"),
        );
        let (child, address) = spawn(&config, None);
        let mut client = client(&address).await;
        let mut token = String::new();
        let mut times = Vec::with_capacity(PAGES);
        for _ in 0..PAGES {
            let started = Instant::now();
            let page = list(&mut client, 20, &token, None).await;
            times.push(started.elapsed());
            assert_eq!(page.available_package_summaries.len(), 20);
            token = page.next_page_token;
        }
        times.sort();
        let (median, p90) = (times[PAGES / 2], times[PAGES * 9 / 10]);
        let mode = if isolation.is_empty() {
            "in-process"
        } else {
            "process"
        };
        println!("20-item page, {mode}: median {median:?}, p90 {p90:?} over {PAGES} pages");
        medians.push(median);
        if !isolation.is_empty() {
            let runner = children_of(child.id())[0];
            let rss = |pid: u32| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap()
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .unwrap()
                    .to_owned()
            };
            println!(
                "memory: runner {} / server {}",
                rss(runner),
                rss(child.id())
            );
            // Crash to serving again: kill the runner, then ask until a page has no failure. This
            // includes the first restart back-off (100 ms).
            let killed = Instant::now();
            Command::new("kill")
                .args(["-KILL", &runner.to_string()])
                .status()
                .unwrap();
            loop {
                let page = list(&mut client, 20, "", None).await;
                if page.failed_sources.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!(
                "crash to serving again: {:?} (includes the 100 ms back-off)",
                killed.elapsed()
            );
        }
        terminate(child);
    }
    println!(
        "ratio process / in-process (medians): {:.2}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}

/// Landlock: an isolated source reads below its base directory and system folders, nothing else,
/// and writes nowhere; the same source in-process reads what the server can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_source_reads_only_its_own_paths() {
    use tributary_proto::v1::{plugins_service_client::PluginsServiceClient, ListPluginsRequest};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    // A file outside the config's folder, and one inside it.
    let elsewhere = tempfile::Builder::new()
        .prefix("elsewhere-")
        .tempdir_in(tributary_tests::private_root())
        .unwrap();
    let outside = elsewhere.path().join("secret.txt");
    std::fs::write(&outside, "s").unwrap();
    std::fs::write(dir.path().join("inside.txt"), "i").unwrap();
    let table = |name: &str, isolated: bool, path: &str| {
        format!(
            "[[source]]\nname = \"{name}\"\nplugin = \"testkit\"\n{}config = {{ items = [{{ name = \"{name}\" }}], read_on_new = {path:?} }}\n",
            if isolated { "isolation = \"process\"\n" } else { "" }
        )
    };
    let outside = outside.display().to_string();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &[
            // `isolated-outside` fails at start, on purpose.
            "start_degraded = true\n".to_owned(),
            table("in-process-outside", false, &outside),
            table("isolated-inside", true, "inside.txt"),
            table("isolated-outside", true, &outside),
            table("isolated-granted", true, &outside),
            format!(
                "allow_read = [{:?}]\n",
                elsewhere.path().display().to_string()
            ),
        ]
        .concat(),
    );
    let (child, address) = spawn(&config, None);
    let listing = PluginsServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    let reason = |name: &str| {
        listing
            .sources
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(reason("in-process-outside"), "");
    assert_eq!(reason("isolated-inside"), "");
    assert_eq!(reason("isolated-granted"), "");
    assert!(
        reason("isolated-outside").contains(&format!("cannot read {outside}: Permission denied")),
        "{listing:?}"
    );
    let page = list(&mut client(&address).await, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        [
            "in-process-outside@in-process-outside/in-process-outside",
            "isolated-granted@isolated-granted/isolated-granted",
            "isolated-inside@isolated-inside/isolated-inside"
        ]
    );
    assert!(terminate(child).success());
}

/// The isolated source's runner pid in `ListPlugins` (0 while it has none).
async fn runner_pid(address: &str, source: &str) -> u32 {
    use tributary_proto::v1::{plugins_service_client::PluginsServiceClient, ListPluginsRequest};
    PluginsServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sources
        .into_iter()
        .find(|s| s.name == source)
        .unwrap_or_else(|| panic!("no source {source:?}"))
        .runner_pid
}

fn read_pid(path: &std::path::Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// A plugin whose constructor starts a detached grandchild that keeps the runner's socket open:
/// killing the runner is still noticed (its exit, not its socket, is watched), its process group
/// (the grandchild) is killed, and a new runner serves; at the server's exit the new runner's group
/// goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_is_noticed_and_its_group_killed_though_a_grandchild_holds_its_socket() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!(
            r#"source_timeout_ms = 2000
[[source]]
name = "good"
plugin = "testkit"
config = {{ items = [{{ name = "a" }}] }}
[[source]]
name = "iso"
plugin = "testkit"
isolation = "process"
allow_write = [{dir:?}]
config = {{ items = [{{ name = "b" }}], fork_grandchild = {pid_file:?} }}
"#,
            dir = dir.path().display().to_string(),
            pid_file = pid_file.display().to_string()
        ),
    );
    let (child, address) = spawn(&config, None);
    let mut client = client(&address).await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["a@good/a", "b@iso/b"]
    );
    let first_runner = runner_pid(&address, "iso").await;
    let first_grandchild = read_pid(&pid_file);
    assert!(first_runner > 0);
    assert!(!is_gone(first_grandchild), "the grandchild runs");

    assert!(Command::new("kill")
        .args(["-KILL", &first_runner.to_string()])
        .status()
        .unwrap()
        .success());
    // The source serves again from a new runner, and the old runner's grandchild is gone.
    let until = Instant::now() + Duration::from_secs(15);
    let second_runner = loop {
        let page = list(&mut client, 10, "", None).await;
        let pid = runner_pid(&address, "iso").await;
        if page.failed_sources.is_empty() && pid != 0 && pid != first_runner {
            assert_eq!(
                keys(&page.available_package_summaries),
                ["a@good/a", "b@iso/b"]
            );
            break pid;
        }
        assert!(
            Instant::now() < until,
            "the killed runner {first_runner} was never replaced: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(is_gone(first_runner), "the killed runner was reaped");
    wait_gone(&[first_grandchild]);
    let second_grandchild = read_pid(&pid_file);
    assert_ne!(second_grandchild, first_grandchild);
    assert!(
        !is_gone(second_grandchild),
        "the new runner's grandchild runs"
    );

    assert_eq!(terminate(child).code(), Some(0));
    wait_gone(&[second_runner, second_grandchild]);
}

/// Two isolated sources whose constructors never finish (one stops its own process, one sleeps)
/// and a healthy isolated one: the server listens at once, the healthy source serves while the two
/// are `starting`, and each is failed when the source timeout passes, its runner killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_start_in_parallel_while_the_server_listens() {
    use tributary_proto::v1::{
        plugins_service_client::PluginsServiceClient, source_info::Status, ListPluginsRequest,
        SourceInfo,
    };
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let table = |name: &str, config: &str| {
        format!("[[source]]\nname = \"{name}\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = {{ {config} }}\n")
    };
    let config = write_config(
        dir.path(),
        plugins.path(),
        &[
            "source_timeout_ms = 8000\n".to_owned(),
            table("healthy", "items = [{ name = \"a\" }]"),
            table(
                "sleeps",
                "items = [{ name = \"b\" }], sleep_new_ms = 600000",
            ),
            table("stops", "items = [{ name = \"c\" }], stop_new = true"),
        ]
        .concat(),
    );
    let started = Instant::now();
    let mut child = Command::new(&artifacts().binary)
        .args(["serve", "--grace-ms", "300", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening_after = started.elapsed();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    assert!(
        listening_after < Duration::from_secs(5),
        "listening after {listening_after:?}"
    );
    let mut plugins_client = PluginsServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut client = client(&address).await;
    let sources = |listing: &tributary_proto::v1::ListPluginsResponse| -> Vec<SourceInfo> {
        listing.sources.clone()
    };

    // While the two are starting: the healthy one serves, they are reported `starting`.
    let until = Instant::now() + Duration::from_secs(6);
    let (page, listing) = loop {
        // UNAVAILABLE while no source can answer yet (all three starting).
        let answer = client
            .list_available_package_summaries(list_request(10, "", None))
            .await;
        let page = match answer {
            Ok(page) => page.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(Instant::now() < until, "healthy never served: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let listing = plugins_client
            .list_plugins(ListPluginsRequest {})
            .await
            .unwrap()
            .into_inner();
        if page.failed_sources.len() == 2 {
            break (page, listing);
        }
        assert!(Instant::now() < until, "healthy never served: {page:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "checked within the source timeout"
    );
    assert_eq!(keys(&page.available_package_summaries), ["a@healthy/a"]);
    let failed: Vec<(&str, &str)> = page
        .failed_sources
        .iter()
        .map(|f| (f.source.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(failed, [("sleeps", "starting"), ("stops", "starting")]);
    let listed = sources(&listing);
    let status = |name: &str| listed.iter().find(|s| s.name == name).unwrap().clone();
    assert_eq!(status("healthy").status, Status::Ready as i32);
    let mut hung_runners = Vec::new();
    for name in ["sleeps", "stops"] {
        let s = status(name);
        assert_eq!(s.status, Status::Starting as i32, "{s:?}");
        assert!(s.reason.starts_with("starting: its runner (pid "), "{s:?}");
        assert!(s.runner_pid > 0, "{s:?}");
        hung_runners.push(s.runner_pid);
    }

    // After the source timeout: both failed with the reason, their runners killed; healthy serves.
    let until = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listing = plugins_client
            .list_plugins(ListPluginsRequest {})
            .await
            .unwrap()
            .into_inner();
        let listed = sources(&listing);
        if listed
            .iter()
            .filter(|s| s.status == Status::Failed as i32)
            .count()
            == 2
        {
            break listed;
        }
        assert!(Instant::now() < until, "never failed: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for name in ["sleeps", "stops"] {
        let s = listed.iter().find(|s| s.name == name).unwrap();
        assert!(
            s.reason.contains(&format!("runner for source \"{name}\" failed to start (it did not load its library and build the source within the source timeout of 8000 ms)")),
            "{s:?}"
        );
    }
    wait_gone(&hung_runners);
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@healthy/a"]);
    let failed: Vec<(&str, &str)> = page
        .failed_sources
        .iter()
        .map(|f| (f.source.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(failed, [("sleeps", "crashed"), ("stops", "crashed")]);
    assert_eq!(terminate(child).code(), Some(0));
}

/// A library whose ELF initialiser aborts, used only by an isolated source: the server never opens
/// it (a child process inspects it, and dies instead), starts, serves the other source and reports
/// the library rejected with the signal; `tributary plugins` exits 5 (a library was rejected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_whose_initialiser_aborts_is_rejected_when_only_isolated_sources_use_it() {
    use tributary_proto::v1::{
        plugin_info, plugins_service_client::PluginsServiceClient, source_info, ListPluginsRequest,
    };
    let plugins = PluginDir::with(&["testkit", "catalog"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cat.json"),
        r#"{"packages":[{"name":"b"},{"name":"d"}]}"#,
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        // `iso` fails at start, on purpose: the server serves `cat` without it.
        "start_degraded = true\n[[source]]\nname = \"cat\"\nplugin = \"catalog\"\nconfig = { path = \"cat.json\" }\n[[source]]\nname = \"iso\"\nplugin = \"testkit\"\nisolation = \"process\"\nconfig = { items = [{ name = \"a\" }] }\n",
    );
    let library = plugins.path().join("libtestkit.so");
    let reason = format!(
        "the library crashed the process that opened it: it was killed by signal {} (Aborted) (in an inspector process; the server never opened it)",
        libc::SIGABRT
    );

    let output = Command::new(&artifacts().binary)
        .args(["plugins", "--config"])
        .arg(&config)
        .env("TRIBUTARY_TESTKIT_INIT_FAULT", "always")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(5),
        "{:?}: {stdout}",
        output.status
    );
    assert!(
        stdout.contains(&format!("  rejected  {}: {reason}", library.display())),
        "{stdout}"
    );

    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--grace-ms", "300", "--config"])
        .arg(&config)
        .env("TRIBUTARY_TESTKIT_INIT_FAULT", "always")
        .stderr(Stdio::null());
    let (child, address) = crate::binary::start(command);
    let page = list(&mut client(&address).await, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        ["b@cat/b", "d@cat/d"]
    );
    let failed: Vec<&str> = page
        .failed_sources
        .iter()
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(failed, ["iso"]);
    let listing = PluginsServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .list_plugins(ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    let file = listing
        .plugins
        .iter()
        .find(|p| p.path == library.display().to_string())
        .unwrap();
    assert_eq!(
        (file.status, file.reason.as_str()),
        (plugin_info::Status::Rejected as i32, reason.as_str())
    );
    let iso = listing.sources.iter().find(|s| s.name == "iso").unwrap();
    assert_eq!(iso.status, source_info::Status::Failed as i32, "{iso:?}");
    assert_eq!(terminate(child).code(), Some(0));
}

/// A named call (`status@1`) reaches an isolated source's runner like `list` and `detail` do: the
/// helm plugin run with `isolation = "process"` shows its repositories' state in `ListPlugins`.
#[tokio::test]
async fn an_isolated_source_answers_its_status_call() {
    use tributary_proto::v1::{plugins_service_client::PluginsServiceClient, ListPluginsRequest};
    let repository = tributary_tests::http::HelmRepoServer::start(
        tributary_tests::http::helm_index("st-", 3, 1),
    )
    .await;
    let plugins = PluginDir::with(&["helm"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!(
            "[[source]]\nname = \"charts\"\nplugin = \"helm\"\nisolation = \"process\"\n\
             config = {{ repositories = [{{ name = \"r\", url = {:?} }}] }}\n",
            repository.url("/charts/")
        ),
    );
    let (child, address) = spawn(&config, None);
    let mut plugins_client = PluginsServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut status = serde_json::Value::Null;
    for _ in 0..300 {
        let listing = plugins_client
            .list_plugins(ListPluginsRequest {})
            .await
            .unwrap()
            .into_inner();
        let source = listing
            .sources
            .iter()
            .find(|s| s.name == "charts")
            .expect("the source is listed");
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&source.status_json) {
            status = value;
            if status["repositories"][0]["charts"] == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["repositories"][0]["name"], "r", "status {status}");
    assert_eq!(status["repositories"][0]["charts"], 3, "status {status}");
    assert_eq!(
        status["repositories"][0]["last_error"], "",
        "status {status}"
    );
    terminate(child);
}
