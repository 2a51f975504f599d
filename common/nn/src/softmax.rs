//! Softmax over the rows of an interleaved [`RowLayout`].
//!
//! Every input must lie in a declared interval `[lo, hi]`; the operator
//! subtracts the bound `hi` (softmax is shift-invariant), so `exp` is only
//! ever evaluated on `[lo - hi, 0]` and the row sum `s` is provably in
//! `[L e^(lo - hi), L]` (tighter if the caller also guarantees every row's
//! maximum is at least `min_row_max`). That interval is what the inverse is
//! fitted on, so no input in range can push it off its domain: this is the
//! "proven range bound" form of max subtraction, at a fraction of the depth
//! of an encrypted row maximum (log2 L comparisons).
//!
//! `exp(x - hi)` on `[lo, hi]` is one Chebyshev interpolant (degree 15 is
//! within 3e-9 on a width of 10), the row sums take log2 L rotations and no
//! levels, and `1/s` is an initial guess plus Newton steps.

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
    exp: Chebyshev,
    inverse: NewtonApprox,
}

impl Softmax {
    /// Inputs in `[lo, hi]`; `min_row_max` (at least `lo`) is a guaranteed
    /// lower bound on each row's maximum, which shortens the inverse.
    pub fn new(layout: RowLayout, lo: f64, hi: f64, min_row_max: f64, max_rel_error: f64) -> Result<Self, NnError> {
        if !(lo.is_finite() && hi.is_finite() && hi > lo && hi - lo <= 40.0) {
            return Err(invalid("softmax", format!("input interval [{lo}, {hi}] must be finite, non-empty, width <= 40")));
        }
        if !(lo..=hi).contains(&min_row_max) {
            return Err(invalid("softmax", format!("row maximum bound {min_row_max} outside [{lo}, {hi}]")));
        }
        let exp = fit_exp(lo, hi, max_rel_error)?;
        let len = layout.row_len() as f64;
        let s_lo = (len * (lo - hi).exp()).max((min_row_max - hi).exp()) * (1.0 - 1e-6);
        let inverse = NewtonApprox::new(NewtonTarget::Inverse, s_lo, len * (1.0 + 1e-6), max_rel_error)?;
        Ok(Self { layout, lo, hi, exp, inverse })
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
            let e: Vec<f64> = row.iter().map(|&x| self.exp.evaluate(x)).collect();
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
            levels: self.exp.depth() + mask + self.inverse.depth() + 1,
            rotations: sums.rotations,
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
        let mut e = engine.polynomial(x, &self.exp, x.scale())?;
        if self.layout.is_padded() {
            e = engine.mul_plain_to(&e, &self.layout.mask(), e.level() - 1, e.scale())?;
        }
        let sums = self.layout.row_sums(engine.eval, &e, engine.galois)?;
        let inv = self.inverse.apply(engine, &sums)?;
        engine.mul(&e, &inv)
    }
}

/// `exp(x - hi)` on `[lo, hi]`: the lowest degree whose relative error on a
/// dense grid is at most `max_rel_error`.
fn fit_exp(lo: f64, hi: f64, max_rel_error: f64) -> Result<Chebyshev, NnError> {
    for degree in 3..=63 {
        let poly = Chebyshev::interpolate(|x| (x - hi).exp(), lo, hi, degree);
        let err = (0..=4096)
            .map(|i| lo + (hi - lo) * i as f64 / 4096.0)
            .map(|x| ((poly.evaluate(x) - (x - hi).exp()) / (x - hi).exp()).abs())
            .fold(0.0, f64::max);
        if err <= max_rel_error {
            return Ok(poly);
        }
    }
    Err(invalid("softmax", format!("no exp interpolant of degree <= 63 reaches {max_rel_error} on [{lo}, {hi}]")))
}
