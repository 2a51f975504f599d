//! Task execution with `nexus-nn`: decode inputs against the key set's
//! parameters, run the model's layer, encode outputs.

use nexus_ckks::{Ciphertext, Encoder, Evaluator, Wire};
use nexus_nn::{DemoMlp, Engine, KeySet, OperatorModel, DEMO_MODEL};
use nexus_proto::messages::{ElementwiseOp, TaskKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest ciphertext accepted.
const MAX_CIPHERTEXT: usize = 1 << 30;

/// Models by (name, slot count), each built once: the demo model's
/// diagonals and LayerNorm's and Softmax's approximations are computed at
/// construction.
type ModelCache<T> = OnceLock<Mutex<HashMap<(String, usize), Arc<T>>>>;

fn cached<T>(
    cache: &'static ModelCache<T>,
    name: &str,
    slots: usize,
    build: impl FnOnce() -> Result<Option<T>, String>,
) -> Result<Option<Arc<T>>, String> {
    let mut guard = cache.get_or_init(Mutex::default).lock().map_err(|_| "model cache poisoned".to_string())?;
    let key = (name.to_string(), slots);
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

/// Runs one task; errors are messages for the coordinator.
pub fn execute(model: &str, kind: &TaskKind, keys: &KeySet, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let params = &keys.params;
    let eval = Evaluator::new(params);
    let encoder = Encoder::new(params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &keys.relin, galois: &keys.galois };
    let run = |f: &dyn Fn(&Ciphertext) -> Result<Ciphertext, String>| -> Result<Vec<Vec<u8>>, String> {
        inputs
            .iter()
            .map(|bytes| {
                let ct = Ciphertext::from_bytes(params, bytes, MAX_CIPHERTEXT).map_err(|e| e.to_string())?;
                f(&ct)?.to_bytes(params).map_err(|e| e.to_string())
            })
            .collect()
    };
    match (model, kind) {
        (_, TaskKind::Elementwise { layer: 0, .. }) if op_matches(model, kind) => {
            let m = operator_model(model, params.max_slots())?.ok_or_else(|| format!("unknown model {model:?}"))?;
            run(&|ct| m.apply(&engine, ct).map_err(|e| e.to_string()))
        }
        (DEMO_MODEL, TaskKind::MatMulDiagonal { layer } | TaskKind::Elementwise { layer, op: ElementwiseOp::Gelu }) => {
            let m = demo_model(params.max_slots())?;
            run(&|ct| m.run_layer(*layer as usize, &engine, ct).map_err(|e| e.to_string()))
        }
        (model, other) => Err(format!("task {other:?} of model {model:?} is not supported by this worker")),
    }
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
