//! Polynomial approximations computed in code: minimax (Remez) fits of odd
//! functions and composite sign polynomials.

pub mod composite;
pub mod minimax;

pub use composite::CompositeSign;
pub use minimax::minimax_odd;
