//! Negacyclic number-theoretic transform over `Z_q[X]/(X^N + 1)`.
//!
//! Forward: Cooley-Tukey butterflies with Harvey's lazy reduction (values
//! stay in `[0, 4q)` between stages), output in bit-reversed order.
//! Inverse: Gentleman-Sande butterflies (values in `[0, 2q)`), input in
//! bit-reversed order. Twiddles are bit-reversed powers of a primitive
//! `2N`-th root `psi`, each with its Shoup constant.
//!
//! The evaluation order matters for automorphisms: output position `i` holds
//! the evaluation at `psi^(2 * bitrev(i) + 1)` (see [`NttTable::slot_exponent`]).
//!
//! On x86-64 with AVX-512 (F, DQ, IFMA) the transform runs eight lanes at a
//! time: with 52-bit multiply-accumulate instructions for `q < 2^50`, and
//! with emulated 64-bit Shoup products for wider primes (up to 61 bits). The
//! portable path is bit-for-bit identical (checked by property tests).

use super::modulus::Modulus;
use super::primes::primitive_root;
use crate::CkksError;

/// Largest modulus (exclusive) handled by the IFMA path: the lazy values
/// `< 4q` must fit in 52 bits.
pub const IFMA_MODULUS_LIMIT: u64 = 1 << 50;

/// Precomputed tables for the NTT of one prime.
#[derive(Clone, Debug)]
pub struct NttTable {
    n: usize,
    log_n: u32,
    modulus: Modulus,
    psi_br: Vec<u64>,
    psi_br_shoup: Vec<u64>,
    ipsi_br: Vec<u64>,
    ipsi_br_shoup: Vec<u64>,
    n_inv: u64,
    n_inv_shoup: u64,
    /// 52-bit Shoup constants, present when the IFMA path applies.
    ifma: Option<IfmaConstants>,
}

#[derive(Clone, Debug)]
struct IfmaConstants {
    psi_br_shoup52: Vec<u64>,
    ipsi_br_shoup52: Vec<u64>,
    n_inv_shoup52: u64,
}

fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        x.reverse_bits() >> (usize::BITS - bits)
    }
}

/// Whether this CPU runs the IFMA path (detected once). Setting the
/// environment variable `NEXUS_DISABLE_IFMA=1` forces the portable path.
pub fn ifma_available() -> bool {
    use std::sync::OnceLock;
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("NEXUS_DISABLE_IFMA").is_some_and(|v| v == "1") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512ifma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

impl NttTable {
    /// Builds the tables for ring degree `n` (a power of two, at least 2)
    /// modulo `q = 1 mod 2n`.
    pub fn new(n: usize, modulus: Modulus) -> Result<Self, CkksError> {
        if n < 2 || !n.is_power_of_two() {
            return Err(CkksError::InvalidParameters(format!("ring degree {n} is not a power of two >= 2")));
        }
        let q = modulus.value();
        let psi = primitive_root(&modulus, 2 * n as u64)?;
        let ipsi = modulus.inv(psi).ok_or_else(|| CkksError::InvalidParameters("psi not invertible".into()))?;
        let log_n = n.trailing_zeros();
        let mut psi_br = vec![0u64; n];
        let mut ipsi_br = vec![0u64; n];
        let (mut p, mut ip) = (1u64, 1u64);
        for i in 0..n {
            let r = bit_reverse(i, log_n);
            psi_br[r] = p;
            ipsi_br[r] = ip;
            p = modulus.mul(p, psi);
            ip = modulus.mul(ip, ipsi);
        }
        let psi_br_shoup = psi_br.iter().map(|&w| modulus.shoup(w)).collect();
        let ipsi_br_shoup = ipsi_br.iter().map(|&w| modulus.shoup(w)).collect();
        let n_inv = modulus.inv(n as u64).ok_or_else(|| CkksError::InvalidParameters("n not invertible".into()))?;
        let shoup52 = |w: u64| (((w as u128) << 52) / q as u128) as u64;
        let ifma = (q < IFMA_MODULUS_LIMIT && n >= 16).then(|| IfmaConstants {
            psi_br_shoup52: psi_br.iter().map(|&w| shoup52(w)).collect(),
            ipsi_br_shoup52: ipsi_br.iter().map(|&w| shoup52(w)).collect(),
            n_inv_shoup52: shoup52(n_inv),
        });
        Ok(Self {
            n,
            log_n,
            modulus,
            psi_br,
            psi_br_shoup,
            ipsi_br,
            ipsi_br_shoup,
            n_inv,
            n_inv_shoup: modulus.shoup(n_inv),
            ifma,
        })
    }

    /// Ring degree.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The prime of this table.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// Exponent `e` such that NTT output position `i` holds `a(psi^e)`.
    pub fn slot_exponent(&self, i: usize) -> usize {
        2 * bit_reverse(i, self.log_n) + 1
    }

    /// NTT output position holding `a(psi^e)` for odd `e < 2n`.
    pub fn slot_of_exponent(&self, e: usize) -> usize {
        assert!(e % 2 == 1, "evaluation exponent {e} must be odd");
        bit_reverse((e - 1) / 2, self.log_n)
    }

    /// Whether [`forward`](Self::forward) uses the IFMA (52-bit) path for
    /// this prime; wider primes use AVX-512 with emulated 64-bit products.
    pub fn uses_ifma(&self) -> bool {
        self.ifma.is_some() && ifma_available()
    }

    /// In-place forward NTT; input in `[0, q)`, output in `[0, q)`,
    /// bit-reversed order.
    pub fn forward(&self, a: &mut [u64]) {
        // A hard check: the SIMD paths size their loads from `a.len()`.
        assert_eq!(a.len(), self.n, "NTT input length must equal the ring degree");
        #[cfg(target_arch = "x86_64")]
        if ifma_available() && self.n >= 16 {
            let q = self.modulus.value();
            // SAFETY: the CPU supports avx512f, avx512dq and avx512ifma
            // (checked at runtime), `a` has length n >= 16; the 52-bit path
            // needs q < 2^50, the 64-bit one q < 2^62 (4q must fit).
            unsafe {
                match &self.ifma {
                    Some(c) => ifma::forward::<false>(a, &self.psi_br, &c.psi_br_shoup52, q),
                    None => ifma::forward::<true>(a, &self.psi_br, &self.psi_br_shoup, q),
                }
            };
            return;
        }
        self.forward_portable(a);
    }

    /// In-place inverse NTT; input in `[0, q)` bit-reversed, output `[0, q)`.
    pub fn inverse(&self, a: &mut [u64]) {
        assert_eq!(a.len(), self.n, "NTT input length must equal the ring degree");
        #[cfg(target_arch = "x86_64")]
        if ifma_available() && self.n >= 16 {
            let q = self.modulus.value();
            // SAFETY: as in `forward`.
            unsafe {
                match &self.ifma {
                    Some(c) => {
                        ifma::inverse::<false>(a, &self.ipsi_br, &c.ipsi_br_shoup52, self.n_inv, c.n_inv_shoup52, q)
                    }
                    None => {
                        ifma::inverse::<true>(a, &self.ipsi_br, &self.ipsi_br_shoup, self.n_inv, self.n_inv_shoup, q)
                    }
                }
            };
            return;
        }
        self.inverse_portable(a);
    }

    /// Forward NTT of a polynomial in `X^(n / m)` (`m = a.len()`, a power
    /// of two dividing `n`), given by its `m` coefficients: the full
    /// transform holds each of the `m` values written to `a` repeated `n / m`
    /// times in a row (output `i` is the evaluation at
    /// `psi^(2 bitrev(i) + 1)`, and `psi^(n / m)` only sees the top bits of
    /// `i`). It is the size-`m` transform with root `psi^(n / m)`, whose
    /// bit-reversed twiddles are the first `m` of this table's, so it costs
    /// `m log m` instead of `n log n`.
    pub fn forward_sparse(&self, a: &mut [u64]) {
        let m = a.len();
        assert!(m.is_power_of_two() && m <= self.n, "sparse NTT length {m} must be a power of two dividing {}", self.n);
        #[cfg(target_arch = "x86_64")]
        if ifma_available() && m >= 16 {
            let q = self.modulus.value();
            // SAFETY: as in `forward`, with the twiddle tables cut to `m`.
            unsafe {
                match &self.ifma {
                    Some(c) => ifma::forward::<false>(a, &self.psi_br[..m], &c.psi_br_shoup52[..m], q),
                    None => ifma::forward::<true>(a, &self.psi_br[..m], &self.psi_br_shoup[..m], q),
                }
            };
            return;
        }
        self.forward_portable_len(a);
    }

    /// Portable forward NTT (also the reference for the IFMA path).
    pub fn forward_portable(&self, a: &mut [u64]) {
        assert_eq!(a.len(), self.n, "NTT input length must equal the ring degree");
        self.forward_portable_len(a);
    }

    /// The portable transform of length `a.len()` (see `forward_sparse`).
    fn forward_portable_len(&self, a: &mut [u64]) {
        let q = self.modulus.value();
        let two_q = 2 * q;
        let n = a.len();
        let mut t = n;
        let mut m = 1;
        while m < n {
            t >>= 1;
            for i in 0..m {
                let w = self.psi_br[m + i];
                let ws = self.psi_br_shoup[m + i];
                let j1 = 2 * i * t;
                let (lo, hi) = a[j1..j1 + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let mut u = *x;
                    if u >= two_q {
                        u -= two_q;
                    }
                    let v = self.modulus.mul_shoup_lazy(*y, w, ws);
                    *x = u + v;
                    *y = u + two_q - v;
                }
            }
            m <<= 1;
        }
        for x in a.iter_mut() {
            let mut v = *x;
            if v >= two_q {
                v -= two_q;
            }
            if v >= q {
                v -= q;
            }
            *x = v;
        }
    }

    /// Portable inverse NTT.
    pub fn inverse_portable(&self, a: &mut [u64]) {
        let q = self.modulus.value();
        let two_q = 2 * q;
        let n = self.n;
        let mut t = 1;
        let mut m = n >> 1;
        while m >= 1 {
            for i in 0..m {
                let w = self.ipsi_br[m + i];
                let ws = self.ipsi_br_shoup[m + i];
                let j1 = 2 * i * t;
                let (lo, hi) = a[j1..j1 + 2 * t].split_at_mut(t);
                for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                    let u = *x;
                    let v = *y;
                    let mut s = u + v;
                    if s >= two_q {
                        s -= two_q;
                    }
                    *x = s;
                    *y = self.modulus.mul_shoup_lazy(u + two_q - v, w, ws);
                }
            }
            t <<= 1;
            m >>= 1;
        }
        for x in a.iter_mut() {
            let v = self.modulus.mul_shoup_lazy(*x, self.n_inv, self.n_inv_shoup);
            *x = if v >= q { v - q } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    //! Eight-lane NTT butterflies with AVX-512 IFMA (52-bit multiplies).
    use super::super::simd::{csub, mul_shoup52, mul_shoup64};
    use std::arch::x86_64::*;

    /// `y * w mod q` in `[0, 2q)` for `y < 4q`: IFMA (52-bit Shoup
    /// constant) for `q < 2^50`, or emulated 64-bit products (64-bit Shoup
    /// constant, approximate quotient) for wider primes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    fn mul_shoup<const WIDE: bool>(y: __m512i, w: __m512i, ws: __m512i, q: __m512i, two_q: __m512i) -> __m512i {
        if WIDE {
            mul_shoup64(y, w, ws, q, two_q)
        } else {
            mul_shoup52(y, w, ws, q)
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    fn ct_butterfly<const WIDE: bool>(
        x: __m512i,
        y: __m512i,
        w: __m512i,
        ws: __m512i,
        q: __m512i,
        two_q: __m512i,
    ) -> (__m512i, __m512i) {
        let u = csub(x, two_q);
        let v = mul_shoup::<WIDE>(y, w, ws, q, two_q);
        (_mm512_add_epi64(u, v), _mm512_sub_epi64(_mm512_add_epi64(u, two_q), v))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    fn gs_butterfly<const WIDE: bool>(
        x: __m512i,
        y: __m512i,
        w: __m512i,
        ws: __m512i,
        q: __m512i,
        two_q: __m512i,
    ) -> (__m512i, __m512i) {
        let s = csub(_mm512_add_epi64(x, y), two_q);
        let d = _mm512_sub_epi64(_mm512_add_epi64(x, two_q), y);
        (s, mul_shoup::<WIDE>(d, w, ws, q, two_q))
    }

    /// Lane permutations splitting two vectors (16 coefficients) into the
    /// butterfly inputs X and Y for a stage of half-width `t` in {4, 2, 1},
    /// the inverse permutations, and the twiddle index of each lane.
    struct SmallStage {
        take_x: [i64; 8],
        take_y: [i64; 8],
        back_lo: [i64; 8],
        back_hi: [i64; 8],
        twiddle_lane: [i64; 8],
    }

    const STAGE_T4: SmallStage = SmallStage {
        take_x: [0, 1, 2, 3, 8, 9, 10, 11],
        take_y: [4, 5, 6, 7, 12, 13, 14, 15],
        back_lo: [0, 1, 2, 3, 8, 9, 10, 11],
        back_hi: [4, 5, 6, 7, 12, 13, 14, 15],
        twiddle_lane: [0, 0, 0, 0, 1, 1, 1, 1],
    };
    const STAGE_T2: SmallStage = SmallStage {
        take_x: [0, 1, 4, 5, 8, 9, 12, 13],
        take_y: [2, 3, 6, 7, 10, 11, 14, 15],
        back_lo: [0, 1, 8, 9, 2, 3, 10, 11],
        back_hi: [4, 5, 12, 13, 6, 7, 14, 15],
        twiddle_lane: [0, 0, 1, 1, 2, 2, 3, 3],
    };
    const STAGE_T1: SmallStage = SmallStage {
        take_x: [0, 2, 4, 6, 8, 10, 12, 14],
        take_y: [1, 3, 5, 7, 9, 11, 13, 15],
        back_lo: [0, 8, 1, 9, 2, 10, 3, 11],
        back_hi: [4, 12, 5, 13, 6, 14, 7, 15],
        twiddle_lane: [0, 1, 2, 3, 4, 5, 6, 7],
    };

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn idx(v: &[i64; 8]) -> __m512i {
        _mm512_set_epi64(v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0])
    }

    /// Runs one stage of half-width `t <= 4` over all of `a`; `m = n / 2t`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn small_stage<const WIDE: bool>(
        a: &mut [u64],
        stage: &SmallStage,
        t: usize,
        m: usize,
        tw: &[u64],
        tw_shoup: &[u64],
        q: __m512i,
        two_q: __m512i,
        forward: bool,
    ) {
        let (ix, iy, ilo, ihi, itw) = (
            idx(&stage.take_x),
            idx(&stage.take_y),
            idx(&stage.back_lo),
            idx(&stage.back_hi),
            idx(&stage.twiddle_lane),
        );
        let n = a.len();
        let p = a.as_mut_ptr();
        let mut base = 0;
        while base < n {
            let first_group = m + base / (2 * t);
            // SAFETY: base + 16 <= n; the twiddle load reads indices
            // first_group..first_group + 8 with first_group + 7 <=
            // 2m + 7 - 8/t <= n - 1 for t in {1, 2, 4}, m = n/2t, n >= 16.
            unsafe {
                let v0 = _mm512_loadu_si512(p.add(base) as *const __m512i);
                let v1 = _mm512_loadu_si512(p.add(base + 8) as *const __m512i);
                let w_raw = _mm512_loadu_si512(tw.as_ptr().add(first_group) as *const __m512i);
                let ws_raw = _mm512_loadu_si512(tw_shoup.as_ptr().add(first_group) as *const __m512i);
                let w = _mm512_permutexvar_epi64(itw, w_raw);
                let ws = _mm512_permutexvar_epi64(itw, ws_raw);
                let x = _mm512_permutex2var_epi64(v0, ix, v1);
                let y = _mm512_permutex2var_epi64(v0, iy, v1);
                let (x2, y2) = if forward {
                    ct_butterfly::<WIDE>(x, y, w, ws, q, two_q)
                } else {
                    gs_butterfly::<WIDE>(x, y, w, ws, q, two_q)
                };
                _mm512_storeu_si512(p.add(base) as *mut __m512i, _mm512_permutex2var_epi64(x2, ilo, y2));
                _mm512_storeu_si512(p.add(base + 8) as *mut __m512i, _mm512_permutex2var_epi64(x2, ihi, y2));
            }
            base += 16;
        }
    }

    /// Stages with half-width `t >= 8`: one twiddle per group, broadcast.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn wide_stage<const WIDE: bool>(
        a: &mut [u64],
        t: usize,
        m: usize,
        tw: &[u64],
        tw_shoup: &[u64],
        q: __m512i,
        two_q: __m512i,
        forward: bool,
    ) {
        let p = a.as_mut_ptr();
        for i in 0..m {
            let w = _mm512_set1_epi64(tw[m + i] as i64);
            let ws = _mm512_set1_epi64(tw_shoup[m + i] as i64);
            let j1 = 2 * i * t;
            let mut j = j1;
            while j < j1 + t {
                // SAFETY: j + t + 8 <= j1 + 2t <= n.
                unsafe {
                    let x = _mm512_loadu_si512(p.add(j) as *const __m512i);
                    let y = _mm512_loadu_si512(p.add(j + t) as *const __m512i);
                    let (x2, y2) = if forward {
                        ct_butterfly::<WIDE>(x, y, w, ws, q, two_q)
                    } else {
                        gs_butterfly::<WIDE>(x, y, w, ws, q, two_q)
                    };
                    _mm512_storeu_si512(p.add(j) as *mut __m512i, x2);
                    _mm512_storeu_si512(p.add(j + t) as *mut __m512i, y2);
                }
                j += 8;
            }
        }
    }

    /// The forward stages of half-widths `t` (`m` groups) and `t / 2`
    /// (`2m` groups) in one pass over `a`: each group's four quarters are
    /// loaded once, go through both butterfly layers in registers and are
    /// stored once, halving the memory traffic of the wide stages (the
    /// arithmetic, and so the result, is that of two single stages).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn forward_stage_pair<const WIDE: bool>(
        a: &mut [u64],
        t: usize,
        m: usize,
        tw: &[u64],
        tw_shoup: &[u64],
        q: __m512i,
        two_q: __m512i,
    ) {
        let p = a.as_mut_ptr();
        let h = t / 2;
        for i in 0..m {
            let w1 = _mm512_set1_epi64(tw[m + i] as i64);
            let ws1 = _mm512_set1_epi64(tw_shoup[m + i] as i64);
            let w2a = _mm512_set1_epi64(tw[2 * m + 2 * i] as i64);
            let ws2a = _mm512_set1_epi64(tw_shoup[2 * m + 2 * i] as i64);
            let w2b = _mm512_set1_epi64(tw[2 * m + 2 * i + 1] as i64);
            let ws2b = _mm512_set1_epi64(tw_shoup[2 * m + 2 * i + 1] as i64);
            let j1 = 2 * i * t;
            let mut j = j1;
            while j < j1 + h {
                // SAFETY: h >= 8 and a multiple of 8, so j + 3h + 8 <= j1 + 2t <= n.
                unsafe {
                    let x0 = _mm512_loadu_si512(p.add(j) as *const __m512i);
                    let x1 = _mm512_loadu_si512(p.add(j + h) as *const __m512i);
                    let x2 = _mm512_loadu_si512(p.add(j + t) as *const __m512i);
                    let x3 = _mm512_loadu_si512(p.add(j + t + h) as *const __m512i);
                    let (x0, x2) = ct_butterfly::<WIDE>(x0, x2, w1, ws1, q, two_q);
                    let (x1, x3) = ct_butterfly::<WIDE>(x1, x3, w1, ws1, q, two_q);
                    let (x0, x1) = ct_butterfly::<WIDE>(x0, x1, w2a, ws2a, q, two_q);
                    let (x2, x3) = ct_butterfly::<WIDE>(x2, x3, w2b, ws2b, q, two_q);
                    _mm512_storeu_si512(p.add(j) as *mut __m512i, x0);
                    _mm512_storeu_si512(p.add(j + h) as *mut __m512i, x1);
                    _mm512_storeu_si512(p.add(j + t) as *mut __m512i, x2);
                    _mm512_storeu_si512(p.add(j + t + h) as *mut __m512i, x3);
                }
                j += 8;
            }
        }
    }

    /// The inverse stages of half-widths `t` (`m` groups) and `2t` (`m / 2`
    /// groups) in one pass, as [`forward_stage_pair`] does forward.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn inverse_stage_pair<const WIDE: bool>(
        a: &mut [u64],
        t: usize,
        m: usize,
        tw: &[u64],
        tw_shoup: &[u64],
        q: __m512i,
        two_q: __m512i,
    ) {
        let p = a.as_mut_ptr();
        for i in 0..m / 2 {
            let w1a = _mm512_set1_epi64(tw[m + 2 * i] as i64);
            let ws1a = _mm512_set1_epi64(tw_shoup[m + 2 * i] as i64);
            let w1b = _mm512_set1_epi64(tw[m + 2 * i + 1] as i64);
            let ws1b = _mm512_set1_epi64(tw_shoup[m + 2 * i + 1] as i64);
            let w2 = _mm512_set1_epi64(tw[m / 2 + i] as i64);
            let ws2 = _mm512_set1_epi64(tw_shoup[m / 2 + i] as i64);
            let j1 = 4 * i * t;
            let mut j = j1;
            while j < j1 + t {
                // SAFETY: t >= 8 and a multiple of 8, so j + 3t + 8 <= j1 + 4t <= n.
                unsafe {
                    let x0 = _mm512_loadu_si512(p.add(j) as *const __m512i);
                    let x1 = _mm512_loadu_si512(p.add(j + t) as *const __m512i);
                    let x2 = _mm512_loadu_si512(p.add(j + 2 * t) as *const __m512i);
                    let x3 = _mm512_loadu_si512(p.add(j + 3 * t) as *const __m512i);
                    let (x0, x1) = gs_butterfly::<WIDE>(x0, x1, w1a, ws1a, q, two_q);
                    let (x2, x3) = gs_butterfly::<WIDE>(x2, x3, w1b, ws1b, q, two_q);
                    let (x0, x2) = gs_butterfly::<WIDE>(x0, x2, w2, ws2, q, two_q);
                    let (x1, x3) = gs_butterfly::<WIDE>(x1, x3, w2, ws2, q, two_q);
                    _mm512_storeu_si512(p.add(j) as *mut __m512i, x0);
                    _mm512_storeu_si512(p.add(j + t) as *mut __m512i, x1);
                    _mm512_storeu_si512(p.add(j + 2 * t) as *mut __m512i, x2);
                    _mm512_storeu_si512(p.add(j + 3 * t) as *mut __m512i, x3);
                }
                j += 8;
            }
        }
    }

    /// # Safety
    /// The CPU must support avx512f and avx512ifma; `a.len() = n >= 16` is a
    /// power of two, `tw`/`tw_shoup52` have length n, and `q < 2^50`.
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    pub(super) unsafe fn forward<const WIDE: bool>(a: &mut [u64], tw: &[u64], tw_shoup52: &[u64], q: u64) {
        let n = a.len();
        let qv = _mm512_set1_epi64(q as i64);
        let two_q = _mm512_set1_epi64(2 * q as i64);
        let mut t = n;
        let mut m = 1;
        while m < n {
            t >>= 1;
            // SAFETY: forwarded contract.
            unsafe {
                match t {
                    4 => small_stage::<WIDE>(a, &STAGE_T4, 4, m, tw, tw_shoup52, qv, two_q, true),
                    2 => small_stage::<WIDE>(a, &STAGE_T2, 2, m, tw, tw_shoup52, qv, two_q, true),
                    1 => small_stage::<WIDE>(a, &STAGE_T1, 1, m, tw, tw_shoup52, qv, two_q, true),
                    8 => wide_stage::<WIDE>(a, t, m, tw, tw_shoup52, qv, two_q, true),
                    _ => {
                        // Two stages (half-widths t and t/2) in one pass.
                        forward_stage_pair::<WIDE>(a, t, m, tw, tw_shoup52, qv, two_q);
                        t >>= 1;
                        m <<= 1;
                    }
                }
            }
            m <<= 1;
        }
        let p = a.as_mut_ptr();
        let mut j = 0;
        while j < n {
            // SAFETY: j + 8 <= n.
            unsafe {
                let x = _mm512_loadu_si512(p.add(j) as *const __m512i);
                _mm512_storeu_si512(p.add(j) as *mut __m512i, csub(csub(x, two_q), qv));
            }
            j += 8;
        }
    }

    /// # Safety
    /// As for [`forward`].
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    pub(super) unsafe fn inverse<const WIDE: bool>(
        a: &mut [u64],
        tw: &[u64],
        tw_shoup52: &[u64],
        n_inv: u64,
        n_inv_shoup52: u64,
        q: u64,
    ) {
        let n = a.len();
        let qv = _mm512_set1_epi64(q as i64);
        let two_q = _mm512_set1_epi64(2 * q as i64);
        let mut t = 1;
        let mut m = n >> 1;
        while m >= 1 {
            // SAFETY: forwarded contract.
            unsafe {
                match t {
                    4 => small_stage::<WIDE>(a, &STAGE_T4, 4, m, tw, tw_shoup52, qv, two_q, false),
                    2 => small_stage::<WIDE>(a, &STAGE_T2, 2, m, tw, tw_shoup52, qv, two_q, false),
                    1 => small_stage::<WIDE>(a, &STAGE_T1, 1, m, tw, tw_shoup52, qv, two_q, false),
                    _ if m >= 2 => {
                        // Two stages (half-widths t and 2t) in one pass.
                        inverse_stage_pair::<WIDE>(a, t, m, tw, tw_shoup52, qv, two_q);
                        t <<= 1;
                        m >>= 1;
                    }
                    _ => wide_stage::<WIDE>(a, t, m, tw, tw_shoup52, qv, two_q, false),
                }
            }
            t <<= 1;
            m >>= 1;
        }
        let w = _mm512_set1_epi64(n_inv as i64);
        let ws = _mm512_set1_epi64(n_inv_shoup52 as i64);
        let p = a.as_mut_ptr();
        let mut j = 0;
        while j < n {
            // SAFETY: j + 8 <= n.
            unsafe {
                let x = _mm512_loadu_si512(p.add(j) as *const __m512i);
                _mm512_storeu_si512(p.add(j) as *mut __m512i, csub(mul_shoup::<WIDE>(x, w, ws, qv, two_q), qv));
            }
            j += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes_near;
    use proptest::prelude::*;

    fn table(log_n: u32, bits: u32) -> NttTable {
        let n = 1 << log_n;
        let q = ntt_primes_near(bits, n, 1, &[]).unwrap()[0];
        NttTable::new(n, Modulus::new(q).unwrap()).unwrap()
    }

    fn schoolbook_negacyclic(a: &[u64], b: &[u64], m: &Modulus) -> Vec<u64> {
        let n = a.len();
        let mut out = vec![0u64; n];
        for i in 0..n {
            for j in 0..n {
                let p = m.mul(a[i], b[j]);
                let k = i + j;
                if k < n {
                    out[k] = m.add(out[k], p);
                } else {
                    out[k - n] = m.sub(out[k - n], p);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn ntt_multiplies_negacyclically(log_n in 4u32..8, bits in prop::sample::select(vec![30u32, 45, 55, 61]), seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let t = table(log_n, bits);
            let m = *t.modulus();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<u64> = (0..t.n()).map(|_| rng.gen_range(0..m.value())).collect();
            let b: Vec<u64> = (0..t.n()).map(|_| rng.gen_range(0..m.value())).collect();
            let expected = schoolbook_negacyclic(&a, &b, &m);
            let (mut fa, mut fb) = (a.clone(), b.clone());
            t.forward(&mut fa);
            t.forward(&mut fb);
            let mut prod: Vec<u64> = fa.iter().zip(&fb).map(|(&x, &y)| m.mul(x, y)).collect();
            t.inverse(&mut prod);
            prop_assert_eq!(prod, expected);
            let mut back = fa.clone();
            t.inverse(&mut back);
            prop_assert_eq!(back, a);
        }

        #[test]
        fn ifma_equals_portable(log_n in 4u32..13, bits in prop::sample::select(vec![20u32, 36, 40, 49, 52, 55, 60, 61]), seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let t = table(log_n, bits);
            let q = t.modulus().value();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<u64> = (0..t.n()).map(|_| rng.gen_range(0..q)).collect();
            let (mut fast, mut slow) = (a.clone(), a.clone());
            t.forward(&mut fast);
            t.forward_portable(&mut slow);
            prop_assert_eq!(&fast, &slow);
            t.inverse(&mut fast);
            t.inverse_portable(&mut slow);
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(fast, a);
        }

        /// The sparse transform of a polynomial in `X^(n / m)` is the full
        /// transform with each value repeated `n / m` times (both paths,
        /// checked against the portable full transform).
        #[test]
        fn sparse_transform_repeats_the_full_one(log_n in 4u32..12, log_gap in 0u32..12, bits in prop::sample::select(vec![36u32, 40, 49, 59, 60, 61]), seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let t = table(log_n, bits);
            let n = t.n();
            let gap = 1usize << log_gap.min(log_n);
            let m = n / gap;
            let q = t.modulus().value();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let compact: Vec<u64> = (0..m).map(|_| rng.gen_range(0..q)).collect();
            let mut full = vec![0u64; n];
            for (k, &c) in compact.iter().enumerate() {
                full[k * gap] = c;
            }
            t.forward_portable(&mut full);
            let mut sparse = compact.clone();
            t.forward_sparse(&mut sparse);
            let mut sparse_portable = compact;
            t.forward_portable_len(&mut sparse_portable);
            prop_assert_eq!(&sparse, &sparse_portable);
            for (i, &v) in full.iter().enumerate() {
                prop_assert_eq!(v, sparse[i / gap], "output {}", i);
            }
        }
    }

    #[test]
    fn slot_exponents_match_evaluation() {
        let t = table(5, 30);
        let m = *t.modulus();
        let psi = primitive_root(&m, 64).unwrap();
        let a: Vec<u64> = (0..32u64).map(|i| i * 7 + 3).collect();
        let mut f = a.clone();
        t.forward(&mut f);
        for i in 0..32 {
            let e = t.slot_exponent(i);
            assert_eq!(t.slot_of_exponent(e), i);
            let x = m.pow(psi, e as u64);
            let mut acc = 0u64;
            for &c in a.iter().rev() {
                acc = m.add(m.mul(acc, x), c);
            }
            assert_eq!(f[i], acc, "slot {i}");
        }
    }

    #[test]
    fn ifma_is_used_when_available() {
        let t = table(12, 40);
        assert_eq!(t.uses_ifma(), ifma_available());
        assert!(!table(12, 55).uses_ifma());
    }
}
