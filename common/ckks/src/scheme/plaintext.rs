//! Plaintexts and ciphertexts.

use crate::error::CkksError;
use crate::ring::{Ntt, Poly};

/// How a plaintext's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    /// `n` complex slots (a power of two up to N/2).
    Slots(usize),
    /// Values straight in the N coefficients.
    Coefficients,
}

/// An encoded message: a polynomial in NTT form at a level, with its scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: Poly<Ntt>,
    pub(crate) level: usize,
    pub(crate) scale: f64,
    pub(crate) encoding: Encoding,
}

impl Plaintext {
    /// Level (number of chain primes minus one).
    pub fn level(&self) -> usize {
        self.level
    }
    /// Scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Layout of the values.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// The polynomial (NTT form).
    pub fn poly(&self) -> &Poly<Ntt> {
        &self.poly
    }
}

/// A CKKS ciphertext: two components (three after a product before
/// relinearisation) in NTT form, decrypting to `c0 + c1 s (+ c2 s^2)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) parts: Vec<Poly<Ntt>>,
    pub(crate) level: usize,
    pub(crate) scale: f64,
    pub(crate) encoding: Encoding,
    /// Seed of `c1` for fresh secret-key ciphertexts (compact wire form).
    pub(crate) seed: Option<[u8; 32]>,
}

impl Ciphertext {
    pub(crate) fn from_parts(parts: Vec<Poly<Ntt>>, level: usize, scale: f64, encoding: Encoding) -> Self {
        Self { parts, level, scale, encoding, seed: None }
    }

    /// Level.
    pub fn level(&self) -> usize {
        self.level
    }
    /// Scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Layout of the values.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// Number of components minus one.
    pub fn degree(&self) -> usize {
        self.parts.len() - 1
    }
    /// The components (NTT form).
    pub fn parts(&self) -> &[Poly<Ntt>] {
        &self.parts
    }
    /// Whether `c1` can be regenerated from a seed (fresh secret-key
    /// encryption), which halves the wire size.
    pub fn is_seeded(&self) -> bool {
        self.seed.is_some()
    }
    /// Overrides the recorded scale (for exact scale management by callers
    /// who know the true factor); the scale must be finite and positive.
    pub fn set_scale(&mut self, scale: f64) -> Result<(), CkksError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(CkksError::InvalidInput(format!("scale {scale} must be finite and positive")));
        }
        self.scale = scale;
        Ok(())
    }

    /// Internal scale override (values computed by the crate itself).
    pub(crate) fn reset_scale(&mut self, scale: f64) {
        debug_assert!(scale.is_finite() && scale > 0.0);
        self.scale = scale;
    }
}
