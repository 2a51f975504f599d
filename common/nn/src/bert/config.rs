//! The encoder's shape, read from a Hugging Face `config.json` (and the
//! sentence-transformers pooling files beside it).

use super::files::{text, ModelFiles};
use crate::error::{invalid, NnError};
use serde::Deserialize;
use std::path::Path;

/// The Hugging Face model configuration.
pub const CONFIG_FILE: &str = "config.json";
/// Sentence-transformers' modules (a `Normalize` one normalises).
pub const MODULES_FILE: &str = "modules.json";
/// Sentence-transformers' pooling configuration.
pub const POOLING_FILE: &str = "1_Pooling/config.json";

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unmasked) tokens.
    Mean,
    /// The first token's vector ([CLS]).
    Cls,
}

/// A BERT-family encoder's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Encoder layers.
    pub layers: usize,
    /// Hidden size `d`.
    pub hidden: usize,
    /// Attention heads (`hidden` is a multiple).
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Position embeddings.
    pub max_positions: usize,
    /// Token-type embeddings.
    pub type_vocab: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Sentence pooling.
    pub pooling: Pooling,
    /// Whether the sentence vector is L2-normalised.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct HfConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

impl BertConfig {
    /// Parses a `config.json`; pooling defaults to mean, no normalisation.
    pub fn from_json(text: &str) -> Result<Self, NnError> {
        let hf: HfConfig =
            serde_json::from_str(text).map_err(|e| invalid("model config", format!("config.json: {e}")))?;
        if hf.hidden_act != "gelu" {
            return Err(invalid(
                "model config",
                format!("hidden_act {:?}: only \"gelu\" (erf) is supported", hf.hidden_act),
            ));
        }
        if let Some(p) = hf.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
            return Err(invalid("model config", format!("position_embedding_type {p:?}: only \"absolute\"")));
        }
        let config = Self {
            layers: hf.num_hidden_layers,
            hidden: hf.hidden_size,
            heads: hf.num_attention_heads,
            intermediate: hf.intermediate_size,
            vocab: hf.vocab_size,
            max_positions: hf.max_position_embeddings,
            type_vocab: hf.type_vocab_size,
            layer_norm_eps: hf.layer_norm_eps,
            pooling: Pooling::Mean,
            normalize: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads `dir/config.json`, and the sentence-transformers files
    /// (`modules.json`, `1_Pooling/config.json`) where present.
    pub fn from_dir(dir: &Path) -> Result<Self, NnError> {
        Self::from_files(&mut ModelFiles::new(dir))
    }

    /// [`from_dir`](Self::from_dir) through `files` (which digests them).
    pub fn from_files(files: &mut ModelFiles) -> Result<Self, NnError> {
        let mut config = Self::from_json(&text(files.read(CONFIG_FILE)?, &files.shown(CONFIG_FILE))?)?;
        if let Some(bytes) = files.read_optional(MODULES_FILE)? {
            let shown = files.shown(MODULES_FILE);
            let modules: Vec<Module> = serde_json::from_str(&text(bytes, &shown)?)
                .map_err(|e| invalid("model config", format!("{shown}: {e}")))?;
            config.normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        }
        if let Some(bytes) = files.read_optional(POOLING_FILE)? {
            let shown = files.shown(POOLING_FILE);
            let p: PoolingConfig = serde_json::from_str(&text(bytes, &shown)?)
                .map_err(|e| invalid("model config", format!("{shown}: {e}")))?;
            config.pooling = match (p.pooling_mode_mean_tokens, p.pooling_mode_cls_token) {
                (true, false) => Pooling::Mean,
                (false, true) => Pooling::Cls,
                _ => {
                    return Err(invalid(
                        "model config",
                        format!("{shown}: exactly one of mean or CLS pooling is supported"),
                    ))
                }
            };
        }
        Ok(config)
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Refuses shapes no encoder has.
    pub fn validate(&self) -> Result<(), NnError> {
        let positive = [
            ("num_hidden_layers", self.layers),
            ("hidden_size", self.hidden),
            ("num_attention_heads", self.heads),
            ("intermediate_size", self.intermediate),
            ("vocab_size", self.vocab),
            ("max_position_embeddings", self.max_positions),
            ("type_vocab_size", self.type_vocab),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0 || *v > 1 << 20) {
            return Err(invalid("model config", format!("{name} must be in 1..=2^20")));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(invalid(
                "model config",
                format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden, self.heads),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(invalid("model config", format!("layer_norm_eps {} must be in (0, 1)", self.layer_norm_eps)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"hidden_act": "gelu", "hidden_size": 384, "intermediate_size": 1536,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": 12, "num_hidden_layers": 6, "type_vocab_size": 2, "vocab_size": 30522}"#;

    #[test]
    fn parses_a_bert_config_and_refuses_bad_shapes() {
        let c = BertConfig::from_json(MINILM).unwrap();
        assert_eq!((c.layers, c.hidden, c.heads, c.head_dim(), c.intermediate), (6, 384, 12, 32, 1536));
        let bad = MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7");
        assert!(BertConfig::from_json(&bad).unwrap_err().to_string().contains("not a multiple"));
        let relu = MINILM.replace("\"gelu\"", "\"relu\"");
        assert!(BertConfig::from_json(&relu).unwrap_err().to_string().contains("relu"));
        let missing = MINILM.replace("\"hidden_size\": 384,", "");
        assert!(BertConfig::from_json(&missing).unwrap_err().to_string().contains("hidden_size"));
    }
}
