//! Compiles the private host-to-runner protocol (`proto/tributary/runner/v1/runner.proto`) with
//! protox (no system `protoc`) into prost messages. It is not part of the public contract, which
//! lives in the `tributary-proto` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runner = "proto/tributary/runner/v1/runner.proto";
    println!("cargo:rerun-if-changed={runner}");
    let fds = protox::compile([runner], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
