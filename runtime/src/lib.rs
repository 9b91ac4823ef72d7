//! Tributary's runtime: everything between the configuration file and a merged page, with no
//! network server in it (no tonic, hyper or axum). The server crate (`tributary-host`) serves it.
//!
//! # Layers, from the bottom up (a module uses only those above it in this list)
//! - [`config`]: the TOML configuration as plain data, its defaults and its validation.
//! - [`log_limit`]: rate limits for repeated log lines.
//! - [`context`]: what a source is told when it is built; the time left of the call in progress.
//! - [`loader`]: scanning the plugin directory, checking and loading each library.
//! - [`isolation`]: sources run in a child process (`isolation = "process"`), and the runner's side.
//! - [`call`]: every plugin call: in place, on the source's own threads or in its runner, under one
//!   health and back-off policy ([`call::SourceHealth`]), on a [`call::SourceHandle`].
//! - [`registry`]: the plugin files and the sources built from them, generation after generation.
//! - [`check`]: `tributary plugin check`, one library through the conformance kit.
//! - [`merge`]: fan-out to the sources, fan-in by k-way merge, one page at a time; page tokens.

pub mod call;
pub mod check;
pub mod config;
pub mod context;
pub mod isolation;
pub mod loader;
pub mod log_limit;
pub mod merge;
pub mod registry;
