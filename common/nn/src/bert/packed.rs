//! How an encoder's activations sit in ciphertext slots, consistently from
//! layer to layer, and the linear layers between those layouts.
//!
//! With `T` tokens (a power of two, `n <= T` of them real), `H` heads of
//! dimension `d_h` (`H'`, `d_h'` rounded up to powers of two) and
//! `R = H' T` "rows" (head, token):
//! - the **hidden layout** puts `X[t][h d_h + c]` at slot
//!   `(m d_h' + c) R + h T + t` for every copy `m`: token-interleaved, heads
//!   interleaved, so that each head's `T x d_h` block is an interleaved
//!   matrix of `R` rows and all heads move together under one rotation. The
//!   `R d_h'`-slot pattern repeats to fill the ciphertext, so rotations by
//!   multiples of `R` are cyclic within it. As a [`RowLayout`] of `T` rows
//!   it is the identity layout with permuted columns: LayerNorm runs on it
//!   as is.
//! - the **wide layout** (feed-forward activations) puts column `j` at slot
//!   `(j mod C) T + t` of ciphertext `j / C`, `C = slots / T`.
//!
//! Padding tokens (`t >= n`) are exact zeros after every linear layer: the
//! token mask is folded into the weights' diagonals and the biases.
//!
//! Every operation keeps the copies of the hidden layout identical; the
//! linear layers rely on it (a rotation of a periodic vector matters only
//! modulo its period), which halves their diagonals, and the wide-to-hidden
//! product spreads its partial sums over the output copies before adding
//! them up. An input whose copies differ gives a wrong product.

use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::layout::RowLayout;
use nexus_ckks::circuits::{Diagonal, LinearTransform};
use nexus_ckks::{Ciphertext, Complex64, Parameters};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::weights::Linear;

/// Where each logical column of a `T`-token activation lives.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    tokens: usize,
    slots: usize,
    ciphertexts: usize,
    /// `(ciphertext, position)` of each column; slot `position * T + t`.
    positions: Vec<(usize, usize)>,
    /// Slots of one copy (the pattern repeats `slots / copy_period` times).
    copy_period: usize,
}

impl Placement {
    /// The wide layout of `width` columns.
    pub fn wide(width: usize, tokens: usize, slots: usize) -> Result<Self, NnError> {
        if !tokens.is_power_of_two() || tokens > slots || width == 0 {
            return Err(invalid("packing", format!("{width} columns of {tokens} tokens in {slots} slots")));
        }
        let per = slots / tokens;
        Ok(Self {
            tokens,
            slots,
            ciphertexts: width.div_ceil(per),
            positions: (0..width).map(|j| (j / per, j % per)).collect(),
            copy_period: slots,
        })
    }

    /// Logical columns.
    pub fn width(&self) -> usize {
        self.positions.len()
    }

    /// Ciphertexts an activation takes.
    pub fn ciphertexts(&self) -> usize {
        self.ciphertexts
    }

    /// Copies of the pattern in a ciphertext.
    pub fn copies(&self) -> usize {
        self.slots / self.copy_period
    }

    /// Rotation steps that fill the copies from the first.
    pub fn copy_rotations(&self) -> Vec<i64> {
        (0..self.copies().trailing_zeros()).map(|m| -((self.copy_period << m) as i64)).collect()
    }

    /// Slot vectors (one per ciphertext) of `rows` (at most `T` rows of
    /// `width` values; missing rows are zeros).
    pub fn pack(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        if rows.len() > self.tokens || rows.iter().any(|r| r.len() != self.width()) {
            return Err(invalid(
                "packing",
                format!("expected at most {} rows of {} values", self.tokens, self.width()),
            ));
        }
        let mut out = vec![vec![0.0; self.slots]; self.ciphertexts];
        for (t, row) in rows.iter().enumerate() {
            for (&(ct, pos), &v) in self.positions.iter().zip(row) {
                for m in 0..self.copies() {
                    out[ct][m * self.copy_period + pos * self.tokens + t] = v;
                }
            }
        }
        Ok(out)
    }

    /// The first `n` rows held by decoded slot vectors.
    pub fn unpack(&self, cts: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
        (0..n.min(self.tokens))
            .map(|t| self.positions.iter().map(|&(ct, pos)| cts[ct][pos * self.tokens + t]).collect())
            .collect()
    }
}

/// The hidden layout (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenLayout {
    tokens: usize,
    block: usize,
    lengths: Vec<usize>,
    heads: usize,
    heads_pow2: usize,
    head_dim: usize,
    head_dim_pow2: usize,
    slots: usize,
}

impl HiddenLayout {
    /// One sentence (latency mode): `tokens` a power of two holding
    /// `real_tokens`; `heads * head_dim` hidden columns; the pattern must
    /// fit `slots`.
    pub fn new(
        tokens: usize,
        real_tokens: usize,
        heads: usize,
        head_dim: usize,
        slots: usize,
    ) -> Result<Self, NnError> {
        if !tokens.is_power_of_two() || real_tokens > tokens {
            return Err(invalid("packing", format!("{real_tokens} of {tokens} tokens (a power of two)")));
        }
        Self::batched(tokens, &[real_tokens], heads, head_dim, slots)
    }

    /// Several sentences (throughput mode): sentence `i` of `lengths[i]`
    /// real tokens takes tokens `i * block ..` of `T = block *
    /// next_pow2(sentences)`; attention stays inside each block.
    pub fn batched(
        block: usize,
        lengths: &[usize],
        heads: usize,
        head_dim: usize,
        slots: usize,
    ) -> Result<Self, NnError> {
        let tokens = block.saturating_mul(lengths.len().next_power_of_two());
        let heads_pow2 = heads.next_power_of_two();
        let head_dim_pow2 = head_dim.next_power_of_two();
        let fits = tokens
            .checked_mul(heads_pow2)
            .and_then(|r| r.checked_mul(head_dim_pow2.max(block)))
            .is_some_and(|p| p <= slots && slots.is_power_of_two());
        if !block.is_power_of_two()
            || lengths.is_empty()
            || lengths.iter().any(|&n| n == 0 || n > block)
            || heads == 0
            || head_dim == 0
            || !fits
        {
            return Err(invalid(
                "packing",
                format!(
                    "{} sentences of {lengths:?} tokens in blocks of {block} x {heads} heads x {head_dim} dims do not \
                     fit {slots} slots (blocks a power of two, block * next_pow2(sentences) * heads' * \
                     max(head_dim', block) <= slots: at most {} sentences)",
                    lengths.len(),
                    Self::capacity(block, heads, head_dim, slots)
                ),
            ));
        }
        Ok(Self { tokens, block, lengths: lengths.to_vec(), heads, heads_pow2, head_dim, head_dim_pow2, slots })
    }

    /// The most sentences of up to `block` tokens one ciphertext holds.
    pub fn capacity(block: usize, heads: usize, head_dim: usize, slots: usize) -> usize {
        let per_sentence = block * heads.next_power_of_two() * head_dim.next_power_of_two().max(block);
        if per_sentence == 0 || per_sentence > slots {
            return 0;
        }
        let n = slots / per_sentence;
        // A power of two not above n.
        1 << (usize::BITS - 1 - n.leading_zeros())
    }

    /// Tokens `T` (all blocks, padded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Tokens of one sentence's block (a power of two).
    pub fn block(&self) -> usize {
        self.block
    }

    /// Real tokens of each sentence.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Whether token `t` (of `T`) is a real token of some sentence.
    pub fn is_real(&self, t: usize) -> bool {
        self.lengths.get(t / self.block).is_some_and(|&n| t % self.block < n)
    }

    /// [`is_real`](Self::is_real) of every token.
    pub fn token_mask(&self) -> Vec<bool> {
        (0..self.tokens).map(|t| self.is_real(t)).collect()
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Head dimension rounded up to a power of two.
    pub fn head_dim_pow2(&self) -> usize {
        self.head_dim_pow2
    }

    /// Slots of the ciphertexts.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// `R = H' T`: the (head, token) rows of the attention layouts.
    pub fn rows(&self) -> usize {
        self.heads_pow2 * self.tokens
    }

    /// Hidden width `H d_h`.
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Position (in units of `T` slots) of hidden column `c`.
    pub fn position(&self, c: usize) -> usize {
        (c % self.head_dim) * self.heads_pow2 + c / self.head_dim
    }

    /// The hidden layout as a [`Placement`].
    pub fn placement(&self) -> Placement {
        Placement {
            tokens: self.tokens,
            slots: self.slots,
            ciphertexts: 1,
            positions: (0..self.hidden()).map(|c| (0, self.position(c))).collect(),
            copy_period: self.rows() * self.head_dim_pow2,
        }
    }

    /// The hidden layout as `T` interleaved rows (for LayerNorm).
    pub fn row_layout(&self) -> Result<RowLayout, NnError> {
        let columns = (0..self.hidden()).map(|c| self.position(c)).collect();
        RowLayout::with_columns(self.tokens, self.heads_pow2 * self.head_dim_pow2, self.slots, columns)
    }

    /// Slot vector of one sentence's rows (latency mode).
    pub fn pack(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, NnError> {
        self.pack_batch(std::slice::from_ref(&rows.to_vec()))
    }

    /// Slot vector of every sentence's rows (`lengths[i]` rows each).
    pub fn pack_batch(&self, sentences: &[Vec<Vec<f64>>]) -> Result<Vec<f64>, NnError> {
        let got: Vec<usize> = sentences.iter().map(Vec::len).collect();
        if got != self.lengths {
            return Err(invalid("packing", format!("sentences of {got:?} rows for a layout of {:?}", self.lengths)));
        }
        let width = self.hidden();
        let mut rows = vec![vec![0.0; width]; self.tokens];
        for (i, sentence) in sentences.iter().enumerate() {
            for (j, row) in sentence.iter().enumerate() {
                rows[i * self.block + j] = row.clone();
            }
        }
        Ok(self.placement().pack(&rows)?.swap_remove(0))
    }

    /// The first sentence's rows of decoded slots.
    pub fn unpack(&self, slots: &[f64]) -> Vec<Vec<f64>> {
        self.unpack_batch(slots).swap_remove(0)
    }

    /// Every sentence's rows of decoded slots.
    pub fn unpack_batch(&self, slots: &[f64]) -> Vec<Vec<Vec<f64>>> {
        let all = self.placement().unpack(&[slots.to_vec()], self.tokens);
        self.lengths.iter().enumerate().map(|(i, &n)| all[i * self.block..i * self.block + n].to_vec()).collect()
    }
}

/// `Y = X W + b` between two placements, padding tokens kept at zero: for
/// each (output, input) ciphertext pair one [`LinearTransform`] whose
/// diagonals sit at multiples of `T`, then the copies filled by rotations.
#[derive(Debug)]
pub struct PackedLinear {
    input: Placement,
    output: Placement,
    /// `[output ct][input ct]`.
    transforms: Vec<Vec<Option<LinearTransform>>>,
    /// Bias slot vector per output ciphertext.
    bias: Vec<Vec<f64>>,
}

impl PackedLinear {
    /// `factor * (x W + b)` from `input` to `output` on the tokens where
    /// `real` is true (the others come out as exact zeros).
    pub fn new(
        linear: &Linear,
        input: &Placement,
        output: &Placement,
        real: &[bool],
        factor: f64,
    ) -> Result<Self, NnError> {
        let (t, slots) = (input.tokens, input.slots);
        if linear.d_in != input.width()
            || linear.d_out != output.width()
            || output.tokens != t
            || output.slots != slots
            || real.len() != t
            || !real.contains(&true)
        {
            return Err(invalid(
                "packed linear",
                format!(
                    "{}x{} weights between {} and {} columns, a mask of {} tokens for {t}",
                    linear.d_in,
                    linear.d_out,
                    input.width(),
                    output.width(),
                    real.len()
                ),
            ));
        }
        // Each diagonal is a weight per block of `t` slots (one hidden
        // position of one copy) times the token mask.
        let mask: Arc<[f64]> = real.iter().map(|&r| if r { 1.0 } else { 0.0 }).collect();
        let mut diagonals: Vec<Vec<BTreeMap<usize, Vec<f64>>>> =
            vec![vec![BTreeMap::new(); input.ciphertexts]; output.ciphertexts];
        // Zero weights keep their diagonal: the set of diagonals (and so the
        // rotation keys) depends on the layouts only, never on the weights.
        for (o, &(b, po)) in output.positions.iter().enumerate() {
            for (i, &(a, pi)) in input.positions.iter().enumerate() {
                let w = linear.w[i * linear.d_out + o] * factor;
                let (offset, copy) = Self::route(input, output, pi, po);
                let diag = diagonals[b][a].entry(offset).or_insert_with(|| vec![0.0; slots / t]);
                // Copy periods are whole numbers of positions.
                diag[(copy * output.copy_period) / t + po] += w;
            }
        }
        let transforms = diagonals
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|d| {
                        if d.is_empty() {
                            return Ok(None);
                        }
                        let d = d
                            .into_iter()
                            .map(|(k, values)| (k, Diagonal::Kronecker { values, pattern: mask.clone() }))
                            .collect();
                        LinearTransform::from_diagonal_values(slots, d).map(Some)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<Vec<f64>> =
            real.iter().map(|&r| linear.bias.iter().map(|b| if r { b * factor } else { 0.0 }).collect()).collect();
        let bias = output.pack(&rows)?;
        Ok(Self { input: input.clone(), output: output.clone(), transforms, bias })
    }

    /// The diagonal carrying the weight from the input column at position
    /// `pi` to the output column at `po`, and the output copy its product
    /// lands in (the copies are summed afterwards, so any copy will do).
    ///
    /// A dense map between `P`-position spaces needs `P` diagonals when the
    /// rotations are cyclic in `P`, but `2P - 1` otherwise; two facts make
    /// them cyclic here:
    /// - an input with copies is periodic (every operation keeps its copies
    ///   identical), so a rotation only matters modulo its copy period;
    /// - an input without copies (the wide layout) is read by the output
    ///   copy its position falls in, which keeps every offset within one
    ///   output copy period.
    fn route(input: &Placement, output: &Placement, pi: usize, po: usize) -> (usize, usize) {
        let (t, slots) = (input.tokens, input.slots);
        let (from, to) = (pi * t, po * t);
        if input.copies() > 1 {
            ((from + input.copy_period - to % input.copy_period) % input.copy_period, 0)
        } else if output.copies() > 1 {
            let copy = from / output.copy_period;
            let within = from - copy * output.copy_period;
            ((within + slots - to) % slots, copy)
        } else {
            ((from + slots - to) % slots, 0)
        }
    }

    /// Rotation steps of any product from `input` to `output` (they depend
    /// on the layouts only): what the client generates keys for without
    /// building the transforms.
    pub fn rotations_between(input: &Placement, output: &Placement) -> Vec<i64> {
        let slots = input.slots;
        let mut steps = output.copy_rotations();
        for b in 0..output.ciphertexts {
            for a in 0..input.ciphertexts {
                let mut offsets: Vec<usize> = output
                    .positions
                    .iter()
                    .filter(|p| p.0 == b)
                    .flat_map(|&(_, po)| {
                        input
                            .positions
                            .iter()
                            .filter(|p| p.0 == a)
                            .map(move |&(_, pi)| Self::route(input, output, pi, po).0)
                    })
                    .collect();
                offsets.sort_unstable();
                offsets.dedup();
                steps.extend(LinearTransform::rotations_for(slots, &offsets));
            }
        }
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// Rotation steps the keys must cover.
    pub fn rotations(&self) -> Vec<i64> {
        Self::rotations_between(&self.input, &self.output)
    }

    /// Galois elements of [`rotations`](Self::rotations).
    pub fn galois_elements(&self, params: &Parameters) -> Vec<usize> {
        self.rotations().iter().map(|&s| params.galois_element_for_rotation(s)).collect()
    }

    /// Key switches of one application.
    pub fn rotation_count(&self) -> usize {
        let transforms: usize = self.transforms.iter().flatten().flatten().map(|t| t.rotation_count()).sum();
        transforms + self.output.ciphertexts * self.output.copy_rotations().len()
    }

    /// Plaintext twin of [`apply`](Self::apply) on slot vectors.
    pub fn apply_plain(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        if x.len() != self.input.ciphertexts || x.iter().any(|v| v.len() != self.input.slots) {
            return Err(invalid(
                "packed linear",
                format!("expected {} slot vectors of {}", self.input.ciphertexts, self.input.slots),
            ));
        }
        let slots = self.input.slots;
        let z: Vec<Vec<Complex64>> = x.iter().map(|v| v.iter().map(|&r| Complex64::new(r, 0.0)).collect()).collect();
        Ok(self
            .transforms
            .iter()
            .zip(&self.bias)
            .map(|(row, bias)| {
                let mut acc = vec![0.0; slots];
                for (t, z) in row.iter().zip(&z) {
                    let Some(t) = t else { continue };
                    acc.iter_mut().zip(t.apply(z)).for_each(|(a, y)| *a += y.re);
                }
                for step in self.output.copy_rotations() {
                    let rotated: Vec<f64> =
                        (0..slots).map(|j| acc[(j as i64 + step).rem_euclid(slots as i64) as usize]).collect();
                    acc.iter_mut().zip(rotated).for_each(|(a, r)| *a += r);
                }
                acc.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
                acc
            })
            .collect())
    }

    /// Diagonals of every transform (cost: one plaintext product each).
    pub fn diagonal_count(&self) -> usize {
        self.transforms.iter().flatten().flatten().map(|t| t.diagonals().len()).sum()
    }

    /// Encrypted product (one level, scale kept).
    pub fn apply(&self, engine: &Engine<'_>, x: &[Ciphertext]) -> Result<Vec<Ciphertext>, NnError> {
        self.apply_rows(engine, x, self.outputs())
    }

    /// Output ciphertexts `rows` of the encrypted product (a tile of it;
    /// each output is computed on its own, so tiles concatenated in order
    /// are [`apply`](Self::apply)'s result).
    pub fn apply_rows(
        &self,
        engine: &Engine<'_>,
        x: &[Ciphertext],
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<Ciphertext>, NnError> {
        self.check_rows(&rows, x.len())?;
        let level = x.iter().map(Ciphertext::level).min().unwrap_or(0);
        let mut sums: Vec<Option<Ciphertext>> = vec![None; rows.len()];
        // One input's rotations at a time: they are the memory peak.
        for (i, ct) in x.iter().enumerate() {
            let steps = self.baby_steps(i, rows.clone());
            if steps.is_empty() {
                continue;
            }
            let ct = if ct.level() == level {
                std::borrow::Cow::Borrowed(ct)
            } else {
                std::borrow::Cow::Owned(engine.eval.drop_to_level(ct, level)?)
            };
            let rotations = rotations_of(engine, &ct, steps)?;
            self.accumulate(engine, i, &rotations, rows.clone(), &mut sums)?;
        }
        let zero_like = x.first().ok_or_else(|| invalid("packed linear", "no input ciphertexts"))?;
        self.finish(engine, sums, rows, zero_like, level)
    }

    /// Every output ciphertext's index.
    pub fn outputs(&self) -> std::ops::Range<usize> {
        0..self.transforms.len()
    }

    /// The rotations the outputs `rows` read from input `input`: one
    /// hoisted decomposition of that input covers every output's baby
    /// steps (each output's transform rotated it again before).
    pub fn baby_steps(&self, input: usize, rows: std::ops::Range<usize>) -> Vec<i64> {
        let mut steps: Vec<i64> = self.transforms[rows]
            .iter()
            .filter_map(|row| row.get(input).and_then(Option::as_ref))
            .flat_map(LinearTransform::baby_steps)
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// [`apply_rows`](Self::apply_rows) on inputs given by their
    /// rotations: `rotations[i]` holds input `i` rotated by every step of
    /// [`baby_steps(i, rows)`](Self::baby_steps) at least, all at one
    /// level. Products that read the same input (a layer's Q, K and V)
    /// share one set of rotations.
    pub fn apply_rows_rotated(
        &self,
        engine: &Engine<'_>,
        rotations: &[BTreeMap<i64, Ciphertext>],
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<Ciphertext>, NnError> {
        self.check_rows(&rows, rotations.len())?;
        let zero_like = rotations
            .iter()
            .find_map(|r| r.values().next())
            .ok_or_else(|| invalid("packed linear", "no rotations of the inputs given"))?;
        let level = zero_like.level();
        let mut sums: Vec<Option<Ciphertext>> = vec![None; rows.len()];
        for (i, r) in rotations.iter().enumerate() {
            self.accumulate(engine, i, r, rows.clone(), &mut sums)?;
        }
        self.finish(engine, sums, rows, zero_like, level)
    }

    fn check_rows(&self, rows: &std::ops::Range<usize>, inputs: usize) -> Result<(), NnError> {
        if rows.start > rows.end || rows.end > self.transforms.len() {
            return Err(invalid(
                "packed linear",
                format!("output ciphertexts {rows:?} of a product with {}", self.transforms.len()),
            ));
        }
        if inputs != self.input.ciphertexts {
            return Err(invalid(
                "packed linear",
                format!("{inputs} input ciphertexts, expected {}", self.input.ciphertexts),
            ));
        }
        Ok(())
    }

    /// Adds input `i`'s share of every output in `rows` into `sums`.
    fn accumulate(
        &self,
        engine: &Engine<'_>,
        i: usize,
        rotations: &BTreeMap<i64, Ciphertext>,
        rows: std::ops::Range<usize>,
        sums: &mut [Option<Ciphertext>],
    ) -> Result<(), NnError> {
        for (row, sum) in self.transforms[rows].iter().zip(sums) {
            let Some(t) = &row[i] else { continue };
            let Some(scale) = rotations.values().next().map(Ciphertext::scale) else {
                return Err(invalid("packed linear", format!("no rotations of input {i} given")));
            };
            let one = Complex64::new(1.0, 0.0);
            let y = t.evaluate_rotated(engine.eval, engine.encoder, rotations, engine.galois, one, scale)?;
            match sum.as_mut() {
                Some(a) => engine.eval.add_assign(a, &y)?,
                None => *sum = Some(y),
            }
        }
        Ok(())
    }

    /// The outputs from their sums: copies rotated into place and the bias
    /// (an output no input reaches is the bias alone, on a zero made from
    /// `zero_like` at `level`).
    fn finish(
        &self,
        engine: &Engine<'_>,
        sums: Vec<Option<Ciphertext>>,
        rows: std::ops::Range<usize>,
        zero_like: &Ciphertext,
        level: usize,
    ) -> Result<Vec<Ciphertext>, NnError> {
        sums.into_iter()
            .zip(&self.bias[rows])
            .map(|(acc, bias)| {
                let mut acc = match acc {
                    Some(a) => a,
                    None => engine.mul_const_to(zero_like, 0.0, level.saturating_sub(1), zero_like.scale())?,
                };
                for step in self.output.copy_rotations() {
                    let r = engine.eval.rotate(&acc, step, engine.galois)?;
                    engine.eval.add_assign(&mut acc, &r)?;
                }
                let b = engine.encoder.encode_real(bias, acc.level(), acc.scale())?;
                Ok(engine.eval.add_plain(&acc, &b)?)
            })
            .collect()
    }
}

/// `ct` rotated by each of `steps` (hoisted), by step.
pub fn rotations_of(
    engine: &Engine<'_>,
    ct: &Ciphertext,
    steps: Vec<i64>,
) -> Result<BTreeMap<i64, Ciphertext>, NnError> {
    let rotated = engine.eval.rotate_hoisted(ct, &steps, engine.galois)?;
    Ok(steps.into_iter().zip(rotated).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_linear(d_in: usize, d_out: usize, seed: u64) -> Linear {
        Linear {
            d_in,
            d_out,
            w: crate::model::lcg_uniform(d_in * d_out, seed, 1.0),
            bias: crate::model::lcg_uniform(d_out, seed + 1, 1.0),
        }
    }

    fn rows(n: usize, width: usize, seed: u64) -> Vec<Vec<f64>> {
        let v = crate::model::lcg_uniform(n * width, seed, 1.0);
        v.chunks(width).map(<[f64]>::to_vec).collect()
    }

    /// The packed product of packed rows is the packed `X W + b`, on every
    /// slot: real tokens, zero padding and identical copies.
    fn check(linear: &Linear, input: &Placement, output: &Placement, real: usize) -> usize {
        let mask: Vec<bool> = (0..input.tokens).map(|t| t < real).collect();
        let packed = PackedLinear::new(linear, input, output, &mask, 1.0).unwrap();
        let x = rows(real, linear.d_in, 7);
        let got = packed.apply_plain(&input.pack(&x).unwrap()).unwrap();
        let want = output.pack(&linear.apply(&x)).unwrap();
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-9, "{g} vs {w}");
        }
        let mut keys = packed.rotations();
        let mut needed: Vec<i64> = packed.transforms.iter().flatten().flatten().flat_map(|t| t.rotations()).collect();
        needed.extend(output.copy_rotations());
        needed.sort_unstable();
        needed.dedup();
        keys.retain(|k| needed.contains(k));
        assert_eq!(keys, needed, "rotations_between lists what the transforms use");
        packed.diagonal_count()
    }

    #[test]
    fn batched_layout_packs_sentences_in_blocks() {
        let lengths = [6, 3, 8];
        let layout = HiddenLayout::batched(8, &lengths, 4, 8, 2048).unwrap();
        assert_eq!(layout.tokens(), 32, "three blocks round up to four");
        assert_eq!(HiddenLayout::capacity(8, 4, 8, 2048), 8);
        let sentences: Vec<Vec<Vec<f64>>> =
            lengths.iter().enumerate().map(|(i, &n)| rows(n, 32, i as u64 + 20)).collect();
        let slots = layout.pack_batch(&sentences).unwrap();
        assert_eq!(layout.unpack_batch(&slots), sentences);
        assert!(layout.is_real(8 + 2) && !layout.is_real(8 + 3) && !layout.is_real(24));
        assert!(HiddenLayout::batched(8, &[9], 4, 8, 2048).is_err(), "a sentence longer than its block");
        assert!(HiddenLayout::batched(8, &[1; 9], 4, 8, 2048).is_err(), "more sentences than fit");
        assert!(layout.pack_batch(&sentences[..2]).is_err());
    }

    #[test]
    fn products_between_layouts_match_the_dense_product() {
        // hidden 32 = 4 heads of 8, 8 tokens (6 real), 2048 slots: 8 copies.
        let layout = HiddenLayout::new(8, 6, 4, 8, 2048).unwrap();
        let hidden = layout.placement();
        assert_eq!(hidden.copies(), 8);
        let square = check(&random_linear(32, 32, 1), &hidden, &hidden, 6);
        // Periodic input: the 32 positions need 32 diagonals, not 63.
        assert_eq!(square, 32);
        for width in [64, 256, 600] {
            let wide = Placement::wide(width, 8, 2048).unwrap();
            let up = check(&random_linear(32, width, 2), &hidden, &wide, 6);
            let down = check(&random_linear(width, 32, 3), &wide, &hidden, 6);
            assert!(up <= 32 * wide.ciphertexts(), "{width}: {up} diagonals up");
            assert!(down <= 63 * wide.ciphertexts(), "{width}: {down} diagonals down");
        }
    }
}
