//! RNS basis conversion (fast base extension).
//!
//! For `x` given by residues `x_i` modulo the source primes `q_i` (product
//! `D`), the fast conversion computes, modulo each target prime `p`,
//! `sum_i [x_i * (D/q_i)^-1]_{q_i} * (D/q_i) mod p`, which equals `x + e*D`
//! for some `0 <= e < #sources`. Hybrid key switching tolerates the `e*D`
//! term (it vanishes against the gadget), and ModDown's error is small.

use super::modulus::Modulus;
use serde::{Deserialize, Serialize};

/// Precomputed constants to convert from one prime basis to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasisConverter {
    from: Vec<Modulus>,
    to: Vec<Modulus>,
    /// `[(D/q_i)^-1]_{q_i}` and its Shoup constant, per source prime.
    punctured_inv: Vec<(u64, u64)>,
    /// `(D/q_i) mod p_t`, laid out `[t * from.len() + i]`.
    punctured_mod_target: Vec<u64>,
}

/// Coefficients per block in the accumulation loop: large enough for the
/// inner loop to run long, small enough for the u128 accumulators to stay in
/// L1 cache.
const BLOCK: usize = 256;

impl BasisConverter {
    /// Constants for converting from `from` to `to` (all distinct primes).
    pub fn new(from: &[Modulus], to: &[Modulus]) -> Self {
        let mut punctured_inv = Vec::with_capacity(from.len());
        for (i, qi) in from.iter().enumerate() {
            let mut prod = 1u64;
            for (j, qj) in from.iter().enumerate() {
                if i != j {
                    prod = qi.mul(prod, qj.value() % qi.value());
                }
            }
            // The primes are distinct, so the punctured product is invertible.
            let inv = qi.inv(prod).unwrap_or(0);
            punctured_inv.push((inv, qi.shoup(inv)));
        }
        let mut punctured_mod_target = Vec::with_capacity(from.len() * to.len());
        for pt in to {
            for i in 0..from.len() {
                let mut prod = 1u64;
                for (j, qj) in from.iter().enumerate() {
                    if i != j {
                        prod = pt.mul(prod, qj.value() % pt.value());
                    }
                }
                punctured_mod_target.push(prod);
            }
        }
        Self { from: from.to_vec(), to: to.to_vec(), punctured_inv, punctured_mod_target }
    }

    /// Source primes.
    pub fn from(&self) -> &[Modulus] {
        &self.from
    }

    /// Target primes.
    pub fn to(&self) -> &[Modulus] {
        &self.to
    }

    /// First step: `y_i = x_i * (D/q_i)^-1 mod q_i`, for source limb `i`.
    pub fn scale_source_limb(&self, i: usize, input: &[u64], out: &mut [u64]) {
        let (w, ws) = self.punctured_inv[i];
        let qi = &self.from[i];
        for (o, &x) in out.iter_mut().zip(input) {
            *o = qi.mul_shoup(x, w, ws);
        }
    }

    /// Second step, for target limb `t`: `out = sum_i y_i * (D/q_i) mod p_t`.
    /// `scaled` holds the source limbs produced by `scale_source_limb`, each
    /// of length `n = out.len()`.
    pub fn accumulate_target_limb(&self, t: usize, scaled: &[u64], out: &mut [u64]) {
        let n = out.len();
        let s = self.from.len();
        let pt = &self.to[t];
        let consts = &self.punctured_mod_target[t * s..(t + 1) * s];
        let mut acc = [0u128; BLOCK];
        let mut start = 0;
        while start < n {
            let len = BLOCK.min(n - start);
            acc[..len].fill(0);
            for (i, &c) in consts.iter().enumerate() {
                let src = &scaled[i * n + start..i * n + start + len];
                for (a, &y) in acc[..len].iter_mut().zip(src) {
                    *a += y as u128 * c as u128;
                }
            }
            for (o, &a) in out[start..start + len].iter_mut().zip(&acc[..len]) {
                *o = pt.reduce_u128(a);
            }
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes_near;

    #[test]
    fn conversion_is_exact_up_to_multiples_of_the_source_product() {
        let from: Vec<Modulus> =
            ntt_primes_near(30, 16, 3, &[]).unwrap().into_iter().map(|q| Modulus::new(q).unwrap()).collect();
        let to: Vec<Modulus> = ntt_primes_near(40, 16, 2, &[]).unwrap().into_iter().map(|q| Modulus::new(q).unwrap()).collect();
        let conv = BasisConverter::new(&from, &to);
        let d: u128 = from.iter().map(|m| m.value() as u128).product();
        let xs: [u128; 4] = [0, 1, d - 1, d / 3 + 12345];
        let n = xs.len();
        let mut scaled = vec![0u64; from.len() * n];
        for (i, qi) in from.iter().enumerate() {
            let limb: Vec<u64> = xs.iter().map(|&x| (x % qi.value() as u128) as u64).collect();
            conv.scale_source_limb(i, &limb, &mut scaled[i * n..(i + 1) * n]);
        }
        for (t, pt) in to.iter().enumerate() {
            let mut out = vec![0u64; n];
            conv.accumulate_target_limb(t, &scaled, &mut out);
            for (k, &x) in xs.iter().enumerate() {
                let ok = (0..from.len() as u128).any(|e| ((x + e * d) % pt.value() as u128) as u64 == out[k]);
                assert!(ok, "target {t} value {x}");
            }
        }
    }
}
