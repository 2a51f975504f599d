//! Multi-head attention on the hidden layout, every head at once.
//!
//! Diagonal method: for each shift `k < B` (the block of tokens one
//! sentence takes: all `T` in latency mode), the keys rotated along the
//! token axis within each block, `K_k[t] = K[b(t) + (t + k) mod B]` with
//! `b(t)` the block's first token (two rotations and two masks,
//! hoisted over all `k`), times the queries, summed over the head's columns
//! (`log2 d_h'` rotations by multiples of `R`), gives the `k`-th diagonal
//! of every head's score matrix, `S'[(h, t)][k] = S_h[t][(t + k) mod T]`,
//! on every column; masking the columns `= k (mod T)` assembles the
//! diagonals into an interleaved `R x B` [`RowLayout`] whose rows are
//! permutations of the score rows: exactly what a row-wise Softmax needs.
//! The weighted sum walks the same diagonals back: the `k`-th column of the
//! probabilities, spread over all columns (`log2 B` rotations), times the
//! values rotated by `k`, summed over `k` before one relinearisation, lands
//! in the hidden layout.
//!
//! Scores of padding keys are exact zeros (padding rows of `K` are), and
//! the Softmax masks them out of the sums, so no attention mask has to be
//! encrypted. Blocks are independent: sentences of a batch never attend to
//! each other.

use super::packed::HiddenLayout;
use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::layout::RowLayout;
use crate::softmax::Softmax;
use nexus_ckks::{Ciphertext, Parameters};

/// Attention products and Softmax of one encoder layer.
#[derive(Clone, Debug)]
pub struct PackedAttention {
    layout: HiddenLayout,
    softmax: Softmax,
}

impl PackedAttention {
    /// Scores (already divided by `sqrt(d_h)`) in `[lo, hi]`, which must
    /// contain 0; `max_rel_error` for the Softmax's approximations.
    pub fn new(layout: HiddenLayout, lo: f64, hi: f64, max_rel_error: f64) -> Result<Self, NnError> {
        if !(lo <= 0.0 && hi >= 0.0) {
            return Err(invalid("attention", format!("score interval [{lo}, {hi}] must contain 0 (padding keys)")));
        }
        let (t, b, r) = (layout.tokens(), layout.block(), layout.rows());
        let rows = RowLayout::new(r, b, layout.slots())?;
        // Slot s holds query token s mod T against key b(t) + (t + k) mod B
        // for shift k = (s / R) mod B. Keys of a block no sentence uses
        // count as valid: they are zeros, like its queries.
        let valid: Vec<f64> = (0..layout.slots())
            .map(|s| {
                let query = s % t;
                let key = query - query % b + (query % b + (s / r) % b) % b;
                let unused = query / b >= layout.lengths().len();
                if unused || layout.is_real(key) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let softmax = Softmax::new(rows, lo, hi, max_rel_error)?.with_valid(valid)?;
        Ok(Self { layout, softmax })
    }

    /// The hidden layout.
    pub fn layout(&self) -> &HiddenLayout {
        &self.layout
    }

    /// The Softmax on the scores.
    pub fn softmax(&self) -> &Softmax {
        &self.softmax
    }

    fn mask(&self, f: impl Fn(usize) -> bool) -> Vec<f64> {
        (0..self.layout.slots()).map(|s| if f(s) { 1.0 } else { 0.0 }).collect()
    }

    /// Rotation steps of the token-axis rotations, the column sums and the
    /// spreading, and the Softmax's row sums.
    pub fn rotations(&self) -> Vec<i64> {
        let (b, r) = (self.layout.block() as i64, self.layout.rows() as i64);
        let mut steps: Vec<i64> = (1..b).collect();
        steps.push(-b);
        steps.extend((0..self.layout.head_dim_pow2().trailing_zeros()).map(|m| r << m));
        steps.extend((0..b.trailing_zeros()).map(|m| -(r << m)));
        steps.extend(self.softmax.layout().sum_rotations());
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// Levels, rotations and products of scores + Softmax + weighted sum.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let t = self.layout.block();
        let log_d = self.layout.head_dim_pow2().trailing_zeros() as usize;
        let log_t = t.trailing_zeros() as usize;
        let softmax = self.softmax.cost(params);
        OpCost {
            levels: 3 + softmax.levels + 2,
            rotations: 4 * (t - 1) + 2 + t * (log_d + log_t) + softmax.rotations,
            products: 2 * t + softmax.products,
            bootstraps: 0,
            galois_elements: self.rotations().iter().map(|&s| params.galois_element_for_rotation(s)).collect(),
        }
    }

    /// `x` rotated by `k` along the token axis within every block, for
    /// every `k < B` (one level).
    fn token_rotations(&self, engine: &Engine<'_>, x: &Ciphertext) -> Result<Vec<Ciphertext>, NnError> {
        let t = self.layout.block();
        let level = x.level().checked_sub(1).ok_or_else(|| invalid("attention", "operand at level 0"))?;
        // rot(x, k - B) = rot(rot(x, -B), k): B keys instead of 2B - 2.
        let steps: Vec<i64> = (1..t as i64).collect();
        let ahead = engine.eval.rotate_hoisted(x, &steps, engine.galois)?;
        let back = engine.eval.rotate(x, -(t as i64), engine.galois)?;
        let wrapped = engine.eval.rotate_hoisted(&back, &steps, engine.galois)?;
        let mut out = vec![engine.eval.drop_to_level(x, level)?];
        for k in 1..t {
            let low = self.mask(|s| s % t < t - k);
            let high = self.mask(|s| s % t >= t - k);
            let a = engine.mul_plain_to(&ahead[k - 1], &low, level, x.scale())?;
            let b = engine.mul_plain_to(&wrapped[k - 1], &high, level, x.scale())?;
            out.push(engine.eval.add(&a, &b)?);
        }
        Ok(out)
    }

    /// Scores of every head in the Softmax's layout (three levels). `q`
    /// already carries the `1/sqrt(d_h)`.
    pub fn scores(&self, engine: &Engine<'_>, q: &Ciphertext, k: &Ciphertext) -> Result<Ciphertext, NnError> {
        let (t, r) = (self.layout.block(), self.layout.rows());
        let keys = self.token_rotations(engine, k)?;
        let mut acc: Option<Ciphertext> = None;
        for (shift, key) in keys.iter().enumerate() {
            let mut prod = engine.mul(q, key)?;
            for m in 0..self.layout.head_dim_pow2().trailing_zeros() {
                let rot = engine.eval.rotate(&prod, (r << m) as i64, engine.galois)?;
                engine.eval.add_assign(&mut prod, &rot)?;
            }
            let column = self.mask(|s| (s / r) % t == shift);
            let diag = engine.mul_plain_to(&prod, &column, prod.level().saturating_sub(1), prod.scale())?;
            match acc.as_mut() {
                Some(a) => engine.eval.add_assign(a, &diag)?,
                None => acc = Some(diag),
            }
        }
        acc.ok_or_else(|| invalid("attention", "no tokens"))
    }

    /// Softmax of the scores.
    pub fn probabilities(&self, engine: &Engine<'_>, scores: &Ciphertext) -> Result<Ciphertext, NnError> {
        self.softmax.apply(engine, scores)
    }

    /// `A V` of every head in the hidden layout (two levels below the lower
    /// of `a` and `v`).
    pub fn weighted_sum(&self, engine: &Engine<'_>, a: &Ciphertext, v: &Ciphertext) -> Result<Ciphertext, NnError> {
        let (t, r) = (self.layout.block(), self.layout.rows());
        let values = self.token_rotations(engine, v)?;
        let mut acc: Option<Ciphertext> = None;
        for (shift, value) in values.iter().enumerate() {
            let column = self.mask(|s| (s / r) % t == shift);
            let mut spread = engine.mul_plain_to(a, &column, a.level().saturating_sub(1), a.scale())?;
            for m in 0..t.trailing_zeros() {
                let rot = engine.eval.rotate(&spread, -((r << m) as i64), engine.galois)?;
                engine.eval.add_assign(&mut spread, &rot)?;
            }
            let level = spread.level().min(value.level());
            let term = engine
                .eval
                .mul(&engine.eval.drop_to_level(&spread, level)?, &engine.eval.drop_to_level(value, level)?)?;
            match acc.as_mut() {
                Some(x) => engine.eval.add_assign(x, &term)?,
                None => acc = Some(term),
            }
        }
        let acc = acc.ok_or_else(|| invalid("attention", "no tokens"))?;
        Ok(engine.eval.relinearize_rescale(&acc, engine.rlk)?)
    }
}
