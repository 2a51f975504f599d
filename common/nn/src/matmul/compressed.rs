//! The NEXUS compressed-input product `C = A B` with `A` (`m x n`)
//! plaintext and `B` (`n x k`) encrypted.
//!
//! The client packs `B` row-major into polynomial coefficients, `N` values
//! per ciphertext (twice the slot count: that is the upload saving). The
//! server expands every packed value `b_jl` into a ciphertext holding it in
//! every slot and accumulates `b_jl * A[rows, j]` into output column `l`:
//! no rotations, one key switch per encrypted value, `n k` plaintext
//! products per row block.
//!
//! Tiles: one tile is one input ciphertext (a block of rows of `B`, the
//! input block) and a range of output row blocks. Its partial output, one
//! ciphertext per (row block, column of `B` it touches), is independent of
//! every other tile's and the product is the sum of the partials, so the
//! scheduler can run tiles anywhere and add the results. Splitting the row
//! blocks of one input over several tiles repeats its expansion (the
//! expensive part), so the default tiling gives each input one tile.

use super::expand::{expand, expansion_galois_elements, expansion_key_switches};
use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::{Ciphertext, Encoder, Encoding, Parameters, Plaintext};
use std::collections::BTreeMap;

/// One independent unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Index of the compressed input ciphertext.
    pub input: usize,
    /// First output row block (rows `block * slots ..`).
    pub first_block: usize,
    /// One past the last output row block.
    pub end_block: usize,
}

/// Shape and packing of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedMatMul {
    m: usize,
    n: usize,
    k: usize,
    ring_degree: usize,
    slots: usize,
}

/// Partial outputs of one tile, keyed by `(row block, column)`.
pub type Partial = BTreeMap<(usize, usize), Ciphertext>;

/// Encoded plaintext columns of `A`, per row block (`[block][j]`).
#[derive(Debug)]
pub struct Weights {
    columns: Vec<Vec<Plaintext>>,
}

impl CompressedMatMul {
    /// A product of an `m x n` plaintext by an `n x k` encrypted matrix.
    pub fn new(params: &Parameters, m: usize, n: usize, k: usize) -> Result<Self, NnError> {
        if m == 0 || n == 0 || k == 0 {
            return Err(invalid("matmul", format!("empty shape {m}x{n} by {n}x{k}")));
        }
        if n.checked_mul(k).is_none_or(|v| v > 1 << 32) {
            return Err(invalid("matmul", format!("encrypted operand {n}x{k} is too large")));
        }
        Ok(Self { m, n, k, ring_degree: params.n(), slots: params.max_slots() })
    }

    /// Number of compressed input ciphertexts.
    pub fn inputs(&self) -> usize {
        (self.n * self.k).div_ceil(self.ring_degree)
    }

    /// Number of output row blocks (ciphertexts per output column).
    pub fn row_blocks(&self) -> usize {
        self.m.div_ceil(self.slots)
    }

    /// The default tiling: one tile per input ciphertext, all row blocks.
    pub fn tiles(&self) -> Vec<Tile> {
        (0..self.inputs()).map(|input| Tile { input, first_block: 0, end_block: self.row_blocks() }).collect()
    }

    /// The `(row block, column)` keys of `tile`'s partial outputs, in the
    /// order [`run_tile`](Self::run_tile)'s map holds them: every column of
    /// `B` the tile's input ciphertext holds values of, in every row block
    /// of the tile.
    pub fn partial_keys(&self, tile: Tile) -> Vec<(usize, usize)> {
        let columns: std::collections::BTreeSet<usize> = self.packed(tile.input).map(|p| p % self.k).collect();
        (tile.first_block..tile.end_block).flat_map(|b| columns.iter().map(move |&l| (b, l))).collect()
    }

    /// Values packed in input ciphertext `input`.
    fn packed(&self, input: usize) -> std::ops::Range<usize> {
        let start = input * self.ring_degree;
        start..(start + self.ring_degree).min(self.n * self.k)
    }

    /// Client side: `B` (`n x k`, row-major) as coefficient vectors, one per
    /// input ciphertext.
    pub fn pack(&self, b: &[f64]) -> Result<Vec<Vec<f64>>, NnError> {
        if b.len() != self.n * self.k {
            return Err(invalid("matmul", format!("B has {} values, expected {}x{}", b.len(), self.n, self.k)));
        }
        if let Some(i) = b.iter().position(|v| !v.is_finite()) {
            return Err(invalid("matmul", format!("B[{i}] = {} is not finite", b[i])));
        }
        Ok((0..self.inputs()).map(|t| b[self.packed(t)].to_vec()).collect())
    }

    /// Server side: the plaintext columns of `A` (`m x n`, row-major), per
    /// row block, at `level` and `scale`.
    pub fn encode_weights(&self, encoder: &Encoder, a: &[f64], level: usize, scale: f64) -> Result<Weights, NnError> {
        if a.len() != self.m * self.n {
            return Err(invalid("matmul", format!("A has {} values, expected {}x{}", a.len(), self.m, self.n)));
        }
        let columns = (0..self.row_blocks())
            .map(|block| {
                let rows = block * self.slots..((block + 1) * self.slots).min(self.m);
                (0..self.n)
                    .map(|j| {
                        let col: Vec<f64> = rows.clone().map(|r| a[r * self.n + j]).collect();
                        Ok(encoder.encode_real_slots(&col, self.slots, level, scale)?)
                    })
                    .collect::<Result<Vec<_>, NnError>>()
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(Weights { columns })
    }

    /// Galois elements of the expansion.
    pub fn galois_elements(&self, params: &Parameters) -> Vec<usize> {
        expansion_galois_elements(params)
    }

    /// Cost of one tile (levels: none; the output keeps the input level at
    /// scale `input scale * weight scale`).
    pub fn tile_cost(&self, params: &Parameters, tile: Tile) -> OpCost {
        let count = self.packed(tile.input).len();
        OpCost {
            levels: 0,
            rotations: expansion_key_switches(count),
            products: 0,
            bootstraps: 0,
            galois_elements: self.galois_elements(params).into_iter().collect(),
        }
    }

    /// Runs one tile: the partial outputs it touches, keyed by
    /// `(row block, column)`.
    pub fn run_tile(
        &self,
        engine: &Engine<'_>,
        tile: Tile,
        input: &Ciphertext,
        weights: &Weights,
    ) -> Result<Partial, NnError> {
        if input.encoding() != Encoding::Coefficients {
            return Err(invalid("matmul", "the encrypted operand must be coefficient-encoded"));
        }
        if tile.first_block >= tile.end_block || tile.end_block > weights.columns.len() {
            return Err(invalid(
                "matmul",
                format!("row blocks {}..{} of {}", tile.first_block, tile.end_block, weights.columns.len()),
            ));
        }
        let blocks = &weights.columns[tile.first_block..tile.end_block];
        if tile.input >= self.inputs() {
            return Err(invalid("matmul", format!("tile input {} out of {}", tile.input, self.inputs())));
        }
        let range = self.packed(tile.input);
        let first = range.start;
        let slots = Encoding::Slots(self.slots);
        let sink = |position: usize, ct: Ciphertext, factor: f64, acc: Option<Partial>| {
            let mut acc = acc.unwrap_or_default();
            let (j, l) = ((first + position) / self.k, (first + position) % self.k);
            // Every tile's output must share one scale (partials add up), so
            // a value emitted early (factor 2^d < N) is brought to N exactly.
            let n = engine.params().n() as f64;
            let ct = engine.eval.mul_integer(&ct, (n / factor) as i64);
            let mut scalar = engine.eval.with_encoding(&ct, slots)?;
            scalar.set_scale(ct.scale() * n)?;
            for (offset, columns) in blocks.iter().enumerate() {
                let term = engine.eval.mul_plain(&scalar, &columns[j])?;
                match acc.get_mut(&(tile.first_block + offset, l)) {
                    Some(sum) => engine.eval.add_assign(sum, &term)?,
                    None => {
                        acc.insert((tile.first_block + offset, l), term);
                    }
                }
            }
            Ok(acc)
        };
        let merge = |mut a: Partial, b: Partial| {
            for (key, ct) in b {
                match a.get_mut(&key) {
                    Some(sum) => engine.eval.add_assign(sum, &ct)?,
                    None => {
                        a.insert(key, ct);
                    }
                }
            }
            Ok(a)
        };
        expand(engine, input, range.len(), &sink, &merge)
    }

    /// Adds tile partials into the output: `[row_block][column]`.
    pub fn assemble(&self, engine: &Engine<'_>, partials: Vec<Partial>) -> Result<Vec<Vec<Ciphertext>>, NnError> {
        let mut out: Vec<Vec<Option<Ciphertext>>> = vec![vec![None; self.k]; self.row_blocks()];
        for partial in partials {
            for ((block, l), ct) in partial {
                let slot = out
                    .get_mut(block)
                    .and_then(|b| b.get_mut(l))
                    .ok_or_else(|| invalid("matmul", format!("partial for block {block} column {l} out of range")))?;
                match slot {
                    Some(sum) => engine.eval.add_assign(sum, &ct)?,
                    None => *slot = Some(ct),
                }
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(b, cols)| {
                cols.into_iter()
                    .enumerate()
                    .map(|(l, c)| c.ok_or_else(|| invalid("matmul", format!("no partial for block {b} column {l}"))))
                    .collect()
            })
            .collect()
    }

    /// Decoded output columns (`[row_block][column]` slot vectors) as
    /// `m x k` row-major.
    pub fn unpack(&self, columns: &[Vec<Vec<f64>>]) -> Result<Vec<f64>, NnError> {
        let mut c = vec![0.0; self.m * self.k];
        for (block, cols) in columns.iter().enumerate() {
            for (l, values) in cols.iter().enumerate() {
                for (i, v) in values.iter().enumerate().take(self.slots) {
                    let r = block * self.slots + i;
                    if r < self.m && l < self.k {
                        c[r * self.k + l] = *v;
                    }
                }
            }
        }
        Ok(c)
    }

    /// The f64 twin: the exact product (the method approximates nothing).
    pub fn plain(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; self.m * self.k];
        for r in 0..self.m {
            for j in 0..self.n {
                let x = a[r * self.n + j];
                for l in 0..self.k {
                    c[r * self.k + l] += x * b[j * self.k + l];
                }
            }
        }
        c
    }
}
