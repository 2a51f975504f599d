//! Nexus wire messages, framing and blob streaming.
//!
//! - [`ids`]: content-addressed key sets, queries, tasks, tenants, workers.
//! - [`messages`]: every message between client, coordinator and worker,
//!   serde types encoded with MessagePack (rmp-serde).
//! - [`frame`]: a 12-byte header (magic, version, kind, length) in front of
//!   every payload; the length is checked against a limit before anything is
//!   allocated.
//! - [`tls`]: the cluster CA, leaf certificates, mutual-TLS endpoint configs.
//! - [`quic`]: the same frames and blobs on QUIC streams (async).
//! - [`blob`]: keys and ciphertexts travel as chunk frames after the message
//!   that announces them (length and BLAKE3 digest declared up front), so large
//!   blobs are never copied into one message.
//!
//! It deliberately does not depend on `nexus-ckks`: ciphertexts and keys
//! cross the wire as byte envelopes that only the engine decodes (and checks
//! against its parameters).

pub mod blob;
pub mod error;
pub mod frame;
pub mod ids;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod quic;
pub mod recycle;
pub mod tls;

pub use error::ProtoError;

/// The protocol version every frame header carries. 2: blob digests and
/// key-set ids are BLAKE3 (were SHA-256), the digest field is `digest`.
pub const PROTOCOL_VERSION: u16 = 2;
