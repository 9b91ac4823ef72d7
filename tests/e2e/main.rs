//! End-to-end tests: real plugin libraries copied into a temporary directory, a real server on
//! loopback, a real gRPC client. One test binary, with a module per concern.

mod binary;
mod changes;
mod compat;
mod examples;
mod faults;
mod fuzz;
mod loading;
mod merge;
mod random;
mod robust;
mod tokens;
