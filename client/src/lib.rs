//! Nexus client library: key generation, encryption and decryption on the
//! data owner's side, and the `nexus demo` walkthrough.
//!
//! Until the cluster lands, the demo runs the encrypted computation in this
//! process with the engine directly (no coordinator or workers yet).

pub mod cluster;
pub mod demo;
