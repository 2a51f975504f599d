//! The polynomial-arithmetic backend.
//!
//! Everything above the ring layer (encryption, evaluation, key switching,
//! bootstrapping, the operators) reaches limb data only through this trait,
//! so a device backend can replace the CPU one without touching them. Data
//! are laid out limb after limb (`limbs * n` words); a [`Basis`] says which
//! primes the limbs belong to.

use super::{Basis, RingContext};
use crate::math::BasisConverter;
use rayon::prelude::*;

/// Polynomial kernels over RNS limbs. All inputs are reduced (`< q`) and all
/// outputs are reduced.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and benchmark output.
    fn name(&self) -> &'static str;
    /// Forward NTT of every limb.
    fn forward_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64]);
    /// Inverse NTT of every limb.
    fn inverse_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64]);
    /// `acc += other`.
    fn add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]);
    /// `acc -= other`.
    fn sub(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]);
    /// `acc = other - acc`.
    fn sub_from(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]);
    /// `acc = -acc`.
    fn neg(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64]);
    /// Coefficient-wise `acc *= other`.
    fn mul(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]);
    /// Coefficient-wise `acc += a * b`.
    fn mul_add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], a: &[u64], b: &[u64]);
    /// `acc *= scalars[limb]` (one reduced scalar per limb).
    fn mul_scalar(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], scalars: &[u64]);
    /// `acc += scalars[limb]` on every coefficient of each limb.
    fn add_scalar(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], scalars: &[u64]);
    /// `out[i] = input[perm[i]]` in every limb (automorphism in NTT form).
    fn permute(&self, ctx: &RingContext, basis: Basis, perm: &[u32], input: &[u64], out: &mut [u64]);
    /// `out(X) = input(X^g)` in coefficient form (`g` odd, `< 2n`).
    fn automorphism_coeff(&self, ctx: &RingContext, basis: Basis, g: usize, input: &[u64], out: &mut [u64]);
    /// Fast base conversion of `input` (the converter's source limbs, in
    /// coefficient form) into `out` (its target limbs).
    fn basis_convert(&self, ctx: &RingContext, conv: &BasisConverter, input: &[u64], out: &mut [u64]);
}

/// The CPU backend: rayon over limbs, IFMA NTT where available.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    fn zip_limbs(
        ctx: &RingContext,
        basis: Basis,
        acc: &mut [u64],
        other: &[u64],
        f: impl Fn(&crate::math::Modulus, &mut u64, u64) + Sync,
    ) {
        let n = ctx.n();
        acc.par_chunks_mut(n).zip(other.par_chunks(n)).enumerate().for_each(|(j, (a, b))| {
            let m = ctx.modulus_of(basis, j);
            for (x, &y) in a.iter_mut().zip(b) {
                f(m, x, y);
            }
        });
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn forward_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64]) {
        data.par_chunks_mut(ctx.n()).enumerate().for_each(|(j, limb)| ctx.ntt_of(basis, j).forward(limb));
    }

    fn inverse_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64]) {
        data.par_chunks_mut(ctx.n()).enumerate().for_each(|(j, limb)| ctx.ntt_of(basis, j).inverse(limb));
    }

    fn add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, |m, x, y| *x = m.add(*x, y));
    }

    fn sub(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, |m, x, y| *x = m.sub(*x, y));
    }

    fn sub_from(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, |m, x, y| *x = m.sub(y, *x));
    }

    fn neg(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).enumerate().for_each(|(j, a)| {
            let m = ctx.modulus_of(basis, j);
            a.iter_mut().for_each(|x| *x = m.neg(*x));
        });
    }

    fn mul(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, |m, x, y| *x = m.mul(*x, y));
    }

    fn mul_add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], a: &[u64], b: &[u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).zip(a.par_chunks(n).zip(b.par_chunks(n))).enumerate().for_each(|(j, (c, (x, y)))| {
            let m = ctx.modulus_of(basis, j);
            for ((c, &x), &y) in c.iter_mut().zip(x).zip(y) {
                *c = m.reduce_u128(x as u128 * y as u128 + *c as u128);
            }
        });
    }

    fn mul_scalar(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], scalars: &[u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).enumerate().for_each(|(j, a)| {
            let m = ctx.modulus_of(basis, j);
            let (w, ws) = (scalars[j], m.shoup(scalars[j]));
            a.iter_mut().for_each(|x| *x = m.mul_shoup(*x, w, ws));
        });
    }

    fn add_scalar(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], scalars: &[u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).enumerate().for_each(|(j, a)| {
            let m = ctx.modulus_of(basis, j);
            a.iter_mut().for_each(|x| *x = m.add(*x, scalars[j]));
        });
    }

    fn permute(&self, ctx: &RingContext, _basis: Basis, perm: &[u32], input: &[u64], out: &mut [u64]) {
        let n = ctx.n();
        out.par_chunks_mut(n).zip(input.par_chunks(n)).for_each(|(o, i)| {
            for (dst, &p) in o.iter_mut().zip(perm) {
                *dst = i[p as usize];
            }
        });
    }

    fn automorphism_coeff(&self, ctx: &RingContext, basis: Basis, g: usize, input: &[u64], out: &mut [u64]) {
        let n = ctx.n();
        let mask = 2 * n - 1;
        out.par_chunks_mut(n).zip(input.par_chunks(n)).enumerate().for_each(|(j, (o, i))| {
            let m = ctx.modulus_of(basis, j);
            let mut idx = 0usize;
            for &c in i.iter() {
                if idx < n {
                    o[idx] = c;
                } else {
                    o[idx - n] = m.neg(c);
                }
                idx = (idx + g) & mask;
            }
        });
    }

    fn basis_convert(&self, ctx: &RingContext, conv: &BasisConverter, input: &[u64], out: &mut [u64]) {
        let n = ctx.n();
        let mut scaled = vec![0u64; input.len()];
        scaled
            .par_chunks_mut(n)
            .zip(input.par_chunks(n))
            .enumerate()
            .for_each(|(i, (s, x))| conv.scale_source_limb(i, x, s));
        out.par_chunks_mut(n).enumerate().for_each(|(t, o)| conv.accumulate_target_limb(t, &scaled, o));
    }
}
