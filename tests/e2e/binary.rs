//! The `tributary` binary: config errors and exit codes, two processes serving one listing (tokens are
//! stateless), and a clean exit on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{artifacts, keys, list, list_request, PluginDir};

pub(crate) fn write_config(
    dir: &std::path::Path,
    plugin_dir: &std::path::Path,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("tributary.toml");
    let text = format!(
        "plugin_dir = {:?}\nlisten = \"127.0.0.1:0\"\n{extra}",
        plugin_dir.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `tributary serve` and returns it with the address it printed.
pub(crate) fn spawn_server(config: &std::path::Path) -> (Child, String) {
    spawn_server_with(config, &[])
}

fn spawn_server_with(config: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .stderr(Stdio::null());
    start(command)
}

/// Runs a prepared `tributary ... serve` command (its stderr, environment and limits set by the
/// caller) and returns it with the address it printed.
pub(crate) fn start(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tributary");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, address)
}

pub(crate) fn terminate(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

pub(crate) const SOURCES: &str = r#"
[[source]]
name = "one"
plugin = "testkit"
config = { items = [{ name = "a" }, { name = "c" }, { name = "e" }, { name = "g" }] }
[[source]]
name = "two"
plugin = "testkit"
config = { items = [{ name = "b" }, { name = "d" }, { name = "f" }] }
"#;

#[tokio::test]
async fn two_processes_serve_one_listing() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let (first, first_address) = spawn_server(&config);
    let (second, second_address) = spawn_server(&config);

    let mut a = PackagesServiceClient::connect(format!("http://{first_address}"))
        .await
        .unwrap();
    let mut b = PackagesServiceClient::connect(format!("http://{second_address}"))
        .await
        .unwrap();
    let page1 = list(&mut a, 3, "", None).await;
    let page2 = list(&mut b, 3, &page1.next_page_token, None).await;
    let page3 = list(&mut a, 3, &page2.next_page_token, None).await;
    assert_eq!(
        keys(&page1.available_package_summaries),
        ["a@one/a", "b@two/b", "c@one/c"]
    );
    assert_eq!(
        keys(&page2.available_package_summaries),
        ["d@two/d", "e@one/e", "f@two/f"]
    );
    assert_eq!(keys(&page3.available_package_summaries), ["g@one/g"]);
    assert_eq!(page3.next_page_token, "");

    assert_eq!(terminate(first).code(), Some(0), "exit 0 after SIGTERM");
    assert_eq!(terminate(second).code(), Some(0), "exit 0 after SIGTERM");
}

#[test]
fn bad_configs_exit_with_their_own_code_naming_the_key() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[source]]\nname = \"x\"\nplugin = \"testkit\"\n[[source]]\nname = \"x\"\nplugin = \"testkit\"\n", 3, "source[1].name"),
        ("bogus_key = 1\n", 3, "bogus_key"),
        ("[[source]]\nname = \"x\"\nplugin = \"helmm\"\n", 3, "source[0].plugin"),
        ("listen = \n", 3, "tributary.toml"),
    ];
    for (extra, code, needle) in cases {
        let config = write_config(dir.path(), plugins.path(), "");
        // Replace the whole file for the syntax case, append otherwise.
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(extra);
        std::fs::write(&config, text).unwrap();
        let output = Command::new(&artifacts().binary)
            .args(["plugins", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{extra:?}: {stderr:?} lacks {needle:?}"
        );
    }

    let missing = dir.path().join("missing-plugins");
    let config = write_config(dir.path(), &missing, "");
    let output = Command::new(&artifacts().binary)
        .args(["plugins", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));

    let output = Command::new(&artifacts().binary)
        .args(["plugins", "--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_calls_in_flight_then_exits_zero() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let calls_file = dir.path().join("calls");
    let sources = format!(
        "[[source]]\nname = \"slow\"\nplugin = \"testkit\"\nconfig = {{ generate = 30, sleep_ms = 800, calls_file = {:?} }}\n",
        calls_file.display().to_string()
    );
    let config = write_config(dir.path(), plugins.path(), &sources);
    let (child, address) = spawn_server_with(&config, &["--grace-ms", "5000"]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    const CLIENTS: usize = 6;
    let mut in_flight = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = PackagesServiceClient::new(channel.clone());
        in_flight.push(tokio::spawn(async move {
            client
                .list_available_package_summaries(list_request(10, "", None))
                .await
        }));
    }
    // Every call is in flight (its plugin call has started) before the signal; the bound is a
    // safety net for a loaded machine, not a measurement.
    let started = || {
        std::fs::read_to_string(&calls_file)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    for _ in 0..3000 {
        if started() == CLIENTS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(started(), CLIENTS, "every call started before SIGTERM");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // Health turns NOT_SERVING first.
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);
    // Every call in flight completes with its full page.
    for call in in_flight {
        let page = call
            .await
            .unwrap()
            .expect("call in flight completes")
            .into_inner();
        assert_eq!(keys(&page.available_package_summaries).len(), 10);
    }
    let mut child = child;
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "exit 0 after draining"
    );
    // And the port is closed.
    assert!(PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .is_err());
}

#[tokio::test]
async fn a_plugin_call_that_never_returns_does_not_keep_the_process_alive() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let sources = "source_timeout_ms = 200\n[[source]]\nname = \"stuck\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"a\" }], hang_on_call = 1, hang_ms = 600000 }\n[[source]]\nname = \"zz-empty\"\nplugin = \"testkit\"\n";
    let config = write_config(dir.path(), plugins.path(), sources);
    let (mut child, address) = spawn_server_with(&config, &["--grace-ms", "200"]);
    let mut client = PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    // `zz-empty` has nothing: the page is UNAVAILABLE, naming `stuck`.
    let page = tributary_tests::page_or_resume(&mut client, list_request(5, "", None)).await;
    assert_eq!(
        page.failed_sources[0].kind, "timeout",
        "the call is now stuck for ten minutes"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Bounded wait: the process must exit long before the plugin call returns.
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("tributary did not exit within 30 s of SIGTERM while a plugin call hung");
}

/// Runs `tributary plugins` with `RUST_LOG=info` and the given extra arguments; returns stderr.
fn plugins_stderr(extra: &[&str]) -> String {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let output = Command::new(&artifacts().binary)
        .args(extra)
        .args(["plugins", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .expect("run tributary plugins");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn logs_are_plain_without_colours_or_json_on_request() {
    let plain = plugins_stderr(&[]);
    assert!(plain.contains("source ready"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {plain:?}"
    );

    let json = plugins_stderr(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let ready: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "source ready")
        .map(|l| l["fields"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(ready, ["one", "two"]);
    assert!(lines.iter().all(|l| l["level"].is_string()));
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_id() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let log = dir.path().join("log.json");
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,tributary_host=debug")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, address) = start(command);
    let mut client = PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut request = list_request(3, "", None);
    let mut tonic_request = tonic::Request::new(request.clone());
    tonic_request
        .metadata_mut()
        .insert("x-request-id", "trace-42".parse().unwrap());
    let response = client
        .list_available_package_summaries(tonic_request)
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "trace-42");
    // Without an id of its own, the client gets one the server made.
    request.page_size = 2;
    let response = client
        .list_available_package_summaries(request)
        .await
        .unwrap();
    let made = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!made.is_empty() && made != "trace-42");
    // A stream's later pages are made while its body is sent: they log under its id too.
    let mut tonic_request = tonic::Request::new(list_request(3, "", None));
    tonic_request
        .metadata_mut()
        .insert("x-request-id", "stream-7".parse().unwrap());
    let mut pages = client
        .stream_available_package_summaries(tonic_request)
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        sizes.push(page.available_package_summaries.len());
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert!(terminate(child).success());

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let served: Vec<(&str, u64)> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "page served")
        .map(|l| {
            (
                l["span"]["id"].as_str().unwrap(),
                l["fields"]["items"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        served,
        [
            ("trace-42", 3),
            (made.as_str(), 2),
            ("stream-7", 3),
            ("stream-7", 3),
            ("stream-7", 1)
        ]
    );
}

#[test]
fn the_config_sets_the_log_level_unless_rust_log_does() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &str, rust_log: Option<&str>| {
        let config = write_config(dir.path(), plugins.path(), &format!("{extra}\n{SOURCES}"));
        let mut command = Command::new(&artifacts().binary);
        command.args(["plugins", "--config"]).arg(&config);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    // `plugins` logs warnings only by default; the config asks for more; RUST_LOG overrides it.
    assert!(!run("", None).contains("source ready"));
    assert!(run("log_level = \"info\"", None).contains("source ready"));
    assert!(!run("log_level = \"info\"", Some("warn")).contains("source ready"));
}

#[test]
fn plugins_command_prints_each_librarys_capabilities() {
    let plugins = PluginDir::with(&["helm", "testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), "");
    let output = Command::new(&artifacts().binary)
        .args(["plugins", "--config"])
        .arg(&config)
        .output()
        .expect("run tributary plugins");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("  loaded    {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .to_owned()
    };
    assert!(
        line("helm").contains("; capabilities status@1, list.sort@1, facets@1)"),
        "{stdout}"
    );
    assert!(!line("testkit").contains("capabilities"), "{stdout}");
}

/// A source that panics on every call, under 500 pages: its failure is logged once (then counted),
/// not once per page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_on_every_page_is_logged_once_not_per_page() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "[[source]]\nname = \"good\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"a\" }] }\n[[source]]\nname = \"bad\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"b\" }], panic_always = true }\n",
    );
    let log = dir.path().join("stderr.log");
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_BACKTRACE", "1")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, address) = start(command);
    let mut client = PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    for _ in 0..500 {
        let page = list(&mut client, 10, "", None).await;
        assert_eq!(keys(&page.available_package_summaries), ["a@good/a"]);
        assert_eq!(page.failed_sources[0].kind, "panic");
    }
    assert_eq!(terminate(child).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("injected panic on every call"))
        .count();
    assert_eq!(lines, 1, "{text}");
    assert!(text.len() < 64 * 1024, "{} bytes of log", text.len());
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, whole line).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With an open-file limit of 256, 400 idle connections: the server stays idle (no accept loop
/// spinning on EMFILE), refuses what is over its limit at once, logs why, and serves again as soon
/// as connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_limit_are_refused_without_spinning() {
    use std::os::unix::process::CommandExt;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let log = dir.path().join("stderr.log");
    let mut command = Command::new(&artifacts().binary);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit only, in the forked child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, address) = start(command);

    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(std::net::TcpStream::connect(&address).unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = cpu_ticks(child.id());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let used = cpu_ticks(child.id()) - before;
    eprintln!(
        "400 idle connections against RLIMIT_NOFILE 256: {used} clock ticks of server CPU in 2 s"
    );
    assert!(
        used < 100,
        "{used} ticks of CPU in 2 s while connections sat idle"
    );

    // A new client is refused at once while the limit is reached...
    let started = std::time::Instant::now();
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), refused).await;
    eprintln!(
        "a client over the limit was refused after {} ms",
        started.elapsed().as_millis()
    );
    assert!(
        matches!(outcome, Ok(Err(_))),
        "over the limit: {outcome:?} after {:?}",
        started.elapsed()
    );
    // ...and served as soon as connections close.
    idle.truncate(10);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    drop(idle);
    assert_eq!(terminate(child).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("connection limit reached"), "{text}");
}

/// An HTTP/1.1 request over a fresh connection; the whole response as text.
fn http_request(address: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A connection that sends nothing within `handshake_timeout_ms` is closed by the server, so idle
/// TCP connections cannot hold connection slots; one that speaks in time is served.
#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("handshake_timeout_ms = 300\n{SOURCES}"),
    );
    let (child, address) = spawn_server(&config);
    let mut silent = std::net::TcpStream::connect(&address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server closed the silent connection"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(9),
        "closed after {waited:?}"
    );
    // A client that speaks after 100 ms is served.
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    terminate(child);
}

/// A connection with no request in flight for `idle_timeout_ms` is closed by the server; a request
/// that runs longer than the timeout is not cut.
#[test]
fn an_idle_connection_is_closed_and_a_long_request_is_not() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        "idle_timeout_ms = 500\n[[source]]\nname = \"slow\"\nplugin = \"testkit\"\nconfig = { items = [{ name = \"a\" }], sleep_ms = 1500 }\n",
    );
    let (child, address) = spawn_server(&config);
    // Each exchange keeps its connection open (HTTP/1.1 keep-alive) and reads until the server
    // closes it.
    let exchange = |request: &str| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let started = Instant::now();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("the server closes the idle connection");
        (response, started.elapsed())
    };
    let (response, took) = exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    eprintln!(
        "an idle connection was closed {} ms after its request",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
    let (response, took) = exchange("GET /v1/packages HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\"name\":\"a\""), "{response}");
    assert!(
        took >= Duration::from_millis(1900),
        "answered, then idle: {took:?}"
    );
    terminate(child);
}

/// The catalog web page at `/` and its files, with their types and a strict content policy; with
/// `web_ui = false` there is no page.
#[test]
fn the_web_page_is_served_at_the_root_unless_turned_off() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let get = |address: &str, path: &str| {
        http_request(
            address,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    };
    let config = write_config(dir.path(), plugins.path(), "");
    let (child, address) = spawn_server(&config);
    let page = get(&address, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("content-type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    assert!(
        page.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{page}"
    );
    assert!(
        page.contains("x-content-type-options: nosniff\r\n"),
        "{page}"
    );
    assert!(page.contains("<title>Tributary catalog</title>"), "{page}");
    for (path, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let file = get(&address, path);
        assert!(file.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {file}");
        assert!(
            file.contains(&format!("content-type: {kind}")),
            "{path}: {file}"
        );
    }
    let missing = get(&address, "/assets/missing.js");
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    terminate(child);

    let config = write_config(dir.path(), plugins.path(), "web_ui = false\n");
    let (child, address) = spawn_server(&config);
    let page = get(&address, "/");
    assert!(page.starts_with("HTTP/1.1 404 Not Found\r\n"), "{page}");
    let api = get(&address, "/v1/packages");
    assert!(api.starts_with("HTTP/1.1 200 OK\r\n"), "{api}");
    terminate(child);
}

/// A REST GET of the first package from the page at `https://catalog.example.com`, lowercased.
fn get_from_catalog_origin(address: &str) -> String {
    http_request(
        address,
        &format!(
            "GET /v1/packages?page_size=1 HTTP/1.1\r\nHost: {address}\r\nOrigin: https://catalog.example.com\r\nConnection: close\r\n\r\n"
        ),
    )
    .to_ascii_lowercase()
}

/// CORS for gRPC-web callers: a preflight from an allowed origin is answered with it; one from
/// another origin gets no CORS headers; a bad origin in the config names the key.
#[test]
fn cors_preflight_allows_only_the_configured_origins() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("cors_allowed_origins = [\"https://catalog.example.com\"]\n{SOURCES}"),
    );
    let (child, address) = spawn_server(&config);
    let preflight = |origin: &str| {
        http_request(
            &address,
            &format!(
                "OPTIONS /tributary.v1.PackagesService/ListAvailablePackageSummaries HTTP/1.1\r\nHost: {address}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-grpc-web\r\nConnection: close\r\n\r\n"
            ),
        )
        .to_ascii_lowercase()
    };
    let allowed = preflight("https://catalog.example.com");
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://catalog.example.com"),
        "{allowed}"
    );
    assert!(allowed.contains("x-grpc-web"), "{allowed}");
    // REST: a simple GET from an allowed origin carries the CORS header and a request id.
    let rest = get_from_catalog_origin(&address);
    assert!(rest.starts_with("http/1.1 200"), "{rest}");
    assert!(
        rest.contains("access-control-allow-origin: https://catalog.example.com"),
        "{rest}"
    );
    assert!(rest.contains("x-request-id: "), "{rest}");
    assert!(rest.contains("\"availablepackagesummaries\""), "{rest}");
    assert!(rest.contains("vary: origin"), "{rest}");
    let other = preflight("https://evil.example.net");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    assert_eq!(terminate(child).code(), Some(0));

    // No origin allowed (the default): no CORS headers at all, not even `Vary`.
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let (child, address) = spawn_server(&config);
    let plain = get_from_catalog_origin(&address);
    assert!(plain.starts_with("http/1.1 200"), "{plain}");
    assert!(plain.contains("x-request-id: "), "{plain}");
    assert!(!plain.contains("access-control-"), "{plain}");
    assert!(!plain.contains("vary:"), "{plain}");
    assert_eq!(terminate(child).code(), Some(0));

    let bad = write_config(
        dir.path(),
        plugins.path(),
        "cors_allowed_origins = [\"https://a.example.com/path\"]\n",
    );
    let output = Command::new(&artifacts().binary)
        .args(["plugins", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cors_allowed_origins[0]"),
        "{output:?}"
    );
}

#[test]
fn serving_on_an_address_in_use_exits_1_naming_it() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(&artifacts().binary)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &address])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("tributary: cannot listen on {address}: Address already in use (os error 98)\n")
    );
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[test]
fn help_states_where_the_log_level_comes_from() {
    let output = Command::new(&artifacts().binary)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains(
            "The level comes from `RUST_LOG` when set, else the config's `log_level`, else `info` \
             for `serve` and `warn` for the other commands [default: plain]"
        ),
        "{help}"
    );
}
