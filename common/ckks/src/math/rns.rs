//! RNS basis conversion (fast base extension).
//!
//! For `x` given by residues `x_i` modulo the source primes `q_i` (product
//! `D`), the fast conversion computes, modulo each target prime `p`,
//! `sum_i [x_i * (D/q_i)^-1]_{q_i} * (D/q_i) mod p`, which equals `x + e*D`
//! for some `0 <= e < #sources`. Hybrid key switching tolerates the `e*D`
//! term (it vanishes against the gadget), and ModDown's error is small.

use super::dot::{dot_const, Reducer52};
use super::modulus::Modulus;

/// Precomputed constants to convert from one prime basis to another.
#[derive(Clone, Debug, PartialEq)]
pub struct BasisConverter {
    from: Vec<Modulus>,
    to: Vec<Modulus>,
    /// `[(D/q_i)^-1]_{q_i}` and its Shoup constant, per source prime.
    punctured_inv: Vec<(u64, u64)>,
    /// `(D/q_i) mod p_t`, laid out `[t * from.len() + i]`.
    punctured_mod_target: Vec<u64>,
    /// `(D/q_i) * 2^30 mod p_t` (for sources of 52 bits or more).
    punctured_mod_target_hi: Vec<u64>,
    /// `D mod p_t`.
    product_mod_target: Vec<u64>,
    /// `1 / q_i` in floating point, for the exact (centred) correction.
    inv_source_f64: Vec<f64>,
    /// Per source: whether its residues may reach 52 bits.
    wide_sources: Vec<bool>,
    /// Per target: reduction constants for the IFMA path.
    reducers: Vec<Reducer52>,
}

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
        let product_mod_target =
            to.iter().map(|pt| from.iter().fold(1u64, |acc, qj| pt.mul(acc, qj.value() % pt.value()))).collect();
        let inv_source_f64 = from.iter().map(|q| 1.0 / q.value() as f64).collect();
        let wide_sources = from.iter().map(|q| q.value() >> 52 != 0).collect();
        let punctured_mod_target_hi = punctured_mod_target
            .chunks(from.len().max(1))
            .zip(to)
            .flat_map(|(row, pt)| row.iter().map(move |&c| ((c as u128) << 30).rem_euclid(pt.value() as u128) as u64))
            .collect();
        let reducers = to.iter().map(Reducer52::new).collect();
        Self {
            from: from.to_vec(),
            to: to.to_vec(),
            punctured_inv,
            punctured_mod_target,
            punctured_mod_target_hi,
            product_mod_target,
            inv_source_f64,
            wide_sources,
            reducers,
        }
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
        let rows: Vec<&[u64]> = (0..self.from.len()).map(|i| &scaled[i * n..(i + 1) * n]).collect();
        self.accumulate_rows(t, &rows, None, out);
    }

    /// `out = sum_i rows[i] * (D/q_i) mod p_t`, minus `correction * D` when
    /// given (see [`centring_correction`](Self::centring_correction)).
    pub fn accumulate_rows(&self, t: usize, rows: &[&[u64]], correction: Option<&[u64]>, out: &mut [u64]) {
        let s = self.from.len();
        let pt = &self.to[t];
        let mut rows_all: Vec<&[u64]> = rows.to_vec();
        let mut consts = self.punctured_mod_target[t * s..(t + 1) * s].to_vec();
        let mut consts_hi = self.punctured_mod_target_hi[t * s..(t + 1) * s].to_vec();
        let mut wide = self.wide_sources.clone();
        if let Some(c) = correction {
            // The correction is one more row, with constant -D mod p_t.
            rows_all.push(c);
            consts.push(pt.neg(self.product_mod_target[t]));
            consts_hi.push(0);
            wide.push(false);
        }
        dot_const(pt, &self.reducers[t], &rows_all, &consts, &consts_hi, &wide, out);
    }

    /// Converts every target at once, a block of coefficients at a time so
    /// the source block stays in cache while all targets are computed.
    /// `outs[t]` receives target `t` (each of length `n`).
    pub fn convert_blocked(&self, scaled: &[u64], n: usize, correction: Option<&[u64]>, outs: Vec<&mut [u64]>) {
        use rayon::prelude::*;
        const BLOCK: usize = 1024;
        let block = BLOCK.min(n);
        let blocks = n.div_ceil(block);
        // Transpose [target][block] into [block][target] for parallelism
        // over blocks with disjoint writes.
        let mut by_block: Vec<Vec<(usize, &mut [u64])>> = (0..blocks).map(|_| Vec::with_capacity(outs.len())).collect();
        for (t, out) in outs.into_iter().enumerate() {
            for (b, chunk) in out.chunks_mut(block).enumerate() {
                by_block[b].push((t, chunk));
            }
        }
        by_block.into_par_iter().enumerate().for_each(|(b, targets)| {
            let range = b * block..((b + 1) * block).min(n);
            let rows: Vec<&[u64]> =
                (0..self.from.len()).map(|i| &scaled[i * n + range.start..i * n + range.end]).collect();
            let corr = correction.map(|c| &c[range.clone()]);
            for (t, out) in targets {
                self.accumulate_rows(t, &rows, corr, out);
            }
        });
    }
}

impl BasisConverter {
    /// For each coefficient, `v = round(sum_i y_i / q_i)`: the multiple of
    /// `D` to subtract so that the conversion yields the *centred*
    /// representative of `x mod D` exactly (instead of `x + e D` with a
    /// biased `e`). `scaled` is the output of `scale_source_limb` for every
    /// source limb. Exact unless `x mod D` lies within `2^-45 D` of `D/2`.
    pub fn centring_correction(&self, scaled: &[u64], n: usize) -> Vec<u64> {
        let mut v = vec![0f64; n];
        for (i, &inv) in self.inv_source_f64.iter().enumerate() {
            for (acc, &y) in v.iter_mut().zip(&scaled[i * n..(i + 1) * n]) {
                *acc += y as f64 * inv;
            }
        }
        v.into_iter().map(|x| x.round() as u64).collect()
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
        let to: Vec<Modulus> =
            ntt_primes_near(40, 16, 2, &[]).unwrap().into_iter().map(|q| Modulus::new(q).unwrap()).collect();
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
        let correction = conv.centring_correction(&scaled, n);
        for (t, pt) in to.iter().enumerate() {
            let mut out = vec![0u64; n];
            let rows: Vec<&[u64]> = (0..from.len()).map(|i| &scaled[i * n..(i + 1) * n]).collect();
            conv.accumulate_rows(t, &rows, Some(&correction), &mut out);
            for (k, &x) in xs.iter().enumerate() {
                let centred = if x > d / 2 { x as i128 - d as i128 } else { x as i128 };
                assert_eq!(out[k], pt.reduce_i128(centred), "centred target {t} value {x}");
            }
        }
    }
}
