//! Engine benchmark, one JSON object per line with `--json`:
//!
//! ```text
//! cargo run --release -p nexus-ckks --example bench -- --preset bench-n16-l27 --threads 1 --json
//! ```
//!
//! Each operation runs `--repeats` times after one warm-up; the median is
//! reported with the precision of its result (bits = -log2 of the max abs
//! error against the exact complex result, inputs uniform in [-1, 1]).

use clap::Parser;
use nexus_ckks::math::NttTable;
use nexus_ckks::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "nexus-ckks operation benchmark")]
struct Args {
    /// Parameter preset (default: bench-n16-l27; for --op bootstrap the
    /// default 128-bit bootstrapping preset).
    #[arg(long)]
    preset: Option<String>,
    /// Worker threads (rayon).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed repetitions per operation (median reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Comma-separated operations to run (default: all).
    #[arg(long)]
    ops: Option<String>,
    /// Single operation (same as --ops with one name).
    #[arg(long)]
    op: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// `--op bootstrap`: slots of the refreshed ciphertexts (a power of
    /// two; default all N/2, fewer for sparse-slot bootstrapping).
    #[arg(long)]
    slots: Option<usize>,
    /// `--op bootstrap`: hold the Galois keys in full. By default they are
    /// lean (uniform halves regenerated from their seeds at every key
    /// switch): half the key memory, under the 8 GiB the bootstrapping
    /// issue allows, for about 10% more time.
    #[arg(long, conflicts_with = "lean_keys")]
    full_keys: bool,
    /// `--op bootstrap`: lean Galois keys (the default; kept for scripts).
    #[arg(long)]
    lean_keys: bool,
}

/// The default 128-bit full-slot bootstrapping preset, once it exists; see
/// docs/PERFORMANCE.md for the test-size preset that runs today.
const DEFAULT_BOOTSTRAP_PRESET: Option<&str> = Some("N16_QP1545_H192");
const TEST_BOOTSTRAP_PRESET: &str = "INSECURE_N12_QP1121_H32_BOOT_TEST";

const ALL_OPS: &[&str] = &[
    "ntt_forward_limb",
    "ntt_forward_limb_portable",
    "ntt_forward_limb_wide",
    "ntt_inverse_limb",
    "encode",
    "encode_level0",
    "encrypt_pk",
    "decrypt",
    "add",
    "mul_plain",
    "mul_relin_rescale",
    "rescale",
    "rotate",
    "rotate_mid",
    "rotate_hoisted_8",
    "serialize",
    "deserialize",
    "sizes",
];

fn median_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn rss(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bits(got: &[Complex64], want: &[Complex64]) -> f64 {
    let err = got.iter().zip(want).map(|(a, b)| (a - b).norm()).fold(0.0, f64::max);
    -err.log2()
}

struct Reporter<'a> {
    args: &'a Args,
    params: &'a Parameters,
}

impl Reporter<'_> {
    fn emit(&self, op: &str, median_ms: Option<f64>, precision: Option<f64>, extra: &[(&str, String)]) {
        let p = self.params;
        if self.args.json {
            let mut fields = vec![format!("\"op\": \"{op}\"")];
            if let Some(ms) = median_ms {
                fields.push(format!("\"median_ms\": {ms:.4}"));
            }
            fields.push(format!("\"log_n\": {}", p.log_n()));
            fields.push(format!("\"limbs\": {}", p.q().len()));
            fields.push(format!("\"dnum\": {}", p.dnum()));
            fields.push(format!("\"threads\": {}", self.args.threads));
            fields.push(match precision {
                Some(b) => format!("\"precision_bits\": {b:.2}"),
                None => "\"precision_bits\": null".into(),
            });
            for (k, v) in extra {
                fields.push(format!("\"{k}\": {v}"));
            }
            println!("{{{}}}", fields.join(", "));
        } else {
            let ms = median_ms.map(|m| format!("{m:10.3} ms")).unwrap_or_else(|| "           -".into());
            let pb = precision.map(|b| format!("{b:6.2} bits")).unwrap_or_default();
            let ex: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{op:28} {ms}  {pb}  {}", ex.join(" "));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    pool.install(|| run(&args))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.op.as_deref() == Some("bootstrap") {
        return run_bootstrap(args);
    }
    let preset = args.preset.clone().unwrap_or_else(|| "bench-n16-l27".into());
    let params = Parameters::preset(&preset)?;
    let wanted: Vec<String> = match (&args.op, &args.ops) {
        (Some(op), _) => vec![op.clone()],
        (None, Some(list)) => list.split(',').map(|s| s.trim().to_string()).collect(),
        (None, None) => ALL_OPS.iter().map(|s| s.to_string()).collect(),
    };
    for w in &wanted {
        if !ALL_OPS.contains(&w.as_str()) {
            return Err(format!("unknown op {w:?}; known: {}", ALL_OPS.join(", ")).into());
        }
    }
    let want = |op: &str| wanted.iter().any(|w| w == op);
    let r = Reporter { args, params: &params };
    let reps = args.repeats;
    let slots = params.max_slots();
    let top = params.max_level();
    let scale = params.default_scale();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut rand_vec = || -> Vec<Complex64> {
        (0..slots).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect()
    };
    let (a, b) = (rand_vec(), rand_vec());

    if want("ntt_forward_limb") || want("ntt_forward_limb_portable") {
        // A 40-bit chain prime: the IFMA path where available.
        let q = nexus_ckks::math::Modulus::new(params.q()[1])?;
        let table = NttTable::new(params.n(), q)?;
        let mut data: Vec<u64> = (0..params.n() as u64).map(|i| i * 7919 % q.value()).collect();
        if want("ntt_forward_limb") {
            let ms = median_ms(reps * 20, || table.forward(&mut data));
            r.emit("ntt_forward_limb", Some(ms), None, &[("ifma", table.uses_ifma().to_string())]);
        }
        if want("ntt_forward_limb_portable") {
            let ms = median_ms(reps * 20, || table.forward_portable(&mut data));
            r.emit("ntt_forward_limb_portable", Some(ms), None, &[]);
        }
    }
    if want("ntt_inverse_limb") {
        let q = nexus_ckks::math::Modulus::new(params.q()[1])?;
        let table = NttTable::new(params.n(), q)?;
        let mut data: Vec<u64> = (0..params.n() as u64).map(|i| i * 7919 % q.value()).collect();
        let ms = median_ms(reps * 20, || table.inverse(&mut data));
        r.emit("ntt_inverse_limb", Some(ms), None, &[("ifma", table.uses_ifma().to_string())]);
    }
    if want("ntt_forward_limb_wide") {
        // The widest chain prime (59-61 bits at the bootstrapping presets:
        // emulated 64-bit products).
        let widest = params.q().iter().copied().max().unwrap_or(params.q()[0]);
        let q = nexus_ckks::math::Modulus::new(widest)?;
        let table = NttTable::new(params.n(), q)?;
        let mut data: Vec<u64> = (0..params.n() as u64).map(|i| i * 7919 % q.value()).collect();
        let ms = median_ms(reps * 20, || table.forward(&mut data));
        let bits = (64 - widest.leading_zeros()).to_string();
        r.emit("ntt_forward_limb_wide", Some(ms), None, &[("bits", bits)]);
    }

    let needs_keys = wanted.iter().any(|w| !w.starts_with("ntt") && !w.starts_with("encode"));
    let enc = Encoder::new(&params);
    if want("encode") {
        let ms = median_ms(reps, || {
            std::hint::black_box(enc.encode_complex(&a, top, scale).ok());
        });
        let pt = enc.encode_complex(&a, top, scale)?;
        let back = enc.decode_complex(&pt)?;
        r.emit("encode", Some(ms), Some(bits(&back, &a)), &[]);
    }
    if want("encode_level0") {
        // One limb: the special FFT and the rounding, nearly without NTTs.
        let ms = median_ms(reps, || {
            std::hint::black_box(enc.encode_complex(&a, 0, scale).ok());
        });
        r.emit("encode_level0", Some(ms), None, &[]);
    }
    if !needs_keys {
        return Ok(());
    }

    let t = Instant::now();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let steps: Vec<i64> = (1..=8).collect();
    let gks = kg.galois_keys(&sk, &steps, false)?;
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    if !args.json {
        println!(
            "# preset {} (log N {}, {} limbs, {} special, dnum {}), keygen {keygen_ms:.0} ms",
            preset,
            params.log_n(),
            params.q().len(),
            params.p().len(),
            params.dnum()
        );
    }
    let encryptor = Encryptor::new(&params);
    let dec = Decryptor::new(&params);
    let eval = Evaluator::new(&params);
    let pa = enc.encode_complex(&a, top, scale)?;
    let pb = enc.encode_complex(&b, top, scale)?;
    let ca = encryptor.encrypt_pk(&pa, &pk)?;
    let cb = encryptor.encrypt_pk(&pb, &pk)?;
    let decode = |ct: &Ciphertext| -> Result<Vec<Complex64>, CkksError> { enc.decode_complex(&dec.decrypt(ct, &sk)?) };
    let rotated = |v: &[Complex64], s: usize| -> Vec<Complex64> { (0..slots).map(|i| v[(i + s) % slots]).collect() };

    if want("encrypt_pk") {
        let ms = median_ms(reps, || {
            std::hint::black_box(encryptor.encrypt_pk(&pa, &pk).ok());
        });
        r.emit("encrypt_pk", Some(ms), Some(bits(&decode(&ca)?, &a)), &[]);
    }
    if want("decrypt") {
        let ms = median_ms(reps, || {
            std::hint::black_box(dec.decrypt(&ca, &sk).ok());
        });
        r.emit("decrypt", Some(ms), Some(bits(&decode(&ca)?, &a)), &[]);
    }
    if want("add") {
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.add(&ca, &cb).ok());
        });
        let want_v: Vec<Complex64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        r.emit("add", Some(ms), Some(bits(&decode(&eval.add(&ca, &cb)?)?, &want_v)), &[]);
    }
    let prod: Vec<Complex64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    if want("mul_plain") {
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.mul_plain(&ca, &pb).ok());
        });
        let out = eval.rescale(&eval.mul_plain(&ca, &pb)?)?;
        r.emit("mul_plain", Some(ms), Some(bits(&decode(&out)?, &prod)), &[]);
    }
    if want("mul_relin_rescale") {
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.mul_relin_rescale(&ca, &cb, &rlk).ok());
        });
        let out = eval.mul_relin_rescale(&ca, &cb, &rlk)?;
        r.emit("mul_relin_rescale", Some(ms), Some(bits(&decode(&out)?, &prod)), &[]);
    }
    if want("rescale") {
        let m = eval.mul_relin(&ca, &cb, &rlk)?;
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.rescale(&m).ok());
        });
        r.emit("rescale", Some(ms), Some(bits(&decode(&eval.rescale(&m)?)?, &prod)), &[]);
    }
    if want("rotate") {
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.rotate(&ca, 1, &gks).ok());
        });
        r.emit("rotate", Some(ms), Some(bits(&decode(&eval.rotate(&ca, 1, &gks)?)?, &rotated(&a, 1))), &[]);
    }
    if want("rotate_mid") {
        let mid = eval.drop_to_level(&ca, top / 2)?;
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.rotate(&mid, 1, &gks).ok());
        });
        r.emit(
            "rotate_mid",
            Some(ms),
            Some(bits(&decode(&eval.rotate(&mid, 1, &gks)?)?, &rotated(&a, 1))),
            &[("level", (top / 2).to_string())],
        );
    }
    if want("rotate_hoisted_8") {
        let ms = median_ms(reps, || {
            std::hint::black_box(eval.rotate_hoisted(&ca, &steps, &gks).ok());
        });
        let outs = eval.rotate_hoisted(&ca, &steps, &gks)?;
        let worst = outs
            .iter()
            .zip(&steps)
            .map(|(o, &s)| decode(o).map(|d| bits(&d, &rotated(&a, s as usize))))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        r.emit("rotate_hoisted_8", Some(ms), Some(worst), &[]);
    }
    // A fresh public-key ciphertext at the top level to bytes and back
    // (checked decoding); `gb_per_s` is its wire size over the time.
    if want("serialize") || want("deserialize") {
        let bytes = ca.to_bytes(&params)?;
        let gbps = |ms: f64| format!("{:.2}", bytes.len() as f64 / ms / 1e6);
        if want("serialize") {
            let ms = median_ms(reps, || {
                std::hint::black_box(ca.to_bytes(&params).ok());
            });
            r.emit("serialize", Some(ms), None, &[("bytes", bytes.len().to_string()), ("gb_per_s", gbps(ms))]);
        }
        if want("deserialize") {
            let ms = median_ms(reps, || {
                std::hint::black_box(Ciphertext::from_bytes(&params, &bytes, usize::MAX).ok());
            });
            let back = Ciphertext::from_bytes(&params, &bytes, usize::MAX)?;
            r.emit(
                "deserialize",
                Some(ms),
                Some(bits(&decode(&back)?, &a)),
                &[("bytes", bytes.len().to_string()), ("gb_per_s", gbps(ms))],
            );
        }
    }
    if want("sizes") {
        let seeded = encryptor.encrypt_sk(&pa, &sk)?;
        let g1 = gks.get(params.galois_element_for_rotation(1))?;
        let full_key_bytes = 2 * g1.key_digits() * (params.q().len() + params.p().len()) * params.n() * 8;
        r.emit(
            "sizes",
            None,
            None,
            &[
                ("ciphertext_bytes", ca.to_bytes(&params)?.len().to_string()),
                ("ciphertext_seeded_bytes", seeded.to_bytes(&params)?.len().to_string()),
                ("galois_key_seeded_bytes", g1.to_bytes(&params)?.len().to_string()),
                ("galois_key_in_memory_bytes", full_key_bytes.to_string()),
                ("keygen_ms", format!("{keygen_ms:.1}")),
                ("peak_rss_mb", format!("{:.1}", peak_rss_mb().unwrap_or(f64::NAN))),
            ],
        );
    }
    Ok(())
}

/// `--op bootstrap`: median time and precision of full-slot bootstrapping
/// over `--repeats` random inputs uniform in [-1, 1] (real and imaginary).
fn run_bootstrap(args: &Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
    let missing = format!(
        "no 128-bit bootstrapping preset exists yet; run the test-size one with --preset {TEST_BOOTSTRAP_PRESET}"
    );
    let preset = args.preset.clone().or(DEFAULT_BOOTSTRAP_PRESET.map(str::to_string)).ok_or(missing)?;
    let params = Parameters::preset(&preset)?;
    let config = BootstrapConfig::for_preset(&preset).ok_or_else(|| {
        format!("preset {preset} has no bootstrapping circuit (use N16_QP1545_H192 or {TEST_BOOTSTRAP_PRESET})")
    })?;
    let boot = Bootstrapper::new(&params, BootstrapConfig { slots: args.slots, ..config })?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let lean_keys = !args.full_keys;
    let keys = if lean_keys { boot.generate_lean_keys(&mut kg, &sk)? } else { boot.generate_keys(&mut kg, &sk)? };
    eprintln!(
        "bootstrapping keys: {} Galois keys, {:.0} MB in memory (RSS now {:.0} MB)",
        keys.galois.len(),
        keys.galois.memory_bytes() as f64 / 1048576.0,
        rss("VmRSS:").unwrap_or(f64::NAN)
    );
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let dec = Decryptor::new(&params);
    let slots = boot.slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (mut times, mut errs, mut errs_vs_input, mut errs_fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut out_scale = 0.0;
    for _ in 0..args.repeats.max(4) {
        let v: Vec<Complex64> =
            (0..slots).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect();
        let pt = enc.encode_complex_slots(&v, slots, 0, params.default_scale())?;
        // The client's path: secret-key encryption (what seeded uploads
        // are); `fresh_input_bits_mean` reports the input's own error.
        let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk)?;
        let input = enc.decode_complex(&dec.decrypt(&ct, &sk)?)?;
        let t = Instant::now();
        let out = boot.bootstrap(&eval, &ct, &keys)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        out_scale = out.scale();
        let got = enc.decode_complex(&dec.decrypt(&out, &sk)?)?;
        errs.extend(got.iter().zip(&v).map(|(a, b)| (a - b).norm()));
        errs_vs_input.extend(got.iter().zip(&input).map(|(a, b)| (a - b).norm()));
        errs_fresh.extend(input.iter().zip(&v).map(|(a, b)| (a - b).norm()));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let bits = |e: &[f64]| {
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        (-mean.log2(), -e.iter().cloned().fold(0.0, f64::max).log2())
    };
    let (mean_bits, min_bits) = bits(&errs);
    let (vs_input_mean, vs_input_min) = bits(&errs_vs_input);
    let (fresh_mean, _) = bits(&errs_fresh);
    let line = format!(
        "{{\"op\": \"bootstrap\", \"preset\": \"{preset}\", \"log_n\": {}, \"slots\": {slots}, \"secure\": {}, \"median_ms\": {:.1}, \"precision_bits_mean\": {:.2}, \"precision_bits_min\": {:.2}, \"precision_vs_input_bits_mean\": {vs_input_mean:.2}, \"precision_vs_input_bits_min\": {vs_input_min:.2}, \"fresh_input_bits_mean\": {fresh_mean:.2}, \"levels_after\": {}, \"log_scale_after\": {:.2}, \"peak_rss_mb\": {:.1}, \"threads\": {}, \"galois_keys\": {}, \"galois_key_mb\": {:.0}, \"lean_keys\": {}}}",
        params.log_n(),
        params.is_secure(),
        times[times.len() / 2],
        mean_bits,
        min_bits,
        boot.output_level(),
        out_scale.log2(),
        peak_rss_mb().unwrap_or(f64::NAN),
        args.threads,
        keys.galois.len(),
        keys.galois.memory_bytes() as f64 / 1e6,
        lean_keys
    );
    println!("{line}");
    Ok(())
}
