//! Nexus wire messages, framing over QUIC streams and metric names.
//!
//! Placeholder until the cluster issue lands. It deliberately does not depend
//! on `nexus-ckks`: ciphertexts cross the wire as checked byte envelopes that
//! only the engine decodes.

/// The protocol version that every message header will carry.
pub const PROTOCOL_VERSION: u16 = 1;
