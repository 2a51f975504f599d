//! Homomorphic linear transforms on the slots: `z -> M z` for a matrix
//! given by its non-zero diagonals, evaluated with baby-step giant-step and
//! hoisted baby rotations (one decomposition for all baby steps).
//!
//! With `diag_k[j] = M[j][(j + k) mod n]`, `M z = sum_k diag_k * rot_k(z)`.
//! Writing `k = g n1 + b`:
//! `M z = sum_g rot_{g n1}( sum_b rot_{-g n1}(diag_k) * rot_b(z) )`, so only
//! the distinct `b` (baby, hoisted) and `g` (giant) rotations are paid for.
//! Diagonals are encoded at the scale of the last prime of the level, so the
//! transform consumes exactly one level and keeps the input scale.
//!
//! Diagonals are encoded on the fly (holding them encoded would cost
//! gigabytes at N = 2^16), and most of them repeat with a short period: a
//! butterfly stage of half-width `h` is block-diagonal with identical
//! blocks of `2h` slots (so is any map applied block by block). A
//! diagonal of period `p` is a polynomial in
//! `X^(N / 2p)`, encoded with FFTs and NTTs of size `p` and `2p` instead of
//! `N / 2` and `N`.

use crate::error::CkksError;
use crate::scheme::encoding::Encoder;
use crate::scheme::evaluator::Evaluator;
use crate::scheme::keys::GaloisKeys;
use crate::scheme::plaintext::{Ciphertext, Plaintext};
use crate::Parameters;
use num_complex::Complex64;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Encoded diagonals summed in one [`Evaluator::dot_plain`]: the products
/// are accumulated in one pass, and no more than this many encoded
/// diagonals are held per giant group (about 100 MB at a bootstrap's top
/// level).
const DIAGONALS_PER_DOT: usize = 8;

/// The slot values of one diagonal.
#[derive(Clone, Debug, PartialEq)]
pub enum Diagonal {
    /// Every slot given.
    Dense(Vec<Complex64>),
    /// Real, `values[j / b] * pattern[j % b]` with `b = pattern.len()` (a
    /// power of two): a value per block of `b` slots times a pattern
    /// shared by every block (a weight per hidden position times the token
    /// mask). Held in `slots / b + b` numbers instead of `slots` complex
    /// ones: a linear layer's thousand diagonals would otherwise take a
    /// gigabyte, allocated and page-faulted at every layer.
    Kronecker {
        /// One value per block.
        values: Vec<f64>,
        /// The pattern within each block (shared between diagonals).
        pattern: Arc<[f64]>,
    },
}

impl Diagonal {
    /// Number of slots.
    pub fn len(&self) -> usize {
        match self {
            Diagonal::Dense(v) => v.len(),
            Diagonal::Kronecker { values, pattern } => values.len() * pattern.len(),
        }
    }

    /// Whether it has no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_well_formed(&self) -> bool {
        match self {
            Diagonal::Dense(_) => true,
            Diagonal::Kronecker { pattern, .. } => pattern.len().is_power_of_two(),
        }
    }

    /// Slot `j`.
    pub fn at(&self, j: usize) -> Complex64 {
        match self {
            Diagonal::Dense(v) => v[j],
            Diagonal::Kronecker { values, pattern } => {
                Complex64::new(values[j / pattern.len()] * pattern[j % pattern.len()], 0.0)
            }
        }
    }

    /// `out[j] = self[(j - shift) mod p] * multiplier` for `j < p` (`p` a
    /// power of two dividing the length).
    fn rotated_period(&self, shift: usize, p: usize, multiplier: Complex64) -> Vec<Complex64> {
        let source = |j: usize| (j + p - shift % p) & (p - 1);
        match self {
            Diagonal::Dense(v) => (0..p).map(|j| v[source(j)] * multiplier).collect(),
            Diagonal::Kronecker { values, pattern } => {
                let (block_bits, mask) = (pattern.len().trailing_zeros(), pattern.len() - 1);
                (0..p)
                    .map(|j| {
                        let i = source(j);
                        multiplier * (values[i >> block_bits] * pattern[i & mask])
                    })
                    .collect()
            }
        }
    }

    /// Every slot times `factor`.
    fn scaled(&self, factor: f64) -> Self {
        match self {
            Diagonal::Dense(v) => Diagonal::Dense(v.iter().map(|c| c * factor).collect()),
            Diagonal::Kronecker { values, pattern } => {
                Diagonal::Kronecker { values: values.iter().map(|v| v * factor).collect(), pattern: pattern.clone() }
            }
        }
    }

    /// The shortest power-of-two period: exact equality, so an encoding
    /// from one period is the vector's.
    fn shortest_period(&self) -> usize {
        let mut p = self.len();
        let halves_equal = |p: usize| (0..p / 2).all(|j| self.at(j) == self.at(j + p / 2));
        match self {
            Diagonal::Dense(_) => {}
            Diagonal::Kronecker { values, pattern } => {
                // Down to a block, a period repeats the block values.
                let b = pattern.len();
                while p > b && values[..p / b / 2] == values[p / b / 2..p / b] {
                    p /= 2;
                }
                if p > b {
                    return p;
                }
            }
        }
        while p > 1 && halves_equal(p) {
            p /= 2;
        }
        p
    }
}

/// A slot-space linear map given by its non-zero diagonals.
#[derive(Clone, Debug)]
pub struct LinearTransform {
    slots: usize,
    diagonals: BTreeMap<usize, Diagonal>,
    /// The shortest period of each diagonal (a power of two).
    periods: BTreeMap<usize, usize>,
    baby: usize,
}

impl LinearTransform {
    /// From diagonals (index `k` in `0..slots`, each of length `slots`).
    pub fn from_diagonals(slots: usize, diagonals: BTreeMap<usize, Vec<Complex64>>) -> Result<Self, CkksError> {
        Self::from_diagonal_values(slots, diagonals.into_iter().map(|(k, d)| (k, Diagonal::Dense(d))).collect())
    }

    /// From diagonals in any [`Diagonal`] form.
    pub fn from_diagonal_values(slots: usize, diagonals: BTreeMap<usize, Diagonal>) -> Result<Self, CkksError> {
        if !slots.is_power_of_two() {
            return Err(CkksError::InvalidInput(format!("slot count {slots} is not a power of two")));
        }
        if let Some((k, d)) = diagonals.iter().find(|(k, d)| **k >= slots || d.len() != slots || !d.is_well_formed()) {
            return Err(CkksError::InvalidInput(format!(
                "diagonal {k} has length {} (slots {slots}), an index out of range or a block pattern that is \
                 not a power of two",
                d.len()
            )));
        }
        let baby = Self::best_baby(slots, diagonals.keys().copied());
        let periods = diagonals.iter().map(|(&k, d)| (k, d.shortest_period())).collect();
        Ok(Self { slots, diagonals, periods, baby })
    }

    /// From a dense matrix (tests and small transforms).
    pub fn from_matrix(m: &[Vec<Complex64>]) -> Result<Self, CkksError> {
        let n = m.len();
        let mut diagonals = BTreeMap::new();
        for k in 0..n {
            let d: Vec<Complex64> = (0..n).map(|j| m[j][(j + k) % n]).collect();
            if d.iter().any(|c| c.norm() > 0.0) {
                diagonals.insert(k, d);
            }
        }
        Self::from_diagonals(n, diagonals)
    }

    fn best_baby(slots: usize, indices: impl Iterator<Item = usize> + Clone) -> usize {
        let mut best = (usize::MAX, 1);
        let mut n1 = 1;
        while n1 <= slots {
            let babies: std::collections::BTreeSet<usize> = indices.clone().map(|k| k % n1).collect();
            let giants: std::collections::BTreeSet<usize> = indices.clone().map(|k| k / n1).collect();
            let cost = babies.len() + giants.len();
            if cost < best.0 {
                best = (cost, n1);
            }
            n1 *= 2;
        }
        best.1
    }

    /// Number of slots the map acts on.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The diagonals.
    pub fn diagonals(&self) -> &BTreeMap<usize, Diagonal> {
        &self.diagonals
    }

    /// The map times `factor` (every diagonal scaled).
    pub fn scaled(&self, factor: f64) -> Self {
        let diagonals = self.diagonals.iter().map(|(&k, d)| (k, d.scaled(factor))).collect();
        Self { slots: self.slots, diagonals, periods: self.periods.clone(), baby: self.baby }
    }

    /// The shortest period of each diagonal's slots (what its encoding
    /// costs: FFT and NTTs of that size and twice it).
    pub fn periods(&self) -> &BTreeMap<usize, usize> {
        &self.periods
    }

    /// Composition `self * other` (apply `other` first).
    pub fn compose(&self, other: &Self) -> Result<Self, CkksError> {
        if self.slots != other.slots {
            return Err(CkksError::InvalidInput("composing transforms of different slot counts".into()));
        }
        let n = self.slots;
        let mut out: BTreeMap<usize, Vec<Complex64>> = BTreeMap::new();
        // (A B)_{j, j+a+b} = A_{j, j+a} B_{j+a, j+a+b}.
        for (&a, da) in &self.diagonals {
            for (&b, db) in &other.diagonals {
                let k = (a + b) % n;
                let entry = out.entry(k).or_insert_with(|| vec![Complex64::new(0.0, 0.0); n]);
                for j in 0..n {
                    entry[j] += da.at(j) * db.at((j + a) % n);
                }
            }
        }
        out.retain(|_, d| d.iter().any(|c| c.norm() > 1e-300));
        Self::from_diagonals(n, out)
    }

    /// Plaintext application, the f64 twin of [`evaluate`](Self::evaluate).
    pub fn apply(&self, z: &[Complex64]) -> Vec<Complex64> {
        let n = self.slots;
        let mut out = vec![Complex64::new(0.0, 0.0); n];
        for (&k, d) in &self.diagonals {
            for j in 0..n {
                out[j] += d.at(j) * z[(j + k) % n];
            }
        }
        out
    }

    /// Rotation steps the evaluation needs (baby steps and giant steps).
    pub fn rotations(&self) -> Vec<i64> {
        Self::steps(self.baby, self.diagonals.keys().copied())
    }

    /// The rotation steps of a transform with non-zero diagonals at
    /// `indices`, without building it (key generation needs only these).
    pub fn rotations_for(slots: usize, indices: &[usize]) -> Vec<i64> {
        Self::steps(Self::best_baby(slots, indices.iter().copied()), indices.iter().copied())
    }

    fn steps(baby: usize, indices: impl Iterator<Item = usize>) -> Vec<i64> {
        let mut steps: std::collections::BTreeSet<i64> = Default::default();
        for k in indices {
            let (g, b) = (k / baby, k % baby);
            if b != 0 {
                steps.insert(b as i64);
            }
            if g != 0 {
                steps.insert((g * baby) as i64);
            }
        }
        steps.into_iter().collect()
    }

    /// Galois elements of [`rotations`](Self::rotations).
    pub fn galois_elements(&self, params: &Parameters) -> Vec<usize> {
        self.rotations().into_iter().map(|s| params.galois_element_for_rotation(s)).collect()
    }

    /// Rotations paid for by one evaluation (baby + giant key switches).
    pub fn rotation_count(&self) -> usize {
        self.rotations().len()
    }

    /// Evaluates the map on the slots of `ct` (which must use exactly
    /// `slots` slots); consumes one level and keeps the scale.
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        keys: &GaloisKeys,
    ) -> Result<Ciphertext, CkksError> {
        self.evaluate_to_scale(eval, encoder, ct, keys, ct.scale())
    }

    /// Like [`evaluate`](Self::evaluate) with the result at `out_scale`
    /// (the diagonals are encoded at `q_level * out_scale / scale`).
    pub fn evaluate_to_scale(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        keys: &GaloisKeys,
        out_scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.evaluate_times_to_scale(eval, encoder, ct, keys, 1.0, out_scale)
    }

    /// `multiplier` times the map, at `out_scale`: the constant rides on
    /// the diagonals' encoding, so it costs no level.
    pub fn evaluate_times_to_scale(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        keys: &GaloisKeys,
        multiplier: f64,
        out_scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.evaluate_complex_times_to_scale(eval, encoder, ct, keys, Complex64::new(multiplier, 0.0), out_scale)
    }

    /// [`evaluate_times_to_scale`](Self::evaluate_times_to_scale) with a
    /// complex multiplier (e.g. `-i/2`, to read the imaginary part).
    pub fn evaluate_complex_times_to_scale(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        keys: &GaloisKeys,
        multiplier: Complex64,
        out_scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        self.check_input(ct)?;
        let rotated = eval.rotate_hoisted(ct, &self.baby_steps(), keys)?;
        let babies: BTreeMap<i64, Ciphertext> = self.baby_steps().into_iter().zip(rotated).collect();
        self.evaluate_rotated(eval, encoder, &babies, keys, multiplier, out_scale)
    }

    /// An input must fill exactly this map's slots and have a level to spend.
    fn check_input(&self, ct: &Ciphertext) -> Result<(), CkksError> {
        if ct.encoding() != crate::scheme::plaintext::Encoding::Slots(self.slots) {
            return Err(CkksError::InvalidInput(format!(
                "linear transform on {} slots applied to a {:?} ciphertext",
                self.slots,
                ct.encoding()
            )));
        }
        if ct.level() == 0 {
            return Err(CkksError::NotEnoughLevels { op: "linear transform", level: 0, needed: 1 });
        }
        Ok(())
    }

    /// The baby-step rotations an evaluation reads (hoisted: one
    /// decomposition of the input for all of them).
    pub fn baby_steps(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = self.diagonals.keys().map(|&k| (k % self.baby) as i64).collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// [`evaluate_complex_times_to_scale`](Self::evaluate_complex_times_to_scale)
    /// on an input given by its rotations: `rotations[b]` is the input
    /// rotated by `b`, for every step of [`baby_steps`](Self::baby_steps)
    /// at least. Transforms that read the same input (the rows of a
    /// product split into several outputs) share one set of rotations.
    pub fn evaluate_rotated(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        rotations: &BTreeMap<i64, Ciphertext>,
        keys: &GaloisKeys,
        multiplier: Complex64,
        out_scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        let baby = self
            .baby_steps()
            .into_iter()
            .map(|b| {
                rotations.get(&b).map(|ct| (b as usize, ct)).ok_or_else(|| {
                    CkksError::InvalidInput(format!("linear transform: the input's rotation by {b} is missing"))
                })
            })
            .collect::<Result<BTreeMap<usize, &Ciphertext>, _>>()?;
        let Some(ct) = baby.values().next().copied() else {
            return Err(CkksError::InvalidInput("linear transform has no diagonals".into()));
        };
        if !multiplier.is_finite() {
            return Err(CkksError::InvalidInput(format!("multiplier {multiplier} is not finite")));
        }
        if baby.values().any(|r| r.level() != ct.level() || r.scale() != ct.scale()) {
            return Err(CkksError::InvalidInput(
                "linear transform: the input's rotations differ in level or scale".into(),
            ));
        }
        self.check_input(ct)?;
        let params = eval.params();
        let level = ct.level();
        let pt_scale = params.q()[level] as f64 * out_scale / ct.scale();
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &k in self.diagonals.keys() {
            groups.entry(k / self.baby).or_default().push(k % self.baby);
        }
        // Giant groups in parallel: encoding the diagonals (an FFT each,
        // serial) dominates, and the groups are independent.
        use rayon::prelude::*;
        let groups: Vec<(usize, Vec<usize>)> = groups.into_iter().collect();
        let acc = groups
            .par_iter()
            .map(|(g, bs)| -> Result<Option<Ciphertext>, CkksError> {
                let shift = (g * self.baby) as i64;
                let mut inner: Option<Ciphertext> = None;
                // A few diagonals at a time in one dot product: no
                // ciphertext per product, and the encoded diagonals held
                // at once stay a few.
                for chunk in bs.chunks(DIAGONALS_PER_DOT) {
                    let pts = chunk
                        .iter()
                        .map(|&b| {
                            let k = g * self.baby + b;
                            let (diag, p) = (&self.diagonals[&k], self.periods[&k]);
                            // One period of rot_{-shift}(diag) (p divides the slots).
                            let period = diag.rotated_period(g * self.baby, p, multiplier);
                            encoder.encode_periodic_slots(&period, self.slots, level, pt_scale)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let cts: Vec<&Ciphertext> = chunk.iter().map(|b| baby[b]).collect();
                    let pts: Vec<&Plaintext> = pts.iter().collect();
                    let term = eval.dot_plain(&cts, &pts)?;
                    match inner.as_mut() {
                        None => inner = Some(term),
                        Some(i) => eval.add_assign(i, &term)?,
                    }
                }
                let Some(inner) = inner else { return Ok(None) };
                Ok(Some(if shift == 0 { inner } else { eval.rotate(&inner, shift, keys)? }))
            })
            .try_reduce(
                || None,
                |a, b| match (a, b) {
                    (Some(mut a), Some(b)) => {
                        eval.add_assign(&mut a, &b)?;
                        Ok(Some(a))
                    }
                    (a, b) => Ok(a.or(b)),
                },
            )?;
        let acc = acc.ok_or_else(|| CkksError::InvalidInput("linear transform has no diagonals".into()))?;
        let mut out = eval.rescale(&acc)?;
        out.reset_scale(out_scale);
        Ok(out)
    }
}
