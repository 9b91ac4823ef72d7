//! Compiles `proto/tributary/v1/tributary.proto` with protox (no system `protoc`) and writes both the
//! generated Rust code (prost messages, tonic stubs, pbjson serde impls) and the encoded descriptor
//! set (for gRPC server reflection) to `OUT_DIR`; and, under `OUT_DIR/encoded`, a second server of
//! `PackagesService` whose list methods answer with pre-encoded pages (see `src/encoded.rs`).

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
    encoded_packages_server(&out_dir.join("encoded"))?;
    Ok(())
}

/// `PackagesService`'s server, with the list methods answering
/// `Encoded<ListAvailablePackageSummariesResponse>`: same routes, same codec, same request types.
/// `encoded::tests` checks its routes against the generated server's; the e2e tests call every
/// method through the generated client against the server, which runs this one.
fn encoded_packages_server(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_prost_build::manual::{Builder, Method, Service};
    std::fs::create_dir_all(out_dir)?;
    let codec = "crate::codec::ProtoCodec";
    let list_request = "crate::v1::ListAvailablePackageSummariesRequest";
    let page = "crate::encoded::Encoded<crate::v1::ListAvailablePackageSummariesResponse>";
    let service = Service::builder()
        .name("PackagesService")
        .package("tributary.v1")
        .comment("Lists and describes the packages of every configured source.")
        .method(
            Method::builder()
                .name("list_available_package_summaries")
                .route_name("ListAvailablePackageSummaries")
                .comment("One page of the merged, ordered catalog.")
                .input_type(list_request)
                .output_type(page)
                .codec_path(codec)
                .build(),
        )
        .method(
            Method::builder()
                .name("get_available_package_detail")
                .route_name("GetAvailablePackageDetail")
                .comment("Everything the owning source knows about one package.")
                .input_type("crate::v1::GetAvailablePackageDetailRequest")
                .output_type("crate::v1::GetAvailablePackageDetailResponse")
                .codec_path(codec)
                .build(),
        )
        .method(
            Method::builder()
                .name("stream_available_package_summaries")
                .route_name("StreamAvailablePackageSummaries")
                .comment("The whole merged, ordered catalog, as a stream of pages.")
                .input_type(list_request)
                .output_type(page)
                .codec_path(codec)
                .server_streaming()
                .build(),
        )
        .build();
    Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&[service]);
    Ok(())
}
