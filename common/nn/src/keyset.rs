//! An evaluation key set as one blob: parameters, relinearisation key and
//! Galois keys, each in the engine's checked wire format, length-prefixed.
//! The cluster addresses it by the BLAKE3 digest of these bytes and never looks
//! inside; workers decode it once and cache it.

use crate::error::{invalid, NnError};
use nexus_ckks::bootstrapping::BootstrapKeys;
use nexus_ckks::wire::{parameters_from_bytes_checked, parameters_to_bytes};
use nexus_ckks::{GaloisKeys, Parameters, RelinKey, Wire};

/// Decoded evaluation keys with their parameters. The keys are kept as a
/// [`BootstrapKeys`] so that a key set holding the bootstrapping rotations
/// serves bootstrapping as it is.
#[derive(Debug)]
pub struct KeySet {
    /// Parameters the keys belong to.
    pub params: Parameters,
    /// Relinearisation and Galois keys.
    pub keys: BootstrapKeys,
}

fn take<'a>(bytes: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], NnError> {
    if bytes.len() < 8 {
        return Err(invalid("key set", format!("truncated before the {what}")));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    if bytes.len() - 8 < len {
        return Err(invalid("key set", format!("{what} announces {len} bytes, {} left", bytes.len() - 8)));
    }
    let (part, rest) = bytes[8..].split_at(len);
    *bytes = rest;
    Ok(part)
}

impl KeySet {
    /// A key set of `params` with these keys.
    pub fn new(params: Parameters, relin: RelinKey, galois: GaloisKeys) -> Self {
        Self { params, keys: BootstrapKeys { relin, galois } }
    }

    /// The relinearisation key.
    pub fn relin(&self) -> &RelinKey {
        &self.keys.relin
    }

    /// The Galois keys.
    pub fn galois(&self) -> &GaloisKeys {
        &self.keys.galois
    }

    /// Serializes the key set.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NnError> {
        let mut out = Vec::with_capacity(self.memory_bytes() / 2 + (1 << 16));
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes [`to_bytes`](Self::to_bytes)'s output to `out` with one
    /// Galois key's encoding in memory at a time (a 2^16 key set is GBs:
    /// the client writes it to a file this way). Returns the bytes written.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> Result<u64, NnError> {
        let io = |e: std::io::Error| invalid("key set", format!("writing: {e}"));
        let params = parameters_to_bytes(&self.params)?;
        out.write_all(&(params.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&params).map_err(io)?;
        // The Galois keys are packed twice (counted, then written), not a
        // third time for their length prefix.
        Ok(8 + params.len() as u64
            + self.keys.relin.write_length_prefixed(&self.params, out)?
            + self.keys.galois.write_length_prefixed(&self.params, out)?)
    }

    /// Decodes and checks a key set (every part against the parameters),
    /// refusing more than `limit` bytes and, unless
    /// `allow_insecure_test_only`, parameters below 128-bit security.
    pub fn from_bytes(bytes: &[u8], limit: usize, allow_insecure_test_only: bool) -> Result<Self, NnError> {
        if bytes.len() > limit {
            return Err(invalid("key set", format!("{} bytes exceed the limit of {limit}", bytes.len())));
        }
        let mut rest = bytes;
        let params = parameters_from_bytes_checked(take(&mut rest, "parameters")?, limit, allow_insecure_test_only)?;
        let relin = RelinKey::from_bytes(&params, take(&mut rest, "relinearisation key")?, limit)?;
        let galois = GaloisKeys::from_bytes(&params, take(&mut rest, "Galois keys")?, limit)?;
        if !rest.is_empty() {
            return Err(invalid("key set", format!("{} trailing bytes", rest.len())));
        }
        Ok(Self::new(params, relin, galois))
    }

    /// The same keys with lean Galois keys ([`GaloisKeys::lean`]): about
    /// half the memory, for regenerating each key's uniform halves from its
    /// seed at every key switch. Results are bit-identical.
    pub fn lean(self) -> Self {
        let BootstrapKeys { relin, galois } = self.keys;
        Self { params: self.params, keys: BootstrapKeys { relin, galois: galois.lean() } }
    }

    /// Bytes held in memory (for the worker's cache budget).
    pub fn memory_bytes(&self) -> usize {
        self.keys.galois.memory_bytes() + self.relin_memory_bytes()
    }

    fn relin_memory_bytes(&self) -> usize {
        let p = &self.params;
        2 * p.q().len().div_ceil(p.alpha()) * (p.q().len() + p.p().len()) * p.n() * 8
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nexus_ckks::{Encoder, Encryptor, Evaluator, KeyGenerator};

    #[test]
    fn lean_key_sets_take_less_memory_and_rotate_bit_identically() {
        let params = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let steps = [1i64, 5];
        let galois = kg.galois_keys(&sk, &steps, false).unwrap();
        let full = KeySet::new(params.clone(), kg.relin_key(&sk), galois);
        let lean = KeySet::from_bytes(&full.to_bytes().unwrap(), 1 << 30, true).unwrap().lean();
        assert!(
            lean.memory_bytes() < full.memory_bytes() * 3 / 4,
            "{} vs {}",
            lean.memory_bytes(),
            full.memory_bytes()
        );
        let values: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64 * 0.01).sin()).collect();
        let pt = Encoder::new(&params).encode_real(&values, 4, params.default_scale()).unwrap();
        let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
        let eval = Evaluator::new(&params);
        for step in steps {
            let a = eval.rotate(&ct, step, full.galois()).unwrap();
            let b = eval.rotate(&ct, step, lean.galois()).unwrap();
            assert_eq!(a.to_bytes(&params).unwrap(), b.to_bytes(&params).unwrap(), "rotation by {step}");
        }
    }
}
