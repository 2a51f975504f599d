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
