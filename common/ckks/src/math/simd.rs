//! AVX-512 IFMA building blocks shared by the NTT and the dot-product
//! kernels (x86-64 only; callers check `ifma_available()` first).

use std::arch::x86_64::*;

/// 52-bit mask.
pub(crate) const MASK52: i64 = (1 << 52) - 1;

/// `y * w mod q` in `[0, 2q)` for `y < 2^52`, `ws = floor(w 2^52 / q)`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(crate) fn mul_shoup52(y: __m512i, w: __m512i, ws: __m512i, q: __m512i) -> __m512i {
    let zero = _mm512_setzero_si512();
    let q_est = _mm512_madd52hi_epu64(zero, y, ws);
    let prod = _mm512_madd52lo_epu64(zero, y, w);
    let sub = _mm512_madd52lo_epu64(zero, q_est, q);
    _mm512_and_si512(_mm512_sub_epi64(prod, sub), _mm512_set1_epi64(MASK52))
}

/// `x - m` if `x >= m`, else `x` (unsigned lanes).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn csub(x: __m512i, m: __m512i) -> __m512i {
    _mm512_min_epu64(x, _mm512_sub_epi64(x, m))
}

/// High 64 bits of the 128-bit products of unsigned 64-bit lanes, from four
/// 32 x 32 -> 64 multiplications.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn mulhi64(a: __m512i, b: __m512i) -> __m512i {
    let mask32 = _mm512_set1_epi64(0xffff_ffff);
    let (a_hi, b_hi) = (_mm512_srli_epi64(a, 32), _mm512_srli_epi64(b, 32));
    let p00 = _mm512_mul_epu32(a, b);
    let p01 = _mm512_mul_epu32(a, b_hi);
    let p10 = _mm512_mul_epu32(a_hi, b);
    let p11 = _mm512_mul_epu32(a_hi, b_hi);
    let mid = _mm512_add_epi64(
        _mm512_add_epi64(_mm512_srli_epi64(p00, 32), _mm512_and_si512(p01, mask32)),
        _mm512_and_si512(p10, mask32),
    );
    let hi = _mm512_add_epi64(p11, _mm512_add_epi64(_mm512_srli_epi64(p01, 32), _mm512_srli_epi64(p10, 32)));
    _mm512_add_epi64(hi, _mm512_srli_epi64(mid, 32))
}

/// `y * w mod q` in `[0, 2q)` for any `y < 2^64`, `q < 2^62`,
/// `ws = floor(w 2^64 / q)` (Shoup with emulated 64-bit products).
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn mul_shoup64(y: __m512i, w: __m512i, ws: __m512i, q: __m512i) -> __m512i {
    let q_est = mulhi64(y, ws);
    _mm512_sub_epi64(_mm512_mullo_epi64(y, w), _mm512_mullo_epi64(q_est, q))
}
