//! The client's side of a BERT-family encoder on the cluster: evaluation
//! keys (the bootstrapping rotations and the encoder's, for one token
//! block and a number of sentences per query), sentences tokenized,
//! embedded, packed side by side and encrypted, and the decrypted
//! sentence embeddings, and with a classification head (zero-shot, or
//! trained: `heads/FILE.safetensors` in the model directory, on the client
//! and on every worker) the class each one's encrypted one-hot mask picks.
//! The workers run every layer, the pooling and the head
//! (`bert:NAME@DIGEST:LAYERS:TOKENS:BLOCK[:HEAD]` queries: the digest of
//! the model directory's files, which the workers' files must match).
//!
//! Keys for `S` sentences per query serve queries whose sentence count
//! rounds up to the same power of two as `S` (the layout, and so the
//! rotations, depend on it); this client always sends `S` blocks: a query
//! of fewer sentences fills the other blocks with copies of its first
//! sentence, which costs nothing (the ciphertext is the same size) and
//! are dropped when the result is unpacked. Copies rather than the empty
//! sentence: the workers' approximations are fitted to the ranges of real
//! text, and one block out of range spoils the whole ciphertext at its
//! next bootstrap (an Argmax fed a logit beyond its bound returns values
//! near 1e88 in every block).

use nexus_ckks::bootstrapping::BootstrapConfig;
use nexus_ckks::{GaloisKeys, KeyGenerator, Parameters, SecretKey};
use nexus_nn::bert::{CalibratedHead, ModelSource, ServedBert, TextTokenizer};
use nexus_nn::KeySet;
use nexus_proto::models::{head_file_digest, id_digest, BertModelId, HeadChoice, MAX_SENTENCES};
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A model directory as the client uses it.
#[derive(Debug)]
pub struct ClientEncoder {
    name: String,
    /// Its files' digest, as ids name it.
    digest: String,
    served: ServedBert,
    tokenizer: TextTokenizer,
    block: usize,
    /// Sentence blocks per query (the keys' layout).
    sentences: usize,
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
    /// queries of `sentences` sentences of up to `max_tokens` tokens each,
    /// running its first `layers` layers (all: `None`), at `preset`.
    pub fn load(
        dir: &Path,
        layers: Option<usize>,
        max_tokens: usize,
        sentences: usize,
        preset: &str,
        params: &Parameters,
    ) -> Result<Self, BoxError> {
        let name = directory_name(dir)?;
        let config = boot_config(preset)?;
        let level = params.max_level().checked_sub(config.depth()).ok_or("bootstrapping uses every level")?;
        let source = ModelSource::read(dir)?;
        let digest = id_digest(source.digest());
        let layers = layers.unwrap_or(source.config().layers);
        // The digested file's, not a second read that could differ.
        let tokenizer = source.tokenizer().clone();
        let block = max_tokens.next_power_of_two();
        if !(1..=MAX_SENTENCES).contains(&sentences) {
            return Err(format!("{sentences} sentences per query: 1 to {MAX_SENTENCES}").into());
        }
        // Checks the name, layers, block and sentence count the way the
        // coordinator will.
        BertModelId::batch(&name, &digest, layers, vec![2.min(block); sentences], block)?;
        // Same depth per stage as the workers plan with (one of a
        // bootstrap's output levels kept for scaling before the next).
        let served = ServedBert::calibrate(source, layers, level.saturating_sub(1))?;
        let c = &served.weights().config;
        let capacity = nexus_nn::bert::packed::HiddenLayout::capacity(block, c.heads, c.head_dim(), params.max_slots());
        if sentences > capacity {
            return Err(format!(
                "{sentences} sentences of up to {block} tokens per query: one ciphertext of {} slots holds {capacity} \
                 of this model's",
                params.max_slots()
            )
            .into());
        }
        Ok(Self { name, digest, served, tokenizer, block, sentences, level })
    }

    /// The digest of the model directory's files, as ids name it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Refuses to read the result of query `id` if this model directory's
    /// files are not the ones it was made with.
    fn check_files(&self, id: &BertModelId) -> Result<(), BoxError> {
        if id.name != self.name || id.digest != self.digest {
            return Err(format!(
                "the query ran model {}@{}, this directory holds {}@{}: its files changed since the query was \
                 made (put them back to read its result)",
                id.name, id.digest, self.name, self.digest
            )
            .into());
        }
        Ok(())
    }

    /// Refuses a query of `count` sentences unless it fits the keys'.
    pub fn check_count(&self, count: usize) -> Result<(), BoxError> {
        if count == 0 || count > self.sentences {
            return Err(format!("{count} sentences for a query of {} (the keys' --sentences)", self.sentences).into());
        }
        Ok(())
    }

    /// Evaluation keys: the bootstrapping set and the encoder's rotations
    /// for this block (at the level computations start at); with `head`,
    /// also a classification head's (every power of two below the slot
    /// count: its logits sum over all slots, its Argmax's rounds rotate by
    /// powers of two, for any number of classes up to the limit).
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
        let circuit = self.served.encoder(&vec![self.block; self.sentences], self.block, params.max_slots())?;
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

    /// The query's model id and the slot vector of `texts`' embedded
    /// tokens (each truncated to the block), one block each, the blocks
    /// past them holding copies of the first; with `head`, the id asks
    /// for it too.
    pub fn pack<S: AsRef<str>>(
        &self,
        texts: &[S],
        params: &Parameters,
        head: Option<&HeadChoice>,
    ) -> Result<(BertModelId, Vec<f64>), BoxError> {
        self.check_count(texts.len())?;
        let mut ids =
            texts.iter().map(|t| self.tokenizer.encode(t.as_ref(), self.block)).collect::<Result<Vec<_>, _>>()?;
        ids.resize(self.sentences, ids[0].clone());
        let lengths = ids.iter().map(Vec::len).collect();
        let layers = self.served.weights().config.layers;
        let mut id = BertModelId::batch(&self.name, &self.digest, layers, lengths, self.block)?;
        if let Some(head) = head {
            id = id.with_head(head.clone())?;
        }
        let circuit = self.served.encoder(&id.lengths, id.block, params.max_slots())?;
        let embedded = ids.iter().map(|ids| self.served.weights().embed(ids)).collect::<Result<Vec<_>, _>>()?;
        Ok((id, circuit.layout().pack_batch(&embedded)?))
    }

    /// Where `text`'s values leave the ranges the workers' approximations
    /// were fitted on (one line each; empty when inside), with `head`
    /// ([`head`](Self::head)) its logits included: the client knows its
    /// plaintext and can say so before sending.
    pub fn range_warnings(&self, text: &str, head: Option<&CalibratedHead>) -> Result<Vec<String>, BoxError> {
        let ids = self.tokenizer.encode(text, self.block)?;
        let (_, seen) = self.served.weights().encode(&ids)?;
        let mut warnings = self.served.plan().violations(&seen);
        if let Some(head) = head {
            // The Argmax compares centred logits scaled by this bound; one
            // beyond it leaves the comparisons' domain.
            let pooled = nexus_nn::bert::head::mean_pooled(self.served.weights(), &ids)?;
            let logits = head.head.centred().logits(&pooled);
            for (label, logit) in head.head.labels.iter().zip(logits) {
                if logit.abs() > head.logit_bound {
                    warnings.push(format!(
                        "the head's centred logit for {label:?} is {logit:.3}, beyond the bound {:.3} the workers \
                         calibrated",
                        head.logit_bound
                    ));
                }
            }
        }
        Ok(warnings)
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

    /// Every block's sentence embedding in the decoded slots of a query's
    /// result, in the id's order (normalised when the model is).
    pub fn unpack(&self, id: &BertModelId, slots: &[f64], params: &Parameters) -> Result<Vec<Vec<f64>>, BoxError> {
        self.check_files(id)?;
        let circuit = self.served.encoder(&id.lengths, id.block, params.max_slots())?;
        let mut embeddings = circuit.unpack_pooled_batch(slots);
        if self.served.weights().config.normalize {
            for embedding in &mut embeddings {
                let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                embedding.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(embeddings)
    }

    /// A query's head from what `client.toml` records: zero-shot
    /// `labels`, or the `trained` head file of this model directory (its
    /// classes and digest read from the file, as the id names them).
    pub fn head_choice(
        &self,
        labels: Option<&[String]>,
        trained: Option<&str>,
    ) -> Result<Option<HeadChoice>, BoxError> {
        match (labels, trained) {
            (Some(_), Some(_)) => Err("a query has one head: zero-shot labels or a trained head file, not both".into()),
            (Some(labels), None) => Ok(Some(HeadChoice::ZeroShot(labels.to_vec()))),
            (None, Some(file)) => {
                let (head, bytes) = self.served.trained_head(file)?;
                let (classes, digest) = (head.classes(), head_file_digest(&bytes));
                Ok(Some(HeadChoice::Trained { file: file.to_string(), classes, digest }))
            }
            (None, None) => Ok(None),
        }
    }

    /// The head the workers build for `choice` (the same function, the
    /// same calibration), checked to be one the encrypted head can run
    /// (its classes as named, its biases equal where the model
    /// normalises).
    pub fn head(&self, choice: &HeadChoice, params: &Parameters) -> Result<CalibratedHead, BoxError> {
        let head = match choice {
            HeadChoice::ZeroShot(labels) => self.served.zero_shot_head(labels)?,
            HeadChoice::Trained { file, classes, digest } => {
                let (head, bytes) = self.served.trained_head(file)?;
                if head_file_digest(&bytes) != *digest {
                    return Err(format!(
                        "head {file:?}: the file is not the one the query named (digest {digest}): it changed \
                         since the query was made"
                    )
                    .into());
                }
                if head.classes() != *classes {
                    return Err(
                        format!("head {file:?} has {} classes, the query names {classes}", head.classes()).into()
                    );
                }
                self.served.calibrated(head)?
            }
        };
        self.served.encoder_with_head(
            &[2.min(self.block)],
            self.block,
            params.max_slots(),
            &head,
            self.argmax_depth(),
        )?;
        Ok(head)
    }

    /// The class each block's decrypted one-hot mask picks for query
    /// `id` (which names the head), with the mask's value per class, in
    /// the id's order.
    pub fn unpack_classes(&self, id: &BertModelId, slots: &[f64], params: &Parameters) -> Result<Vec<Class>, BoxError> {
        self.check_files(id)?;
        let choice = id.head.as_ref().ok_or("the query had no classification head")?;
        let head = self.head(choice, params)?;
        let labels = &head.head.labels;
        let circuit =
            self.served.encoder_with_head(&id.lengths, id.block, params.max_slots(), &head, self.argmax_depth())?;
        let encrypted = circuit.head().ok_or("no head")?;
        (0..id.lengths.len())
            .map(|sentence| {
                let mask = encrypted.mask_of(slots, sentence);
                let index = encrypted.decode(&mask);
                let label = labels.get(index).cloned().ok_or("mask outside the labels")?;
                Ok(Class { index, label, mask })
            })
            .collect()
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
            self.served.encoder_with_head(&[ids.len()], self.block, params.max_slots(), head, self.argmax_depth())?;
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

/// A model directory's name, as ids name the model.
fn directory_name(dir: &Path) -> Result<String, BoxError> {
    Ok(dir
        .canonicalize()
        .map_err(|e| format!("model directory {}: {e}", dir.display()))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("model directory {} has no name", dir.display()))?)
}

/// What `nexus digest` prints: a model directory as query ids name it,
/// so that an operator can compare a client's copy with the workers'.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct DirectoryDigests {
    /// `NAME@DIGEST`: the directory's name and the digest of its files.
    pub model: String,
    /// Each trained head in its `heads/` (by the name `keygen --head`
    /// takes) with its file's digest, as `head=NAME/CLASSES/DIGEST` names
    /// it.
    pub heads: std::collections::BTreeMap<String, String>,
}

/// The digests of model directory `dir` (its files read and parsed, not
/// calibrated): what a query made from it names, and what a worker
/// holding it accepts.
pub fn directory_digests(dir: &Path) -> Result<DirectoryDigests, BoxError> {
    let name = directory_name(dir)?;
    let source = ModelSource::read(dir)?;
    let digest = id_digest(source.digest());
    // Checked as a query's id is.
    BertModelId::new(&name, &digest, 1, 2, 2)?;
    let mut heads = std::collections::BTreeMap::new();
    let heads_dir = dir.join(nexus_nn::bert::served::HEADS_DIR);
    if heads_dir.is_dir() {
        let listed = std::fs::read_dir(&heads_dir).map_err(|e| format!("{}: {e}", heads_dir.display()))?;
        for entry in listed {
            let path = entry.map_err(|e| format!("{}: {e}", heads_dir.display()))?.path();
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(head) = file.strip_suffix(".safetensors").filter(|h| !h.is_empty() && !h.starts_with('.')) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            heads.insert(head.to_string(), head_file_digest(&bytes));
        }
    }
    Ok(DirectoryDigests { model: format!("{name}@{digest}"), heads })
}

/// The class a head picked.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Class {
    /// Its index among the labels.
    pub index: usize,
    /// Its label (a trained head's from its file's metadata, else its index).
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
    /// Sentences per query (throughput mode above 1; files of older
    /// clients: 1, which is not written, so that they read the files of
    /// this one while it is 1).
    #[serde(default = "one_sentence", skip_serializing_if = "is_one_sentence")]
    pub sentences: usize,
    /// A zero-shot classification head's labels (the keys then cover a
    /// head; every query asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// A trained classification head instead: `heads/FILE.safetensors` in
    /// the model directory (the workers read the same file of theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

impl EncoderChoice {
    /// Whether queries ask for a classification head.
    pub fn has_head(&self) -> bool {
        self.labels.is_some() || self.head.is_some()
    }
}

fn one_sentence() -> usize {
    1
}

fn is_one_sentence(n: &usize) -> bool {
    *n == 1
}
