//! The Tributary server: it serves the runtime's merged catalog (`tributary-runtime`: config,
//! plugins, calls, registry, merge) over gRPC, REST/JSON, gRPC-web and a web page, with TLS,
//! authentication, metrics and reload.
//!
//! # Layers, from the bottom up (a module uses only those above it in this list)
//! - [`status`]: one mapping of errors to what clients see: gRPC codes, HTTP statuses, code names,
//!   the JSON error body, `ResumeInfo` in a status's details.
//! - [`webui`]: the catalog web page at `/` (static files).
//! - [`idle`]: idle and stalled connections are closed; request bodies have a deadline and a size.
//! - [`tls`]: TLS on the listener, certificate reload, client certificates.
//! - [`listener`]: the accept loop: connection limit, handshake timeout, no busy loop.
//! - [`request_id`]: a request id on every log line of a request.
//! - [`auth`]: bearer tokens and client certificates, and the sources each caller may see.
//! - [`metrics`]: Prometheus metrics, the calls each source reports, and their admin listener.
//! - [`reload`]: a new generation of libraries and sources while serving; the directory watcher.
//! - [`page`]: a listing's page as the merge made it, and its protobuf encoding written straight
//!   from the plugins' summaries.
//! - [`service`]: the gRPC services over the current generation.
//! - [`rest`]: REST/JSON on the gRPC port, through the same service code.
//! - [`grpc_web`]: gRPC-web beside REST's plain HTTP/1.1 on one port.
//! - [`server`]: serving all of it with health and reflection, and staged shutdown.
//! - [`app`]: the whole server from a configuration and its registry; what the binary and the
//!   tests start.
//!
//! The `tributary` binary (`src/bin/tributary.rs`) parses arguments, reads the files the
//! configuration names, applies the start rules and exit codes, and starts an [`app::App`].

pub mod app;
pub mod auth;
pub mod grpc_web;
pub mod idle;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod reload;
pub mod request_id;
pub mod rest;
pub mod server;
pub mod service;
pub mod status;
pub mod tls;
pub mod webui;
