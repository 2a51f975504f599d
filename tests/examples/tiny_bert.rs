//! Writes the tiny random BERT of the tests (`nexus_tests::write_tiny_bert`:
//! 2 layers, hidden 32, a vocabulary of a few words) into a model
//! directory, for quick runs of the scripts that take a model directory
//! (`NEXUS_MINILM_DIR=DIR ops/bench/bert-cluster.sh 2`, at an insecure
//! preset).
//!
//! `cargo run --release -p nexus-tests --example tiny_bert -- DIR`

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let dir = std::env::args().nth(1).ok_or("usage: tiny_bert DIR")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir}: {e}"))?;
    nexus_tests::write_tiny_bert(std::path::Path::new(&dir));
    println!("{dir}");
    Ok(())
}
