//! Model plans: which chain of tasks each input ciphertext becomes. Layer
//! indices must match the workers' model definitions (`nexus-nn`).

use nexus_proto::messages::{ElementwiseOp, TaskKind};

/// The chain of tasks every input ciphertext of `model` goes through.
pub fn chain(model: &str) -> Result<Vec<TaskKind>, String> {
    match model {
        // One operator on every input ciphertext (nexus_nn::OperatorModel).
        "gelu" => Ok(vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::Gelu }]),
        "layernorm" => Ok(vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::LayerNorm }]),
        "softmax" => Ok(vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::Softmax }]),
        // nexus_nn::DemoMlp: product, GELU, product.
        "mlp-demo" => Ok(vec![
            TaskKind::MatMulDiagonal { layer: 0 },
            TaskKind::Elementwise { layer: 1, op: ElementwiseOp::Gelu },
            TaskKind::MatMulDiagonal { layer: 2 },
        ]),
        other => Err(format!("unknown model {other:?}; this coordinator serves: gelu, layernorm, softmax, mlp-demo")),
    }
}
