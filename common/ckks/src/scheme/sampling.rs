//! Randomness: ternary and sparse secrets, discrete Gaussian errors and
//! uniform polynomials, from a ChaCha20 CSPRNG seeded by the OS.

use crate::ring::{Basis, Coeff, Ntt, Poly, RingContext};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A cryptographically secure sampler.
#[derive(Debug)]
pub struct Sampler {
    rng: ChaCha20Rng,
}

impl Sampler {
    /// Seeded from the operating system.
    pub fn from_os() -> Self {
        Self { rng: ChaCha20Rng::from_entropy() }
    }

    /// Deterministic, for expanding seeded objects and for reproducible tests.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { rng: ChaCha20Rng::from_seed(seed) }
    }

    /// A fresh 32-byte seed.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    /// Uniform over {-1, 0, 1}.
    pub fn ternary(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| loop {
                // Rejection from 2 bits keeps the three values equiprobable.
                let r = self.rng.next_u32() & 3;
                if r < 3 {
                    break r as i64 - 1;
                }
            })
            .collect()
    }

    /// Exactly `h` non-zero coefficients in {-1, 1} at uniform positions.
    pub fn sparse_ternary(&mut self, n: usize, h: usize) -> Vec<i64> {
        let mut idx: Vec<usize> = (0..n).collect();
        let mut out = vec![0i64; n];
        for i in 0..h.min(n) {
            let j = self.rng.gen_range(i..n);
            idx.swap(i, j);
            out[idx[i]] = if self.rng.next_u32() & 1 == 0 { 1 } else { -1 };
        }
        out
    }

    /// Rounded Gaussian with standard deviation `sigma`, cut at 6 sigma.
    pub fn gaussian(&mut self, n: usize, sigma: f64) -> Vec<i64> {
        let bound = 6.0 * sigma;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // Box-Muller gives two independent normals per draw.
            let u1: f64 = self.rng.gen::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = self.rng.gen();
            let r = (-2.0 * u1.ln()).sqrt() * sigma;
            for z in [r * (2.0 * std::f64::consts::PI * u2).cos(), r * (2.0 * std::f64::consts::PI * u2).sin()] {
                if z.abs() <= bound && out.len() < n {
                    out.push(z.round() as i64);
                }
            }
        }
        out
    }

    /// Uniform polynomial modulo every prime of `basis`, directly in NTT
    /// form (the NTT is a bijection, so this is uniform in both domains).
    pub fn uniform_ntt(&mut self, ctx: &RingContext, basis: Basis) -> Poly<Ntt> {
        let mut p = Poly::<Ntt>::zero(ctx, basis);
        for j in 0..basis.limbs() {
            let q = ctx.modulus_of(basis, j).value();
            // Rejection sampling below the largest multiple of q under 2^64.
            let zone = u64::MAX - (u64::MAX % q) - 1;
            for x in p.limb_mut(j).iter_mut() {
                *x = loop {
                    let r = self.rng.next_u64();
                    if r <= zone {
                        break r % q;
                    }
                };
            }
        }
        p
    }

    /// Signed small coefficients as an NTT-form polynomial over `basis`.
    pub fn small_to_ntt(ctx: &RingContext, basis: Basis, coeffs: &[i64]) -> Poly<Ntt> {
        Poly::<Coeff>::from_signed(ctx, basis, coeffs).into_ntt(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_the_right_shape() {
        let mut s = Sampler::from_seed([7; 32]);
        let t = s.ternary(30000);
        for v in [-1, 0, 1] {
            let c = t.iter().filter(|&&x| x == v).count();
            assert!((9000..11000).contains(&c), "{v}: {c}");
        }
        let sp = s.sparse_ternary(4096, 192);
        assert_eq!(sp.iter().filter(|&&x| x != 0).count(), 192);
        let g = s.gaussian(100000, 3.2);
        let var = g.iter().map(|&x| (x * x) as f64).sum::<f64>() / g.len() as f64;
        assert!((var.sqrt() - 3.2).abs() < 0.1, "std {}", var.sqrt());
        assert!(g.iter().all(|x| x.abs() <= 20));
        assert_ne!(Sampler::from_os().seed(), Sampler::from_os().seed());
    }
}
