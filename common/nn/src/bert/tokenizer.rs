//! Text to token ids with the model's own `tokenizer.json` (Hugging Face
//! `tokenizers`, pure-Rust regex backend).

use crate::error::{invalid, NnError};
use std::path::Path;

/// The tokenizer's file in a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish()
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, NnError> {
        let bytes = std::fs::read(path).map_err(|e| invalid("tokenizer", format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// A `tokenizer.json`'s bytes (`name` says where they came from).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, NnError> {
        let mut inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| invalid("tokenizer", format!("{name}: {e}")))?;
        // Sentence-transformers' tokenizer.json pads to 128 tokens; the
        // encrypted model sees the real tokens only, truncated here.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| invalid("tokenizer", format!("{name}: {e}")))?;
        Ok(Self { inner })
    }

    /// Ids of `text` with the special tokens ([CLS] ... [SEP]), truncated to
    /// `max_tokens` (the last kept token stays [SEP]).
    pub fn encode(&self, text: &str, max_tokens: usize) -> Result<Vec<u32>, NnError> {
        if max_tokens < 2 {
            return Err(invalid("tokenizer", format!("max_tokens {max_tokens}: need room for [CLS] and [SEP]")));
        }
        let encoding = self.inner.encode(text, true).map_err(|e| invalid("tokenizer", format!("{text:?}: {e}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > max_tokens {
            let sep = ids[ids.len() - 1];
            ids.truncate(max_tokens - 1);
            ids.push(sep);
        }
        Ok(ids)
    }
}
