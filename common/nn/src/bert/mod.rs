//! BERT-family encoders: configuration and weights from Hugging Face files,
//! the plaintext f64 reference forward pass and, with the `tokenizer`
//! feature, text to token ids.

pub mod attention;
pub mod config;
pub mod encrypted;
pub mod files;
pub mod head;
pub mod lockstep;
pub mod packed;
pub mod reference;
pub mod served;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;
pub mod weights;

pub use config::{BertConfig, Pooling};
pub use files::ModelFiles;
pub use reference::{cosine, LayerRanges, Span};
#[cfg(feature = "tokenizer")]
pub use served::ModelSource;
pub use served::{CalibratedHead, ServedBert};
#[cfg(feature = "tokenizer")]
pub use tokenizer::TextTokenizer;
pub use weights::{BertWeights, LayerWeights, Linear, Norm};

impl BertConfig {
    /// The test encoder of the end-to-end tests: BERT's architecture at
    /// toy size (2 layers, hidden 32, 4 heads, FFN 64, 64 ids).
    pub fn tiny() -> Self {
        Self {
            layers: 2,
            hidden: 32,
            heads: 4,
            intermediate: 64,
            vocab: 64,
            max_positions: 16,
            type_vocab: 2,
            layer_norm_eps: 1e-12,
            pooling: Pooling::Mean,
            normalize: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_named_errors() {
        let weights = BertWeights::random(BertConfig::tiny(), 7).unwrap();
        let bytes = weights.to_safetensors().unwrap();
        let back = BertWeights::from_safetensors(BertConfig::tiny(), &bytes).unwrap();
        // f32 on disk: equal up to f32 rounding.
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1.0));
        assert!(close(&weights.word, &back.word));
        assert!(close(&weights.layers[1].ffn_out.w, &back.layers[1].ffn_out.w));
        assert!(close(&weights.layers[0].key.bias, &back.layers[0].key.bias));

        let mut wider = BertConfig::tiny();
        wider.intermediate = 128;
        let err = BertWeights::from_safetensors(wider, &bytes).unwrap_err().to_string();
        assert!(err.contains("encoder.layer.0.intermediate.dense.weight") && err.contains("[64, 32]"), "{err}");
        let mut deeper = BertConfig::tiny();
        deeper.layers = 3;
        let err = BertWeights::from_safetensors(deeper, &bytes).unwrap_err().to_string();
        assert!(err.contains("encoder.layer.2.attention.self.query.weight is missing"), "{err}");
        let err = BertWeights::from_safetensors(BertConfig::tiny(), &bytes[..100]).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
    }

    #[test]
    fn reference_forward_pass_is_consistent() {
        let weights = BertWeights::random(BertConfig::tiny(), 3).unwrap();
        let ids = [1u32, 17, 42, 5, 2];
        let (tokens, ranges) = weights.encode(&ids).unwrap();
        assert_eq!((tokens.len(), tokens[0].len()), (5, 32));
        // Every layer ends in a LayerNorm: each row has mean beta-mean and a
        // spread set by gamma; all finite, ranges recorded.
        assert!(tokens.iter().flatten().all(|v| v.is_finite()));
        assert!(ranges.iter().all(|r| r.scores.max.is_finite() && r.gelu.min < r.gelu.max));
        let e = weights.sentence_embedding(&ids).unwrap();
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-12);
        // Attention mixes tokens: changing one token changes another's output.
        let (other, _) = weights.encode(&[1, 17, 43, 5, 2]).unwrap();
        assert!(cosine(&tokens[0], &other[0]) < 1.0 - 1e-9);
        assert!(weights.embed(&[64]).unwrap_err().to_string().contains("token id 64"));
        assert!(weights.embed(&[]).is_err());
    }

    #[test]
    fn inputs_outside_the_calibrated_ranges_are_named() {
        let weights = BertWeights::random(BertConfig::tiny(), 5).unwrap();
        let inputs: Vec<Vec<u32>> = (0..8).map(|i| (0..6).map(|j| (i * 7 + j * 3) % 64).collect()).collect();
        let plan = encrypted::EncoderPlan::calibrate(&weights, &inputs, 1.2).unwrap();
        let (_, seen) = weights.encode(&inputs[3]).unwrap();
        assert!(plan.violations(&seen).is_empty());
        let mut sharper = weights.clone();
        sharper.layers[1].query.w.iter_mut().for_each(|w| *w *= 10.0);
        let (_, seen) = sharper.encode(&inputs[3]).unwrap();
        let v = plan.violations(&seen);
        assert!(v.iter().any(|l| l.starts_with("layer 1: attention scores")), "{v:?}");
    }
}
