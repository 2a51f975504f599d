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
//! probabilities, spread over all columns, times the values rotated by `k`,
//! summed over `k` before one relinearisation, lands in the hidden layout.
//!
//! Both the column sums and the spreading are rotations of masked
//! ciphertexts, and a column mask rotated by `-R m` is the mask `m`
//! columns on ([`ColumnMasks`]): so the masks move inside the sums, and
//! the rotations act on a few sums of masked products instead of on every
//! product. The scores take `d_h' - 1` rotations by `R` (Horner's rule)
//! instead of `B log2 d_h'`, the spreading `B - 1` rotations of the
//! probabilities by `-R` instead of `B log2 B`, and both need only the
//! keys for `R` and `-R`.
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
        if self.layout.head_dim_pow2() > 1 {
            steps.push(r);
        }
        if b > 1 {
            steps.push(-r);
        }
        steps.extend(self.softmax.layout().sum_rotations());
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// Levels, rotations and products of scores + Softmax + weighted sum.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let (t, d) = (self.layout.block(), self.layout.head_dim_pow2());
        let softmax = self.softmax.cost(params);
        OpCost {
            levels: 3 + softmax.levels + 2,
            rotations: 4 * (t - 1) + 2 + (d - 1) + (t - 1) + softmax.rotations,
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
        let (t, r, d) = (self.layout.block(), self.layout.rows(), self.layout.head_dim_pow2());
        let keys = self.token_rotations(engine, k)?;
        let products: Vec<Ciphertext> = keys.iter().map(|key| engine.mul(q, key)).collect::<Result<_, _>>()?;
        // sum_k M_k (sum_{m < d} rot(P_k, R m)) = sum_m rot(C_m, R m) with
        // C_m = sum_k M_{k + m} P_k, by Horner's rule from m = d - 1 down.
        let masks = ColumnMasks::encode(engine, &self.layout, &products[0])?;
        let mut acc: Option<Ciphertext> = None;
        for m in (0..d).rev() {
            let c_m = masks.combine(engine, products.iter().enumerate().map(|(k, p)| ((k + m) % t, p)))?;
            acc = Some(match acc {
                None => c_m,
                Some(higher) => {
                    let mut sum = engine.eval.rotate(&higher, r as i64, engine.galois)?;
                    engine.eval.add_assign(&mut sum, &c_m)?;
                    sum
                }
            });
        }
        acc.ok_or_else(|| invalid("attention", "no columns"))
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
        // rot(a, -R j) for j < B, one rotation by -R each.
        let mut shifted = Vec::with_capacity(t);
        shifted.push(a.clone());
        for j in 1..t {
            let next = engine.eval.rotate(&shifted[j - 1], -(r as i64), engine.galois)?;
            shifted.push(next);
        }
        let masks = ColumnMasks::encode(engine, &self.layout, a)?;
        let mut acc: Option<Ciphertext> = None;
        for (shift, value) in values.iter().enumerate() {
            // Column `shift` spread over all columns: sum_j rot(M_shift a,
            // -R j) = sum_j M_{shift + j} rot(a, -R j).
            let spread = masks.combine(engine, shifted.iter().enumerate().map(|(j, s)| ((shift + j) % t, s)))?;
            let level = spread.level().min(value.level());
            let term = engine.eval.mul_at(&spread, value, level)?;
            match acc.as_mut() {
                Some(x) => engine.eval.add_assign(x, &term)?,
                None => acc = Some(term),
            }
        }
        let acc = acc.ok_or_else(|| invalid("attention", "no tokens"))?;
        Ok(engine.eval.relinearize_rescale(&acc, engine.rlk)?)
    }
}

/// The `B` column masks `M_c` (slots whose column `(s / R) mod B` is `c`),
/// encoded once at a ciphertext's level, to be summed against ciphertexts
/// of that level and scale.
///
/// Rotating a slot vector by `-R m` moves column `c` to column `c + m`
/// (mod `B`, since `R B` divides the slots), so `rot(M_c x, -R m) =
/// M_{c + m} rot(x, -R m)`: a rotation of masked products is a sum of
/// rotated products under other masks.
struct ColumnMasks {
    masks: Vec<nexus_ckks::Plaintext>,
    level: usize,
    scale: f64,
    prime: f64,
}

impl ColumnMasks {
    /// The masks for ciphertexts like `like` (its level and scale); the
    /// sums land one level below at `like`'s scale.
    fn encode(engine: &Engine<'_>, layout: &HiddenLayout, like: &Ciphertext) -> Result<Self, NnError> {
        let (t, r, slots) = (layout.block(), layout.rows(), layout.slots());
        if !slots.is_multiple_of(r * t) {
            return Err(invalid("attention", format!("{r} rows of {t} columns do not tile {slots} slots")));
        }
        let level = like.level();
        if level == 0 {
            return Err(invalid("attention", "masked sum of a ciphertext at level 0"));
        }
        let prime = engine.params().q()[level] as f64;
        let masks = (0..t)
            .map(|c| {
                let mask: Vec<f64> = (0..slots).map(|s| if (s / r) % t == c { 1.0 } else { 0.0 }).collect();
                engine.encoder.encode_real(&mask, level, prime)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { masks, level, scale: like.scale(), prime })
    }

    /// `sum M_c x` over `(c, x)` (one dot product), rescaled: one level
    /// below, at the scale the terms share.
    fn combine<'c>(
        &self,
        engine: &Engine<'_>,
        terms: impl Iterator<Item = (usize, &'c Ciphertext)>,
    ) -> Result<Ciphertext, NnError> {
        let (mut cts, mut masks) = (Vec::new(), Vec::new());
        for (c, x) in terms {
            if x.level() != self.level || (x.scale() / self.scale - 1.0).abs() > 1e-12 {
                return Err(invalid("attention", "masked terms at different levels or scales"));
            }
            masks.push(self.masks.get(c).ok_or_else(|| invalid("attention", format!("no column {c}")))?);
            cts.push(x);
        }
        let mut acc = engine.eval.dot_plain(&cts, &masks)?;
        acc.set_scale(self.scale * self.prime)?;
        Ok(engine.eval.rescale(&acc)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the masked sums rest on: a column mask rotated by `-R m` is the
    /// mask `m` columns on, in latency and in throughput layouts.
    #[test]
    fn a_rotated_column_mask_is_the_next_columns_mask() {
        let layouts = [
            HiddenLayout::new(8, 6, 4, 8, 2048).unwrap(),
            HiddenLayout::batched(8, &[6, 3, 8], 4, 8, 2048).unwrap(),
            HiddenLayout::batched(16, &[13, 11, 13, 12], 12, 32, 1 << 15).unwrap(),
        ];
        for layout in layouts {
            let (t, r, slots) = (layout.block(), layout.rows(), layout.slots());
            let mask = |c: usize, s: usize| (s / r) % t == c;
            for c in 0..t {
                for m in 0..layout.head_dim_pow2().max(t) {
                    for s in 0..slots {
                        // rot(M_c, -R m)[s] = M_c[s - R m].
                        let from = (s + slots - (r * m) % slots) % slots;
                        assert_eq!(mask(c, from), mask((c + m) % t, s), "column {c}, shift {m}, slot {s}");
                    }
                }
            }
        }
    }
}
