//! Word-size modular arithmetic, prime generation, NTT and RNS conversions.

pub mod dot;
pub mod lanes;
pub mod modulus;
pub mod ntt;
pub mod primes;
pub mod rns;
#[cfg(target_arch = "x86_64")]
mod simd;

pub use modulus::Modulus;
pub use ntt::NttTable;
pub use rns::BasisConverter;
