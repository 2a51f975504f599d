//! CKKS bootstrapping (full slots): ModRaise, CoeffToSlot, EvalMod,
//! SlotToCoeff.
//!
//! - **ModRaise**: a level-0 ciphertext decrypts to `t = m + q0 I` modulo
//!   every chain prime once its residues are lifted; its scale metadata is
//!   set to `q0`, so its slots read `Decode(t) / q0`. Before it, the
//!   message is multiplied by an integer up to `q0 / 2^message_ratio_bits`
//!   (free): every later error is relative to `q0`.
//! - **CoeffToSlot**: the special inverse FFT of the encoder, as its
//!   butterfly stages (three diagonals each) grouped into `cts_levels`
//!   linear transforms; the final bit reversal is skipped because EvalMod is
//!   slot-wise and SlotToCoeff skips its initial one. The normalisation
//!   `1/(2 n K)` is spread over the groups, and every group lands on the
//!   EvalMod scale (the tiny `m / q0` rides next to `I`: intermediate
//!   scales of `q0` instead cost 3.5 bits at N = 2^16). Real and imaginary
//!   parts (coefficients `j` and `j + N/2`) are split with one conjugation.
//! - **EvalMod**: `x - round(x) ~ sin(2 pi x) / (2 pi)` for `x = t_j / q0`,
//!   as a Chebyshev approximation of `cos(2 pi (K y - 1/4) / 2^r)` on
//!   `y = x / K` in [-1, 1] followed by `r` double angles; the last one
//!   also multiplies by `q0 / (2 pi Delta)` (folded into the scale metadata).
//! - **SlotToCoeff**: the encoder's special FFT stages, grouped into
//!   `stc_levels` transforms, with a scale schedule that keeps every
//!   group's diagonals finely encoded (see `slot_to_coeff_scales`).
//!
//! Precision budget at N = 2^16 (the `secure_n16_stage_budget` test prints
//! it): the slot error is EvalMod's per-coefficient error times `sqrt(N)`
//! (SlotToCoeff sums the coefficients), so EvalMod's scale and the message
//! ratio decide it.
//!
//! The Galois elements and the depth follow from the parameters alone
//! ([`BootstrapConfig::galois`], [`BootstrapConfig::depth`]): the client
//! generates keys without building the circuit.

mod galois;

pub use galois::BootstrapGalois;

use crate::circuits::{Chebyshev, LinearTransform, PolynomialEvaluator};
use crate::error::CkksError;
use crate::ring::{Basis, Coeff, Poly};
use crate::scheme::encoding::Encoder;
use crate::scheme::evaluator::Evaluator;
use crate::scheme::keys::{GaloisKey, GaloisKeys, KeyGenerator, RelinKey, SecretKey};
use crate::scheme::plaintext::{Ciphertext, Encoding};
use crate::Parameters;
use num_complex::Complex64;
use std::collections::BTreeMap;

/// Bootstrapping circuit settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// Levels (linear-transform groups) for CoeffToSlot.
    pub cts_levels: usize,
    /// Levels for SlotToCoeff.
    pub stc_levels: usize,
    /// Bound `K` on `|t_j / q0|` (the `I` polynomial plus 1/2).
    pub k: f64,
    /// Degree of the Chebyshev approximation of the scaled cosine.
    pub eval_mod_degree: usize,
    /// Number of double-angle steps `r`.
    pub double_angle: usize,
    /// Scale of the EvalMod section (about the size of its primes).
    pub log_eval_mod_scale: u32,
    /// `log2(q0 / Delta)` the circuit works at for 2^15 slots (fewer slots
    /// add 3/4 of a bit per halving, see `message_ratio_bits`): inputs whose
    /// scale leaves a larger ratio are multiplied up to it first (free),
    /// and the output comes back at the input's scale. Smaller ratios
    /// shrink every CoeffToSlot and EvalMod error next to the message, but
    /// the sine's cubic error on a coefficient `c` (in units of the scale),
    /// `(2 pi)^2 c^3 / (6 ratio^2)`, grows: `c` near 1 (a constant vector
    /// of 1s) costs 2^-13.3 at ratio 2^8, while random full-slot vectors in
    /// [-1, 1] have coefficients near 2^-8 and lose nothing.
    pub message_ratio_bits: u32,
    /// Slots of the ciphertexts it refreshes (a power of two with at least
    /// as many FFT stages as CoeffToSlot and SlotToCoeff have levels);
    /// `None` for all `N/2`. Sparse ciphertexts first sum over the
    /// rotations by multiples of `slots` (the trace onto their subring,
    /// `log2(N / (2 slots))` rotations), then run smaller transforms.
    pub slots: Option<usize>,
}

impl Default for BootstrapConfig {
    /// The configuration of the test-size preset
    /// `INSECURE_N12_QP1121_H32_BOOT_TEST`: 3 + 9 + 3 levels, K = 12 for a
    /// secret of Hamming weight 32, message ratio 2^8 at 2^15 slots (as
    /// Lattigo's default `LogMessageRatio`; 2^11 at this preset's 2^11
    /// slots, which its q0 / Delta = 2^10 caps).
    fn default() -> Self {
        Self {
            cts_levels: 3,
            stc_levels: 3,
            k: 12.0,
            eval_mod_degree: 31,
            double_angle: 3,
            log_eval_mod_scale: 55,
            message_ratio_bits: 8,
            slots: None,
        }
    }
}

impl BootstrapConfig {
    /// The circuit designed for a bootstrapping preset.
    pub fn for_preset(name: &str) -> Option<Self> {
        match name {
            "INSECURE_N12_QP1121_H32_BOOT_TEST" | "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST" => Some(Self::default()),
            // h = 192: |t / q0| has standard deviation 4.0; K = 24 is 6 sigma
            // (failure about 1e-4 per bootstrap of 2^16 coefficients). With
            // r = 3 the cosine spans 18.9 rad; degree 55 approximates it to
            // about 2^-64 in depth 6 (r = 2 at degree 71, same depth, measured
            // no better). EvalMod at 2^59 and a message ratio of 2^8:
            // 25.3 / 23.4 bits mean / worst instead of 23.3 / 21.4 at 2^10.
            "N16_QP1545_H192" => Some(Self { k: 24.0, eval_mod_degree: 55, log_eval_mod_scale: 59, ..Self::default() }),
            // The same circuit at its 49-bit EvalMod primes' scale.
            "N16_QP1525_H192" => Some(Self { k: 24.0, eval_mod_degree: 55, log_eval_mod_scale: 49, ..Self::default() }),
            _ => None,
        }
    }

    /// The configuration of the preset `params` were built from, found by
    /// their digest (a key set names its parameters, not a preset).
    pub fn for_parameters(params: &Parameters) -> Option<Self> {
        crate::presets::NAMES.iter().find_map(|name| {
            let config = Self::for_preset(name)?;
            let preset = Parameters::preset(name).ok()?;
            (preset.digest() == params.digest()).then_some(config)
        })
    }

    /// Levels consumed by EvalMod.
    pub fn eval_mod_depth(&self) -> usize {
        let poly = Chebyshev { a: -1.0, b: 1.0, coeffs: vec![0.0; self.eval_mod_degree + 1] };
        poly.depth() + self.double_angle
    }

    /// Levels consumed by a bootstrap.
    pub fn depth(&self) -> usize {
        self.cts_levels + self.eval_mod_depth() + self.stc_levels
    }

    /// Generates the bootstrapping keys (client side) from the parameters
    /// alone. Keys only SlotToCoeff uses are restricted to its input level:
    /// it runs after CoeffToSlot and EvalMod have consumed most of the
    /// chain, so those keys need a fraction of the limbs and digits (about
    /// a third less key memory at N = 2^16).
    pub fn generate_keys(
        &self,
        params: &Parameters,
        keygen: &mut KeyGenerator,
        sk: &SecretKey,
    ) -> Result<BootstrapKeys, CkksError> {
        self.generate_keys_with(params, keygen, sk, |key| key)
    }

    /// [`generate_keys`](Self::generate_keys) with lean Galois keys (their
    /// uniform halves regenerated from the seed at every use): about half
    /// the key memory, for the time of sampling them again.
    pub fn generate_lean_keys(
        &self,
        params: &Parameters,
        keygen: &mut KeyGenerator,
        sk: &SecretKey,
    ) -> Result<BootstrapKeys, CkksError> {
        self.generate_keys_with(params, keygen, sk, GaloisKey::lean)
    }

    fn generate_keys_with(
        &self,
        params: &Parameters,
        keygen: &mut KeyGenerator,
        sk: &SecretKey,
        shape: impl Fn(GaloisKey) -> GaloisKey,
    ) -> Result<BootstrapKeys, CkksError> {
        let plan = self.galois(params)?;
        let mut galois = GaloisKeys::new();
        // One key at a time, restricted at once, so the full-size set never
        // exists in memory.
        for &g in &plan.top_level {
            galois.insert(shape(keygen.galois_key(sk, g)?));
        }
        for &g in &plan.slot_to_coeff_only {
            galois.insert(shape(keygen.galois_key(sk, g)?.restricted_to_level(params, plan.slot_to_coeff_level)));
        }
        Ok(BootstrapKeys { relin: keygen.relin_key(sk), galois })
    }
}

/// The bootstrapping evaluation keys: relinearisation and the Galois keys of
/// the linear transforms and conjugation. Generated by the client, cached by
/// the cluster like any other evaluation key set.
#[derive(Debug, Clone)]
pub struct BootstrapKeys {
    /// Relinearisation key.
    pub relin: RelinKey,
    /// Rotations of CoeffToSlot/SlotToCoeff and conjugation.
    pub galois: GaloisKeys,
}

/// The slot count `BootstrapConfig::message_ratio_bits` refers to.
const REFERENCE_LOG_SLOTS: u32 = 15;

/// A bootstrap's intermediate ciphertexts, real and imaginary halves
/// ([`Bootstrapper::stage_outputs`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct BootstrapStages {
    /// CoeffToSlot's outputs: `t / (q0 K)` for `t = m + q0 I`.
    pub coeffs_to_slots: [Ciphertext; 2],
    /// EvalMod's outputs: `m / Delta`.
    pub eval_mod: [Ciphertext; 2],
    /// The integer `m` was multiplied by before ModRaise.
    pub message_multiplier: u64,
}

/// A ready-to-run bootstrapping circuit for one parameter set.
#[derive(Debug)]
pub struct Bootstrapper {
    params: Parameters,
    config: BootstrapConfig,
    encoder: Encoder,
    cts: Vec<LinearTransform>,
    stc: Vec<LinearTransform>,
    eval_mod: Chebyshev,
    galois: BootstrapGalois,
}

/// One butterfly stage of the encoder's special FFT (`inverse = false`) or
/// special inverse FFT (`inverse = true`) on `n` slots, half-width `h`.
fn stage(encoder: &Encoder, n: usize, h: usize, inverse: bool) -> Result<LinearTransform, CkksError> {
    let len = 2 * h;
    let lenq = 4 * len;
    let m = encoder.roots().len() - 1;
    let zero = Complex64::new(0.0, 0.0);
    let one = Complex64::new(1.0, 0.0);
    let mut d0 = vec![zero; n];
    let mut dplus = vec![zero; n];
    let mut dminus = vec![zero; n];
    for p in 0..n {
        let r = p % len;
        let j = if r < h { r } else { r - h };
        let g = encoder.rotation_group()[j] % lenq;
        let psi = if inverse { encoder.roots()[(lenq - g) * (m / lenq)] } else { encoder.roots()[g * (m / lenq)] };
        if r < h {
            // out[p] = x[p] + w x[p + h]  (w = 1 for the inverse stage)
            d0[p] = one;
            dplus[p] = if inverse { one } else { psi };
        } else {
            // out[p] = c x[p - h] + d x[p]
            dminus[p] = if inverse { psi } else { one };
            d0[p] = -psi;
        }
    }
    let mut diags = BTreeMap::new();
    diags.insert(0, d0);
    let plus_key = h % n;
    let minus_key = (n - h) % n;
    diags.insert(plus_key, dplus);
    let entry = diags.entry(minus_key).or_insert_with(|| vec![zero; n]);
    for (e, v) in entry.iter_mut().zip(dminus) {
        *e += v;
    }
    LinearTransform::from_diagonals(n, diags)
}

/// Groups `stages` (in application order) into `levels` composed
/// transforms whose product is scaled by `factor`, spread evenly so that no
/// group's diagonals are tiny (they are encoded at a fixed scale, and small
/// entries would lose precision to rounding).
fn group(stages: Vec<LinearTransform>, levels: usize, factor: f64) -> Result<Vec<LinearTransform>, CkksError> {
    let sizes: Vec<usize> = galois::group_sizes(stages.len(), levels).collect();
    let levels = sizes.len();
    let mut out = Vec::with_capacity(levels);
    let mut it = stages.into_iter();
    for size in sizes {
        let mut acc: Option<LinearTransform> = None;
        for _ in 0..size {
            let Some(s) = it.next() else { break };
            acc = Some(match acc {
                None => s,
                Some(a) => s.compose(&a)?,
            });
        }
        if let Some(mut a) = acc {
            if factor != 1.0 {
                let per_group = factor.powf(1.0 / levels as f64);
                a = a.scaled(per_group);
            }
            out.push(a);
        }
    }
    Ok(out)
}

impl Bootstrapper {
    /// Builds the circuit (the DFT matrices and the EvalMod polynomial).
    pub fn new(params: &Parameters, config: BootstrapConfig) -> Result<Self, CkksError> {
        let n = config.checked_slots(params)?;
        let galois = config.galois(params)?;
        let encoder = Encoder::new(params);
        let log_n = n.trailing_zeros() as usize;
        // The trace onto the sparse subring multiplies by its degree.
        let trace_gain = (params.max_slots() / n) as f64;
        // CoeffToSlot: inverse stages with h = n/2 .. 1, then 1/(n K).
        let inv: Vec<LinearTransform> =
            (0..log_n).map(|i| stage(&encoder, n, n >> (i + 1), true)).collect::<Result<_, _>>()?;
        // The extra 1/2 belongs to the real/imaginary split (w + conj w) / 2.
        let cts = group(inv, config.cts_levels, 1.0 / (2.0 * n as f64 * config.k * trace_gain))?;
        // SlotToCoeff: forward stages with h = 1 .. n/2.
        let fwd: Vec<LinearTransform> =
            (0..log_n).map(|i| stage(&encoder, n, 1 << i, false)).collect::<Result<_, _>>()?;
        let stc = group(fwd, config.stc_levels, 1.0)?;
        let (k, r) = (config.k, config.double_angle as i32);
        let eval_mod = Chebyshev::interpolate(
            |y| (2.0 * std::f64::consts::PI * (k * y - 0.25) / 2f64.powi(r)).cos(),
            -1.0,
            1.0,
            config.eval_mod_degree,
        );
        Ok(Self { params: params.clone(), config, encoder, cts, stc, eval_mod, galois })
    }

    /// The circuit settings.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// Level of a bootstrapped ciphertext.
    pub fn output_level(&self) -> usize {
        self.params.max_level() - self.config.depth()
    }

    /// Slots of the ciphertexts it refreshes.
    pub fn slots(&self) -> usize {
        self.config.slots.unwrap_or(self.params.max_slots())
    }

    /// The message ratio for this slot count: sparse vectors have larger
    /// coefficients (about `1/sqrt(3 slots)` for values in [-1, 1]), and
    /// the sine's cubic error grows as `c^3 / ratio^2`, so the ratio grows
    /// by 3/4 of a bit per halving of the slots to keep that error level.
    fn message_ratio_bits(&self) -> i64 {
        let halvings = i64::from(REFERENCE_LOG_SLOTS.saturating_sub(self.slots().trailing_zeros()));
        i64::from(self.config.message_ratio_bits) + (3 * halvings + 3) / 4
    }

    /// The integer the message is multiplied by before ModRaise (at the
    /// given input scale).
    fn message_multiplier(&self, scale: f64) -> u64 {
        let ratio_bits = (self.params.q()[0] as f64 / scale).log2().floor() as i64;
        1 << (ratio_bits - self.message_ratio_bits()).clamp(0, 30)
    }

    /// Rotations of the trace onto a sparse ciphertext's subring.
    fn trace_rotations(&self) -> Vec<i64> {
        galois::trace_rotations(self.slots(), self.params.max_slots())
    }

    /// Galois elements the keys must cover (sorted).
    pub fn galois_elements(&self) -> Vec<usize> {
        self.galois.all()
    }

    /// Generates the bootstrapping keys (client side); see
    /// [`BootstrapConfig::generate_keys`].
    pub fn generate_keys(&self, keygen: &mut KeyGenerator, sk: &SecretKey) -> Result<BootstrapKeys, CkksError> {
        self.config.generate_keys(&self.params, keygen, sk)
    }

    /// Lean bootstrapping keys; see [`BootstrapConfig::generate_lean_keys`].
    pub fn generate_lean_keys(&self, keygen: &mut KeyGenerator, sk: &SecretKey) -> Result<BootstrapKeys, CkksError> {
        self.config.generate_lean_keys(&self.params, keygen, sk)
    }

    /// Lifts a level-0 ciphertext to the top level; scale metadata `q0`.
    fn mod_raise(&self, ct: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let ring = self.params.ring();
        let q0 = ring.q()[0];
        let top = Basis::q(self.params.max_level());
        let n = ring.n();
        let mut parts = Vec::with_capacity(2);
        for part in ct.parts() {
            let coeff = part.restricted(Basis::q(0)).into_coeff(ring);
            let centred: Vec<i64> = coeff.limb(0).iter().map(|&x| q0.center(x)).collect();
            debug_assert_eq!(centred.len(), n);
            parts.push(Poly::<Coeff>::from_signed(ring, top, &centred).into_ntt(ring));
        }
        Ok(Ciphertext::from_parts(parts, self.params.max_level(), q0.value() as f64, ct.encoding()))
    }

    /// Refreshes a ciphertext (any level; it is first dropped to level 0).
    /// The output is at [`output_level`](Self::output_level) with the
    /// input's scale.
    pub fn bootstrap(&self, eval: &Evaluator, ct: &Ciphertext, keys: &BootstrapKeys) -> Result<Ciphertext, CkksError> {
        self.bootstrap_times(eval, ct, keys, 1.0)
    }

    /// Bootstraps and multiplies by `factor` at no extra level (the
    /// constant rides on SlotToCoeff's last diagonals). Callers divide a
    /// large value by `factor` before bootstrapping, since the modular
    /// reduction is accurate for small values only, and get it back here.
    pub fn bootstrap_times(
        &self,
        eval: &Evaluator,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
        factor: f64,
    ) -> Result<Ciphertext, CkksError> {
        let delta = ct.scale();
        let w = self.refresh_before_last_stc(eval, ct, keys)?;
        self.last_stc(eval, &w, keys, Complex64::new(factor, 0.0), delta)
    }

    /// Bootstraps two real-valued ciphertexts for the price of one: `a + i b`
    /// goes through the circuit (which costs the same for complex slots),
    /// and the last SlotToCoeff group runs twice, with `factor_a / 2` and
    /// `-i factor_b / 2` riding on its diagonals, so that adding each
    /// result's conjugation reads `factor_a a` and `factor_b b` at no extra
    /// level. Both inputs must have the same scale; the outputs have it.
    /// The tiny imaginary noise of each input lands in the other's value.
    pub fn bootstrap_real_pair_times(
        &self,
        eval: &Evaluator,
        (a, factor_a): (&Ciphertext, f64),
        (b, factor_b): (&Ciphertext, f64),
        keys: &BootstrapKeys,
    ) -> Result<(Ciphertext, Ciphertext), CkksError> {
        if (a.scale() / b.scale() - 1.0).abs() > 1e-9 {
            return Err(CkksError::InvalidInput(format!(
                "a bootstrapped pair needs equal scales, got 2^{:.3} and 2^{:.3}",
                a.scale().log2(),
                b.scale().log2()
            )));
        }
        let level = a.level().min(b.level());
        let (a, b) = (eval.drop_to_level(a, level)?, eval.drop_to_level(b, level)?);
        // Times i: X^(N/2), exact and free.
        let z = eval.add(&a, &eval.mul_monomial(&b, self.params.n() as i64 / 2))?;
        let delta = a.scale();
        let w = self.refresh_before_last_stc(eval, &z, keys)?;
        let real_part = |multiplier: Complex64| -> Result<Ciphertext, CkksError> {
            let half = self.last_stc(eval, &w, keys, multiplier, delta)?;
            eval.add(&half, &eval.conjugate(&half, &keys.galois)?)
        };
        Ok((real_part(Complex64::new(factor_a / 2.0, 0.0))?, real_part(Complex64::new(0.0, -factor_b / 2.0))?))
    }

    /// ModRaise, CoeffToSlot, EvalMod and all SlotToCoeff groups but the
    /// last.
    fn refresh_before_last_stc(
        &self,
        eval: &Evaluator,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<Ciphertext, CkksError> {
        let (_, [re, im]) = self.coeffs_to_slots_and_eval_mod(eval, ct, keys)?;
        // w = re + i im.
        let mut w = eval.add(&re, &eval.mul_monomial(&im, self.params.n() as i64 / 2))?;
        let scales = self.slot_to_coeff_scales(w.scale(), w.level(), ct.scale());
        for (t, &scale) in self.stc[..self.stc.len() - 1].iter().zip(&scales) {
            w = t.evaluate_to_scale(eval, &self.encoder, &w, &keys.galois, scale)?;
        }
        Ok(w)
    }

    /// Output scales of the SlotToCoeff groups but the last (which lands on
    /// `delta`). Group `i`'s diagonals are encoded at `q_i S_i / S_(i-1)`,
    /// and the product of those plaintext scales is fixed by the primes,
    /// EvalMod's output scale and `delta`. Later groups get plaintext
    /// scales of 2^38 (diagonal rounding about 2^-32 of the values) and
    /// the first group the rest, which keeps the intermediate scales, and
    /// so the small coefficients' precision against rescaling noise, high.
    /// (Keeping every group's scale equal to its input's, as before, left
    /// the last group a plaintext scale of 2^29 and cost 2-3 bits.)
    fn slot_to_coeff_scales(&self, in_scale: f64, level: usize, delta: f64) -> Vec<f64> {
        const LATER_LOG_SCALE: f64 = 38.0;
        let groups = self.stc.len();
        let q = self.params.q();
        let log_q: Vec<f64> = (0..groups).map(|i| (q[level - i] as f64).log2()).collect();
        let total = log_q.iter().sum::<f64>() + delta.log2() - in_scale.log2();
        let later = LATER_LOG_SCALE.min(total / groups as f64);
        let first = total - later * (groups - 1) as f64;
        let mut scales = Vec::with_capacity(groups.saturating_sub(1));
        let mut s = in_scale.log2();
        for (i, lq) in log_q.iter().enumerate().take(groups - 1) {
            s += if i == 0 { first } else { later } - lq;
            scales.push(2f64.powf(s));
        }
        scales
    }

    /// ModRaise, CoeffToSlot (split into real and imaginary halves) and
    /// EvalMod of both halves; returns CoeffToSlot's and EvalMod's outputs.
    fn coeffs_to_slots_and_eval_mod(
        &self,
        eval: &Evaluator,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<([Ciphertext; 2], [Ciphertext; 2]), CkksError> {
        let n = self.slots();
        if ct.encoding() != Encoding::Slots(n) {
            let kind = if n == self.params.max_slots() { "full-slot" } else { "sparse" };
            return Err(CkksError::InvalidInput(format!(
                "this bootstrapper refreshes {kind} ciphertexts of {n} slots, got {:?}",
                ct.encoding()
            )));
        }
        if ct.degree() != 1 {
            return Err(CkksError::DegreeMismatch { op: "bootstrap", degree: ct.degree(), expected: 1 });
        }
        let q0 = self.params.q()[0] as f64;
        // Scale the message up to `q0 / 2^message_ratio_bits` (an exact
        // integer product, the scale metadata follows, the value does not
        // change): every error EvalMod and CoeffToSlot make is relative to
        // q0, so a smaller ratio makes them smaller next to the message.
        let multiplier = self.message_multiplier(ct.scale());
        let mut low = eval.drop_to_level(ct, 0)?;
        if multiplier > 1 {
            low = eval.mul_integer(&low, multiplier as i64);
            low.reset_scale(ct.scale() * multiplier as f64);
        }
        let delta = low.scale();
        let mut x = self.mod_raise(&low)?;
        // Sparse: t has junk coefficients off the subring (q0 I fills every
        // coefficient); the trace keeps the subring's, times its degree
        // (folded into CoeffToSlot).
        for r in self.trace_rotations() {
            x = eval.add(&x, &eval.rotate(&x, r, &keys.galois)?)?;
        }
        let em_scale = 2f64.powi(self.config.log_eval_mod_scale as i32);
        // CoeffToSlot.
        for t in &self.cts {
            x = t.evaluate_to_scale(eval, &self.encoder, &x, &keys.galois, em_scale)?;
        }
        // x holds w/2: real part w/2 + conj(w/2), imaginary part
        // -i (w/2 - conj(w/2)); multiplying by -i is X^(3N/2), exact and free.
        let conj = eval.conjugate(&x, &keys.galois)?;
        let re = eval.add(&x, &conj)?;
        let im = eval.mul_monomial(&eval.sub(&x, &conj)?, 3 * self.params.n() as i64 / 2);
        let a = q0 / (2.0 * std::f64::consts::PI * delta);
        let re_mod = self.eval_mod(eval, &re, &keys.relin, a)?;
        let im_mod = self.eval_mod(eval, &im, &keys.relin, a)?;
        Ok(([re, im], [re_mod, im_mod]))
    }

    /// The last SlotToCoeff group times `multiplier`, landing exactly on
    /// `delta` (the input's scale).
    fn last_stc(
        &self,
        eval: &Evaluator,
        w: &Ciphertext,
        keys: &BootstrapKeys,
        multiplier: Complex64,
        delta: f64,
    ) -> Result<Ciphertext, CkksError> {
        let last = self.stc.last().ok_or_else(|| CkksError::InvalidParameters("no SlotToCoeff group".into()))?;
        last.evaluate_complex_times_to_scale(eval, &self.encoder, w, &keys.galois, multiplier, delta)
    }

    /// CoeffToSlot then SlotToCoeff without EvalMod (diagnostics: returns
    /// the input scaled by `1 / (2K)`).
    #[doc(hidden)]
    pub fn dft_round_trip(
        &self,
        eval: &Evaluator,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<Ciphertext, CkksError> {
        let mut x = ct.clone();
        for t in &self.cts {
            x = t.evaluate(eval, &self.encoder, &x, &keys.galois)?;
        }
        // SlotToCoeff runs where bootstrapping runs it (its keys are
        // restricted to that level).
        let stc_level = self.output_level() + self.config.stc_levels;
        if x.level() > stc_level {
            x = eval.drop_to_level(&x, stc_level)?;
        }
        for t in &self.stc {
            x = t.evaluate(eval, &self.encoder, &x, &keys.galois)?;
        }
        Ok(x)
    }

    /// The intermediate ciphertexts of a bootstrap (diagnostics: a
    /// precision budget per stage). CoeffToSlot leaves the real and
    /// imaginary coefficient halves of `t / (q0 K)` in bit-reversed slot
    /// order; EvalMod leaves the same halves of `m / Delta`.
    #[doc(hidden)]
    pub fn stage_outputs(
        &self,
        eval: &Evaluator,
        ct: &Ciphertext,
        keys: &BootstrapKeys,
    ) -> Result<BootstrapStages, CkksError> {
        let (cts, eval_mod) = self.coeffs_to_slots_and_eval_mod(eval, ct, keys)?;
        Ok(BootstrapStages { coeffs_to_slots: cts, eval_mod, message_multiplier: self.message_multiplier(ct.scale()) })
    }

    /// EvalMod alone on slots holding `x / K` (diagnostics).
    #[doc(hidden)]
    pub fn eval_mod_only(
        &self,
        eval: &Evaluator,
        y: &Ciphertext,
        keys: &BootstrapKeys,
        a: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.eval_mod(eval, y, &keys.relin, a)
    }

    fn eval_mod(&self, eval: &Evaluator, y: &Ciphertext, rlk: &RelinKey, a: f64) -> Result<Ciphertext, CkksError> {
        let pe = PolynomialEvaluator::new(eval, rlk);
        let mut c = pe.evaluate(y, &self.eval_mod, y.scale())?;
        for step in 0..self.config.double_angle {
            if step + 1 == self.config.double_angle {
                // a (2 c^2 - 1) = (sqrt(2a) c)^2 - a; sqrt(2a) goes into the
                // scale metadata.
                c.reset_scale(c.scale() / (2.0 * a).sqrt());
                let sq = eval.relinearize_rescale(&eval.square(&c)?, rlk)?;
                c = eval.add_const(&sq, -a)?;
            } else {
                let sq = eval.mul_integer(&eval.square(&c)?, 2);
                c = eval.relinearize_rescale(&eval.add_const(&sq, -1.0)?, rlk)?;
            }
        }
        Ok(c)
    }
}
