//! Model ids queries name. A BERT-family encoder's id is
//! `bert:NAME@DIGEST:LAYERS:TOKENS:BLOCK[:HEAD]`: the model directory's
//! name under the workers' model root and the digest of the files the
//! client embedded with (config, weights, tokenizer: a worker whose files
//! differ refuses the query rather than run another model under the same
//! name), how many encoder layers run (all of
//! them, or the first ones), the real tokens of each sentence (one
//! number, or several separated by `,` for a batch of sentences packed
//! side by side in one ciphertext: throughput mode) and the power-of-two
//! block each is padded to, and optionally a classification head (the
//! result is then the embedding and an encrypted one-hot class mask):
//! a zero-shot head's labels separated by `;`, or
//! `head=FILE/CLASSES/DIGEST`, a trained head the workers read from
//! `heads/FILE.safetensors` in the model's directory (the class count is
//! in the id so that the coordinator, which holds no model files, plans
//! the Argmax's rounds; the digest of the client's file, so that a worker
//! whose file differs refuses the query instead of answering with another
//! head). The block fixes the
//! rotation keys together with the number of sentences rounded up to a
//! power of two, so one key set serves every batch of that size of
//! sentences up to the block's length; the real token counts are public,
//! as in NEXUS (the server masks the padding with them), and so are the
//! labels and the head's file name (the server builds the head from
//! them; the class picked stays encrypted).

use std::fmt;

/// Model-id prefix of BERT-family encoders.
pub const BERT_PREFIX: &str = "bert";

/// Largest token block a query may name.
pub const MAX_BLOCK: usize = 512;

/// Most encoder layers a query may name.
pub const MAX_LAYERS: usize = 48;

/// Most sentences one query may pack (their blocks must also fit one
/// ciphertext, which the workers check against the model's layout).
pub const MAX_SENTENCES: usize = 64;

/// Most classes a head may have, zero-shot or trained (the Argmax's
/// rounds grow with their logarithm).
pub const MAX_LABELS: usize = 64;

/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 200;

/// How a trained head is named in an id: `head=FILE/CLASSES/DIGEST`.
const TRAINED_PREFIX: &str = "head=";

/// Hex digits of a digest in an id, a model's or a head file's (64 bits
/// of BLAKE3: the id tells versions of files apart, it does not
/// authenticate them).
pub const DIGEST_HEX: usize = 16;

/// A BLAKE3 hash as an id names it: its first [`DIGEST_HEX`] hex digits.
pub fn id_digest(hash: &[u8; 32]) -> String {
    hash[..DIGEST_HEX / 2].iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest an id names a head file's bytes by.
pub fn head_file_digest(bytes: &[u8]) -> String {
    id_digest(blake3::hash(bytes).as_bytes())
}

fn valid_digest(digest: &str) -> bool {
    digest.len() == DIGEST_HEX && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A classification head after the pooling.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeadChoice {
    /// Zero-shot: one class per label text, weighted by the model's own
    /// embedding of it.
    ZeroShot(Vec<String>),
    /// A trained head (Hugging Face `classifier.weight` and
    /// `classifier.bias`) in `heads/FILE.safetensors` of the model's
    /// directory on every worker.
    Trained {
        /// The file's name without `.safetensors`.
        file: String,
        /// Its classes (2 to [`MAX_LABELS`]).
        classes: usize,
        /// [`head_file_digest`] of the client's copy.
        digest: String,
    },
}

impl HeadChoice {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Self::ZeroShot(labels) => labels.len(),
            Self::Trained { classes, .. } => *classes,
        }
    }
}

/// What a query asks a BERT-family encoder to run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BertModelId {
    /// Model directory name under the workers' model root.
    pub name: String,
    /// [`id_digest`] of the client's model files (`nexus_nn`'s
    /// `ModelFiles`: every file a load reads, in order).
    pub digest: String,
    /// Encoder layers to run (the first ones).
    pub layers: usize,
    /// Real tokens of each sentence ([CLS] and [SEP] included), in the
    /// order of their blocks; one entry in latency mode.
    pub lengths: Vec<usize>,
    /// Power-of-two block the tokens are padded to.
    pub block: usize,
    /// A classification head (none: the embedding only).
    pub head: Option<HeadChoice>,
}

fn valid_name(name: &str) -> bool {
    // A directory name, never a path: no separators, no leading dot.
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl BertModelId {
    /// A checked id of one sentence (latency mode) of model `name`, whose
    /// files have `digest`.
    pub fn new(name: &str, digest: &str, layers: usize, tokens: usize, block: usize) -> Result<Self, String> {
        Self::batch(name, digest, layers, vec![tokens], block)
    }

    /// A checked id of sentences of `lengths` tokens packed in one
    /// ciphertext (throughput mode).
    pub fn batch(name: &str, digest: &str, layers: usize, lengths: Vec<usize>, block: usize) -> Result<Self, String> {
        let (name, digest) = (name.to_string(), digest.to_string());
        let id = Self { name, digest, layers, lengths, block, head: None };
        id.check()?;
        Ok(id)
    }

    /// This id with a zero-shot head of `labels` (2 to [`MAX_LABELS`]
    /// texts of 1 to [`MAX_LABEL_BYTES`] bytes, without `;` or control
    /// characters, not only spaces).
    pub fn with_labels(self, labels: Vec<String>) -> Result<Self, String> {
        self.with_head(HeadChoice::ZeroShot(labels))
    }

    /// This id with `head` (checked as [`with_labels`](Self::with_labels)
    /// checks labels; a trained head's file name as a model name, its
    /// classes 2 to [`MAX_LABELS`]).
    pub fn with_head(mut self, head: HeadChoice) -> Result<Self, String> {
        self.head = Some(head);
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), String> {
        let bad = |m: String| Err(format!("model id: {m}"));
        if !valid_name(&self.name) {
            return bad(format!(
                "model name {:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                self.name
            ));
        }
        if !valid_digest(&self.digest) {
            return bad(format!("model digest {:?}: {DIGEST_HEX} lowercase hex digits", self.digest));
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return bad(format!("{} layers: 1 to {MAX_LAYERS}", self.layers));
        }
        if !self.block.is_power_of_two() || self.block > MAX_BLOCK {
            return bad(format!("token block {}: a power of two up to {MAX_BLOCK}", self.block));
        }
        if !(1..=MAX_SENTENCES).contains(&self.lengths.len()) {
            return bad(format!("{} sentences: 1 to {MAX_SENTENCES}", self.lengths.len()));
        }
        if let Some(n) = self.lengths.iter().find(|&&n| n < 2 || n > self.block) {
            return bad(format!("{n} tokens: 2 ([CLS] and [SEP]) to the block of {}", self.block));
        }
        if let Some(HeadChoice::Trained { file, classes, digest }) = &self.head {
            if !valid_name(file) {
                return bad(format!(
                    "head file {file:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
                ));
            }
            if !(2..=MAX_LABELS).contains(classes) {
                return bad(format!("{classes} classes: a head needs 2 to {MAX_LABELS}"));
            }
            if !valid_digest(digest) {
                return bad(format!("head digest {digest:?}: {DIGEST_HEX} lowercase hex digits"));
            }
        }
        if let Some(HeadChoice::ZeroShot(labels)) = &self.head {
            if !(2..=MAX_LABELS).contains(&labels.len()) {
                return bad(format!("{} labels: a head needs 2 to {MAX_LABELS}", labels.len()));
            }
            for l in labels {
                if l.trim().is_empty()
                    || l.len() > MAX_LABEL_BYTES
                    || l.contains(';')
                    || l.chars().any(char::is_control)
                {
                    return bad(format!(
                        "label {l:?}: 1 to {MAX_LABEL_BYTES} bytes, not only spaces, without ';' or control characters"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parses a model id: `Ok(None)` if it does not name a BERT-family
    /// encoder, an error naming the part that is wrong if it does.
    pub fn parse(id: &str) -> Result<Option<Self>, String> {
        let Some(rest) = id.strip_prefix(BERT_PREFIX).and_then(|r| r.strip_prefix(':')) else {
            return Ok(None);
        };
        // Labels may hold ':': everything after the fourth field is theirs.
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let (&[name, layers, tokens, block], labels) = (&parts[..parts.len().min(4)], parts.get(4)) else {
            return Err(format!("model id {id:?}: expected {BERT_PREFIX}:NAME@DIGEST:LAYERS:TOKENS:BLOCK[:HEAD]"));
        };
        let Some((name, digest)) = name.split_once('@') else {
            return Err(format!(
                "model id {id:?}: the model {name:?} without the digest of its files (NAME@DIGEST, which clients \
                 compute from the model directory since 2026-12-07: upgrade the client)"
            ));
        };
        let number = |what: &str, s: &str| {
            s.parse::<usize>().map_err(|_| format!("model id {id:?}: {what} {s:?} is not a number"))
        };
        let lengths = tokens.split(',').map(|t| number("tokens", t)).collect::<Result<Vec<_>, _>>()?;
        let plain = Self::batch(name, digest, number("layers", layers)?, lengths, number("block", block)?)?;
        let Some(head) = labels else { return Ok(Some(plain)) };
        // Zero-shot labels are at least two, so they hold a ';'.
        match head.strip_prefix(TRAINED_PREFIX).filter(|_| !head.contains(';')) {
            Some(trained) => {
                let &[file, classes, digest] = &trained.split('/').collect::<Vec<_>>()[..] else {
                    return Err(format!("model id {id:?}: a trained head is {TRAINED_PREFIX}FILE/CLASSES/DIGEST"));
                };
                let (file, digest) = (file.to_string(), digest.to_string());
                plain.with_head(HeadChoice::Trained { file, classes: number("classes", classes)?, digest }).map(Some)
            }
            None => plain.with_labels(head.split(';').map(str::to_string).collect()).map(Some),
        }
    }

    /// The same id without its head (the encoder the head reads).
    pub fn encoder_only(&self) -> Self {
        Self { head: None, ..self.clone() }
    }
}

/// The id's head segment.
impl fmt::Display for HeadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroShot(labels) => write!(f, "{}", labels.join(";")),
            Self::Trained { file, classes, digest } => write!(f, "{TRAINED_PREFIX}{file}/{classes}/{digest}"),
        }
    }
}

impl fmt::Display for BertModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lengths: Vec<String> = self.lengths.iter().map(usize::to_string).collect();
        let (name, digest, layers, block) = (&self.name, &self.digest, self.layers, self.block);
        write!(f, "{BERT_PREFIX}:{name}@{digest}:{layers}:{}:{block}", lengths.join(","))?;
        match &self.head {
            None => Ok(()),
            Some(head) => write!(f, ":{head}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef";

    #[test]
    fn model_ids_round_trip_and_bad_ones_are_named() {
        let id = BertModelId::new("all-MiniLM-L6-v2", D, 6, 9, 16).unwrap();
        assert_eq!(id.to_string(), "bert:all-MiniLM-L6-v2@0123456789abcdef:6:9:16");
        assert_eq!(BertModelId::parse(&id.to_string()).unwrap(), Some(id));
        assert_eq!(BertModelId::parse("gelu").unwrap(), None);
        assert_eq!(BertModelId::parse("bertie").unwrap(), None);
        let err = |s: &str| BertModelId::parse(s).unwrap_err();
        assert!(err("bert:m@0123456789abcdef:2:9").contains("NAME@DIGEST:LAYERS:TOKENS:BLOCK"));
        assert!(err("bert:../etc@0123456789abcdef:2:9:16").contains("model name"));
        assert!(err("bert:.hidden@0123456789abcdef:2:9:16").contains("model name"));
        assert!(err("bert:m:2:9:16").contains("NAME@DIGEST"));
        assert!(err("bert:m@:2:9:16").contains("model digest \"\""));
        assert!(err("bert:m@0123:2:9:16").contains("model digest \"0123\""));
        assert!(err("bert:m@0123456789ABCDEF:2:9:16").contains("lowercase hex"));
        assert!(err("bert:m@0123456789abcdef@0:2:9:16").contains("model digest"));
        assert_eq!(id_digest(&[0xab; 32]), "abababababababab");
        assert!(err("bert:m@0123456789abcdef:x:9:16").contains("layers \"x\""));
        assert!(err("bert:m@0123456789abcdef:0:9:16").contains("0 layers"));
        assert!(err("bert:m@0123456789abcdef:2:9:12").contains("block 12"));
        assert!(err("bert:m@0123456789abcdef:2:17:16").contains("17 tokens"));
        assert!(err("bert:m@0123456789abcdef:2:1:16").contains("1 tokens"));
        assert!(err("bert:m@0123456789abcdef:2:9:1024").contains("block 1024"));
    }

    #[test]
    fn batches_round_trip_and_bad_ones_are_named() {
        let id = BertModelId::batch("m", D, 2, vec![9, 2, 16], 16).unwrap().with_labels(vec!["a".into(), "b".into()]);
        let id = id.unwrap();
        assert_eq!(id.to_string(), "bert:m@0123456789abcdef:2:9,2,16:16:a;b");
        assert_eq!(BertModelId::parse(&id.to_string()).unwrap(), Some(id.clone()));
        assert_eq!(id.encoder_only().lengths, [9, 2, 16]);
        let err = |s: &str| BertModelId::parse(s).unwrap_err();
        assert!(err("bert:m@0123456789abcdef:2:9,17:16").contains("17 tokens"));
        assert!(err("bert:m@0123456789abcdef:2:9,1:16").contains("1 tokens"));
        assert!(err("bert:m@0123456789abcdef:2:9,:16").contains("tokens \"\""));
        assert!(err("bert:m@0123456789abcdef:2:9;3:16").contains("tokens \"9;3\""));
        let many = vec!["4"; MAX_SENTENCES + 1].join(",");
        assert!(err(&format!("bert:m@0123456789abcdef:2:{many}:16")).contains("65 sentences"));
    }

    #[test]
    fn labels_round_trip_and_bad_ones_are_named() {
        let id = BertModelId::new("m", D, 2, 9, 16).unwrap().with_labels(vec!["a: b".into(), "c".into()]).unwrap();
        assert_eq!(id.to_string(), "bert:m@0123456789abcdef:2:9:16:a: b;c");
        assert_eq!(BertModelId::parse(&id.to_string()).unwrap(), Some(id.clone()));
        assert_eq!(id.encoder_only(), BertModelId::new("m", D, 2, 9, 16).unwrap());
        let err = |s: &str| BertModelId::parse(s).unwrap_err();
        assert!(err("bert:m@0123456789abcdef:2:9:16:one").contains("1 labels"));
        assert!(err("bert:m@0123456789abcdef:2:9:16:a;;b").contains("label \"\""));
        assert!(err("bert:m@0123456789abcdef:2:9:16:a; ").contains("label \" \""));
        assert!(err("bert:m@0123456789abcdef:2:9:16:a;b\n").contains("control"));
        let many = vec!["x"; MAX_LABELS + 1].join(";");
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:{many}")).contains("65 labels"));
        let long = "y".repeat(MAX_LABEL_BYTES + 1);
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:a;{long}")).contains("bytes"));
    }

    #[test]
    fn trained_heads_round_trip_and_bad_ones_are_named() {
        let digest = head_file_digest(b"weights");
        assert_eq!(digest.len(), DIGEST_HEX);
        let head = HeadChoice::Trained { file: "sst2.v1".into(), classes: 3, digest: digest.clone() };
        let id = BertModelId::new("m", D, 2, 9, 16).unwrap().with_head(head.clone()).unwrap();
        assert_eq!(id.to_string(), format!("bert:m@0123456789abcdef:2:9:16:head=sst2.v1/3/{digest}"));
        assert_eq!(BertModelId::parse(&id.to_string()).unwrap(), Some(id.clone()));
        assert_eq!(id.head.as_ref().map(HeadChoice::classes), Some(3));
        assert_eq!(id.encoder_only(), BertModelId::new("m", D, 2, 9, 16).unwrap());
        // With a ';', the same text is a zero-shot head's labels.
        let labels = BertModelId::parse("bert:m@0123456789abcdef:2:9:16:head=a/2;b").unwrap().unwrap();
        assert_eq!(labels.head, Some(HeadChoice::ZeroShot(vec!["head=a/2".into(), "b".into()])));
        let err = |s: &str| BertModelId::parse(s).unwrap_err();
        let d = &digest;
        assert!(err("bert:m@0123456789abcdef:2:9:16:head=sst2").contains("head=FILE/CLASSES/DIGEST"));
        assert!(err("bert:m@0123456789abcdef:2:9:16:head=sst2/2").contains("head=FILE/CLASSES/DIGEST"));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=a/b/2/{d}")).contains("head=FILE/CLASSES/DIGEST"));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=sst2/x/{d}")).contains("classes \"x\""));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=sst2/1/{d}")).contains("1 classes"));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=sst2/65/{d}")).contains("65 classes"));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=.x/2/{d}")).contains("head file \".x\""));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=/2/{d}")).contains("head file \"\""));
        assert!(err("bert:m@0123456789abcdef:2:9:16:head=x/2/0123").contains("head digest \"0123\""));
        assert!(err(&format!("bert:m@0123456789abcdef:2:9:16:head=x/2/{}", d.to_uppercase())).contains("lowercase hex"));
    }
}
