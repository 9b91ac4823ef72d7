//! The Tributary gRPC contract, package `tributary.v1`, compiled from `proto/tributary/v1/tributary.proto`.
//!
//! This crate holds the contract and nothing else: generated message types, client and server stubs,
//! serde impls following the proto3 JSON mapping (pbjson) for the REST API, and the encoded file
//! descriptor set that server reflection serves. [`encoded`] holds a second server of
//! `PackagesService` for servers that write their pages' encoding themselves.

#![allow(clippy::all)]

pub mod codec;
pub mod encoded;

/// Generated code for `tributary.v1`.
pub mod v1 {
    tonic::include_proto!("tributary.v1");
    include!(concat!(env!("OUT_DIR"), "/tributary.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of the contract, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tributary_descriptor.bin"));
