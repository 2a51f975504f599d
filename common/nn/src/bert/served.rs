//! BERT-family encoders served by the cluster: the public calibration
//! corpus and the encoder a worker runs from a model directory, for the
//! queries that name it (`nexus_proto::models::BertModelId`).

use super::encrypted::{EncoderPlan, EncryptedEncoder};
use super::head::{ClassifierHead, DEFAULT_GAP_BITS};
use super::weights::BertWeights;
#[cfg(feature = "tokenizer")]
use super::{files::ModelFiles, tokenizer::TOKENIZER_FILE};
use crate::error::{invalid, NnError};

/// Public calibration sentences: the ranges the approximations are fitted
/// on come from these, never from a user's input (the server must not
/// depend on it). Client and workers calibrate on the same text.
pub const CALIBRATION: &str = include_str!("calibration.txt");

/// Margin on the calibrated ranges of served encoders.
pub const SERVED_MARGIN: f64 = 1.5;

/// Tokens per calibration sentence (at most the model's positions).
pub const CALIBRATION_MAX_TOKENS: usize = 32;

/// A model's weights (the first `layers` layers) and its calibrated plan:
/// what a worker loads once and every task of the model reuses.
#[derive(Debug)]
pub struct ServedBert {
    weights: BertWeights,
    plan: EncoderPlan,
    /// The calibration sentences' token ids (a head's logit bound is
    /// calibrated on them too).
    calibration: Vec<Vec<u32>>,
    /// The model's tokenizer (zero-shot heads tokenize their labels).
    #[cfg(feature = "tokenizer")]
    tokenizer: Option<super::TextTokenizer>,
    /// The model directory it was loaded from (trained heads are read
    /// from its `heads/`).
    dir: Option<std::path::PathBuf>,
}

/// A model directory's files read, parsed and digested, not yet
/// calibrated: a worker checks the digest against the one a query names
/// before it pays for [`ServedBert::calibrate`].
#[cfg(feature = "tokenizer")]
#[derive(Debug)]
pub struct ModelSource {
    weights: BertWeights,
    tokenizer: super::TextTokenizer,
    dir: std::path::PathBuf,
    digest: [u8; 32],
}

#[cfg(feature = "tokenizer")]
impl ModelSource {
    /// Reads `dir`'s config.json (with the sentence-transformers files
    /// where present), model.safetensors and tokenizer.json.
    pub fn read(dir: &std::path::Path) -> Result<Self, NnError> {
        let mut files = ModelFiles::new(dir);
        let weights = BertWeights::from_files(&mut files)?;
        let tokenizer = super::TextTokenizer::from_bytes(&files.read(TOKENIZER_FILE)?, &files.shown(TOKENIZER_FILE))?;
        Ok(Self { weights, tokenizer, dir: dir.to_path_buf(), digest: files.digest() })
    }

    /// The model's configuration.
    pub fn config(&self) -> &super::BertConfig {
        &self.weights.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &super::TextTokenizer {
        &self.tokenizer
    }

    /// BLAKE3 of every file read, in order ([`ModelFiles`]): the same for
    /// the same files, on the client and on every worker.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// Directory of a model's trained heads, inside the model directory.
pub const HEADS_DIR: &str = "heads";

/// A classification head with its calibrated logit bound.
#[derive(Clone, Debug)]
pub struct CalibratedHead {
    /// The head.
    pub head: ClassifierHead,
    /// Bound on its centred logits over the calibration corpus, with the
    /// served margin.
    pub logit_bound: f64,
}

impl ServedBert {
    /// `weights` cut to `layers`, calibrated on `calibration` (token ids),
    /// each stage limited to `max_stage_depth` levels (a bootstrap's output
    /// levels less one, kept for scaling before the next).
    pub fn new(
        mut weights: BertWeights,
        layers: usize,
        calibration: &[Vec<u32>],
        max_stage_depth: usize,
    ) -> Result<Self, NnError> {
        if layers == 0 || layers > weights.config.layers {
            return Err(invalid("model", format!("{layers} layers asked, the model has {}", weights.config.layers)));
        }
        weights.layers.truncate(layers);
        weights.config.layers = layers;
        let mut plan = EncoderPlan::calibrate(&weights, calibration, SERVED_MARGIN)?;
        plan.max_stage_depth = Some(max_stage_depth);
        Ok(Self {
            weights,
            plan,
            calibration: calibration.to_vec(),
            #[cfg(feature = "tokenizer")]
            tokenizer: None,
            dir: None,
        })
    }

    /// `source` (a model directory read: [`ModelSource::read`]) cut to
    /// `layers` and calibrated on [`CALIBRATION`] (see [`new`](Self::new)).
    #[cfg(feature = "tokenizer")]
    pub fn calibrate(source: ModelSource, layers: usize, max_stage_depth: usize) -> Result<Self, NnError> {
        let ModelSource { weights, tokenizer, dir, .. } = source;
        let max_tokens = CALIBRATION_MAX_TOKENS.min(weights.config.max_positions);
        let calibration: Vec<Vec<u32>> = CALIBRATION
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| tokenizer.encode(l, max_tokens))
            .collect::<Result<_, _>>()?;
        let mut served = Self::new(weights, layers, &calibration, max_stage_depth)?;
        served.tokenizer = Some(tokenizer);
        served.dir = Some(dir);
        Ok(served)
    }

    /// The model directory it was loaded from (none when built from
    /// weights).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The zero-shot head of `labels` (one class per label text: its
    /// prototype is the label's mean-pooled embedding), its logit bound
    /// calibrated on [`CALIBRATION`] with [`SERVED_MARGIN`]. Client and
    /// workers build the same head from the same labels.
    #[cfg(feature = "tokenizer")]
    pub fn zero_shot_head(&self, labels: &[String]) -> Result<CalibratedHead, NnError> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| invalid("classifier head", "the model was loaded without its tokenizer"))?;
        let max_tokens = CALIBRATION_MAX_TOKENS.min(self.weights.config.max_positions);
        let encoded: Vec<(String, Vec<u32>)> =
            labels.iter().map(|l| Ok((l.clone(), tokenizer.encode(l, max_tokens)?))).collect::<Result<_, NnError>>()?;
        self.calibrated(ClassifierHead::prototypes(&self.weights, &encoded)?)
    }

    /// The trained head in `heads/FILE.safetensors` of the model directory
    /// (Hugging Face `classifier.weight` and `classifier.bias`; see
    /// [`ClassifierHead::from_safetensors`]) and the file's bytes (whose
    /// digest a query names), not yet calibrated: check its classes and
    /// digest, then [`calibrated`](Self::calibrated). `file` is a plain
    /// file name (no separators, no leading dot).
    pub fn trained_head(&self, file: &str) -> Result<(ClassifierHead, Vec<u8>), NnError> {
        if file.is_empty() || file.starts_with('.') || file.contains(['/', '\\']) {
            return Err(invalid(
                "classifier head",
                format!("head {file:?}: a file name under the model directory's {HEADS_DIR}/, without separators"),
            ));
        }
        let dir =
            self.dir.as_ref().ok_or_else(|| invalid("classifier head", "the model was not loaded from a directory"))?;
        let path = dir.join(HEADS_DIR).join(format!("{file}.safetensors"));
        let bytes = std::fs::read(&path).map_err(|e| invalid("classifier head", format!("{}: {e}", path.display())))?;
        let head = ClassifierHead::from_safetensors_bytes(&bytes, &path, self.weights.config.hidden)?;
        Ok((head, bytes))
    }

    /// `head` with its logit bound over [`CALIBRATION`], with
    /// [`SERVED_MARGIN`] (a pass of the plaintext model over it): client
    /// and workers compute the same.
    pub fn calibrated(&self, head: ClassifierHead) -> Result<CalibratedHead, NnError> {
        let logit_bound = head.logit_bound(&self.weights, &self.calibration, SERVED_MARGIN)?;
        Ok(CalibratedHead { head, logit_bound })
    }

    /// The weights (cut to the served layers).
    pub fn weights(&self) -> &BertWeights {
        &self.weights
    }

    /// The calibrated plan.
    pub fn plan(&self) -> &EncoderPlan {
        &self.plan
    }

    /// The encoder for sentences of `lengths` real tokens, each padded to
    /// `block`, side by side in one ciphertext (one sentence: latency
    /// mode; several: throughput mode).
    pub fn encoder(&self, lengths: &[usize], block: usize, slots: usize) -> Result<EncryptedEncoder<'_>, NnError> {
        EncryptedEncoder::padded_batch(&self.weights, lengths, block, slots, self.plan.clone())
    }

    /// [`encoder`](Self::encoder) followed by `head`, its Argmax's
    /// comparison stages `argmax_depth` levels deep (a bootstrap's output
    /// levels less three: the differences and the final product keep
    /// them, as `nexus infer` plans it), resolving gaps of
    /// 2^-[`DEFAULT_GAP_BITS`] of its range.
    pub fn encoder_with_head(
        &self,
        lengths: &[usize],
        block: usize,
        slots: usize,
        head: &CalibratedHead,
        argmax_depth: usize,
    ) -> Result<EncryptedEncoder<'_>, NnError> {
        self.encoder(lengths, block, slots)?.with_head(
            head.head.clone(),
            head.logit_bound,
            argmax_depth,
            DEFAULT_GAP_BITS,
        )
    }
}
