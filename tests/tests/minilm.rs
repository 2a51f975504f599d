//! The real model: all-MiniLM-L6-v2 loaded from its safetensors and
//! tokenizer.json, its plaintext forward pass checked against embeddings
//! computed independently (numpy, ops/models/reference_embeddings.py).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_nn::bert::{cosine, BertWeights, TextTokenizer};

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<Sentence>,
}

#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

#[test]
fn minilm_reference_matches_independent_embeddings() {
    let Some(dir) = nexus_tests::minilm_dir() else { return };
    let fixture: Fixture =
        serde_json::from_str(include_str!("../fixtures/minilm-embeddings.json")).expect("fixture parses");
    let weights = BertWeights::from_dir(&dir).expect("MiniLM loads");
    assert_eq!((weights.config.layers, weights.config.hidden, weights.config.heads), (6, 384, 12));
    assert!(weights.config.normalize, "modules.json names Normalize");
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).expect("tokenizer loads");
    for s in &fixture.sentences {
        let ids = tokenizer.encode(&s.text, 128).expect("tokenizes");
        assert_eq!(ids, s.ids, "token ids of {:?}", s.text);
        let e = weights.sentence_embedding(&ids).expect("forward pass");
        let max_diff = e.iter().zip(&s.embedding).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let cos = cosine(&e, &s.embedding);
        eprintln!("{:?}: cosine {cos:.12}, max diff {max_diff:.2e}", s.text);
        assert!(cos > 1.0 - 1e-9 && max_diff < 1e-6, "{:?}: cosine {cos}, max diff {max_diff}", s.text);
    }
    // Truncation keeps [SEP] last.
    let ids = tokenizer.encode(&fixture.sentences[0].text, 5).expect("tokenizes");
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[4], 102);
    // Different sentences embed differently.
    let a = weights.sentence_embedding(&fixture.sentences[0].ids).expect("forward");
    let b = weights.sentence_embedding(&fixture.sentences[2].ids).expect("forward");
    assert!(cosine(&a, &b) < 0.9);
}

#[test]
fn mis_shaped_checkpoints_are_refused_by_name() {
    let Some(dir) = nexus_tests::minilm_dir() else { return };
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("reads");
    let mut config = nexus_nn::bert::BertConfig::from_dir(&dir).expect("config");
    config.intermediate = 1024;
    let err = BertWeights::from_safetensors(config, &bytes).expect_err("wrong FFN width").to_string();
    assert!(err.contains("encoder.layer.0.intermediate.dense.weight has shape [1536, 384]"), "{err}");
}

#[test]
fn minilm_value_ranges_are_reported() {
    let Some(dir) = nexus_tests::minilm_dir() else { return };
    let weights = BertWeights::from_dir(&dir).expect("MiniLM loads");
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).expect("tokenizer loads");
    let ids: Vec<Vec<u32>> =
        nexus_nn::bert::served::CALIBRATION.lines().map(|l| tokenizer.encode(l, 32).expect("tokenizes")).collect();
    let plan = nexus_nn::bert::encrypted::EncoderPlan::calibrate(&weights, &ids, 1.0).expect("calibrates");
    eprintln!("input bound {:.2}", plan.input_bound);
    for (i, r) in plan.layers.iter().enumerate() {
        eprintln!(
            "layer {i}: scores [{:.1}, {:.1}], gelu [{:.1}, {:.1}], attention var [{:.3}, {:.1}], ffn var [{:.3}, {:.1}], output [{:.1}, {:.1}], activations [{:.1}, {:.1}]",
            r.scores.min, r.scores.max, r.gelu.min, r.gelu.max, r.attention_variance.min, r.attention_variance.max,
            r.ffn_variance.min, r.ffn_variance.max, r.output.min, r.output.max, r.activations.min, r.activations.max
        );
        assert!(r.scores.min < r.scores.max);
    }
}
