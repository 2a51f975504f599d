//! Encoder weights from safetensors, with the usual Hugging Face tensor
//! names (`embeddings.*`, `encoder.layer.{i}.*`, optionally under `bert.`).
//! Linear layers are stored transposed (`d_in x d_out`, row-major) so that
//! `y = x W + b` reads rows of `x` against columns of `W`.

use super::config::BertConfig;
use super::files::ModelFiles;
use crate::error::{invalid, NnError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// The weights' file in a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// `y = x W + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// `d_in x d_out`, row-major.
    pub w: Vec<f64>,
    /// `d_out` biases.
    pub bias: Vec<f64>,
}

impl Linear {
    /// `x W + b` for every row of `x`.
    pub fn apply(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        x.iter()
            .map(|row| {
                let mut y = self.bias.clone();
                for (i, &xi) in row.iter().enumerate() {
                    let w = &self.w[i * self.d_out..(i + 1) * self.d_out];
                    y.iter_mut().zip(w).for_each(|(y, w)| *y += xi * w);
                }
                y
            })
            .collect()
    }
}

/// LayerNorm weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    /// Scale.
    pub gamma: Vec<f64>,
    /// Shift.
    pub beta: Vec<f64>,
}

/// One encoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub attention_out: Linear,
    /// LayerNorm after attention and residual.
    pub attention_norm: Norm,
    /// Feed-forward expansion.
    pub ffn_in: Linear,
    /// Feed-forward contraction.
    pub ffn_out: Linear,
    /// LayerNorm after the feed-forward block and residual.
    pub ffn_norm: Norm,
}

/// The whole encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct BertWeights {
    /// Its shape.
    pub config: BertConfig,
    /// `vocab x hidden`.
    pub word: Vec<f64>,
    /// `max_positions x hidden`.
    pub position: Vec<f64>,
    /// `type_vocab x hidden`.
    pub token_type: Vec<f64>,
    /// Embedding LayerNorm.
    pub embedding_norm: Norm,
    /// Encoder layers.
    pub layers: Vec<LayerWeights>,
}

struct Tensors<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl Tensors<'_> {
    /// The tensor `name` as f64, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>, NnError> {
        let full = format!("{}{name}", self.prefix);
        let view = self.st.tensor(&full).map_err(|_| invalid("model weights", format!("tensor {full} is missing")))?;
        if view.shape() != shape {
            return Err(invalid(
                "model weights",
                format!("tensor {full} has shape {:?}, expected {shape:?}", view.shape()),
            ));
        }
        to_f64(&full, &view)
    }

    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear, NnError> {
        // Stored as PyTorch does: `d_out x d_in`.
        let w = self.get(&format!("{name}.weight"), &[d_out, d_in])?;
        let bias = self.get(&format!("{name}.bias"), &[d_out])?;
        let mut t = vec![0.0; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        Ok(Linear { d_in, d_out, w: t, bias })
    }

    fn norm(&self, name: &str, d: usize) -> Result<Norm, NnError> {
        Ok(Norm { gamma: self.get(&format!("{name}.weight"), &[d])?, beta: self.get(&format!("{name}.bias"), &[d])? })
    }
}

pub(crate) fn to_f64(name: &str, view: &TensorView<'_>) -> Result<Vec<f64>, NnError> {
    let data = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect(),
        Dtype::F64 => {
            data.chunks_exact(8).map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])).collect()
        }
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64)
            .collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half_to_f64(u16::from_le_bytes([b[0], b[1]]))).collect(),
        other => {
            return Err(invalid("model weights", format!("tensor {name} has dtype {other:?}, expected a float type")))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid("model weights", format!("tensor {name} holds a non-finite value at index {i}")));
    }
    Ok(values)
}

/// IEEE binary16 to f64.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = (h >> 10 & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

impl BertWeights {
    /// Parses safetensors bytes for `config`; errors name the missing,
    /// mis-shaped or mis-typed tensor.
    pub fn from_safetensors(config: BertConfig, bytes: &[u8]) -> Result<Self, NnError> {
        config.validate()?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| invalid("model weights", format!("not a safetensors file: {e}")))?;
        let prefix = if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() { "bert." } else { "" };
        let t = Tensors { st, prefix };
        let (d, f) = (config.hidden, config.intermediate);
        let layers = (0..config.layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(LayerWeights {
                    query: t.linear(&format!("{p}.attention.self.query"), d, d)?,
                    key: t.linear(&format!("{p}.attention.self.key"), d, d)?,
                    value: t.linear(&format!("{p}.attention.self.value"), d, d)?,
                    attention_out: t.linear(&format!("{p}.attention.output.dense"), d, d)?,
                    attention_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), d)?,
                    ffn_in: t.linear(&format!("{p}.intermediate.dense"), d, f)?,
                    ffn_out: t.linear(&format!("{p}.output.dense"), f, d)?,
                    ffn_norm: t.norm(&format!("{p}.output.LayerNorm"), d)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(Self {
            word: t.get("embeddings.word_embeddings.weight", &[config.vocab, d])?,
            position: t.get("embeddings.position_embeddings.weight", &[config.max_positions, d])?,
            token_type: t.get("embeddings.token_type_embeddings.weight", &[config.type_vocab, d])?,
            embedding_norm: t.norm("embeddings.LayerNorm", d)?,
            layers,
            config,
        })
    }

    /// Loads `dir/config.json` (+ pooling files) and `dir/model.safetensors`.
    pub fn from_dir(dir: &Path) -> Result<Self, NnError> {
        Self::from_files(&mut ModelFiles::new(dir))
    }

    /// [`from_dir`](Self::from_dir) through `files` (which digests them).
    pub fn from_files(files: &mut ModelFiles) -> Result<Self, NnError> {
        let config = BertConfig::from_files(files)?;
        Self::from_safetensors(config, &files.read(WEIGHTS_FILE)?)
    }

    /// A randomly initialised encoder of `config`'s shape (deterministic in
    /// `seed`), scaled so activations stay of order one: for tests and
    /// benchmarks that need no download.
    pub fn random(config: BertConfig, seed: u64) -> Result<Self, NnError> {
        config.validate()?;
        let mut stream = seed;
        let mut draw = |count: usize, scale: f64| {
            stream = stream.wrapping_add(0x9e37_79b9_7f4a_7c15);
            crate::model::lcg_uniform(count, stream, scale)
        };
        let (d, f) = (config.hidden, config.intermediate);
        let mut linear = |d_in: usize, d_out: usize| Linear {
            d_in,
            d_out,
            w: draw(d_in * d_out, 1.0 / (d_in as f64).sqrt()),
            bias: draw(d_out, 0.1),
        };
        let layers: Vec<(Linear, Linear, Linear, Linear, Linear, Linear)> = (0..config.layers)
            .map(|_| (linear(d, d), linear(d, d), linear(d, d), linear(d, d), linear(d, f), linear(f, d)))
            .collect();
        let mut norm = || Norm { gamma: draw(d, 0.2).into_iter().map(|g| 1.0 + g).collect(), beta: draw(d, 0.1) };
        let layers = layers
            .into_iter()
            .map(|(query, key, value, attention_out, ffn_in, ffn_out)| LayerWeights {
                query,
                key,
                value,
                attention_out,
                attention_norm: norm(),
                ffn_in,
                ffn_out,
                ffn_norm: norm(),
            })
            .collect();
        let embedding_norm = norm();
        Ok(Self {
            word: draw(config.vocab * d, 1.0),
            position: draw(config.max_positions * d, 0.5),
            token_type: draw(config.type_vocab * d, 0.1),
            embedding_norm,
            layers,
            config,
        })
    }

    /// The weights as safetensors bytes (F32, Hugging Face names): what
    /// [`from_safetensors`](Self::from_safetensors) reads.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, NnError> {
        let mut out = TensorWriter::default();
        let c = &self.config;
        out.put("embeddings.word_embeddings.weight", vec![c.vocab, c.hidden], &self.word);
        out.put("embeddings.position_embeddings.weight", vec![c.max_positions, c.hidden], &self.position);
        out.put("embeddings.token_type_embeddings.weight", vec![c.type_vocab, c.hidden], &self.token_type);
        out.norm("embeddings.LayerNorm", &self.embedding_norm);
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{i}");
            out.linear(&format!("{p}.attention.self.query"), &l.query);
            out.linear(&format!("{p}.attention.self.key"), &l.key);
            out.linear(&format!("{p}.attention.self.value"), &l.value);
            out.linear(&format!("{p}.attention.output.dense"), &l.attention_out);
            out.norm(&format!("{p}.attention.output.LayerNorm"), &l.attention_norm);
            out.linear(&format!("{p}.intermediate.dense"), &l.ffn_in);
            out.linear(&format!("{p}.output.dense"), &l.ffn_out);
            out.norm(&format!("{p}.output.LayerNorm"), &l.ffn_norm);
        }
        out.finish("model weights")
    }
}

/// F32 tensors with Hugging Face names and layouts.
#[derive(Default)]
pub(crate) struct TensorWriter {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl TensorWriter {
    /// The safetensors bytes; errors name `what` is written.
    pub(crate) fn finish(self, what: &'static str) -> Result<Vec<u8>, NnError> {
        self.finish_with(what, None)
    }

    /// [`finish`](Self::finish) with the header's free-form metadata.
    pub(crate) fn finish_with(
        self,
        what: &'static str,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Vec<u8>, NnError> {
        let views = self
            .tensors
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| invalid(what, format!("tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        safetensors::serialize(views, metadata).map_err(|e| invalid(what, format!("serialising: {e}")))
    }

    pub(crate) fn put(&mut self, name: &str, shape: Vec<usize>, values: &[f64]) {
        let bytes = values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        self.tensors.push((name.to_string(), shape, bytes));
    }

    fn norm(&mut self, name: &str, n: &Norm) {
        self.put(&format!("{name}.weight"), vec![n.gamma.len()], &n.gamma);
        self.put(&format!("{name}.bias"), vec![n.beta.len()], &n.beta);
    }

    /// PyTorch stores `d_out x d_in`.
    fn linear(&mut self, name: &str, l: &Linear) {
        let mut w = vec![0.0; l.d_in * l.d_out];
        for i in 0..l.d_in {
            for o in 0..l.d_out {
                w[o * l.d_in + i] = l.w[i * l.d_out + o];
            }
        }
        self.put(&format!("{name}.weight"), vec![l.d_out, l.d_in], &w);
        self.put(&format!("{name}.bias"), vec![l.d_out], &l.bias);
    }
}
