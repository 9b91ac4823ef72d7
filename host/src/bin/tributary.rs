//! The `tributary` command: parses arguments, loads the configuration and plugins, and serves.
//!
//! Exit codes: 0 after a clean shutdown, 1 when serving fails (the address is taken, say), 2 for a
//! usage error, 3 for a bad configuration file or a `[[source]]` that cannot start (unless
//! `start_degraded = true`), 4 when the plugin directory cannot be used (missing, unreadable, or
//! insecure: it or a folder above it is writable by others, unless
//! `allow_insecure_plugin_dir = true`), 5 from `tributary plugins` when any library was rejected,
//! none loaded, or any source failed.
//! `tributary plugin check` exits 0 when the library passes, 1 when anything fails, 2 on bad input.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use tributary_host::{app::App, auth, server, service, tls};
use tributary_runtime::{
    config::{Config, Overrides},
    registry::{Registry, StartError},
};

/// The server allocates and frees many small strings per page; glibc's allocator spends a large
/// share of a page's CPU consolidating its free lists (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Serves one ordered, merged package catalog from plugins over gRPC"
)]
struct Cli {
    /// How log lines are written to stderr: `plain` text, or `json` (one object per line). Colours
    /// are used only when stderr is a terminal. The level comes from `RUST_LOG` when set, else the
    /// config's `log_level`, else `info` for `serve` and `warn` for the other commands.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(clap::Args)]
struct Common {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The folder of plugin libraries (overrides `plugin_dir`; relative to the working directory).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Load the plugins and serve the merged catalog.
    Serve {
        #[command(flatten)]
        common: Common,
        /// The address to listen on (overrides `listen`), e.g. 127.0.0.1:50051.
        #[arg(long)]
        listen: Option<String>,
        /// How long calls in flight may run after SIGTERM or SIGINT, in milliseconds.
        #[arg(long, default_value_t = server::DEFAULT_GRACE.as_millis() as u64)]
        grace_ms: u64,
        /// After SIGTERM, how long to keep accepting requests while health says NOT_SERVING (so
        /// that load balancers stop sending first), in milliseconds.
        #[arg(long, default_value_t = 0)]
        shutdown_delay_ms: u64,
    },
    /// Load the plugins, print what loaded, each source and why anything was rejected, and exit.
    Plugins {
        #[command(flatten)]
        common: Common,
    },
    /// Helpers for the `[auth]` section.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Read a bearer token from standard input and print the line for `tokens_file`:
    /// `<sha256 hex> <identity>`.
    HashToken {
        /// The identity the token authenticates, as named in `[[auth.identity]]`.
        identity: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load one library as the server would, print its metadata and SHA-256, build a source and
    /// run the conformance checks through the FFI boundary. Exits 1 on any failure.
    Check {
        /// The plugin library (`lib<name>.so`).
        library: PathBuf,
        /// The source configuration as JSON text (default `{}`); relative paths in it resolve
        /// against the working directory.
        #[arg(long, conflicts_with = "config_file")]
        config: Option<String>,
        /// A file holding the source configuration as JSON; relative paths in it resolve against
        /// its folder.
        #[arg(long)]
        config_file: Option<PathBuf>,
        /// The source name the plugin is told (default: the plugin's name).
        #[arg(long)]
        source_name: Option<String>,
        /// Seed of the random limits and samples, to replay a failure.
        #[arg(long, default_value_t = tributary_plugin_api::conformance::Options::default().seed)]
        seed: u64,
    },
}

const EXIT_SERVE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_PLUGIN_DIR: u8 = 4;
const EXIT_PLUGINS_REJECTED: u8 = 5;

fn main() -> ExitCode {
    // The hidden runner mode of process isolation (see `tributary_runtime::isolation`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(tributary_runtime::isolation::RUNNER_ARG) {
        init_logging(LogFormat::Plain, "warn");
        return tributary_runtime::isolation::runner::main(&args[2..]);
    }
    let cli = Cli::parse();
    // `plugins` prints its own report; its log says only what went wrong unless RUST_LOG says more.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Plugins { .. } | Command::Auth(_) | Command::Plugin(_) => "warn",
    };
    if let Command::Plugin(PluginCommand::Check {
        library,
        config,
        config_file,
        source_name,
        seed,
    }) = &cli.command
    {
        init_logging(cli.log_format, default_level);
        return plugin_check(library, config, config_file, source_name, *seed);
    }

    let (common, listen) = match &cli.command {
        Command::Serve { common, listen, .. } => (common, listen.clone()),
        Command::Plugins { common } => (common, None),
        Command::Auth(AuthCommand::HashToken { identity }) => {
            init_logging(cli.log_format, default_level);
            return hash_token(identity);
        }
        Command::Plugin(_) => unreachable!("handled above"),
    };
    let overrides = Overrides {
        listen,
        plugin_dir: common.plugin_dir.clone(),
    };
    let config = match Config::load(&common.config, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // RUST_LOG, when set, wins over the config's `log_level`.
    init_logging(
        cli.log_format,
        config.log_level.as_deref().unwrap_or(default_level),
    );
    // Certificates and the tokens file are read before any plugin is loaded: a bad file is a
    // configuration error, found at once.
    let (tls, auth) = if matches!(cli.command, Command::Serve { .. }) {
        let tls = match config.tls.clone().map(tls::Certificates::load).transpose() {
            Ok(tls) => tls.map(Arc::new),
            Err(e) => {
                eprintln!("tributary: config file {}: {e}", common.config.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let auth = match config
            .auth
            .as_ref()
            .map(auth::Authenticator::load)
            .transpose()
        {
            Ok(auth) => auth.map(Arc::new),
            Err(e) => {
                eprintln!("tributary: config file {}: {e}", common.config.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        (tls, auth)
    } else {
        (None, None)
    };
    if !config.strict_permissions {
        tracing::warn!(
            dir = %config.plugin_dir.display(),
            "allow_insecure_plugin_dir = true: plugin files and folders that other users can change are loaded; use this for trials only"
        );
    }
    let registry = match Registry::load(&config) {
        Ok(registry) => Arc::new(registry),
        Err(e @ StartError::InsecurePluginDir(_)) => {
            eprintln!("tributary: {e}");
            eprintln!("{}", insecure_hint(&common.config));
            return ExitCode::from(EXIT_PLUGIN_DIR);
        }
        Err(e @ StartError::Scan(_)) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(EXIT_PLUGIN_DIR);
        }
        Err(e) => {
            eprintln!("tributary: config file {}: {e}", common.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let failed: Vec<&tributary_runtime::registry::SourceEntry> = registry
        .sources
        .iter()
        .filter(|s| s.state.is_err())
        .collect();

    match cli.command {
        Command::Plugin(_) => unreachable!("handled above"),
        Command::Plugins { .. } => {
            registry.wait_for_runners(config.source_timeout);
            print_plugins(&registry);
            let loaded = registry.files.iter().filter(|f| f.outcome.is_ok()).count();
            if loaded == 0 || loaded < registry.files.len() || !failed.is_empty() {
                ExitCode::from(EXIT_PLUGINS_REJECTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Auth(_) => unreachable!("answered before loading the configuration"),
        Command::Serve {
            grace_ms,
            shutdown_delay_ms,
            ..
        } => {
            // At least two workers, so that a request that keeps one busy holds no other up.
            let workers = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .expect("tokio runtime");
            // Every [[source]] must come up, unless the operator chose to start degraded.
            if !failed.is_empty() && !config.start_degraded {
                for s in &failed {
                    if let Err(e) = &s.state {
                        eprintln!(
                            "tributary: config file {}: source {:?} (plugin {:?}) cannot start: {e}",
                            common.config.display(),
                            s.name,
                            s.plugin
                        );
                    }
                }
                eprintln!(
                    "tributary: {} source(s) failed at start; fix them, or set start_degraded = true (a top-level key) to serve the others and report these as failed",
                    failed.len()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            for s in &failed {
                if let Err(e) = &s.state {
                    tracing::warn!(source = %s.name, plugin = %s.plugin, "start_degraded = true: serving without this source, which failed at start: {e}");
                }
            }
            let app = App::new(config, registry)
                .tls(tls)
                .auth(auth)
                .reload_from(common.config.clone(), overrides.clone(), true)
                .shutdown(
                    Duration::from_millis(grace_ms),
                    Duration::from_millis(shutdown_delay_ms),
                );
            let result = runtime.block_on(run(app));
            // A plugin call that never returns holds a blocking thread; dropping the runtime would
            // wait for it forever. Give such threads a moment, then exit without them.
            runtime.shutdown_timeout(Duration::from_millis(500));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tributary: {e}");
                    ExitCode::from(EXIT_SERVE)
                }
            }
        }
    }
}

/// Binds, says where it listens (tests and scripts wait for the line; the port matters when
/// listening on port 0), and serves until SIGTERM or SIGINT.
async fn run(app: App) -> Result<(), tributary_host::app::AppError> {
    let bound = app.bind().await?;
    println!("listening on {}", bound.address());
    if let Some(address) = bound.metrics_address() {
        println!("metrics on {address}");
    }
    bound.serve(shutdown_signal()).await
}

/// What to add, and where, to load plugins from an insecure folder for a trial (exit code 4).
fn insecure_hint(config_path: &std::path::Path) -> String {
    let text = tributary_runtime::config::read_regular_file(config_path).unwrap_or_default();
    let place = match tributary_runtime::config::first_table_line(&text) {
        Some(line) => format!(
            "above line {line} (the first [table] or [[source]] header; below it the key would belong to that table)"
        ),
        None => "anywhere (the file has no [table] yet)".to_owned(),
    };
    format!(
        "tributary: to allow it for a trial, add this line to {} at the top level, {place}:\n    allow_insecure_plugin_dir = true",
        config_path.display()
    )
}

fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// `tributary auth hash-token IDENTITY`: the token comes on standard input (so that it stays out of
/// the shell history and the process list).
fn hash_token(identity: &str) -> ExitCode {
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut token) {
        eprintln!("tributary: cannot read the token from standard input: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let token = token.trim_end_matches(['\n', '\r']);
    if token.is_empty() || identity.chars().any(char::is_whitespace) {
        eprintln!("tributary: give a non-empty token on standard input and an identity name without spaces");
        return ExitCode::from(EXIT_USAGE);
    }
    println!("{} {identity}", auth::hash_token(token));
    ExitCode::SUCCESS
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn print_plugins(registry: &Registry) {
    let listing = service::list_plugins(registry);
    println!("plugin directory: {}", listing.plugin_dir);
    if listing.plugins.is_empty() {
        println!("  (no plugin libraries found)");
    }
    for p in &listing.plugins {
        if p.reason.is_empty() {
            let idle = if p.idle {
                " (idle: no [[source]] names it)"
            } else {
                ""
            };
            let capabilities = if p.capabilities.is_empty() {
                String::new()
            } else {
                format!("; capabilities {}", p.capabilities.join(", "))
            };
            println!(
                "  loaded    {} {} (interface {}{capabilities}) {} sha256:{}{idle}: {}",
                p.name, p.version, p.interface_version, p.path, p.sha256, p.description
            );
        } else {
            println!("  rejected  {}: {}", p.path, p.reason);
        }
    }
    println!("sources:");
    if listing.sources.is_empty() {
        println!("  (none)");
    }
    for s in &listing.sources {
        let isolated = if s.isolated {
            format!(" (isolated, runner pid {})", s.runner_pid)
        } else {
            String::new()
        };
        if s.reason.is_empty() {
            println!("  ready     {} <- plugin {}{isolated}", s.name, s.plugin);
        } else {
            println!(
                "  failed    {} <- plugin {}: {}",
                s.name, s.plugin, s.reason
            );
        }
    }
}

/// `tributary plugin check`: see `tributary_runtime::check`.
fn plugin_check(
    library: &std::path::Path,
    config: &Option<String>,
    config_file: &Option<PathBuf>,
    source_name: &Option<String>,
    seed: u64,
) -> ExitCode {
    use tributary_runtime::check;
    let json = match check::parse_config(config.as_deref(), config_file.as_deref()) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let base_dir = match config_file.as_deref().and_then(std::path::Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_default(),
    };
    let outcome = check::run(&check::CheckRequest {
        library: library.to_path_buf(),
        config: json,
        base_dir,
        source_name: source_name.clone(),
        call_timeout: Duration::from_secs(10),
        seed,
    });
    print!("{}", outcome.report);
    if outcome.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
