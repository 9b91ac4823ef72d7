//! Length-prefixed prost frames over a blocking stream.

use std::io::{self, Read, Write};

use prost::Message;

/// The largest frame either side accepts (a page of summaries or one detail fits easily).
pub const MAX_FRAME: usize = 64 << 20;

/// Writes one message as a 4-byte big-endian length and its encoding.
pub fn write<M: Message>(w: &mut impl Write, message: &M) -> io::Result<()> {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode(&mut buf).map_err(io::Error::other)?;
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one message; `Ok(None)` at a clean end of stream.
pub fn read<M: Message + Default>(r: &mut impl Read) -> io::Result<Option<M>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    M::decode(buf.as_slice())
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
