//! The `tributary` command: parses arguments, loads the configuration and plugins, and serves.
//!
//! Exit codes: 0 after a clean shutdown, 1 when serving fails (the address is taken, say), 2 for a
//! usage error, 3 for a bad configuration file, 4 when the plugin directory cannot be used (missing,
//! unreadable, or insecure: it or a folder above it is writable by others, unless
//! `allow_insecure_plugin_dir = true`), 5 from `tributary plugins` when any library was rejected or
//! none loaded.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use tributary_host::{
    config::{Config, OnSourceError, Overrides},
    engine::EngineOptions,
    registry::{Registry, StartError},
    server, service,
};

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Serves one ordered, merged package catalog from plugins over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
    /// Load the plugins, print what loaded, each source and why anything was rejected, and exit.
    Plugins {
        #[command(flatten)]
        common: Common,
    },
}

const EXIT_SERVE: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_PLUGIN_DIR: u8 = 4;
const EXIT_PLUGINS_REJECTED: u8 = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `plugins` prints its own report; its log says only what went wrong unless RUST_LOG says more.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Plugins { .. } => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();

    let (common, listen) = match &cli.command {
        Command::Serve { common, listen, .. } => (common, listen.clone()),
        Command::Plugins { common } => (common, None),
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
    let registry = match Registry::load(&config) {
        Ok(registry) => Arc::new(registry),
        Err(e @ (StartError::Scan(_) | StartError::InsecurePluginDir(_))) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(EXIT_PLUGIN_DIR);
        }
        Err(e) => {
            eprintln!("tributary: config file {}: {e}", common.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    match cli.command {
        Command::Plugins { .. } => {
            print_plugins(&registry);
            let loaded = registry.files.iter().filter(|f| f.outcome.is_ok()).count();
            if loaded == 0 || loaded < registry.files.len() {
                ExitCode::from(EXIT_PLUGINS_REJECTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Serve { grace_ms, .. } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(run(config, registry, Duration::from_millis(grace_ms)));
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

async fn run(config: Config, registry: Arc<Registry>, grace: Duration) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let catalog = Arc::new(service::Catalog::new(
        registry,
        EngineOptions {
            source_timeout: config.source_timeout,
            fail_fast: config.on_source_error == OnSourceError::Fail,
        },
    ));
    // Tests and scripts wait for this line (the port matters when listening on port 0).
    tracing::info!(%address, "serving gRPC");
    println!("listening on {address}");
    server::serve(listener, catalog, shutdown_signal(), grace)
        .await
        .map_err(|e| e.to_string())
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
            println!(
                "  loaded    {} {} (interface {}) {} sha256:{}{idle}: {}",
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
        if s.reason.is_empty() {
            println!("  ready     {} <- plugin {}", s.name, s.plugin);
        } else {
            println!(
                "  failed    {} <- plugin {}: {}",
                s.name, s.plugin, s.reason
            );
        }
    }
}
