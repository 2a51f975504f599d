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

/// Reassembly of one announced blob: the checks the sync and async readers
/// share (limit before allocating, chunk kind, no overrun, digest at the end).
pub(crate) struct Assembly<'a> {
    blob: &'a BlobRef,
    total: usize,
    pub(crate) out: Vec<u8>,
}

impl<'a> Assembly<'a> {
    pub(crate) fn new(blob: &'a BlobRef, max_len: u64) -> Result<Self, ProtoError> {
        let me = Self { blob, total: 0, out: Vec::new() };
        if blob.len > max_len {
            return Err(me.err(format!("announced {} bytes, limit {max_len}", blob.len)));
        }
        let total = usize::try_from(blob.len).map_err(|_| me.err("length does not fit memory".into()))?;
        Ok(Self { total, out: Vec::with_capacity(total), ..me })
    }

    pub(crate) fn err(&self, msg: String) -> ProtoError {
        ProtoError::Blob { blob: self.blob.name(), msg }
    }

    pub(crate) fn done(&self) -> bool {
        self.out.len() >= self.total
    }

    pub(crate) fn ended(&self) -> ProtoError {
        self.err(format!("stream ended after {} of {} bytes", self.out.len(), self.total))
    }

    /// Checks a chunk header and makes room: the range of `out` to fill.
    pub(crate) fn accept(&mut self, h: &[u8; HEADER_LEN]) -> Result<std::ops::Range<usize>, ProtoError> {
        let (kind, len) = parse_header(h, CHUNK as u32)?;
        let start = self.out.len();
        if kind != FrameKind::BlobChunk {
            return Err(
                self.err(format!("expected a chunk after {start} of {} bytes, got kind {}", self.total, kind as u8))
            );
        }
        let len = len as usize;
        if start + len > self.total {
            return Err(self.err(format!("chunk of {len} bytes overruns the announced {} at {start}", self.total)));
        }
        self.out.resize(start + len, 0);
        Ok(start..start + len)
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>, ProtoError> {
        let digest: [u8; 32] = Sha256::digest(&self.out).into();
        if digest != self.blob.sha256 {
            return Err(self.err("SHA-256 mismatch: the bytes differ from what was announced".into()));
        }
        Ok(self.out)
    }
}

/// Reads the blob announced by `blob`, refusing it if it is longer than
/// `max_len`, if a chunk overruns it, or if the digest differs.
pub fn read_blob<R: Read>(r: &mut R, blob: &BlobRef, max_len: u64) -> Result<Vec<u8>, ProtoError> {
    let mut a = Assembly::new(blob, max_len)?;
    while !a.done() {
        let mut h = [0u8; HEADER_LEN];
        r.read_exact(&mut h).map_err(|_| a.ended())?;
        let range = a.accept(&h)?;
        let start = range.start;
        r.read_exact(&mut a.out[range]).map_err(|_| a.err(format!("stream ended inside a chunk at {start}")))?;
    }
    a.finish()
}
