//! The embedded demo model `mlp-demo`: a two-layer perceptron on token
//! vectors, `y = GELU(x W1) W2`, with weights generated from a fixed seed
//! (embedded and reproducible: no download). It exercises the cluster path
//! end to end (a rotation-based product, GELU, another product) until the
//! BERT model lands; the coordinator's plan names the same three layers.

use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::gelu::Gelu;
use crate::matmul::DiagonalMatMul;
use nexus_ckks::{Ciphertext, Parameters};

/// Model name on the wire.
pub const DEMO_MODEL: &str = "mlp-demo";

/// One layer of the demo model.
#[derive(Debug)]
pub enum Layer {
    /// Rotation-based product with a weight matrix.
    MatMul(DiagonalMatMul),
    /// GELU.
    Gelu(Gelu),
}

/// The demo model for one slot count.
#[derive(Debug)]
pub struct DemoMlp {
    /// Input features per token.
    pub d_in: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Output features per token.
    pub d_out: usize,
    w1: Vec<f64>,
    w2: Vec<f64>,
    layers: Vec<Layer>,
}

/// Deterministic weights in `(-scale, scale)` (a 64-bit LCG: the model is
/// part of the binary, not random per run).
pub(crate) fn lcg_uniform(count: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

impl DemoMlp {
    /// The embedded model (16 -> 16 -> 4) laid out for `slots` slots.
    pub fn embedded(slots: usize) -> Result<Self, NnError> {
        let (d_in, hidden, d_out) = (16, 16, 4);
        let w1 = lcg_uniform(d_in * hidden, 0x5eed_0001, 0.6);
        let w2 = lcg_uniform(hidden * d_out, 0x5eed_0002, 0.5);
        let layers = vec![
            Layer::MatMul(DiagonalMatMul::new(&w1, d_in, hidden, slots)?),
            Layer::Gelu(Gelu::bert_default()?),
            Layer::MatMul(DiagonalMatMul::new(&w2, hidden, d_out, slots)?),
        ];
        Ok(Self { d_in, hidden, d_out, w1, w2, layers })
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Tokens per ciphertext.
    pub fn tokens_per_ciphertext(&self) -> usize {
        match &self.layers[0] {
            Layer::MatMul(m) => m.tokens_per_ciphertext(),
            Layer::Gelu(_) => 1,
        }
    }

    /// Rotation steps the client must generate Galois keys for.
    pub fn rotations(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = self
            .layers
            .iter()
            .flat_map(|l| match l {
                Layer::MatMul(m) => m.rotations(),
                Layer::Gelu(_) => vec![],
            })
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// Levels the whole model consumes.
    pub fn levels(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::MatMul(_) => 1,
                Layer::Gelu(g) => g.cost().levels,
            })
            .sum()
    }

    /// Client side: token rows into slot vectors.
    pub fn pack(&self, tokens: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        match &self.layers[0] {
            Layer::MatMul(m) => m.pack(tokens),
            Layer::Gelu(_) => Err(invalid("model", "first layer must be a product")),
        }
    }

    /// Client side: output rows of one decoded ciphertext.
    pub fn unpack(&self, slots: &[f64], tokens: usize) -> Vec<Vec<f64>> {
        match &self.layers[2] {
            Layer::MatMul(m) => m.unpack(slots, tokens),
            Layer::Gelu(_) => vec![],
        }
    }

    /// Runs layer `index` on one ciphertext (what a worker task does).
    pub fn run_layer(&self, index: usize, engine: &Engine<'_>, ct: &Ciphertext) -> Result<Ciphertext, NnError> {
        match self.layers.get(index) {
            Some(Layer::MatMul(m)) => m.apply(engine, ct),
            Some(Layer::Gelu(g)) => g.apply(engine, ct),
            None => Err(invalid("model", format!("{DEMO_MODEL} has {} layers, not {}", self.layers.len(), index + 1))),
        }
    }

    /// The f64 twin of the whole model (refuses hidden values outside
    /// GELU's range).
    pub fn plain(&self, tokens: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        let (Layer::MatMul(m1), Layer::Gelu(g), Layer::MatMul(m2)) =
            (&self.layers[0], &self.layers[1], &self.layers[2])
        else {
            return Err(invalid("model", "unexpected layer structure"));
        };
        let hidden = m1.plain(tokens, &self.w1);
        let activated: Vec<Vec<f64>> = hidden.iter().map(|h| g.plain(h)).collect::<Result<_, _>>()?;
        Ok(m2.plain(&activated, &self.w2))
    }

    /// Checks the parameters leave enough levels.
    pub fn check(&self, params: &Parameters) -> Result<(), NnError> {
        if params.max_level() < self.levels() {
            return Err(invalid(
                "model",
                format!("{DEMO_MODEL} needs {} levels, preset has {}", self.levels(), params.max_level()),
            ));
        }
        Ok(())
    }
}
