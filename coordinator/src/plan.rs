//! Model plans: which chain of tasks each input ciphertext becomes. Layer
//! indices must match the workers' model definitions (`nexus-nn`).

use nexus_proto::messages::{ElementwiseOp, TaskKind};
use nexus_proto::models::BertModelId;

/// The chain of tasks every input ciphertext of `model` goes through.
pub fn chain(model: &str) -> Result<Vec<TaskKind>, String> {
    // A BERT-family encoder (nexus_nn::ServedBert on the workers): every
    // layer, then the mean pooling.
    if let Some(bert) = BertModelId::parse(model)? {
        let layers = (0..bert.layers as u32).map(|layer| TaskKind::EncoderLayer { layer });
        return Ok(layers.chain([TaskKind::MeanPool]).collect());
    }
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
        other => Err(format!("unknown model {other:?}; this coordinator serves: gelu, layernorm, softmax, mlp-demo, bert:NAME:LAYERS:TOKENS:BLOCK")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bert_model_runs_every_layer_then_pools_and_bad_ids_are_refused() {
        let tasks = chain("bert:minilm:3:9:16").unwrap();
        assert_eq!(
            tasks,
            vec![
                TaskKind::EncoderLayer { layer: 0 },
                TaskKind::EncoderLayer { layer: 1 },
                TaskKind::EncoderLayer { layer: 2 },
                TaskKind::MeanPool
            ]
        );
        assert!(chain("bert:minilm:3:9").unwrap_err().contains("NAME:LAYERS:TOKENS:BLOCK"));
        assert!(chain("bart").unwrap_err().contains("unknown model"));
    }
}
