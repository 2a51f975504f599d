//! The encoder on ciphertexts: every layer's projections, attention,
//! Softmax, residuals, LayerNorms and feed-forward block on the hidden
//! layout, bootstrapping where the next piece needs more levels than are
//! left, and mean pooling. No decryption in between, no client help.
//!
//! The non-linear pieces are fitted on value ranges calibrated with the
//! plaintext reference ([`EncoderPlan::calibrate`]), widened by a margin.
//! Before a bootstrap the value is divided by a power of two bounding it
//! (the modular reduction of bootstrapping is accurate for small values
//! only) and multiplied back after: one level on each side.

use super::attention::PackedAttention;
use super::head::{ClassifierHead, EncryptedHead};
use super::lockstep::Bootstraps;
use super::packed::{HiddenLayout, PackedLinear, Placement};
use super::reference::{LayerRanges, Span};
use super::weights::BertWeights;
use crate::compare::Refresh;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::gelu::Gelu;
use crate::layernorm::LayerNorm;
use crate::newton::Refresher;
use nexus_ckks::{Ciphertext, GaloisKeys, KeyGenerator, Parameters, SecretKey};
use std::time::Instant;

/// Ranges (with margins) and accuracy settings of an encrypted encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderPlan {
    /// Per layer: the ranges its approximations are fitted on.
    pub layers: Vec<LayerRanges>,
    /// Bound on the embedded input (for a bootstrap before layer 0).
    pub input_bound: f64,
    /// Relative error of Softmax's exp/inverse and LayerNorm's inverse
    /// square root.
    pub max_rel_error: f64,
    /// Absolute error of GELU on its range.
    pub gelu_error: f64,
    /// Levels one stage may use between bootstraps (GELU's accuracy is
    /// relaxed to fit); `None`: no limit.
    pub max_stage_depth: Option<usize>,
}

impl EncoderPlan {
    /// Ranges seen by the plaintext reference on `inputs` (token id
    /// sequences), widened by `margin` (e.g. 1.5: scores and GELU inputs
    /// times 1.5, variances divided and multiplied by 1.5^2).
    pub fn calibrate(weights: &BertWeights, inputs: &[Vec<u32>], margin: f64) -> Result<Self, NnError> {
        if inputs.is_empty() || margin.is_nan() || margin < 1.0 {
            return Err(invalid("encoder plan", "calibration needs inputs and a margin >= 1"));
        }
        let mut layers = vec![LayerRanges::default(); weights.config.layers];
        let mut input = Span::default();
        for ids in inputs {
            let x = weights.embed(ids)?;
            x.iter().flatten().for_each(|&v| {
                input.min = input.min.min(v);
                input.max = input.max.max(v);
            });
            let (_, ranges) = weights.encode(ids)?;
            layers.iter_mut().zip(&ranges).for_each(|(a, b)| a.merge(b));
        }
        let widen = |s: Span| Span { min: s.min * margin, max: s.max * margin };
        let widen_var = |s: Span| Span { min: s.min / (margin * margin), max: s.max * margin * margin };
        let layers = layers
            .into_iter()
            .map(|r| LayerRanges {
                scores: widen(r.scores),
                attention_variance: widen_var(r.attention_variance),
                gelu: widen(r.gelu),
                ffn_variance: widen_var(r.ffn_variance),
                output: widen(r.output),
                activations: widen(r.activations),
            })
            .collect();
        Ok(Self {
            layers,
            input_bound: input.max_abs() * margin,
            max_rel_error: 1e-4,
            gelu_error: 1e-4,
            max_stage_depth: None,
        })
    }
}

impl EncoderPlan {
    /// What in `seen` (the plaintext model's ranges on one input, which the
    /// client can compute) falls outside the ranges the approximations were
    /// fitted on: one line per violation, empty when the encrypted result
    /// can be trusted to the operators' stated errors.
    pub fn violations(&self, seen: &[LayerRanges]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (plan, seen)) in self.layers.iter().zip(seen).enumerate() {
            let mut check = |what: &str, fitted: &Span, got: &Span| {
                if got.min < fitted.min || got.max > fitted.max {
                    out.push(format!(
                        "layer {i}: {what} reach [{:.3}, {:.3}], fitted on [{:.3}, {:.3}]",
                        got.min, got.max, fitted.min, fitted.max
                    ));
                }
            };
            check("attention scores", &plan.scores, &seen.scores);
            check("GELU inputs", &plan.gelu, &seen.gelu);
            check("attention LayerNorm variances", &plan.attention_variance, &seen.attention_variance);
            check("feed-forward LayerNorm variances", &plan.ffn_variance, &seen.ffn_variance);
            let bound = |s: &Span| Span { min: -s.max_abs(), max: s.max_abs() };
            check("activations", &bound(&plan.activations), &seen.activations);
        }
        out
    }
}

/// One layer's non-linear operators, built for a layout (the linear
/// layers are built when they run: their diagonals are large).
#[derive(Debug)]
pub struct LayerCircuit {
    attention: PackedAttention,
    attention_norm: LayerNorm,
    gelu: Gelu,
    ffn_norm: LayerNorm,
    /// Bound on intermediate values (bootstrap scaling).
    bound: f64,
    /// Bound on the layer's output.
    output_bound: f64,
}

/// Wall time of each piece of one layer (seconds; the pieces exclude the
/// bootstraps inside them, which are counted apart).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LayerTimings {
    /// Q, K, V projections.
    pub projections: f64,
    /// Scores, Softmax and weighted sum.
    pub attention: f64,
    /// Output projection and residual.
    pub attention_out: f64,
    /// Both LayerNorms.
    pub layer_norms: f64,
    /// Both feed-forward products and GELU.
    pub feed_forward: f64,
    /// Bootstraps (and their scaling).
    pub bootstraps: f64,
    /// Number of bootstraps.
    pub bootstrap_count: usize,
}

/// The encrypted encoder of one model, layout and plan.
#[derive(Debug)]
pub struct EncryptedEncoder<'w> {
    weights: &'w BertWeights,
    layout: HiddenLayout,
    plan: EncoderPlan,
    head: Option<EncryptedHead>,
}

fn bound_of(span: &Span) -> f64 {
    span.max_abs().max(1e-3)
}

impl<'w> EncryptedEncoder<'w> {
    /// Latency mode: one sentence of `real_tokens` tokens (padded to a
    /// power of two), in `slots` slots.
    pub fn new(weights: &'w BertWeights, real_tokens: usize, slots: usize, plan: EncoderPlan) -> Result<Self, NnError> {
        Self::padded(weights, real_tokens, real_tokens.next_power_of_two(), slots, plan)
    }

    /// Latency mode with an explicit block: `real_tokens` padded to
    /// `block` (a power of two at least `real_tokens`), so that sentences
    /// of different lengths share one block's rotation keys.
    pub fn padded(
        weights: &'w BertWeights,
        real_tokens: usize,
        block: usize,
        slots: usize,
        plan: EncoderPlan,
    ) -> Result<Self, NnError> {
        let c = &weights.config;
        let layout = HiddenLayout::new(block, real_tokens, c.heads, c.head_dim(), slots)?;
        Self::with_layout(weights, layout, plan)
    }

    /// Throughput mode: sentences of `lengths` tokens side by side in one
    /// ciphertext, each in a block of the longest one's tokens (padded to a
    /// power of two); see [`HiddenLayout::capacity`] for how many fit.
    pub fn batched(
        weights: &'w BertWeights,
        lengths: &[usize],
        slots: usize,
        plan: EncoderPlan,
    ) -> Result<Self, NnError> {
        let block = lengths.iter().copied().max().unwrap_or(0).next_power_of_two();
        Self::padded_batch(weights, lengths, block, slots, plan)
    }

    /// Throughput mode in blocks of `block` tokens (a power of two at
    /// least the longest sentence's), so that batches of as many sentences
    /// share one layout (and can run in
    /// [`lockstep`](super::lockstep::lockstep)).
    pub fn padded_batch(
        weights: &'w BertWeights,
        lengths: &[usize],
        block: usize,
        slots: usize,
        plan: EncoderPlan,
    ) -> Result<Self, NnError> {
        let c = &weights.config;
        let layout = HiddenLayout::batched(block, lengths, c.heads, c.head_dim(), slots)?;
        Self::with_layout(weights, layout, plan)
    }

    /// Encoder layers the circuit runs.
    pub fn layer_count(&self) -> usize {
        self.weights.config.layers
    }

    fn with_layout(weights: &'w BertWeights, layout: HiddenLayout, plan: EncoderPlan) -> Result<Self, NnError> {
        let layers = weights.config.layers;
        if plan.layers.len() != layers {
            return Err(invalid("encoder", format!("plan has {} layers, model {layers}", plan.layers.len())));
        }
        Ok(Self { weights, layout, plan, head: None })
    }

    /// Adds a classification head after the pooling: `logit_bound` from
    /// [`ClassifierHead::logit_bound`], `argmax_depth` the levels one
    /// comparison stage may use between bootstraps, `gap_bits` the
    /// Argmax's resolution (see [`EncryptedHead::new`]).
    pub fn with_head(
        mut self,
        head: ClassifierHead,
        logit_bound: f64,
        argmax_depth: usize,
        gap_bits: u32,
    ) -> Result<Self, NnError> {
        let normalized = self.weights.config.normalize;
        let layout = self.layout.clone();
        self.head = Some(EncryptedHead::new(head, layout, logit_bound, normalized, argmax_depth, gap_bits)?);
        Ok(self)
    }

    /// The classification head, if any.
    pub fn head(&self) -> Option<&EncryptedHead> {
        self.head.as_ref()
    }

    /// Every sentence's encrypted one-hot class mask from
    /// [`mean_pool`](Self::mean_pool)'s ciphertext (read with
    /// [`EncryptedHead::mask_of`]).
    pub fn classify(
        &self,
        engine: &Engine<'_>,
        refresh: &Refresh<'_>,
        pooled: &Ciphertext,
    ) -> Result<Ciphertext, NnError> {
        self.classify_with(&mut Bootstraps::new(engine, refresh), pooled.clone())
    }

    /// [`classify`](Self::classify) bootstrapping through `r` (in a lane:
    /// paired with the other lane's head).
    pub fn classify_with(&self, r: &mut Bootstraps<'_>, pooled: Ciphertext) -> Result<Ciphertext, NnError> {
        let head = self.head.as_ref().ok_or_else(|| invalid("encoder", "no classification head"))?;
        let logits = self.head_logits_with(r, pooled)?;
        let engine = r.engine;
        let mut max = logits.clone();
        for round in 0..head.rounds() {
            max = head.argmax_round(engine, r, max, round)?;
        }
        head.argmax_mask(engine, r, &logits, &max)
    }

    /// The head's scaled logits from the pooled ciphertext: the first
    /// piece of [`classify_with`](Self::classify_with), whose Argmax
    /// rounds and mask follow through [`EncryptedHead::argmax_round`] and
    /// [`EncryptedHead::argmax_mask`] (the same operations in the same
    /// order, so the same bytes).
    pub fn head_logits_with(&self, r: &mut Bootstraps<'_>, pooled: Ciphertext) -> Result<Ciphertext, NnError> {
        let head = self.head.as_ref().ok_or_else(|| invalid("encoder", "no classification head"))?;
        let bound = self.plan.layers.last().map_or(1.0, |r| bound_of(&r.output));
        let pooled = r.refresh(pooled, 2, bound)?;
        head.logits(r.engine, &pooled)
    }

    /// The hidden layout (client side: pack the embedded tokens with it).
    pub fn layout(&self) -> &HiddenLayout {
        &self.layout
    }

    /// Builds layer `index`'s operators.
    pub fn layer(&self, index: usize) -> Result<LayerCircuit, NnError> {
        let w = self.weights.layers.get(index).ok_or_else(|| invalid("encoder", format!("no layer {index}")))?;
        let r = &self.plan.layers[index];
        let c = &self.weights.config;
        let norm = |weights: &super::weights::Norm, var: &Span| -> Result<LayerNorm, NnError> {
            LayerNorm::new(
                self.layout.row_layout()?,
                weights.gamma.clone(),
                weights.beta.clone(),
                c.layer_norm_eps,
                (var.min.max(c.layer_norm_eps), var.max),
                self.plan.max_rel_error,
            )?
            .with_row_mask(self.layout.token_mask())
        };
        let gelu_range = bound_of(&r.gelu).min(64.0);
        Ok(LayerCircuit {
            attention: PackedAttention::new(
                self.layout.clone(),
                r.scores.min.min(0.0),
                r.scores.max.max(0.0),
                self.plan.max_rel_error,
            )?,
            attention_norm: norm(&w.attention_norm, &r.attention_variance)?,
            // Prescaled (the division goes into the product before it):
            // one level less. One level short of a whole stage if that
            // costs little accuracy, so that the product after it runs
            // without a bootstrap of the wide activations.
            gelu: match self.plan.max_stage_depth {
                Some(depth) => Gelu::prescaled_within(gelu_range, depth.saturating_sub(1), 1e-3)
                    .or_else(|_| Gelu::prescaled_within(gelu_range, depth, 1e-2))?,
                None => Gelu::prescaled(gelu_range, self.plan.gelu_error)?,
            },
            ffn_norm: norm(&w.ffn_norm, &r.ffn_variance)?,
            bound: bound_of(&r.activations).max(bound_of(&r.scores)).max(gelu_range),
            output_bound: bound_of(&r.output),
        })
    }

    fn wide(&self) -> Result<Placement, NnError> {
        Placement::wide(self.weights.config.intermediate, self.layout.tokens(), self.layout.slots())
    }

    /// The product with `linear` (times `factor`) from `input` to `output`.
    fn linear(
        &self,
        linear: &super::weights::Linear,
        input: &Placement,
        output: &Placement,
        factor: f64,
    ) -> Result<PackedLinear, NnError> {
        PackedLinear::new(linear, input, output, &self.layout.token_mask(), factor)
    }

    /// Rotation steps the client must generate keys for (every layer's).
    pub fn rotations(&self) -> Result<Vec<i64>, NnError> {
        let mut steps = self.pooling_rotations();
        let (hidden, wide) = (self.layout.placement(), self.wide()?);
        steps.extend(PackedLinear::rotations_between(&hidden, &hidden));
        steps.extend(PackedLinear::rotations_between(&hidden, &wide));
        steps.extend(PackedLinear::rotations_between(&wide, &hidden));
        // The attention's and LayerNorm's rotations depend on the layout
        // only: every layer needs the same ones.
        let l = self.layer(0)?;
        steps.extend(l.attention.rotations());
        steps.extend(l.attention_norm.layout().sum_rotations());
        if let Some(head) = &self.head {
            steps.extend(head.rotations());
        }
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    fn pooling_rotations(&self) -> Vec<i64> {
        (0..self.layout.block().trailing_zeros()).map(|m| 1i64 << m).collect()
    }

    /// Galois elements of [`rotations`](Self::rotations).
    pub fn galois_elements(&self, params: &Parameters) -> Result<Vec<usize>, NnError> {
        Ok(self.rotations()?.iter().map(|&s| params.galois_element_for_rotation(s)).collect())
    }

    /// Client side: Galois keys for [`rotations`](Self::rotations), each
    /// restricted to `level` (the level computations start at: the
    /// bootstrapping's output level), which drops the limbs above it.
    pub fn generate_keys(
        &self,
        params: &Parameters,
        keygen: &mut KeyGenerator,
        sk: &SecretKey,
        level: usize,
    ) -> Result<GaloisKeys, NnError> {
        let mut keys = GaloisKeys::new();
        for g in self.galois_elements(params)? {
            keys.insert(keygen.galois_key(sk, g)?.restricted_to_level(params, level));
        }
        Ok(keys)
    }

    /// Runs layer `index` on `x` (hidden layout).
    pub fn run_layer(
        &self,
        index: usize,
        engine: &Engine<'_>,
        refresh: &Refresh<'_>,
        x: Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        self.run_layer_with(index, &mut Bootstraps::new(engine, refresh), x, timings)
    }

    /// [`run_layer`](Self::run_layer) bootstrapping through `r` (a lane of
    /// [`lockstep`](super::lockstep::lockstep) pairs its bootstraps with
    /// the other lane's): the [`LayerSteps`] in order.
    pub fn run_layer_with(
        &self,
        index: usize,
        r: &mut Bootstraps<'_>,
        x: Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        let (seconds_before, count_before) = (r.seconds, r.count);
        let steps = self.steps(index)?;
        let x = steps.input(r, x)?;
        let engine = r.engine;
        let [q, k, v] = steps.project_all(engine, &x, timings)?;
        let context = steps.attend(r, &q, &k, v, timings)?;
        let x1 = steps.attention_output(r, context, &x, timings)?;
        let expanded = steps.feed_forward_in(engine, &x1, 0..steps.wide_ciphertexts(), timings)?;
        let activated = steps.gelu(r, expanded, timings)?;
        let y = steps.feed_forward_out(r, &activated, &x1, timings)?;
        timings.bootstraps += r.seconds - seconds_before;
        timings.bootstrap_count += r.count - count_before;
        Ok(y)
    }

    /// Layer `index` as separate steps (the cluster runs each as a task).
    pub fn steps(&self, index: usize) -> Result<LayerSteps<'_, 'w>, NnError> {
        if index >= self.weights.layers.len() {
            return Err(invalid("encoder", format!("no layer {index}")));
        }
        let input_bound =
            if index == 0 { self.plan.input_bound } else { bound_of(&self.plan.layers[index - 1].output) };
        Ok(LayerSteps { encoder: self, index, circuit: std::cell::OnceCell::new(), input_bound, wide: self.wide()? })
    }

    /// Mean over each sentence's real tokens of every hidden column, at
    /// slot `position(c) * T + i * B` for sentence `i` (one level).
    pub fn mean_pool(&self, engine: &Engine<'_>, refresh: &Refresh<'_>, x: Ciphertext) -> Result<Ciphertext, NnError> {
        self.mean_pool_with(&mut Bootstraps::new(engine, refresh), x)
    }

    /// [`mean_pool`](Self::mean_pool) bootstrapping through `r`.
    pub fn mean_pool_with(&self, r: &mut Bootstraps<'_>, x: Ciphertext) -> Result<Ciphertext, NnError> {
        let engine = r.engine;
        let bound = self.plan.layers.last().map_or(1.0, |r| bound_of(&r.output));
        let mut acc = r.refresh(x, 1, bound)?;
        for step in self.pooling_rotations() {
            let r = engine.eval.rotate(&acc, step, engine.galois)?;
            engine.eval.add_assign(&mut acc, &r)?;
        }
        let (t, b) = (self.layout.tokens(), self.layout.block());
        let lengths = self.layout.lengths();
        let mask: Vec<f64> = (0..self.layout.slots())
            .map(|s| match lengths.get((s % t) / b) {
                Some(&n) if s % b == 0 => 1.0 / n as f64,
                _ => 0.0,
            })
            .collect();
        engine.mul_plain_to(&acc, &mask, acc.level().saturating_sub(1), acc.scale())
    }

    /// Client side: the first sentence's pooled vector from decoded slots
    /// of [`mean_pool`](Self::mean_pool)'s result.
    pub fn unpack_pooled(&self, slots: &[f64]) -> Vec<f64> {
        self.unpack_pooled_batch(slots).swap_remove(0)
    }

    /// Client side: every sentence's pooled vector.
    pub fn unpack_pooled_batch(&self, slots: &[f64]) -> Vec<Vec<f64>> {
        let (t, b) = (self.layout.tokens(), self.layout.block());
        (0..self.layout.lengths().len())
            .map(|i| (0..self.layout.hidden()).map(|c| slots[self.layout.position(c) * t + i * b]).collect())
            .collect()
    }
}

/// Which projection of the attention input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    /// Queries (times `1 / sqrt(d_h)`).
    Query,
    /// Keys.
    Key,
    /// Values.
    Value,
}

/// One layer cut into steps that take and return ciphertexts only, in the
/// order [`EncryptedEncoder::run_layer`] runs them (which is these steps
/// composed, so a layer run step by step, on one machine or several, gives
/// the same bytes): the input's refresh, three projections, attention,
/// the output projection with its residual and LayerNorm, the product into
/// the wide layout (any range of its output ciphertexts), GELU, and the
/// product back with its residual and LayerNorm. Bootstraps happen inside
/// the steps, where the next stage needs levels; each step records its
/// wall time without them in `timings`.
#[derive(Debug)]
pub struct LayerSteps<'e, 'w> {
    encoder: &'e EncryptedEncoder<'w>,
    index: usize,
    /// Built on first use: the refresh and the projections need none of it
    /// (the cluster runs each step as its own task).
    circuit: std::cell::OnceCell<LayerCircuit>,
    input_bound: f64,
    wide: Placement,
}

/// A section's start: the clock and the bootstrap time so far.
fn mark(r: &Bootstraps<'_>) -> (Instant, f64) {
    (Instant::now(), r.seconds)
}

/// Seconds since `mark`, less the bootstraps in between.
fn since((start, before): (Instant, f64), r: &Bootstraps<'_>) -> f64 {
    start.elapsed().as_secs_f64() - (r.seconds - before)
}

impl LayerSteps<'_, '_> {
    fn weights(&self) -> &super::weights::LayerWeights {
        &self.encoder.weights.layers[self.index]
    }

    /// The layer's non-linear operators.
    fn circuit(&self) -> Result<&LayerCircuit, NnError> {
        if let Some(c) = self.circuit.get() {
            return Ok(c);
        }
        let built = self.encoder.layer(self.index)?;
        Ok(self.circuit.get_or_init(|| built))
    }

    /// The layer's input with the levels its projections and the scores
    /// need.
    pub fn input(&self, r: &mut Bootstraps<'_>, x: Ciphertext) -> Result<Ciphertext, NnError> {
        r.refresh(x, 1 + 3, self.input_bound)
    }

    /// One projection of the (refreshed) input.
    pub fn project(
        &self,
        engine: &Engine<'_>,
        which: Projection,
        x: &Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        let started = Instant::now();
        let y = self.projection(which)?.apply(engine, std::slice::from_ref(x))?;
        timings.projections += started.elapsed().as_secs_f64();
        first(y)
    }

    /// The queries, keys and values of the (refreshed) input, as
    /// [`project`](Self::project) computes them one by one, with one set
    /// of the input's baby-step rotations shared by the three products.
    pub fn project_all(
        &self,
        engine: &Engine<'_>,
        x: &Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<[Ciphertext; 3], NnError> {
        let started = Instant::now();
        let products = [Projection::Query, Projection::Key, Projection::Value]
            .map(|which| self.projection(which))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let mut steps: Vec<i64> = products.iter().flat_map(|p| p.baby_steps(0, p.outputs())).collect();
        steps.sort_unstable();
        steps.dedup();
        let rotations = [super::packed::rotations_of(engine, x, steps)?];
        let outputs = products
            .iter()
            .map(|p| first(p.apply_rows_rotated(engine, &rotations, p.outputs())?))
            .collect::<Result<Vec<_>, _>>()?;
        timings.projections += started.elapsed().as_secs_f64();
        outputs.try_into().map_err(|_| invalid("projections", "expected three products"))
    }

    fn projection(&self, which: Projection) -> Result<PackedLinear, NnError> {
        let w = self.weights();
        let (linear, factor) = match which {
            Projection::Query => (&w.query, 1.0 / (self.encoder.weights.config.head_dim() as f64).sqrt()),
            Projection::Key => (&w.key, 1.0),
            Projection::Value => (&w.value, 1.0),
        };
        let hidden = self.encoder.layout.placement();
        self.encoder.linear(linear, &hidden, &hidden, factor)
    }

    /// Scores, Softmax and the weighted sum of the values: the attention's
    /// context, refreshed for the output projection.
    pub fn attend(
        &self,
        r: &mut Bootstraps<'_>,
        q: &Ciphertext,
        k: &Ciphertext,
        v: Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        let (l, engine) = (self.circuit()?, r.engine);
        let section = mark(r);
        let scores = l.attention.scores(engine, q, k)?;
        let probabilities = l.attention.softmax().apply_refreshing(engine, scores, r)?;
        let (probabilities, v) = r.refresh_pair((probabilities, 2, 1.0), (v, 2, l.bound))?;
        let context = l.attention.weighted_sum(engine, &probabilities, &v)?;
        let context = r.refresh(context, 1, l.bound)?;
        timings.attention += since(section, r);
        Ok(context)
    }

    /// Output projection, residual and LayerNorm: `x1`, refreshed for the
    /// product into the wide layout.
    pub fn attention_output(
        &self,
        r: &mut Bootstraps<'_>,
        context: Ciphertext,
        x: &Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        let l = self.circuit()?;
        let (linear, hidden) = (&self.weights().attention_out, self.encoder.layout.placement());
        let sum: fn(&mut LayerTimings) -> &mut f64 = |t| &mut t.attention_out;
        let x1 = self.residual_block(r, (linear, &hidden, &[context]), x, &l.attention_norm, (sum, timings))?;
        // `x1` is not bootstrapped to carry the product, GELU and the product
        // after it in one stage (one bootstrap instead of one per pair of
        // wide ciphertexts): the product into the wide layout then runs at
        // the top level, on more limbs, and on MiniLM that cost more time
        // than the bootstraps it spared (tried: 58 bootstraps instead of 69
        // in a batch of eight, and a slower run; PERFORMANCE.md).
        let section = mark(r);
        let x1 = r.refresh(x1, 1, l.output_bound.max(l.bound))?;
        timings.feed_forward += since(section, r);
        Ok(x1)
    }

    /// Ciphertexts of the wide layout (the feed-forward activations).
    pub fn wide_ciphertexts(&self) -> usize {
        self.wide.ciphertexts()
    }

    /// Output ciphertexts `outputs` of the product into the wide layout
    /// (prescaled for GELU); a range of them is one tile of the product.
    pub fn feed_forward_in(
        &self,
        engine: &Engine<'_>,
        x1: &Ciphertext,
        outputs: std::ops::Range<usize>,
        timings: &mut LayerTimings,
    ) -> Result<Vec<Ciphertext>, NnError> {
        let started = Instant::now();
        if outputs.is_empty() {
            // An empty tile (the wide layout has fewer ciphertexts than
            // tiles): no product to build.
            return Ok(Vec::new());
        }
        let factor = self.circuit()?.gelu.input_factor();
        let hidden = self.encoder.layout.placement();
        let expanded = self.encoder.linear(&self.weights().ffn_in, &hidden, &self.wide, factor)?.apply_rows(
            engine,
            std::slice::from_ref(x1),
            outputs,
        )?;
        timings.feed_forward += started.elapsed().as_secs_f64();
        Ok(expanded)
    }

    /// GELU on every wide ciphertext, refreshed two at a time before and
    /// after.
    pub fn gelu(
        &self,
        r: &mut Bootstraps<'_>,
        expanded: Vec<Ciphertext>,
        timings: &mut LayerTimings,
    ) -> Result<Vec<Ciphertext>, NnError> {
        let (l, engine) = (self.circuit()?, r.engine);
        if expanded.len() != self.wide.ciphertexts() {
            return Err(invalid(
                "gelu step",
                format!("{} wide ciphertexts, expected {}", expanded.len(), self.wide.ciphertexts()),
            ));
        }
        let section = mark(r);
        // A level more than GELU needs if it fits: the product after it
        // then needs no bootstrap. Prescaled, the values lie in [-1, 1].
        let expanded_bound = l.gelu.range() * l.gelu.input_factor();
        let expanded = refresh_all(r, expanded, l.gelu.cost().levels + 1, expanded_bound)?;
        let activated = expanded.iter().map(|h| l.gelu.apply(engine, h)).collect::<Result<Vec<_>, _>>()?;
        let activated = refresh_all(r, activated, 1, l.bound)?;
        timings.feed_forward += since(section, r);
        Ok(activated)
    }

    /// The product back into the hidden layout, residual and LayerNorm:
    /// the layer's output.
    pub fn feed_forward_out(
        &self,
        r: &mut Bootstraps<'_>,
        activated: &[Ciphertext],
        x1: &Ciphertext,
        timings: &mut LayerTimings,
    ) -> Result<Ciphertext, NnError> {
        let linear = &self.weights().ffn_out;
        let sum: fn(&mut LayerTimings) -> &mut f64 = |t| &mut t.feed_forward;
        self.residual_block(r, (linear, &self.wide, activated), x1, &self.circuit()?.ffn_norm, (sum, timings))
    }

    /// `norm(linear(inputs) + residual)`, the product and the sum timed into
    /// the field `sum` picks, the LayerNorm into `layer_norms`.
    fn residual_block(
        &self,
        r: &mut Bootstraps<'_>,
        (linear, from, inputs): (&super::weights::Linear, &Placement, &[Ciphertext]),
        residual: &Ciphertext,
        norm: &LayerNorm,
        (sum, timings): (fn(&mut LayerTimings) -> &mut f64, &mut LayerTimings),
    ) -> Result<Ciphertext, NnError> {
        let engine = r.engine;
        let hidden = self.encoder.layout.placement();
        let section = mark(r);
        let product = self.encoder.linear(linear, from, &hidden, 1.0)?.apply(engine, inputs)?;
        let added = engine.add_aligned(&first(product)?, residual)?;
        *sum(timings) += since(section, r);
        let section = mark(r);
        let y = norm.apply_refreshing(engine, added, self.circuit()?.bound, r)?;
        timings.layer_norms += since(section, r);
        Ok(y)
    }
}

/// The one output of a product into the hidden layout.
fn first(outputs: Vec<Ciphertext>) -> Result<Ciphertext, NnError> {
    outputs
        .into_iter()
        .next()
        .ok_or_else(|| invalid("encoder layer", "a product into the hidden layout gave no ciphertext"))
}

/// Levels kept after a stage's `needed` ones, for the scaling before the
/// next bootstrap.
const SPARE: usize = 1;

pub(crate) fn needs_bootstrap(ct: &Ciphertext, needed: usize) -> bool {
    ct.level() < needed + SPARE
}

/// The power of two at least `bound` (and at least 1) a value is divided by
/// before bootstrapping.
fn scaling_factor(bound: f64) -> f64 {
    bound.max(1.0).log2().ceil().exp2()
}

/// `ct / factor` one level down (at least), on the default scale.
fn scaled_down(engine: &Engine<'_>, ct: &Ciphertext, factor: f64, level: usize) -> Result<Ciphertext, NnError> {
    engine.mul_const_to(ct, 1.0 / factor, level, engine.params().default_scale())
}

fn level_below(ct: &Ciphertext) -> Result<usize, NnError> {
    ct.level()
        .checked_sub(1)
        .ok_or_else(|| invalid("refresh", "a ciphertext at level 0 cannot be scaled before bootstrapping"))
}

fn check_stage_levels(refresh: &Refresh<'_>) -> Result<(), NnError> {
    // A stage asking for more than a bootstrap provides gets what there is
    // (callers may ask for a level more than they must have, to spare a
    // later bootstrap); an operation then short of levels fails with the
    // engine's typed error.
    if stage_levels(refresh) == 0 {
        return Err(invalid("refresh", "bootstrapping leaves no levels"));
    }
    Ok(())
}

/// Bootstraps `ct` when it has fewer than `needed` levels (plus the
/// spare), dividing by a power of two at least `bound` before (one level,
/// landing on the default scale) and multiplying it back inside the
/// bootstrap's last linear transform (free). One level is always left over
/// after `needed`, for the scaling before the next bootstrap.
pub fn refresh_scaled(
    engine: &Engine<'_>,
    refresh: &Refresh<'_>,
    ct: Ciphertext,
    needed: usize,
    bound: f64,
) -> Result<Ciphertext, NnError> {
    if !needs_bootstrap(&ct, needed) {
        return Ok(ct);
    }
    check_stage_levels(refresh)?;
    let factor = scaling_factor(bound);
    let small = scaled_down(engine, &ct, factor, level_below(&ct)?)?;
    Ok(refresh.bootstrapper.bootstrap_times(engine.eval, &small, refresh.keys, factor)?)
}

/// [`refresh_scaled`] for two ciphertexts: one bootstrap for both when
/// both need one (`a + i b`, see
/// [`Bootstrapper::bootstrap_real_pair_times`](nexus_ckks::bootstrapping::Bootstrapper::bootstrap_real_pair_times)).
pub fn refresh_scaled_pair(
    engine: &Engine<'_>,
    refresh: &Refresh<'_>,
    (a, needed_a, bound_a): (Ciphertext, usize, f64),
    (b, needed_b, bound_b): (Ciphertext, usize, f64),
) -> Result<(Ciphertext, Ciphertext), NnError> {
    if !(needs_bootstrap(&a, needed_a) && needs_bootstrap(&b, needed_b)) {
        return Ok((
            refresh_scaled(engine, refresh, a, needed_a, bound_a)?,
            refresh_scaled(engine, refresh, b, needed_b, bound_b)?,
        ));
    }
    check_stage_levels(refresh)?;
    let level = level_below(&a)?.min(level_below(&b)?);
    let (factor_a, factor_b) = (scaling_factor(bound_a), scaling_factor(bound_b));
    let (small_a, small_b) = (scaled_down(engine, &a, factor_a, level)?, scaled_down(engine, &b, factor_b, level)?);
    Ok(refresh.bootstrapper.bootstrap_real_pair_times(
        engine.eval,
        (&small_a, factor_a),
        (&small_b, factor_b),
        refresh.keys,
    )?)
}

/// Refreshes every ciphertext of `cts`, two at a time.
fn refresh_all(
    r: &mut dyn Refresher,
    cts: Vec<Ciphertext>,
    needed: usize,
    bound: f64,
) -> Result<Vec<Ciphertext>, NnError> {
    let mut out = Vec::with_capacity(cts.len());
    let mut it = cts.into_iter();
    while let Some(a) = it.next() {
        match it.next() {
            Some(b) => {
                let (a, b) = r.refresh_pair((a, needed, bound), (b, needed, bound))?;
                out.extend([a, b]);
            }
            None => out.push(r.refresh(a, needed, bound)?),
        }
    }
    Ok(out)
}

/// Levels a stage may use after a bootstrap (one is kept for the scaling
/// before the next).
pub fn stage_levels(refresh: &Refresh<'_>) -> usize {
    refresh.bootstrapper.output_level().saturating_sub(1)
}
