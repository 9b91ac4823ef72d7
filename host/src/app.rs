//! The whole server built from a [`Config`] and its loaded [`Registry`]: the one way to start it,
//! used by the `tributary` binary and by the tests alike.
//!
//! [`App::bind`] binds the gRPC listener (and `metrics_listen`), so that the caller can say where it
//! listens; [`Bound::serve`] then serves until the shutdown future completes: the catalog, reload
//! (SIGHUP, the Reload RPC, the directory watcher), metrics, TLS and auth, as the configuration says.
//!
//! What comes before (reading the certificates and the tokens file, loading the registry, the start
//! rule for failed sources) stays with the caller, whose errors and exit codes differ.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tributary_runtime::{
    config::{open_file_limit, Config, Overrides, RESERVED_DESCRIPTORS},
    registry::Registry,
};

use crate::{auth::Authenticator, server, service::Catalog, tls::Certificates};

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `key` (`listen` or `metrics_listen`) names an address that cannot be bound; the message
    /// names the key for `metrics_listen` (`listen` may come from `--listen`).
    #[error("cannot listen on {address}{}: {error}", if *key == "listen" { String::new() } else { format!(" ({key})") })]
    Bind {
        key: &'static str,
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// A server to start: the configuration, the registry loaded from it, and what the configuration's
/// `[tls]` and `[auth]` files gave.
pub struct App {
    config: Config,
    catalog: Arc<Catalog>,
    tls: Option<Arc<Certificates>>,
    auth: Option<Arc<Authenticator>>,
    reload_from: Option<(PathBuf, Overrides)>,
    sighup: bool,
    grace: Duration,
    shutdown_delay: Duration,
}

impl App {
    /// A server for `registry` as `config` says, without TLS or auth, not reloadable, with the
    /// default grace period and no shutdown delay.
    pub fn new(config: Config, registry: Arc<Registry>) -> App {
        let catalog = Arc::new(Catalog::from_config(registry, &config));
        App {
            config,
            catalog,
            tls: None,
            auth: None,
            reload_from: None,
            sighup: false,
            grace: server::DEFAULT_GRACE,
            shutdown_delay: Duration::ZERO,
        }
    }

    /// TLS on every connection, from the configuration's `[tls]` files.
    pub fn tls(mut self, tls: Option<Arc<Certificates>>) -> App {
        self.tls = tls;
        self
    }

    /// Authentication, from the configuration's `[auth]` section.
    pub fn auth(mut self, auth: Option<Arc<Authenticator>>) -> App {
        self.auth = auth;
        self
    }

    /// Reloadable from the configuration file at `path`, read with `overrides` as at start: the
    /// Reload RPC, SIGHUP when `sighup` is set, and the directory watcher when `watch` is on.
    pub fn reload_from(mut self, path: PathBuf, overrides: Overrides, sighup: bool) -> App {
        self.reload_from = Some((path, overrides));
        self.sighup = sighup;
        self
    }

    /// How long calls in flight may run after the shutdown signal, and how long the server keeps
    /// serving (reported not ready) before it stops accepting.
    pub fn shutdown(mut self, grace: Duration, delay: Duration) -> App {
        self.grace = grace;
        self.shutdown_delay = delay;
        self
    }

    /// The catalog this server serves.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Binds `listen` and, when set, `metrics_listen`.
    pub async fn bind(self) -> Result<Bound, AppError> {
        let (listener, address) = bind("listen", self.config.listen).await?;
        let metrics = match self.config.metrics_listen {
            None => None,
            Some(at) => Some(bind("metrics_listen", at).await?),
        };
        // SIGHUP is taken over here, before the caller says where the server listens: from then on
        // a SIGHUP reloads instead of ending the process.
        let hangups = match (&self.reload_from, self.sighup) {
            (Some(_), true) => Some(
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map_err(AppError::Signal)?,
            ),
            _ => None,
        };
        Ok(Bound {
            app: self,
            listener,
            address,
            metrics,
            hangups,
        })
    }
}

/// An [`App`] whose listeners are bound.
pub struct Bound {
    app: App,
    listener: TcpListener,
    address: SocketAddr,
    metrics: Option<(TcpListener, SocketAddr)>,
    hangups: Option<tokio::signal::unix::Signal>,
}

impl Bound {
    /// Where gRPC (and REST, gRPC-web, the web page) is served.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served, when `metrics_listen` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, address)| *address)
    }

    /// The catalog this server serves.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.app.catalog
    }

    /// Serves until `shutdown` completes, then drains (see [`server::serve_with`]).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Bound {
            app,
            listener,
            address,
            metrics,
            hangups,
        } = self;
        let config = &app.config;
        let catalog = app.catalog.clone();
        let mut tasks = Vec::new();
        if let Some((path, overrides)) = app.reload_from.clone() {
            catalog.enable_reload(path.clone(), overrides, config);
            if let Some(mut hangups) = hangups {
                // SIGHUP reloads the plugin directory and the config file.
                let reloader = catalog.reloader().clone();
                tasks.push(tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        let _ = reloader.reload_now("SIGHUP").await;
                    }
                }));
            }
            if config.watch {
                tasks.push(tokio::spawn(crate::reload::watch(
                    catalog.reloader().clone(),
                    config.plugin_dir.clone(),
                    path,
                    config.reload_debounce,
                )));
            }
        }
        warn_when_exposed(config, app.tls.is_some(), app.auth.is_some());
        tracing::info!(%address, "serving gRPC");
        if let Some((listener, address)) = metrics {
            tracing::info!(%address, "serving metrics at /metrics");
            let catalog = catalog.clone();
            tasks.push(tokio::spawn(crate::metrics::serve_metrics(
                listener,
                catalog.metrics().clone(),
                move || catalog.registry(),
                std::future::pending(),
            )));
        }
        if let Some(limit) = open_file_limit() {
            if config.max_connections as u64 + RESERVED_DESCRIPTORS > limit {
                tracing::warn!(
                    max_connections = config.max_connections,
                    open_file_limit = limit,
                    "max_connections is above what the open-file limit allows; raise the limit (ulimit -n) or connections will be refused when descriptors run out"
                );
            }
        }
        let options = server::ServeOptions {
            grace: app.grace,
            max_connections: config.max_connections,
            cors_allowed_origins: config.cors_allowed_origins.clone(),
            web_ui: config.web_ui,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            stall_timeout: config.stall_timeout,
            request_body_timeout: config.request_body_timeout,
            max_streams_per_connection: config.max_streams_per_connection,
            tls: app.tls.clone(),
            auth: app.auth.clone(),
            shutdown_delay: app.shutdown_delay,
        };
        let served = server::serve_with(listener, catalog, shutdown, options)
            .await
            .map_err(AppError::from);
        for task in tasks {
            task.abort();
        }
        served
    }
}

/// Binds `address`, the value of `key`.
async fn bind(
    key: &'static str,
    address: SocketAddr,
) -> Result<(TcpListener, SocketAddr), AppError> {
    let fail = |error| AppError::Bind {
        key,
        address,
        error,
    };
    let listener = TcpListener::bind(address).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// Warns when the server listens beyond loopback without TLS or without auth.
fn warn_when_exposed(config: &Config, tls: bool, auth: bool) {
    if config.listen.ip().is_loopback() {
        return;
    }
    if !tls {
        tracing::warn!(
            address = %config.listen,
            "listening on a non-loopback address without TLS: the catalog and any credentials travel in the clear; set [tls]"
        );
    }
    if !auth {
        tracing::warn!(
            address = %config.listen,
            "listening on a non-loopback address without [auth]: anyone who can reach it reads every source"
        );
    }
}
