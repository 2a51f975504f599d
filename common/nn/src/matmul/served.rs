//! The compressed-input product the cluster serves as the model `matmul`:
//! the operator benchmark's case (`A`, 4096 x 768, uniform in [-1, 1]
//! from ChaCha8 seeded with 1, as `examples/bench.rs --case matmul` draws
//! it; `B`, 768 x 64, encrypted by the client). One task per tile (the
//! default tiling: one per input ciphertext) returns its partial outputs;
//! one task adds them up.

use super::compressed::{CompressedMatMul, Partial, Tile, Weights};
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::{Ciphertext, Encoder, Parameters};
use rand::{Rng, SeedableRng};

/// The model's name.
pub const MATMUL_MODEL: &str = "matmul";

/// `(m, n, k)`: `A` is `m x n`, `B` is `n x k`.
pub const MATMUL_SHAPE: (usize, usize, usize) = (4096, 768, 64);

/// Scale of the encoded weights (as in the benchmark).
const WEIGHT_SCALE: f64 = 1073741824.0; // 2^30

/// Most bytes the encoded weights may take (at `N = 2^16` and twenty
/// limbs they would be about 8 GB: serve the product at smaller rings).
const MAX_WEIGHT_BYTES: usize = 1 << 30;

/// The served product and its plaintext operand.
#[derive(Clone, Debug)]
pub struct MatMulModel {
    product: CompressedMatMul,
    a: Vec<f64>,
    ring_degree: usize,
}

impl MatMulModel {
    /// The product for ciphertexts of `params`.
    pub fn new(params: &Parameters) -> Result<Self, NnError> {
        let (m, n, k) = MATMUL_SHAPE;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let a = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        Ok(Self { product: CompressedMatMul::new(params, m, n, k)?, a, ring_degree: params.n() })
    }

    /// The product's shape and packing.
    pub fn product(&self) -> &CompressedMatMul {
        &self.product
    }

    /// `A`, row-major.
    pub fn a(&self) -> &[f64] {
        &self.a
    }

    /// `A`'s columns encoded for inputs at `level`; refused where they
    /// would take more than a gigabyte.
    pub fn weights(&self, encoder: &Encoder, level: usize) -> Result<Weights, NnError> {
        let (_, n, _) = MATMUL_SHAPE;
        let plaintexts = self.product.row_blocks() * n;
        let bytes = plaintexts.saturating_mul(level + 1).saturating_mul(self.ring_degree).saturating_mul(8);
        if bytes > MAX_WEIGHT_BYTES {
            return Err(invalid(
                "matmul",
                format!(
                    "{plaintexts} weight plaintexts at level {level} of N = {} would take {:.1} GB (at most {:.1} GB): \
                     use a smaller ring or a lower level",
                    self.ring_degree,
                    bytes as f64 / 1e9,
                    MAX_WEIGHT_BYTES as f64 / 1e9
                ),
            ));
        }
        self.product.encode_weights(encoder, &self.a, level, WEIGHT_SCALE)
    }

    /// The default tile of input ciphertext `input`.
    pub fn tile(&self, input: usize) -> Result<Tile, NnError> {
        self.product.tiles().get(input).copied().ok_or_else(|| {
            invalid("matmul", format!("input {input} of a product with {} inputs", self.product.inputs()))
        })
    }

    /// One tile's partial outputs, in [`CompressedMatMul::partial_keys`]
    /// order.
    pub fn run_tile(
        &self,
        engine: &Engine<'_>,
        weights: &Weights,
        tile: Tile,
        input: &Ciphertext,
    ) -> Result<Vec<Ciphertext>, NnError> {
        Ok(self.product.run_tile(engine, tile, input, weights)?.into_values().collect())
    }

    /// The product from every default tile's partial outputs, concatenated
    /// in tile order: the output ciphertexts, row block by row block, each
    /// block's columns in order.
    pub fn assemble(&self, engine: &Engine<'_>, partials: Vec<Ciphertext>) -> Result<Vec<Ciphertext>, NnError> {
        let tiles = self.product.tiles();
        let expected: usize = tiles.iter().map(|t| self.product.partial_keys(*t).len()).sum();
        if partials.len() != expected {
            return Err(invalid(
                "matmul",
                format!("{} partial outputs, expected {expected} from {} tiles", partials.len(), tiles.len()),
            ));
        }
        let mut values = partials.into_iter();
        let maps: Vec<Partial> =
            tiles.iter().map(|t| self.product.partial_keys(*t).into_iter().zip(values.by_ref()).collect()).collect();
        Ok(self.product.assemble(engine, maps)?.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn tiles_cover_every_output_once_and_a_wrong_partial_count_is_refused() {
        let params = Parameters::preset("INSECURE_N12_QP1121_H32_BOOT_TEST").unwrap();
        let model = MatMulModel::new(&params).unwrap();
        let mm = model.product();
        let (m, _, k) = MATMUL_SHAPE;
        // Every (row block, column) of the output is touched, each key at
        // most once per tile.
        let mut all = BTreeSet::new();
        for tile in mm.tiles() {
            let keys = mm.partial_keys(tile);
            let unique: BTreeSet<_> = keys.iter().copied().collect();
            assert_eq!(unique.len(), keys.len());
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys in map order");
            all.extend(unique);
        }
        assert_eq!(all.len(), m.div_ceil(params.max_slots()) * k);
        assert!(model.tile(mm.inputs()).is_err());
        let eval = nexus_ckks::Evaluator::new(&params);
        let encoder = Encoder::new(&params);
        let mut kg = nexus_ckks::KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let rlk = kg.relin_key(&sk);
        let galois = kg.galois_keys_for_elements(&sk, &[]).unwrap();
        let engine = Engine { eval: &eval, encoder: &encoder, rlk: &rlk, galois: &galois };
        let err = model.assemble(&engine, vec![]).unwrap_err().to_string();
        assert!(err.contains("0 partial outputs, expected"), "{err}");
        // Two row blocks of 768 plaintexts of 2^12 coefficients: 50 MB a
        // limb.
        assert!(model.weights(&encoder, 1).is_ok());
        let err = model.weights(&encoder, 30).unwrap_err().to_string();
        assert!(err.contains("1536 weight plaintexts at level 30 of N = 4096 would take 1.6 GB"), "{err}");
    }
}
