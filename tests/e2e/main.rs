//! End-to-end tests: real plugin libraries copied into a temporary directory, a real server on
//! loopback, a real gRPC client. One test binary, with a module per concern.

mod auth;
mod binary;
mod browser;
mod changes;
mod clients;
mod compat;
mod deploy;
mod discovery;
mod examples;
mod faults;
mod fuzz;
mod helm_http;
mod honest;
mod in_place;
mod isolation;
mod loading;
mod merge;
mod metrics;
mod oci;
mod plugin_kit;
mod random;
mod reload;
mod rest;
mod robust;
mod rolling;
mod stalled_memory;
mod startup;
mod stream;
mod tls;
mod tokens;
