//! Frames and blobs on QUIC streams (async twins of [`crate::frame`] and
//! [`crate::blob`], same bytes on the wire).

use crate::blob::{BlobRef, CHUNK};
use crate::error::ProtoError;
use crate::frame::{header, parse_header, FrameKind, HEADER_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
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
    let name: String = blob.sha256[..6].iter().map(|b| format!("{b:02x}")).collect();
    let err = |msg: String| ProtoError::Blob { blob: name.clone(), msg };
    if blob.len > max_len {
        return Err(err(format!("announced {} bytes, limit {max_len}", blob.len)));
    }
    let total = usize::try_from(blob.len).map_err(|_| err("length does not fit memory".into()))?;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h).await.map_err(|_| err(format!("stream ended after {} of {total} bytes", out.len())))?;
        let (kind, len) = parse_header(&h, CHUNK as u32)?;
        if kind != FrameKind::BlobChunk {
            return Err(err(format!("expected a chunk after {} of {total} bytes", out.len())));
        }
        let len = len as usize;
        if out.len() + len > total {
            return Err(err(format!("chunk of {len} bytes overruns the announced {total} at {}", out.len())));
        }
        let start = out.len();
        out.resize(start + len, 0);
        r.read_exact(&mut out[start..]).await.map_err(|_| err(format!("stream ended inside a chunk at {start}")))?;
    }
    let digest: [u8; 32] = Sha256::digest(&out).into();
    if digest != blob.sha256 {
        return Err(err("SHA-256 mismatch: the bytes differ from what was announced".into()));
    }
    Ok(out)
}
