//! Rotation-based product for slot-packed activations (middle layers):
//! `Y = X W` with `X` (`tokens x d_in`) encrypted row by row and `W`
//! (`d_in x d_out`) plaintext.
//!
//! Each token's row occupies a block of `P = next_pow2(max(d_in, d_out))`
//! slots, `slots / P` tokens per ciphertext. On those blocks `Y` is the
//! block-diagonal map `diag(W^T, W^T, ...)`, whose non-zero generalised
//! diagonals are the `2P - 1` offsets `k` with `|k| < P`; it is evaluated as
//! one [`LinearTransform`]: baby-step giant-step with hoisted baby
//! rotations, about `2 sqrt(2P)` key switches and `2P - 1` plaintext
//! products per ciphertext, one level. Ciphertexts are independent tiles.

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::circuits::LinearTransform;
use nexus_ckks::{Ciphertext, Complex64, Parameters};
use std::collections::BTreeMap;

/// A rotation-based product for one weight matrix.
#[derive(Clone, Debug)]
pub struct DiagonalMatMul {
    d_in: usize,
    d_out: usize,
    block: usize,
    slots: usize,
    transform: LinearTransform,
}

impl DiagonalMatMul {
    /// `w` is `d_in x d_out`, row-major.
    pub fn new(w: &[f64], d_in: usize, d_out: usize, slots: usize) -> Result<Self, NnError> {
        if d_in == 0 || d_out == 0 || w.len() != d_in * d_out {
            return Err(invalid("diagonal matmul", format!("W has {} values, shape {d_in}x{d_out}", w.len())));
        }
        let block = d_in.max(d_out).next_power_of_two();
        if block > slots || !slots.is_power_of_two() {
            return Err(invalid("diagonal matmul", format!("rows of {block} slots do not fit {slots} slots")));
        }
        // diag_k[j] = M[j][(j + k) mod slots] with M[b P + r][b P + c] = W[c][r].
        let mut diagonals: BTreeMap<usize, Vec<Complex64>> = BTreeMap::new();
        for offset in -(block as i64 - 1)..block as i64 {
            let k = offset.rem_euclid(slots as i64) as usize;
            let diag: Vec<Complex64> = (0..slots)
                .map(|j| {
                    let r = j % block;
                    let c = r as i64 + offset;
                    if (0..block as i64).contains(&c) && (c as usize) < d_in && r < d_out {
                        Complex64::new(w[c as usize * d_out + r], 0.0)
                    } else {
                        Complex64::new(0.0, 0.0)
                    }
                })
                .collect();
            if diag.iter().any(|v| v.re != 0.0) {
                diagonals.insert(k, diag);
            }
        }
        let transform = LinearTransform::from_diagonals(slots, diagonals)?;
        Ok(Self { d_in, d_out, block, slots, transform })
    }

    /// Tokens per ciphertext.
    pub fn tokens_per_ciphertext(&self) -> usize {
        self.slots / self.block
    }

    /// Client/planner side: token rows into slot vectors (one per
    /// ciphertext).
    pub fn pack(&self, x: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        if let Some(i) = x.iter().position(|r| r.len() != self.d_in) {
            return Err(invalid(
                "diagonal matmul",
                format!("token {i} has {} features, expected {}", x[i].len(), self.d_in),
            ));
        }
        Ok(x.chunks(self.tokens_per_ciphertext())
            .map(|chunk| {
                let mut v = vec![0.0; self.slots];
                for (t, row) in chunk.iter().enumerate() {
                    v[t * self.block..t * self.block + self.d_in].copy_from_slice(row);
                }
                v
            })
            .collect())
    }

    /// Output rows of one ciphertext's decoded slots.
    pub fn unpack(&self, slots: &[f64], tokens: usize) -> Vec<Vec<f64>> {
        (0..tokens.min(self.tokens_per_ciphertext()))
            .map(|t| slots[t * self.block..t * self.block + self.d_out].to_vec())
            .collect()
    }

    /// Galois elements of the transform.
    pub fn galois_elements(&self, params: &Parameters) -> Vec<usize> {
        self.transform.galois_elements(params)
    }

    /// Rotation steps of the transform.
    pub fn rotations(&self) -> Vec<i64> {
        self.transform.rotations()
    }

    /// Cost per ciphertext.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        OpCost {
            levels: 1,
            rotations: self.transform.rotation_count(),
            products: 0,
            bootstraps: 0,
            galois_elements: self.galois_elements(params).into_iter().collect(),
        }
    }

    /// Plaintext products per ciphertext (one per non-zero diagonal).
    pub fn plaintext_products(&self) -> usize {
        self.transform.diagonals().len()
    }

    /// Encrypted product of one ciphertext (scale kept, one level).
    pub fn apply(&self, engine: &Engine<'_>, ct: &Ciphertext) -> Result<Ciphertext, NnError> {
        Ok(self.transform.evaluate(engine.eval, engine.encoder, ct, engine.galois)?)
    }

    /// The f64 twin (exact product).
    pub fn plain(&self, x: &[Vec<f64>], w: &[f64]) -> Vec<Vec<f64>> {
        x.iter()
            .map(|row| (0..self.d_out).map(|o| (0..self.d_in).map(|i| row[i] * w[i * self.d_out + o]).sum()).collect())
            .collect()
    }
}
