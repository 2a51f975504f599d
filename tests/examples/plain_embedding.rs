//! The plaintext sentence embedding a BERT-family query's encrypted result
//! is compared with: the same model directory, layers and block as the
//! client's `nexus keygen --model bert`, run in f64. Prints one JSON array
//! per text, one per line.
//!
//! `cargo run --release -p nexus-tests --example plain_embedding -- MODEL_DIR LAYERS MAX_TOKENS PRESET TEXT...`
//! (used by `ops/bench/bert-cluster.sh`).

use nexus_ckks::Parameters;
use nexus_client::encoder::ClientEncoder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, layers, max_tokens, preset, texts @ ..] = args.as_slice() else {
        return Err("usage: plain_embedding MODEL_DIR LAYERS MAX_TOKENS PRESET TEXT...".into());
    };
    let layers: usize = layers.parse().map_err(|e| format!("LAYERS {layers:?}: {e}"))?;
    let max_tokens: usize = max_tokens.parse().map_err(|e| format!("MAX_TOKENS {max_tokens:?}: {e}"))?;
    let params = Parameters::preset(preset)?;
    let encoder = ClientEncoder::load(std::path::Path::new(dir), Some(layers), max_tokens, 1, preset, &params)?;
    for text in texts {
        println!("{}", serde_json::to_string(&encoder.plain_embedding(text)?)?);
    }
    Ok(())
}
