//! Ciphertext x ciphertext products of one attention head: the scores
//! `S = Q K^T` and the weighted sum `O = A V`, for `T` tokens and head
//! dimension `d`.
//!
//! Layouts (all periodic with period `T^2`, so every rotation below is
//! cyclic within a block):
//! - **interleaved** `M[i][c]` at slot `c T + i` (Q, the output O, and the
//!   rows of a [`crate::RowLayout`] with `T` rows);
//! - **row-major** `M[j][c]` at slot `j T + c` (K and V: the layout a
//!   [`crate::matmul::DiagonalMatMul`] with block `T` produces);
//! - **scores** `S[i][j]` at slot `j T + i`: the interleaved layout of a
//!   `T x T` matrix, which is what [`crate::Softmax`] reads.
//!
//! `S = sum_c Qrep_c * Krep_c` with `Qrep_c[jT + i] = Q[i][c]` (mask column
//! `c`, replicate over `j` with log2 T rotations by multiples of `T`) and
//! `Krep_c[jT + i] = K[j][c]` (mask, shift to the block start, replicate
//! over `i` with log2 T rotations); the `d` tensor products are summed before
//! one relinearisation. `O[i][c]` is the sum over `j` of `A * Vrep_c`
//! (log2 T rotations), masked into column `c`. Each costs about
//! `d (2 log2 T + popcount)` rotations and two or three levels; the
//! rotation keys are powers of two (and their multiples of `T`).

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::{Ciphertext, Parameters};

/// One head's products for `tokens` tokens of dimension `head_dim`.
#[derive(Clone, Debug)]
pub struct HeadAttention {
    tokens: usize,
    head_dim: usize,
    slots: usize,
}

impl HeadAttention {
    /// `tokens` a power of two with `tokens^2` dividing `slots`;
    /// `head_dim <= tokens`.
    pub fn new(tokens: usize, head_dim: usize, slots: usize) -> Result<Self, NnError> {
        let ok = tokens.is_power_of_two()
            && head_dim > 0
            && head_dim <= tokens
            && tokens.checked_mul(tokens).is_some_and(|b| b <= slots && slots.is_multiple_of(b));
        if !ok {
            return Err(invalid(
                "attention",
                format!("{tokens} tokens x {head_dim} dims in {slots} slots: need tokens a power of two, tokens^2 | slots, dims <= tokens"),
            ));
        }
        Ok(Self { tokens, head_dim, slots })
    }

    fn block(&self) -> usize {
        self.tokens * self.tokens
    }

    fn check(&self, m: &[Vec<f64>], cols: usize, what: &str) -> Result<(), NnError> {
        if m.len() != self.tokens || m.iter().any(|r| r.len() != cols) {
            return Err(invalid("attention", format!("{what} must be {} x {cols}", self.tokens)));
        }
        Ok(())
    }

    /// `m[i][c]` at slot `c T + i`.
    pub fn pack_interleaved(&self, m: &[Vec<f64>]) -> Result<Vec<f64>, NnError> {
        self.check(m, self.head_dim, "matrix")?;
        let t = self.tokens;
        Ok((0..self.slots)
            .map(|s| {
                let s = s % self.block();
                let (c, i) = (s / t, s % t);
                if c < self.head_dim {
                    m[i][c]
                } else {
                    0.0
                }
            })
            .collect())
    }

    /// `m[j][c]` at slot `j T + c`.
    pub fn pack_row_major(&self, m: &[Vec<f64>]) -> Result<Vec<f64>, NnError> {
        self.check(m, self.head_dim, "matrix")?;
        let t = self.tokens;
        Ok((0..self.slots)
            .map(|s| {
                let s = s % self.block();
                let (j, c) = (s / t, s % t);
                if c < self.head_dim {
                    m[j][c]
                } else {
                    0.0
                }
            })
            .collect())
    }

    /// `a[i][j]` at slot `j T + i` (scores layout).
    pub fn pack_scores(&self, a: &[Vec<f64>]) -> Result<Vec<f64>, NnError> {
        self.check(a, self.tokens, "scores")?;
        let t = self.tokens;
        Ok((0..self.slots).map(|s| s % self.block()).map(|s| a[s % t][s / t]).collect())
    }

    /// Scores from decoded slots.
    pub fn unpack_scores(&self, slots: &[f64]) -> Vec<Vec<f64>> {
        let t = self.tokens;
        (0..t).map(|i| (0..t).map(|j| slots[j * t + i]).collect()).collect()
    }

    /// An interleaved `T x d` matrix from decoded slots.
    pub fn unpack_interleaved(&self, slots: &[f64]) -> Vec<Vec<f64>> {
        let t = self.tokens;
        (0..t).map(|i| (0..self.head_dim).map(|c| slots[c * t + i]).collect()).collect()
    }

    fn log_t(&self) -> u32 {
        self.tokens.trailing_zeros()
    }

    /// Rotation steps the keys must cover.
    pub fn rotations(&self) -> Vec<i64> {
        let t = self.tokens as i64;
        let mut r: Vec<i64> = (0..self.log_t()).flat_map(|k| [1i64 << k, -(1i64 << k), t << k]).collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Cost of [`scores`](Self::scores).
    pub fn scores_cost(&self, params: &Parameters) -> OpCost {
        let lt = self.log_t() as usize;
        let shifts: usize = (0..self.head_dim).map(|c| c.count_ones() as usize).sum();
        OpCost {
            levels: 2,
            rotations: self.head_dim * 2 * lt + shifts,
            products: self.head_dim,
            bootstraps: 0,
            galois_elements: self.rotations().iter().map(|&s| params.galois_element_for_rotation(s)).collect(),
        }
    }

    /// Cost of [`weighted_sum`](Self::weighted_sum).
    pub fn weighted_sum_cost(&self, params: &Parameters) -> OpCost {
        OpCost { levels: 3, ..self.scores_cost(params) }
    }

    fn mask(&self, at: impl Fn(usize, usize) -> bool) -> Vec<f64> {
        let t = self.tokens;
        (0..self.slots).map(|s| s % self.block()).map(|s| if at(s / t, s % t) { 1.0 } else { 0.0 }).collect()
    }

    /// `acc += rot(acc, step * 2^k)` for `k < log2 T`.
    fn replicate(&self, engine: &Engine<'_>, ct: Ciphertext, step: i64) -> Result<Ciphertext, NnError> {
        let mut acc = ct;
        for k in 0..self.log_t() {
            let r = engine.eval.rotate(&acc, step << k, engine.galois)?;
            engine.eval.add_assign(&mut acc, &r)?;
        }
        Ok(acc)
    }

    /// Rotates left by `c` with power-of-two steps.
    fn shift(&self, engine: &Engine<'_>, ct: Ciphertext, c: usize) -> Result<Ciphertext, NnError> {
        let mut out = ct;
        for k in 0..usize::BITS {
            if c >> k & 1 == 1 {
                out = engine.eval.rotate(&out, 1i64 << k, engine.galois)?;
            }
        }
        Ok(out)
    }

    /// `Krep_c[jT + i] = M[j][c]` from a row-major ciphertext.
    fn rows_replicated(&self, engine: &Engine<'_>, m: &Ciphertext, c: usize) -> Result<Ciphertext, NnError> {
        let masked = engine.mul_plain_to(m, &self.mask(|_, col| col == c), m.level().saturating_sub(1), m.scale())?;
        let at_start = self.shift(engine, masked, c)?;
        self.replicate(engine, at_start, -1)
    }

    /// `S = Q K^T` in the scores layout (Q interleaved, K row-major, same
    /// level and scale).
    pub fn scores(&self, engine: &Engine<'_>, q: &Ciphertext, k: &Ciphertext) -> Result<Ciphertext, NnError> {
        let e = engine.eval;
        let t = self.tokens as i64;
        let mut acc: Option<Ciphertext> = None;
        for c in 0..self.head_dim {
            let qm = engine.mul_plain_to(q, &self.mask(|col, _| col == c), q.level().saturating_sub(1), q.scale())?;
            let q_rep = self.replicate(engine, qm, t)?;
            let k_rep = self.rows_replicated(engine, k, c)?;
            let level = q_rep.level().min(k_rep.level());
            let term = e.mul_at(&q_rep, &k_rep, level)?;
            match acc.as_mut() {
                Some(a) => e.add_assign(a, &term)?,
                None => acc = Some(term),
            }
        }
        let acc = acc.ok_or_else(|| invalid("attention", "head dimension 0"))?;
        // One relinearisation for the d products.
        Ok(e.relinearize_rescale(&acc, engine.rlk)?)
    }

    /// `O = A V` in the interleaved layout (A in the scores layout, V
    /// row-major).
    pub fn weighted_sum(&self, engine: &Engine<'_>, a: &Ciphertext, v: &Ciphertext) -> Result<Ciphertext, NnError> {
        let t = self.tokens as i64;
        let mut acc: Option<Ciphertext> = None;
        for c in 0..self.head_dim {
            let v_rep = self.rows_replicated(engine, v, c)?;
            let prod = engine.mul(a, &v_rep)?;
            let sums = self.replicate(engine, prod, t)?;
            let col =
                engine.mul_plain_to(&sums, &self.mask(|j, _| j == c), sums.level().saturating_sub(1), sums.scale())?;
            match acc.as_mut() {
                Some(x) => engine.eval.add_assign(x, &col)?,
                None => acc = Some(col),
            }
        }
        acc.ok_or_else(|| invalid("attention", "head dimension 0"))
    }

    /// f64 twin of the scores.
    pub fn plain_scores(q: &[Vec<f64>], k: &[Vec<f64>]) -> Vec<Vec<f64>> {
        q.iter().map(|qi| k.iter().map(|kj| qi.iter().zip(kj).map(|(a, b)| a * b).sum()).collect()).collect()
    }

    /// f64 twin of the weighted sum.
    pub fn plain_weighted_sum(a: &[Vec<f64>], v: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let d = v.first().map_or(0, Vec::len);
        a.iter().map(|ai| (0..d).map(|c| ai.iter().zip(v).map(|(x, vj)| x * vj[c]).sum()).collect()).collect()
    }
}
