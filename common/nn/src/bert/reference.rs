//! The plaintext f64 forward pass: the ground truth the encrypted model is
//! compared with, and the source of the value ranges its approximations
//! are fitted on (see [`LayerRanges`]).

use super::config::Pooling;
use super::weights::{BertWeights, Norm};
use crate::error::{invalid, NnError};
use crate::functions::gelu;

/// Smallest and largest value seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Default for Span {
    fn default() -> Self {
        Self { min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Span {
    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Span) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Largest absolute value.
    pub fn max_abs(&self) -> f64 {
        self.min.abs().max(self.max.abs())
    }
}

/// The values an encoder layer's non-linear pieces see: what their
/// approximations must cover.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerRanges {
    /// Attention scores `q.k / sqrt(d_head)`.
    pub scores: Span,
    /// Row variance (plus epsilon) entering the attention LayerNorm.
    pub attention_variance: Span,
    /// GELU inputs.
    pub gelu: Span,
    /// Row variance (plus epsilon) entering the feed-forward LayerNorm.
    pub ffn_variance: Span,
    /// Layer outputs.
    pub output: Span,
    /// Every other intermediate value (projections, context, residual sums,
    /// GELU outputs): what a bootstrap in between may see.
    pub activations: Span,
}

impl LayerRanges {
    /// Widens `self` to cover `other`.
    pub fn merge(&mut self, other: &LayerRanges) {
        self.scores.merge(&other.scores);
        self.attention_variance.merge(&other.attention_variance);
        self.gelu.merge(&other.gelu);
        self.ffn_variance.merge(&other.ffn_variance);
        self.output.merge(&other.output);
        self.activations.merge(&other.activations);
    }
}

/// Row-wise LayerNorm; records each row's variance + eps.
pub fn layer_norm(x: &[Vec<f64>], norm: &Norm, eps: f64, variance: &mut Span) -> Vec<Vec<f64>> {
    x.iter()
        .map(|row| {
            let d = row.len() as f64;
            let mean = row.iter().sum::<f64>() / d;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d + eps;
            variance.add(var);
            let inv = 1.0 / var.sqrt();
            row.iter().enumerate().map(|(j, v)| norm.gamma[j] * (v - mean) * inv + norm.beta[j]).collect()
        })
        .collect()
}

fn add_rows(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(u, v)| u + v).collect()).collect()
}

impl BertWeights {
    /// Client side, in plaintext: word + position + token-type (0)
    /// embeddings of `ids`, then the embedding LayerNorm.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<Vec<f64>>, NnError> {
        let c = &self.config;
        if ids.is_empty() || ids.len() > c.max_positions {
            return Err(invalid("embedding", format!("{} tokens: need 1..={}", ids.len(), c.max_positions)));
        }
        let d = c.hidden;
        let rows = ids
            .iter()
            .enumerate()
            .map(|(pos, &id)| {
                let id = id as usize;
                if id >= c.vocab {
                    return Err(invalid(
                        "embedding",
                        format!("token id {id} at position {pos} >= vocabulary {}", c.vocab),
                    ));
                }
                Ok((0..d).map(|j| self.word[id * d + j] + self.position[pos * d + j] + self.token_type[j]).collect())
            })
            .collect::<Result<Vec<Vec<f64>>, NnError>>()?;
        Ok(layer_norm(&rows, &self.embedding_norm, c.layer_norm_eps, &mut Span::default()))
    }

    /// Encoder layer `index` on token rows `x` (every token attends to
    /// every token), recording the ranges its pieces see.
    pub fn layer(&self, index: usize, x: &[Vec<f64>], ranges: &mut LayerRanges) -> Result<Vec<Vec<f64>>, NnError> {
        let c = &self.config;
        let w = self.layers.get(index).ok_or_else(|| invalid("model", format!("no layer {index}")))?;
        let (q, k, v) = (w.query.apply(x), w.key.apply(x), w.value.apply(x));
        let mut seen = |m: &[Vec<f64>]| m.iter().flatten().for_each(|&v| ranges.activations.add(v));
        seen(&q);
        seen(&k);
        seen(&v);
        let dh = c.head_dim();
        let scale = 1.0 / (dh as f64).sqrt();
        let mut context = vec![vec![0.0; c.hidden]; x.len()];
        for h in 0..c.heads {
            let cols = h * dh..(h + 1) * dh;
            for (i, qi) in q.iter().enumerate() {
                let scores: Vec<f64> = k
                    .iter()
                    .map(|kj| qi[cols.clone()].iter().zip(&kj[cols.clone()]).map(|(a, b)| a * b).sum::<f64>() * scale)
                    .collect();
                scores.iter().for_each(|&s| ranges.scores.add(s));
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, vj) in v.iter().enumerate() {
                    for col in cols.clone() {
                        context[i][col] += e[j] / sum * vj[col];
                    }
                }
            }
        }
        let projected = w.attention_out.apply(&context);
        let attended = add_rows(&projected, x);
        for m in [&context, &projected, &attended] {
            m.iter().flatten().for_each(|&v| ranges.activations.add(v));
        }
        let x1 = layer_norm(&attended, &w.attention_norm, c.layer_norm_eps, &mut ranges.attention_variance);
        let hidden = w.ffn_in.apply(&x1);
        hidden.iter().flatten().for_each(|&h| ranges.gelu.add(h));
        let activated: Vec<Vec<f64>> = hidden.iter().map(|r| r.iter().map(|&h| gelu(h)).collect()).collect();
        let contracted = w.ffn_out.apply(&activated);
        let out = add_rows(&contracted, &x1);
        for m in [&activated, &contracted, &out] {
            m.iter().flatten().for_each(|&v| ranges.activations.add(v));
        }
        let y = layer_norm(&out, &w.ffn_norm, c.layer_norm_eps, &mut ranges.ffn_variance);
        y.iter().flatten().for_each(|&v| ranges.output.add(v));
        Ok(y)
    }

    /// Token outputs of the whole encoder, and each layer's ranges.
    pub fn encode(&self, ids: &[u32]) -> Result<(Vec<Vec<f64>>, Vec<LayerRanges>), NnError> {
        let mut x = self.embed(ids)?;
        let mut ranges = vec![LayerRanges::default(); self.config.layers];
        for (i, r) in ranges.iter_mut().enumerate() {
            x = self.layer(i, &x, r)?;
        }
        Ok((x, ranges))
    }

    /// The sentence vector of token outputs: pooling, then L2
    /// normalisation where the model asks for it.
    pub fn pool(&self, tokens: &[Vec<f64>]) -> Vec<f64> {
        let d = self.config.hidden;
        let mut v = match self.config.pooling {
            Pooling::Cls => tokens.first().cloned().unwrap_or_else(|| vec![0.0; d]),
            Pooling::Mean => {
                let n = tokens.len().max(1) as f64;
                (0..d).map(|j| tokens.iter().map(|t| t[j]).sum::<f64>() / n).collect()
            }
        };
        if self.config.normalize {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// The plaintext sentence embedding of `ids`.
    pub fn sentence_embedding(&self, ids: &[u32]) -> Result<Vec<f64>, NnError> {
        Ok(self.pool(&self.encode(ids)?.0))
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-300)
}
