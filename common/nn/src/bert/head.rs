//! An optional classification head on the sentence embedding, and its
//! encrypted evaluation: logits on the pooled ciphertext, then an
//! [`Argmax`] that returns the one-hot class mask, still encrypted.
//!
//! The plaintext head reads the model's sentence embedding (L2-normalised
//! where the model says so). The encrypted head reads the mean-pooled
//! vector before normalisation: a positive factor changes no argmax, so the
//! two agree exactly when the biases are equal or the model does not
//! normalise (other biases after normalisation are refused). The head runs
//! centred (every logit minus the mean over classes: same argmax, a far
//! smaller range to scale into the Argmax's, so a finer resolution).
//!
//! Logits go where the Argmax wants them: class `j` of sentence `i` at slot
//! `j S + i` of every period of `M S` slots (`M = next_pow2(classes)`,
//! `S = next_pow2(sentences)`), so one Argmax serves the whole batch. For
//! each (sentence, class), the pooled vector times the class's weights (on
//! the sentence's slots of one copy), summed over all slots (one rotation
//! per power of two), masked onto its slots.

use super::packed::HiddenLayout;
use super::weights::{to_f64, BertWeights, TensorWriter};
use crate::argmax::Argmax;
use crate::compare::Ensure;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::Ciphertext;
use safetensors::tensor::SafeTensors;
use std::path::Path;

/// The safetensors metadata key naming a head's classes.
pub const LABELS_METADATA: &str = "labels";

/// Whether `label` can be stored in a head file's metadata (and read
/// back).
fn storable_label(label: &str) -> bool {
    !label.trim().is_empty() && !label.contains(';') && !label.chars().any(char::is_control)
}

/// A linear head `logits = W e + b` over the sentence embedding `e`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierHead {
    /// Class names.
    pub labels: Vec<String>,
    /// `classes x hidden`.
    pub weight: Vec<Vec<f64>>,
    /// `classes` biases.
    pub bias: Vec<f64>,
}

impl ClassifierHead {
    /// Checks the shapes (at least two classes, one weight row of `hidden`
    /// finite values per label).
    pub fn new(labels: Vec<String>, weight: Vec<Vec<f64>>, bias: Vec<f64>, hidden: usize) -> Result<Self, NnError> {
        let k = labels.len();
        if k < 2 || weight.len() != k || bias.len() != k || weight.iter().any(|r| r.len() != hidden) {
            return Err(invalid(
                "classifier head",
                format!("{k} labels, {} weight rows and {} biases for hidden {hidden}", weight.len(), bias.len()),
            ));
        }
        if weight.iter().flatten().chain(&bias).any(|v| !v.is_finite()) {
            return Err(invalid("classifier head", "weights must be finite"));
        }
        Ok(Self { labels, weight, bias })
    }

    /// Hugging Face's `classifier.weight` (`classes x hidden`) and
    /// `classifier.bias` from a safetensors file; classes are named by
    /// the header's metadata `labels` (one per class, separated by `;`)
    /// where it has them, else by index.
    pub fn from_safetensors(path: &Path, hidden: usize) -> Result<Self, NnError> {
        let bytes = std::fs::read(path).map_err(|e| invalid("classifier head", format!("{}: {e}", path.display())))?;
        Self::from_safetensors_bytes(&bytes, path, hidden)
    }

    /// [`from_safetensors`](Self::from_safetensors) of the bytes of the
    /// file at `path` (named in errors).
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path, hidden: usize) -> Result<Self, NnError> {
        let not_safetensors = |e: safetensors::SafeTensorError| {
            invalid("classifier head", format!("{}: not a safetensors file: {e}", path.display()))
        };
        let st = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
        let get = |name: &str| {
            st.tensor(name)
                .map_err(|_| invalid("classifier head", format!("{}: tensor {name} is missing", path.display())))
        };
        let (w, b) = (get("classifier.weight")?, get("classifier.bias")?);
        let k = w.shape().first().copied().unwrap_or(0);
        if w.shape() != [k, hidden] || b.shape() != [k] {
            return Err(invalid(
                "classifier head",
                format!("classifier.weight {:?} and classifier.bias {:?} for hidden {hidden}", w.shape(), b.shape()),
            ));
        }
        let labels = match header.metadata().as_ref().and_then(|m| m.get(LABELS_METADATA)) {
            Some(listed) => {
                let labels: Vec<String> = listed.split(';').map(str::to_string).collect();
                if labels.len() != k || !labels.iter().all(|l| storable_label(l)) {
                    return Err(invalid(
                        "classifier head",
                        format!(
                            "{}: metadata {LABELS_METADATA:?} must name each of the {k} classes (separated by ';', \
                             no empty names or control characters): {listed:?}",
                            path.display()
                        ),
                    ));
                }
                labels
            }
            None => (0..k).map(|i| i.to_string()).collect(),
        };
        let flat = to_f64("classifier.weight", &w)?;
        let weight = flat.chunks(hidden).map(<[f64]>::to_vec).collect();
        Self::new(labels, weight, to_f64("classifier.bias", &b)?, hidden)
    }

    /// The head as [`from_safetensors`](Self::from_safetensors) reads it
    /// (F32, the labels in the metadata).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, NnError> {
        if let Some(l) = self.labels.iter().find(|l| !storable_label(l)) {
            return Err(invalid(
                "classifier head",
                format!(
                    "label {l:?}: stored labels are not empty, without ';' (their separator) or control characters"
                ),
            ));
        }
        let (k, hidden) = (self.classes(), self.weight.first().map_or(0, Vec::len));
        let mut out = TensorWriter::default();
        out.put("classifier.weight", vec![k, hidden], &self.weight.concat());
        out.put("classifier.bias", vec![k], &self.bias);
        let metadata = [(LABELS_METADATA.to_string(), self.labels.join(";"))].into();
        out.finish_with("classifier head", Some(metadata))
    }

    /// A zero-shot head: each class's weights are the model's own
    /// (normalised) embedding of its description, so the logits are
    /// cosine similarities. Built from public label texts by whoever holds
    /// the model; nothing of the user's input goes into it.
    pub fn prototypes(weights: &BertWeights, labels: &[(String, Vec<u32>)]) -> Result<Self, NnError> {
        let mut rows = Vec::with_capacity(labels.len());
        for (_, ids) in labels {
            let e = weights.sentence_embedding(ids)?;
            let norm = e.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            rows.push(e.iter().map(|v| v / norm).collect());
        }
        let names = labels.iter().map(|(n, _)| n.clone()).collect();
        Self::new(names, rows, vec![0.0; labels.len()], weights.config.hidden)
    }

    /// The same head with every logit minus the mean over classes (same
    /// argmax, and a much smaller range when the classes share a
    /// direction, as prototype embeddings do).
    pub fn centred(&self) -> Self {
        let k = self.classes() as f64;
        let hidden = self.weight.first().map_or(0, Vec::len);
        let mean_w: Vec<f64> = (0..hidden).map(|c| self.weight.iter().map(|r| r[c]).sum::<f64>() / k).collect();
        let mean_b = self.bias.iter().sum::<f64>() / k;
        Self {
            labels: self.labels.clone(),
            weight: self.weight.iter().map(|r| r.iter().zip(&mean_w).map(|(w, m)| w - m).collect()).collect(),
            bias: self.bias.iter().map(|b| b - mean_b).collect(),
        }
    }

    /// Bound on the [`centred`](Self::centred) logits over the mean-pooled
    /// (unnormalised) vectors of `inputs`, times `margin`: what
    /// [`EncryptedHead`] scales by.
    pub fn logit_bound(&self, weights: &BertWeights, inputs: &[Vec<u32>], margin: f64) -> Result<f64, NnError> {
        let centred = self.centred();
        let mut bound = 0.0f64;
        for ids in inputs {
            let mean = mean_pooled(weights, ids)?;
            bound = centred.logits(&mean).iter().fold(bound, |b, l| b.max(l.abs()));
        }
        Ok(bound.max(1e-6) * margin)
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// `W e + b`.
    pub fn logits(&self, embedding: &[f64]) -> Vec<f64> {
        self.weight
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(embedding).map(|(x, y)| x * y).sum::<f64>() + b)
            .collect()
    }

    /// Index of the largest logit (the first of equals).
    pub fn predict(&self, embedding: &[f64]) -> usize {
        argmax_index(&self.logits(embedding))
    }
}

/// The mean of the encoder's token outputs, before any normalisation:
/// what the encrypted head reads (its logits are in these units).
pub fn mean_pooled(weights: &BertWeights, ids: &[u32]) -> Result<Vec<f64>, NnError> {
    let (tokens, _) = weights.encode(ids)?;
    let n = tokens.len().max(1) as f64;
    Ok((0..weights.config.hidden).map(|c| tokens.iter().map(|t| t[c]).sum::<f64>() / n).collect())
}

/// Index of the largest value (the first of equals; 0 for an empty slice).
pub fn argmax_index(values: &[f64]) -> usize {
    values.iter().enumerate().fold((0, f64::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// The head on ciphertexts for one layout.
#[derive(Clone, Debug)]
pub struct EncryptedHead {
    head: ClassifierHead,
    /// What runs: the head's centred form.
    centred: ClassifierHead,
    layout: HiddenLayout,
    argmax: Argmax,
    /// Logits are divided by this (the calibrated bound) to fit the Argmax's range.
    scale: f64,
}

/// Range the Argmax compares in (logits are scaled into it).
const ARGMAX_RANGE: f64 = 0.5;

/// The Argmax's default comparison gap, `2^-12` of its input range: top-two
/// gaps down to about 1/500 of the logit bound are resolved, for one more
/// sign stage than `2^-8` (about 1/30, which missed a close MiniLM
/// sentence).
pub const DEFAULT_GAP_BITS: u32 = 12;

/// Gap exponents [`EncryptedHead::new`] accepts.
pub const GAP_BITS: std::ops::RangeInclusive<u32> = 4..=20;

impl EncryptedHead {
    /// `head` after an encoder of `layout`; `logit_bound` bounds its
    /// centred logits on the mean-pooled vectors (calibrated, with a margin);
    /// `normalized` says whether the model's embedding is L2-normalised;
    /// `max_stage_depth` as for [`Argmax::new`]; the comparisons resolve
    /// gaps of `2^-gap_bits` of the Argmax's range (with sign error
    /// `2^-(gap_bits + 2)`), see [`DEFAULT_GAP_BITS`].
    pub fn new(
        head: ClassifierHead,
        layout: HiddenLayout,
        logit_bound: f64,
        normalized: bool,
        max_stage_depth: usize,
        gap_bits: u32,
    ) -> Result<Self, NnError> {
        if !GAP_BITS.contains(&gap_bits) {
            return Err(invalid(
                "classifier head",
                format!(
                    "Argmax gap of 2^-{gap_bits}: the exponent must be in {}..={}",
                    GAP_BITS.start(),
                    GAP_BITS.end()
                ),
            ));
        }
        let centred = head.centred();
        if normalized && centred.bias.iter().any(|&b| b.abs() > 1e-12) {
            return Err(invalid(
                "classifier head",
                "a head whose biases differ between classes after L2 normalisation: the encrypted head reads the unnormalised vector",
            ));
        }
        if head.weight.first().map_or(0, Vec::len) != layout.hidden() {
            return Err(invalid("classifier head", format!("weights for hidden {}", layout.hidden())));
        }
        if !(logit_bound.is_finite() && logit_bound > 0.0) {
            return Err(invalid("classifier head", format!("logit bound {logit_bound}")));
        }
        let stride = layout.lengths().len().next_power_of_two();
        let argmax = Argmax::new(
            head.classes(),
            ARGMAX_RANGE,
            0.5f64.powi(gap_bits as i32),
            0.5f64.powi(gap_bits as i32 + 2),
            max_stage_depth,
        )?
        .with_stride(stride)?;
        Ok(Self { head, centred, layout, argmax, scale: logit_bound / ARGMAX_RANGE })
    }

    /// The smallest gap between the top two logits (in logit units) the
    /// encrypted Argmax resolves.
    pub fn min_gap(&self) -> f64 {
        self.argmax.min_gap() * self.scale
    }

    /// Rotation steps: the slot sums and the Argmax's.
    pub fn rotations(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = (0..self.layout.slots().trailing_zeros()).map(|m| 1i64 << m).collect();
        steps.extend(self.argmax.rotations());
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// Every sentence's scaled logits from [`mean_pool`](super::encrypted::EncryptedEncoder::mean_pool)'s
    /// ciphertext, in the Argmax's layout (two levels).
    pub fn logits(&self, engine: &Engine<'_>, pooled: &Ciphertext) -> Result<Ciphertext, NnError> {
        let slots = self.layout.slots();
        let (t, b) = (self.layout.tokens(), self.layout.block());
        let sentences = self.layout.lengths().len();
        let stride = sentences.next_power_of_two();
        let period = self.head.classes().next_power_of_two() * stride;
        let level =
            pooled.level().checked_sub(2).ok_or_else(|| invalid("classifier head", "pooled vector below level 2"))?;
        let mut acc: Option<Ciphertext> = None;
        for i in 0..sentences {
            for (j, w) in self.centred.weight.iter().enumerate() {
                // The first copy only: the sum over all slots is then the logit.
                let mut weights = vec![0.0; slots];
                for (c, wc) in w.iter().enumerate() {
                    weights[self.layout.position(c) * t + i * b] = wc / self.scale;
                }
                let mut sum = engine.mul_plain_to(pooled, &weights, level + 1, pooled.scale())?;
                for m in 0..slots.trailing_zeros() {
                    let r = engine.eval.rotate(&sum, 1i64 << m, engine.galois)?;
                    engine.eval.add_assign(&mut sum, &r)?;
                }
                let mask: Vec<f64> = (0..slots).map(|s| f64::from(s % period == j * stride + i)).collect();
                let placed = engine.mul_plain_to(&sum, &mask, level, pooled.scale())?;
                match acc.as_mut() {
                    Some(a) => engine.eval.add_assign(a, &placed)?,
                    None => acc = Some(placed),
                }
            }
        }
        let acc = acc.ok_or_else(|| invalid("classifier head", "no classes"))?;
        // Biases on the real (sentence, class) slots; the Argmax's padding
        // value elsewhere.
        let offset: Vec<f64> = (0..slots)
            .map(|s| {
                let (j, i) = ((s % period) / stride, s % stride);
                match self.centred.bias.get(j) {
                    Some(b) if i < sentences => b / self.scale,
                    _ => -ARGMAX_RANGE,
                }
            })
            .collect();
        let offset = engine.encoder.encode_real(&offset, acc.level(), acc.scale())?;
        Ok(engine.eval.add_plain(&acc, &offset)?)
    }

    /// Every sentence's encrypted one-hot class mask (see
    /// [`decode`](Self::decode)) from the pooled ciphertext (at least two
    /// levels).
    pub fn classify(
        &self,
        engine: &Engine<'_>,
        refresh: &mut dyn Ensure,
        pooled: &Ciphertext,
    ) -> Result<Ciphertext, NnError> {
        let logits = self.logits(engine, pooled)?;
        self.argmax.apply(engine, &logits, Some(refresh))
    }

    /// The Argmax's comparison rounds.
    pub fn rounds(&self) -> usize {
        self.argmax.rounds()
    }

    /// Argmax round `round` on `a` ([`logits`](Self::logits)' output before
    /// round 0, the previous round's after).
    pub fn argmax_round(
        &self,
        engine: &Engine<'_>,
        refresh: &mut dyn Ensure,
        a: Ciphertext,
        round: usize,
    ) -> Result<Ciphertext, NnError> {
        self.argmax.round(engine, a, round, Some(refresh))
    }

    /// The one-hot masks from the logits and the last round's output
    /// (what [`classify`](Self::classify) returns).
    pub fn argmax_mask(
        &self,
        engine: &Engine<'_>,
        refresh: &mut dyn Ensure,
        logits: &Ciphertext,
        max: &Ciphertext,
    ) -> Result<Ciphertext, NnError> {
        self.argmax.mask(engine, logits, max, Some(refresh))
    }

    /// Client side: sentence `sentence`'s mask values (one per class) from
    /// a decrypted mask.
    pub fn mask_of(&self, slots: &[f64], sentence: usize) -> Vec<f64> {
        let stride = self.layout.lengths().len().next_power_of_two();
        (0..self.head.classes()).map(|j| slots.get(j * stride + sentence).copied().unwrap_or(f64::NAN)).collect()
    }

    /// Client side: the class a sentence's mask values pick (the
    /// largest).
    pub fn decode(&self, mask: &[f64]) -> usize {
        argmax_index(mask)
    }

    /// The head.
    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with_gap(gap_bits: u32) -> Result<EncryptedHead, NnError> {
        let layout = HiddenLayout::new(4, 3, 2, 4, 1 << 10)?;
        let weight = vec![vec![1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0], vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0]];
        let head = ClassifierHead::new(vec!["a".into(), "b".into()], weight, vec![0.0; 2], 8)?;
        EncryptedHead::new(head, layout, 2.0, true, 9, gap_bits)
    }

    #[test]
    fn trained_heads_round_trip_through_safetensors_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("nexus-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weight = vec![vec![0.5, -1.25, 2.0], vec![0.125, 3.0, -0.75], vec![1.0, 0.0, -2.5]];
        let labels = vec!["negative".into(), "neutral: mixed".into(), "positive".into()];
        let head = ClassifierHead::new(labels, weight.clone(), vec![0.5, -1.0, 0.25], 3).unwrap();
        let path = dir.join("three.safetensors");
        std::fs::write(&path, head.to_safetensors().unwrap()).unwrap();
        // The values are exact in F32, the labels in the metadata.
        assert_eq!(ClassifierHead::from_safetensors(&path, 3).unwrap(), head);
        let err = ClassifierHead::from_safetensors(&path, 4).unwrap_err().to_string();
        assert!(err.contains("[3, 3]") && err.contains("hidden 4"), "{err}");
        // Without labels (as a bare Hugging Face head), classes are named
        // by index; labels that do not name every class are refused.
        let write = |metadata: Option<&str>| {
            let mut out = TensorWriter::default();
            out.put("classifier.weight", vec![3, 3], &weight.concat());
            out.put("classifier.bias", vec![3], &head.bias);
            let metadata = metadata.map(|m| [(LABELS_METADATA.to_string(), m.to_string())].into());
            std::fs::write(&path, out.finish_with("classifier head", metadata).unwrap()).unwrap();
            ClassifierHead::from_safetensors(&path, 3)
        };
        assert_eq!(write(None).unwrap().labels, ["0", "1", "2"]);
        for bad in ["a;b", "a;b;c;d", "a;;c", "a;b\n;c"] {
            let err = write(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("must name each of the 3 classes"), "{bad:?}: {err}");
        }
        for bad in ["a;b", " ", "a\tb"] {
            let unstorable = ClassifierHead { labels: vec![bad.into(), "c".into(), "d".into()], ..head.clone() };
            let err = unstorable.to_safetensors().unwrap_err().to_string();
            assert!(err.contains(&format!("label {bad:?}")), "{err}");
        }
        std::fs::write(&path, b"not a tensor file").unwrap();
        let err = ClassifierHead::from_safetensors(&path, 3).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file") && err.contains("three.safetensors"), "{err}");
        let err = ClassifierHead::from_safetensors(&dir.join("absent.safetensors"), 3).unwrap_err().to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_argmax_gap_sets_the_stated_resolution() {
        let coarse = head_with_gap(8).unwrap().min_gap();
        let fine = head_with_gap(DEFAULT_GAP_BITS).unwrap().min_gap();
        // Four bits finer: the resolution shrinks with the gap (the sign
        // error shrinks alongside, so about 16x).
        assert!(fine < coarse / 12.0, "2^-8: {coarse}, 2^-{DEFAULT_GAP_BITS}: {fine}");
        for bad in [GAP_BITS.start() - 1, GAP_BITS.end() + 1] {
            let err = head_with_gap(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("2^-{bad}")), "{err}");
        }
    }
}
