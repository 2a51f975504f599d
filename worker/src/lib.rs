//! Nexus worker: executes ciphertext-level tasks with a key cache.
//!
//! Placeholder until the cluster issue lands.

pub use nexus_proto::PROTOCOL_VERSION;
