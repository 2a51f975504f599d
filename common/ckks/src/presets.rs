//! Named parameter presets, named by content: ring degree, log2(QP) and
//! secret (`TERN` dense ternary, `H<w>` sparse with Hamming weight w).
//! Presets whose name starts with `INSECURE` are for tests only.
//!
//! | name | N | chain (bits) | special | dnum | scale | depth | secure |
//! |---|---|---|---|---|---|---|---|
//! | `INSECURE_N11_QP230_TEST` | 2^11 | 50 + 4 x 30 | 2 x 30 (< 2^30) | 5 | 2^30 | 4 | no |
//! | `INSECURE_N12_QP640_TEST` | 2^12 | 55 + 9 x 40 | 5 x 45 (< 2^45) | 3 | 2^40 | 9 | no |
//! | `N15_QP860_TERN` | 2^15 | 60 + 14 x 40 | 4 x 60 | 3 | 2^40 | 14 | 128-bit |
//! | `N16_QP1500_TERN` (alias `bench-n16-l27`) | 2^16 | 60 + 26 x 40 | 8 x 50 (< 2^50) | 3 | 2^40 | 26 | 128-bit |
//! | `N16_QP1420_H192` | 2^16 | 60 + 24 x 40 | 8 x 50 (< 2^50) | 3 | 2^40 | 24 | 128-bit (h = 192) |
//! | `N16_QP1545_H192` (bootstrapping) | 2^16 | 50 + 12 x 40 + 10 x 59 + 3 x 60 | 5 x 49 | 7 | 2^40 | 25 (9 after bootstrapping) | 128-bit (h = 192) |
//! | `N16_QP1525_H192` (bootstrapping, deep) | 2^16 | 50 + 14 x 40 + 10 x 49 + 3 x 60 | 5 x 49 | 7 | 2^40 | 27 (11 after bootstrapping) | 128-bit (h = 192) |
//! | `INSECURE_N12_QP1121_H32_BOOT_TEST` | 2^12 | 50 + 5 x 40 + 9 x 55 + 3 x 60 | 4 x 49 | 6 | 2^40 | 17 (2 after bootstrapping) | no |
//!
//! Special primes below 2^50 keep the key-switching NTTs on the IFMA path;
//! 40-bit chain primes generated around 2^40 keep the scale within a few
//! parts per million of 2^40 through rescaling.

use crate::error::CkksError;
use crate::params::{ParametersLiteral, Primes, SecretDistribution, SecurityLevel};

/// Names of every preset.
pub const NAMES: &[&str] = &[
    "INSECURE_N11_QP230_TEST",
    "INSECURE_N12_QP640_TEST",
    "INSECURE_N12_QP1121_H32_BOOT_TEST",
    "INSECURE_N12_QP1500_DEEP_TEST",
    "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST",
    "N13_QP147_TERN",
    "N15_QP860_TERN",
    "N16_QP1500_TERN",
    "N16_QP1420_H192",
    "N16_QP1545_H192",
    "N16_QP1525_H192",
];

fn lit(
    log_n: u32,
    q: Vec<u32>,
    p: Vec<u32>,
    dnum: usize,
    log_scale: u32,
    secret: SecretDistribution,
    security: SecurityLevel,
) -> ParametersLiteral {
    ParametersLiteral {
        log_n,
        q: Primes::Bits(q),
        p: Primes::Bits(p),
        dnum,
        log_default_scale: log_scale,
        secret,
        error_std: 3.2,
        security,
    }
}

fn chain(first: u32, rest: u32, count: usize) -> Vec<u32> {
    std::iter::once(first).chain(std::iter::repeat_n(rest, count)).collect()
}

/// The 128-bit full-slot bootstrapping chains at N = 2^16 (h = 192): q0
/// of 50 bits, `forty_bit` levels of 40 bits (user and SlotToCoeff), 10
/// EvalMod levels of `eval_mod_bits`, 3 CoeffToSlot levels of 60 bits; 5
/// special primes of 49 bits, dnum 7, scale 2^40.
fn n16_h192_bootstrapping(forty_bit: usize, eval_mod_bits: u32) -> ParametersLiteral {
    let q = std::iter::once(50)
        .chain(std::iter::repeat_n(40, forty_bit))
        .chain(std::iter::repeat_n(eval_mod_bits, 10))
        .chain([60; 3])
        .collect();
    let secret = SecretDistribution::SparseTernary { hamming_weight: 192 };
    lit(16, q, vec![49; 5], 7, 40, secret, SecurityLevel::Bits128)
}

/// The literal of a named preset.
pub fn literal(name: &str) -> Result<ParametersLiteral, CkksError> {
    use SecretDistribution::*;
    use SecurityLevel::*;
    Ok(match name {
        "INSECURE_N11_QP230_TEST" => lit(11, chain(50, 30, 4), vec![30; 2], 5, 30, Ternary, InsecureTestOnly),
        "INSECURE_N12_QP640_TEST" => lit(12, chain(55, 40, 9), vec![45; 5], 3, 40, Ternary, InsecureTestOnly),
        // Bootstrapping at test size: q0 (50 bits, so q0 / scale = 2^10),
        // 2 user levels and 3 SlotToCoeff levels (40 bits), 9 EvalMod levels
        // (55 bits), 3 CoeffToSlot levels (60 bits: they must keep the small
        // m / q0 next to the large q0 I); sparse secret h = 32 (insecure).
        "INSECURE_N12_QP1121_H32_BOOT_TEST" => lit(
            12,
            std::iter::once(50).chain([40; 5]).chain([55; 9]).chain([60; 3]).collect(),
            vec![49; 4],
            6,
            40,
            SparseTernary { hamming_weight: 32 },
            InsecureTestOnly,
        ),
        // The N = 2^16 bench chain (27 levels of 40 bits) at test size, for
        // deep circuits (operators) in the default suite.
        "INSECURE_N12_QP1500_DEEP_TEST" => lit(12, chain(60, 40, 26), vec![50; 8], 3, 40, Ternary, InsecureTestOnly),
        // NEXUS compressed-input products: two 49-bit chain primes (IFMA
        // NTTs) and one special prime, one prime per digit; scale 2^36 so the
        // expansion's key-switch noise (about 2^22 per coefficient after 13
        // steps) stays 2^-20 below the expanded values. log QP = 147 <= 218.
        "N13_QP147_TERN" => lit(13, vec![49, 49], vec![49], 2, 36, Ternary, Bits128),
        // The test bootstrapping chain with ten more 40-bit levels after
        // bootstrapping (13), for operators that refresh (comparisons).
        "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST" => lit(
            12,
            std::iter::once(50).chain([40; 15]).chain([55; 9]).chain([60; 3]).collect(),
            vec![49; 4],
            10,
            40,
            SparseTernary { hamming_weight: 32 },
            InsecureTestOnly,
        ),
        "N15_QP860_TERN" => lit(15, chain(60, 40, 14), vec![60; 4], 3, 40, Ternary, Bits128),
        "N16_QP1500_TERN" | "bench-n16-l27" => lit(16, chain(60, 40, 26), vec![50; 8], 3, 40, Ternary, Bits128),
        "N16_QP1420_H192" => {
            lit(16, chain(60, 40, 24), vec![50; 8], 3, 40, SparseTernary { hamming_weight: 192 }, Bits128)
        }
        // Full-slot bootstrapping at 128 bits (sparse secret, h = 192,
        // bound 1546): q0 50 bits (q0 / scale = 2^10), 9 user + 3
        // SlotToCoeff levels of 40 bits, 10 EvalMod levels of 59 bits (the
        // EvalMod noise is relative to its scale and dominates the
        // bootstrapping error: 59 rather than 55 bits uses the security
        // budget's last 40 bits for ~1 bit of precision at no cost in
        // limbs), 3 CoeffToSlot levels of 60 bits; 5 special primes, dnum 7.
        "N16_QP1545_H192" => n16_h192_bootstrapping(12, 59),
        // The same bootstrapping with EvalMod on 49-bit primes: 100 bits
        // of the budget go to two more 40-bit levels after bootstrapping
        // (11 instead of 9 per refresh, so deep circuits such as a
        // transformer layer bootstrap less often), and EvalMod's
        // arithmetic runs on the IFMA path (primes below 2^50): 11.4 s
        // against 12.8 s per bootstrap. Its EvalMod noise is relative to
        // 2^49 instead of 2^59: 15.3 / 13.3 bits mean / worst slot instead
        // of 25.3 / 23.3 (docs/PERFORMANCE.md).
        "N16_QP1525_H192" => n16_h192_bootstrapping(14, 49),
        other => {
            return Err(CkksError::InvalidParameters(format!(
                "unknown preset {other:?}; known presets: {}",
                NAMES.join(", ")
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Parameters;

    #[test]
    fn names_match_contents_and_security() {
        for name in NAMES {
            let params = Parameters::preset(name).unwrap();
            let qp: f64 = name.split('_').find_map(|t| t.strip_prefix("QP")).unwrap().parse().unwrap();
            assert!((params.log_qp() - qp).abs() < 1.0, "{name}: log QP {}", params.log_qp());
            let n: u32 = name.split('_').find_map(|t| t.strip_prefix('N')).unwrap().parse().unwrap();
            assert_eq!(params.log_n(), n);
            assert_eq!(params.is_secure(), !name.starts_with("INSECURE"), "{name}");
        }
    }

    #[test]
    fn insecure_sizes_are_refused_when_security_is_required() {
        let mut l = literal("INSECURE_N12_QP640_TEST").unwrap();
        l.security = SecurityLevel::Bits128;
        let err = Parameters::new(l).unwrap_err();
        assert!(err.to_string().contains("exceeds the 128-bit bound"), "{err}");
        let mut l = literal("N16_QP1420_H192").unwrap();
        l.secret = SecretDistribution::SparseTernary { hamming_weight: 64 };
        assert!(Parameters::new(l).is_err());
        let mut l = literal("N16_QP1500_TERN").unwrap();
        l.q = Primes::Bits(chain(60, 40, 26).into_iter().chain([40; 8]).collect());
        assert!(Parameters::new(l).is_err());
    }

    #[test]
    fn malformed_literals_are_rejected_with_reasons() {
        let mut l = literal("INSECURE_N11_QP230_TEST").unwrap();
        l.dnum = 9;
        assert!(Parameters::new(l).unwrap_err().to_string().contains("dnum"));
        let mut l = literal("INSECURE_N11_QP230_TEST").unwrap();
        l.q = Primes::Values(vec![97, 193]);
        assert!(Parameters::new(l).unwrap_err().to_string().contains("not a prime congruent"));
        let mut l = literal("INSECURE_N11_QP230_TEST").unwrap();
        l.p = Primes::Bits(vec![20]);
        assert!(Parameters::new(l).unwrap_err().to_string().contains("special primes"));
        assert!(Parameters::preset("nope").unwrap_err().to_string().contains("known presets"));
    }
}

#[cfg(test)]
mod limits {
    use crate::{Parameters, ParametersLiteral, Primes, SecretDistribution, SecurityLevel};

    #[test]
    fn oversized_and_degenerate_literals_are_errors_not_panics() {
        let base = ParametersLiteral {
            log_n: 17,
            q: Primes::Bits(vec![10]),
            p: Primes::Bits(vec![30]),
            dnum: 1,
            log_default_scale: 5,
            secret: SecretDistribution::Ternary,
            error_std: 3.2,
            security: SecurityLevel::InsecureTestOnly,
        };
        // A 10-bit prime cannot be 1 mod 2N = 2^18.
        assert!(Parameters::new(base.clone()).is_err());
        let many = ParametersLiteral { q: Primes::Bits(vec![40; 200]), ..base.clone() };
        assert!(Parameters::new(many).unwrap_err().to_string().contains("limit"));
        let huge = ParametersLiteral { q: Primes::Bits(vec![64]), ..base };
        assert!(Parameters::new(huge).is_err());
    }
}
