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
//!
//! Wide intervals (real attention scores span 90 and more) are *sharpened*:
//! the Softmax runs on `x / 2^r` (a free change of the scale label), which
//! keeps `W / 2^r <= 12`, and then `r` normalised squarings
//! `z <- z^2 / sum(z^2)` give `softmax(x)` exactly, since
//! `softmax(x / 2^r)^(2^r)` is proportional to `softmax(x)`. Each row of
//! `z` sums to 1, so every `sum(z^2)` lies in `[1/L, 1]`: a narrow interval
//! whose inverse is shallow, whatever `W` was.

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{check_range, invalid, NnError};
use crate::layout::RowLayout;
use crate::newton::{no_refresh, polynomial_products, NewtonApprox, NewtonTarget, RefreshFn};
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
    max_rel_error: f64,
    /// Slots that take part (attention-masked keys do not); `None`: the
    /// layout's elements.
    valid: Option<Vec<f64>>,
    /// Fewest and most elements per row that take part.
    counts: (usize, usize),
    /// `valid / count of the slot's row` (the row means).
    mean_mask: Option<Vec<f64>>,
    /// Normalised squarings after the Softmax of `x / 2^sharpen`.
    sharpen: u32,
    /// `1/s` on `[1/count, 1]` (with a margin) for the squarings.
    unit_inverse: NewtonApprox,
}

/// Widest interval the exponential is fitted on before sharpening.
const MAX_DIRECT_WIDTH: f64 = 12.0;

impl Softmax {
    /// Inputs in `[lo, hi]` (width at most 30, so that `e^(W/2)` stays
    /// well inside the modulus).
    pub fn new(layout: RowLayout, lo: f64, hi: f64, max_rel_error: f64) -> Result<Self, NnError> {
        let width = hi - lo;
        if !(lo.is_finite() && hi.is_finite() && width > 0.0 && width <= 4096.0) {
            return Err(invalid(
                "softmax",
                format!("input interval [{lo}, {hi}] must be finite, non-empty, width <= 4096"),
            ));
        }
        let sharpen = if width <= MAX_DIRECT_WIDTH { 0 } else { (width / MAX_DIRECT_WIDTH).log2().ceil() as u32 };
        // Relative errors double with every squaring.
        let base_error = max_rel_error / f64::from(1u32 << sharpen);
        let width = width / f64::from(1u32 << sharpen);
        let shift = width / 2.0;
        let exp = fit_exp(-width - shift, width - shift, base_error)?;
        let count = layout.row_len();
        let inverse = fit_inverse((count, count), width, shift, base_error)?;
        let unit_inverse = fit_unit_inverse(count, base_error)?;
        Ok(Self {
            layout,
            lo,
            hi,
            shift,
            exp,
            inverse,
            max_rel_error: base_error,
            valid: None,
            counts: (count, count),
            mean_mask: None,
            sharpen,
            unit_inverse,
        })
    }

    /// Normalised squarings after the base Softmax (0 for narrow inputs).
    pub fn sharpen_steps(&self) -> u32 {
        self.sharpen
    }

    fn width(&self) -> f64 {
        (self.hi - self.lo) / f64::from(1u32 << self.sharpen)
    }

    /// Only the slots where `mask` is 1 take part (an attention mask over
    /// padding keys; rows may differ in how many, as sentences of a batch
    /// do, but every row needs one). The other slots must hold values in
    /// range too; they come out as zero.
    pub fn with_valid(mut self, mask: Vec<f64>) -> Result<Self, NnError> {
        let (rows, slots) = (self.layout.rows(), self.layout.slots());
        if mask.len() != slots {
            return Err(invalid("softmax", format!("mask of {} slots for {slots}", mask.len())));
        }
        let valid: Vec<f64> = mask.iter().zip(self.layout.mask()).map(|(a, b)| a * b).collect();
        // One block of the layout: the pattern repeats after it.
        let block = (rows * self.layout.row_len().next_power_of_two()).min(slots);
        let mut per_row = vec![0usize; rows];
        for (s, v) in valid[..block].iter().enumerate() {
            per_row[s % rows] += usize::from(*v != 0.0);
        }
        let (fewest, most) = (per_row.iter().copied().min().unwrap_or(0), per_row.iter().copied().max().unwrap_or(0));
        if fewest == 0 {
            return Err(invalid("softmax", "the mask leaves a row with no valid element"));
        }
        self.mean_mask = Some(valid.iter().enumerate().map(|(s, v)| v / per_row[s % rows] as f64).collect());
        self.valid = Some(valid);
        self.inverse = fit_inverse((fewest, most), self.width(), self.shift, self.max_rel_error)?;
        self.unit_inverse = fit_unit_inverse(most, self.max_rel_error)?;
        self.counts = (fewest, most);
        Ok(self)
    }

    fn mask(&self) -> Vec<f64> {
        self.valid.clone().unwrap_or_else(|| self.layout.mask())
    }

    fn is_masked(&self) -> bool {
        self.valid.is_some() || self.layout.is_padded()
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

    /// The f64 twin (same approximations, the key mask included: masked
    /// elements must be zero, as for the encrypted operator, and come out
    /// zero); refuses out-of-range inputs.
    pub fn plain(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        let mut out = Vec::with_capacity(rows.len());
        let factor = f64::from(1u32 << self.sharpen);
        let valid = self.valid.as_ref().map(|v| self.layout.unpack(v)).transpose()?;
        if let Some(v) = &valid {
            if rows.len() > v.len() {
                return Err(invalid("softmax", format!("{} rows for a mask of {}", rows.len(), v.len())));
            }
        }
        for (r, row) in rows.iter().enumerate() {
            let ones;
            let valid: &[f64] = match &valid {
                Some(v) => &v[r],
                None => {
                    ones = vec![1.0; row.len()];
                    &ones
                }
            };
            check_range("softmax", row, self.lo, self.hi)?;
            let count = valid.iter().sum::<f64>().max(1.0);
            let mean = row.iter().sum::<f64>() / count / factor;
            let e: Vec<f64> =
                row.iter().zip(valid).map(|(&x, &v)| v * self.exp.evaluate(x / factor - mean - self.shift)).collect();
            let inv = self.inverse.evaluate(e.iter().sum());
            let mut z: Vec<f64> = e.iter().map(|v| v * inv).collect();
            for _ in 0..self.sharpen {
                let squares: Vec<f64> = z.iter().map(|v| v * v).collect();
                let inv = self.unit_inverse.evaluate(squares.iter().sum());
                z = squares.iter().map(|v| v * inv).collect();
            }
            out.push(z);
        }
        Ok(out)
    }

    /// Levels, rotations, products, Galois elements.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let sums = self.layout.sum_cost(params);
        OpCost {
            levels: 1
                + self.exp.depth()
                + usize::from(self.is_masked())
                + self.inverse.depth()
                + 1
                + self.sharpen as usize * (1 + self.unit_inverse.depth() + 1),
            rotations: (2 + self.sharpen as usize) * sums.rotations,
            products: polynomial_products(self.exp.degree())
                + self.inverse.products()
                + 1
                + self.sharpen as usize * (2 + self.unit_inverse.products()),
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
        self.apply_refreshing(engine, x.clone(), &mut no_refresh)
    }

    /// [`apply`](Self::apply) with `refresh` called before each stage
    /// (centring, exponential, inverse and its Newton steps, final product)
    /// so that bootstraps can go in between when the whole operator is
    /// deeper than the levels a bootstrap leaves.
    pub fn apply_refreshing(
        &self,
        engine: &Engine<'_>,
        x: Ciphertext,
        refresh: &mut RefreshFn<'_>,
    ) -> Result<Ciphertext, NnError> {
        let len = self.counts.1 as f64;
        let mask = self.mask();
        let width = self.width();
        let mut x = refresh.refresh(x, 1, self.lo.abs().max(self.hi.abs()))?;
        // x / 2^r through the scale label: exact and free.
        x.set_scale(x.scale() * f64::from(1u32 << self.sharpen))?;
        // Masked-out slots count in the first row sum unless zero; callers
        // guarantee zeros there (scores of padding keys are exactly 0).
        let sums = self.layout.row_sums(engine.eval, &x, engine.galois)?;
        let mean_mask = self.mean_mask.clone().unwrap_or_else(|| mask.iter().map(|m| m / len).collect());
        let mean = engine.mul_plain_to(&sums, &mean_mask, x.level().saturating_sub(1), x.scale())?;
        let centred = engine.eval.add_const(&engine.sub(&x, &mean)?, -self.shift)?;
        // One level more than the exponential needs: the final product then
        // finds `e` with a level left, without a bootstrap of its own.
        let centred = refresh.refresh(centred, self.exp.depth() + usize::from(self.is_masked()) + 1, 1.5 * width)?;
        let mut e = engine.polynomial(&centred, &self.exp, centred.scale())?;
        if self.is_masked() {
            e = engine.mul_plain_to(&e, &mask, e.level().saturating_sub(1), e.scale())?;
        }
        let sums = self.layout.row_sums(engine.eval, &e, engine.galois)?;
        let inv = self.inverse.apply_refreshing(engine, sums, refresh)?;
        let e_bound = (width / 2.0).exp() * 1.1;
        let inv_bound = self.inverse.evaluate(self.inverse.lo()) * 1.5;
        let (e, inv) = refresh.refresh_pair((e, 1, e_bound), (inv, 1, inv_bound))?;
        let mut z = engine.mul(&e, &inv)?;
        for _ in 0..self.sharpen {
            z = refresh.refresh(z, 2, 1.1)?;
            let squares = engine.mul(&z, &z)?;
            let sums = self.layout.row_sums(engine.eval, &squares, engine.galois)?;
            let inv = self.unit_inverse.apply_refreshing(engine, sums, refresh)?;
            let (squares, inv) = refresh.refresh_pair((squares, 1, 1.1), (inv, 1, 1.1 * len))?;
            z = engine.mul(&squares, &inv)?;
        }
        Ok(z)
    }
}

/// The inverse on the interval every row's sum of exponentials provably
/// lies in (see the module documentation), for rows of `counts.0` to
/// `counts.1` elements.
fn fit_inverse(counts: (usize, usize), width: f64, shift: f64, max_rel_error: f64) -> Result<NewtonApprox, NnError> {
    let (fewest, most) = (counts.0 as f64, counts.1 as f64);
    let s_lo = fewest * (-shift).exp() * (1.0 - 1e-6);
    let s_hi = ((width * (1.0 - 1.0 / most)).exp() + most - 1.0) * (-shift).exp() * (1.0 + 1e-6);
    NewtonApprox::new(NewtonTarget::Inverse, s_lo, s_hi, max_rel_error)
}

/// `1/s` for the sums of squares of a probability vector over `len`
/// elements: `[1/len, 1]`, with a margin for the approximation errors.
fn fit_unit_inverse(len: usize, max_rel_error: f64) -> Result<NewtonApprox, NnError> {
    NewtonApprox::new(NewtonTarget::Inverse, 0.9 / len as f64, 1.1, max_rel_error)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(row: &[f64]) -> Vec<f64> {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn wide_inputs_are_sharpened_and_stay_accurate() {
        let layout = RowLayout::new(4, 16, 64).unwrap();
        let sm = Softmax::new(layout, -45.0, 45.0, 1e-4).unwrap();
        assert_eq!(sm.sharpen_steps(), 3);
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| (0..16).map(|j| ((r * 16 + j) as f64 * 0.77).sin() * 45.0 * (1.0 - 0.2 * r as f64)).collect())
            .collect();
        let got = sm.plain(&rows).unwrap();
        for (row, g) in rows.iter().zip(&got) {
            let want = exact(row);
            let err = g.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-3, "max error {err}");
        }
        let narrow = Softmax::new(RowLayout::new(4, 16, 64).unwrap(), -10.0, 0.0, 1e-4).unwrap();
        assert_eq!(narrow.sharpen_steps(), 0);
    }

    #[test]
    fn the_twin_honours_the_key_mask() {
        // Row r has r + 2 valid keys (the first ones); masked keys hold 0.
        let layout = RowLayout::new(4, 8, 64).unwrap();
        let valid_rows: Vec<Vec<f64>> =
            (0..4).map(|r| (0..8).map(|j| f64::from(u8::from(j < r + 2))).collect()).collect();
        let mask = layout.pack(&valid_rows).unwrap();
        let sm = Softmax::new(layout, -6.0, 6.0, 1e-6).unwrap().with_valid(mask).unwrap();
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| (0..8).map(|j| if j < r + 2 { ((r * 8 + j) as f64 * 0.77).sin() * 5.0 } else { 0.0 }).collect())
            .collect();
        let got = sm.plain(&rows).unwrap();
        for (r, (row, out)) in rows.iter().zip(&got).enumerate() {
            let sum: f64 = row[..r + 2].iter().map(|x| x.exp()).sum();
            for (j, (&x, &y)) in row.iter().zip(out).enumerate() {
                let want = if j < r + 2 { x.exp() / sum } else { 0.0 };
                assert!((y - want).abs() < 1e-4, "row {r} element {j}: {y} vs {want}");
            }
        }
        let no_valid = RowLayout::new(4, 8, 64).unwrap();
        let empty = vec![0.0; 64];
        assert!(Softmax::new(no_valid, -1.0, 1.0, 1e-4).unwrap().with_valid(empty).is_err());
    }
}
