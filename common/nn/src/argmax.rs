//! Argmax over `m` values in `O(log m)` comparison rounds, returning a
//! one-hot mask.
//!
//! Values sit in the first `m` of `M = next_pow2(m)` slots, padded with the
//! range's minimum and repeated with period `M` across the ciphertext, so a
//! rotation by `2^i` is cyclic within the `M` values. Round `i` replaces
//! every slot by `max(a, rot(a, 2^i))`; after `log2 M` rounds every slot
//! holds the maximum. One more sign of `x - max + gap/2` gives the mask.
//!
//! Each maximum is off by at most [`Comparator::max_error`], so after
//! `log2 M` rounds the computed maximum is within `E = log2 M * max_error`
//! of the true one; the mask is exact (to the sign error) whenever the top
//! value exceeds the runner-up by [`Argmax::min_gap`] `= 2 (E + gap bound)`:
//! that is the resolution the operator states and its tests check.

use crate::compare::{Comparator, Ensure};
use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{check_range, invalid, NnError};
use nexus_ckks::{Ciphertext, Parameters};

/// An argmax over `m` values in `[-range, range]`.
#[derive(Clone, Debug)]
pub struct Argmax {
    m: usize,
    padded: usize,
    /// Slots between consecutive values (several vectors interleaved).
    stride: usize,
    range: f64,
    comparator: Comparator,
}

impl Argmax {
    /// `m` values in `[-range, range]`; `gap` and `sign_error` configure the
    /// comparisons (see [`Comparator::new`]).
    pub fn new(m: usize, range: f64, gap: f64, sign_error: f64, max_stage_depth: usize) -> Result<Self, NnError> {
        if m < 2 {
            return Err(invalid("argmax", format!("{m} values: need at least 2")));
        }
        let comparator = Comparator::new(2.0 * range, gap, sign_error, max_stage_depth)?;
        Ok(Self { m, padded: m.next_power_of_two(), stride: 1, range, comparator })
    }

    /// Value `j` of vector `i` at slot `j * stride + i` (`stride` vectors
    /// interleaved, the pattern repeated with period `M * stride`): the
    /// rounds rotate by multiples of `stride`, so one run takes the argmax
    /// of every vector.
    pub fn with_stride(mut self, stride: usize) -> Result<Self, NnError> {
        if !stride.is_power_of_two() {
            return Err(invalid("argmax", format!("stride {stride} is not a power of two")));
        }
        self.stride = stride;
        Ok(self)
    }

    /// Comparison rounds before the mask.
    pub fn rounds(&self) -> usize {
        self.padded.trailing_zeros() as usize
    }

    /// The comparator in use.
    pub fn comparator(&self) -> &Comparator {
        &self.comparator
    }

    /// The smallest top-1 / top-2 gap for which the mask is correct.
    pub fn min_gap(&self) -> f64 {
        let accumulated = self.rounds() as f64 * self.comparator.max_error();
        let margin = 1e-6 * self.comparator.bound();
        2.0 * (accumulated + self.comparator.sign().gap() * self.comparator.bound()) + margin
    }

    /// Rotation steps (their Galois keys must be in the engine's key set).
    pub fn rotations(&self) -> Vec<i64> {
        (0..self.rounds()).map(|i| (self.stride << i) as i64).collect()
    }

    /// Cost: rounds of one rotation and one maximum, then one sign.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let max = self.comparator.max_cost();
        OpCost {
            levels: max.levels,
            rotations: self.rounds(),
            products: (self.rounds() + 1) * max.products,
            bootstraps: 0,
            galois_elements: self.rotations().iter().map(|&s| params.galois_element_for_rotation(s)).collect(),
        }
    }

    /// Client side: the slot vector of one vector at stride 1 (`slots`
    /// must be a multiple of `M`).
    pub fn pack(&self, values: &[f64], slots: usize) -> Result<Vec<f64>, NnError> {
        if values.len() != self.m {
            return Err(invalid("argmax", format!("{} values, expected {}", values.len(), self.m)));
        }
        if !slots.is_multiple_of(self.padded) {
            return Err(invalid("argmax", format!("{slots} slots are not a multiple of {}", self.padded)));
        }
        check_range("argmax", values, -self.range, self.range)?;
        Ok((0..slots).map(|s| values.get(s % self.padded).copied().unwrap_or(-self.range)).collect())
    }

    /// The f64 twin: the same rounds and approximations on plain values.
    pub fn plain(&self, values: &[f64]) -> Result<Vec<f64>, NnError> {
        let mut a = self.pack(values, self.padded)?;
        for i in 0..self.rounds() {
            let step = 1 << i;
            a = (0..self.padded).map(|s| self.comparator.plain_max(a[s], a[(s + step) % self.padded])).collect();
        }
        let shift = self.min_gap() / 2.0;
        Ok((0..self.m).map(|s| 0.5 + 0.5 * self.comparator.plain_sign(values[s] - a[s] + shift)).collect())
    }

    /// Encrypted one-hot mask (slots `0..m`, repeated with period `M`):
    /// every [`round`](Self::round), then the [`mask`](Self::mask).
    pub fn apply(
        &self,
        engine: &Engine<'_>,
        x: &Ciphertext,
        mut refresh: Option<&mut (dyn Ensure + '_)>,
    ) -> Result<Ciphertext, NnError> {
        let mut a = x.clone();
        for round in 0..self.rounds() {
            a = self.round(engine, a, round, refresh.as_deref_mut())?;
        }
        self.mask(engine, x, &a, refresh)
    }

    /// Round `round` (from 0): every slot of `a` becomes the maximum of
    /// itself and the slot `stride * 2^round` further on. After all rounds
    /// every slot holds the maximum of the values.
    pub fn round(
        &self,
        engine: &Engine<'_>,
        a: Ciphertext,
        round: usize,
        mut refresh: Option<&mut (dyn Ensure + '_)>,
    ) -> Result<Ciphertext, NnError> {
        let step = *self
            .rotations()
            .get(round)
            .ok_or_else(|| invalid("argmax", format!("round {round}: there are {} rounds", self.rounds())))?;
        // Two levels for the difference's scaling and halving; the sign
        // stages refresh themselves as they go.
        let a = match refresh.as_deref_mut() {
            Some(r) => r.ensure(engine, a, 2)?,
            None => a,
        };
        let b = engine.eval.rotate(&a, step, engine.galois)?;
        self.comparator.max(engine, &a, &b, refresh)
    }

    /// The one-hot mask from the values `x` and `max`, the result of every
    /// round on them: one sign of `x - max + gap/2`.
    pub fn mask(
        &self,
        engine: &Engine<'_>,
        x: &Ciphertext,
        max: &Ciphertext,
        mut refresh: Option<&mut (dyn Ensure + '_)>,
    ) -> Result<Ciphertext, NnError> {
        let e = engine.eval;
        let shifted = e.add_const(&engine.sub_aligned(x, max)?, self.min_gap() / 2.0)?;
        let sign = self.comparator.sign_of_difference(engine, &shifted, refresh.as_deref_mut())?;
        let sign = match refresh {
            Some(r) => r.ensure(engine, sign, 1)?,
            None => sign,
        };
        let half = engine.mul_const_to(&sign, 0.5, sign.level().saturating_sub(1), sign.scale())?;
        Ok(e.add_const(&half, 0.5)?)
    }
}
