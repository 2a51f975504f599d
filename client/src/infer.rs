//! `nexus infer`: a BERT-family sentence encoder run on encrypted input in
//! this process: tokenize, embed and encrypt on the client side; every
//! encoder layer and the mean pooling on ciphertexts; decrypt, normalise
//! and compare with the plaintext model. Latency mode runs one sentence per
//! ciphertext; throughput mode (`batch`) packs as many sentences as fit
//! into one ciphertext and runs them together, two such batches side by
//! side with their bootstraps shared.

use anyhow::{bail, Context, Result};
use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::{
    Ciphertext, Decryptor, Encoder, Encryptor, Evaluator, GaloisKeys, KeyGenerator, Parameters, SecretKey, Wire,
};
use nexus_nn::bert::encrypted::{EncoderPlan, EncryptedEncoder, LayerTimings};
use nexus_nn::bert::head::{argmax_index, mean_pooled, ClassifierHead};
use nexus_nn::bert::lockstep::{lockstep, Bootstraps};
use nexus_nn::bert::packed::HiddenLayout;
use nexus_nn::bert::served::CALIBRATION;
use nexus_nn::bert::{cosine, BertWeights, TextTokenizer};
use nexus_nn::{Engine, Refresh};
use std::path::PathBuf;
use std::time::Instant;

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
    /// Throughput mode: sentences share ciphertexts, at most this many per
    /// ciphertext (`Some(0)`: as many as fit); `None`: latency mode.
    pub batch: Option<usize>,
    /// An optional classification head after the pooling.
    pub head: Option<HeadSource>,
    /// The head's Argmax resolves gaps of `2^-head_gap_bits` of its range.
    pub head_gap_bits: u32,
    /// Which evaluation keys this process holds lean.
    pub lean_keys: LeanKeys,
    /// Throughput mode: 2 runs two batches of as many sentences in
    /// lockstep, every bootstrap shared by both (one complex bootstrap for
    /// two real ciphertexts); 1 runs one batch at a time.
    pub lanes: usize,
}

/// Which Galois keys the server side of `nexus infer` holds without their
/// uniform halves (regenerated from the seed at every key switch: half the
/// memory of those keys, for the time of sampling them again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeanKeys {
    /// Every key expanded: fastest, most memory (about 17 GiB for MiniLM
    /// at 2^16).
    None,
    /// The encoder's rotation keys lean, the bootstrapping keys expanded:
    /// bootstraps (most of the time) keep their speed, the rotations' keys
    /// take half the memory.
    #[default]
    Encoder,
    /// Every key lean: least memory, about 10% slower bootstraps.
    All,
}

/// Where a classification head comes from.
#[derive(Debug, Clone)]
pub enum HeadSource {
    /// Hugging Face `classifier.weight` / `classifier.bias` in a
    /// safetensors file.
    File(PathBuf),
    /// Zero-shot: one class per label text, weighted by the model's own
    /// embedding of it.
    Labels(Vec<String>),
}

/// One sentence's class, decrypted and in plaintext.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassReport {
    /// The class the encrypted head picked (decrypted one-hot mask).
    pub label: String,
    /// The plaintext head's class.
    pub plain_label: String,
    /// Whether they agree.
    pub agrees: bool,
    /// Plaintext top-1 minus top-2 logit.
    pub plain_gap: f64,
    /// The smallest gap the encrypted Argmax is stated to resolve.
    pub resolution: f64,
    /// The decrypted mask's class slots.
    pub mask: Vec<f64>,
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
    /// Wall time of the encrypted encoder (server side) per input, seconds
    /// (in throughput mode the batch's time divided by the sentences of
    /// both lanes).
    pub seconds: f64,
    /// Sentences in the ciphertext this one travelled in (1: latency mode).
    pub batch_size: usize,
    /// Batches run side by side with their bootstraps shared (1 or 2).
    pub lanes: usize,
    /// Wall time of the whole batch (both lanes), seconds.
    pub batch_seconds: f64,
    /// Per layer: seconds and per-piece breakdown.
    pub layers: Vec<LayerReport>,
    /// Client upload per query (seeded input ciphertext, divided by the
    /// batch size), bytes.
    pub upload_bytes: usize,
    /// Client download per query (the pooled result, divided by the batch
    /// size), bytes.
    pub download_bytes: usize,
    /// One-time evaluation keys (encoder rotations + bootstrapping), bytes.
    pub key_bytes: usize,
    /// Peak resident memory of the process so far, MB.
    pub peak_rss_mb: f64,
    /// Which keys were held lean.
    pub lean_keys: LeanKeys,
    /// Whether every value of this input stayed inside the calibrated
    /// ranges (else `warnings` says where it did not).
    pub in_range: bool,
    /// Values outside the calibrated ranges, one line each.
    pub warnings: Vec<String>,
    /// The classification head's verdict, when a head was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ClassReport>,
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

/// What every batch of one run shares: the model, the keys' owner and the
/// server's circuit settings.
struct Session<'a> {
    options: &'a InferOptions,
    weights: &'a BertWeights,
    params: &'a Parameters,
    plan: &'a EncoderPlan,
    head: Option<&'a (ClassifierHead, f64)>,
    /// The bootstrap's output level: where inputs are encrypted.
    level: usize,
    encoder: &'a Encoder,
    sk: &'a SecretKey,
    sentences: &'a [Vec<u32>],
    /// Throughput mode: every batch in blocks of the longest sentence's
    /// tokens, so that batches of as many sentences share one layout.
    block: usize,
}

/// One batch encrypted and ready for the server.
struct Prepared<'w> {
    group: Vec<usize>,
    circuit: EncryptedEncoder<'w>,
    ct: Ciphertext,
    upload_bytes: usize,
    warnings: Vec<Vec<String>>,
}

/// What the server returned for one batch.
struct Served {
    pooled: Ciphertext,
    masks: Option<Ciphertext>,
}

impl<'a> Session<'a> {
    /// The circuit of `group` and its encrypted input (client side).
    fn prepare(&self, group: &[usize], progress: &mut dyn FnMut(&str)) -> Result<Prepared<'a>> {
        let (options, weights) = (self.options, self.weights);
        let ids: Vec<&Vec<u32>> = group.iter().map(|&i| &self.sentences[i]).collect();
        let lengths: Vec<usize> = ids.iter().map(|s| s.len()).collect();
        let slots = self.params.max_slots();
        let mut circuit = match options.batch {
            None => EncryptedEncoder::new(weights, lengths[0], slots, self.plan.clone())?,
            Some(_) => EncryptedEncoder::padded_batch(weights, &lengths, self.block, slots, self.plan.clone())?,
        };
        if let Some((h, bound)) = self.head {
            // Comparison stages keep three levels of a bootstrap's output
            // for the differences and the final product.
            circuit = circuit.with_head(h.clone(), *bound, self.level.saturating_sub(3), options.head_gap_bits)?;
        }
        let texts: Vec<&String> = group.iter().map(|&i| &options.texts[i]).collect();
        progress(&format!("{texts:?}: {lengths:?} tokens"));
        // The client knows its plaintext: it checks that the input stays in
        // the ranges the server's approximations were fitted on.
        let mut warnings = Vec::new();
        for s in &ids {
            let (_, seen) = weights.encode(s)?;
            let w = self.plan.violations(&seen);
            for line in &w {
                progress(&format!("  warning: {line}: the encrypted result may be inaccurate (raise --margin)"));
            }
            warnings.push(w);
        }
        // Embed, pack, encrypt (seeded: half the upload).
        let embedded: Vec<Vec<Vec<f64>>> = ids.iter().map(|s| weights.embed(s)).collect::<Result<_, _>>()?;
        let pt = self.encoder.encode_real(
            &circuit.layout().pack_batch(&embedded)?,
            self.level,
            self.params.default_scale(),
        )?;
        let ct = Encryptor::new(self.params).encrypt_sk(&pt, self.sk)?;
        let upload_bytes = ct.to_bytes(self.params)?.len();
        Ok(Prepared { group: group.to_vec(), circuit, ct, upload_bytes, warnings })
    }

    /// Decrypts one batch's result (client side) and reports each sentence.
    fn finish(
        &self,
        prepared: Prepared<'_>,
        served: Served,
        run: &BatchRun,
        progress: &mut dyn FnMut(&str),
        emit: &mut dyn FnMut(&InferResult) -> Result<()>,
        results: &mut Vec<InferResult>,
    ) -> Result<()> {
        let (weights, params, encoder) = (self.weights, self.params, self.encoder);
        let Prepared { group, circuit, upload_bytes, warnings, .. } = prepared;
        let mut download_bytes = served.pooled.to_bytes(params)?.len();
        if let Some(m) = &served.masks {
            download_bytes += m.to_bytes(params)?.len();
        }
        let decrypt = |c: &Ciphertext| -> Result<Vec<f64>> {
            Ok(encoder.decode_real(&Decryptor::new(params).decrypt(c, self.sk)?)?)
        };
        let masks = served.masks.as_ref().map(decrypt).transpose()?;
        let slots = decrypt(&served.pooled)?;
        let size = group.len();
        for (i, ((&index, mut embedding), warnings)) in
            group.iter().zip(circuit.unpack_pooled_batch(&slots)).zip(warnings).enumerate()
        {
            let (text, s) = (&self.options.texts[index], &self.sentences[index]);
            if weights.config.normalize {
                let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                embedding.iter_mut().for_each(|v| *v /= norm);
            }
            let plain_embedding = weights.sentence_embedding(s)?;
            let cos = cosine(&embedding, &plain_embedding);
            progress(&format!("  {text:?}: cosine {cos:.6}"));
            let class = match (circuit.head(), &masks) {
                (Some(h), Some(m)) => {
                    let mask = h.mask_of(m, i);
                    // The head on the unnormalised mean: the encrypted
                    // head's units (same argmax, see nexus_nn::bert::head).
                    let logits = h.head().logits(&mean_pooled(weights, s)?);
                    let plain = argmax_index(&logits);
                    let mut sorted = logits.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    let got = h.decode(&mask);
                    let report = ClassReport {
                        label: h.head().labels[got].clone(),
                        plain_label: h.head().labels[plain].clone(),
                        agrees: got == plain,
                        plain_gap: sorted[0] - sorted.get(1).copied().unwrap_or(f64::NEG_INFINITY),
                        resolution: h.min_gap(),
                        mask,
                    };
                    progress(&format!(
                        "  class {:?} (plaintext {:?}, gap {:.3}, resolution {:.3})",
                        report.label, report.plain_label, report.plain_gap, report.resolution
                    ));
                    Some(report)
                }
                _ => None,
            };
            let result = InferResult {
                text: text.clone(),
                tokens: s.len(),
                embedding,
                plain_embedding,
                cosine: cos,
                seconds: run.seconds / run.inputs as f64,
                batch_size: size,
                lanes: run.lanes,
                batch_seconds: run.seconds,
                layers: run.layers.clone(),
                upload_bytes: upload_bytes / size,
                download_bytes: download_bytes / size,
                key_bytes: run.key_bytes,
                peak_rss_mb: peak_rss_mb(),
                lean_keys: self.options.lean_keys,
                in_range: warnings.is_empty(),
                warnings,
                class,
            };
            emit(&result)?;
            results.push(result);
        }
        Ok(())
    }
}

/// The server side's run of one batch (or two in lockstep).
struct BatchRun {
    /// Wall time, seconds.
    seconds: f64,
    /// Sentences it served (both lanes').
    inputs: usize,
    lanes: usize,
    layers: Vec<LayerReport>,
    key_bytes: usize,
}

/// Server side: every layer, the pooling and the head of one batch.
fn serve_one(
    prepared: &Prepared<'_>,
    engine: &Engine<'_>,
    refresh: &Refresh<'_>,
    layers: &mut Vec<LayerReport>,
    progress: &mut dyn FnMut(&str),
) -> Result<Served> {
    let mut r = Bootstraps::new(engine, refresh);
    let circuit = &prepared.circuit;
    let mut ct = prepared.ct.clone();
    let count = circuit.layer_count();
    for i in 0..count {
        let t = Instant::now();
        let mut timings = LayerTimings::default();
        ct = circuit.run_layer_with(i, &mut r, ct, &mut timings)?;
        layers.push(report_layer(i, count, t, timings, progress));
    }
    let pooled = circuit.mean_pool_with(&mut r, ct)?;
    let masks = classify(circuit, engine, refresh, &pooled, progress)?;
    Ok(Served { pooled, masks })
}

/// Server side: two batches of one layout in lockstep, their bootstraps
/// paired (see [`nexus_nn::bert::lockstep`]).
fn serve_pair(
    (first, second): (&Prepared<'_>, &Prepared<'_>),
    engine: &Engine<'_>,
    refresh: &Refresh<'_>,
    layers: &mut Vec<LayerReport>,
    progress: &mut dyn FnMut(&str),
) -> Result<(Served, Served)> {
    let (a, b) = (&first.circuit, &second.circuit);
    let (mut x, mut y) = (first.ct.clone(), second.ct.clone());
    let count = a.layer_count();
    for i in 0..count {
        let t = Instant::now();
        let ((x1, ta), (y1, tb)) = lockstep(
            engine,
            refresh,
            |r| {
                let mut timings = LayerTimings::default();
                Ok((a.run_layer_with(i, r, x, &mut timings)?, timings))
            },
            |r| {
                let mut timings = LayerTimings::default();
                Ok((b.run_layer_with(i, r, y, &mut timings)?, timings))
            },
        )?;
        (x, y) = (x1, y1);
        // The lanes run side by side: the first lane's sections, both
        // lanes' bootstraps.
        let timings = LayerTimings { bootstrap_count: ta.bootstrap_count + tb.bootstrap_count, ..ta };
        layers.push(report_layer(i, count, t, timings, progress));
    }
    let (pooled_a, pooled_b) = lockstep(engine, refresh, |r| a.mean_pool_with(r, x), |r| b.mean_pool_with(r, y))?;
    let (masks_a, masks_b) = if a.head().is_some() && b.head().is_some() {
        let t = Instant::now();
        let (pa, pb) = (pooled_a.clone(), pooled_b.clone());
        let masks = lockstep(engine, refresh, |r| a.classify_with(r, pa), |r| b.classify_with(r, pb))?;
        progress(&format!("  classification heads (two lanes): {:.1} s", t.elapsed().as_secs_f64()));
        (Some(masks.0), Some(masks.1))
    } else {
        (classify(a, engine, refresh, &pooled_a, progress)?, classify(b, engine, refresh, &pooled_b, progress)?)
    };
    Ok((Served { pooled: pooled_a, masks: masks_a }, Served { pooled: pooled_b, masks: masks_b }))
}

fn report_layer(
    i: usize,
    count: usize,
    start: Instant,
    timings: LayerTimings,
    progress: &mut dyn FnMut(&str),
) -> LayerReport {
    let report = LayerReport { seconds: start.elapsed().as_secs_f64(), pieces: timings };
    progress(&format!(
        "  layer {}/{}: {:.1} s ({} bootstraps {:.1} s; without them: projections {:.1} s, attention {:.1} s, \
         output {:.1} s, LayerNorms {:.1} s, feed-forward {:.1} s), peak {:.0} MB",
        i + 1,
        count,
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
    report
}

fn classify(
    circuit: &EncryptedEncoder<'_>,
    engine: &Engine<'_>,
    refresh: &Refresh<'_>,
    pooled: &Ciphertext,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<Ciphertext>> {
    if circuit.head().is_none() {
        return Ok(None);
    }
    let t = Instant::now();
    let masks = circuit.classify(engine, refresh, pooled)?;
    progress(&format!("  classification head: {:.1} s", t.elapsed().as_secs_f64()));
    Ok(Some(masks))
}

/// Runs every sentence; `progress` gets one line per step, `emit` each
/// result as soon as its batch is done.
pub fn run(
    options: &InferOptions,
    progress: &mut dyn FnMut(&str),
    emit: &mut dyn FnMut(&InferResult) -> Result<()>,
) -> Result<Vec<InferResult>> {
    let mut weights = BertWeights::from_dir(&options.model)?;
    if let Some(layers) = options.layers {
        if layers == 0 || layers > weights.config.layers {
            bail!("--layers {layers}: the model has {} layers", weights.config.layers);
        }
        weights.layers.truncate(layers);
        weights.config.layers = layers;
    }
    if !(1..=2).contains(&options.lanes) {
        bail!("--lanes {}: one or two lanes", options.lanes);
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
    let head = match &options.head {
        None => None,
        Some(HeadSource::File(path)) => Some(ClassifierHead::from_safetensors(path, weights.config.hidden)?),
        Some(HeadSource::Labels(labels)) => {
            let encoded: Vec<(String, Vec<u32>)> = labels
                .iter()
                .map(|l| Ok((l.clone(), tokenizer.encode(l, options.max_tokens)?)))
                .collect::<Result<_>>()?;
            Some(ClassifierHead::prototypes(&weights, &encoded)?)
        }
    };
    let head = match head {
        Some(h) => {
            let bound = h.logit_bound(&weights, &calibration, options.margin)?;
            Some((h, bound))
        }
        None => None,
    };
    // A bootstrap leaves output_level levels, one of them kept for scaling
    // down before the next.
    plan.max_stage_depth = Some(level.saturating_sub(1));

    let start = Instant::now();
    let mut keygen = KeyGenerator::new(&params);
    let sk = keygen.secret_key();
    let boot_keys = match options.lean_keys {
        LeanKeys::All => boot.generate_lean_keys(&mut keygen, &sk)?,
        LeanKeys::None | LeanKeys::Encoder => boot.generate_keys(&mut keygen, &sk)?,
    };
    let boot_key_bytes = wire_bytes(&params, &boot_keys.galois)? + boot_keys.relin.to_bytes(&params)?.len();
    progress(&format!(
        "bootstrapping keys: {} Galois keys, {:.0} MB, {:.1} s",
        boot_keys.galois.len(),
        boot_key_bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    ));
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let sentences: Vec<Vec<u32>> =
        options.texts.iter().map(|t| tokenizer.encode(t, options.max_tokens)).collect::<Result<_, _>>()?;
    let block = sentences.iter().map(Vec::len).max().unwrap_or(1).next_power_of_two();
    let groups = batches(options, &weights, &sentences, block, params.max_slots())?;
    let session = Session {
        options,
        weights: &weights,
        params: &params,
        plan: &plan,
        head: head.as_ref(),
        level,
        encoder: &encoder,
        sk: &sk,
        sentences: &sentences,
        block,
    };
    let mut results = Vec::new();
    // Rotation keys depend on the layout only: batches of the same shape
    // reuse them.
    let mut keys: Option<(Vec<i64>, GaloisKeys, usize)> = None;
    let mut next = 0;
    while next < groups.len() {
        // Two batches of as many sentences have one layout: in throughput
        // mode they run in lockstep when two lanes are asked for.
        let pairs = options.batch.is_some() && options.lanes == 2;
        let lanes = if pairs && groups.get(next + 1).is_some_and(|g| g.len() == groups[next].len()) { 2 } else { 1 };
        let batch: Vec<Prepared<'_>> =
            groups[next..next + lanes].iter().map(|g| session.prepare(g, progress)).collect::<Result<_>>()?;
        next += lanes;
        let steps = batch[0].circuit.rotations()?;
        if keys.as_ref().is_none_or(|(s, _, _)| *s != steps) {
            let start = Instant::now();
            let mut galois = batch[0].circuit.generate_keys(&params, &mut keygen, &sk, level)?;
            if options.lean_keys != LeanKeys::None {
                galois = galois.lean();
            }
            let bytes = wire_bytes(&params, &galois)?;
            progress(&format!(
                "layout of {} tokens per block: {} rotation keys ({:.0} MB) in {:.1} s",
                batch[0].circuit.layout().block(),
                galois.len(),
                bytes as f64 / 1e6,
                start.elapsed().as_secs_f64()
            ));
            keys = Some((steps, galois, bytes));
        }
        let Some((_, galois, rotation_key_bytes)) = keys.as_ref() else { bail!("no rotation keys") };

        // Server: every layer on ciphertexts.
        let engine = Engine { eval: &eval, encoder: &encoder, rlk: &boot_keys.relin, galois };
        let refresh = Refresh { bootstrapper: &boot, keys: &boot_keys };
        let server = Instant::now();
        let mut layers = Vec::new();
        let served = match batch.as_slice() {
            [one] => vec![serve_one(one, &engine, &refresh, &mut layers, progress)?],
            [a, b] => {
                let (x, y) = serve_pair((a, b), &engine, &refresh, &mut layers, progress)?;
                vec![x, y]
            }
            _ => bail!("a batch runs in one or two lanes"),
        };
        let run = BatchRun {
            seconds: server.elapsed().as_secs_f64(),
            inputs: batch.iter().map(|p| p.group.len()).sum(),
            lanes,
            layers,
            key_bytes: boot_key_bytes + rotation_key_bytes,
        };
        for (prepared, served) in batch.into_iter().zip(served) {
            session.finish(prepared, served, &run, progress, emit, &mut results)?;
        }
        progress(&format!(
            "  {} sentences in {lanes} lane(s) in {:.1} s ({:.1} s per input)",
            run.inputs,
            run.seconds,
            run.seconds / run.inputs as f64
        ));
    }
    Ok(results)
}

/// Which sentences run together: one each in latency mode; in throughput
/// mode, consecutive sentences, as many as one ciphertext holds at `block`
/// tokens per sentence (or the requested batch size if smaller).
fn batches(
    options: &InferOptions,
    weights: &BertWeights,
    sentences: &[Vec<u32>],
    block: usize,
    slots: usize,
) -> Result<Vec<Vec<usize>>> {
    let Some(limit) = options.batch else {
        return Ok((0..sentences.len()).map(|i| vec![i]).collect());
    };
    let c = &weights.config;
    let capacity = HiddenLayout::capacity(block, c.heads, c.head_dim(), slots);
    if capacity == 0 {
        bail!("a sentence of {block} tokens does not fit {slots} slots");
    }
    let size = if limit == 0 { capacity } else { limit.min(capacity) };
    let indices: Vec<usize> = (0..sentences.len()).collect();
    Ok(indices.chunks(size).map(<[usize]>::to_vec).collect())
}
