//! Frames: `magic "NXPF" | version u16 | kind u8 | reserved u8 | length u32`
//! (big-endian, 12 bytes) followed by `length` payload bytes.
//!
//! The length is checked against the reader's limit before the payload is
//! allocated, so a hostile peer cannot make a process allocate more than the
//! limit by lying in a header.

use crate::error::ProtoError;
use crate::PROTOCOL_VERSION;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};

/// Header size in bytes.
pub const HEADER_LEN: usize = 12;
const MAGIC: [u8; 4] = *b"NXPF";
/// Default limit for message frames (blobs travel as chunks).
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A MessagePack-encoded message.
    Message = 1,
    /// One chunk of a blob announced by the previous message.
    BlobChunk = 2,
}

impl FrameKind {
    fn from_byte(b: u8) -> Result<Self, ProtoError> {
        match b {
            1 => Ok(Self::Message),
            2 => Ok(Self::BlobChunk),
            other => Err(ProtoError::UnknownKind(other)),
        }
    }
}

/// The 12 header bytes of a frame with `len` payload bytes.
pub fn header(kind: FrameKind, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h[6] = kind as u8;
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h
}

/// Parses a header, checking magic, version, kind, reserved byte and the
/// length limit.
pub fn parse_header(h: &[u8], max: u32) -> Result<(FrameKind, u32), ProtoError> {
    if h.len() < HEADER_LEN {
        return Err(ProtoError::Truncated { needed: HEADER_LEN as u64, got: h.len() as u64 });
    }
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([h[4], h[5]]);
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
    }
    let kind = FrameKind::from_byte(h[6])?;
    if h[7] != 0 {
        return Err(ProtoError::Decode { what: "frame header", msg: format!("reserved byte is {}, must be 0", h[7]) });
    }
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if len > max {
        return Err(ProtoError::FrameTooLarge { len: len as u64, max: max as u64 });
    }
    Ok((kind, len))
}

/// Encodes a message as one frame.
pub fn encode_message<T: Serialize>(what: &'static str, msg: &T, max: u32) -> Result<Vec<u8>, ProtoError> {
    let payload = rmp_serde::to_vec_named(msg).map_err(|e| ProtoError::Encode { what, msg: e.to_string() })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= max)
        .ok_or(ProtoError::FrameTooLarge { len: payload.len() as u64, max: max as u64 })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header(FrameKind::Message, len));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one message frame occupying all of `bytes`.
pub fn decode_message<T: DeserializeOwned>(what: &'static str, bytes: &[u8], max: u32) -> Result<T, ProtoError> {
    let (kind, len) = parse_header(bytes, max)?;
    if kind != FrameKind::Message {
        return Err(ProtoError::UnexpectedKind { expected: "message", got: kind as u8 });
    }
    let body = &bytes[HEADER_LEN..];
    if body.len() != len as usize {
        return Err(ProtoError::Truncated { needed: len as u64, got: body.len() as u64 });
    }
    rmp_serde::from_slice(body).map_err(|e| ProtoError::Decode { what, msg: e.to_string() })
}

/// Writes a message frame to a stream.
pub fn write_message<W: Write, T: Serialize>(
    w: &mut W,
    what: &'static str,
    msg: &T,
    max: u32,
) -> Result<(), ProtoError> {
    w.write_all(&encode_message(what, msg, max)?)?;
    Ok(())
}

/// Reads one frame's header and payload (payload allocated only after the
/// length passed the limit).
pub fn read_frame<R: Read>(r: &mut R, max: u32) -> Result<(FrameKind, Vec<u8>), ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let (kind, len) = parse_header(&h, max)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|_| ProtoError::Truncated { needed: len as u64, got: 0 })?;
    Ok((kind, payload))
}

/// Reads one message frame from a stream.
pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R, what: &'static str, max: u32) -> Result<T, ProtoError> {
    let (kind, payload) = read_frame(r, max)?;
    if kind != FrameKind::Message {
        return Err(ProtoError::UnexpectedKind { expected: "message", got: kind as u8 });
    }
    rmp_serde::from_slice(&payload).map_err(|e| ProtoError::Decode { what, msg: e.to_string() })
}
