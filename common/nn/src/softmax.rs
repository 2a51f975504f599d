//! Softmax over the rows of an interleaved [`RowLayout`].
//!
//! Every input must lie in a declared interval `[lo, hi]` of width `W`.
//! Softmax is shift-invariant; the operator subtracts the row mean `mu`
//! (one row sum, one level) plus `W/2`, instead of an encrypted row maximum
//! (log2 L comparisons, each deeper than the whole operator). By Jensen's
//! inequality `sum_j e^(x_j - mu) >= L`, and `x_j - mu <= W (1 - 1/L)`, so
//! the row sum `s` provably lies in
//! `[L e^(-W/2), (e^(W (1 - 1/L)) + L - 1) e^(-W/2)]`: a ratio of about
//! `e^W / L` (173 for W = 10, L = 128) where subtracting the bound `hi`
//! would leave `e^W` (22026), which costs three more Newton steps. That
//! interval is what the inverse is fitted on, so no input in range can push
//! it off its domain ("proven range bound" max subtraction), and every
//! exponential stays below `e^(W/2)`.
//!
//! `exp` on `[-3W/2, W/2]` is one Chebyshev interpolant, the row sums take
//! log2 L rotations and no levels, and `1/s` is an initial guess plus Newton
//! steps.

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{check_range, invalid, NnError};
use crate::layout::RowLayout;
use crate::newton::{polynomial_products, NewtonApprox, NewtonTarget};
use nexus_ckks::circuits::Chebyshev;
use nexus_ckks::{Ciphertext, Parameters};

/// A Softmax for one layout and input interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    layout: RowLayout,
    lo: f64,
    hi: f64,
    shift: f64,
    exp: Chebyshev,
    inverse: NewtonApprox,
}

impl Softmax {
    /// Inputs in `[lo, hi]` (width at most 30, so that `e^(W/2)` stays
    /// well inside the modulus).
    pub fn new(layout: RowLayout, lo: f64, hi: f64, max_rel_error: f64) -> Result<Self, NnError> {
        let width = hi - lo;
        if !(lo.is_finite() && hi.is_finite() && width > 0.0 && width <= 30.0) {
            return Err(invalid(
                "softmax",
                format!("input interval [{lo}, {hi}] must be finite, non-empty, width <= 30"),
            ));
        }
        let shift = width / 2.0;
        let exp = fit_exp(-width - shift, width - shift, max_rel_error)?;
        let len = layout.row_len() as f64;
        let s_lo = len * (-shift).exp() * (1.0 - 1e-6);
        let s_hi = ((width * (1.0 - 1.0 / len)).exp() + len - 1.0) * (-shift).exp() * (1.0 + 1e-6);
        let inverse = NewtonApprox::new(NewtonTarget::Inverse, s_lo, s_hi, max_rel_error)?;
        Ok(Self { layout, lo, hi, shift, exp, inverse })
    }

    /// The layout the operator reads and writes.
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    /// The inverse in use.
    pub fn inverse(&self) -> &NewtonApprox {
        &self.inverse
    }

    /// Degree of the exponential's interpolant.
    pub fn exp_degree(&self) -> usize {
        self.exp.degree()
    }

    /// The f64 twin (same approximations); refuses out-of-range inputs.
    pub fn plain(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            check_range("softmax", row, self.lo, self.hi)?;
            let mean = row.iter().sum::<f64>() / row.len() as f64;
            let e: Vec<f64> = row.iter().map(|&x| self.exp.evaluate(x - mean - self.shift)).collect();
            let inv = self.inverse.evaluate(e.iter().sum());
            out.push(e.iter().map(|v| v * inv).collect());
        }
        Ok(out)
    }

    /// Levels, rotations, products, Galois elements.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let sums = self.layout.sum_cost(params);
        let mask = usize::from(self.layout.is_padded());
        OpCost {
            levels: 1 + self.exp.depth() + mask + self.inverse.depth() + 1,
            rotations: 2 * sums.rotations,
            products: polynomial_products(self.exp.degree()) + self.inverse.products() + 1,
            bootstraps: 0,
            galois_elements: sums.galois_elements,
        }
    }

    /// Encrypted Softmax on a ciphertext in the layout.
    pub fn apply(&self, engine: &Engine<'_>, x: &Ciphertext) -> Result<Ciphertext, NnError> {
        let needed = self.cost(engine.params()).levels;
        if x.level() < needed {
            return Err(invalid("softmax", format!("input at level {}, needs {needed}", x.level())));
        }
        let len = self.layout.row_len() as f64;
        let sums = self.layout.row_sums(engine.eval, x, engine.galois)?;
        let mean_mask: Vec<f64> = self.layout.mask().iter().map(|m| m / len).collect();
        let mean = engine.mul_plain_to(&sums, &mean_mask, x.level().saturating_sub(1), x.scale())?;
        let centred = engine.eval.add_const(&engine.sub(x, &mean)?, -self.shift)?;
        let mut e = engine.polynomial(&centred, &self.exp, x.scale())?;
        if self.layout.is_padded() {
            e = engine.mul_plain_to(&e, &self.layout.mask(), e.level().saturating_sub(1), e.scale())?;
        }
        let sums = self.layout.row_sums(engine.eval, &e, engine.galois)?;
        let inv = self.inverse.apply(engine, &sums)?;
        engine.mul(&e, &inv)
    }
}

/// `exp` on `[lo, hi]`: the lowest degree whose error relative to
/// `max(e^x, e^0)` on a dense grid is at most `max_rel_error` (values far
/// below the row's typical `e^0` matter only absolutely).
fn fit_exp(lo: f64, hi: f64, max_rel_error: f64) -> Result<Chebyshev, NnError> {
    for degree in 3..=63 {
        let poly = Chebyshev::interpolate(f64::exp, lo, hi, degree);
        let err = (0..=4096)
            .map(|i| lo + (hi - lo) * i as f64 / 4096.0)
            .map(|x| ((poly.evaluate(x) - x.exp()) / x.exp().max(1.0)).abs())
            .fold(0.0, f64::max);
        if err <= max_rel_error {
            return Ok(poly);
        }
    }
    Err(invalid("softmax", format!("no exp interpolant of degree <= 63 reaches {max_rel_error} on [{lo}, {hi}]")))
}
