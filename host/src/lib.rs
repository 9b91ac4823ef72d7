//! The Tributary server: it loads package-catalog plugins from a directory and serves one ordered,
//! merged catalog over gRPC.
//!
//! # Layout
//! - [`config`]: the TOML configuration and its validation.
//! - [`loader`]: scanning the plugin directory and loading each library.
//! - [`metrics`]: Prometheus metrics and their admin listener.
//! - [`registry`]: the plugin files and the sources built from them.
//! - [`engine`]: fan-out to one task per source, fan-in by k-way merge, one page at a time.
//! - [`guard`]: every plugin call: blocking thread, deadline, calls in flight, back-off.
//! - [`isolation`]: sources run in a child process (`isolation = "process"`).
//! - [`token`]: the page-token codec.
//! - [`service`]: the gRPC services and the mapping of errors to status codes.
//! - [`server`]: serving with health and reflection, and staged shutdown.
//!
//! The `tributary` binary (`src/bin/tributary.rs`) only parses arguments and calls into these.

pub mod config;
pub mod engine;
pub mod guard;
pub mod isolation;
pub mod loader;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod service;
pub mod token;
