//! Frames and blobs on QUIC streams (async twins of [`crate::frame`] and
//! [`crate::blob`], same bytes on the wire).

use crate::blob::{Assembly, BlobRef, CHUNK};
use crate::error::ProtoError;
use crate::frame::{header, parse_header, FrameKind, HEADER_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn io(e: std::io::Error) -> ProtoError {
    ProtoError::Io(e.to_string())
}

/// Writes one message frame.
pub async fn send_message<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    what: &'static str,
    msg: &T,
    max: u32,
) -> Result<(), ProtoError> {
    let bytes = crate::frame::encode_message(what, msg, max)?;
    w.write_all(&bytes).await.map_err(io)
}

/// Reads one message frame (length checked before allocation).
pub async fn recv_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    what: &'static str,
    max: u32,
) -> Result<T, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await.map_err(|_| ProtoError::Truncated { needed: HEADER_LEN as u64, got: 0 })?;
    let (kind, len) = parse_header(&h, max)?;
    if kind != FrameKind::Message {
        return Err(ProtoError::UnexpectedKind { expected: "message", got: kind as u8 });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.map_err(|_| ProtoError::Truncated { needed: len as u64, got: 0 })?;
    rmp_serde::from_slice(&payload).map_err(|e| ProtoError::Decode { what, msg: e.to_string() })
}

/// Writes a blob as chunk frames, straight from the caller's buffer.
pub async fn send_blob<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), ProtoError> {
    for chunk in bytes.chunks(CHUNK) {
        w.write_all(&header(FrameKind::BlobChunk, chunk.len() as u32)).await.map_err(io)?;
        w.write_all(chunk).await.map_err(io)?;
    }
    Ok(())
}

/// Reads the blob `blob` announced, with the same checks as
/// [`crate::blob::read_blob`].
pub async fn recv_blob<R: AsyncRead + Unpin>(r: &mut R, blob: &BlobRef, max_len: u64) -> Result<Vec<u8>, ProtoError> {
    let mut a = Assembly::new(blob, max_len)?;
    while !a.done() {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h).await.map_err(|_| a.ended())?;
        let range = a.accept(&h)?;
        let start = range.start;
        r.read_exact(&mut a.out[range]).await.map_err(|_| a.err(format!("stream ended inside a chunk at {start}")))?;
    }
    a.finish()
}
