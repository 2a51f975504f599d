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

fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u64).to_le_bytes());
    out.extend_from_slice(part);
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
        let mut out = Vec::new();
        put(&mut out, &parameters_to_bytes(&self.params)?);
        put(&mut out, &self.keys.relin.to_bytes(&self.params)?);
        put(&mut out, &self.keys.galois.to_bytes(&self.params)?);
        Ok(out)
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

    /// Bytes held in memory (for the worker's cache budget).
    pub fn memory_bytes(&self) -> usize {
        self.keys.galois.memory_bytes() + self.relin_memory_bytes()
    }

    fn relin_memory_bytes(&self) -> usize {
        let p = &self.params;
        2 * p.q().len().div_ceil(p.alpha()) * (p.q().len() + p.p().len()) * p.n() * 8
    }
}
