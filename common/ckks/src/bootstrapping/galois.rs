//! The Galois elements a bootstrap uses, from the parameters and the
//! circuit settings alone: the client generating keys and a planner listing
//! them need not build the DFT matrices (about 200 MB at N = 2^16) just to
//! learn which rotations those matrices need.
//!
//! A butterfly stage of half-width `h` on `n` slots has non-zero diagonals
//! at `0`, `h` and `n - h` only (see `stage` in the parent module), so a
//! group of stages composed has its diagonals in the sum set of theirs; the
//! baby-step giant-step split of those indices
//! ([`LinearTransform::rotations_for`]) gives the rotations. A unit test
//! checks this against the built circuit at both bootstrapping presets,
//! full and sparse slots, and other level splits.

use super::BootstrapConfig;
use crate::circuits::LinearTransform;
use crate::error::CkksError;
use crate::Parameters;
use std::collections::BTreeSet;

/// The Galois elements of one bootstrapping circuit, split by where the
/// circuit uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapGalois {
    /// Used at the top level: CoeffToSlot, the sparse trace and the
    /// conjugation that splits real and imaginary parts (sorted).
    pub top_level: Vec<usize>,
    /// Used by SlotToCoeff only (sorted, none of `top_level`): their keys
    /// are needed at [`slot_to_coeff_level`](Self::slot_to_coeff_level)
    /// and below, a fraction of the chain.
    pub slot_to_coeff_only: Vec<usize>,
    /// The level SlotToCoeff starts at.
    pub slot_to_coeff_level: usize,
}

impl BootstrapGalois {
    /// Every element, sorted.
    pub fn all(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.top_level.iter().chain(&self.slot_to_coeff_only).copied().collect();
        all.sort_unstable();
        all
    }
}

/// How many consecutive stages each of `levels` groups takes out of `total`
/// (the first `total % levels` groups take one more).
pub(super) fn group_sizes(total: usize, levels: usize) -> impl Iterator<Item = usize> {
    let levels = levels.clamp(1, total.max(1));
    (0..levels).map(move |g| total / levels + usize::from(g < total % levels))
}

/// Rotations of the trace onto a sparse ciphertext's subring: by `slots`,
/// `2 slots`, ... below `max_slots` (none at full slots).
pub(super) fn trace_rotations(slots: usize, max_slots: usize) -> Vec<i64> {
    std::iter::successors(Some(slots), |r| Some(r * 2)).take_while(|&r| r < max_slots).map(|r| r as i64).collect()
}

/// Diagonal indices of the composition of butterfly stages of the given
/// half-widths on `n` slots.
fn composed_diagonals(n: usize, halves: &[usize]) -> Vec<usize> {
    let mut indices = BTreeSet::from([0usize]);
    for &h in halves {
        let stage = [0, h % n, (n - h) % n];
        indices = indices.iter().flat_map(|&a| stage.iter().map(move |&b| (a + b) % n)).collect();
    }
    indices.into_iter().collect()
}

/// Rotation steps of the groups of `halves` (stages in application order)
/// split into `levels` transforms.
fn grouped_rotations(n: usize, halves: &[usize], levels: usize) -> Vec<i64> {
    let mut rest = halves;
    let mut steps = Vec::new();
    for size in group_sizes(halves.len(), levels) {
        let (group, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        steps.extend(LinearTransform::rotations_for(n, &composed_diagonals(n, group)));
    }
    steps
}

impl BootstrapConfig {
    /// The slot count this circuit refreshes, checked against `params`.
    pub(super) fn checked_slots(&self, params: &Parameters) -> Result<usize, CkksError> {
        if self.double_angle == 0 || self.cts_levels == 0 || self.stc_levels == 0 || self.k.is_nan() || self.k < 1.0 {
            return Err(CkksError::InvalidParameters(format!(
                "bootstrapping needs at least one double angle, one CoeffToSlot and one SlotToCoeff level and K >= 1: {self:?}"
            )));
        }
        if params.max_level() < self.depth() {
            return Err(CkksError::InvalidParameters(format!(
                "bootstrapping needs {} levels, the parameters have {}",
                self.depth(),
                params.max_level()
            )));
        }
        let n = self.slots.unwrap_or(params.max_slots());
        if !n.is_power_of_two() || n < 2 || n > params.max_slots() {
            return Err(CkksError::InvalidParameters(format!(
                "bootstrapping slots must be a power of two in [2, {}], got {n}",
                params.max_slots()
            )));
        }
        let log_n = n.trailing_zeros() as usize;
        if log_n < self.cts_levels.max(self.stc_levels) {
            return Err(CkksError::InvalidParameters(format!(
                "{n} slots have {log_n} FFT stages, fewer than the {} CoeffToSlot / {} SlotToCoeff levels",
                self.cts_levels, self.stc_levels
            )));
        }
        Ok(n)
    }

    /// The Galois elements of this circuit at `params`, without building it.
    pub fn galois(&self, params: &Parameters) -> Result<BootstrapGalois, CkksError> {
        let n = self.checked_slots(params)?;
        let log_n = n.trailing_zeros() as usize;
        // CoeffToSlot applies the inverse stages h = n/2 .. 1, SlotToCoeff
        // the forward ones h = 1 .. n/2.
        let cts_halves: Vec<usize> = (0..log_n).map(|i| n >> (i + 1)).collect();
        let stc_halves: Vec<usize> = (0..log_n).map(|i| 1 << i).collect();
        let element = |r: i64| params.galois_element_for_rotation(r);
        let mut top: BTreeSet<usize> =
            grouped_rotations(n, &cts_halves, self.cts_levels).into_iter().map(element).collect();
        top.extend(trace_rotations(n, params.max_slots()).into_iter().map(element));
        top.insert(params.galois_element_conjugate());
        let stc: BTreeSet<usize> =
            grouped_rotations(n, &stc_halves, self.stc_levels).into_iter().map(element).collect();
        Ok(BootstrapGalois {
            slot_to_coeff_only: stc.difference(&top).copied().collect(),
            top_level: top.into_iter().collect(),
            slot_to_coeff_level: params.max_level() - self.depth() + self.stc_levels,
        })
    }

    /// Every Galois element the keys must cover, sorted.
    pub fn galois_elements(&self, params: &Parameters) -> Result<Vec<usize>, CkksError> {
        Ok(self.galois(params)?.all())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BootstrapConfig, Bootstrapper};
    use crate::Parameters;
    use std::collections::BTreeSet;

    /// The elements read off the built circuit's transforms.
    fn built(boot: &Bootstrapper) -> (BTreeSet<usize>, BTreeSet<usize>) {
        let params = &boot.params;
        let mut top: BTreeSet<usize> = boot.cts.iter().flat_map(|t| t.galois_elements(params)).collect();
        top.extend(boot.trace_rotations().into_iter().map(|r| params.galois_element_for_rotation(r)));
        top.insert(params.galois_element_conjugate());
        let stc = boot.stc.iter().flat_map(|t| t.galois_elements(params)).filter(|g| !top.contains(g)).collect();
        (top, stc)
    }

    fn check(preset: &str, config: BootstrapConfig) {
        let params = Parameters::preset(preset).unwrap();
        let planned = config.galois(&params).unwrap();
        let boot = Bootstrapper::new(&params, config.clone()).unwrap();
        let (top, stc) = built(&boot);
        assert_eq!(planned.top_level, top.into_iter().collect::<Vec<_>>(), "{preset} {config:?}: top level");
        assert_eq!(planned.slot_to_coeff_only, stc.into_iter().collect::<Vec<_>>(), "{preset} {config:?}: SlotToCoeff");
        assert_eq!(planned.slot_to_coeff_level, boot.output_level() + config.stc_levels);
        assert_eq!(boot.galois_elements(), planned.all());
    }

    #[test]
    fn planned_elements_match_the_built_circuit() {
        let preset = "INSECURE_N12_QP1121_H32_BOOT_TEST";
        let base = BootstrapConfig::for_preset(preset).unwrap();
        for slots in [None, Some(16), Some(32), Some(128), Some(1024)] {
            for (cts_levels, stc_levels) in [(3, 3), (1, 2), (2, 1), (4, 2)] {
                check(preset, BootstrapConfig { slots, cts_levels, stc_levels, ..base.clone() });
            }
        }
    }

    #[test]
    fn planned_elements_match_the_built_circuit_at_n16() {
        let preset = "N16_QP1545_H192";
        let base = BootstrapConfig::for_preset(preset).unwrap();
        for slots in [None, Some(1 << 13)] {
            check(preset, BootstrapConfig { slots, ..base.clone() });
        }
    }

    #[test]
    fn a_bad_configuration_is_refused_without_building() {
        let params = Parameters::preset("INSECURE_N12_QP1121_H32_BOOT_TEST").unwrap();
        let base = BootstrapConfig::default();
        let err = BootstrapConfig { slots: Some(3), ..base.clone() }.galois(&params).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = BootstrapConfig { slots: Some(2), ..base }.galois(&params).unwrap_err();
        assert!(err.to_string().contains("FFT stages"), "{err}");
    }
}
