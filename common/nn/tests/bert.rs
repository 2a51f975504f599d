//! The encrypted encoder end to end on a tiny randomly initialised BERT (2
//! layers, hidden 32, 4 heads) at small insecure parameters, against the
//! plaintext f64 reference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::*;
use nexus_nn::bert::encrypted::{EncoderPlan, EncryptedEncoder, LayerTimings, Projection};
use nexus_nn::bert::head::{ClassifierHead, DEFAULT_GAP_BITS};
use nexus_nn::bert::lockstep::{lockstep, Bootstraps};
use nexus_nn::bert::{cosine, BertConfig, BertWeights};
use nexus_nn::{Engine, Refresh};
use rand::{Rng, SeedableRng};

#[test]
fn tiny_bert_runs_encrypted_end_to_end() {
    let weights = BertWeights::random(BertConfig::tiny(), 11).unwrap();
    run_encrypted(&weights, 2e-3);
}

/// Real attention is sharp (MiniLM's scores span about 90): scaled-up
/// queries push the tiny model's scores past the direct Softmax's width, so
/// the encrypted Softmax has to sharpen. Real residual streams also carry
/// outlier features (MiniLM's reach 223): one hidden column made 60 times
/// larger makes the bootstraps scale by large factors.
#[test]
fn sharp_attention_is_sharpened_under_encryption() {
    let mut config = BertConfig::tiny();
    config.layers = 1;
    let mut weights = BertWeights::random(config, 12).unwrap();
    for l in &mut weights.layers {
        l.query.w.iter_mut().for_each(|w| *w *= 6.0);
        let d_out = l.ffn_out.d_out;
        l.ffn_out.w.iter_mut().skip(3).step_by(d_out).for_each(|w| *w *= 60.0);
    }
    run_encrypted(&weights, 5e-3);
}

/// Throughput mode: three sentences of different lengths share one
/// ciphertext (blocks of 8 tokens, a fourth block unused); each matches its
/// own plaintext run, so no sentence attends to another.
#[test]
fn a_batch_of_sentences_matches_each_sentence_alone() {
    let mut config = BertConfig::tiny();
    config.layers = 1;
    let weights = BertWeights::random(config, 13).unwrap();
    run_batch(&weights, &[6, 3, 8], 2e-3, true);
}

fn run_encrypted(weights: &BertWeights, tolerance: f64) {
    run_batch(weights, &[6], tolerance, false);
}

/// Runs `lengths.len()` random sentences encrypted (one ciphertext; latency
/// mode for one sentence) and checks every layer and the pooled embedding
/// of each against the plaintext reference; with `classify`, a zero-shot
/// head whose classes are the sentences themselves plus one random text
/// must pick each sentence's own class under encryption.
fn run_batch(weights: &BertWeights, lengths: &[usize], tolerance: f64, classify: bool) {
    let preset = "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST";
    let params = Parameters::preset(preset).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut sentence = |len: usize| -> Vec<u32> { (0..len).map(|_| rng.gen_range(0..64)).collect() };
    let sentences: Vec<Vec<u32>> = lengths.iter().map(|&n| sentence(n)).collect();
    let mut calibration: Vec<Vec<u32>> = (0..16).map(|i| sentence(2 + i % 7)).collect();
    calibration.extend(sentences.iter().cloned());
    let plan = EncoderPlan::calibrate(weights, &calibration, 1.5).unwrap();
    let width = plan.layers.iter().map(|r| r.scores.max - r.scores.min).fold(0.0, f64::max);
    println!("score interval width {width:.1}");
    let mut encoder = if lengths.len() == 1 {
        EncryptedEncoder::new(weights, lengths[0], params.max_slots(), plan).unwrap()
    } else {
        EncryptedEncoder::batched(weights, lengths, params.max_slots(), plan).unwrap()
    };
    let boot = Bootstrapper::new(&params, BootstrapConfig::for_preset(preset).unwrap()).unwrap();
    if classify {
        let mut labels: Vec<(String, Vec<u32>)> =
            sentences.iter().enumerate().map(|(i, s)| (format!("sentence {i}"), s.clone())).collect();
        labels.push(("other".into(), vec![7, 9, 11, 13, 15]));
        let head = ClassifierHead::prototypes(weights, &labels).unwrap();
        let bound = head.logit_bound(weights, &calibration, 1.5).unwrap();
        encoder = encoder.with_head(head, bound, boot.output_level() - 3, DEFAULT_GAP_BITS).unwrap();
    }

    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let boot_keys = boot.generate_keys(&mut kg, &sk).unwrap();
    let steps = encoder.rotations().unwrap();
    let galois = kg.galois_keys(&sk, &steps, false).unwrap();
    let (eval, encoding) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoding, rlk: &boot_keys.relin, galois: &galois };
    let refresh = Refresh { bootstrapper: &boot, keys: &boot_keys };
    println!("{} rotation keys, bootstrap output level {}", steps.len(), boot.output_level());

    // Client: embed in plaintext, pack, encrypt.
    let x: Vec<Vec<Vec<f64>>> = sentences.iter().map(|ids| weights.embed(ids).unwrap()).collect();
    let packed = encoder.layout().pack_batch(&x).unwrap();
    let pt = encoding.encode_real(&packed, boot.output_level(), params.default_scale()).unwrap();
    let mut ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();

    let decrypt = |c: &Ciphertext| encoding.decode_real(&Decryptor::new(&params).decrypt(c, &sk).unwrap()).unwrap();
    // Q, K and V computed from one shared set of the input's rotations are
    // the ciphertexts the three separate products give.
    let steps0 = encoder.steps(0).unwrap();
    let mut t = LayerTimings::default();
    let shared = steps0.project_all(&engine, &ct, &mut t).unwrap();
    for (which, got) in [Projection::Query, Projection::Key, Projection::Value].into_iter().zip(&shared) {
        assert_eq!(got, &steps0.project(&engine, which, &ct, &mut t).unwrap(), "{which:?}");
    }
    let mut plain = x.clone();
    for layer in 0..weights.config.layers {
        let mut timings = LayerTimings::default();
        let start = std::time::Instant::now();
        ct = encoder.run_layer(layer, &engine, &refresh, ct, &mut timings).unwrap();
        for p in &mut plain {
            *p = weights.layer(layer, p, &mut Default::default()).unwrap();
        }
        let slots = decrypt(&ct);
        let got = encoder.layout().unpack_batch(&slots);
        let err = got
            .iter()
            .flatten()
            .flatten()
            .zip(plain.iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "layer {layer}: {:.1} s, max abs error {err:.2e}, level {}, {:?}",
            start.elapsed().as_secs_f64(),
            ct.level(),
            timings
        );
        assert!(err < tolerance, "layer {layer}: max abs error {err}");
        // Padding tokens stay exact zeros (decryption noise only).
        let layout = encoder.layout();
        let t = layout.tokens();
        let pad = (0..slots.len()).filter(|s| !layout.is_real(s % t)).map(|s| slots[s].abs()).fold(0.0, f64::max);
        assert!(pad < 1e-3, "padding token slots hold {pad}");
    }
    let pooled = encoder.mean_pool(&engine, &refresh, ct).unwrap();
    let got = encoder.unpack_pooled_batch(&decrypt(&pooled));
    assert_eq!(got.len(), sentences.len());
    for (got, ids) in got.iter().zip(&sentences) {
        let want = weights.sentence_embedding(ids).unwrap();
        let cos = cosine(got, &want);
        println!("sentence of {} tokens: embedding cosine {cos:.6}", ids.len());
        assert!(cos > 0.9999, "cosine {cos}");
    }
    let Some(head) = encoder.head() else { return };
    let masks = decrypt(&encoder.classify(&engine, &refresh, &pooled).unwrap());
    for (i, ids) in sentences.iter().enumerate() {
        let embedding = weights.sentence_embedding(ids).unwrap();
        let logits = head.head().logits(&embedding);
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mask = head.mask_of(&masks, i);
        let class = head.decode(&mask);
        println!(
            "sentence {i}: plaintext class {} (logits {logits:.3?}), encrypted mask {:.3?}, stated resolution {:.2e}",
            head.head().predict(&embedding),
            &mask[..logits.len()],
            head.min_gap()
        );
        assert_eq!(head.head().predict(&embedding), i, "each sentence is closest to itself");
        // The gap is far above the stated resolution here (cosine 1 vs the others).
        assert!(sorted[0] - sorted[1] > head.min_gap());
        assert_eq!(class, i);
        let hot =
            mask[..logits.len()].iter().enumerate().map(|(j, v)| (v - f64::from(j == i)).abs()).fold(0.0, f64::max);
        assert!(hot < 0.05, "mask {:?} is not one-hot", &mask[..logits.len()]);
    }
}

/// Throughput mode with two lanes: two batches of the same shape run in
/// lockstep, each bootstrap shared by both (one complex bootstrap for two
/// real ciphertexts). Each lane matches its sentences' plaintext runs, and
/// the two lanes together bootstrap as often as one lane alone.
#[test]
fn two_batches_in_lockstep_share_their_bootstraps() {
    let mut config = BertConfig::tiny();
    config.layers = 1;
    let weights = BertWeights::random(config, 14).unwrap();
    let preset = "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST";
    let params = Parameters::preset(preset).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let mut sentence = |len: usize| -> Vec<u32> { (0..len).map(|_| rng.gen_range(0..64)).collect() };
    let lanes: [Vec<Vec<u32>>; 2] = [vec![sentence(6), sentence(3)], vec![sentence(8), sentence(5)]];
    let mut calibration: Vec<Vec<u32>> = (0..16).map(|i| sentence(2 + i % 7)).collect();
    calibration.extend(lanes.iter().flatten().cloned());
    let plan = EncoderPlan::calibrate(&weights, &calibration, 1.5).unwrap();
    let lengths = |lane: &[Vec<u32>]| lane.iter().map(Vec::len).collect::<Vec<_>>();
    let boot = Bootstrapper::new(&params, BootstrapConfig::for_preset(preset).unwrap()).unwrap();
    // A zero-shot head whose classes are the four sentences (and one
    // random text): its comparisons' bootstraps are paired too.
    let mut labels: Vec<(String, Vec<u32>)> =
        lanes.iter().flatten().enumerate().map(|(i, s)| (format!("sentence {i}"), s.clone())).collect();
    labels.push(("other".into(), vec![7, 9, 11, 13, 15]));
    let head = ClassifierHead::prototypes(&weights, &labels).unwrap();
    let bound = head.logit_bound(&weights, &calibration, 1.5).unwrap();
    // Both lanes in blocks of 8 tokens: the same layout shape.
    let encoder = |lane: &[Vec<u32>]| {
        EncryptedEncoder::padded_batch(&weights, &lengths(lane), 8, params.max_slots(), plan.clone())
            .unwrap()
            .with_head(head.clone(), bound, boot.output_level() - 3, DEFAULT_GAP_BITS)
            .unwrap()
    };
    let encoders = [encoder(&lanes[0]), encoder(&lanes[1])];
    assert_eq!(encoders[0].rotations().unwrap(), encoders[1].rotations().unwrap());
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let boot_keys = boot.generate_keys(&mut kg, &sk).unwrap();
    let galois = kg.galois_keys(&sk, &encoders[0].rotations().unwrap(), false).unwrap();
    let (eval, encoding) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoding, rlk: &boot_keys.relin, galois: &galois };
    let refresh = Refresh { bootstrapper: &boot, keys: &boot_keys };
    let encrypt = |encoder: &EncryptedEncoder<'_>, lane: &[Vec<u32>]| {
        let x: Vec<Vec<Vec<f64>>> = lane.iter().map(|ids| weights.embed(ids).unwrap()).collect();
        let pt = encoding.encode_real(
            &encoder.layout().pack_batch(&x).unwrap(),
            boot.output_level(),
            params.default_scale(),
        );
        Encryptor::new(&params).encrypt_sk(&pt.unwrap(), &sk).unwrap()
    };
    let run = |encoder: &EncryptedEncoder<'_>, ct: Ciphertext, r: &mut Bootstraps<'_>| {
        let ct = encoder.run_layer_with(0, r, ct, &mut LayerTimings::default())?;
        let pooled = encoder.mean_pool_with(r, ct)?;
        let encoder_count = r.count;
        let masks = encoder.classify_with(r, pooled.clone())?;
        Ok::<_, nexus_nn::NnError>((pooled, masks, encoder_count))
    };
    let (cts, alone) =
        ([encrypt(&encoders[0], &lanes[0]), encrypt(&encoders[1], &lanes[1])], encrypt(&encoders[0], &lanes[0]));
    let mut single = Bootstraps::new(&engine, &refresh);
    let (_, _, encoder_count) = run(&encoders[0], alone, &mut single).unwrap();
    let [a, b] = cts;
    let (((pooled_a, masks_a, _), count_a), ((pooled_b, masks_b, _), count_b)) = lockstep(
        &engine,
        &refresh,
        |r| Ok((run(&encoders[0], a, r)?, r.count)),
        |r| Ok((run(&encoders[1], b, r)?, r.count)),
    )
    .unwrap();
    // A lane that stops (here: fails at once) leaves the other to
    // bootstrap alone rather than wait for it.
    let (lone, completed) = (encrypt(&encoders[0], &lanes[0]), std::sync::atomic::AtomicUsize::new(0));
    let stopped = lockstep(
        &engine,
        &refresh,
        |r| {
            run(&encoders[0], lone, r)?;
            completed.store(r.count, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        },
        |_| -> Result<(), nexus_nn::NnError> {
            Err(nexus_nn::NnError::InvalidConfig { op: "test", msg: "stopped".into() })
        },
    );
    assert!(stopped.is_err());
    assert_eq!(completed.into_inner(), single.count, "the remaining lane ran every bootstrap alone");
    println!(
        "bootstraps: one lane alone {} ({encoder_count} before the head), two lanes in lockstep {count_a} + {count_b}",
        single.count
    );
    assert!(encoder_count > 0 && single.count > encoder_count, "the encoder and the head bootstrap");
    assert_eq!(count_a + count_b, single.count, "every bootstrap is shared");
    let decrypt = |c: &Ciphertext| encoding.decode_real(&Decryptor::new(&params).decrypt(c, &sk).unwrap()).unwrap();
    let lanes_out = [(pooled_a, masks_a, &lanes[0], 0), (pooled_b, masks_b, &lanes[1], lanes[0].len())];
    for (encoder, (pooled, masks, lane, first_class)) in encoders.iter().zip(lanes_out) {
        let got = encoder.unpack_pooled_batch(&decrypt(&pooled));
        assert_eq!(got.len(), lane.len());
        let (head, masks) = (encoder.head().unwrap(), decrypt(&masks));
        for (i, (got, ids)) in got.iter().zip(lane).enumerate() {
            let cos = cosine(got, &weights.sentence_embedding(ids).unwrap());
            let mask = head.mask_of(&masks, i);
            println!("sentence of {} tokens: embedding cosine {cos:.6}, class mask {mask:.3?}", ids.len());
            assert!(cos > 0.9999, "cosine {cos}");
            assert_eq!(head.decode(&mask), first_class + i, "each sentence is its own class");
        }
    }
}
