//! The evaluation context the operators run in, and the few scale-exact
//! arithmetic helpers they share.

use crate::error::NnError;
use nexus_ckks::circuits::{Chebyshev, PolynomialEvaluator};
use nexus_ckks::{Ciphertext, Encoder, Evaluator, GaloisKeys, Parameters, RelinKey};

/// Evaluator, encoder and evaluation keys of one key set.
#[derive(Clone, Copy, Debug)]
pub struct Engine<'a> {
    /// Homomorphic operations.
    pub eval: &'a Evaluator,
    /// Plaintext encoding (weights, masks, constants).
    pub encoder: &'a Encoder,
    /// Relinearisation key.
    pub rlk: &'a RelinKey,
    /// Galois keys (rotations, expansions).
    pub galois: &'a GaloisKeys,
}

impl<'a> Engine<'a> {
    /// Parameters of the key set.
    pub fn params(&self) -> &Parameters {
        self.eval.params()
    }

    /// `ct * values` (slot-wise, a plaintext vector) landing exactly at
    /// `level` and `scale`: the plaintext is encoded at the scale that makes
    /// the rescaled product hit `scale`. `ct` must be above `level`.
    pub fn mul_plain_to(
        &self,
        ct: &Ciphertext,
        values: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<Ciphertext, NnError> {
        let e = self.eval;
        let ct = e.drop_to_level(ct, level + 1)?;
        let prime = self.params().q()[level + 1] as f64;
        let pt = self.encoder.encode_real(values, level + 1, scale * prime / ct.scale())?;
        let mut prod = e.mul_plain(&ct, &pt)?;
        prod.set_scale(scale * prime)?;
        Ok(e.rescale(&prod)?)
    }

    /// `ct * c` landing exactly at `level` and `scale` (see
    /// [`mul_plain_to`](Self::mul_plain_to)).
    pub fn mul_const_to(&self, ct: &Ciphertext, c: f64, level: usize, scale: f64) -> Result<Ciphertext, NnError> {
        let e = self.eval;
        let prime = self.params().q()[level + 1] as f64;
        // Read in place at level + 1 (no copy), the constant encoded so
        // that the product's scale is scale * prime.
        Ok(e.rescale(&e.linear_combination(&[(ct, c)], level + 1, scale * prime)?)?)
    }

    /// `a * b` relinearised and rescaled, at the lower of the two levels.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, NnError> {
        let e = self.eval;
        let level = a.level().min(b.level());
        Ok(e.relinearize_rescale(&e.mul_at(a, b, level)?, self.rlk)?)
    }

    /// `c a b` relinearised and rescaled, at the lower of the two levels,
    /// landing on `scale` when one operand is above the other: that one
    /// takes `c` and the scale correction in a constant product on its way
    /// down, which costs the result no level. At equal levels it is the
    /// plain product with `c` in the scale label, at whatever scale the
    /// product leaves. Products of products otherwise drift off the primes'
    /// scale, which a polynomial evaluated at its input's scale amplifies.
    pub fn mul_landing(&self, a: &Ciphertext, b: &Ciphertext, c: f64, scale: f64) -> Result<Ciphertext, NnError> {
        let (high, low) = match a.level().cmp(&b.level()) {
            std::cmp::Ordering::Greater => (a, b),
            std::cmp::Ordering::Less => (b, a),
            std::cmp::Ordering::Equal => {
                let mut product = self.mul(a, b)?;
                product.set_scale(product.scale() / c)?;
                return Ok(product);
            }
        };
        let level = low.level();
        let prime = self.params().q()[level] as f64;
        let high = self.mul_const_to(high, c, level, scale * prime / low.scale())?;
        self.mul(&high, low)
    }

    /// `a + b` at the lower level; `b`'s scale must equal `a`'s.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, NnError> {
        let e = self.eval;
        let level = a.level().min(b.level());
        Ok(e.add(&e.drop_to_level(a, level)?, &e.drop_to_level(b, level)?)?)
    }

    /// `a - b` at the lower level; `b`'s scale must equal `a`'s.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, NnError> {
        let e = self.eval;
        let level = a.level().min(b.level());
        Ok(e.sub(&e.drop_to_level(a, level)?, &e.drop_to_level(b, level)?)?)
    }

    /// `a - b` for operands whose scales may differ (products drift the
    /// scale by the ratio of prime to scale): the higher operand is brought
    /// to the other's level and scale by a constant product (one level of
    /// it); at equal levels both drop one.
    pub fn sub_aligned(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, NnError> {
        if (a.scale() / b.scale() - 1.0).abs() < 1e-9 {
            return self.sub(a, b);
        }
        let (a, b) = match a.level().cmp(&b.level()) {
            std::cmp::Ordering::Greater => (self.mul_const_to(a, 1.0, b.level(), b.scale())?, b.clone()),
            std::cmp::Ordering::Less => (a.clone(), self.mul_const_to(b, 1.0, a.level(), a.scale())?),
            std::cmp::Ordering::Equal => {
                let level = a.level().checked_sub(1).ok_or_else(|| {
                    crate::error::invalid("align", "operands at level 0 with different scales cannot be aligned")
                })?;
                (self.eval.drop_to_level(a, level)?, self.mul_const_to(b, 1.0, level, a.scale())?)
            }
        };
        self.sub(&a, &b)
    }

    /// `a + b` for operands whose scales may differ (see
    /// [`sub_aligned`](Self::sub_aligned)).
    pub fn add_aligned(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, NnError> {
        let negated = self.eval.neg(b);
        self.sub_aligned(a, &negated)
    }

    /// `poly(ct)` at scale `scale`.
    pub fn polynomial(&self, ct: &Ciphertext, poly: &Chebyshev, scale: f64) -> Result<Ciphertext, NnError> {
        Ok(PolynomialEvaluator::new(self.eval, self.rlk).evaluate(ct, poly, scale)?)
    }
}
