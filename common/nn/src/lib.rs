//! NEXUS operators on top of `nexus-ckks`.
//!
//! This crate is a placeholder until the operators issue lands: it only
//! re-exports the engine so that downstream crates already depend on the final
//! crate graph (`nexus-ckks <- nexus-nn <- {client, worker, coordinator}`).

pub use nexus_ckks as ckks;
