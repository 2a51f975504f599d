//! Element-wise modular kernels over coefficient vectors: addition,
//! subtraction and the reduction of signed words. They run eight lanes at
//! a time with AVX-512 where the CPU has it (the same runtime detection as
//! the IFMA kernels) and fall back to the scalar [`Modulus`] operations,
//! which they equal exactly (property-tested).

use super::modulus::Modulus;
use super::ntt::ifma_available;

/// `acc[i] = acc[i] + other[i] mod t` for inputs below `t`.
pub fn add_assign(t: &Modulus, acc: &mut [u64], other: &[u64]) {
    assert!(other.len() >= acc.len());
    #[cfg(target_arch = "x86_64")]
    if ifma_available() {
        // SAFETY: AVX-512 F is available (checked with IFMA) and `other`
        // is at least as long as `acc`.
        unsafe { avx512::add_assign(t.value(), acc, other) };
        return;
    }
    for (x, &y) in acc.iter_mut().zip(other) {
        *x = t.add(*x, y);
    }
}

/// `acc[i] = acc[i] - other[i] mod t` for inputs below `t`.
pub fn sub_assign(t: &Modulus, acc: &mut [u64], other: &[u64]) {
    assert!(other.len() >= acc.len());
    #[cfg(target_arch = "x86_64")]
    if ifma_available() {
        // SAFETY: as in `add_assign`.
        unsafe { avx512::sub_assign(t.value(), acc, other) };
        return;
    }
    for (x, &y) in acc.iter_mut().zip(other) {
        *x = t.sub(*x, y);
    }
}

/// `out[i] = src[i] mod t` in `[0, t)` for signed words (`t < 2^61`).
pub fn reduce_signed(t: &Modulus, src: &[i64], out: &mut [u64]) {
    assert!(src.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    if ifma_available() && t.value() < 1 << 61 {
        // SAFETY: AVX-512 F and DQ are available (checked with IFMA),
        // `t < 2^61` and `src` is at least as long as `out`.
        unsafe { avx512::reduce_signed(t.value(), src, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(src) {
        *o = t.reduce_i64(v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::simd::{csub, mul_shoup64};
    use std::arch::x86_64::*;

    /// # Safety
    /// avx512f available; `other.len() >= acc.len()`; inputs below `t < 2^63`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_assign(t: u64, acc: &mut [u64], other: &[u64]) {
        let q = _mm512_set1_epi64(t as i64);
        let whole = acc.len() / 8 * 8;
        let mut c = 0;
        while c < whole {
            // SAFETY: c + 8 <= acc.len() <= other.len().
            unsafe {
                let p = acc.as_mut_ptr().add(c) as *mut __m512i;
                let s = _mm512_add_epi64(
                    _mm512_loadu_si512(p),
                    _mm512_loadu_si512(other.as_ptr().add(c) as *const __m512i),
                );
                _mm512_storeu_si512(p, csub(s, q));
            }
            c += 8;
        }
        for (x, &y) in acc[whole..].iter_mut().zip(&other[whole..]) {
            let s = *x + y;
            *x = s.min(s.wrapping_sub(t));
        }
    }

    /// # Safety
    /// As for [`add_assign`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sub_assign(t: u64, acc: &mut [u64], other: &[u64]) {
        let q = _mm512_set1_epi64(t as i64);
        let whole = acc.len() / 8 * 8;
        let mut c = 0;
        while c < whole {
            // SAFETY: c + 8 <= acc.len() <= other.len().
            unsafe {
                let p = acc.as_mut_ptr().add(c) as *mut __m512i;
                let d = _mm512_sub_epi64(
                    _mm512_loadu_si512(p),
                    _mm512_loadu_si512(other.as_ptr().add(c) as *const __m512i),
                );
                // d wrapped below zero when acc < other: d + t is then the
                // smaller of the two as unsigned words.
                _mm512_storeu_si512(p, _mm512_min_epu64(d, _mm512_add_epi64(d, q)));
            }
            c += 8;
        }
        for (x, &y) in acc[whole..].iter_mut().zip(&other[whole..]) {
            let d = x.wrapping_sub(y);
            *x = d.min(d.wrapping_add(t));
        }
    }

    /// # Safety
    /// avx512f + avx512dq available; `src.len() >= out.len()`; `t < 2^61`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn reduce_signed(t: u64, src: &[i64], out: &mut [u64]) {
        let q = _mm512_set1_epi64(t as i64);
        let one = _mm512_set1_epi64(1);
        let one_s = _mm512_set1_epi64(((1u128 << 64) / t as u128) as i64);
        let two_q = _mm512_add_epi64(q, q);
        let whole = out.len() / 8 * 8;
        let mut c = 0;
        while c < whole {
            // SAFETY: c + 8 <= out.len() <= src.len().
            unsafe {
                let v = _mm512_loadu_si512(src.as_ptr().add(c) as *const __m512i);
                let negative = _mm512_cmplt_epi64_mask(v, _mm512_setzero_si512());
                // |v| <= 2^63 as an unsigned word, reduced into [0, t).
                let r = csub(mul_shoup64(_mm512_abs_epi64(v), one, one_s, q, two_q), q);
                // -r mod t: t - r, or 0 when r is 0.
                let neg = _mm512_sub_epi64(q, r);
                let neg = _mm512_min_epu64(neg, _mm512_sub_epi64(neg, q));
                _mm512_storeu_si512(out.as_mut_ptr().add(c) as *mut __m512i, _mm512_mask_blend_epi64(negative, r, neg));
            }
            c += 8;
        }
        for (o, &v) in out[whole..].iter_mut().zip(&src[whole..]) {
            let r = (v.unsigned_abs() % t) as i64;
            *o = if v < 0 && r != 0 { t - r as u64 } else { r as u64 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes_near;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn vector_kernels_equal_scalar(bits in prop::sample::select(vec![20u32, 40, 49, 55, 60]), seed in any::<u64>(), len in 0usize..40) {
            use rand::{Rng, SeedableRng};
            let t = Modulus::new(ntt_primes_near(bits, 8, 1, &[]).unwrap()[0]).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut a: Vec<u64> = (0..len).map(|_| rng.gen_range(0..t.value())).collect();
            // The extremes of the range, where the wrap-arounds happen.
            if len > 2 {
                a[0] = 0;
                a[1] = t.value() - 1;
            }
            let b: Vec<u64> = (0..len).map(|_| rng.gen_range(0..t.value())).collect();
            let mut sum = a.clone();
            add_assign(&t, &mut sum, &b);
            prop_assert_eq!(sum, a.iter().zip(&b).map(|(&x, &y)| t.add(x, y)).collect::<Vec<_>>());
            let mut diff = a.clone();
            sub_assign(&t, &mut diff, &b);
            prop_assert_eq!(diff, a.iter().zip(&b).map(|(&x, &y)| t.sub(x, y)).collect::<Vec<_>>());
            let mut signed: Vec<i64> = (0..len).map(|_| rng.gen()).collect();
            if len > 3 {
                signed[0] = i64::MIN;
                signed[1] = i64::MAX;
                signed[2] = -(t.value() as i64);
                signed[3] = 0;
            }
            let mut reduced = vec![0u64; len];
            reduce_signed(&t, &signed, &mut reduced);
            prop_assert_eq!(reduced, signed.iter().map(|&v| t.reduce_i64(v)).collect::<Vec<_>>());
        }
    }
}
