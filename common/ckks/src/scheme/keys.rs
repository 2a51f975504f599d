//! Secret, public and evaluation keys, and their generation.
//!
//! Switching keys are hybrid (Han-Ki): the chain is split into `dnum` digits
//! of `alpha` primes; digit `j` of a key from `s'` to `s` is
//! `(b_j, a_j) = (-a_j s + e_j + P * [digit j gadget] * s', a_j)` modulo `QP`,
//! where the gadget factor is `P mod q_i` on the digit's primes and 0
//! elsewhere. All `a_j` of a key derive from one 32-byte seed, so a key can
//! travel in seeded form at about half its size.

use super::sampling::{expand_uniform_ntt, Sampler};
use crate::error::CkksError;
use crate::params::SecretDistribution;
use crate::ring::{Basis, Ntt, Poly};
use crate::Parameters;
use rayon::prelude::*;
use std::collections::BTreeMap;
use zeroize::Zeroize;

/// The secret key, in NTT form over every prime (chain and special).
/// Zeroized on drop; never serialized by the server-side wire types.
pub struct SecretKey {
    pub(crate) poly: Poly<Ntt>,
    pub(crate) digest: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.poly.zeroize();
    }
}

impl SecretKey {
    /// The secret restricted to the chain primes up to `level`, wiped when
    /// dropped (pooled buffers are reused without clearing).
    pub(crate) fn at_level(&self, level: usize) -> zeroize::Zeroizing<Poly<Ntt>> {
        zeroize::Zeroizing::new(self.poly.restricted(Basis::q(level)))
    }
}

/// A public key `(b, a) = (-a s + e, a)` modulo `QP`.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) b: Poly<Ntt>,
    pub(crate) a: Poly<Ntt>,
    pub(crate) seed: [u8; 32],
    pub(crate) digest: [u8; 32],
}

/// A hybrid key-switching key: one `(b_j, a_j)` pair per digit, modulo `QP`.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchingKey {
    pub(crate) b: Vec<Poly<Ntt>>,
    pub(crate) a: Vec<Poly<Ntt>>,
    pub(crate) seed: [u8; 32],
    pub(crate) digest: [u8; 32],
}

impl SwitchingKey {
    /// Highest ciphertext level the key can switch (keys restricted to a
    /// lower level store fewer chain limbs and digits).
    pub fn max_level(&self) -> usize {
        self.b.first().map_or(0, |p| p.basis().q.saturating_sub(1))
    }

    /// The same key with chain limbs above `level` and the digits it no
    /// longer needs dropped. Valid because every RNS limb of the key equation
    /// holds on its own, and a key switch at level `l` reads exactly limbs
    /// `0..=l`, the special limbs and `ceil((l + 1) / alpha)` digits.
    pub(crate) fn restricted(&self, alpha: usize, level: usize) -> SwitchingKey {
        let level = level.min(self.max_level());
        let digits = (level + 1).div_ceil(alpha).min(self.b.len());
        let restrict = |p: &Poly<Ntt>| p.restricted(Basis { q: level + 1, p: p.basis().p });
        SwitchingKey::compacted(
            self.b[..digits].iter().map(restrict).collect(),
            self.a.iter().take(digits).map(restrict).collect(),
            self.seed,
            self.digest,
        )
    }

    /// The same key without its uniform halves `a_j` in memory: every key
    /// switch regenerates them from the seed (about half the memory, for
    /// the time of sampling them).
    pub fn lean(mut self) -> SwitchingKey {
        self.a = Vec::new();
        self
    }

    /// Whether the uniform halves are regenerated at each use.
    pub fn is_lean(&self) -> bool {
        self.a.len() < self.b.len()
    }

    /// A key of `b` and `a`, each polynomial in a buffer of exactly its
    /// size (keys live as long as the key set).
    pub(crate) fn compacted(b: Vec<Poly<Ntt>>, a: Vec<Poly<Ntt>>, seed: [u8; 32], digest: [u8; 32]) -> Self {
        SwitchingKey {
            b: b.into_iter().map(Poly::compacted).collect(),
            a: a.into_iter().map(Poly::compacted).collect(),
            seed,
            digest,
        }
    }

    /// Bytes held in memory (both components of every digit).
    pub fn memory_bytes(&self) -> usize {
        self.b.iter().chain(&self.a).map(|p| p.basis().limbs() * p.n() * 8).sum()
    }

    /// Number of digits.
    pub fn digits(&self) -> usize {
        self.b.len()
    }
}

/// The first `digits` uniform halves of a switching key with `seed` over
/// `basis` (digit `j` is stream `j`): exactly key generation's residues on
/// those limbs, and only those limbs are sampled.
pub(crate) fn regenerate_uniform_halves(
    params: &Parameters,
    seed: [u8; 32],
    basis: Basis,
    digits: usize,
) -> Vec<Poly<Ntt>> {
    (0..digits).into_par_iter().map(|j| expand_uniform_ntt(params.ring(), seed, j as u64, basis)).collect()
}

/// Relinearisation key (switches `s^2` to `s`).
#[derive(Clone, Debug, PartialEq)]
pub struct RelinKey(pub(crate) SwitchingKey);

/// Galois key for one automorphism `X -> X^g` (switches `s(X^g)` to `s`).
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKey {
    pub(crate) element: usize,
    pub(crate) key: SwitchingKey,
}

impl GaloisKey {
    /// The Galois element `g`.
    pub fn element(&self) -> usize {
        self.element
    }

    /// Number of key-switching digits.
    pub fn key_digits(&self) -> usize {
        self.key.digits()
    }

    /// Highest ciphertext level this key can rotate.
    pub fn max_level(&self) -> usize {
        self.key.max_level()
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.key.memory_bytes()
    }

    /// This key restricted to ciphertexts at `level` or below (less memory:
    /// fewer chain limbs and digits).
    pub fn restricted_to_level(&self, params: &crate::Parameters, level: usize) -> GaloisKey {
        GaloisKey { element: self.element, key: self.key.restricted(params.alpha(), level) }
    }

    /// This key without its uniform halves in memory ([`SwitchingKey::lean`]).
    pub fn lean(self) -> GaloisKey {
        GaloisKey { element: self.element, key: self.key.lean() }
    }
}

/// A set of Galois keys indexed by element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaloisKeys {
    pub(crate) keys: BTreeMap<usize, GaloisKey>,
}

impl GaloisKeys {
    /// Empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a key.
    pub fn insert(&mut self, key: GaloisKey) {
        self.keys.insert(key.element, key);
    }
    /// The key for element `g`, or a typed error naming `g`.
    pub fn get(&self, g: usize) -> Result<&GaloisKey, CkksError> {
        self.keys.get(&g).ok_or(CkksError::MissingGaloisKey(g))
    }
    /// Elements present.
    pub fn elements(&self) -> impl Iterator<Item = usize> + '_ {
        self.keys.keys().copied()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// Bytes held in memory by all keys.
    pub fn memory_bytes(&self) -> usize {
        self.keys.values().map(GaloisKey::memory_bytes).sum()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Every key without its uniform halves in memory: about half the
    /// bytes, each key switch samples them again from the key's seed.
    pub fn lean(self) -> GaloisKeys {
        GaloisKeys { keys: self.keys.into_iter().map(|(g, k)| (g, k.lean())).collect() }
    }
}

/// Generates keys from OS randomness.
#[derive(Debug)]
pub struct KeyGenerator {
    params: Parameters,
    sampler: Sampler,
}

impl KeyGenerator {
    /// A generator for `params`, seeded by the operating system.
    pub fn new(params: &Parameters) -> Self {
        Self { params: params.clone(), sampler: Sampler::from_os() }
    }

    /// A deterministic generator (tests and golden files only: a fixed seed
    /// makes every key predictable).
    pub fn from_seed_insecure(params: &Parameters, seed: [u8; 32]) -> Self {
        Self { params: params.clone(), sampler: Sampler::from_seed(seed) }
    }

    fn full_basis(&self) -> Basis {
        Basis { q: self.params.q().len(), p: self.params.p().len() }
    }

    /// A fresh secret key from the parameters' distribution.
    pub fn secret_key(&mut self) -> SecretKey {
        let n = self.params.n();
        let mut coeffs = match self.params.secret_distribution() {
            SecretDistribution::Ternary => self.sampler.ternary(n),
            SecretDistribution::SparseTernary { hamming_weight } => self.sampler.sparse_ternary(n, hamming_weight),
        };
        let poly = Sampler::small_to_ntt(self.params.ring(), self.full_basis(), &coeffs);
        coeffs.zeroize();
        SecretKey { poly, digest: self.params.digest() }
    }

    /// The public key of `sk`, modulo `QP` (chain and special primes):
    /// encryption works modulo `QP` and divides by `P`, which shrinks the
    /// fresh-encryption noise to the rounding noise of that division.
    pub fn public_key(&mut self, sk: &SecretKey) -> PublicKey {
        let ring = self.params.ring();
        let basis = self.full_basis();
        let seed = self.sampler.seed();
        let a = expand_uniform_ntt(ring, seed, 0, basis);
        let e = Sampler::small_to_ntt(ring, basis, &self.sampler.gaussian(ring.n(), self.params.error_std()));
        let mut b = a.clone();
        b.mul_assign(ring, &sk.poly);
        b.neg_assign(ring);
        b.add_assign(ring, &e);
        PublicKey { b, a, seed, digest: self.params.digest() }
    }

    /// A key switching from `from` (NTT form over all primes) to `sk`.
    pub(crate) fn switching_key(&mut self, from: &Poly<Ntt>, sk: &SecretKey) -> SwitchingKey {
        let ring = self.params.ring();
        let basis = self.full_basis();
        let inner = self.params.inner();
        let alpha = self.params.alpha();
        let q_count = self.params.q().len();
        let digits = q_count.div_ceil(alpha);
        let seed = self.sampler.seed();
        let n = ring.n();
        let mut bs = Vec::with_capacity(digits);
        let mut as_ = Vec::with_capacity(digits);
        for j in 0..digits {
            let a = expand_uniform_ntt(ring, seed, j as u64, basis);
            let e = Sampler::small_to_ntt(ring, basis, &self.sampler.gaussian(n, self.params.error_std()));
            let mut b = a.clone();
            b.mul_assign(ring, &sk.poly);
            b.neg_assign(ring);
            b.add_assign(ring, &e);
            for i in j * alpha..((j + 1) * alpha).min(q_count) {
                let qi = ring.q()[i];
                let g = inner.p_mod_q[i];
                let (gw, gs) = (g, qi.shoup(g));
                let src = from.limb(i);
                for (x, &s) in b.limb_mut(i).iter_mut().zip(src) {
                    *x = qi.add(*x, qi.mul_shoup(s, gw, gs));
                }
            }
            bs.push(b);
            as_.push(a);
        }
        SwitchingKey::compacted(bs, as_, seed, self.params.digest())
    }

    /// The relinearisation key of `sk`.
    pub fn relin_key(&mut self, sk: &SecretKey) -> RelinKey {
        let ring = self.params.ring();
        let mut s2 = sk.poly.clone();
        s2.mul_assign(ring, &sk.poly);
        let key = self.switching_key(&s2, sk);
        s2.zeroize();
        RelinKey(key)
    }

    /// The Galois key for element `g` (odd, below 2N).
    pub fn galois_key(&mut self, sk: &SecretKey, g: usize) -> Result<GaloisKey, CkksError> {
        if g.is_multiple_of(2) || g >= 2 * self.params.n() || g == 1 {
            return Err(CkksError::InvalidInput(format!("Galois element {g} must be odd, not 1, and below 2N")));
        }
        let mut rotated = sk.poly.automorphism(self.params.ring(), g);
        let key = self.switching_key(&rotated, sk);
        rotated.zeroize();
        Ok(GaloisKey { element: g, key })
    }

    /// Galois keys for rotations by each of `steps` (and conjugation when
    /// `conjugate`).
    pub fn galois_keys(&mut self, sk: &SecretKey, steps: &[i64], conjugate: bool) -> Result<GaloisKeys, CkksError> {
        let mut elements: Vec<usize> = steps.iter().map(|&s| self.params.galois_element_for_rotation(s)).collect();
        if conjugate {
            elements.push(self.params.galois_element_conjugate());
        }
        self.galois_keys_for_elements(sk, &elements)
    }

    /// Galois keys for arbitrary elements (e.g. `N/2^i + 1` for NEXUS's
    /// input expansion).
    pub fn galois_keys_for_elements(&mut self, sk: &SecretKey, elements: &[usize]) -> Result<GaloisKeys, CkksError> {
        let mut keys = GaloisKeys::new();
        for &g in elements {
            if g != 1 && !keys.keys.contains_key(&g) {
                keys.insert(self.galois_key(sk, g)?);
            }
        }
        Ok(keys)
    }
}
