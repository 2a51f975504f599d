//! Operator benchmarks at 128-bit-secure parameters against the NEXUS
//! reference's cases (same sizes, same inputs).
//!
//! `cargo run --release -p nexus-nn --example bench -- --case CASE --threads T --json`
//! with CASE in matmul, gelu, layernorm, softmax, argmax8, argmax30522
//! prints one JSON object (for argmax the errors are against the exact
//! one-hot vector):
//! `{"case", "ms", "mean_abs_err", "max_abs_err", "peak_rss_mb", "log_n", "secure"}`.
//! `ms` is the median over `--repeats` runs of the operator alone (no key
//! generation, encryption, decryption, or model-time weight encoding, which
//! is reported separately as `prepare_ms`), like the reference's timers.

use clap::Parser;
use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::*;
use nexus_nn::functions::gelu;
use nexus_nn::matmul::expand::expansion_galois_elements;
use nexus_nn::{Argmax, CompressedMatMul, Engine, Gelu, HeadAttention, LayerNorm, Refresh, RowLayout, Softmax};
use rand::{Rng, SeedableRng};
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "NEXUS operator benchmarks")]
struct Args {
    /// matmul, gelu, layernorm, softmax.
    #[arg(long)]
    case: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Argmax: hold the Galois keys' uniform halves in memory instead of
    /// regenerating them from their seeds at every key switch (faster,
    /// about twice the key memory).
    #[arg(long)]
    full_keys: bool,
}

struct Outcome {
    ms: f64,
    prepare_ms: f64,
    got: Vec<f64>,
    want: Vec<f64>,
    params: Parameters,
    detail: String,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    let outcome = pool.install(|| match args.case.as_str() {
        "matmul" => matmul(&args),
        "gelu" => gelu_case(&args),
        "layernorm" => layernorm(&args),
        "softmax" => softmax(&args),
        "attention" => attention(&args),
        "argmax8" => argmax(&args, 8),
        "argmax30522" => argmax(&args, 30522),
        other => {
            Err(format!("unknown case {other:?}: expected matmul, gelu, layernorm, softmax, argmax8 or argmax30522")
                .into())
        }
    })?;
    let errs: Vec<f64> = outcome.got.iter().zip(&outcome.want).map(|(g, w)| (g - w).abs()).collect();
    let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
    let max = errs.iter().cloned().fold(0.0, f64::max);
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    let p = &outcome.params;
    if args.json {
        let line = serde_json::json!({
            "case": args.case, "ms": outcome.ms, "mean_abs_err": mean, "max_abs_err": max,
            "peak_rss_mb": rss, "log_n": p.log_n(), "secure": p.is_secure(), "threads": args.threads,
            "prepare_ms": outcome.prepare_ms, "detail": outcome.detail,
        });
        println!("{line}");
    } else {
        println!(
            "{}: {:.1} ms (prepare {:.1} ms), mean abs err {mean:.2e}, max {max:.2e}, peak RSS {rss:.0} MB, N = 2^{}, secure {}, {}",
            args.case,
            outcome.ms,
            outcome.prepare_ms,
            p.log_n(),
            p.is_secure(),
            outcome.detail
        );
    }
    Ok(())
}

fn median_ms<T>(repeats: usize, mut f: impl FnMut() -> Result<T, BoxError>) -> Result<(f64, T), BoxError> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let out = last.ok_or("no run")?;
    Ok((times[times.len() / 2], out))
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Setup {
    params: Parameters,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinKey,
    galois: GaloisKeys,
    eval: Evaluator,
    encoder: Encoder,
}

impl Setup {
    fn new(preset: &str, elements: &[usize], steps: &[i64]) -> Result<Self, BoxError> {
        let params = Parameters::preset(preset)?;
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let rlk = kg.relin_key(&sk);
        let mut elements = elements.to_vec();
        elements.extend(steps.iter().map(|&s| params.galois_element_for_rotation(s)));
        let galois = kg.galois_keys_for_elements(&sk, &elements)?;
        Ok(Self { eval: Evaluator::new(&params), encoder: Encoder::new(&params), params, sk, pk, rlk, galois })
    }
    fn engine(&self) -> Engine<'_> {
        Engine { eval: &self.eval, encoder: &self.encoder, rlk: &self.rlk, galois: &self.galois }
    }
    /// Encrypts at `level`: the operators run on ciphertexts holding exactly
    /// the levels they consume, as a planner places them (a higher level only
    /// makes every limb-wise step slower).
    fn encrypt(&self, v: &[f64], level: usize) -> Result<Ciphertext, BoxError> {
        let pt = self.encoder.encode_real(v, level, self.params.default_scale())?;
        Ok(Encryptor::new(&self.params).encrypt_pk(&pt, &self.pk)?)
    }
    fn decrypt(&self, ct: &Ciphertext) -> Result<Vec<f64>, BoxError> {
        Ok(self.encoder.decode_real(&Decryptor::new(&self.params).decrypt(ct, &self.sk)?)?)
    }
}

fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
}

/// 4096x768 (plaintext) by 768x64 (encrypted), uniform(-1, 1).
fn matmul(args: &Args) -> Result<Outcome, BoxError> {
    let (m, n, k) = (4096, 768, 64);
    let params = Parameters::preset("N13_QP147_TERN")?;
    let s = Setup::new("N13_QP147_TERN", &expansion_galois_elements(&params), &[])?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let a: Vec<f64> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mm = CompressedMatMul::new(&s.params, m, n, k)?;
    let level = s.params.max_level();
    let inputs = mm
        .pack(&b)?
        .iter()
        .map(|c| {
            let pt = s.encoder.encode_coefficients(c, level, s.params.default_scale())?;
            Ok(Encryptor::new(&s.params).encrypt_sk(&pt, &s.sk)?)
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let t = Instant::now();
    let weights = mm.encode_weights(&s.encoder, &a, level, 2f64.powi(30))?;
    let prepare_ms = t.elapsed().as_secs_f64() * 1e3;
    let engine = s.engine();
    let (ms, out) = median_ms(args.repeats, || {
        let partials = mm
            .tiles()
            .into_iter()
            .map(|tile| mm.run_tile(&engine, tile, &inputs[tile.input], &weights))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(mm.assemble(&engine, partials)?)
    })?;
    let decoded = out
        .iter()
        .map(|cols| cols.iter().map(|c| s.decrypt(c)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()?;
    let got = mm.unpack(&decoded)?;
    let want = mm.plain(&a, &b);
    let detail = format!("{} input ciphertexts, {} key switches", mm.inputs(), n * k - mm.inputs());
    Ok(Outcome { ms, prepare_ms, got, want, params: s.params, detail })
}

/// 32768 values linspace(-5, 5), one full-slot ciphertext.
fn gelu_case(args: &Args) -> Result<Outcome, BoxError> {
    let s = Setup::new("N16_QP1500_TERN", &[], &[])?;
    let g = Gelu::bert_default()?;
    let x = linspace(-5.0, 5.0, s.params.max_slots());
    let ct = s.encrypt(&x, g.cost().levels)?;
    let (ms, out) = median_ms(args.repeats, || Ok(g.apply(&s.engine(), &ct)?))?;
    let got = s.decrypt(&out)?;
    let want = x.iter().map(|&v| gelu(v)).collect();
    let detail = format!("degree {} on [-{r}, {r}], {} levels", g.degree(), g.cost().levels, r = g.range());
    Ok(Outcome { ms, prepare_ms: 0.0, got, want, params: s.params, detail })
}

/// 16 rows of 768, each linspace(-10, 10); gamma 1, beta 0 (the reference's
/// case), but the mean, gamma and beta are computed.
fn layernorm(args: &Args) -> Result<Outcome, BoxError> {
    let params = Parameters::preset("N16_QP1500_TERN")?;
    let layout = RowLayout::new(16, 768, params.max_slots())?;
    let s = Setup::new("N16_QP1500_TERN", &[], &layout.sum_rotations())?;
    let ln = LayerNorm::new(layout.clone(), vec![1.0; 768], vec![0.0; 768], 1e-12, (0.25, 256.0), 1e-5)?;
    let rows = vec![linspace(-10.0, 10.0, 768); 16];
    let ct = s.encrypt(&layout.pack(&rows)?, ln.cost(&s.params).levels)?;
    let (ms, out) = median_ms(args.repeats, || Ok(ln.apply(&s.engine(), &ct)?))?;
    let got: Vec<f64> = layout.unpack(&s.decrypt(&out)?)?.concat();
    let want: Vec<f64> = rows
        .iter()
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / 768.0;
            let sd = (row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 768.0).sqrt();
            row.iter().map(move |x| (x - mean) / sd).collect::<Vec<_>>()
        })
        .collect();
    let c = ln.cost(&s.params);
    let detail = format!(
        "variance in [0.25, 256], invsqrt degree {} + {} Newton steps, {} levels, {} rotations",
        ln.invsqrt().degree(),
        ln.invsqrt().steps(),
        c.levels,
        c.rotations
    );
    Ok(Outcome { ms, prepare_ms: 0.0, got, want, params: s.params, detail })
}

/// 128 rows of 128, each linspace(-10, 0); declared input range [-10, 0].
fn softmax(args: &Args) -> Result<Outcome, BoxError> {
    let params = Parameters::preset("N16_QP1500_TERN")?;
    let layout = RowLayout::new(128, 128, params.max_slots())?;
    let s = Setup::new("N16_QP1500_TERN", &[], &layout.sum_rotations())?;
    let sm = Softmax::new(layout.clone(), -10.0, 0.0, 1e-5)?;
    let rows = vec![linspace(-10.0, 0.0, 128); 128];
    let ct = s.encrypt(&layout.pack(&rows)?, sm.cost(&s.params).levels)?;
    let (ms, out) = median_ms(args.repeats, || Ok(sm.apply(&s.engine(), &ct)?))?;
    let got: Vec<f64> = layout.unpack(&s.decrypt(&out)?)?.concat();
    let want: Vec<f64> = rows
        .iter()
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = row.iter().map(|x| (x - m).exp()).sum();
            row.iter().map(move |x| (x - m).exp() / sum).collect::<Vec<_>>()
        })
        .collect();
    let c = sm.cost(&s.params);
    let detail = format!(
        "exp degree {}, inverse degree {} + {} steps, {} levels, {} rotations",
        sm.exp_degree(),
        sm.inverse().degree(),
        sm.inverse().steps(),
        c.levels,
        c.rotations
    );
    Ok(Outcome { ms, prepare_ms: 0.0, got, want, params: s.params, detail })
}

/// Argmax over `m` values uniform in [-0.5, 0.5] with the top value placed
/// exactly the stated resolution above the runner-up, at the bootstrapping
/// preset (one refresh whenever a sign stage runs out of levels). The
/// Galois keys are lean unless `--full-keys`: the bootstrapping keys alone
/// would otherwise take 8.9 GB, over the 8 GiB budget.
fn argmax(args: &Args, m: usize) -> Result<Outcome, BoxError> {
    let preset = "N16_QP1545_H192";
    let params = Parameters::preset(preset)?;
    let config = BootstrapConfig::for_preset(preset).ok_or("no bootstrapping configuration")?;
    let boot = Bootstrapper::new(&params, config)?;
    let argmax = Argmax::new(m, 0.5, 2f64.powi(-8), 2f64.powi(-10), boot.output_level() - 3)?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = if args.full_keys { boot.generate_keys(&mut kg, &sk)? } else { boot.generate_lean_keys(&mut kg, &sk)? };
    // Argmax rotates only ciphertexts at or below the bootstrapping output
    // level: its keys need only those limbs (a fraction of full-level keys).
    let mut galois = GaloisKeys::new();
    for r in argmax.rotations() {
        let key = kg
            .galois_key(&sk, params.galois_element_for_rotation(r))?
            .restricted_to_level(&params, boot.output_level());
        galois.insert(if args.full_keys { key } else { key.lean() });
    }
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &keys.relin, galois: &galois };
    let refresh = Refresh { bootstrapper: &boot, keys: &keys };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut values: Vec<f64> = (0..m).map(|_| rng.gen_range(-0.5..0.5 - argmax.min_gap())).collect();
    let top = rng.gen_range(0..m);
    let runner_up = values.iter().cloned().fold(f64::MIN, f64::max);
    values[top] = runner_up + argmax.min_gap();
    let pt =
        encoder.encode_real(&argmax.pack(&values, params.max_slots())?, boot.output_level(), params.default_scale())?;
    let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk)?;
    let (ms, out) = median_ms(args.repeats, || Ok(argmax.apply(&engine, &ct, Some(&mut { refresh }))?))?;
    let got = encoder.decode_real(&Decryptor::new(&params).decrypt(&out, &sk)?)?[..m].to_vec();
    let want: Vec<f64> = (0..m).map(|i| if i == top { 1.0 } else { 0.0 }).collect();
    let detail = format!(
        "{} rounds, min gap {:.4} of [-0.5, 0.5], sign degrees {:?}, {} Galois keys for bootstrapping ({})",
        argmax.rounds(),
        argmax.min_gap(),
        argmax.comparator().sign().stages().iter().map(|s| s.degree()).collect::<Vec<_>>(),
        keys.galois.len(),
        if args.full_keys { "full" } else { "lean" }
    );
    Ok(Outcome { ms, prepare_ms: 0.0, got, want, params, detail })
}

/// One BERT-base head: Q K^T and A V for 128 tokens, head dimension 64,
/// uniform(-1, 1) inputs (A uniform in [0, 1/64]); `ms` is both products.
fn attention(args: &Args) -> Result<Outcome, BoxError> {
    let params = Parameters::preset("N16_QP1500_TERN")?;
    let head = HeadAttention::new(128, 64, params.max_slots())?;
    let s = Setup::new("N16_QP1500_TERN", &[], &head.rotations())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let mut mat = |rows: usize, cols: usize, hi: f64, lo: f64| -> Vec<Vec<f64>> {
        (0..rows).map(|_| (0..cols).map(|_| rng.gen_range(lo..hi)).collect()).collect()
    };
    let (q, k, v) = (mat(128, 64, 1.0, -1.0), mat(128, 64, 1.0, -1.0), mat(128, 64, 1.0, -1.0));
    let a = mat(128, 128, 1.0 / 64.0, 0.0);
    let qc = s.encrypt(&head.pack_interleaved(&q)?, head.scores_cost(&s.params).levels)?;
    let kc = s.encrypt(&head.pack_row_major(&k)?, head.scores_cost(&s.params).levels)?;
    let ac = s.encrypt(&head.pack_scores(&a)?, head.weighted_sum_cost(&s.params).levels)?;
    let vc = s.encrypt(&head.pack_row_major(&v)?, head.weighted_sum_cost(&s.params).levels)?;
    let engine = s.engine();
    let (ms, (sc, oc)) =
        median_ms(args.repeats, || Ok((head.scores(&engine, &qc, &kc)?, head.weighted_sum(&engine, &ac, &vc)?)))?;
    let mut got: Vec<f64> = head.unpack_scores(&s.decrypt(&sc)?).concat();
    got.extend(head.unpack_interleaved(&s.decrypt(&oc)?).concat());
    let mut want: Vec<f64> = HeadAttention::plain_scores(&q, &k).concat();
    want.extend(HeadAttention::plain_weighted_sum(&a, &v).concat());
    let detail = format!(
        "128 tokens, head dim 64: {} + {} rotations, {} + {} levels",
        head.scores_cost(&s.params).rotations,
        head.weighted_sum_cost(&s.params).rotations,
        head.scores_cost(&s.params).levels,
        head.weighted_sum_cost(&s.params).levels
    );
    Ok(Outcome { ms, prepare_ms: 0.0, got, want, params: s.params, detail })
}
