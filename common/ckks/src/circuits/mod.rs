//! Circuits on top of the evaluator: polynomial evaluation (Chebyshev,
//! baby-step giant-step, exact scales) and slot-space linear transforms
//! (diagonal baby-step giant-step with hoisted rotations). Bootstrapping and
//! the NEXUS operators are built from these.

pub mod linear;
pub mod polynomial;

pub use linear::{Diagonal, LinearTransform};
pub use polynomial::{Chebyshev, PolynomialEvaluator};
