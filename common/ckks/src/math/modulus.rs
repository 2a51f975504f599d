//! Arithmetic modulo a word-size prime (up to 61 bits).
//!
//! Two reductions are provided:
//! - Barrett reduction of a full 128-bit product, for products of two
//!   variable operands (`mul`, `reduce_u128`);
//! - Shoup multiplication, for products with an operand known in advance
//!   (twiddle factors, key-switching constants), which costs one high
//!   multiplication and one low multiplication.
//!
//! The bound of 61 bits leaves room for the lazy reductions of the NTT, whose
//! intermediate values live in `[0, 4q)`.

use serde::{Deserialize, Serialize};

/// Largest supported modulus bit size. `4q` must fit in a `u64` for the lazy
/// NTT, and `3q` for the Barrett estimate.
pub const MAX_MODULUS_BITS: u32 = 61;

/// A prime modulus with its precomputed Barrett constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u64", try_from = "u64")]
pub struct Modulus {
    value: u64,
    /// floor(2^128 / q), low and high words.
    ratio_lo: u64,
    ratio_hi: u64,
}

impl From<Modulus> for u64 {
    fn from(m: Modulus) -> u64 {
        m.value
    }
}

impl TryFrom<u64> for Modulus {
    type Error = crate::CkksError;
    fn try_from(q: u64) -> Result<Self, Self::Error> {
        Modulus::new(q)
    }
}

impl Modulus {
    /// Builds a modulus; `q` must be odd, at least 3, and at most 61 bits.
    pub fn new(q: u64) -> Result<Self, crate::CkksError> {
        if q < 3 || q.is_multiple_of(2) || 64 - q.leading_zeros() > MAX_MODULUS_BITS {
            return Err(crate::CkksError::InvalidParameters(format!(
                "modulus {q} must be odd, at least 3 and at most {MAX_MODULUS_BITS} bits"
            )));
        }
        // floor(2^128 / q) = floor((2^128 - 1) / q) because q is odd (not a
        // power of two), so 2^128 is not a multiple of q.
        let ratio = u128::MAX / q as u128;
        Ok(Self { value: q, ratio_lo: ratio as u64, ratio_hi: (ratio >> 64) as u64 })
    }

    /// The modulus value.
    #[inline(always)]
    pub const fn value(&self) -> u64 {
        self.value
    }

    /// Bit size of the modulus.
    pub fn bits(&self) -> u32 {
        64 - self.value.leading_zeros()
    }

    /// `a + b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let s = a + b;
        if s >= self.value {
            s - self.value
        } else {
            s
        }
    }

    /// `a - b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        if a >= b {
            a - b
        } else {
            a + self.value - b
        }
    }

    /// `-a mod q` for `a < q`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        if a == 0 {
            0
        } else {
            self.value - a
        }
    }

    /// Reduces any 128-bit value modulo `q` (Barrett).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let lo = x as u64;
        let hi = (x >> 64) as u64;
        // Estimate floor(x * floor(2^128/q) / 2^128); it undershoots the true
        // quotient by at most 2, hence the two conditional subtractions.
        let lo_rlo_hi = ((lo as u128 * self.ratio_lo as u128) >> 64) as u64;
        let mid = lo as u128 * self.ratio_hi as u128 + hi as u128 * self.ratio_lo as u128 + lo_rlo_hi as u128;
        let quotient = (hi.wrapping_mul(self.ratio_hi)).wrapping_add((mid >> 64) as u64);
        let mut r = lo.wrapping_sub(quotient.wrapping_mul(self.value));
        if r >= self.value {
            r -= self.value;
        }
        if r >= self.value {
            r -= self.value;
        }
        r
    }

    /// Reduces a 64-bit value modulo `q`.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        self.reduce_u128(x as u128)
    }

    /// Reduces a signed value modulo `q` into `[0, q)`.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        if x >= 0 {
            self.reduce(x as u64)
        } else {
            self.neg(self.reduce(x.unsigned_abs()))
        }
    }

    /// Reduces a signed 128-bit value modulo `q` into `[0, q)`.
    #[inline(always)]
    pub fn reduce_i128(&self, x: i128) -> u64 {
        if x >= 0 {
            self.reduce_u128(x as u128)
        } else {
            self.neg(self.reduce_u128(x.unsigned_abs()))
        }
    }

    /// `a * b mod q` for `a, b < 2^64` (Barrett on the 128-bit product).
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(a as u128 * b as u128)
    }

    /// The Shoup constant `floor(w * 2^64 / q)` for a fixed operand `w < q`.
    #[inline(always)]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.value as u128) as u64
    }

    /// `a * w mod q` in `[0, 2q)`, with `w_shoup = shoup(w)`; `a` may be any
    /// 64-bit value.
    #[inline(always)]
    pub fn mul_shoup_lazy(&self, a: u64, w: u64, w_shoup: u64) -> u64 {
        let q_est = ((a as u128 * w_shoup as u128) >> 64) as u64;
        a.wrapping_mul(w).wrapping_sub(q_est.wrapping_mul(self.value))
    }

    /// `a * w mod q` in `[0, q)`.
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: u64, w_shoup: u64) -> u64 {
        let r = self.mul_shoup_lazy(a, w, w_shoup);
        if r >= self.value {
            r - self.value
        } else {
            r
        }
    }

    /// `a^e mod q`.
    pub fn pow(&self, mut a: u64, mut e: u64) -> u64 {
        let mut r = 1u64 % self.value;
        a %= self.value;
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, a);
            }
            a = self.mul(a, a);
            e >>= 1;
        }
        r
    }

    /// Inverse of `a` modulo the prime `q`; `None` when `a = 0 mod q`.
    pub fn inv(&self, a: u64) -> Option<u64> {
        let a = a % self.value;
        if a == 0 {
            None
        } else {
            Some(self.pow(a, self.value - 2))
        }
    }

    /// Centered representative of `a < q` in `(-q/2, q/2]`.
    #[inline(always)]
    pub fn center(&self, a: u64) -> i64 {
        if a > self.value / 2 {
            -((self.value - a) as i64)
        } else {
            a as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRIMES: [u64; 4] = [
        0x1fff_ffff_ffe0_0001, // 61 bits
        1_152_921_504_606_584_833,
        1_099_511_480_321, // 40 bits
        65537,
    ];

    proptest! {
        #[test]
        fn barrett_matches_u128_remainder(x in any::<u128>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            prop_assert_eq!(m.reduce_u128(x), (x % PRIMES[i] as u128) as u64);
        }

        #[test]
        fn shoup_matches_barrett(a in any::<u64>(), w in any::<u64>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            let w = w % m.value();
            let lazy = m.mul_shoup_lazy(a, w, m.shoup(w));
            prop_assert!(lazy < 2 * m.value());
            prop_assert_eq!(m.mul_shoup(a, w, m.shoup(w)), m.mul(a % m.value(), w));
        }

        #[test]
        fn signed_reduction(x in any::<i128>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]).unwrap();
            prop_assert_eq!(m.reduce_i128(x) as i128, x.rem_euclid(PRIMES[i] as i128));
        }
    }

    #[test]
    fn inverse_and_rejections() {
        let m = Modulus::new(PRIMES[2]).unwrap();
        let a = 123_456_789;
        assert_eq!(m.mul(a, m.inv(a).unwrap()), 1);
        assert!(m.inv(0).is_none());
        assert!(Modulus::new(1 << 62 | 1).is_err());
        assert!(Modulus::new(1024).is_err());
    }
}
