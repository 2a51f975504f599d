//! Task execution with `nexus-nn`: decode inputs against the key set's
//! parameters, run the operator, encode outputs.

use nexus_ckks::{Ciphertext, Encoder, Evaluator, Wire};
use nexus_nn::{Engine, Gelu, KeySet};
use nexus_proto::messages::{ElementwiseOp, TaskKind};

/// Largest ciphertext accepted.
const MAX_CIPHERTEXT: usize = 1 << 30;

/// Runs one task; errors are messages for the coordinator.
pub fn execute(kind: &TaskKind, keys: &KeySet, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let params = &keys.params;
    let eval = Evaluator::new(params);
    let encoder = Encoder::new(params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &keys.relin, galois: &keys.galois };
    let decode = |bytes: &Vec<u8>| Ciphertext::from_bytes(params, bytes, MAX_CIPHERTEXT).map_err(|e| e.to_string());
    match kind {
        TaskKind::Elementwise { op: ElementwiseOp::Gelu, .. } => {
            let gelu = Gelu::bert_default().map_err(|e| e.to_string())?;
            inputs
                .iter()
                .map(|bytes| {
                    let out = gelu.apply(&engine, &decode(bytes)?).map_err(|e| e.to_string())?;
                    out.to_bytes(params).map_err(|e| e.to_string())
                })
                .collect()
        }
        other => Err(format!("task kind {other:?} is not supported by this worker yet")),
    }
}
