//! Compiles `proto/tributary/v1/tributary.proto` with protox (no system `protoc`) and writes both the
//! generated Rust code (prost messages, tonic stubs, pbjson serde impls) and the encoded descriptor
//! set (for gRPC server reflection) to `OUT_DIR`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tributary/v1/tributary.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out_dir.join("tributary_descriptor.bin"), &descriptors)?;
    // serde impls following the proto3 JSON mapping (camelCase names, enums as names, 64-bit
    // integers as strings), for the REST API; the runner's framing is not JSON.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out_dir)
        .build(&[".tributary.v1"])?;
    // Malformed requests are INVALID_ARGUMENT, not INTERNAL (see src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
