//! RNS polynomials whose representation (coefficients or NTT evaluations)
//! is part of the type, so mixing domains does not compile.

use super::{pool, Basis, RingContext};
use std::marker::PhantomData;

/// A polynomial representation.
pub trait Domain: Copy + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Name used in errors and wire headers.
    const NAME: &'static str;
}

/// Coefficient representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coeff;
/// NTT (evaluation) representation, bit-reversed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ntt;

impl Domain for Coeff {
    const NAME: &'static str = "coefficient";
}
impl Domain for Ntt {
    const NAME: &'static str = "ntt";
}

/// An RNS polynomial: `basis.limbs()` limbs of `n` reduced words each.
/// Storage is recycled through the crate's buffer pool.
#[derive(PartialEq, Eq)]
pub struct Poly<D: Domain> {
    basis: Basis,
    n: usize,
    data: Vec<u64>,
    _domain: PhantomData<D>,
}

impl<D: Domain> std::fmt::Debug for Poly<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poly").field("domain", &D::NAME).field("basis", &self.basis).field("n", &self.n).finish()
    }
}

impl<D: Domain> Clone for Poly<D> {
    fn clone(&self) -> Self {
        Self { basis: self.basis, n: self.n, data: pool::take_copy(&self.data), _domain: PhantomData }
    }
}

impl<D: Domain> Drop for Poly<D> {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
}

impl<D: Domain> Poly<D> {
    /// The zero polynomial.
    pub fn zero(ctx: &RingContext, basis: Basis) -> Self {
        Self { basis, n: ctx.n(), data: pool::take_zeroed(basis.limbs() * ctx.n()), _domain: PhantomData }
    }

    /// A polynomial whose every limb the caller overwrites before reading.
    pub(crate) fn uninit(ctx: &RingContext, basis: Basis) -> Self {
        Self { basis, n: ctx.n(), data: pool::take(basis.limbs() * ctx.n()), _domain: PhantomData }
    }

    fn take_data(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.data)
    }

    /// The same polynomial in a buffer of exactly its size. Pooled buffers
    /// may be up to twice as large as asked for, which is right for
    /// short-lived values and wasteful for long-lived ones: keys compact
    /// themselves (at N = 2^16 this saved gigabytes of key memory).
    pub(crate) fn compacted(mut self) -> Self {
        if self.data.capacity() > self.data.len() {
            let exact = self.data.to_vec();
            pool::give(std::mem::replace(&mut self.data, exact));
        }
        self
    }

    /// Wraps limb data; the caller guarantees that every word is reduced
    /// modulo its limb's prime (decoders check it with [`Self::is_reduced`]).
    pub(crate) fn from_raw(basis: Basis, n: usize, data: Vec<u64>) -> Self {
        debug_assert_eq!(data.len(), basis.limbs() * n);
        Self { basis, n, data, _domain: PhantomData }
    }

    /// Whether every word is reduced modulo its limb's prime.
    pub fn is_reduced(&self, ctx: &RingContext) -> bool {
        self.data.chunks(self.n).enumerate().all(|(j, limb)| {
            let q = ctx.modulus_of(self.basis, j).value();
            limb.iter().all(|&x| x < q)
        })
    }

    /// The basis of the limbs.
    pub fn basis(&self) -> Basis {
        self.basis
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// All limbs, limb after limb.
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// All limbs, mutable.
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// One limb.
    pub fn limb(&self, j: usize) -> &[u64] {
        &self.data[j * self.n..(j + 1) * self.n]
    }

    /// One limb, mutable.
    pub fn limb_mut(&mut self, j: usize) -> &mut [u64] {
        &mut self.data[j * self.n..(j + 1) * self.n]
    }

    /// `self += other` (same basis).
    pub fn add_assign(&mut self, ctx: &RingContext, other: &Self) {
        debug_assert_eq!(self.basis, other.basis);
        ctx.backend().add(ctx, self.basis, &mut self.data, &other.data);
    }

    /// `self -= other` (same basis).
    pub fn sub_assign(&mut self, ctx: &RingContext, other: &Self) {
        debug_assert_eq!(self.basis, other.basis);
        ctx.backend().sub(ctx, self.basis, &mut self.data, &other.data);
    }

    /// `self = -self`.
    pub fn neg_assign(&mut self, ctx: &RingContext) {
        ctx.backend().neg(ctx, self.basis, &mut self.data);
    }

    /// `self * scalars[j]` on limb `j`, into a new polynomial (no copy of
    /// `self` first).
    pub fn times_scalars(&self, ctx: &RingContext, scalars: &[u64]) -> Self {
        Self::scalar_dot(ctx, self.basis, &[self], &[scalars])
    }

    /// `sum_r polys[r] * scalars[r][j]` on limb `j`, over `basis`: each
    /// polynomial may hold more chain limbs than `basis` (only the first
    /// are read, in place) but must not be over another basis's primes.
    pub fn scalar_dot(ctx: &RingContext, basis: Basis, polys: &[&Self], scalars: &[&[u64]]) -> Self {
        debug_assert!(polys
            .iter()
            .all(|p| p.basis.p == basis.p && p.basis.q >= basis.q && (basis.p == 0 || p.basis.q == basis.q)));
        debug_assert!(scalars.iter().all(|s| s.len() >= basis.limbs()));
        let mut out = Self::uninit(ctx, basis);
        let inputs: Vec<&[u64]> = polys.iter().map(|p| p.data()).collect();
        ctx.backend().scalar_dot(ctx, basis, &inputs, scalars, &mut out.data);
        out
    }

    /// Keeps the first `q` chain limbs (and no special limbs): drops levels.
    pub fn truncate_q(&mut self, q: usize) {
        debug_assert!(q <= self.basis.q);
        self.data.truncate(q * self.n);
        self.basis = Basis { q, p: 0 };
    }

    /// A copy restricted to the first `q` chain limbs and first `p` special
    /// limbs of this polynomial's basis.
    pub fn restricted(&self, basis: Basis) -> Self {
        debug_assert!(basis.q <= self.basis.q && basis.p <= self.basis.p);
        let mut data = pool::take(basis.limbs() * self.n);
        let q_len = basis.q * self.n;
        data[..q_len].copy_from_slice(&self.data[..q_len]);
        let p_start = self.basis.q * self.n;
        data[q_len..].copy_from_slice(&self.data[p_start..p_start + basis.p * self.n]);
        Self::from_raw(basis, self.n, data)
    }
}

impl Poly<Coeff> {
    /// Forward NTT of every limb.
    pub fn into_ntt(mut self, ctx: &RingContext) -> Poly<Ntt> {
        ctx.backend().forward_ntt(ctx, self.basis, &mut self.data, 0..self.basis.limbs());
        Poly::from_raw(self.basis, self.n, self.take_data())
    }

    /// `X -> X^g` for odd `g < 2N` (an even `g` is not an automorphism).
    pub fn automorphism(&self, ctx: &RingContext, g: usize) -> Self {
        assert!(g % 2 == 1 && g < 2 * ctx.n(), "Galois element {g} must be odd and below 2N");
        let mut out = Self::uninit(ctx, self.basis);
        ctx.backend().automorphism_coeff(ctx, self.basis, g, &self.data, &mut out.data);
        out
    }

    /// Polynomial from signed coefficients (each `|c| < 2^63`).
    pub fn from_signed(ctx: &RingContext, basis: Basis, coeffs: &[i64]) -> Self {
        use rayon::prelude::*;
        let mut p = Self::uninit(ctx, basis);
        let n = ctx.n();
        let max_abs = coeffs.iter().map(|c| c.unsigned_abs()).max().unwrap_or(0);
        p.data.par_chunks_mut(n).enumerate().for_each(|(j, limb)| {
            let m = ctx.modulus_of(basis, j);
            let q = m.value();
            if max_abs < q {
                // Small coefficients (secrets, errors): one conditional add.
                for (dst, &c) in limb.iter_mut().zip(coeffs) {
                    *dst = if c < 0 { (q as i64 + c) as u64 } else { c as u64 };
                }
            } else {
                for (dst, &c) in limb.iter_mut().zip(coeffs) {
                    *dst = m.reduce_i64(c);
                }
            }
        });
        p
    }
}

impl Poly<Ntt> {
    /// Inverse NTT of every limb.
    pub fn into_coeff(mut self, ctx: &RingContext) -> Poly<Coeff> {
        ctx.backend().inverse_ntt(ctx, self.basis, &mut self.data, 0..self.basis.limbs());
        Poly::from_raw(self.basis, self.n, self.take_data())
    }

    /// Coefficient-wise product with `other` (same basis).
    pub fn mul_assign(&mut self, ctx: &RingContext, other: &Self) {
        debug_assert_eq!(self.basis, other.basis);
        ctx.backend().mul(ctx, self.basis, &mut self.data, &other.data);
    }

    /// Coefficient-wise `self * other` into a new polynomial (no copy of
    /// `self` first).
    pub fn times(&self, ctx: &RingContext, other: &Self) -> Self {
        debug_assert_eq!(self.basis, other.basis);
        Self::dot(ctx, self.basis, &[self], &[other])
    }

    /// `self += a * b`.
    pub fn mul_add_assign(&mut self, ctx: &RingContext, a: &Self, b: &Self) {
        ctx.backend().mul_add(ctx, self.basis, &mut self.data, &a.data, &b.data);
    }

    /// `sum_r a[r] * b[r]` (coefficient-wise), over `basis`.
    pub fn dot(ctx: &RingContext, basis: Basis, a: &[&Self], b: &[&Self]) -> Self {
        let mut out = Self::uninit(ctx, basis);
        let ra: Vec<&[u64]> = a.iter().map(|p| p.data()).collect();
        let rb: Vec<&[u64]> = b.iter().map(|p| p.data()).collect();
        ctx.backend().dot_product(ctx, basis, &ra, &rb, &mut out.data);
        out
    }

    /// Adds `scalars[j]` to every evaluation of limb `j` (adds a constant
    /// polynomial).
    pub fn add_scalar_assign(&mut self, ctx: &RingContext, scalars: &[u64]) {
        ctx.backend().add_scalar(ctx, self.basis, &mut self.data, scalars);
    }

    /// `X -> X^g` as a permutation of evaluations (odd `g < 2N`).
    pub fn automorphism(&self, ctx: &RingContext, g: usize) -> Self {
        assert!(g % 2 == 1 && g < 2 * ctx.n(), "Galois element {g} must be odd and below 2N");
        let perm = ctx.automorphism_permutation(g);
        let mut out = Self::uninit(ctx, self.basis);
        ctx.backend().permute(ctx, self.basis, &perm, &self.data, &mut out.data);
        out
    }
}

impl<D: Domain> zeroize::Zeroize for Poly<D> {
    fn zeroize(&mut self) {
        self.data.zeroize();
    }
}
