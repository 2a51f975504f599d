//! NTT-friendly prime generation and primitive roots.

use super::modulus::Modulus;
use crate::CkksError;

/// Deterministic Miller-Rabin for all 64-bit integers (these witnesses are
/// known to be sufficient below 3.3e24).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    'witness: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Generates `count` distinct primes `q = 1 mod 2n`, as close as possible to
/// `2^bits`, alternating above and below it so that a chain of rescalings by
/// these primes keeps the scale near `2^bits`. Primes in `exclude` are skipped.
/// The primes never reach `2^(bits+1)` nor fall below `2^(bits-1)`.
pub fn ntt_primes_near(bits: u32, n: usize, count: usize, exclude: &[u64]) -> Result<Vec<u64>, CkksError> {
    let step = 2 * n as u64;
    if !(10..=super::modulus::MAX_MODULUS_BITS).contains(&bits) || (1u64 << bits) <= step {
        return Err(CkksError::InvalidParameters(format!(
            "prime size {bits} bits must be in 10..=61 and exceed log2(2N) = {}",
            step.trailing_zeros()
        )));
    }
    let center = 1u64 << bits;
    let mut up = center + 1; // = 1 mod 2n since 2n divides 2^bits (2n <= 2^bits)
    let mut down = center + 1 - step;
    let upper_limit = if bits == super::modulus::MAX_MODULUS_BITS { center + (center - 1) } else { center << 1 };
    let lower_limit = center >> 1;
    let mut out = Vec::with_capacity(count);
    let mut take_up = true;
    while out.len() < count {
        let up_ok = up < upper_limit && 64 - up.leading_zeros() <= super::modulus::MAX_MODULUS_BITS;
        let down_ok = down > lower_limit;
        if !up_ok && !down_ok {
            return Err(CkksError::InvalidParameters(format!(
                "not enough {bits}-bit primes congruent to 1 mod {step}"
            )));
        }
        let candidate = if (take_up && up_ok) || !down_ok {
            let c = up;
            up += step;
            c
        } else {
            let c = down;
            down -= step;
            c
        };
        if is_prime(candidate) && !exclude.contains(&candidate) && !out.contains(&candidate) {
            out.push(candidate);
            take_up = !take_up;
        }
    }
    Ok(out)
}

/// Generates `count` distinct primes `q = 1 mod 2n` strictly below `2^bits`,
/// largest first (used where a prime must stay under a bound, e.g. the
/// special primes kept below 2^50 for the IFMA path).
pub fn ntt_primes_below(bits: u32, n: usize, count: usize, exclude: &[u64]) -> Result<Vec<u64>, CkksError> {
    let step = 2 * n as u64;
    if !(10..=super::modulus::MAX_MODULUS_BITS).contains(&bits) || (1u64 << bits) <= step {
        return Err(CkksError::InvalidParameters(format!(
            "prime size {bits} bits must be in 10..=61 and exceed log2(2N) = {}",
            step.trailing_zeros()
        )));
    }
    let mut c = (1u64 << bits) + 1 - step;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if c <= (1u64 << (bits - 1)) {
            return Err(CkksError::InvalidParameters(format!(
                "not enough primes below 2^{bits} congruent to 1 mod {step}"
            )));
        }
        if is_prime(c) && !exclude.contains(&c) {
            out.push(c);
        }
        c -= step;
    }
    Ok(out)
}

/// A primitive `order`-th root of unity modulo the prime `q` (`order` a power
/// of two dividing `q - 1`); the smallest such root, so results are
/// reproducible across runs and machines.
pub fn primitive_root(q: &Modulus, order: u64) -> Result<u64, CkksError> {
    let qv = q.value();
    if order == 0 || !order.is_power_of_two() || !(qv - 1).is_multiple_of(order) {
        return Err(CkksError::InvalidParameters(format!("{qv} has no primitive {order}-th root of unity")));
    }
    let cofactor = (qv - 1) / order;
    // The smallest primitive root is found among small generators quickly.
    for g in 2..qv {
        let r = q.pow(g, cofactor);
        // r has order dividing `order`; it is primitive iff r^(order/2) = -1.
        if q.pow(r, order / 2) == qv - 1 {
            // Pick the smallest among the primitive roots generated by r to
            // make the choice canonical: the powers r^k for odd k.
            let mut best = r;
            let mut cur = r;
            let r2 = q.mul(r, r);
            for _ in 0..order / 2 {
                if cur < best {
                    best = cur;
                }
                cur = q.mul(cur, r2);
            }
            return Ok(best);
        }
    }
    Err(CkksError::InvalidParameters(format!("no primitive root found modulo {qv}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primality() {
        assert!(is_prime(65537));
        assert!(is_prime(0x1fff_ffff_ffe0_0001));
        assert!(!is_prime(561)); // Carmichael
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to 2,3,5,7
    }

    #[test]
    fn generated_primes_are_ntt_friendly_and_distinct() {
        let n = 1 << 12;
        let ps = ntt_primes_near(40, n, 10, &[]).unwrap();
        for &p in &ps {
            assert!(is_prime(p));
            assert_eq!(p % (2 * n as u64), 1);
            assert!(p.abs_diff(1 << 40) < 1 << 30);
        }
        let mut sorted = ps.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ps.len());
        let below = ntt_primes_below(50, n, 3, &ps).unwrap();
        assert!(below.iter().all(|&p| p < 1 << 50 && is_prime(p)));
    }

    #[test]
    fn roots_have_exact_order() {
        let q = Modulus::new(ntt_primes_near(40, 1 << 10, 1, &[]).unwrap()[0]).unwrap();
        let r = primitive_root(&q, 2048).unwrap();
        assert_eq!(q.pow(r, 2048), 1);
        assert_eq!(q.pow(r, 1024), q.value() - 1);
    }
}
