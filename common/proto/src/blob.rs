//! Blobs (evaluation keys, ciphertexts) as a sequence of chunk frames after
//! the message that announces them with a [`BlobRef`] (length and SHA-256).
//!
//! The writer frames slices of the caller's buffer directly (no copy of the
//! whole blob into a message); the reader checks every chunk against the
//! announced length before buffering it and the digest at the end, so a
//! short, long or corrupted transfer is an error naming the blob, never a
//! silently different key or ciphertext.

use crate::error::ProtoError;
use crate::frame::{header, parse_header, FrameKind, HEADER_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Chunk payload size.
pub const CHUNK: usize = 1 << 20;

/// Announces a blob: its length and digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

impl BlobRef {
    /// The reference of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self { len: bytes.len() as u64, sha256: Sha256::digest(bytes).into() }
    }

    fn name(&self) -> String {
        self.sha256[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Writes `bytes` as chunk frames (the announcing message goes first).
pub fn write_blob<W: Write>(w: &mut W, bytes: &[u8]) -> Result<(), ProtoError> {
    for chunk in bytes.chunks(CHUNK) {
        w.write_all(&header(FrameKind::BlobChunk, chunk.len() as u32))?;
        w.write_all(chunk)?;
    }
    Ok(())
}

/// Reads the blob announced by `blob`, refusing it if it is longer than
/// `max_len`, if a chunk overruns it, or if the digest differs.
pub fn read_blob<R: Read>(r: &mut R, blob: &BlobRef, max_len: u64) -> Result<Vec<u8>, ProtoError> {
    let err = |msg: String| ProtoError::Blob { blob: blob.name(), msg };
    if blob.len > max_len {
        return Err(err(format!("announced {} bytes, limit {max_len}", blob.len)));
    }
    let total = usize::try_from(blob.len).map_err(|_| err("length does not fit memory".into()))?;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h).map_err(|_| err(format!("stream ended after {} of {total} bytes", out.len())))?;
        let (kind, len) = parse_header(&h, CHUNK as u32)?;
        if kind != FrameKind::BlobChunk {
            return Err(err(format!("expected a chunk after {} of {total} bytes, got kind {}", out.len(), kind as u8)));
        }
        let len = len as usize;
        if out.len() + len > total {
            return Err(err(format!("chunk of {len} bytes overruns the announced {total} at {}", out.len())));
        }
        let start = out.len();
        out.resize(start + len, 0);
        r.read_exact(&mut out[start..]).map_err(|_| err(format!("stream ended inside a chunk at {start}")))?;
    }
    let digest: [u8; 32] = Sha256::digest(&out).into();
    if digest != blob.sha256 {
        return Err(err("SHA-256 mismatch: the bytes differ from what was announced".into()));
    }
    Ok(out)
}
