//! `nexus demo`: an encrypted linear layer with a square activation over a
//! batch of token embeddings, at a 128-bit-secure preset, checked against the
//! same computation in plaintext f64.
//!
//! Layout: `tokens` rows of `features` values, row `t` in slots
//! `t*features .. (t+1)*features`. The server multiplies by the plaintext
//! weight row (repeated per token), sums each row with log2(features)
//! rotations, adds the bias and squares: slot `t*features` then holds
//! `(x_t . w + b)^2`.

use nexus_ckks::{Ciphertext, CkksError, Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, Parameters};
use std::time::Instant;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Parameter preset.
    pub preset: String,
    /// Number of tokens in the batch.
    pub tokens: usize,
    /// Features per token (a power of two).
    pub features: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { preset: "N16_QP1500_TERN".into(), tokens: 128, features: 256 }
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Preset used.
    pub preset: String,
    /// Whether the preset is 128-bit secure.
    pub secure: bool,
    /// Decrypted outputs, one per token.
    pub encrypted: Vec<f64>,
    /// Plaintext f64 outputs, one per token.
    pub plaintext: Vec<f64>,
    /// Max absolute error.
    pub max_abs_error: f64,
    /// Timings in milliseconds: (phase, ms).
    pub timings_ms: Vec<(&'static str, f64)>,
}

/// Deterministic pseudo-embeddings in [-1, 1] (a stand-in for real token
/// embeddings until the model issue lands).
fn synthetic(i: usize, salt: u64) -> f64 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt).rotate_left(17) ^ salt;
    (x % 20001) as f64 / 10000.0 - 1.0
}

/// Runs the demo, reporting progress lines through `progress`.
pub fn run(config: &DemoConfig, mut progress: impl FnMut(&str)) -> Result<DemoReport, CkksError> {
    let params = Parameters::preset(&config.preset)?;
    let (tokens, features) = (config.tokens, config.features);
    if !features.is_power_of_two() || tokens == 0 || tokens * features > params.max_slots() {
        return Err(CkksError::InvalidInput(format!(
            "{tokens} tokens x {features} features must fit {} slots with features a power of two",
            params.max_slots()
        )));
    }
    let mut timings = Vec::new();
    let mut timed = |name: &'static str, t: Instant, progress: &mut dyn FnMut(&str)| {
        let ms = t.elapsed().as_secs_f64() * 1e3;
        progress(&format!("{name:<28} {ms:>9.1} ms"));
        timings.push((name, ms));
    };
    let steps: Vec<i64> = (0..features.trailing_zeros()).map(|i| 1i64 << i).collect();

    progress(&format!(
        "preset {} (N = 2^{}, log QP = {:.0}, {}), {tokens} tokens x {features} features",
        config.preset,
        params.log_n(),
        params.log_qp(),
        if params.is_secure() { "128-bit secure" } else { "INSECURE test parameters" }
    ));
    let t = Instant::now();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let gks = kg.galois_keys(&sk, &steps, false)?;
    timed("client: key generation", t, &mut progress);

    let x: Vec<f64> = (0..tokens * features).map(|i| synthetic(i, 1)).collect();
    let w: Vec<f64> = (0..features).map(|i| synthetic(i, 2) / (features as f64).sqrt()).collect();
    let bias = 0.125;
    let enc = Encoder::new(&params);
    let t = Instant::now();
    let pt = enc.encode_real_slots(&x, params.max_slots(), params.max_level(), params.default_scale())?;
    let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk)?;
    timed("client: encode + encrypt", t, &mut progress);

    let eval = Evaluator::new(&params);
    let t = Instant::now();
    let w_rep: Vec<f64> = (0..tokens * features).map(|i| w[i % features]).collect();
    let level = ct.level();
    let w_pt = enc.encode_real_slots(&w_rep, params.max_slots(), level, params.q()[level] as f64)?;
    let mut acc: Ciphertext = eval.rescale(&eval.mul_plain(&ct, &w_pt)?)?;
    for &s in &steps {
        let r = eval.rotate(&acc, s, &gks)?;
        eval.add_assign(&mut acc, &r)?;
    }
    let acc = eval.add_const(&acc, bias)?;
    let out = eval.mul_relin_rescale(&acc, &acc, &rlk)?;
    timed("server: linear + square", t, &mut progress);

    let t = Instant::now();
    let slots = enc.decode_real(&Decryptor::new(&params).decrypt(&out, &sk)?)?;
    timed("client: decrypt + decode", t, &mut progress);

    let encrypted: Vec<f64> = (0..tokens).map(|t| slots[t * features]).collect();
    let plaintext: Vec<f64> = (0..tokens)
        .map(|t| {
            let dot: f64 = (0..features).map(|i| x[t * features + i] * w[i]).sum::<f64>() + bias;
            dot * dot
        })
        .collect();
    let max_abs_error = encrypted.iter().zip(&plaintext).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    Ok(DemoReport {
        preset: config.preset.clone(),
        secure: params.is_secure(),
        encrypted,
        plaintext,
        max_abs_error,
        timings_ms: timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_matches_plaintext_on_test_parameters() {
        let config = DemoConfig { preset: "INSECURE_N12_QP640_TEST".into(), tokens: 16, features: 64 };
        let report = run(&config, |_| {}).unwrap();
        assert_eq!(report.encrypted.len(), 16);
        assert!(report.max_abs_error < 1e-4, "max error {}", report.max_abs_error);
        assert!(!report.secure);
        let bad = DemoConfig { features: 48, ..config };
        assert!(run(&bad, |_| {}).is_err());
    }
}
