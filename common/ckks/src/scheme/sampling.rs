//! Randomness: ternary and sparse secrets, discrete Gaussian errors and
//! uniform polynomials, from a ChaCha20 CSPRNG seeded by the OS; uniform
//! polynomials expand from a seed ([`expand_uniform_ntt`]).

use crate::ring::{Basis, Coeff, Ntt, Poly, RingContext};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

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

    /// A fresh uniform polynomial over `basis` (NTT form), expanded from a
    /// new seed with [`expand_uniform_ntt`].
    pub fn uniform_ntt(&mut self, ctx: &RingContext, basis: Basis) -> Poly<Ntt> {
        expand_uniform_ntt(ctx, self.seed(), 0, basis)
    }

    /// Signed small coefficients as an NTT-form polynomial over `basis`.
    pub fn small_to_ntt(ctx: &RingContext, basis: Basis, coeffs: &[i64]) -> Poly<Ntt> {
        Poly::<Coeff>::from_signed(ctx, basis, coeffs).into_ntt(ctx)
    }
}

/// A uniform polynomial modulo every prime of `basis`, directly in NTT
/// form (the NTT is a bijection, so it is uniform in both domains),
/// expanded from `seed`: the public `a` halves of seeded ciphertexts and
/// keys travel as this seed.
///
/// Every (stream, prime) pair reads its own ChaCha20 stream, numbered
/// `stream * 2^16 + i` for the prime's index `i` in the whole chain (special
/// primes after the `q` primes). So the limbs are sampled in parallel, and a
/// polynomial restricted to a lower level (a lean key used below the top)
/// samples only its own limbs and gets exactly the residues the full one
/// has. Each value is the low `bits(q)` bits of a 64-bit word, rejected
/// when not below `q`: no division, and exactly uniform.
pub fn expand_uniform_ntt(ctx: &RingContext, seed: [u8; 32], stream: u64, basis: Basis) -> Poly<Ntt> {
    // Every value is written below.
    let mut p = Poly::<Ntt>::uninit(ctx, basis);
    let n = ctx.n();
    p.data_mut().par_chunks_mut(n).enumerate().for_each(|(j, limb)| {
        expand_uniform_limb(seed, stream, ctx.chain_index_of(basis, j), ctx.modulus_of(basis, j).value(), limb)
    });
    p
}

/// One limb of [`expand_uniform_ntt`]: the residues modulo `q`, the prime
/// at index `prime` of the whole chain, of stream `stream` of `seed`.
pub(crate) fn expand_uniform_limb(seed: [u8; 32], stream: u64, prime: usize, q: u64, limb: &mut [u64]) {
    debug_assert!(prime < 1 << 16);
    let mut rng = ChaCha20Rng::from_seed(seed);
    rng.set_stream((stream << 16) | prime as u64);
    fill_below(&mut rng, q, limb);
}

/// Fills `out` with values uniform in `[0, q)` by masked rejection.
fn fill_below(rng: &mut ChaCha20Rng, q: u64, out: &mut [u64]) {
    let mask = u64::MAX >> (q - 1).leading_zeros();
    let mut words = [0u64; 64];
    let mut filled = 0;
    while filled < out.len() {
        rng.fill(&mut words[..]);
        if filled + words.len() <= out.len() {
            // Without a branch per value: every candidate is written and
            // the position advances past the accepted ones only (a
            // rejected one is overwritten by the next).
            for &w in &words {
                let v = w & mask;
                out[filled] = v;
                filled += usize::from(v < q);
            }
        } else {
            for &w in &words {
                let v = w & mask;
                if v < q {
                    out[filled] = v;
                    filled += 1;
                    if filled == out.len() {
                        return;
                    }
                }
            }
        }
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

    #[test]
    fn seed_expansion_is_uniform_below_each_prime_and_restricts_exactly() {
        let params = crate::Parameters::preset("INSECURE_N12_QP1121_H32_BOOT_TEST").unwrap();
        let ring = params.ring();
        let full = Basis { q: params.q().len(), p: params.p().len() };
        let seed = [9; 32];
        let a = expand_uniform_ntt(ring, seed, 3, full);
        assert_eq!(a, expand_uniform_ntt(ring, seed, 3, full), "deterministic");
        assert_ne!(a, expand_uniform_ntt(ring, seed, 4, full), "streams differ");
        assert_ne!(a, expand_uniform_ntt(ring, [8; 32], 3, full), "seeds differ");
        for j in 0..full.limbs() {
            let q = ring.modulus_of(full, j).value() as f64;
            let limb = a.limb(j);
            assert!(limb.iter().all(|&x| (x as f64) < q));
            // Mean of uniform [0, q) is q/2 with standard error q / sqrt(12 n).
            let mean = limb.iter().map(|&x| x as f64).sum::<f64>() / limb.len() as f64;
            let sigma = q / (12.0 * limb.len() as f64).sqrt();
            assert!((mean - q / 2.0).abs() < 6.0 * sigma, "limb {j}: mean {mean} for q {q}");
        }
        // A lower level samples only its limbs and gets the same residues:
        // lean keys rely on it.
        let low = Basis { q: 3, p: full.p };
        assert_eq!(expand_uniform_ntt(ring, seed, 3, low), a.restricted(low));
    }
}
