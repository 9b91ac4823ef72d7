//! Child processes: the release build of the plugin libraries and the `tributary` binary, servers
//! started from them (so that a peak RSS is the server's alone), and `/proc` readings.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// What one `cargo build --release` produced.
pub struct Artifacts {
    /// `libtributary_plugin_testkit.so`.
    pub testkit: PathBuf,
    /// `libtributary_plugin_helm.so`.
    pub helm: PathBuf,
    /// The `tributary` executable.
    pub tributary: PathBuf,
}

/// Where the bench's own build goes: `bench` under the target directory (`target/bench`), so that
/// it never replaces `target/release/tributary` nor leaves the testkit library in
/// `target/release`, the example configuration's plugin folder.
pub fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("bench")
}

/// Builds the plugin libraries and the server in release mode, once per run, in
/// [`target_dir`], reading the artifact paths from cargo's JSON messages (as the end-to-end tests
/// do, but `--release`).
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the bench crate lives in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = target_dir(workspace);
        eprintln!(
            "building the plugin libraries and the server (cargo build --release --target-dir {})...",
            target.display()
        );
        let output = Command::new(cargo)
            .current_dir(workspace)
            .args([
                "build",
                "--release",
                "--message-format=json",
                "-p",
                "tributary-host",
                "-p",
                "tributary-plugin-testkit",
                "-p",
                "tributary-plugin-helm",
            ])
            .arg("--target-dir")
            .arg(&target)
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(output.status.success(), "cargo build --release failed");
        let mut libraries = std::collections::HashMap::new();
        let mut tributary = None;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let name = message["target"]["name"].as_str().unwrap_or_default();
            if name == "tributary" {
                if let Some(exe) = message["executable"].as_str() {
                    tributary = Some(PathBuf::from(exe));
                }
            }
            for file in message["filenames"].as_array().into_iter().flatten() {
                let file = PathBuf::from(file.as_str().unwrap_or_default());
                if file.extension().is_some_and(|e| e == "so") {
                    libraries.insert(name.to_owned(), file);
                }
            }
        }
        let library = |name: &str| {
            libraries
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("cargo build produced no library for {name}"))
        };
        Artifacts {
            testkit: library("tributary_plugin_testkit"),
            helm: library("tributary_plugin_helm"),
            tributary: tributary.expect("cargo build produced the tributary binary"),
        }
    })
}

/// A copy of this executable, made once, from which the child modes (`serve-baseline`,
/// `parse-yaml`) are started: the file behind the running process may be replaced by a build while
/// the suite runs, and the children must run the same code as the parent.
pub fn own_executable() -> &'static Path {
    static COPY: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tributary-bench-exe-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("tributary-bench");
        // /proc/self/exe still reads the running image when its file has been replaced.
        std::fs::copy("/proc/self/exe", &path)
            .or_else(|_| std::fs::copy(std::env::current_exe()?, &path))
            .expect("copy this executable");
        (dir, path)
    });
    path
}

/// A temporary folder holding copies of plugin libraries, a config file, and whatever else a
/// scenario writes.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::Builder::new()
                .prefix("tributary-bench-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A plugin folder `dir_name` holding a copy of each `(library, file name)`.
    pub fn plugin_dir(&self, dir_name: &str, libraries: &[(&Path, &str)]) -> PathBuf {
        let dir = self.path().join(dir_name);
        std::fs::create_dir_all(&dir).expect("create plugin dir");
        for (library, file_name) in libraries {
            std::fs::copy(library, dir.join(file_name)).expect("copy plugin library");
        }
        dir
    }

    /// Writes the config file `file_name`: listen on an ephemeral loopback port, `plugin_dir`, then
    /// `sources` (TOML `[[source]]` tables).
    pub fn config(&self, file_name: &str, plugin_dir: &Path, sources: &str) -> PathBuf {
        let path = self.path().join(file_name);
        let text = format!(
            "listen = \"127.0.0.1:0\"\nplugin_dir = {}\nsource_timeout_ms = 60000\n# The work folder is under the world-writable /tmp.\nallow_insecure_plugin_dir = true\n\n{sources}",
            toml_string(&plugin_dir.to_string_lossy())
        );
        std::fs::write(&path, text).expect("write config");
        path
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One `[[source]]` table whose config is the given JSON object.
pub fn source_table(name: &str, plugin: &str, config: &serde_json::Value) -> String {
    let mut inline = String::from("{ ");
    let object = config.as_object().expect("a JSON object");
    let parts: Vec<String> = object
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_string(k), toml_value(v)))
        .collect();
    inline.push_str(&parts.join(", "));
    inline.push_str(" }");
    format!(
        "[[source]]\nname = {}\nplugin = {}\nconfig = {inline}\n\n",
        toml_string(name),
        toml_string(plugin)
    )
}

fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", parts.join(", "))
        }
        serde_json::Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_value(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// A server in a child process: `tributary serve`, or one of this binary's baseline servers.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    /// From spawning to the `listening on` line.
    pub startup: Duration,
}

impl ServerProcess {
    /// Starts `tributary serve --config <config>`; its log goes beside the config, as `<name>.log`.
    pub fn tributary(config: &Path) -> ServerProcess {
        ServerProcess::tributary_with_env(config, &[])
    }

    /// [`ServerProcess::tributary`] with these environment variables set.
    pub fn tributary_with_env(config: &Path, env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(&artifacts().tributary);
        command.arg("serve").arg("--config").arg(config);
        command.envs(env.iter().copied());
        ServerProcess::spawn(command, &config.with_extension("log"))
    }

    /// Starts this binary as the baseline server answering every list call with the response
    /// encoded in `response_file`.
    pub fn baseline(response_file: &Path) -> ServerProcess {
        let mut command = Command::new(own_executable());
        command.arg("serve-baseline").arg(response_file);
        ServerProcess::spawn(command, &response_file.with_extension("log"))
    }

    /// Starts this binary as the REST baseline server answering every `GET /v1/packages` with
    /// the JSON page in `page_file`.
    pub fn rest_baseline(page_file: &Path) -> ServerProcess {
        let mut command = Command::new(own_executable());
        command.arg("serve-rest-baseline").arg(page_file);
        ServerProcess::spawn(command, &page_file.with_extension("log"))
    }

    fn spawn(mut command: Command, log: &Path) -> ServerProcess {
        let log_file = std::fs::File::create(log).expect("create server log");
        let start = Instant::now();
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start server process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        break rest.trim().parse().expect("a socket address");
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut text = String::new();
                    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
                    panic!("the server exited before listening; its log:\n{text}");
                }
            }
        };
        let startup = start.elapsed();
        // Keep draining stdout so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServerProcess {
            child,
            address,
            startup,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident set so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        vm_hwm_kib(self.pid()).expect("read the server's /proc status")
    }

    /// The server's resident set now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.pid()).expect("read the server's /proc status")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// `VmHWM` of this process, in KiB.
pub fn own_vm_hwm_kib() -> Option<u64> {
    vm_hwm_kib(std::process::id())
}

/// `VmRSS` (resident set now) of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

/// `VmRSS` of this process, in KiB.
pub fn own_vm_rss_kib() -> Option<u64> {
    vm_rss_kib(std::process::id())
}

/// The value in KiB of a `/proc/<pid>/status` line such as `VmHWM:     1234 kB`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_from_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(1234));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1000));
        assert!(own_vm_hwm_kib().is_some_and(|kib| kib > 0));
        assert!(own_vm_rss_kib().is_some_and(|kib| kib > 0));
    }

    #[test]
    fn source_tables_are_toml() {
        let table = source_table(
            "s1",
            "testkit",
            &serde_json::json!({ "generate": 10, "prefix": "p-", "list": [{ "a": "b" }] }),
        );
        assert!(table.contains("name = \"s1\""), "{table}");
        assert!(table.contains("plugin = \"testkit\""), "{table}");
        for part in [
            "\"generate\" = 10",
            "\"list\" = [{ \"a\" = \"b\" }]",
            "\"prefix\" = \"p-\"",
        ] {
            assert!(table.contains(part), "{table}");
        }
        let parsed: toml::Table = toml::from_str(&table).unwrap();
        assert!(parsed.contains_key("source"));
    }
}
