//! A model directory's files: `config.json`, `model.safetensors` (the
//! weights read against the tiny configuration when the config fails) and
//! a trained head (`heads/NAME.safetensors`), and the model ids queries
//! name (from clients over the network).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_nn::bert::head::ClassifierHead;
use nexus_nn::bert::{BertConfig, BertWeights};
use nexus_proto::models::BertModelId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = BertConfig::from_json(text);
        let _ = BertModelId::parse(text);
    }
    let _ = BertWeights::from_safetensors(BertConfig::tiny(), data);
    let _ = ClassifierHead::from_safetensors_bytes(data, std::path::Path::new("heads/fuzz.safetensors"), 32);
});
