//! The polynomial-arithmetic backend.
//!
//! Everything above the ring layer (encryption, evaluation, key switching,
//! bootstrapping, the operators) reaches limb data only through this trait,
//! so a device backend can replace the CPU one without touching them. Data
//! are laid out limb after limb (`limbs * n` words); a [`Basis`] says which
//! primes the limbs belong to.

use super::pool::Scratch;
use super::{Basis, RingContext};
use crate::math::dot::{
    dot_const, dot_elementwise, dot_elementwise_pair, reduce_sub, sub_mul_const, sub_mul_const_to, MAX_ROWS,
};
use crate::math::lanes;
use crate::math::BasisConverter;
use rayon::prelude::*;
use std::ops::Range;

/// Polynomial kernels over RNS limbs. All inputs are reduced (`< q`) and all
/// outputs are reduced.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for logs and benchmark output.
    fn name(&self) -> &'static str;
    /// Forward NTT of limbs `limbs` of the polynomial `data`.
    fn forward_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64], limbs: Range<usize>);
    /// Forward NTT of a polynomial in `X^(n / m)` given compactly: limb
    /// `j` of `compact` holds the `m` coefficients of `X^(k n / m)`
    /// (`compact.len() = limbs * m`, `m` a power of two dividing `n`);
    /// `out` (`limbs * n` words) receives the full NTT form.
    fn forward_ntt_sparse(&self, ctx: &RingContext, basis: Basis, compact: &[u64], out: &mut [u64]);
    /// Inverse NTT of limbs `limbs` of the polynomial `data`.
    fn inverse_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64], limbs: Range<usize>);
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
    /// Coefficient-wise `out = sum_r a[r] * b[r]` (polynomials over `basis`;
    /// like [`scalar_dot`](Self::scalar_dot)'s, an input may hold more chain
    /// limbs, of which only the first are read).
    fn dot_product(&self, ctx: &RingContext, basis: Basis, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]);
    /// `out = sum_r inputs[r] * scalars[r][limb]` on every coefficient of
    /// each limb of `basis` (a linear combination with constant
    /// coefficients, one residue per limb). An input may hold more chain
    /// limbs than `basis` (a ciphertext above the output's level): only its
    /// first `basis.limbs()` limbs are read, in place.
    fn scalar_dot(&self, ctx: &RingContext, basis: Basis, inputs: &[&[u64]], scalars: &[&[u64]], out: &mut [u64]);
    /// `acc += scalars[limb]` on every coefficient of each limb.
    fn add_scalar(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], scalars: &[u64]);
    /// `out[i] = input[perm[i]]` in every limb (automorphism in NTT form).
    fn permute(&self, ctx: &RingContext, basis: Basis, perm: &[u32], input: &[u64], out: &mut [u64]);
    /// `out(X) = input(X^g)` in coefficient form (`g` odd, `< 2n`).
    fn automorphism_coeff(&self, ctx: &RingContext, basis: Basis, g: usize, input: &[u64], out: &mut [u64]);
    /// ModUp of one key-switching digit. `coeff_digit` holds the digit's
    /// limbs in coefficient form and `ntt_digit` the same limbs in NTT form;
    /// `out` (basis `basis` = chain limbs of the level plus all special
    /// limbs) receives the digit extended to every limb, in NTT form: limbs
    /// `digit` copied from `ntt_digit`, the others converted by `conv`
    /// (whose targets are the limbs outside `digit`, in order).
    fn mod_up_digit(
        &self,
        ctx: &RingContext,
        basis: Basis,
        conv: &BasisConverter,
        digit: Range<usize>,
        coeff_digit: &[u64],
        ntt_digit: &[u64],
        out: &mut [u64],
    );
    /// Key-switching inner products `out_b = sum_j digits[j] * keys_b[j]`
    /// and `out_a = sum_j digits[j] * keys_a[j]` over `basis`; each key is
    /// given as its chain part (at least `basis.q` limbs, the first used)
    /// and its special part (`basis.p` limbs), the `a` halves held or as
    /// their seed.
    fn key_inner_product(
        &self,
        ctx: &RingContext,
        basis: Basis,
        digits: &[&[u64]],
        keys_b: &[KeyLimbs<'_>],
        keys_a: UniformHalves<'_>,
        out_b: &mut [u64],
        out_a: &mut [u64],
    );
    /// ModDown in NTT form: `data` over `basis` (chain limbs plus special
    /// limbs) becomes `round(data / P)` (exactly, with a centred
    /// conversion of `data mod P`) on its chain limbs
    /// (written to the first `basis.q` limbs of `data`). `conv` converts the
    /// special primes to (a prefix of) the chain; `p_inv[i] = P^-1 mod q_i`.
    fn mod_down(&self, ctx: &RingContext, basis: Basis, conv: &BasisConverter, p_inv: &[u64], data: &mut [u64]);
    /// Divides an NTT-form polynomial `input` over `basis` (chain limbs only)
    /// by its last prime with rounding, into `out` (`basis.q - 1` limbs).
    /// `last_inv[i] = q_last^-1 mod q_i`.
    fn rescale_by_last(&self, ctx: &RingContext, basis: Basis, last_inv: &[u64], input: &[u64], out: &mut [u64]);
    /// ModDown and rescale in one rounding, in NTT form: `data` over
    /// `basis` (chain limbs `0..=l` plus the special limbs) holds `x`,
    /// `add` (chain limbs `0..=l`) holds `d`; writes
    /// `round((x + P d) / (P q_l))` (exactly, with a centred conversion of
    /// the remainder mod `P q_l`) to `out` (limbs `0..l`). `data`'s limbs
    /// from `l` on are clobbered.
    fn mod_down_rescale(
        &self,
        ctx: &RingContext,
        basis: Basis,
        tables: &ModDownRescale,
        data: &mut [u64],
        add: &[u64],
        out: &mut [u64],
    );
}

/// Constants for [`Backend::mod_down_rescale`] at one level `l >= 1`.
#[derive(Debug, Clone)]
pub struct ModDownRescale {
    /// `[q_l, p_0, ..., p_{k-1}]` to `q_0 .. q_{l-1}`.
    pub conv: BasisConverter,
    /// `(P q_l)^-1 mod q_i` for `i < l`.
    pub inv_p_last: Vec<u64>,
    /// `q_l^-1 mod q_i` for `i < l`.
    pub inv_last: Vec<u64>,
    /// `P mod q_l`.
    pub p_mod_last: u64,
}

/// Writes one digit's uniform residues for one limb: `(digit, index,
/// prime, limb)`, see [`UniformHalves::Sampled`].
pub type LimbSampler<'a> = dyn Fn(usize, usize, u64, &mut [u64]) + Sync + 'a;

/// The uniform (`a`) halves of a switching key's digits, as a key-switching
/// inner product reads them.
#[derive(Clone, Copy)]
pub enum UniformHalves<'a> {
    /// Held in memory, one polynomial per digit.
    Held(&'a [KeyLimbs<'a>]),
    /// Sampled by `fill(digit, index, prime, limb)`, which writes the
    /// digit's residues modulo `prime`, number `index` of the whole chain
    /// (special primes after the `q` ones), into `limb` (a lean key regenerating its halves
    /// from its seed). Limb by limb, into a pooled buffer, right before the
    /// inner product reads that limb, rather than whole polynomials up
    /// front (at 2^16 and 31 limbs, 7 digits are 110 MB written to fresh
    /// memory and read back).
    Sampled(&'a LimbSampler<'a>),
}

impl std::fmt::Debug for UniformHalves<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UniformHalves::Held(keys) => f.debug_tuple("Held").field(&keys.len()).finish(),
            UniformHalves::Sampled(_) => f.write_str("Sampled"),
        }
    }
}

/// A key polynomial's limbs split into its chain part and special part.
#[derive(Debug, Clone, Copy)]
pub struct KeyLimbs<'a> {
    /// Chain limbs (at least as many as the basis uses).
    pub q: &'a [u64],
    /// Special limbs.
    pub p: &'a [u64],
}

impl<'a> KeyLimbs<'a> {
    /// Limb `j` of a basis with `q` chain limbs.
    pub fn limb(&self, j: usize, q: usize, n: usize) -> &'a [u64] {
        if j < q {
            &self.q[j * n..(j + 1) * n]
        } else {
            &self.p[(j - q) * n..(j - q + 1) * n]
        }
    }
}

/// Coefficients per block for element-wise kernels working in place.
const BLOCK: usize = 512;

/// The CPU backend: rayon over limbs, IFMA NTT where available.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    fn zip_limbs(
        ctx: &RingContext,
        basis: Basis,
        acc: &mut [u64],
        other: &[u64],
        f: impl Fn(&crate::math::Modulus, &mut [u64], &[u64]) + Sync,
    ) {
        let n = ctx.n();
        acc.par_chunks_mut(n).zip(other.par_chunks(n)).enumerate().for_each(|(j, (a, b))| {
            f(ctx.modulus_of(basis, j), a, b);
        });
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn forward_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64], limbs: Range<usize>) {
        let n = ctx.n();
        let start = limbs.start;
        data[limbs.start * n..limbs.end * n]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(j, limb)| ctx.ntt_of(basis, start + j).forward(limb));
    }

    fn forward_ntt_sparse(&self, ctx: &RingContext, basis: Basis, compact: &[u64], out: &mut [u64]) {
        let n = ctx.n();
        let limbs = out.len() / n;
        let m = compact.len() / limbs.max(1);
        assert!(
            m > 0 && n.is_multiple_of(m),
            "sparse NTT of {m} coefficients per limb does not divide the ring degree {n}"
        );
        let gap = n / m;
        out.par_chunks_mut(n).zip(compact.par_chunks(m)).enumerate().for_each(|(j, (limb, coeffs))| {
            let values = &mut limb[..m];
            values.copy_from_slice(coeffs);
            ctx.ntt_of(basis, j).forward_sparse(values);
            // Each value repeats `gap` times; filling from the end never
            // overwrites a value not yet read (`i gap >= i`).
            for i in (0..m).rev() {
                let v = limb[i];
                limb[i * gap..(i + 1) * gap].fill(v);
            }
        });
    }

    fn inverse_ntt(&self, ctx: &RingContext, basis: Basis, data: &mut [u64], limbs: Range<usize>) {
        let n = ctx.n();
        let start = limbs.start;
        data[limbs.start * n..limbs.end * n]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(j, limb)| ctx.ntt_of(basis, start + j).inverse(limb));
    }

    fn add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, lanes::add_assign);
    }

    fn sub(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, lanes::sub_assign);
    }

    fn sub_from(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        Self::zip_limbs(ctx, basis, acc, other, |m, a, b| a.iter_mut().zip(b).for_each(|(x, &y)| *x = m.sub(y, *x)));
    }

    fn neg(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).enumerate().for_each(|(j, a)| {
            let m = ctx.modulus_of(basis, j);
            a.iter_mut().for_each(|x| *x = m.neg(*x));
        });
    }

    fn mul(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], other: &[u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).zip(other.par_chunks(n)).enumerate().for_each(|(j, (a, b))| {
            let (m, r) = (ctx.modulus_of(basis, j), ctx.reducer_of(basis, j));
            let mut buf = [0u64; BLOCK];
            for (a, b) in a.chunks_mut(BLOCK).zip(b.chunks(BLOCK)) {
                let len = a.len();
                buf[..len].copy_from_slice(a);
                dot_elementwise(m, r, &[&buf[..len]], &[b], a);
            }
        });
    }

    fn mul_add(&self, ctx: &RingContext, basis: Basis, acc: &mut [u64], a: &[u64], b: &[u64]) {
        let n = ctx.n();
        acc.par_chunks_mut(n).zip(a.par_chunks(n).zip(b.par_chunks(n))).enumerate().for_each(|(j, (c, (x, y)))| {
            let (m, r) = (ctx.modulus_of(basis, j), ctx.reducer_of(basis, j));
            let mut buf = [0u64; BLOCK];
            for ((c, x), y) in c.chunks_mut(BLOCK).zip(x.chunks(BLOCK)).zip(y.chunks(BLOCK)) {
                let len = c.len();
                dot_elementwise(m, r, &[x], &[y], &mut buf[..len]);
                for (c, &p) in c.iter_mut().zip(&buf[..len]) {
                    *c = m.add(*c, p);
                }
            }
        });
    }

    fn dot_product(&self, ctx: &RingContext, basis: Basis, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]) {
        let n = ctx.n();
        out.par_chunks_mut(n).enumerate().for_each(|(j, o)| {
            let (m, r) = (ctx.modulus_of(basis, j), ctx.reducer_of(basis, j));
            let ra: Vec<&[u64]> = a.iter().map(|p| &p[j * n..(j + 1) * n]).collect();
            let rb: Vec<&[u64]> = b.iter().map(|p| &p[j * n..(j + 1) * n]).collect();
            dot_elementwise(m, r, &ra, &rb, o);
        });
    }

    fn scalar_dot(&self, ctx: &RingContext, basis: Basis, inputs: &[&[u64]], scalars: &[&[u64]], out: &mut [u64]) {
        debug_assert_eq!(inputs.len(), scalars.len());
        let n = ctx.n();
        out.par_chunks_mut(n).enumerate().for_each(|(j, o)| {
            let (m, r) = (ctx.modulus_of(basis, j), ctx.reducer_of(basis, j));
            // Reduced residues of a prime of 52 bits or more may reach 52 bits.
            let wide_rows = m.value() >= 1 << 52;
            let two30 = m.reduce_u128(1 << 30);
            let mut first = true;
            for (rows, consts) in inputs.chunks(MAX_ROWS).zip(scalars.chunks(MAX_ROWS)) {
                let rows: Vec<&[u64]> = rows.iter().map(|x| &x[j * n..(j + 1) * n]).collect();
                let c: Vec<u64> = consts.iter().map(|c| c[j]).collect();
                let c_hi: Vec<u64> = c.iter().map(|&c| m.mul(c, two30)).collect();
                let wide = vec![wide_rows; rows.len()];
                if first {
                    dot_const(m, r, &rows, &c, &c_hi, &wide, o);
                    first = false;
                } else {
                    let mut part = vec![0u64; n];
                    dot_const(m, r, &rows, &c, &c_hi, &wide, &mut part);
                    o.iter_mut().zip(&part).for_each(|(o, &p)| *o = m.add(*o, p));
                }
            }
            if first {
                o.fill(0);
            }
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

    fn mod_up_digit(
        &self,
        ctx: &RingContext,
        basis: Basis,
        conv: &BasisConverter,
        digit: Range<usize>,
        coeff_digit: &[u64],
        ntt_digit: &[u64],
        out: &mut [u64],
    ) {
        let n = ctx.n();
        let scaled = scale_sources(n, conv, coeff_digit);
        let (digit_start, digit_end) = (digit.start, digit.end);
        out[digit_start * n..digit_end * n].copy_from_slice(ntt_digit);
        let (head, rest) = out.split_at_mut(digit_start * n);
        let tail = &mut rest[(digit_end - digit_start) * n..];
        let targets: Vec<&mut [u64]> = head.chunks_mut(n).chain(tail.chunks_mut(n)).collect();
        conv.convert_blocked(&scaled, n, None, targets);
        let (head, rest) = out.split_at_mut(digit_start * n);
        let tail = &mut rest[(digit_end - digit_start) * n..];
        head.par_chunks_mut(n).enumerate().for_each(|(j, o)| ctx.ntt_of(basis, j).forward(o));
        tail.par_chunks_mut(n).enumerate().for_each(|(j, o)| ctx.ntt_of(basis, digit_end + j).forward(o));
    }

    fn key_inner_product(
        &self,
        ctx: &RingContext,
        basis: Basis,
        digits: &[&[u64]],
        keys_b: &[KeyLimbs<'_>],
        keys_a: UniformHalves<'_>,
        out_b: &mut [u64],
        out_a: &mut [u64],
    ) {
        let n = ctx.n();
        out_b.par_chunks_mut(n).zip(out_a.par_chunks_mut(n)).enumerate().for_each(|(j, (ob, oa))| {
            let (m, r) = (ctx.modulus_of(basis, j), ctx.reducer_of(basis, j));
            let d: Vec<&[u64]> = digits.iter().map(|x| &x[j * n..(j + 1) * n]).collect();
            let kb: Vec<&[u64]> = keys_b.iter().map(|k| k.limb(j, basis.q, n)).collect();
            match keys_a {
                UniformHalves::Held(keys_a) => {
                    let ka: Vec<&[u64]> = keys_a.iter().map(|k| k.limb(j, basis.q, n)).collect();
                    dot_elementwise_pair(m, r, &d, &kb, &ka, ob, oa);
                }
                UniformHalves::Sampled(fill) => {
                    let prime = ctx.chain_index_of(basis, j);
                    let mut sampled = Scratch::new(digits.len() * n);
                    for (digit, limb) in sampled.chunks_mut(n).enumerate() {
                        fill(digit, prime, m.value(), limb);
                    }
                    let ka: Vec<&[u64]> = sampled.chunks(n).collect();
                    dot_elementwise_pair(m, r, &d, &kb, &ka, ob, oa);
                }
            }
        });
    }

    fn mod_down(&self, ctx: &RingContext, basis: Basis, conv: &BasisConverter, p_inv: &[u64], data: &mut [u64]) {
        let n = ctx.n();
        let q_limbs = basis.q;
        let (chain, special) = data.split_at_mut(q_limbs * n);
        // The special limbs go to coefficient form (they are discarded after).
        special.par_chunks_mut(n).enumerate().for_each(|(j, limb)| ctx.ntt_of(basis, q_limbs + j).inverse(limb));
        let scaled = scale_sources(n, conv, special);
        // Exact centred conversion: the result is round(x / P) with no bias
        // (a biased error times s would concentrate in low-frequency slots).
        let correction = conv.centring_correction(&scaled, n);
        let mut converted = Scratch::new(q_limbs * n);
        conv.convert_blocked(&scaled, n, Some(&correction), converted.chunks_mut(n).collect());
        chain.par_chunks_mut(n).zip(converted.par_chunks_mut(n)).enumerate().for_each(|(i, (x, t))| {
            ctx.ntt_of(basis, i).forward(t);
            sub_mul_const(ctx.modulus_of(basis, i), x, t, p_inv[i]);
        });
    }

    fn rescale_by_last(&self, ctx: &RingContext, basis: Basis, last_inv: &[u64], input: &[u64], out: &mut [u64]) {
        let n = ctx.n();
        let last = basis.q - 1;
        let q_last = *ctx.modulus_of(basis, last);
        let mut last_limb = Scratch::new(n);
        last_limb.copy_from_slice(&input[last * n..(last + 1) * n]);
        ctx.ntt_of(basis, last).inverse(&mut last_limb);
        // Round to nearest: divide (x + h) and correct by h below.
        let h = q_last.value() >> 1;
        last_limb.iter_mut().for_each(|x| *x = q_last.add(*x, h));
        let last_limb = &*last_limb;
        out.par_chunks_mut(n).zip(input.par_chunks(n)).enumerate().for_each(|(i, (o, x))| {
            let m = ctx.modulus_of(basis, i);
            let mut t = Scratch::new(n);
            reduce_sub(m, last_limb, q_last.value() >> 52 == 0, m.reduce(h), &mut t);
            ctx.ntt_of(basis, i).forward(&mut t);
            sub_mul_const_to(m, x, &t, last_inv[i], o);
        });
    }

    fn mod_down_rescale(
        &self,
        ctx: &RingContext,
        basis: Basis,
        tables: &ModDownRescale,
        data: &mut [u64],
        add: &[u64],
        out: &mut [u64],
    ) {
        let n = ctx.n();
        let last = basis.q - 1;
        let (chain, special) = data.split_at_mut(basis.q * n);
        let (kept, top) = chain.split_at_mut(last * n);
        // The sources of the conversion: x + P d mod q_l, then the special
        // limbs (P d vanishes there), all in coefficient form.
        let m_last = ctx.modulus_of(basis, last);
        let wide_last = m_last.value() >> 52 != 0;
        let mut last_limb = Scratch::new(n);
        dot_const(
            m_last,
            ctx.reducer_of(basis, last),
            &[&*top, &add[last * n..(last + 1) * n]],
            &[1, tables.p_mod_last],
            &[m_last.reduce(1 << 30), m_last.mul(tables.p_mod_last, m_last.reduce(1 << 30))],
            &[wide_last, wide_last],
            &mut last_limb,
        );
        rayon::join(
            || ctx.ntt_of(basis, last).inverse(&mut last_limb),
            || special.par_chunks_mut(n).enumerate().for_each(|(j, limb)| ctx.ntt_of(basis, basis.q + j).inverse(limb)),
        );
        let mut scaled = Scratch::new((basis.p + 1) * n);
        scaled.par_chunks_mut(n).enumerate().for_each(|(j, s)| {
            let source = if j == 0 { &*last_limb } else { &special[(j - 1) * n..j * n] };
            tables.conv.scale_source_limb(j, source, s);
        });
        let correction = tables.conv.centring_correction(&scaled, n);
        let mut converted = Scratch::new(last * n);
        tables.conv.convert_blocked(&scaled, n, Some(&correction), converted.chunks_mut(n).collect());
        // out = (x - t) (P q_l)^-1 + d q_l^-1 (t: the remainder's residue).
        out.par_chunks_mut(n).zip(converted.par_chunks_mut(n)).zip(kept.par_chunks(n)).enumerate().for_each(
            |(i, ((o, t), x))| {
                ctx.ntt_of(basis, i).forward(t);
                let m = ctx.modulus_of(basis, i);
                let (c, c_last) = (tables.inv_p_last[i], tables.inv_last[i]);
                let hi = |w: u64| m.mul(w, m.reduce(1 << 30));
                let wide = m.value() >> 52 != 0;
                dot_const(
                    m,
                    ctx.reducer_of(basis, i),
                    &[x, &*t, &add[i * n..(i + 1) * n]],
                    &[c, m.neg(c), c_last],
                    &[hi(c), hi(m.neg(c)), hi(c_last)],
                    &[wide; 3],
                    o,
                );
            },
        );
    }
}

/// First step of a fast base conversion for all source limbs.
fn scale_sources(n: usize, conv: &BasisConverter, sources: &[u64]) -> Scratch {
    let mut scaled = Scratch::new(sources.len());
    scaled
        .par_chunks_mut(n)
        .zip(sources.par_chunks(n))
        .enumerate()
        .for_each(|(i, (s, x))| conv.scale_source_limb(i, x, s));
    scaled
}
