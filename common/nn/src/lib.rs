//! NEXUS transformer operators on encrypted data, on top of `nexus-ckks`.
//!
//! Every operator states its cost ([`OpCost`]: levels, rotations, products,
//! Galois elements), has an f64 twin that performs the same approximations
//! (its tests compare against it), and refuses inputs outside the range it is
//! valid on.

pub use nexus_ckks as ckks;

pub mod approx;
pub mod argmax;
pub mod attention;
pub mod bert;
pub mod compare;
pub mod cost;
pub mod engine;
pub mod error;
pub mod functions;
pub mod gelu;
pub mod keyset;
pub mod layernorm;
pub mod layout;
pub mod matmul;
pub mod model;
pub mod newton;
pub mod operator_model;
pub mod softmax;

pub use argmax::Argmax;
pub use attention::HeadAttention;
pub use compare::{Comparator, Refresh};
pub use cost::OpCost;
pub use engine::Engine;
pub use error::NnError;
pub use gelu::Gelu;
pub use keyset::KeySet;
pub use layernorm::LayerNorm;
pub use layout::RowLayout;
pub use matmul::{CompressedMatMul, MatMulModel, MATMUL_MODEL};
pub use model::{DemoMlp, DEMO_MODEL};
pub use operator_model::{OperatorModel, OPERATOR_MODELS};
pub use softmax::Softmax;
