//! A model directory's files: `config.json` and `model.safetensors` (the
//! weights read against the tiny configuration when the config fails).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_nn::bert::{BertConfig, BertWeights};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = BertConfig::from_json(text);
    }
    let _ = BertWeights::from_safetensors(BertConfig::tiny(), data);
});
