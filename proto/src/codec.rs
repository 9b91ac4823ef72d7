//! The codec of the generated services: prost, except that a message that does not decode (invalid
//! UTF-8 in a string, a truncated field, a bad wire type) is `INVALID_ARGUMENT`, the caller's fault,
//! not `INTERNAL` as in `tonic_prost::ProstCodec`.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with [`StrictDecoder`].
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Decodes `U`; a malformed message is `INVALID_ARGUMENT` naming what is wrong (prost's description:
/// the field path and the fault, never the bytes).
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let mut what = e.to_string();
            what.truncate(512);
            Status::invalid_argument(format!("malformed protobuf message: {what}"))
        })
    }
}
