//! Messages sent as the bytes of their encoding, and the `PackagesService` server that answers its
//! list calls with them.
//!
//! A server that already holds the encoding of an answer (written straight from its own data,
//! without building the generated message first) returns it as an [`Encoded<M>`]: a
//! [`prost::Message`] whose encoding is those bytes, so the service's codec sends them as they are.
//! Clients are unaffected: on the wire it is an `M`, and they decode it as the generated `M`.
//!
//! [`packages_service_server`] is the server of `tributary.v1.PackagesService` in which the two
//! list methods answer with `Encoded<ListAvailablePackageSummariesResponse>`; the detail method
//! answers with the generated message. Its routes, names and codec are those of the generated
//! server ([`crate::v1::packages_service_server`]), which stays for servers that build messages.

use std::{fmt, marker::PhantomData};

use prost::bytes::{Buf, BufMut, Bytes};
use prost::{
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

/// The encoding of one `M`, kept as bytes.
///
/// [`Encoded::from_bytes`] trusts its caller that the bytes are an encoding of `M`: nothing checks
/// them when they are sent (a client would fail to decode a wrong one). Decoding an `Encoded<M>`
/// with [`Message::decode`] keeps every field as it came (re-encoding varints minimally), except
/// groups, which are skipped.
pub struct Encoded<M> {
    bytes: Bytes,
    message: PhantomData<fn() -> M>,
}

impl<M> Encoded<M> {
    /// Bytes that encode an `M`.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Encoded<M> {
        Encoded {
            bytes: bytes.into(),
            message: PhantomData,
        }
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoding, without copying it.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl<M: Message> Encoded<M> {
    /// The encoding of `message`.
    pub fn from_message(message: &M) -> Encoded<M> {
        Encoded::from_bytes(message.encode_to_vec())
    }
}

impl<M: Message + Default> Encoded<M> {
    /// The message these bytes encode.
    pub fn to_message(&self) -> Result<M, DecodeError> {
        M::decode(self.as_bytes())
    }
}

impl<M> Default for Encoded<M> {
    /// The empty encoding: every field of `M` at its default.
    fn default() -> Self {
        Encoded::from_bytes(Bytes::new())
    }
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Encoded::from_bytes(self.bytes.clone())
    }
}

impl<M> PartialEq for Encoded<M> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<M> fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded<{}>({} bytes)",
            std::any::type_name::<M>(),
            self.bytes.len()
        )
    }
}

impl<M> Message for Encoded<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut field = Vec::new();
        match wire_type {
            WireType::Varint => {
                let value = encoding::decode_varint(buf)?;
                encoding::encode_key(tag, wire_type, &mut field);
                encoding::encode_varint(value, &mut field);
            }
            WireType::LengthDelimited => {
                let mut value = Vec::new();
                encoding::bytes::merge(wire_type, &mut value, buf, ctx)?;
                encoding::bytes::encode(tag, &value, &mut field);
            }
            WireType::ThirtyTwoBit | WireType::SixtyFourBit => {
                let len = if wire_type == WireType::ThirtyTwoBit {
                    4
                } else {
                    8
                };
                if buf.remaining() < len {
                    // prost's own error for a truncated field.
                    return encoding::skip_field(wire_type, tag, buf, ctx);
                }
                encoding::encode_key(tag, wire_type, &mut field);
                let start = field.len();
                field.resize(start + len, 0);
                buf.copy_to_slice(&mut field[start..]);
            }
            WireType::StartGroup | WireType::EndGroup => {
                return encoding::skip_field(wire_type, tag, buf, ctx);
            }
        }
        let mut bytes = Vec::with_capacity(self.bytes.len() + field.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&field);
        self.bytes = bytes.into();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

// The server of `tributary.v1.PackagesService` whose list methods answer with
// `Encoded<ListAvailablePackageSummariesResponse>` (module `packages_service_server`, generated by
// `build.rs` with tonic-build's manual service builder).
include!(concat!(
    env!("OUT_DIR"),
    "/encoded/tributary.v1.PackagesService.rs"
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;

    fn page() -> pb::ListAvailablePackageSummariesResponse {
        pb::ListAvailablePackageSummariesResponse {
            available_package_summaries: vec![pb::AvailablePackageSummary {
                available_package_ref: Some(pb::AvailablePackageReference {
                    source: "s".into(),
                    identifier: "id-ü".into(),
                }),
                name: "n".into(),
                categories: vec!["a".into(), String::new()],
                deprecated: true,
                ..Default::default()
            }],
            next_page_token: "t".into(),
            failed_sources: vec![],
            total_size: Some(0),
            facets: Some(pb::Facets {
                deprecated: 300,
                complete: true,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn its_encoding_is_the_bytes_and_decodes_as_the_message() {
        let message = page();
        let encoded = Encoded::from_message(&message);
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        assert_eq!(encoded.to_message().unwrap(), message);
        // Sent in a frame as tonic does (length-delimited), decoded by a client as `M`.
        let framed = encoded.encode_length_delimited_to_vec();
        let decoded =
            pb::ListAvailablePackageSummariesResponse::decode_length_delimited(&framed[..])
                .unwrap();
        assert_eq!(decoded, message);
        assert!(format!("{encoded:?}").ends_with(&format!("({} bytes)", message.encoded_len())));
    }

    /// The routes `"/tributary.v1.PackagesService/<Method>"` a generated file serves.
    fn routes(code: &str) -> std::collections::BTreeSet<&str> {
        code.match_indices("\"/tributary.v1.PackagesService/")
            .map(|(at, _)| {
                let route = &code[at + 1..];
                &route[..route.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn the_server_serves_the_generated_servers_routes_under_its_name() {
        assert_eq!(
            packages_service_server::SERVICE_NAME,
            pb::packages_service_server::SERVICE_NAME
        );
        let generated = include_str!(concat!(env!("OUT_DIR"), "/tributary.v1.rs"));
        let encoded = include_str!(concat!(
            env!("OUT_DIR"),
            "/encoded/tributary.v1.PackagesService.rs"
        ));
        let ours = routes(encoded);
        assert_eq!(ours.len(), 3, "{ours:?}");
        assert_eq!(ours, routes(generated));
    }

    #[test]
    fn decoding_keeps_every_field() {
        let message = page();
        let bytes = message.encode_to_vec();
        let decoded =
            Encoded::<pb::ListAvailablePackageSummariesResponse>::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.as_bytes(), &bytes[..]);
        // Fixed-width fields, which the contract does not use, are kept too.
        let mut fixed = Vec::new();
        encoding::fixed32::encode(7, &5, &mut fixed);
        encoding::fixed64::encode(8, &6, &mut fixed);
        let decoded = Encoded::<pb::Facets>::decode(&fixed[..]).unwrap();
        assert_eq!(decoded.as_bytes(), &fixed[..]);
        // A truncated message is an error.
        assert!(
            Encoded::<pb::ListAvailablePackageSummariesResponse>::decode(&bytes[..bytes.len() - 1])
                .is_err()
        );
        let mut empty = Encoded::<pb::Facets>::from_bytes(fixed);
        empty.clear();
        assert_eq!(empty, Encoded::default());
    }
}
