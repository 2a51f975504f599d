//! Task execution with `nexus-nn`: decode inputs against the key set's
//! parameters, run the model's layer, encode outputs.

use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::{Ciphertext, Encoder, Evaluator, Parameters, Wire};
use nexus_nn::bert::encrypted::{EncryptedEncoder, LayerSteps, LayerTimings, Projection};
use nexus_nn::bert::lockstep::Bootstraps;
use nexus_nn::bert::{CalibratedHead, ModelSource, ServedBert};
use nexus_nn::matmul::compressed::Weights;
use nexus_nn::{DemoMlp, Engine, KeySet, MatMulModel, OperatorModel, Refresh, DEMO_MODEL, MATMUL_MODEL};
use nexus_proto::messages::{ElementwiseOp, EncoderStep, TaskKind};
use nexus_proto::models::{head_file_digest, id_digest, BertModelId, HeadChoice};
use nexus_proto::recycle;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Largest ciphertext accepted.
const MAX_CIPHERTEXT: usize = 1 << 30;

/// Models by (name, variant: the slot count or a stage depth), each built
/// once: the demo model's diagonals, LayerNorm's and Softmax's
/// approximations and a BERT model's weights and calibration are computed
/// at construction.
type ModelCache<T> = OnceLock<Mutex<HashMap<(String, usize), Arc<T>>>>;

fn cached<T>(
    cache: &'static ModelCache<T>,
    name: &str,
    variant: usize,
    build: impl FnOnce() -> Result<Option<T>, String>,
) -> Result<Option<Arc<T>>, String> {
    let mut guard = cache.get_or_init(Mutex::default).lock().map_err(|_| "model cache poisoned".to_string())?;
    let key = (name.to_string(), variant);
    if let Some(m) = guard.get(&key) {
        return Ok(Some(m.clone()));
    }
    let Some(model) = build()? else { return Ok(None) };
    let model = Arc::new(model);
    guard.insert(key, model.clone());
    Ok(Some(model))
}

fn demo_model(slots: usize) -> Result<Arc<DemoMlp>, String> {
    static MODELS: ModelCache<DemoMlp> = OnceLock::new();
    cached(&MODELS, DEMO_MODEL, slots, || DemoMlp::embedded(slots).map(Some).map_err(|e| e.to_string()))?
        .ok_or_else(|| "demo model missing".to_string())
}

fn operator_model(name: &str, slots: usize) -> Result<Option<Arc<OperatorModel>>, String> {
    static MODELS: ModelCache<OperatorModel> = OnceLock::new();
    cached(&MODELS, name, slots, || OperatorModel::named(name, slots).map_err(|e| e.to_string()))
}

/// The served product at `params` (built once per parameter set).
fn matmul_model(params: &Parameters) -> Result<Arc<MatMulModel>, String> {
    static MODELS: ModelCache<MatMulModel> = OnceLock::new();
    cached(&MODELS, &hex_digest(params), 0, || MatMulModel::new(params).map(Some).map_err(|e| e.to_string()))?
        .ok_or_else(|| "no matmul model".to_string())
}

/// `model`'s weights encoded for inputs at `level`: kept once per
/// parameter set at the top level (where clients encrypt), encoded per
/// task at any other (a cache per level would let inputs at every level
/// pin that many copies).
fn matmul_weights(model: &MatMulModel, params: &Parameters, level: usize) -> Result<Arc<Weights>, String> {
    static WEIGHTS: ModelCache<Weights> = OnceLock::new();
    let encode = || model.weights(&Encoder::new(params), level).map_err(|e| e.to_string());
    if level != params.max_level() {
        return encode().map(Arc::new);
    }
    cached(&WEIGHTS, &hex_digest(params), level, || encode().map(Some))?.ok_or_else(|| "no matmul weights".to_string())
}

fn hex_digest(params: &Parameters) -> String {
    params.digest().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bootstrapping circuit of `params` (built once per parameter set,
/// cached by the parameters' digest).
fn bootstrapper(params: &Parameters) -> Result<Arc<Bootstrapper>, String> {
    static CIRCUITS: ModelCache<Bootstrapper> = OnceLock::new();
    cached(&CIRCUITS, &hex_digest(params), 0, || {
        let config = BootstrapConfig::for_parameters(params)
            .ok_or("the key set's parameters have no bootstrapping configuration (use a preset with one)")?;
        Bootstrapper::new(params, config).map(Some).map_err(|e| e.to_string())
    })?
    .ok_or_else(|| "no bootstrapping circuit".to_string())
}

/// A served model's cache key: its model root, name, files' digest,
/// layers and stage depth (the root too: a loaded model remembers its
/// directory, whose `heads/` it reads).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ServedKey {
    root: PathBuf,
    name: String,
    digest: String,
    layers: usize,
    depth: usize,
}

/// `id`'s model from the model root, cut to its layers and calibrated for
/// stages of `max_stage_depth` levels (loaded once), checked to be the
/// client's: its files' digest is the one the id names.
fn served_bert(models: Option<&Path>, id: &BertModelId, max_stage_depth: usize) -> Result<Arc<ServedBert>, String> {
    static MODELS: OnceLock<Mutex<HashMap<ServedKey, Arc<ServedBert>>>> = OnceLock::new();
    let named = |e: String| format!("model {:?}: {e}", id.name);
    let root = models.ok_or_else(|| named("this worker has no model root (--models)".to_string()))?;
    let key = ServedKey {
        root: root.to_path_buf(),
        name: id.name.clone(),
        digest: id.digest.clone(),
        layers: id.layers,
        depth: max_stage_depth,
    };
    let cache = MODELS.get_or_init(Mutex::default);
    let lock = || cache.lock().map_err(|_| "model cache poisoned".to_string());
    if let Some(served) = lock()?.get(&key) {
        return Ok(served.clone());
    }
    // Read and checked outside the lock: a query naming other files than
    // this worker's costs a read of them, not a wait of every other task.
    // The name was checked to be a plain directory name.
    let source = ModelSource::read(&root.join(&id.name)).map_err(|e| named(e.to_string()))?;
    let ours = id_digest(source.digest());
    if ours != id.digest {
        return Err(named(format!(
            "this worker's files (digest {ours}) are not the client's ({}): a changed model must be published \
             under a new name, on the client and every worker",
            id.digest
        )));
    }
    // Calibrated under the lock, so that tasks arriving together load it
    // once.
    let mut guard = lock()?;
    if let Some(served) = guard.get(&key) {
        return Ok(served.clone());
    }
    let served = Arc::new(ServedBert::calibrate(source, id.layers, max_stage_depth).map_err(|e| named(e.to_string()))?);
    tracing::info!(model = %id.name, digest = %id.digest, layers = id.layers, "model loaded and calibrated");
    // The files on disk are the id's: copies of other ones are stale
    // (their queries now fail, as they would on a fresh worker).
    guard.retain(|k, _| k.root != key.root || k.name != key.name || k.digest == key.digest);
    guard.insert(key, served.clone());
    Ok(served)
}

/// Classification heads held at once; more clear the cache (each is a few
/// weight rows, but a new one costs a calibration pass, and zero-shot label
/// sets come from queries).
const MAX_HEADS: usize = 64;

/// `choice`'s head on `served` (`id` names the model), built once per
/// model and head: a zero-shot head from its labels, a trained one from
/// the model directory's `heads/`, checked to be the client's file (its
/// digest) with the classes the id names (the coordinator planned the
/// Argmax's rounds from them). Cached by the id's head segment, digest
/// included: a file changed on disk is read again for the queries that
/// name its new digest.
fn classifier_head(served: &ServedBert, id: &BertModelId, choice: &HeadChoice) -> Result<Arc<CalibratedHead>, String> {
    static HEADS: ModelCache<CalibratedHead> = OnceLock::new();
    // Not the whole id: a head serves queries of any sentence lengths. The
    // model's directory and digest: its weights embed zero-shot labels and
    // calibrate every head.
    let dir = served.dir().map(|d| d.display().to_string()).unwrap_or_default();
    let key = format!("{dir}@{}:{}:{choice}", id.digest, id.layers);
    if let Ok(mut heads) = HEADS.get_or_init(Mutex::default).lock() {
        if heads.len() >= MAX_HEADS && !heads.contains_key(&(key.clone(), 0)) {
            heads.clear();
        }
    }
    let build = || match choice {
        HeadChoice::ZeroShot(labels) => served.zero_shot_head(labels).map_err(|e| format!("head {labels:?}: {e}")),
        HeadChoice::Trained { file, classes, digest } => {
            let named = |e: String| format!("model {:?}, head {file:?}: {e}", id.name);
            let (head, bytes) = served.trained_head(file).map_err(|e| named(e.to_string()))?;
            // Checked before the calibration pass, which a wrong file
            // would otherwise cost at every query.
            let ours = head_file_digest(&bytes);
            if ours != *digest {
                return Err(named(format!(
                    "this worker's file (digest {ours}) is not the client's ({digest}): a changed head must be \
                     published under a new name, on the client and every worker"
                )));
            }
            if head.classes() != *classes {
                return Err(named(format!("the file has {} classes, the query names {classes}", head.classes())));
            }
            served.calibrated(head).map_err(|e| named(e.to_string()))
        }
    };
    cached(&HEADS, &key, 0, || build().map(Some))?.ok_or_else(|| "no head".to_string())
}

/// Refuses a query whose key set lacks a rotation its layout needs (keys
/// made for another number of sentences per query or another block)
/// before any work, rather than deep inside a layer with a missing key.
fn check_rotation_keys(
    circuit: &EncryptedEncoder<'_>,
    params: &Parameters,
    keys: &KeySet,
    id: &BertModelId,
) -> Result<(), String> {
    let needed = circuit.galois_elements(params).map_err(|e| e.to_string())?;
    let missing = needed.iter().filter(|&&g| keys.galois().get(g).is_err()).count();
    if missing > 0 {
        let (head, or_head) = match id.head {
            Some(_) => (" and their head", ", or without a head (--labels, --head)"),
            None => ("", ""),
        };
        return Err(format!(
            "the key set lacks {missing} of the {} rotation keys that {} sentence(s) in blocks of {} tokens{head} \
             need: its keys were made for another number of sentences per query or another block \
             (nexus keygen --sentences, --max-tokens){or_head}",
            needed.len(),
            id.lengths.len(),
            id.block
        ));
    }
    Ok(())
}

/// A task output's wire bytes, in a pooled buffer (returned to the pool
/// when quinn has sent them).
fn encode_output(params: &Parameters, ct: &Ciphertext) -> Result<Vec<u8>, String> {
    ct.to_bytes_with(params, recycle::take).map_err(|e| e.to_string())
}

/// Runs one task; errors are messages for the coordinator. `models` is the
/// root holding one directory per BERT-family model.
pub fn execute(
    models: Option<&Path>,
    model: &str,
    kind: &TaskKind,
    keys: &KeySet,
    inputs: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, String> {
    let params = &keys.params;
    let eval = Evaluator::new(params);
    let encoder = Encoder::new(params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: keys.relin(), galois: keys.galois() };
    let run = |f: &dyn Fn(Ciphertext) -> Result<Ciphertext, String>| -> Result<Vec<Vec<u8>>, String> {
        inputs
            .iter()
            .map(|bytes| {
                let ct = Ciphertext::from_bytes(params, bytes, MAX_CIPHERTEXT).map_err(|e| e.to_string())?;
                encode_output(params, &f(ct)?)
            })
            .collect()
    };
    let decoded = || -> Result<Vec<Ciphertext>, String> {
        inputs.iter().map(|b| Ciphertext::from_bytes(params, b, MAX_CIPHERTEXT).map_err(|e| e.to_string())).collect()
    };
    let encoded = |cts: Vec<Ciphertext>| -> Result<Vec<Vec<u8>>, String> {
        cts.iter().map(|ct| encode_output(params, ct)).collect()
    };
    if let Some(id) = BertModelId::parse(model)? {
        let boot = bootstrapper(params)?;
        // A bootstrap leaves output_level levels, one kept for scaling down
        // before the next (as `nexus infer` plans it).
        let served = served_bert(models, &id, boot.output_level().saturating_sub(1))?;
        let slots = params.max_slots();
        // Only the head's own tasks build it (the layers' steps and the
        // pooling do not read it), and the query's first step, so that a
        // head the workers cannot build fails the query before any work.
        let first_step = matches!(
            kind,
            TaskKind::EncoderLayer { layer: 0 } | TaskKind::EncoderStep { layer: 0, step: EncoderStep::Input }
        );
        let head_task = matches!(kind, TaskKind::HeadLogits | TaskKind::ArgmaxRound { .. } | TaskKind::ArgmaxMask);
        let circuit = match id.head.as_ref().filter(|_| head_task || first_step) {
            // The Argmax's stages keep three of a bootstrap's output
            // levels for the differences and the final product (as
            // `nexus infer` and the client plan it).
            Some(choice) => {
                let head = classifier_head(&served, &id, choice)?;
                let depth = boot.output_level().saturating_sub(3);
                served.encoder_with_head(&id.lengths, id.block, slots, &head, depth)
            }
            None => served.encoder(&id.lengths, id.block, slots),
        }
        .map_err(|e| e.to_string())?;
        let refresh = Refresh { bootstrapper: &boot, keys: &keys.keys };
        let head = || circuit.head().ok_or_else(|| format!("task {kind:?}: model {model:?} names no head"));
        return match kind {
            TaskKind::EncoderLayer { layer } => run(&|ct| {
                let mut timings = LayerTimings::default();
                circuit.run_layer(*layer as usize, &engine, &refresh, ct, &mut timings).map_err(|e| e.to_string())
            }),
            TaskKind::MeanPool => run(&|ct| circuit.mean_pool(&engine, &refresh, ct).map_err(|e| e.to_string())),
            TaskKind::HeadLogits => {
                head()?;
                run(&|ct| {
                    circuit.head_logits_with(&mut Bootstraps::new(&engine, &refresh), ct).map_err(|e| e.to_string())
                })
            }
            TaskKind::ArgmaxRound { round } => {
                let head = head()?;
                run(&|ct| {
                    let mut r = Bootstraps::new(&engine, &refresh);
                    head.argmax_round(&engine, &mut r, ct, *round as usize).map_err(|e| e.to_string())
                })
            }
            TaskKind::ArgmaxMask => {
                let head = head()?;
                let [logits, max] = exactly(decoded()?)?;
                let mask = head
                    .argmax_mask(&engine, &mut Bootstraps::new(&engine, &refresh), &logits, &max)
                    .map_err(|e| e.to_string())?;
                encoded(vec![mask])
            }
            TaskKind::EncoderStep { layer, step } => {
                if *layer == 0 && *step == EncoderStep::Input {
                    check_rotation_keys(&circuit, params, keys, &id)?;
                }
                let steps = circuit.steps(*layer as usize).map_err(|e| e.to_string())?;
                let mut bootstraps = Bootstraps::new(&engine, &refresh);
                let outputs = encoder_step(&steps, &mut bootstraps, *step, decoded()?)
                    .map_err(|e| format!("layer {layer}, step {step:?}: {e}"))?;
                encoded(outputs)
            }
            other => Err(format!("task {other:?} is not part of model {model:?}")),
        };
    }
    match (model, kind) {
        (MATMUL_MODEL, &TaskKind::MatMulTile { layer: 0, input, first_block: 0, end_block: u32::MAX }) => {
            let [ct] = exactly(decoded()?)?;
            let m = matmul_model(params)?;
            let weights = matmul_weights(&m, params, ct.level())?;
            let tile = m.tile(input as usize).map_err(|e| e.to_string())?;
            encoded(m.run_tile(&engine, &weights, tile, &ct).map_err(|e| e.to_string())?)
        }
        (MATMUL_MODEL, TaskKind::MatMulAssemble { layer: 0 }) => {
            let m = matmul_model(params)?;
            encoded(m.assemble(&engine, decoded()?).map_err(|e| e.to_string())?)
        }
        (_, TaskKind::Elementwise { layer: 0, .. }) if op_matches(model, kind) => {
            let m = operator_model(model, params.max_slots())?.ok_or_else(|| format!("unknown model {model:?}"))?;
            run(&|ct| m.apply(&engine, &ct).map_err(|e| e.to_string()))
        }
        (DEMO_MODEL, TaskKind::MatMulDiagonal { layer } | TaskKind::Elementwise { layer, op: ElementwiseOp::Gelu }) => {
            let m = demo_model(params.max_slots())?;
            run(&|ct| m.run_layer(*layer as usize, &engine, &ct).map_err(|e| e.to_string()))
        }
        (model, other) => Err(format!("task {other:?} of model {model:?} is not supported by this worker")),
    }
}

/// One step of an encoder layer on its inputs (in the order
/// `EncoderStep` documents).
fn encoder_step(
    steps: &LayerSteps<'_, '_>,
    r: &mut Bootstraps<'_>,
    step: EncoderStep,
    inputs: Vec<Ciphertext>,
) -> Result<Vec<Ciphertext>, String> {
    let engine = r.engine();
    let mut timings = LayerTimings::default();
    let t = &mut timings;
    let err = |e: nexus_nn::NnError| e.to_string();
    Ok(match step {
        EncoderStep::Input => {
            let [x] = exactly(inputs)?;
            vec![steps.input(r, x).map_err(err)?]
        }
        EncoderStep::Query | EncoderStep::Key | EncoderStep::Value => {
            let which = match step {
                EncoderStep::Query => Projection::Query,
                EncoderStep::Key => Projection::Key,
                _ => Projection::Value,
            };
            let [x] = exactly(inputs)?;
            vec![steps.project(engine, which, &x, t).map_err(err)?]
        }
        EncoderStep::Attention => {
            let [q, k, v] = exactly(inputs)?;
            vec![steps.attend(r, &q, &k, v, t).map_err(err)?]
        }
        EncoderStep::AttentionOutput => {
            let [context, x] = exactly(inputs)?;
            vec![steps.attention_output(r, context, &x, t).map_err(err)?]
        }
        EncoderStep::FeedForwardIn { tile, tiles } => {
            let [x1] = exactly(inputs)?;
            if tile >= tiles {
                return Err(format!("tile {tile} of {tiles}"));
            }
            let (n, tile, tiles) = (steps.wide_ciphertexts(), tile as usize, tiles as usize);
            steps.feed_forward_in(engine, &x1, tile * n / tiles..(tile + 1) * n / tiles, t).map_err(err)?
        }
        EncoderStep::Gelu => steps.gelu(r, inputs, t).map_err(err)?,
        EncoderStep::FeedForwardOut => {
            // GELU's outputs, then the attention block's output.
            let mut activated = inputs;
            let x1 = activated.pop().ok_or("no input ciphertexts")?;
            vec![steps.feed_forward_out(r, &activated, &x1, t).map_err(err)?]
        }
    })
}

/// The `N` inputs of a step, or which count was wrong.
fn exactly<const N: usize>(inputs: Vec<Ciphertext>) -> Result<[Ciphertext; N], String> {
    let count = inputs.len();
    inputs.try_into().map_err(|_| format!("{count} input ciphertexts, expected {N}"))
}

/// Whether `kind` is the operator the single-operator model `model` runs.
fn op_matches(model: &str, kind: &TaskKind) -> bool {
    matches!(
        (model, kind),
        ("gelu", TaskKind::Elementwise { op: ElementwiseOp::Gelu, .. })
            | ("layernorm", TaskKind::Elementwise { op: ElementwiseOp::LayerNorm, .. })
            | ("softmax", TaskKind::Elementwise { op: ElementwiseOp::Softmax, .. })
    )
}
