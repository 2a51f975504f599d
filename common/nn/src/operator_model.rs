//! Single-operator models the cluster serves: the operator benchmarks'
//! cases (docs/PERFORMANCE.md, "Operators") as one task per input
//! ciphertext, so the cost of distribution can be measured operator by
//! operator, and the same definitions on the worker, in the client and in
//! the benchmarks.

use crate::error::invalid;
use crate::{Engine, Gelu, LayerNorm, NnError, OpCost, RowLayout, Softmax};
use nexus_ckks::{Ciphertext, Parameters};

/// Names of the single-operator models.
pub const OPERATOR_MODELS: &[&str] = &["gelu", "layernorm", "softmax"];

/// Hidden size of the LayerNorm model's rows (BERT-base).
const LAYERNORM_ROW: usize = 768;
/// Row length of the Softmax model (attention scores over 128 tokens).
const SOFTMAX_ROW: usize = 128;

/// One operator applied to every slot row of a ciphertext.
#[derive(Clone, Debug)]
pub enum OperatorModel {
    /// GELU on every slot, inputs in [-8, 8] (BERT's default fit).
    Gelu(Gelu),
    /// LayerNorm over rows of 768 (gamma 1, beta 0, row variance in
    /// [0.25, 256]), up to 16 rows per ciphertext as in the benchmark.
    LayerNorm(LayerNorm),
    /// Softmax over rows of 128 with inputs in [-10, 0], up to 128 rows.
    Softmax(Box<Softmax>),
}

impl OperatorModel {
    /// The model called `name` for ciphertexts of `slots` slots; `None` if
    /// `name` is not a single-operator model.
    pub fn named(name: &str, slots: usize) -> Result<Option<Self>, NnError> {
        let rows = |row: usize, most: usize| {
            let fit = (slots / row.next_power_of_two()).min(most);
            if fit == 0 {
                Err(invalid("operator model", format!("{name}: a row of {row} does not fit {slots} slots")))
            } else {
                Ok(fit)
            }
        };
        Ok(Some(match name {
            "gelu" => Self::Gelu(Gelu::bert_default()?),
            "layernorm" => {
                let layout = RowLayout::new(rows(LAYERNORM_ROW, 16)?, LAYERNORM_ROW, slots)?;
                Self::LayerNorm(LayerNorm::new(
                    layout,
                    vec![1.0; LAYERNORM_ROW],
                    vec![0.0; LAYERNORM_ROW],
                    1e-12,
                    (0.25, 256.0),
                    1e-5,
                )?)
            }
            "softmax" => {
                let layout = RowLayout::new(rows(SOFTMAX_ROW, 128)?, SOFTMAX_ROW, slots)?;
                Self::Softmax(Box::new(Softmax::new(layout, -10.0, 0.0, 1e-5)?))
            }
            _ => return Ok(None),
        }))
    }

    /// Rotations its Galois keys must cover.
    pub fn rotations(&self) -> Vec<i64> {
        match self {
            Self::Gelu(_) => vec![],
            Self::LayerNorm(ln) => ln.layout().sum_rotations(),
            Self::Softmax(sm) => sm.layout().sum_rotations(),
        }
    }

    /// Levels, rotations and products of one application.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        match self {
            Self::Gelu(g) => g.cost(),
            Self::LayerNorm(ln) => ln.cost(params),
            Self::Softmax(sm) => sm.cost(params),
        }
    }

    /// Applies the operator to one ciphertext.
    pub fn apply(&self, engine: &Engine<'_>, ct: &Ciphertext) -> Result<Ciphertext, NnError> {
        match self {
            Self::Gelu(g) => g.apply(engine, ct),
            Self::LayerNorm(ln) => ln.apply(engine, ct),
            Self::Softmax(sm) => sm.apply(engine, ct),
        }
    }

    /// The f64 twin on a slot vector packed as [`apply`](Self::apply)
    /// expects (same approximations), for checking decrypted results.
    pub fn plain(&self, slots: &[f64]) -> Result<Vec<f64>, NnError> {
        match self {
            Self::Gelu(g) => g.plain(slots),
            Self::LayerNorm(ln) => ln.layout().pack(&ln.plain(&ln.layout().unpack(slots)?)?),
            Self::Softmax(sm) => sm.layout().pack(&sm.plain(&sm.layout().unpack(slots)?)?),
        }
    }

    /// The benchmark's input, varied by `k`, packed into `slots` slots:
    /// values in GELU's range, rows of spread-out values for LayerNorm
    /// (variance within its interval), rows in [-10, 0] for Softmax.
    pub fn sample(&self, slots: usize, k: usize) -> Result<Vec<f64>, NnError> {
        let wave = |i: usize| ((i + 7 * k) as f64 * 0.37).sin();
        match self {
            Self::Gelu(_) => Ok((0..slots).map(|i| 5.0 * wave(i)).collect()),
            Self::LayerNorm(ln) => {
                let l = ln.layout();
                let rows: Vec<Vec<f64>> = (0..l.rows())
                    .map(|r| (0..l.row_len()).map(|j| 8.0 * wave(r * l.row_len() + j)).collect())
                    .collect();
                l.pack(&rows)
            }
            Self::Softmax(sm) => {
                let l = sm.layout();
                let rows: Vec<Vec<f64>> = (0..l.rows())
                    .map(|r| (0..l.row_len()).map(|j| -5.0 + 5.0 * wave(r * l.row_len() + j)).collect())
                    .collect();
                l.pack(&rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_model_is_named_and_its_sample_is_in_range() {
        for &name in OPERATOR_MODELS {
            let model = OperatorModel::named(name, 1 << 15).unwrap().unwrap();
            let x = model.sample(1 << 15, 3).unwrap();
            assert_eq!(x.len(), 1 << 15);
            // The twin refuses inputs outside the declared ranges.
            let y = model.plain(&x).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{name}");
        }
        assert!(OperatorModel::named("mlp-demo", 1 << 15).unwrap().is_none());
        let err = OperatorModel::named("layernorm", 512).unwrap_err().to_string();
        assert!(err.contains("does not fit 512 slots"), "{err}");
    }
}
