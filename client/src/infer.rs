//! `nexus infer`: a BERT-family sentence encoder run on encrypted input in
//! this process (latency mode, one sentence at a time): tokenize, embed and
//! encrypt on the client side; every encoder layer and the mean pooling on
//! ciphertexts; decrypt, normalise and compare with the plaintext model.

use anyhow::{bail, Context, Result};
use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::{Decryptor, Encoder, Encryptor, Evaluator, GaloisKeys, KeyGenerator, Parameters, Wire};
use nexus_nn::bert::encrypted::{EncoderPlan, EncryptedEncoder, LayerTimings};
use nexus_nn::bert::{cosine, BertWeights, TextTokenizer};
use nexus_nn::{Engine, Refresh};
use std::path::PathBuf;
use std::time::Instant;

/// Public calibration sentences: the ranges the approximations are fitted
/// on come from these, never from the user's input (the server must not
/// depend on it).
const CALIBRATION: &str = include_str!("../data/calibration.txt");

/// What to run.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    pub model: PathBuf,
    /// Sentences.
    pub texts: Vec<String>,
    /// Tokens per sentence, [CLS] and [SEP] included.
    pub max_tokens: usize,
    /// Parameter preset (needs a bootstrapping configuration).
    pub preset: String,
    /// Run only the first layers (quick measurements); all by default.
    pub layers: Option<usize>,
    /// Margin on the calibrated ranges.
    pub margin: f64,
}

/// One sentence's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InferResult {
    /// The sentence.
    pub text: String,
    /// Tokens after truncation.
    pub tokens: usize,
    /// Decrypted sentence embedding (pooled, normalised as configured).
    pub embedding: Vec<f64>,
    /// The plaintext model's embedding.
    pub plain_embedding: Vec<f64>,
    /// Cosine similarity of the two.
    pub cosine: f64,
    /// Wall time of the encrypted encoder (server side), seconds.
    pub seconds: f64,
    /// Per layer: seconds and per-piece breakdown.
    pub layers: Vec<LayerReport>,
    /// Client upload per query (seeded input ciphertext), bytes.
    pub upload_bytes: usize,
    /// Client download per query (the pooled result), bytes.
    pub download_bytes: usize,
    /// One-time evaluation keys (encoder rotations + bootstrapping), bytes.
    pub key_bytes: usize,
    /// Peak resident memory of the process so far, MB.
    pub peak_rss_mb: f64,
    /// Whether every value of this input stayed inside the calibrated
    /// ranges (else `warnings` says where it did not).
    pub in_range: bool,
    /// Values outside the calibrated ranges, one line each.
    pub warnings: Vec<String>,
}

/// One layer's time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// Wall time, seconds.
    pub seconds: f64,
    /// Per piece, seconds (bootstraps apart).
    #[serde(flatten)]
    pub pieces: LayerTimings,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Upload size of a key set, serialised one key at a time (the whole set
/// at once would double the memory for gigabytes of keys).
fn wire_bytes(params: &Parameters, keys: &GaloisKeys) -> Result<usize> {
    let mut total = 0;
    for g in keys.elements() {
        total += keys.get(g)?.to_bytes(params)?.len();
    }
    Ok(total)
}

/// Runs every sentence; `progress` gets one line per step.
pub fn run(options: &InferOptions, progress: &mut dyn FnMut(&str)) -> Result<Vec<InferResult>> {
    let mut weights = BertWeights::from_dir(&options.model)?;
    if let Some(layers) = options.layers {
        if layers == 0 || layers > weights.config.layers {
            bail!("--layers {layers}: the model has {} layers", weights.config.layers);
        }
        weights.layers.truncate(layers);
        weights.config.layers = layers;
    }
    let tokenizer = TextTokenizer::from_file(&options.model.join("tokenizer.json"))?;
    let params = Parameters::preset(&options.preset)?;
    let config = BootstrapConfig::for_preset(&options.preset)
        .with_context(|| format!("preset {} has no bootstrapping configuration", options.preset))?;
    let boot = Bootstrapper::new(&params, config)?;
    let level = boot.output_level();

    let calibration: Vec<Vec<u32>> = CALIBRATION
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| tokenizer.encode(l, options.max_tokens))
        .collect::<Result<_, _>>()?;
    let mut plan = EncoderPlan::calibrate(&weights, &calibration, options.margin)?;
    // A bootstrap leaves output_level levels, one of them kept for scaling
    // down before the next.
    plan.max_stage_depth = Some(level.saturating_sub(1));

    let start = Instant::now();
    let mut keygen = KeyGenerator::new(&params);
    let sk = keygen.secret_key();
    let boot_keys = boot.generate_keys(&mut keygen, &sk)?;
    let boot_key_bytes = wire_bytes(&params, &boot_keys.galois)? + boot_keys.relin.to_bytes(&params)?.len();
    progress(&format!(
        "bootstrapping keys: {} Galois keys, {:.0} MB, {:.1} s",
        boot_keys.galois.len(),
        boot_key_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    ));
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let mut results = Vec::new();
    for text in &options.texts {
        let ids = tokenizer.encode(text, options.max_tokens)?;
        let circuit = EncryptedEncoder::new(&weights, ids.len(), params.max_slots(), plan.clone())?;
        let start = Instant::now();
        let galois = circuit.generate_keys(&params, &mut keygen, &sk, level)?;
        let key_bytes = boot_key_bytes + wire_bytes(&params, &galois)?;
        progress(&format!(
            "{:?}: {} tokens, {} rotation keys ({:.0} MB) in {:.1} s",
            text,
            ids.len(),
            galois.len(),
            (key_bytes - boot_key_bytes) as f64 / 1e6,
            start.elapsed().as_secs_f64()
        ));
        // The client knows its plaintext: it checks that the input stays in
        // the ranges the server's approximations were fitted on.
        let (_, seen) = weights.encode(&ids)?;
        let warnings = plan.violations(&seen);
        for w in &warnings {
            progress(&format!("  warning: {w}: the encrypted result may be inaccurate (raise --margin)"));
        }

        // Client: embed, pack, encrypt (seeded: half the upload).
        let x = weights.embed(&ids)?;
        let pt = encoder.encode_real(&circuit.layout().pack(&x)?, level, params.default_scale())?;
        let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk)?;
        let upload_bytes = ct.to_bytes(&params)?.len();

        // Server: every layer on ciphertexts.
        let engine = Engine { eval: &eval, encoder: &encoder, rlk: &boot_keys.relin, galois: &galois };
        let refresh = Refresh { bootstrapper: &boot, keys: &boot_keys };
        let server = Instant::now();
        let mut ct = ct;
        let mut layers = Vec::new();
        for i in 0..weights.config.layers {
            let t = Instant::now();
            let mut timings = LayerTimings::default();
            ct = circuit.run_layer(i, &engine, &refresh, ct, &mut timings)?;
            let report = LayerReport { seconds: t.elapsed().as_secs_f64(), pieces: timings };
            progress(&format!(
                "  layer {}/{}: {:.1} s ({} bootstraps {:.1} s; without them: projections {:.1} s, attention {:.1} s, \
                 output {:.1} s, LayerNorms {:.1} s, feed-forward {:.1} s), peak {:.0} MB",
                i + 1,
                weights.config.layers,
                report.seconds,
                report.pieces.bootstrap_count,
                report.pieces.bootstraps,
                report.pieces.projections,
                report.pieces.attention,
                report.pieces.attention_out,
                report.pieces.layer_norms,
                report.pieces.feed_forward,
                peak_rss_mb()
            ));
            layers.push(report);
        }
        let pooled = circuit.mean_pool(&engine, &refresh, ct)?;
        let seconds = server.elapsed().as_secs_f64();
        let download_bytes = pooled.to_bytes(&params)?.len();

        // Client: decrypt, normalise, compare.
        let slots = encoder.decode_real(&Decryptor::new(&params).decrypt(&pooled, &sk)?)?;
        let mut embedding = circuit.unpack_pooled(&slots);
        if weights.config.normalize {
            let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            embedding.iter_mut().for_each(|v| *v /= norm);
        }
        let plain_embedding = weights.sentence_embedding(&ids)?;
        let cos = cosine(&embedding, &plain_embedding);
        progress(&format!("  cosine {cos:.6} in {seconds:.1} s"));
        results.push(InferResult {
            text: text.clone(),
            tokens: ids.len(),
            embedding,
            plain_embedding,
            cosine: cos,
            seconds,
            layers,
            upload_bytes,
            download_bytes,
            key_bytes,
            peak_rss_mb: peak_rss_mb(),
            in_range: warnings.is_empty(),
            warnings,
        });
    }
    Ok(results)
}
