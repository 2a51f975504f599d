//! The client's side of a BERT-family encoder on the cluster: evaluation
//! keys (the bootstrapping rotations and the encoder's, for one token
//! block), a sentence tokenized, embedded, packed and encrypted, and the
//! decrypted sentence embedding, and with a zero-shot head the class its
//! encrypted one-hot mask picks. The workers run every layer, the pooling
//! and the head (`bert:NAME:LAYERS:TOKENS:BLOCK[:LABELS]` queries).

use nexus_ckks::bootstrapping::BootstrapConfig;
use nexus_ckks::{GaloisKeys, KeyGenerator, Parameters, SecretKey};
use nexus_nn::bert::{CalibratedHead, ServedBert, TextTokenizer};
use nexus_nn::KeySet;
use nexus_proto::models::BertModelId;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A model directory as the client uses it.
#[derive(Debug)]
pub struct ClientEncoder {
    name: String,
    served: ServedBert,
    tokenizer: TextTokenizer,
    block: usize,
    /// Level inputs are encrypted at (a bootstrap's output level).
    level: usize,
}

/// The bootstrapping configuration of a preset, or an error saying the
/// preset has none.
fn boot_config(preset: &str) -> Result<BootstrapConfig, BoxError> {
    BootstrapConfig::for_preset(preset).ok_or_else(|| {
        format!("preset {preset} has no bootstrapping configuration: BERT models need one (N16_QP1545_H192)").into()
    })
}

impl ClientEncoder {
    /// Loads `dir` (config.json, model.safetensors, tokenizer.json) for
    /// sentences of up to `max_tokens` tokens, running its first `layers`
    /// layers (all: `None`), at `preset`.
    pub fn load(
        dir: &Path,
        layers: Option<usize>,
        max_tokens: usize,
        preset: &str,
        params: &Parameters,
    ) -> Result<Self, BoxError> {
        let name = dir
            .canonicalize()
            .map_err(|e| format!("model directory {}: {e}", dir.display()))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("model directory {} has no name", dir.display()))?;
        let config = boot_config(preset)?;
        let level = params.max_level().checked_sub(config.depth()).ok_or("bootstrapping uses every level")?;
        let all = nexus_nn::bert::BertConfig::from_dir(dir)?.layers;
        let layers = layers.unwrap_or(all);
        let block = max_tokens.next_power_of_two();
        // Checks the name, layers and block the way the coordinator will.
        BertModelId::new(&name, layers, 2.min(block), block)?;
        // Same depth per stage as the workers plan with (one of a
        // bootstrap's output levels kept for scaling before the next).
        let served = ServedBert::load(dir, layers, level.saturating_sub(1))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        Ok(Self { name, served, tokenizer, block, level })
    }

    /// Evaluation keys: the bootstrapping set and the encoder's rotations
    /// for this block (at the level computations start at); with `head`,
    /// also a zero-shot head's (every power of two below the slot count:
    /// its logits sum over all slots, its Argmax's rounds rotate by powers
    /// of two, for any number of labels up to the limit).
    pub fn generate_keys(
        &self,
        preset: &str,
        params: &Parameters,
        kg: &mut KeyGenerator,
        sk: &SecretKey,
        head: bool,
    ) -> Result<KeySet, BoxError> {
        // Lean keys (no uniform halves in memory): the wire carries only
        // their seeds anyway and the client never evaluates with them, so
        // the set costs half the memory (5 GB instead of 10 at N = 2^16).
        let keys = boot_config(preset)?.generate_lean_keys(params, kg, sk)?;
        let mut galois: GaloisKeys = keys.galois;
        let circuit = self.served.encoder(self.block, self.block, params.max_slots())?;
        let mut elements = circuit.galois_elements(params)?;
        if head {
            let steps = (0..params.max_slots().trailing_zeros()).map(|m| 1i64 << m);
            elements.extend(steps.map(|s| params.galois_element_for_rotation(s)));
        }
        for g in elements {
            // A bootstrapping key of the same element serves both.
            if galois.get(g).is_err() {
                galois.insert(kg.galois_key(sk, g)?.restricted_to_level(params, self.level).lean());
            }
        }
        Ok(KeySet::new(params.clone(), keys.relin, galois))
    }

    /// The query's model id and the slot vector of `text`'s embedded
    /// tokens (truncated to the block); with `labels`, the id asks for
    /// their zero-shot head too.
    pub fn pack(
        &self,
        text: &str,
        params: &Parameters,
        labels: Option<&[String]>,
    ) -> Result<(BertModelId, Vec<f64>), BoxError> {
        let ids = self.tokenizer.encode(text, self.block)?;
        let mut id = BertModelId::new(&self.name, self.served.weights().config.layers, ids.len(), self.block)?;
        if let Some(labels) = labels {
            id = id.with_labels(labels.to_vec())?;
        }
        let circuit = self.served.encoder(id.tokens, id.block, params.max_slots())?;
        let embedded = self.served.weights().embed(&ids)?;
        Ok((id, circuit.layout().pack_batch(&[embedded])?))
    }

    /// Where `text`'s values leave the ranges the workers' approximations
    /// were fitted on (one line each; empty when inside): the client knows
    /// its plaintext and can say so before sending.
    pub fn range_warnings(&self, text: &str) -> Result<Vec<String>, BoxError> {
        let ids = self.tokenizer.encode(text, self.block)?;
        let (_, seen) = self.served.weights().encode(&ids)?;
        Ok(self.served.plan().violations(&seen))
    }

    /// Level inputs are encrypted at.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Levels per Argmax comparison stage: a bootstrap's output less three
    /// (the differences and the final product keep them), as the workers
    /// build the head.
    pub fn argmax_depth(&self) -> usize {
        self.level.saturating_sub(3)
    }

    /// The sentence embedding in the decoded slots of a query's result
    /// (normalised when the model is).
    pub fn unpack(&self, id: &BertModelId, slots: &[f64], params: &Parameters) -> Result<Vec<f64>, BoxError> {
        let circuit = self.served.encoder(id.tokens, id.block, params.max_slots())?;
        let mut embedding = circuit.unpack_pooled(slots);
        if self.served.weights().config.normalize {
            let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            embedding.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(embedding)
    }

    /// The zero-shot head the workers build for `labels` (the same
    /// function, the same calibration).
    pub fn head(&self, labels: &[String]) -> Result<CalibratedHead, BoxError> {
        Ok(self.served.zero_shot_head(labels)?)
    }

    /// The class a decrypted one-hot mask picks for query `id` (which
    /// names the labels), with the mask's value per class.
    pub fn unpack_class(&self, id: &BertModelId, slots: &[f64], params: &Parameters) -> Result<Class, BoxError> {
        let labels = id.labels.as_deref().ok_or("the query had no classification head")?;
        let head = self.head(labels)?;
        let circuit =
            self.served.encoder_with_head(id.tokens, id.block, params.max_slots(), &head, self.argmax_depth())?;
        let encrypted = circuit.head().ok_or("no head")?;
        let mask = encrypted.mask_of(slots, 0);
        let index = encrypted.decode(&mask);
        let label = labels.get(index).cloned().ok_or("mask outside the labels")?;
        Ok(Class { index, label, mask })
    }

    /// The plaintext head's logits for `text` (on the mean-pooled vector,
    /// as the encrypted head reads it) and the smallest top-two gap the
    /// encrypted Argmax resolves, in the same units.
    pub fn plain_logits(
        &self,
        text: &str,
        head: &CalibratedHead,
        params: &Parameters,
    ) -> Result<(Vec<f64>, f64), BoxError> {
        let ids = self.tokenizer.encode(text, self.block)?;
        let pooled = nexus_nn::bert::head::mean_pooled(self.served.weights(), &ids)?;
        let circuit =
            self.served.encoder_with_head(ids.len(), self.block, params.max_slots(), head, self.argmax_depth())?;
        let min_gap = circuit.head().ok_or("no head")?.min_gap();
        Ok((head.head.logits(&pooled), min_gap))
    }

    /// The plaintext model's embedding of `text` (what the encrypted one
    /// should match).
    pub fn plain_embedding(&self, text: &str) -> Result<Vec<f64>, BoxError> {
        let ids = self.tokenizer.encode(text, self.block)?;
        Ok(self.served.weights().sentence_embedding(&ids)?)
    }
}

/// The class a zero-shot head picked.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Class {
    /// Its index among the labels.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// The decrypted mask, one value per label (one-hot up to the
    /// comparisons' error).
    pub mask: Vec<f64>,
}

/// What `client.toml` records about a BERT-family model.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncoderChoice {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    pub dir: PathBuf,
    /// Layers run (the first ones).
    pub layers: usize,
    /// Longest sentence in tokens, [CLS] and [SEP] included.
    pub max_tokens: usize,
    /// A zero-shot classification head's labels (the keys then cover a
    /// head; every query asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}
