//! Model plans: which tasks a query becomes.

use nexus_proto::messages::{ElementwiseOp, TaskKind};

/// Tasks for `model` over `inputs` ciphertexts, or why the model is unknown.
pub fn tasks(model: &str, inputs: usize) -> Result<Vec<TaskKind>, String> {
    if inputs == 0 {
        return Err("a query needs at least one input ciphertext".into());
    }
    match model {
        // GELU on every input ciphertext: one element-wise task each.
        "gelu" => Ok((0..inputs).map(|_| TaskKind::Elementwise { layer: 0, op: ElementwiseOp::Gelu }).collect()),
        other => Err(format!("unknown model {other:?}; this coordinator serves: gelu")),
    }
}
