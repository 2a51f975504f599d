//! The protocol's error type.

use thiserror::Error;

/// Every failure of framing, encoding or blob transfer. Messages name the
/// offending value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The frame does not start with the protocol's magic bytes.
    #[error("bad frame magic {0:02x?} (expected \"NXPF\")")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version in the frame.
        got: u16,
        /// Version of this build.
        supported: u16,
    },
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The declared length exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// The input ended early.
    #[error("truncated input: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        got: u64,
    },
    /// A frame of another kind arrived where this one was expected.
    #[error("expected a {expected} frame, got kind {got}")]
    UnexpectedKind {
        /// Expected kind.
        expected: &'static str,
        /// Kind received.
        got: u8,
    },
    /// MessagePack encoding failed.
    #[error("encoding {what}: {msg}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// Encoder message.
        msg: String,
    },
    /// MessagePack decoding failed (malformed or wrong type).
    #[error("decoding {what}: {msg}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// Decoder message.
        msg: String,
    },
    /// A blob's chunks do not add up to what was announced.
    #[error("blob {blob}: {msg}")]
    Blob {
        /// Blob id (hex).
        blob: String,
        /// What was wrong.
        msg: String,
    },
    /// An identifier is malformed.
    #[error("invalid {what}: {msg}")]
    InvalidId {
        /// Which identifier.
        what: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// I/O error of the underlying stream.
    #[error("i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for ProtoError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Truncated { needed: 0, got: 0 }
        } else {
            ProtoError::Io(e.to_string())
        }
    }
}
