//! The Tributary server: it loads package-catalog plugins from a directory and serves one ordered,
//! merged catalog over gRPC.
//!
//! # Layout
//! - [`auth`]: bearer tokens and client certificates, and the sources each caller may see.
//! - [`check`]: `tributary plugin check`, one library through the conformance kit.
//! - [`config`]: the TOML configuration and its validation.
//! - [`loader`]: scanning the plugin directory and loading each library.
//! - [`metrics`]: Prometheus metrics and their admin listener.
//! - [`registry`]: the plugin files and the sources built from them.
//! - [`plugin_context`]: what a source is told when it is built, and its log and time-left calls.
//! - [`engine`]: fan-out to one task per source, fan-in by k-way merge, one page at a time.
//! - [`guard`]: every plugin call: the source's own thread, deadline, calls in flight, back-off.
//! - [`threads`]: each source's own threads for its plugin calls.
//! - [`inline`]: calls made in place for fast sources, under a watchdog.
//! - [`isolation`]: sources run in a child process (`isolation = "process"`).
//! - [`token`]: the page-token codec.
//! - [`service`]: the gRPC services and the mapping of errors to status codes.
//! - [`grpc_web`]: gRPC-web beside REST's plain HTTP/1.1 on one port.
//! - [`tls`]: TLS on the listener, certificate reload, client certificates.
//! - [`rest`]: REST/JSON on the gRPC port, through the same service code.
//! - [`request_id`]: a request id on every log line of a request.
//! - [`server`]: serving with health and reflection, and staged shutdown.
//! - [`listener`]: the accept loop: connection limit, handshake timeout, no busy loop.
//! - [`idle`]: idle and stalled connections are closed; request bodies have a deadline.
//! - [`webui`]: the catalog web page at `/`.
//!
//! The `tributary` binary (`src/bin/tributary.rs`) only parses arguments and calls into these.

pub mod auth;
pub mod check;
pub mod config;
pub mod engine;
pub mod grpc_web;
pub mod guard;
pub mod idle;
pub mod inline;
pub mod isolation;
pub mod listener;
pub mod loader;
pub mod log_limit;
pub mod metrics;
pub mod plugin_context;
pub mod registry;
pub mod reload;
pub mod request_id;
pub mod rest;
pub mod server;
pub mod service;
pub mod threads;
pub mod tls;
pub mod token;
pub mod webui;
