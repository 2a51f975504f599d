//! Encryption (public key, or secret key with a seeded `c1`) and decryption.

use super::keys::{PublicKey, SecretKey};
use super::plaintext::{Ciphertext, Plaintext};
use super::sampling::{expand_uniform_ntt, Sampler};
use crate::error::CkksError;
use crate::ring::Basis;
use crate::Parameters;
use std::sync::Mutex;

/// Encrypts plaintexts.
#[derive(Debug)]
pub struct Encryptor {
    params: Parameters,
    sampler: Mutex<Sampler>,
}

impl Encryptor {
    /// An encryptor drawing randomness from the operating system.
    pub fn new(params: &Parameters) -> Self {
        Self { params: params.clone(), sampler: Mutex::new(Sampler::from_os()) }
    }

    /// A deterministic encryptor (golden files and reproducible tests only:
    /// a fixed seed makes every ciphertext's randomness predictable).
    pub fn from_seed_insecure(params: &Parameters, seed: [u8; 32]) -> Self {
        Self { params: params.clone(), sampler: Mutex::new(Sampler::from_seed(seed)) }
    }

    fn check(&self, what: &'static str, digest: [u8; 32]) -> Result<(), CkksError> {
        if digest != self.params.digest() {
            return Err(CkksError::ParametersMismatch(what));
        }
        Ok(())
    }

    fn with_sampler<T>(&self, f: impl FnOnce(&mut Sampler) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-sample; the
        // CSPRNG state is still valid.
        let mut guard = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Public-key encryption at the plaintext's level:
    /// `(round((u b + e0) / P) + m, round((u a + e1) / P))`. Working modulo
    /// `QP` and dividing by `P` leaves only the rounding noise of the
    /// division (rms about 2^6 at N = 2^16) instead of `u e + e1 s` (2^10).
    pub fn encrypt_pk(&self, pt: &Plaintext, pk: &PublicKey) -> Result<Ciphertext, CkksError> {
        self.check("public key", pk.digest)?;
        let ring = self.params.ring();
        let level = pt.level;
        let ext = Basis { q: level + 1, p: self.params.p().len() };
        let n = ring.n();
        let sigma = self.params.error_std();
        let (mut u, e0, e1) = self.with_sampler(|s| (s.ternary(n), s.gaussian(n, sigma), s.gaussian(n, sigma)));
        // u determines the plaintext given the ciphertext: wipe every copy.
        let u_ntt = zeroize::Zeroizing::new(Sampler::small_to_ntt(ring, ext, &u));
        zeroize::Zeroize::zeroize(&mut u);
        let u = &*u_ntt;
        let mut c0 = Sampler::small_to_ntt(ring, ext, &e0);
        let mut c1 = Sampler::small_to_ntt(ring, ext, &e1);
        c0.mul_add_assign(ring, u, &pk.b.restricted(ext));
        c1.mul_add_assign(ring, u, &pk.a.restricted(ext));
        let inner = self.params.inner();
        for c in [&mut c0, &mut c1] {
            ring.backend().mod_down(ring, ext, &inner.mod_down, &inner.p_inv_mod_q, c.data_mut());
            c.truncate_q(level + 1);
        }
        c0.add_assign(ring, &pt.poly);
        Ok(Ciphertext { parts: vec![c0, c1], level, scale: pt.scale, encoding: pt.encoding, seed: None })
    }

    /// Secret-key encryption `(-a s + e + m, a)` with `a` derived from a
    /// fresh seed, so the ciphertext travels in seeded form (half size).
    pub fn encrypt_sk(&self, pt: &Plaintext, sk: &SecretKey) -> Result<Ciphertext, CkksError> {
        self.check("secret key", sk.digest)?;
        let ring = self.params.ring();
        let level = pt.level;
        let basis = Basis::q(level);
        let sigma = self.params.error_std();
        let (seed, e) = self.with_sampler(|s| (s.seed(), s.gaussian(ring.n(), sigma)));
        let a = expand_uniform_ntt(ring, seed, 0, basis);
        let mut c0 = a.clone();
        c0.mul_assign(ring, &sk.at_level(level));
        c0.neg_assign(ring);
        c0.add_assign(ring, &Sampler::small_to_ntt(ring, basis, &e));
        c0.add_assign(ring, &pt.poly);
        Ok(Ciphertext { parts: vec![c0, a], level, scale: pt.scale, encoding: pt.encoding, seed: Some(seed) })
    }
}

/// Decrypts ciphertexts.
#[derive(Debug, Clone)]
pub struct Decryptor {
    params: Parameters,
}

impl Decryptor {
    /// A decryptor for `params`.
    pub fn new(params: &Parameters) -> Self {
        Self { params: params.clone() }
    }

    /// `c0 + c1 s (+ c2 s^2)`.
    pub fn decrypt(&self, ct: &Ciphertext, sk: &SecretKey) -> Result<Plaintext, CkksError> {
        if sk.digest != self.params.digest() {
            return Err(CkksError::ParametersMismatch("secret key"));
        }
        let ring = self.params.ring();
        let s = sk.at_level(ct.level);
        let mut acc = ct.parts[ct.parts.len() - 1].clone();
        // Horner: ((c_d s + c_{d-1}) s + ...) + c0.
        for part in ct.parts[..ct.parts.len() - 1].iter().rev() {
            acc.mul_assign(ring, &s);
            acc.add_assign(ring, part);
        }
        Ok(Plaintext { poly: acc, level: ct.level, scale: ct.scale, encoding: ct.encoding })
    }
}
