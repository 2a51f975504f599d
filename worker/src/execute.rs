//! Task execution with `nexus-nn`: decode inputs against the key set's
//! parameters, run the model's layer, encode outputs.

use nexus_ckks::{Ciphertext, Encoder, Evaluator, Wire};
use nexus_nn::{DemoMlp, Engine, Gelu, KeySet, DEMO_MODEL};
use nexus_proto::messages::{ElementwiseOp, TaskKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest ciphertext accepted.
const MAX_CIPHERTEXT: usize = 1 << 30;

/// The demo model per slot count (its diagonals are built once).
fn demo_model(slots: usize) -> Result<Arc<DemoMlp>, String> {
    static MODELS: OnceLock<Mutex<HashMap<usize, Arc<DemoMlp>>>> = OnceLock::new();
    let models = MODELS.get_or_init(Mutex::default);
    let mut guard = models.lock().map_err(|_| "model cache poisoned".to_string())?;
    if let Some(m) = guard.get(&slots) {
        return Ok(m.clone());
    }
    let model = Arc::new(DemoMlp::embedded(slots).map_err(|e| e.to_string())?);
    guard.insert(slots, model.clone());
    Ok(model)
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
        ("gelu", TaskKind::Elementwise { op: ElementwiseOp::Gelu, .. }) => {
            let gelu = Gelu::bert_default().map_err(|e| e.to_string())?;
            run(&|ct| gelu.apply(&engine, ct).map_err(|e| e.to_string()))
        }
        (DEMO_MODEL, TaskKind::MatMulDiagonal { layer } | TaskKind::Elementwise { layer, op: ElementwiseOp::Gelu }) => {
            let m = demo_model(params.max_slots())?;
            run(&|ct| m.run_layer(*layer as usize, &engine, ct).map_err(|e| e.to_string()))
        }
        (model, other) => Err(format!("task {other:?} of model {model:?} is not supported by this worker")),
    }
}
