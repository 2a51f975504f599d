//! Ciphertext x plaintext matrix products.
//!
//! - [`compressed`]: the NEXUS compressed-input method (first linear layer:
//!   the client packs values into coefficients, the server expands them with
//!   automorphisms and multiplies by plaintext columns, no rotations).
//! - [`expand`]: the oblivious expansion it is built on.

pub mod compressed;
pub mod expand;

pub use compressed::{CompressedMatMul, Partial, Tile};
