//! Ciphertext x plaintext matrix products.
//!
//! - [`compressed`]: the NEXUS compressed-input method (first linear layer:
//!   the client packs values into coefficients, the server expands them with
//!   automorphisms and multiplies by plaintext columns, no rotations).
//! - [`diagonal`]: a rotation-based product for slot-packed activations
//!   (middle layers): block-diagonal baby-step giant-step, hoisted.
//! - [`cost_model`]: picks a method per layer from the operand's layout and
//!   estimated work.
//! - [`expand`]: the oblivious expansion the compressed method is built on.

pub mod compressed;
pub mod cost_model;
pub mod diagonal;
pub mod expand;
pub mod served;

pub use compressed::{CompressedMatMul, Partial, Tile};
pub use diagonal::DiagonalMatMul;
pub use served::{MatMulModel, MATMUL_MODEL, MATMUL_SHAPE};
