//! GELU on `[-range, range]` as one Chebyshev polynomial.
//!
//! `x Phi(x)` is entire, so its Chebyshev interpolant converges
//! geometrically: on [-8, 8] degree 31 is within 1e-4 and degree 47 within
//! 2e-8 of it. One polynomial of depth 6 therefore replaces the reference's
//! two sign evaluations and piecewise pieces (depth about 20) at a small
//! fraction of the error. Outside the range the polynomial diverges, so the
//! range is part of the operator's contract: the plaintext twin refuses
//! inputs outside it and the model planner must guarantee it.
//!
//! A *prescaled* GELU takes `x / range` instead of `x`: its polynomial
//! lives on [-1, 1] and needs no change of variable, one level less for the
//! same error. The division is free where a linear layer feeds GELU (it
//! goes into the weights), which is how the encoder's feed-forward block
//! uses it.

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{check_range, invalid, NnError};
use crate::functions::gelu;
use crate::newton::polynomial_products;
use nexus_ckks::circuits::Chebyshev;
use nexus_ckks::Ciphertext;

/// A fitted GELU.
#[derive(Clone, Debug, PartialEq)]
pub struct Gelu {
    poly: Chebyshev,
    range: f64,
    max_error: f64,
    /// What the encrypted input is, times `x`: 1, or `1 / range` when
    /// prescaled.
    input_factor: f64,
}

impl Gelu {
    /// The lowest-degree interpolant on `[-range, range]` whose error
    /// (measured on a dense grid) is at most `max_error`.
    pub fn new(range: f64, max_error: f64) -> Result<Self, NnError> {
        Self::fit(range, max_error, false)
    }

    /// As [`new`](Self::new), prescaled: the encrypted input is
    /// `x / range` (see the module docs).
    pub fn prescaled(range: f64, max_error: f64) -> Result<Self, NnError> {
        Self::fit(range, max_error, true)
    }

    fn fit(range: f64, max_error: f64, prescaled: bool) -> Result<Self, NnError> {
        if !(range.is_finite() && range > 0.0 && range <= 64.0) {
            return Err(invalid("gelu", format!("range {range} must be in (0, 64]")));
        }
        if !(max_error > 0.0 && max_error.is_finite()) {
            return Err(invalid("gelu", format!("error bound {max_error} must be positive")));
        }
        let input_factor = if prescaled { 1.0 / range } else { 1.0 };
        for degree in (7..=255).step_by(4) {
            let poly = if prescaled {
                Chebyshev::interpolate(|t| gelu(t * range), -1.0, 1.0, degree)
            } else {
                Chebyshev::interpolate(gelu, -range, range, degree)
            };
            let err = (0..=8192)
                .map(|i| -range + 2.0 * range * i as f64 / 8192.0)
                .map(|x| (poly.evaluate(x * input_factor) - gelu(x)).abs())
                .fold(0.0, f64::max);
            if err <= max_error {
                return Ok(Self { poly, range, max_error: err, input_factor });
            }
        }
        Err(invalid("gelu", format!("no degree <= 255 reaches error {max_error} on [-{range}, {range}]")))
    }

    /// The most accurate interpolant on `[-range, range]` (error at most
    /// 1e-4, relaxed step by step to at most 1e-2) whose depth fits
    /// `max_depth` levels.
    pub fn within_depth(range: f64, max_depth: usize) -> Result<Self, NnError> {
        Self::within(range, max_depth, 1e-2, false)
    }

    /// The most accurate prescaled interpolant (error at most 1e-4, relaxed
    /// step by step to at most `worst_error`) whose depth fits `max_depth`
    /// levels.
    pub fn prescaled_within(range: f64, max_depth: usize, worst_error: f64) -> Result<Self, NnError> {
        Self::within(range, max_depth, worst_error, true)
    }

    fn within(range: f64, max_depth: usize, worst_error: f64, prescaled: bool) -> Result<Self, NnError> {
        for error in [1e-4, 3e-4, 1e-3, 3e-3, 1e-2].into_iter().filter(|&e| e <= worst_error) {
            let g = Self::fit(range, error, prescaled)?;
            if g.cost().levels <= max_depth {
                return Ok(g);
            }
        }
        Err(invalid(
            "gelu",
            format!("no interpolant on [-{range}, {range}] within {worst_error:e} fits {max_depth} levels"),
        ))
    }

    /// The default of the model: valid on [-8, 8] within 1e-4.
    pub fn bert_default() -> Result<Self, NnError> {
        Self::new(8.0, 1e-4)
    }

    /// Inputs must lie in `[-range, range]`.
    pub fn range(&self) -> f64 {
        self.range
    }

    /// What the encrypted input must be times `x`: 1, or `1 / range` for
    /// a prescaled GELU.
    pub fn input_factor(&self) -> f64 {
        self.input_factor
    }

    /// Approximation error bound on the range (f64).
    pub fn max_error(&self) -> f64 {
        self.max_error
    }

    /// Polynomial degree.
    pub fn degree(&self) -> usize {
        self.poly.degree()
    }

    /// The f64 twin; refuses inputs outside the range.
    pub fn plain(&self, x: &[f64]) -> Result<Vec<f64>, NnError> {
        check_range("gelu", x, -self.range, self.range)?;
        Ok(x.iter().map(|&v| self.poly.evaluate(v * self.input_factor)).collect())
    }

    /// Levels, products; no rotations.
    pub fn cost(&self) -> OpCost {
        OpCost { levels: self.poly.depth(), products: polynomial_products(self.degree()), ..OpCost::default() }
    }

    /// Encrypted GELU, slot-wise, of a ciphertext holding `x` times
    /// [`input_factor`](Self::input_factor); the scale is kept.
    pub fn apply(&self, engine: &Engine<'_>, ct: &Ciphertext) -> Result<Ciphertext, NnError> {
        engine.polynomial(ct, &self.poly, ct.scale())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gelu_is_degree_31_and_within_bound() {
        let g = Gelu::bert_default().unwrap();
        assert!(g.degree() <= 35, "degree {}", g.degree());
        assert!(g.max_error() <= 1e-4);
        assert_eq!(g.cost().levels, 5 + 1); // degree <= 31 on a non-unit interval
        assert!(g.plain(&[8.5]).is_err());
        let y = g.plain(&[-8.0, -1.0, 0.0, 2.0, 8.0]).unwrap();
        for (x, y) in [-8.0, -1.0, 0.0, 2.0, 8.0].iter().zip(y) {
            assert!((y - gelu(*x)).abs() <= 1e-4);
        }
    }

    #[test]
    fn prescaled_gelu_saves_the_change_of_variable_at_the_same_error() {
        // MiniLM's widest calibrated GELU range (25 times the margin 1.5).
        let range = 37.5;
        let raw = Gelu::within_depth(range, 8).unwrap();
        let scaled = Gelu::prescaled_within(range, 7, 1e-3).unwrap();
        assert_eq!(raw.degree(), scaled.degree());
        assert_eq!(raw.cost().levels, scaled.cost().levels + 1);
        // Without prescaling, 7 levels reach no better than 1e-2.
        assert!(Gelu::within_depth(range, 7).is_err());
        assert!(scaled.max_error() <= 1e-3, "error {}", scaled.max_error());
        assert_eq!(scaled.input_factor(), 1.0 / range);
        let xs = [-37.5, -3.0, -0.5, 0.0, 1.0, 20.0, 37.5];
        for (x, y) in xs.iter().zip(scaled.plain(&xs).unwrap()) {
            assert!((y - gelu(*x)).abs() <= scaled.max_error() * 1.01, "gelu({x}) = {y}");
        }
        assert!(scaled.plain(&[37.6]).is_err());
        assert!(Gelu::prescaled_within(range, 5, 1e-3).unwrap_err().to_string().contains("fits 5 levels"));
    }
}
