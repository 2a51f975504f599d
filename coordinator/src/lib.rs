//! Nexus coordinator: admission, batching, planning and scheduling.
//!
//! Placeholder until the cluster issue lands.

pub use nexus_proto::PROTOCOL_VERSION;
