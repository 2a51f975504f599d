//! Modular dot products over coefficient vectors:
//! `out[c] = sum_r rows[r][c] * consts[r] mod t` (fixed constants per row),
//! and `out[c] = sum_r a_r[c] * b_r[c] mod t` (element-wise products).
//!
//! These are the inner loops of basis conversion, key switching and
//! ciphertext products. With AVX-512 IFMA and `t < 2^50` they run eight
//! coefficients at a time: each product is accumulated exactly as a 52-bit
//! low half and a 52-bit high half, then reduced once. Inputs may be up to
//! 61 bits: values of 52 bits or more are split into 30-bit halves on the
//! fly. The portable path gives identical results (property-tested).

use super::modulus::Modulus;
use super::ntt::{ifma_available, IFMA_MODULUS_LIMIT};

/// Most rows one call may accumulate (keeps the 52-bit halves below 2^60).
pub const MAX_ROWS: usize = 128;

/// Precomputed constants to reduce `hi * 2^52 + lo` modulo `t < 2^50`,
/// and three 52-bit columns `c0 + c1 2^52 + c2 2^104` modulo a wide
/// `2^50 <= t < 2^61` (64-bit Shoup constants of `2^52` and `2^104`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reducer52 {
    t: u64,
    r52: u64,
    r52_shoup: u64,
    r104: u64,
    r104_shoup: u64,
    one_shoup: u64,
    r52_shoup64: u64,
    r104_shoup64: u64,
}

impl Reducer52 {
    /// Constants for `t` (must be below 2^50 for the IFMA path).
    pub fn new(t: &Modulus) -> Self {
        let tv = t.value();
        let shoup52 = |w: u64| (((w as u128) << 52) / tv as u128) as u64;
        let r52 = ((1u128 << 52) % tv as u128) as u64;
        let r104 = ((1u128 << 104) % tv as u128) as u64;
        let shoup64 = |w: u64| (((w as u128) << 64) / tv as u128) as u64;
        Self {
            t: tv,
            r52,
            r52_shoup: shoup52(r52),
            r104,
            r104_shoup: shoup52(r104),
            one_shoup: shoup52(1),
            r52_shoup64: shoup64(r52),
            r104_shoup64: shoup64(r104),
        }
    }
}

/// Whether the IFMA kernels apply to modulus `t`.
pub fn ifma_applies(t: &Modulus) -> bool {
    t.value() < IFMA_MODULUS_LIMIT && ifma_available()
}

/// Moduli up to this bound (exclusive) have the wide IFMA kernels.
pub const WIDE_MODULUS_LIMIT: u64 = 1 << 61;

/// Whether the wide IFMA kernels apply to modulus `t` (`2^50 <= t < 2^61`:
/// operands split at bit 52, products accumulated in three 52-bit
/// columns, one reduction with emulated 64-bit Shoup products at the end).
pub fn wide_ifma_applies(t: &Modulus) -> bool {
    (IFMA_MODULUS_LIMIT..WIDE_MODULUS_LIMIT).contains(&t.value()) && ifma_available()
}

/// `out[c] = sum_r rows[r][c] * consts[r] mod t`, with `consts[r] < t`;
/// `wide[r]` says whether row `r` may hold values of 52 bits or more (up to
/// 61 bits), otherwise its values must be below 2^52. `reducer` must be
/// built for `t`.
/// `consts_hi[r]` must be `consts[r] * 2^30 mod t` (used for wide rows).
pub fn dot_const(
    t: &Modulus,
    reducer: &Reducer52,
    rows: &[&[u64]],
    consts: &[u64],
    consts_hi: &[u64],
    wide: &[bool],
    out: &mut [u64],
) {
    debug_assert_eq!(rows.len(), consts.len());
    debug_assert!(rows.len() <= MAX_ROWS);
    #[cfg(target_arch = "x86_64")]
    if ifma_applies(t)
        && out.len().is_multiple_of(8)
        && rows.len() <= MAX_ROWS
        && rows.iter().all(|r| r.len() >= out.len())
    {
        // SAFETY: IFMA is available, t < 2^50, the length is a multiple of
        // 8 and every row is at least out.len() long.
        unsafe { ifma::dot_const(reducer, rows, consts, consts_hi, wide, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide_ifma_applies(t)
        && out.len().is_multiple_of(8)
        && rows.len() <= MAX_ROWS
        && rows.iter().all(|r| r.len() >= out.len())
    {
        // SAFETY: IFMA is available, 2^50 <= t < 2^61, the length is a
        // multiple of 8 and every row is at least out.len() long.
        unsafe { ifma::wide::dot_const(reducer, rows, consts, wide, out) };
        return;
    }
    let _ = (reducer, wide, consts_hi);
    dot_const_portable(t, rows, consts, out);
}

/// Portable reference for [`dot_const`].
pub fn dot_const_portable(t: &Modulus, rows: &[&[u64]], consts: &[u64], out: &mut [u64]) {
    for (c, o) in out.iter_mut().enumerate() {
        let mut acc: u128 = 0;
        for (r, row) in rows.iter().enumerate() {
            acc += row[c] as u128 * consts[r] as u128;
            if r % 32 == 31 {
                acc = t.reduce_u128(acc) as u128;
            }
        }
        *o = t.reduce_u128(acc);
    }
}

/// `out[c] = sum_r a[r][c] * b[r][c] mod t`, with all inputs `< t`.
pub fn dot_elementwise(t: &Modulus, reducer: &Reducer52, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]) {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if ifma_applies(t)
        && out.len().is_multiple_of(8)
        && a.len() <= MAX_ROWS
        && a.iter().chain(b).all(|r| r.len() >= out.len())
    {
        // SAFETY: as in `dot_const`; inputs are below t < 2^50.
        unsafe { ifma::dot_elementwise(reducer, a, b, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide_ifma_applies(t)
        && out.len().is_multiple_of(8)
        && a.len() <= MAX_ROWS
        && a.iter().chain(b).all(|r| r.len() >= out.len())
    {
        // SAFETY: as above, for 2^50 <= t < 2^61; inputs are below t.
        unsafe { ifma::wide::dot_elementwise(reducer, a, b, out) };
        return;
    }
    let _ = reducer;
    dot_elementwise_portable(t, a, b, out);
}

/// Two dot products sharing their left operands:
/// `out_b = sum_r a[r] * b[r]` and `out_c = sum_r a[r] * c[r]` (mod t),
/// reading each `a[r]` once (key switching's `b` and `a` halves).
pub fn dot_elementwise_pair(
    t: &Modulus,
    reducer: &Reducer52,
    a: &[&[u64]],
    b: &[&[u64]],
    c: &[&[u64]],
    out_b: &mut [u64],
    out_c: &mut [u64],
) {
    #[cfg(target_arch = "x86_64")]
    if ifma_applies(t)
        && out_b.len().is_multiple_of(8)
        && out_c.len() == out_b.len()
        && a.len() <= MAX_ROWS
        && a.iter().chain(b).chain(c).all(|r| r.len() >= out_b.len())
    {
        // SAFETY: as in `dot_elementwise`.
        unsafe { ifma::dot_elementwise_pair(reducer, a, b, c, out_b, out_c) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide_ifma_applies(t)
        && out_b.len().is_multiple_of(8)
        && out_c.len() == out_b.len()
        && a.len() <= MAX_ROWS
        && a.iter().chain(b).chain(c).all(|r| r.len() >= out_b.len())
    {
        // SAFETY: as in `dot_elementwise`, for 2^50 <= t < 2^61.
        unsafe { ifma::wide::dot_elementwise_pair(reducer, a, b, c, out_b, out_c) };
        return;
    }
    dot_elementwise(t, reducer, a, b, out_b);
    dot_elementwise(t, reducer, a, c, out_c);
}

/// Portable reference for [`dot_elementwise`].
pub fn dot_elementwise_portable(t: &Modulus, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]) {
    for (c, o) in out.iter_mut().enumerate() {
        let mut acc: u128 = 0;
        for r in 0..a.len() {
            acc += a[r][c] as u128 * b[r][c] as u128;
            if r % 32 == 31 {
                acc = t.reduce_u128(acc) as u128;
            }
        }
        *o = t.reduce_u128(acc);
    }
}

/// `x = (x - y) * w mod t` for `x, y < t`, `w < t`.
pub fn sub_mul_const(t: &Modulus, x: &mut [u64], y: &[u64], w: u64) {
    let len = x.len();
    assert!(y.len() >= len);
    let p = x.as_mut_ptr();
    // SAFETY: input and output are the same valid slice of `len` words.
    unsafe { sub_mul_const_raw(t, p, y, w, p, len) }
}

/// `out = (x - y) * w mod t` for `x, y < t`, `w < t` (out of place).
pub fn sub_mul_const_to(t: &Modulus, x: &[u64], y: &[u64], w: u64, out: &mut [u64]) {
    let len = out.len();
    assert!(x.len() >= len && y.len() >= len);
    // SAFETY: `x` and `out` are valid for `len` words and do not overlap
    // (a shared and a mutable borrow).
    unsafe { sub_mul_const_raw(t, x.as_ptr(), y, w, out.as_mut_ptr(), len) }
}

/// # Safety
/// `x` and `out` are valid for `len` words; they may be the same pointer
/// (in place) but must not otherwise overlap; `y.len() >= len`.
unsafe fn sub_mul_const_raw(t: &Modulus, x: *const u64, y: &[u64], w: u64, out: *mut u64, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if ifma_applies(t) && len.is_multiple_of(8) {
        // SAFETY: IFMA available, t < 2^50, length a multiple of 8; the
        // pointer contract is forwarded.
        unsafe { ifma::sub_mul_const(t.value(), x, y, w, out, len) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide_ifma_applies(t) && len.is_multiple_of(8) {
        // SAFETY: AVX-512 DQ available (with IFMA), t < 2^61, length a
        // multiple of 8; the pointer contract is forwarded.
        unsafe { ifma::wide::sub_mul_const(t.value(), x, y, w, out, len) };
        return;
    }
    let ws = t.shoup(w);
    for (k, &y) in y[..len].iter().enumerate() {
        // SAFETY: k < len; reading x[k] before writing out[k] keeps the
        // in-place case correct.
        unsafe {
            let v = *x.add(k);
            *out.add(k) = t.mul_shoup(t.sub(v, y), w, ws);
        }
    }
}

/// `out = (src mod t) - offset mod t` for `offset < t`; `src_below_2_52`
/// says whether every source value is below 2^52 (the caller knows it from
/// the source's prime, so no scan is needed).
pub fn reduce_sub(t: &Modulus, src: &[u64], src_below_2_52: bool, offset: u64, out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if ifma_applies(t) && src_below_2_52 && out.len().is_multiple_of(8) && src.len() >= out.len() {
        // SAFETY: IFMA available, t < 2^50, inputs below 2^52.
        unsafe { ifma::reduce_sub(t.value(), src, offset, out) };
        return;
    }
    // Any modulus below 2^61 and any source word otherwise (a rescale by
    // a wide prime reduces its 59-bit limb into every narrow one).
    #[cfg(target_arch = "x86_64")]
    if ifma_available() && t.value() < WIDE_MODULUS_LIMIT && out.len().is_multiple_of(8) && src.len() >= out.len() {
        // SAFETY: AVX-512 DQ available (with IFMA), t < 2^61; any u64
        // source value is accepted.
        unsafe { ifma::wide::reduce_sub(t.value(), src, offset, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(src) {
        *o = t.sub(t.reduce(v), offset);
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    use super::super::simd::{csub, mul_shoup52, MASK52};
    use super::Reducer52;
    use std::arch::x86_64::*;

    const MASK30: i64 = (1 << 30) - 1;

    /// Reduces `hi * 2^52 + lo` (each below 2^60) modulo t.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce(r: &Reducer52, lo: __m512i, hi: __m512i) -> __m512i {
        let mask = _mm512_set1_epi64(MASK52);
        let t = _mm512_set1_epi64(r.t as i64);
        let hi = _mm512_add_epi64(hi, _mm512_srli_epi64(lo, 52));
        let lo = _mm512_and_si512(lo, mask);
        let h1 = _mm512_srli_epi64(hi, 52);
        let h0 = _mm512_and_si512(hi, mask);
        let t0 = mul_shoup52(h0, _mm512_set1_epi64(r.r52 as i64), _mm512_set1_epi64(r.r52_shoup as i64), t);
        let t1 = mul_shoup52(h1, _mm512_set1_epi64(r.r104 as i64), _mm512_set1_epi64(r.r104_shoup as i64), t);
        let t2 = mul_shoup52(lo, _mm512_set1_epi64(1), _mm512_set1_epi64(r.one_shoup as i64), t);
        // Each term is below 2t, the sum below 6t.
        let s = _mm512_add_epi64(_mm512_add_epi64(t0, t1), t2);
        let two_t = _mm512_add_epi64(t, t);
        csub(csub(csub(s, _mm512_add_epi64(two_t, two_t)), two_t), t)
    }

    /// # Safety
    /// As for [`dot_elementwise`], for both outputs.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn dot_elementwise_pair(
        r: &Reducer52,
        a: &[&[u64]],
        b: &[&[u64]],
        c: &[&[u64]],
        out_b: &mut [u64],
        out_c: &mut [u64],
    ) {
        let n = out_b.len();
        let mut k = 0;
        // Two coefficient vectors per iteration for independent chains.
        while k + 16 <= n {
            let mut acc = [_mm512_setzero_si512(); 8];
            for ((x, y), z) in a.iter().zip(b).zip(c) {
                for u in 0..2 {
                    let off = k + 8 * u;
                    // SAFETY: off + 8 <= n <= every length.
                    let (x, y, z) = unsafe {
                        (
                            _mm512_loadu_si512(x.as_ptr().add(off) as *const __m512i),
                            _mm512_loadu_si512(y.as_ptr().add(off) as *const __m512i),
                            _mm512_loadu_si512(z.as_ptr().add(off) as *const __m512i),
                        )
                    };
                    acc[4 * u] = _mm512_madd52lo_epu64(acc[4 * u], x, y);
                    acc[4 * u + 1] = _mm512_madd52hi_epu64(acc[4 * u + 1], x, y);
                    acc[4 * u + 2] = _mm512_madd52lo_epu64(acc[4 * u + 2], x, z);
                    acc[4 * u + 3] = _mm512_madd52hi_epu64(acc[4 * u + 3], x, z);
                }
            }
            for u in 0..2 {
                let off = k + 8 * u;
                // SAFETY: off + 8 <= n.
                unsafe {
                    _mm512_storeu_si512(
                        out_b.as_mut_ptr().add(off) as *mut __m512i,
                        reduce(r, acc[4 * u], acc[4 * u + 1]),
                    );
                    _mm512_storeu_si512(
                        out_c.as_mut_ptr().add(off) as *mut __m512i,
                        reduce(r, acc[4 * u + 2], acc[4 * u + 3]),
                    );
                }
            }
            k += 16;
        }
        while k < n {
            let (mut lo_b, mut hi_b) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let (mut lo_c, mut hi_c) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for ((x, y), z) in a.iter().zip(b).zip(c) {
                // SAFETY: k + 8 <= n <= every length.
                let (x, y, z) = unsafe {
                    (
                        _mm512_loadu_si512(x.as_ptr().add(k) as *const __m512i),
                        _mm512_loadu_si512(y.as_ptr().add(k) as *const __m512i),
                        _mm512_loadu_si512(z.as_ptr().add(k) as *const __m512i),
                    )
                };
                lo_b = _mm512_madd52lo_epu64(lo_b, x, y);
                hi_b = _mm512_madd52hi_epu64(hi_b, x, y);
                lo_c = _mm512_madd52lo_epu64(lo_c, x, z);
                hi_c = _mm512_madd52hi_epu64(hi_c, x, z);
            }
            // SAFETY: k + 8 <= n.
            unsafe {
                _mm512_storeu_si512(out_b.as_mut_ptr().add(k) as *mut __m512i, reduce(r, lo_b, hi_b));
                _mm512_storeu_si512(out_c.as_mut_ptr().add(k) as *mut __m512i, reduce(r, lo_c, hi_c));
            }
            k += 8;
        }
    }

    /// # Safety
    /// avx512f + avx512ifma; `x.len()` a multiple of 8, `y` at least as
    /// long; `t < 2^50`; inputs reduced.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn sub_mul_const(t: u64, x: *const u64, y: &[u64], w: u64, out: *mut u64, len: usize) {
        let q = _mm512_set1_epi64(t as i64);
        let two_q = _mm512_set1_epi64(2 * t as i64);
        let wv = _mm512_set1_epi64(w as i64);
        let ws = _mm512_set1_epi64((((w as u128) << 52) / t as u128) as i64);
        let mut c = 0;
        while c < len {
            // SAFETY: c + 8 <= len; each output vector is written after its
            // input vector is read, so the in-place case is correct.
            unsafe {
                let a = _mm512_loadu_si512(x.add(c) as *const __m512i);
                let b = _mm512_loadu_si512(y.as_ptr().add(c) as *const __m512i);
                let d = _mm512_sub_epi64(_mm512_add_epi64(a, two_q), b);
                let r = csub(mul_shoup52(d, wv, ws, q), q);
                _mm512_storeu_si512(out.add(c) as *mut __m512i, r);
            }
            c += 8;
        }
    }

    /// # Safety
    /// avx512f + avx512ifma; `out.len()` a multiple of 8, `src` at least as
    /// long with values below 2^52; `t < 2^50`; `offset < t`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn reduce_sub(t: u64, src: &[u64], offset: u64, out: &mut [u64]) {
        let q = _mm512_set1_epi64(t as i64);
        let one = _mm512_set1_epi64(1);
        let one_s = _mm512_set1_epi64(((1u128 << 52) / t as u128) as i64);
        let neg_off = _mm512_set1_epi64((t - offset) as i64);
        let mut c = 0;
        while c < out.len() {
            // SAFETY: c + 8 <= len.
            unsafe {
                let v = _mm512_loadu_si512(src.as_ptr().add(c) as *const __m512i);
                let r = csub(mul_shoup52(v, one, one_s, q), q);
                let r = csub(_mm512_add_epi64(r, neg_off), q);
                _mm512_storeu_si512(out.as_mut_ptr().add(c) as *mut __m512i, r);
            }
            c += 8;
        }
    }

    /// # Safety
    /// avx512f + avx512ifma available; `out.len()` a multiple of 8; every
    /// row at least `out.len()` long; `consts[r] < t < 2^50`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn dot_const(
        r: &Reducer52,
        rows: &[&[u64]],
        consts: &[u64],
        consts_hi: &[u64],
        wide: &[bool],
        out: &mut [u64],
    ) {
        let n = out.len();
        let mask30 = _mm512_set1_epi64(MASK30);
        // Per row: constant c (for the low 30 bits or the whole value) and
        // c * 2^30 mod t (for the high bits of values of 52 bits or more).
        let c_lo: Vec<__m512i> = consts.iter().map(|&c| _mm512_set1_epi64(c as i64)).collect();
        let c_hi: Vec<__m512i> = consts_hi.iter().map(|&c| _mm512_set1_epi64(c as i64)).collect();
        // Four independent coefficient vectors per iteration: the madd52
        // chains are latency-bound otherwise.
        let mut c = 0;
        while c + 32 <= n {
            let mut lo = [_mm512_setzero_si512(); 4];
            let mut hi = [_mm512_setzero_si512(); 4];
            for (k, row) in rows.iter().enumerate() {
                for u in 0..4 {
                    // SAFETY: c + 32 <= n <= row.len().
                    let y = unsafe { _mm512_loadu_si512(row.as_ptr().add(c + 8 * u) as *const __m512i) };
                    if wide[k] {
                        let y_lo = _mm512_and_si512(y, mask30);
                        let y_hi = _mm512_srli_epi64(y, 30);
                        lo[u] = _mm512_madd52lo_epu64(lo[u], y_lo, c_lo[k]);
                        hi[u] = _mm512_madd52hi_epu64(hi[u], y_lo, c_lo[k]);
                        lo[u] = _mm512_madd52lo_epu64(lo[u], y_hi, c_hi[k]);
                        hi[u] = _mm512_madd52hi_epu64(hi[u], y_hi, c_hi[k]);
                    } else {
                        lo[u] = _mm512_madd52lo_epu64(lo[u], y, c_lo[k]);
                        hi[u] = _mm512_madd52hi_epu64(hi[u], y, c_lo[k]);
                    }
                }
            }
            for u in 0..4 {
                // SAFETY: c + 32 <= n.
                unsafe {
                    _mm512_storeu_si512(out.as_mut_ptr().add(c + 8 * u) as *mut __m512i, reduce(r, lo[u], hi[u]))
                };
            }
            c += 32;
        }
        while c < n {
            let mut lo = _mm512_setzero_si512();
            let mut hi = _mm512_setzero_si512();
            for (k, row) in rows.iter().enumerate() {
                // SAFETY: c + 8 <= n <= row.len().
                let y = unsafe { _mm512_loadu_si512(row.as_ptr().add(c) as *const __m512i) };
                if wide[k] {
                    let y_lo = _mm512_and_si512(y, mask30);
                    let y_hi = _mm512_srli_epi64(y, 30);
                    lo = _mm512_madd52lo_epu64(lo, y_lo, c_lo[k]);
                    hi = _mm512_madd52hi_epu64(hi, y_lo, c_lo[k]);
                    lo = _mm512_madd52lo_epu64(lo, y_hi, c_hi[k]);
                    hi = _mm512_madd52hi_epu64(hi, y_hi, c_hi[k]);
                } else {
                    lo = _mm512_madd52lo_epu64(lo, y, c_lo[k]);
                    hi = _mm512_madd52hi_epu64(hi, y, c_lo[k]);
                }
            }
            // SAFETY: c + 8 <= n.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(c) as *mut __m512i, reduce(r, lo, hi)) };
            c += 8;
        }
    }

    /// # Safety
    /// avx512f + avx512ifma available; `out.len()` a multiple of 8; all
    /// inputs below `t < 2^50` and at least `out.len()` long.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn dot_elementwise(r: &Reducer52, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]) {
        let n = out.len();
        let mut c = 0;
        while c < n {
            let mut lo = _mm512_setzero_si512();
            let mut hi = _mm512_setzero_si512();
            for (x, y) in a.iter().zip(b) {
                // SAFETY: c + 8 <= n <= len.
                let (x, y) = unsafe {
                    (
                        _mm512_loadu_si512(x.as_ptr().add(c) as *const __m512i),
                        _mm512_loadu_si512(y.as_ptr().add(c) as *const __m512i),
                    )
                };
                lo = _mm512_madd52lo_epu64(lo, x, y);
                hi = _mm512_madd52hi_epu64(hi, x, y);
            }
            // SAFETY: c + 8 <= n.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(c) as *mut __m512i, reduce(r, lo, hi)) };
            c += 8;
        }
    }

    /// Kernels for wide moduli `2^50 <= t < 2^61`. Each operand is split
    /// at bit 52 (`x = x0 + x1 2^52`, `x1 < 2^12`), and the product is
    /// accumulated exactly in three columns of weight 1, 2^52 and 2^104
    /// (seven IFMA products; four when one operand is below 2^52). With at
    /// most `MAX_ROWS` rows the columns stay below 2^62. The portable path
    /// runs a 64 x 64 -> 128-bit product and a carry chain per term; this
    /// runs eight at a time.
    pub(super) mod wide {
        use super::super::super::simd::{csub, mul_shoup64, MASK52};
        use super::super::Reducer52;
        use std::arch::x86_64::*;

        /// Three column accumulators.
        type Columns = [__m512i; 3];

        #[inline]
        #[target_feature(enable = "avx512f")]
        fn zero() -> Columns {
            [_mm512_setzero_si512(); 3]
        }

        /// `x = (x & mask52, x >> 52)`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn split(x: __m512i) -> (__m512i, __m512i) {
            (_mm512_and_si512(x, _mm512_set1_epi64(MASK52)), _mm512_srli_epi64(x, 52))
        }

        /// `acc += x * y` for split operands.
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn mac(acc: &mut Columns, (x0, x1): (__m512i, __m512i), (y0, y1): (__m512i, __m512i)) {
            acc[0] = _mm512_madd52lo_epu64(acc[0], x0, y0);
            acc[1] = _mm512_madd52hi_epu64(acc[1], x0, y0);
            acc[1] = _mm512_madd52lo_epu64(acc[1], x0, y1);
            acc[2] = _mm512_madd52hi_epu64(acc[2], x0, y1);
            acc[1] = _mm512_madd52lo_epu64(acc[1], x1, y0);
            acc[2] = _mm512_madd52hi_epu64(acc[2], x1, y0);
            acc[2] = _mm512_madd52lo_epu64(acc[2], x1, y1);
        }

        /// `acc += x * y` for `x < 2^52` and a split `y`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma")]
        fn mac_narrow(acc: &mut Columns, x: __m512i, (y0, y1): (__m512i, __m512i)) {
            acc[0] = _mm512_madd52lo_epu64(acc[0], x, y0);
            acc[1] = _mm512_madd52hi_epu64(acc[1], x, y0);
            acc[1] = _mm512_madd52lo_epu64(acc[1], x, y1);
            acc[2] = _mm512_madd52hi_epu64(acc[2], x, y1);
        }

        /// `c0 + c1 2^52 + c2 2^104 mod t`, fully reduced.
        #[inline]
        #[target_feature(enable = "avx512f,avx512ifma,avx512dq")]
        fn reduce(r: &Reducer52, acc: &Columns) -> __m512i {
            let t = _mm512_set1_epi64(r.t as i64);
            // c0 < 2^59: its carry moves to c1 (< 2^62 after).
            let (c0, carry) = split(acc[0]);
            let c1 = _mm512_add_epi64(acc[1], carry);
            let two_t = _mm512_add_epi64(t, t);
            let t1 =
                mul_shoup64(c1, _mm512_set1_epi64(r.r52 as i64), _mm512_set1_epi64(r.r52_shoup64 as i64), t, two_t);
            let t2 = mul_shoup64(
                acc[2],
                _mm512_set1_epi64(r.r104 as i64),
                _mm512_set1_epi64(r.r104_shoup64 as i64),
                t,
                two_t,
            );
            // c0 < 2^52 <= 4t and each product is below 2t: the sum is
            // below 8t < 2^64.
            let s = _mm512_add_epi64(_mm512_add_epi64(c0, t1), t2);
            csub(csub(csub(s, _mm512_add_epi64(two_t, two_t)), two_t), t)
        }

        /// `out = (x - y) * w mod t` for `x, y, w < t < 2^61`.
        ///
        /// # Safety
        /// avx512f + avx512dq available; `len` a multiple of 8; `x` and
        /// `out` valid for `len` words (the same pointer or disjoint);
        /// `y.len() >= len`.
        #[target_feature(enable = "avx512f,avx512dq")]
        pub(in super::super) unsafe fn sub_mul_const(
            t: u64,
            x: *const u64,
            y: &[u64],
            w: u64,
            out: *mut u64,
            len: usize,
        ) {
            let q = _mm512_set1_epi64(t as i64);
            let wv = _mm512_set1_epi64(w as i64);
            let ws = _mm512_set1_epi64((((w as u128) << 64) / t as u128) as i64);
            let two_q = _mm512_add_epi64(q, q);
            let mut c = 0;
            while c < len {
                // SAFETY: c + 8 <= len; each output vector is written after
                // its input vector is read (in-place case).
                unsafe {
                    let a = _mm512_loadu_si512(x.add(c) as *const __m512i);
                    let b = _mm512_loadu_si512(y.as_ptr().add(c) as *const __m512i);
                    // a + t - b lies in (0, 2t).
                    let d = _mm512_sub_epi64(_mm512_add_epi64(a, q), b);
                    let r = csub(mul_shoup64(d, wv, ws, q, two_q), q);
                    _mm512_storeu_si512(out.add(c) as *mut __m512i, r);
                }
                c += 8;
            }
        }

        /// `out = (src mod t) - offset mod t` for any `src` words,
        /// `offset < t < 2^61`.
        ///
        /// # Safety
        /// avx512f + avx512dq available; `out.len()` a multiple of 8 and
        /// `src` at least as long.
        #[target_feature(enable = "avx512f,avx512dq")]
        pub(in super::super) unsafe fn reduce_sub(t: u64, src: &[u64], offset: u64, out: &mut [u64]) {
            let q = _mm512_set1_epi64(t as i64);
            let one = _mm512_set1_epi64(1);
            let one_s = _mm512_set1_epi64(((1u128 << 64) / t as u128) as i64);
            let neg_off = _mm512_set1_epi64((t - offset) as i64);
            let two_q = _mm512_add_epi64(q, q);
            let mut c = 0;
            while c < out.len() {
                // SAFETY: c + 8 <= out.len() <= src.len().
                unsafe {
                    let v = _mm512_loadu_si512(src.as_ptr().add(c) as *const __m512i);
                    let r = csub(mul_shoup64(v, one, one_s, q, two_q), q);
                    let r = csub(_mm512_add_epi64(r, neg_off), q);
                    _mm512_storeu_si512(out.as_mut_ptr().add(c) as *mut __m512i, r);
                }
                c += 8;
            }
        }

        /// # Safety
        /// avx512f + avx512dq + avx512ifma available; `out.len()` a
        /// multiple of 8; every row at least `out.len()` long with values
        /// below 2^61 (below 2^52 where `wide[r]` is false); `consts[r] <
        /// t`; `2^50 <= t < 2^61`; at most `MAX_ROWS` rows.
        #[target_feature(enable = "avx512f,avx512ifma,avx512dq")]
        pub(in super::super) unsafe fn dot_const(
            r: &Reducer52,
            rows: &[&[u64]],
            consts: &[u64],
            wide: &[bool],
            out: &mut [u64],
        ) {
            let n = out.len();
            let c: Vec<(__m512i, __m512i)> = consts.iter().map(|&c| split(_mm512_set1_epi64(c as i64))).collect();
            let mut k = 0;
            // Four independent coefficient vectors per iteration (the
            // column chains are latency-bound otherwise).
            while k + 32 <= n {
                let mut acc = [zero(); 4];
                for ((row, &w), &is_wide) in rows.iter().zip(&c).zip(wide) {
                    for (u, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: k + 32 <= n <= row.len().
                        let y = unsafe { _mm512_loadu_si512(row.as_ptr().add(k + 8 * u) as *const __m512i) };
                        if is_wide {
                            mac(acc, split(y), w);
                        } else {
                            mac_narrow(acc, y, w);
                        }
                    }
                }
                for (u, acc) in acc.iter().enumerate() {
                    // SAFETY: k + 32 <= n.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(k + 8 * u) as *mut __m512i, reduce(r, acc)) };
                }
                k += 32;
            }
            while k < n {
                let mut acc = zero();
                for ((row, &w), &is_wide) in rows.iter().zip(&c).zip(wide) {
                    // SAFETY: k + 8 <= n <= row.len().
                    let y = unsafe { _mm512_loadu_si512(row.as_ptr().add(k) as *const __m512i) };
                    if is_wide {
                        mac(&mut acc, split(y), w);
                    } else {
                        mac_narrow(&mut acc, y, w);
                    }
                }
                // SAFETY: k + 8 <= n.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(k) as *mut __m512i, reduce(r, &acc)) };
                k += 8;
            }
        }

        /// # Safety
        /// avx512f + avx512dq + avx512ifma available; `out.len()` a
        /// multiple of 8; all inputs below `t` and at least `out.len()`
        /// long; `2^50 <= t < 2^61`; at most `MAX_ROWS` rows.
        #[target_feature(enable = "avx512f,avx512ifma,avx512dq")]
        pub(in super::super) unsafe fn dot_elementwise(r: &Reducer52, a: &[&[u64]], b: &[&[u64]], out: &mut [u64]) {
            let n = out.len();
            let mut k = 0;
            while k + 16 <= n {
                let mut acc = [zero(); 2];
                for (x, y) in a.iter().zip(b) {
                    for (u, acc) in acc.iter_mut().enumerate() {
                        let off = k + 8 * u;
                        // SAFETY: off + 8 <= n <= every length.
                        let (x, y) = unsafe {
                            (
                                _mm512_loadu_si512(x.as_ptr().add(off) as *const __m512i),
                                _mm512_loadu_si512(y.as_ptr().add(off) as *const __m512i),
                            )
                        };
                        mac(acc, split(x), split(y));
                    }
                }
                for (u, acc) in acc.iter().enumerate() {
                    // SAFETY: k + 16 <= n.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(k + 8 * u) as *mut __m512i, reduce(r, acc)) };
                }
                k += 16;
            }
            while k < n {
                let mut acc = zero();
                for (x, y) in a.iter().zip(b) {
                    // SAFETY: k + 8 <= n <= every length.
                    let (x, y) = unsafe {
                        (
                            _mm512_loadu_si512(x.as_ptr().add(k) as *const __m512i),
                            _mm512_loadu_si512(y.as_ptr().add(k) as *const __m512i),
                        )
                    };
                    mac(&mut acc, split(x), split(y));
                }
                // SAFETY: k + 8 <= n.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(k) as *mut __m512i, reduce(r, &acc)) };
                k += 8;
            }
        }

        /// # Safety
        /// As for [`dot_elementwise`], for both outputs (`out_c` as long as
        /// `out_b`).
        #[target_feature(enable = "avx512f,avx512ifma,avx512dq")]
        pub(in super::super) unsafe fn dot_elementwise_pair(
            r: &Reducer52,
            a: &[&[u64]],
            b: &[&[u64]],
            c: &[&[u64]],
            out_b: &mut [u64],
            out_c: &mut [u64],
        ) {
            let n = out_b.len();
            let mut k = 0;
            while k + 16 <= n {
                let mut acc_b = [zero(); 2];
                let mut acc_c = [zero(); 2];
                for ((x, y), z) in a.iter().zip(b).zip(c) {
                    for u in 0..2 {
                        let off = k + 8 * u;
                        // SAFETY: off + 8 <= n <= every length.
                        let (x, y, z) = unsafe {
                            (
                                _mm512_loadu_si512(x.as_ptr().add(off) as *const __m512i),
                                _mm512_loadu_si512(y.as_ptr().add(off) as *const __m512i),
                                _mm512_loadu_si512(z.as_ptr().add(off) as *const __m512i),
                            )
                        };
                        let x = split(x);
                        mac(&mut acc_b[u], x, split(y));
                        mac(&mut acc_c[u], x, split(z));
                    }
                }
                for u in 0..2 {
                    let off = k + 8 * u;
                    // SAFETY: off + 8 <= n.
                    unsafe {
                        _mm512_storeu_si512(out_b.as_mut_ptr().add(off) as *mut __m512i, reduce(r, &acc_b[u]));
                        _mm512_storeu_si512(out_c.as_mut_ptr().add(off) as *mut __m512i, reduce(r, &acc_c[u]));
                    }
                }
                k += 16;
            }
            while k < n {
                let (mut acc_b, mut acc_c) = (zero(), zero());
                for ((x, y), z) in a.iter().zip(b).zip(c) {
                    // SAFETY: k + 8 <= n <= every length.
                    let (x, y, z) = unsafe {
                        (
                            _mm512_loadu_si512(x.as_ptr().add(k) as *const __m512i),
                            _mm512_loadu_si512(y.as_ptr().add(k) as *const __m512i),
                            _mm512_loadu_si512(z.as_ptr().add(k) as *const __m512i),
                        )
                    };
                    let x = split(x);
                    mac(&mut acc_b, x, split(y));
                    mac(&mut acc_c, x, split(z));
                }
                // SAFETY: k + 8 <= n.
                unsafe {
                    _mm512_storeu_si512(out_b.as_mut_ptr().add(k) as *mut __m512i, reduce(r, &acc_b));
                    _mm512_storeu_si512(out_c.as_mut_ptr().add(k) as *mut __m512i, reduce(r, &acc_c));
                }
                k += 8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes_near;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// The largest inputs the kernels accept, `MAX_ROWS` rows of them:
    /// the column accumulators must not overflow.
    #[test]
    fn extreme_inputs_at_the_row_limit_equal_portable() {
        for bits in [40u32, 49, 51, 59, 60] {
            let t = Modulus::new(ntt_primes_near(bits, 8, 1, &[]).unwrap()[0]).unwrap();
            let red = Reducer52::new(&t);
            let n = 40;
            let top = t.value() - 1;
            let max_row = vec![(1u64 << 61) - 1; n];
            let rows: Vec<&[u64]> = vec![max_row.as_slice(); MAX_ROWS];
            let consts = vec![top; MAX_ROWS];
            let consts_hi = vec![((top as u128) << 30).rem_euclid(t.value() as u128) as u64; MAX_ROWS];
            let wide = vec![true; MAX_ROWS];
            let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
            dot_const(&t, &red, &rows, &consts, &consts_hi, &wide, &mut fast);
            dot_const_portable(&t, &rows, &consts, &mut slow);
            assert_eq!(fast, slow, "dot_const, {bits}-bit modulus");
            let reduced = vec![top; n];
            let ra: Vec<&[u64]> = vec![reduced.as_slice(); MAX_ROWS];
            dot_elementwise(&t, &red, &ra, &ra, &mut fast);
            dot_elementwise_portable(&t, &ra, &ra, &mut slow);
            assert_eq!(fast, slow, "dot_elementwise, {bits}-bit modulus");
            let mut other = vec![0u64; n];
            dot_elementwise_pair(&t, &red, &ra, &ra, &ra, &mut fast, &mut other);
            assert_eq!((&fast, &other), (&slow, &slow), "dot_elementwise_pair, {bits}-bit modulus");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn ifma_dot_products_equal_portable(rows in 1usize..40, bits in prop::sample::select(vec![20u32, 40, 49, 51, 55, 59, 60]), wide_bits in prop::sample::select(vec![30u32, 52, 61]), seed in any::<u64>()) {
            let t = Modulus::new(ntt_primes_near(bits, 8, 1, &[]).unwrap()[0]).unwrap();
            let red = Reducer52::new(&t);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // 72: the vector loops' unrolled blocks and their tails.
            let n = 72;
            let data: Vec<Vec<u64>> = (0..rows).map(|_| (0..n).map(|_| rng.gen_range(0..(1u64 << wide_bits))).collect()).collect();
            let refs: Vec<&[u64]> = data.iter().map(|v| v.as_slice()).collect();
            let consts: Vec<u64> = (0..rows).map(|_| rng.gen_range(0..t.value())).collect();
            let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
            let wide = vec![wide_bits >= 52; rows];
            let consts_hi: Vec<u64> = consts.iter().map(|&c| ((c as u128) << 30).rem_euclid(t.value() as u128) as u64).collect();
            dot_const(&t, &red, &refs, &consts, &consts_hi, &wide, &mut fast);
            dot_const_portable(&t, &refs, &consts, &mut slow);
            prop_assert_eq!(&fast, &slow);
            let reduced: Vec<Vec<u64>> = data.iter().map(|v| v.iter().map(|&x| x % t.value()).collect()).collect();
            let ra: Vec<&[u64]> = reduced.iter().map(|v| v.as_slice()).collect();
            let rb: Vec<&[u64]> = reduced.iter().rev().map(|v| v.as_slice()).collect();
            dot_elementwise(&t, &red, &ra, &rb, &mut fast);
            dot_elementwise_portable(&t, &ra, &rb, &mut slow);
            prop_assert_eq!(&fast, &slow);
            let (mut pb, mut pc) = (vec![0u64; n], vec![0u64; n]);
            dot_elementwise_pair(&t, &red, &ra, &rb, &ra, &mut pb, &mut pc);
            prop_assert_eq!(&pb, &slow);
            dot_elementwise_portable(&t, &ra, &ra, &mut slow);
            prop_assert_eq!(&pc, &slow);
            dot_elementwise_portable(&t, &ra, &rb, &mut slow);
            let w = consts[0];
            let mut x = reduced[0].clone();
            sub_mul_const(&t, &mut x, &reduced[rows - 1], w);
            let ws = t.shoup(w);
            let want: Vec<u64> = reduced[0].iter().zip(&reduced[rows - 1]).map(|(&a, &b)| t.mul_shoup(t.sub(a, b), w, ws)).collect();
            prop_assert_eq!(x, want);
            let src: Vec<u64> = data[0].iter().map(|&v| v & ((1 << 52) - 1)).collect();
            reduce_sub(&t, &src, true, w, &mut fast);
            let want: Vec<u64> = src.iter().map(|&v| t.sub(t.reduce(v), w)).collect();
            prop_assert_eq!(&fast, &want);
            // Any 64-bit source word (the wide path reduces them all).
            let src: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
            reduce_sub(&t, &src, false, w, &mut fast);
            let want: Vec<u64> = src.iter().map(|&v| t.sub(t.reduce(v), w)).collect();
            prop_assert_eq!(fast, want);
        }
    }
}
