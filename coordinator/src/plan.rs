//! Model plans: the graph of tasks a query's input ciphertexts become.
//! Layer indices must match the workers' model definitions (`nexus-nn`).

use nexus_proto::messages::{ElementwiseOp, EncoderStep, TaskKind};
use nexus_proto::models::{BertModelId, HeadChoice};

/// Tiles the product into a BERT layer's feed-forward layout is cut into.
/// The wide layout holds `slots / T` columns per ciphertext: MiniLM's 1536
/// columns take one ciphertext at 16 tokens (the second tile is then an
/// empty task) and two at 32 tokens or more.
pub const FEED_FORWARD_TILES: u32 = 2;

/// Most input ciphertexts one query may have (bounds its graph).
pub const MAX_INPUTS: u32 = 4096;

/// Where a task's input ciphertexts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The query's input ciphertext `i`.
    Input(u32),
    /// Every output of task `n`, in order.
    Task(u32),
}

impl Source {
    /// The key a value is held under in the replicated state.
    pub fn key(self) -> u64 {
        match self {
            Source::Input(i) => u64::from(i),
            Source::Task(n) => 1 << 32 | u64::from(n),
        }
    }
}

/// One task of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it computes.
    pub kind: TaskKind,
    /// Its inputs, concatenated in this order.
    pub sources: Vec<Source>,
    /// The stage (layer) it belongs to, for progress.
    pub stage: u32,
}

/// The tasks of one query, in an order where every task comes after the
/// tasks it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// Tasks.
    pub nodes: Vec<Node>,
    /// Stages (the layers of progress reports).
    pub stages: u32,
    /// The tasks whose outputs, in this order, are the result.
    pub results: Vec<u32>,
}

impl Graph {
    /// A chain on input 0: each task reads the one before it, one stage
    /// each.
    fn chain(kinds: Vec<TaskKind>) -> Self {
        let nodes: Vec<Node> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let i = i as u32;
                let source = if i == 0 { Source::Input(0) } else { Source::Task(i - 1) };
                Node { kind, sources: vec![source], stage: i }
            })
            .collect();
        let stages = nodes.len() as u32;
        let results = vec![stages.saturating_sub(1)];
        Self { nodes, stages, results }
    }

    /// This graph (of input 0) once per input, the copies side by side;
    /// the result is every copy's, in input order.
    fn per_input(self, inputs: u32) -> Self {
        let size = self.nodes.len() as u32;
        let mut out = Graph { nodes: Vec::new(), stages: self.stages, results: Vec::new() };
        for input in 0..inputs {
            let offset = input * size;
            let shift = |s: &Source| match s {
                Source::Input(_) => Source::Input(input),
                Source::Task(t) => Source::Task(t + offset),
            };
            out.nodes.extend(self.nodes.iter().map(|n| Node {
                kind: n.kind.clone(),
                sources: n.sources.iter().map(shift).collect(),
                stage: n.stage,
            }));
            out.results.extend(self.results.iter().map(|r| r + offset));
        }
        out
    }

    /// Tasks not in `finished` whose sources all are.
    pub fn ready(&self, finished: &std::collections::BTreeSet<u32>) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|n| !finished.contains(n))
            .filter(|&n| {
                self.nodes[n as usize].sources.iter().all(|s| match s {
                    Source::Input(_) => true,
                    Source::Task(t) => finished.contains(t),
                })
            })
            .collect()
    }

    /// Whether every task reading `source` is in `finished` (its value is
    /// no longer needed, unless it is the result).
    pub fn consumed(&self, source: Source, finished: &std::collections::BTreeSet<u32>) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.sources.contains(&source))
            .all(|(i, _)| finished.contains(&(i as u32)))
    }

    /// Leading stages whose tasks are all in `finished`.
    pub fn stages_done(&self, finished: &std::collections::BTreeSet<u32>) -> u32 {
        let mut first_open = self.stages;
        for (i, node) in self.nodes.iter().enumerate() {
            if !finished.contains(&(i as u32)) {
                first_open = first_open.min(node.stage);
            }
        }
        first_open
    }
}

/// The graph a query of `model` on `inputs` ciphertexts runs.
pub fn graph(model: &str, inputs: u32) -> Result<Graph, String> {
    if inputs == 0 || inputs > MAX_INPUTS {
        return Err(format!("{inputs} input ciphertexts; a query takes 1 to {MAX_INPUTS}"));
    }
    // A BERT-family encoder (nexus_nn::ServedBert on the workers): every
    // layer as its steps, then the mean pooling, on every input.
    if let Some(bert) = BertModelId::parse(model)? {
        let classes = bert.head.as_ref().map(HeadChoice::classes);
        return Ok(bert_graph(bert.layers as u32, classes).per_input(inputs));
    }
    if model == "matmul" {
        return Ok(matmul_graph(inputs));
    }
    let kinds = match model {
        // One operator on every input ciphertext (nexus_nn::OperatorModel).
        "gelu" => vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::Gelu }],
        "layernorm" => vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::LayerNorm }],
        "softmax" => vec![TaskKind::Elementwise { layer: 0, op: ElementwiseOp::Softmax }],
        // nexus_nn::DemoMlp: product, GELU, product.
        "mlp-demo" => vec![
            TaskKind::MatMulDiagonal { layer: 0 },
            TaskKind::Elementwise { layer: 1, op: ElementwiseOp::Gelu },
            TaskKind::MatMulDiagonal { layer: 2 },
        ],
        other => return Err(format!("unknown model {other:?}; this coordinator serves: gelu, layernorm, softmax, mlp-demo, matmul, bert:NAME@DIGEST:LAYERS:TOKENS:BLOCK")),
    };
    Ok(Graph::chain(kinds).per_input(inputs))
}

/// The compressed-input product (`nexus_nn::MatMulModel`): one tile per
/// input ciphertext (every output row block: splitting an input's blocks
/// over tiles would repeat its expansion), then one task adding the
/// tiles' partial outputs.
fn matmul_graph(inputs: u32) -> Graph {
    let mut nodes: Vec<Node> = (0..inputs)
        .map(|input| Node {
            kind: TaskKind::MatMulTile { layer: 0, input, first_block: 0, end_block: u32::MAX },
            sources: vec![Source::Input(input)],
            stage: 0,
        })
        .collect();
    nodes.push(Node {
        kind: TaskKind::MatMulAssemble { layer: 0 },
        sources: (0..inputs).map(Source::Task).collect(),
        stage: 1,
    });
    Graph { nodes, stages: 2, results: vec![inputs] }
}

/// Each layer's steps (`EncoderStep`) wired as `nexus_nn`'s
/// `run_layer` composes them, then the pooling; with a head of `classes`
/// classes, its logits, the Argmax's rounds (one task each, a chain) and
/// the mask, as `EncryptedEncoder::classify_with` composes them. The
/// result is the embedding, then the mask if there is a head.
fn bert_graph(layers: u32, classes: Option<usize>) -> Graph {
    let mut nodes: Vec<Node> = Vec::new();
    let add = |nodes: &mut Vec<Node>, kind: TaskKind, sources: Vec<Source>, stage: u32| -> Source {
        nodes.push(Node { kind, sources, stage });
        Source::Task(nodes.len() as u32 - 1)
    };
    let mut x = Source::Input(0);
    for layer in 0..layers {
        let step = |step| TaskKind::EncoderStep { layer, step };
        let input = add(&mut nodes, step(EncoderStep::Input), vec![x], layer);
        let q = add(&mut nodes, step(EncoderStep::Query), vec![input], layer);
        let k = add(&mut nodes, step(EncoderStep::Key), vec![input], layer);
        let v = add(&mut nodes, step(EncoderStep::Value), vec![input], layer);
        let context = add(&mut nodes, step(EncoderStep::Attention), vec![q, k, v], layer);
        let x1 = add(&mut nodes, step(EncoderStep::AttentionOutput), vec![context, input], layer);
        let tiles: Vec<Source> = (0..FEED_FORWARD_TILES)
            .map(|tile| {
                let kind = step(EncoderStep::FeedForwardIn { tile, tiles: FEED_FORWARD_TILES });
                add(&mut nodes, kind, vec![x1], layer)
            })
            .collect();
        let activated = add(&mut nodes, step(EncoderStep::Gelu), tiles, layer);
        x = add(&mut nodes, step(EncoderStep::FeedForwardOut), vec![activated, x1], layer);
    }
    let pooled = add(&mut nodes, TaskKind::MeanPool, vec![x], layers);
    let embedding = nodes.len() as u32 - 1;
    let Some(classes) = classes else {
        return Graph { nodes, stages: layers + 1, results: vec![embedding] };
    };
    let head = layers + 1;
    let logits = add(&mut nodes, TaskKind::HeadLogits, vec![pooled], head);
    // log2 of the classes padded to a power of two (`nexus_nn::Argmax`).
    let rounds = classes.next_power_of_two().trailing_zeros();
    let mut max = logits;
    for round in 0..rounds {
        max = add(&mut nodes, TaskKind::ArgmaxRound { round }, vec![max], head);
    }
    add(&mut nodes, TaskKind::ArgmaxMask, vec![logits, max], head);
    let mask = nodes.len() as u32 - 1;
    Graph { nodes, stages: head + 1, results: vec![embedding, mask] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_bert_model_runs_every_layer_as_a_graph_then_pools_and_bad_ids_are_refused() {
        let g = graph("bert:minilm@0123456789abcdef:3:9:16", 1).unwrap();
        assert_eq!(g.stages, 4);
        // Ten steps per layer (two tiles), then the pooling.
        assert_eq!(g.nodes.len(), 3 * 10 + 1);
        assert_eq!(g.results, vec![30]);
        assert_eq!(g.nodes[30].kind, TaskKind::MeanPool);
        // Every task reads only earlier tasks.
        for (i, node) in g.nodes.iter().enumerate() {
            for s in &node.sources {
                if let Source::Task(t) = s {
                    assert!((*t as usize) < i, "task {i} reads task {t}");
                }
            }
        }
        // At first only the input's refresh is ready; after it, the three
        // projections side by side; the attention waits for all three.
        let mut finished = BTreeSet::new();
        assert_eq!(g.ready(&finished), vec![0]);
        finished.insert(0);
        assert_eq!(g.ready(&finished), vec![1, 2, 3]);
        finished.extend([1, 2]);
        assert_eq!(g.ready(&finished), vec![3]);
        finished.insert(3);
        assert_eq!(g.ready(&finished), vec![4]);
        // The refreshed input is still needed by the residual (task 5).
        assert!(!g.consumed(Source::Task(0), &finished));
        assert!(g.consumed(Source::Input(0), &finished));
        finished.extend([4, 5]);
        assert!(g.consumed(Source::Task(0), &finished));
        assert_eq!(g.ready(&finished), vec![6, 7], "both tiles of the product at once");
        assert_eq!(g.stages_done(&finished), 0);
        finished.extend(6..10);
        assert_eq!(g.stages_done(&finished), 1);
        assert_eq!(g.nodes[10].sources, vec![Source::Task(9)], "layer 2 reads layer 1's output");

        // Two inputs: two copies side by side, results in input order.
        let two = graph("bert:minilm@0123456789abcdef:3:9:16", 2).unwrap();
        assert_eq!(two.nodes.len(), 62);
        assert_eq!(two.results, vec![30, 61]);
        assert_eq!(two.ready(&BTreeSet::new()), vec![0, 31]);
        assert_eq!(two.nodes[31].sources, vec![Source::Input(1)]);
        assert_eq!(two.nodes[32].sources, vec![Source::Task(31)]);

        assert!(graph("bert:minilm@0123456789abcdef:3:9", 1).unwrap_err().contains("NAME@DIGEST:LAYERS:TOKENS:BLOCK"));
        assert!(graph("bart", 1).unwrap_err().contains("unknown model"));
        assert!(graph("gelu", 0).unwrap_err().contains("1 to 4096"));
        assert!(graph("gelu", MAX_INPUTS + 1).is_err());
    }

    #[test]
    fn a_head_adds_its_logits_one_task_per_argmax_round_and_the_mask() {
        let g = graph("bert:minilm@0123456789abcdef:2:9:16:animals;food;travel;science;sport", 1).unwrap();
        let pool = 2 * 10;
        assert_eq!(g.nodes[pool].kind, TaskKind::MeanPool);
        // Five classes pad to eight: three rounds.
        let kinds: Vec<&TaskKind> = g.nodes[pool + 1..].iter().map(|n| &n.kind).collect();
        assert_eq!(
            kinds,
            vec![
                &TaskKind::HeadLogits,
                &TaskKind::ArgmaxRound { round: 0 },
                &TaskKind::ArgmaxRound { round: 1 },
                &TaskKind::ArgmaxRound { round: 2 },
                &TaskKind::ArgmaxMask
            ]
        );
        let logits = pool as u32 + 1;
        assert_eq!(g.nodes[pool + 1].sources, vec![Source::Task(pool as u32)]);
        assert_eq!(g.nodes[pool + 2].sources, vec![Source::Task(logits)]);
        assert_eq!(g.nodes[pool + 4].sources, vec![Source::Task(logits + 2)]);
        assert_eq!(g.nodes[pool + 5].sources, vec![Source::Task(logits), Source::Task(logits + 3)]);
        // The embedding and the mask; one more stage.
        assert_eq!(g.results, vec![pool as u32, pool as u32 + 5]);
        assert_eq!(g.stages, 4);
        // The logits are held until the mask is done.
        let mut finished: BTreeSet<u32> = (0..=logits + 3).collect();
        assert!(!g.consumed(Source::Task(logits), &finished));
        finished.insert(logits + 4);
        assert!(g.consumed(Source::Task(logits), &finished));
        // Two classes: one round.
        assert_eq!(graph("bert:minilm@0123456789abcdef:1:9:16:yes;no", 1).unwrap().nodes.len(), 10 + 1 + 3);
        assert!(graph("bert:minilm@0123456789abcdef:1:9:16:yes", 1).unwrap_err().contains("1 labels"));
        // A trained head plans from the class count its id names.
        let trained = graph("bert:minilm@0123456789abcdef:1:9:16:head=sst2/5/0123456789abcdef", 1).unwrap();
        let kinds = |g: &Graph| g.nodes.iter().map(|n| n.kind.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(&trained), kinds(&graph("bert:minilm@0123456789abcdef:1:9:16:a;b;c;d;e", 1).unwrap()));
    }

    #[test]
    fn operator_models_are_chains_per_input() {
        let g = graph("mlp-demo", 2).unwrap();
        assert_eq!(g.stages, 3);
        assert_eq!(g.nodes[0].sources, vec![Source::Input(0)]);
        assert_eq!(g.nodes[2].sources, vec![Source::Task(1)]);
        assert_eq!(g.nodes[3].sources, vec![Source::Input(1)]);
        assert_eq!(g.results, vec![2, 5]);
        assert_eq!(g.ready(&BTreeSet::from([0])), vec![1, 3]);
    }

    #[test]
    fn a_product_runs_a_tile_per_input_then_adds_them() {
        let g = graph("matmul", 3).unwrap();
        assert_eq!(g.nodes.len(), 4);
        assert_eq!(g.ready(&BTreeSet::new()), vec![0, 1, 2]);
        assert_eq!(g.nodes[1].sources, vec![Source::Input(1)]);
        assert_eq!(g.nodes[3].sources, vec![Source::Task(0), Source::Task(1), Source::Task(2)]);
        assert_eq!(g.ready(&BTreeSet::from([0, 1])), vec![2]);
        assert_eq!(g.ready(&BTreeSet::from([0, 1, 2])), vec![3]);
        assert_eq!(g.results, vec![3]);
        assert_eq!((g.stages, g.stages_done(&BTreeSet::from([0, 1, 2]))), (2, 1));
    }
}
