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
//!
//! Only the last normalisation has to be accurate: every earlier one
//! multiplies a whole row by one factor, and any positive factor per row
//! cancels in the last (`z^2 / sum(z^2)` is the same for `z` and `c z`).
//! The earlier ones only keep each row's sum near 1, within a relative
//! `delta`, so their inverses are *rough*: a shallow guess with few or no
//! Newton steps. The sums of squares then lie in
//! `[(1 - delta)^2 / L, (1 + delta)^2]`, and `delta` is chosen for the
//! fewest levels over the whole operator.

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
    /// `1/s` for the squarings' sums of squares: rough for all but the
    /// last, which is accurate.
    unit_inverses: Normalisers,
}

/// The inverses of the squarings (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
struct Normalisers {
    /// Every squaring but the last: relative error `delta`.
    rough: NewtonApprox,
    /// The last squaring.
    last: NewtonApprox,
}

/// Widest interval the exponential is fitted on before sharpening.
const MAX_DIRECT_WIDTH: f64 = 12.0;

/// Relative errors tried for the rough normalisations.
const ROUGH_ERRORS: [f64; 6] = [0.5, 0.35, 0.25, 0.15, 0.08, 0.03];

/// The inverses of one Softmax: of the exponentials' row sums (accurate
/// without sharpening, rough with it) and of the squarings' sums.
fn fit_inverses(
    counts: (usize, usize),
    width: f64,
    shift: f64,
    sharpen: u32,
    max_rel_error: f64,
) -> Result<(NewtonApprox, Normalisers), NnError> {
    // Half the error budget goes to the exponential (doubled by every
    // squaring), half to the one accurate normalisation.
    let accurate = max_rel_error / 2.0;
    let most = counts.1;
    if sharpen == 0 {
        let inverse = fit_inverse(counts, width, shift, accurate)?;
        let unit = fit_unit_inverse(most, 0.0, accurate)?;
        return Ok((inverse, Normalisers { rough: unit.clone(), last: unit }));
    }
    let mut best: Option<(usize, usize, NewtonApprox, Normalisers)> = None;
    for delta in ROUGH_ERRORS {
        let inverse = fit_inverse(counts, width, shift, delta)?;
        let rough = fit_unit_inverse(most, delta, delta)?;
        let last = fit_unit_inverse(most, delta, accurate)?;
        let steps = sharpen as usize - 1;
        let levels = inverse.depth() + steps * rough.depth() + last.depth();
        let products = inverse.products() + steps * rough.products() + last.products();
        if best.as_ref().is_none_or(|(l, p, _, _)| (levels, products) < (*l, *p)) {
            best = Some((levels, products, inverse, Normalisers { rough, last }));
        }
    }
    best.map(|(_, _, inverse, unit)| (inverse, unit)).ok_or_else(|| invalid("softmax", "no rough normalisation fits"))
}

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
        let width = width / f64::from(1u32 << sharpen);
        let shift = width / 2.0;
        // The exponential's relative errors double with every squaring and
        // get half the budget.
        let exp = fit_exp(-width - shift, width - shift, max_rel_error / f64::from(2u32 << sharpen))?;
        let count = layout.row_len();
        let (inverse, unit_inverses) = fit_inverses((count, count), width, shift, sharpen, max_rel_error)?;
        Ok(Self {
            layout,
            lo,
            hi,
            shift,
            exp,
            inverse,
            max_rel_error,
            valid: None,
            counts: (count, count),
            mean_mask: None,
            sharpen,
            unit_inverses,
        })
    }

    /// The squarings' normalisers in order (rough ones, then the accurate
    /// last one).
    fn squaring_inverses(&self) -> impl Iterator<Item = &NewtonApprox> {
        (1..=self.sharpen).map(|k| if k == self.sharpen { &self.unit_inverses.last } else { &self.unit_inverses.rough })
    }

    /// Bound on the rows' sums between normalisations: 1 when every
    /// normalisation is accurate, `1 + delta` after a rough one.
    fn row_sum_bound(&self) -> f64 {
        if self.sharpen == 0 {
            1.0
        } else {
            1.0 + self.inverse.rel_error().max(self.unit_inverses.rough.rel_error())
        }
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
        (self.inverse, self.unit_inverses) =
            fit_inverses((fewest, most), self.width(), self.shift, self.sharpen, self.max_rel_error)?;
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
            for unit_inverse in self.squaring_inverses() {
                let squares: Vec<f64> = z.iter().map(|v| v * v).collect();
                let inv = unit_inverse.evaluate(squares.iter().sum());
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
                + self.squaring_inverses().map(|inv| 1 + inv.depth() + 1).sum::<usize>(),
            rotations: (2 + self.sharpen as usize) * sums.rotations,
            products: polynomial_products(self.exp.degree())
                + self.inverse.products()
                + 1
                + self.squaring_inverses().map(|inv| 2 + inv.products()).sum::<usize>(),
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
        // The squarings' inverses are prescaled: each product before a
        // squaring also multiplies by the square root of the next inverse's
        // input factor `k`, so the squares' sums arrive as `k` times
        // theirs, and lands on the default scale (the guess runs at its
        // input's scale); each product after an inverse takes its `k` back.
        let scale = engine.params().default_scale();
        let factors: Vec<f64> = self.squaring_inverses().map(NewtonApprox::input_factor).collect();
        let carry = |i: usize| factors.get(i).map_or(1.0, |k| k.sqrt());
        let mut z = engine.mul_landing(&e, &inv, carry(0), scale)?;
        // Every element is at most its row's sum.
        let z_bound = 1.1 * self.row_sum_bound();
        for (i, unit_inverse) in self.squaring_inverses().enumerate() {
            let carried = carry(i);
            z = refresh.refresh(z, 2, z_bound * carried)?;
            let squares = engine.mul(&z, &z)?;
            let sums = self.layout.row_sums(engine.eval, &squares, engine.galois)?;
            let inv = unit_inverse.apply_refreshing(engine, sums, refresh)?;
            let inv_bound = unit_inverse.evaluate(unit_inverse.lo()) * 1.5;
            let squares_bound = (z_bound * carried).powi(2);
            let (squares, inv) = refresh.refresh_pair((squares, 1, squares_bound), (inv, 1, inv_bound))?;
            // The squares hold k z^2.
            z = engine.mul_landing(&squares, &inv, carry(i + 1) / factors[i], scale)?;
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

/// `1/s` for the sums of squares of a vector over `len` elements whose sum
/// is within a relative `delta` of 1: `[(1 - delta)^2 / len, (1 +
/// delta)^2]`, with a margin for the approximation errors.
/// Prescaled: the values squared before it carry the square root of its
/// input factor, which the product before them takes on at no level.
fn fit_unit_inverse(len: usize, delta: f64, max_rel_error: f64) -> Result<NewtonApprox, NnError> {
    let (low, high) = ((1.0 - delta).powi(2), (1.0 + delta).powi(2));
    NewtonApprox::prescaled(NewtonTarget::Inverse, 0.9 * low / len as f64, 1.1 * high, max_rel_error)
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

    /// Rough normalisations before the last one cost fewer levels than
    /// accurate ones and give the same Softmax: a factor per row cancels.
    #[test]
    fn rough_normalisations_cancel_and_save_levels() {
        let (lo, hi, max_rel_error) = (-45.0, 45.0, 1e-4);
        let layout = RowLayout::new(4, 16, 64).unwrap();
        let sm = Softmax::new(layout.clone(), lo, hi, max_rel_error).unwrap();
        let delta = sm.row_sum_bound() - 1.0;
        assert!(delta > max_rel_error, "the earlier normalisations are rough: {delta}");
        // The same operator with every normalisation accurate.
        let (width, r) = (sm.width(), sm.sharpen_steps());
        let accurate = max_rel_error / f64::from(1u32 << r);
        let accurate_inverse = fit_inverse((16, 16), width, sm.shift, accurate).unwrap();
        let accurate_unit = fit_unit_inverse(16, 0.0, accurate).unwrap();
        let all_accurate = accurate_inverse.depth() + r as usize * accurate_unit.depth();
        let rough = sm.inverse.depth() + sm.squaring_inverses().map(NewtonApprox::depth).sum::<usize>();
        assert!(rough < all_accurate, "rough {rough} levels vs accurate {all_accurate}");
        let params = Parameters::preset("INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST").unwrap();
        println!("inverse levels: {rough} rough vs {all_accurate} accurate; cost {:?}", sm.cost(&params));
        // The rows' sums after a rough normalisation are off 1 by up to
        // delta, yet the output rows sum to 1 and match the exact Softmax.
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| (0..16).map(|j| ((r * 16 + j) as f64 * 1.31).cos() * (45.0 - 10.0 * r as f64)).collect())
            .collect();
        let accurate_sm = Softmax {
            inverse: accurate_inverse,
            unit_inverses: Normalisers { rough: accurate_unit.clone(), last: accurate_unit },
            ..sm.clone()
        };
        let relative = |got: &[f64], want: &[f64]| {
            got.iter().zip(want).map(|(a, b)| ((a - b) / b.max(1e-3)).abs()).fold(0.0, f64::max)
        };
        for ((row, got), all) in rows.iter().zip(sm.plain(&rows).unwrap()).zip(accurate_sm.plain(&rows).unwrap()) {
            let want = exact(row);
            println!("relative error {:.2e} (all accurate: {:.2e})", relative(&got, &want), relative(&all, &want));
            // As close to the exact Softmax as the all-accurate operator
            // (small entries carry the exponential's absolute error).
            assert!(relative(&got, &want) < relative(&all, &want) + max_rel_error);
            assert!(relative(&got, &all) < max_rel_error);
            assert!((got.iter().sum::<f64>() - 1.0).abs() < max_rel_error);
        }
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
