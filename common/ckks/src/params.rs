//! CKKS parameters: an unchecked [`ParametersLiteral`] becomes an immutable,
//! validated [`Parameters`] only through [`Parameters::new`].
//!
//! # Security bound
//! The total modulus `log2(QP)` (chain primes and special primes, since
//! key-switching keys live modulo `QP`) must stay within the 128-bit classical
//! bound for the ring degree and secret distribution:
//!
//! | log N | ternary secret (HE standard v1.1, Table 1, sigma = 3.2) | sparse ternary, h >= 192 |
//! |---|---|---|
//! | 10 | 27 | 24 |
//! | 11 | 54 | 48 |
//! | 12 | 109 | 96 |
//! | 13 | 218 | 193 |
//! | 14 | 438 | 387 |
//! | 15 | 881 | 779 |
//! | 16 | 1747 | 1546 |
//!
//! The ternary column for log N <= 15 is the HomomorphicEncryption.org
//! standard's table; log N = 16 is the value the same estimator methodology
//! gives (as tabulated by OpenFHE, below the commonly quoted linear
//! extrapolation 1761). Sparse secrets are easier to attack (hybrid attacks
//! guess the few non-zero positions); for Hamming weight 192 we use the
//! bound 1546 at log N = 16 given by the lattice-estimator runs behind
//! Lattigo's `N16QP1546H192` bootstrapping parameters, scaled by the same
//! factor (0.885) for smaller rings. Hamming weights below 192 are refused
//! unless the literal says `InsecureTestOnly` (which parameters decoded from
//! the wire never may).

use crate::error::CkksError;
use crate::math::primes::{ntt_primes_below, ntt_primes_near};
use crate::math::{BasisConverter, Modulus};
use crate::ring::{Backend, CpuBackend, ModDownRescale, RingContext};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Distribution of the secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretDistribution {
    /// Uniform over {-1, 0, 1}.
    Ternary,
    /// Exactly `hamming_weight` coefficients in {-1, 1}, the rest zero.
    SparseTernary {
        /// Number of non-zero coefficients.
        hamming_weight: usize,
    },
}

/// Security target checked at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityLevel {
    /// 128-bit classical security; enforced.
    Bits128,
    /// No check: small rings for tests only. Presets using it say
    /// `INSECURE` in their name.
    InsecureTestOnly,
}

/// How the primes are chosen: explicit values, or bit sizes to generate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Primes {
    /// Explicit primes.
    Values(Vec<u64>),
    /// Bit sizes; chain primes are generated near `2^bits`, special primes
    /// strictly below `2^bits`.
    Bits(Vec<u32>),
}

/// Unchecked parameters, as written in configuration files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParametersLiteral {
    /// log2 of the ring degree N.
    pub log_n: u32,
    /// Chain primes `q_0..q_L` (q_0 first, the one kept at level 0).
    pub q: Primes,
    /// Special primes for hybrid key switching.
    pub p: Primes,
    /// Number of key-switching digits (dnum).
    pub dnum: usize,
    /// log2 of the default encoding scale.
    pub log_default_scale: u32,
    /// Secret-key distribution.
    pub secret: SecretDistribution,
    /// Standard deviation of the error distribution.
    pub error_std: f64,
    /// Enforced security level.
    pub security: SecurityLevel,
}

/// Most primes (chain plus special) a parameter set may have; bounds the
/// work and memory of validating an untrusted literal.
pub const MAX_PRIMES: usize = 128;

/// 128-bit bound on log2(QP) for a ternary secret (see the module docs).
pub fn max_log_qp_ternary(log_n: u32) -> Option<f64> {
    Some(match log_n {
        10 => 27.0,
        11 => 54.0,
        12 => 109.0,
        13 => 218.0,
        14 => 438.0,
        15 => 881.0,
        16 => 1747.0,
        _ => return None,
    })
}

/// 128-bit bound on log2(QP) for a secret of the given distribution.
pub fn max_log_qp(log_n: u32, secret: SecretDistribution) -> Option<f64> {
    let dense = max_log_qp_ternary(log_n)?;
    match secret {
        SecretDistribution::Ternary => Some(dense),
        SecretDistribution::SparseTernary { hamming_weight } if hamming_weight >= 192 => {
            Some(if log_n == 16 { 1546.0 } else { (dense * 1546.0 / 1747.0).floor() })
        }
        SecretDistribution::SparseTernary { .. } => None,
    }
}

/// Precomputed constants for one level of hybrid key switching.
#[derive(Debug)]
pub(crate) struct LevelTables {
    /// Per active digit: converter from the digit's limbs to the other chain
    /// limbs of this level followed by the special primes.
    pub mod_up: Vec<BasisConverter>,
    /// ModDown and rescale in one division (none at level 0).
    pub mod_down_rescale: Option<ModDownRescale>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub literal: ParametersLiteral,
    pub q: Vec<u64>,
    pub p: Vec<u64>,
    pub alpha: usize,
    pub ring: Arc<RingContext>,
    pub levels: Vec<LevelTables>,
    /// Special primes -> all chain primes (prefixes serve lower levels).
    pub mod_down: BasisConverter,
    /// `P^-1 mod q_i`.
    pub p_inv_mod_q: Vec<u64>,
    /// `P mod q_i` (the gadget factor).
    pub p_mod_q: Vec<u64>,
    /// `q_l^-1 mod q_i` at `[l][i]` for `i < l`.
    pub rescale_inv: Vec<Vec<u64>>,
    pub digest: [u8; 32],
}

/// Validated, immutable CKKS parameters (cheap to clone).
#[derive(Clone, Debug)]
pub struct Parameters(pub(crate) Arc<Inner>);

impl PartialEq for Parameters {
    fn eq(&self, other: &Self) -> bool {
        self.0.digest == other.0.digest
    }
}

impl Parameters {
    /// Validates a literal with the CPU backend.
    pub fn new(literal: ParametersLiteral) -> Result<Self, CkksError> {
        Self::with_backend(literal, Arc::new(CpuBackend))
    }

    /// Validates a literal and runs its polynomial arithmetic on `backend`.
    pub fn with_backend(literal: ParametersLiteral, backend: Arc<dyn Backend>) -> Result<Self, CkksError> {
        let invalid = |s: String| Err(CkksError::InvalidParameters(s));
        if !(4..=17).contains(&literal.log_n) {
            return invalid(format!("log_n = {} is outside 4..=17", literal.log_n));
        }
        let n = 1usize << literal.log_n;
        let count = |p: &Primes| match p {
            Primes::Values(v) => v.len(),
            Primes::Bits(b) => b.len(),
        };
        if count(&literal.q) + count(&literal.p) > MAX_PRIMES {
            return invalid(format!(
                "{} primes exceed the limit of {MAX_PRIMES}",
                count(&literal.q) + count(&literal.p)
            ));
        }
        let q = match &literal.q {
            Primes::Values(v) => v.clone(),
            Primes::Bits(bits) => generate(bits, n, &[], ntt_primes_near)?,
        };
        let p = match &literal.p {
            Primes::Values(v) => v.clone(),
            Primes::Bits(bits) => generate(bits, n, &q, ntt_primes_below)?,
        };
        if q.is_empty() {
            return invalid("at least one chain prime is required".into());
        }
        if p.is_empty() {
            return invalid("at least one special prime is required for key switching".into());
        }
        let all: Vec<u64> = q.iter().chain(&p).copied().collect();
        for (i, &x) in all.iter().enumerate() {
            if !crate::math::primes::is_prime(x) || x % (2 * n as u64) != 1 {
                return invalid(format!("{x} is not a prime congruent to 1 mod 2N = {}", 2 * n));
            }
            if all[..i].contains(&x) {
                return invalid(format!("prime {x} appears twice"));
            }
            Modulus::new(x)?;
        }
        if literal.dnum == 0 || literal.dnum > q.len() {
            return invalid(format!("dnum = {} must be in 1..={}", literal.dnum, q.len()));
        }
        if !(literal.error_std.is_finite() && literal.error_std > 0.0 && literal.error_std < 1e3) {
            return invalid(format!("error standard deviation {} is not in (0, 1000)", literal.error_std));
        }
        if let SecretDistribution::SparseTernary { hamming_weight } = literal.secret {
            if hamming_weight == 0 || hamming_weight > n {
                return invalid(format!("Hamming weight {hamming_weight} must be in 1..={n}"));
            }
        }
        let alpha = q.len().div_ceil(literal.dnum);
        let log = |v: &[u64]| v.iter().map(|&x| (x as f64).log2()).sum::<f64>();
        let log_p = log(&p);
        let max_digit = q.chunks(alpha).map(log).fold(0.0, f64::max);
        if log_p + 1.0 < max_digit {
            return invalid(format!(
                "special primes ({log_p:.1} bits) must cover the largest key-switching digit ({max_digit:.1} bits); \
                 add special primes or raise dnum"
            ));
        }
        let first_bits = (q[0] as f64).log2();
        if (literal.log_default_scale as f64) >= first_bits || literal.log_default_scale < 10 {
            return invalid(format!(
                "default scale 2^{} must be at least 2^10 and below q_0 (2^{first_bits:.1})",
                literal.log_default_scale
            ));
        }
        let log_qp = log(&all);
        if literal.security == SecurityLevel::Bits128 {
            match max_log_qp(literal.log_n, literal.secret) {
                None => {
                    return invalid(format!(
                        "no 128-bit security bound is known for log_n = {} with secret {:?}",
                        literal.log_n, literal.secret
                    ))
                }
                Some(bound) if log_qp > bound => {
                    return invalid(format!(
                        "log2(QP) = {log_qp:.1} exceeds the 128-bit bound {bound} for N = 2^{} and secret {:?}",
                        literal.log_n, literal.secret
                    ))
                }
                Some(_) => {}
            }
        }
        let ring = Arc::new(RingContext::new(n, &q, &p, backend)?);
        let qm = ring.q().to_vec();
        let pm = ring.p().to_vec();
        let levels = (0..q.len())
            .map(|level| {
                let active = level + 1;
                let mod_up = (0..active.div_ceil(alpha))
                    .map(|j| {
                        let start = j * alpha;
                        let end = ((j + 1) * alpha).min(active);
                        let targets: Vec<Modulus> = qm[..active]
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i < start || *i >= end)
                            .map(|(_, m)| *m)
                            .chain(pm.iter().copied())
                            .collect();
                        BasisConverter::new(&qm[start..end], &targets)
                    })
                    .collect();
                mod_up
            })
            .collect::<Vec<_>>();
        let mod_down = BasisConverter::new(&pm, &qm);
        let p_mod_q: Vec<u64> =
            qm.iter().map(|qi| p.iter().fold(1u64, |acc, &pj| qi.mul(acc, pj % qi.value()))).collect();
        let p_inv_mod_q = qm
            .iter()
            .zip(&p_mod_q)
            .map(|(qi, &pm)| qi.inv(pm).ok_or_else(|| CkksError::InvalidParameters("P not invertible mod q".into())))
            .collect::<Result<Vec<_>, _>>()?;
        let rescale_inv: Vec<Vec<u64>> =
            (0..qm.len()).map(|l| qm[..l].iter().map(|qi| qi.inv(q[l] % qi.value()).unwrap_or(0)).collect()).collect();
        let levels = levels
            .into_iter()
            .enumerate()
            .map(|(l, mod_up)| {
                let mod_down_rescale = (l > 0).then(|| {
                    let sources: Vec<Modulus> = std::iter::once(qm[l]).chain(pm.iter().copied()).collect();
                    let inv_last = rescale_inv[l].clone();
                    let inv_p_last =
                        qm[..l].iter().enumerate().map(|(i, qi)| qi.mul(p_inv_mod_q[i], inv_last[i])).collect();
                    ModDownRescale {
                        conv: BasisConverter::new(&sources, &qm[..l]),
                        inv_p_last,
                        inv_last,
                        p_mod_last: p_mod_q[l],
                    }
                });
                LevelTables { mod_up, mod_down_rescale }
            })
            .collect();
        let mut hasher = Sha256::new();
        hasher.update(b"nexus-ckks parameters v1");
        hasher.update(literal.log_n.to_le_bytes());
        for x in q.iter().chain(&[0u64]).chain(&p) {
            hasher.update(x.to_le_bytes());
        }
        hasher.update((literal.dnum as u64).to_le_bytes());
        hasher.update(literal.log_default_scale.to_le_bytes());
        hasher.update(format!("{:?}|{}", literal.secret, literal.error_std).as_bytes());
        let digest = hasher.finalize().into();
        let literal = ParametersLiteral { q: Primes::Values(q.clone()), p: Primes::Values(p.clone()), ..literal };
        Ok(Self(Arc::new(Inner {
            literal,
            q,
            p,
            alpha,
            ring,
            levels,
            mod_down,
            p_inv_mod_q,
            p_mod_q,
            rescale_inv,
            digest,
        })))
    }

    /// A named preset (see [`crate::presets`]).
    pub fn preset(name: &str) -> Result<Self, CkksError> {
        Self::new(crate::presets::literal(name)?)
    }

    /// The literal with the primes made explicit (round-trips exactly).
    pub fn literal(&self) -> &ParametersLiteral {
        &self.0.literal
    }

    /// Ring degree N.
    pub fn n(&self) -> usize {
        self.0.ring.n()
    }

    /// log2 N.
    pub fn log_n(&self) -> u32 {
        self.0.literal.log_n
    }

    /// Maximum number of complex slots (N/2).
    pub fn max_slots(&self) -> usize {
        self.n() / 2
    }

    /// Highest level (number of chain primes minus one).
    pub fn max_level(&self) -> usize {
        self.0.q.len() - 1
    }

    /// Chain primes.
    pub fn q(&self) -> &[u64] {
        &self.0.q
    }

    /// Special primes.
    pub fn p(&self) -> &[u64] {
        &self.0.p
    }

    /// Number of key-switching digits at the top level.
    pub fn dnum(&self) -> usize {
        self.0.literal.dnum
    }

    /// Chain primes per digit.
    pub fn alpha(&self) -> usize {
        self.0.alpha
    }

    /// Default encoding scale.
    pub fn default_scale(&self) -> f64 {
        2f64.powi(self.0.literal.log_default_scale as i32)
    }

    /// Secret-key distribution.
    pub fn secret_distribution(&self) -> SecretDistribution {
        self.0.literal.secret
    }

    /// Error standard deviation.
    pub fn error_std(&self) -> f64 {
        self.0.literal.error_std
    }

    /// log2 of the product of all primes (chain and special).
    pub fn log_qp(&self) -> f64 {
        self.0.q.iter().chain(&self.0.p).map(|&x| (x as f64).log2()).sum()
    }

    /// Whether the parameters were checked for 128-bit security.
    pub fn is_secure(&self) -> bool {
        self.0.literal.security == SecurityLevel::Bits128
    }

    /// The ring context (primes, NTT tables, backend).
    pub fn ring(&self) -> &RingContext {
        &self.0.ring
    }

    /// SHA-256 fingerprint of everything that affects compatibility; wire
    /// envelopes carry it and decoders check it.
    pub fn digest(&self) -> [u8; 32] {
        self.0.digest
    }

    /// Galois element rotating slots left by `steps` (negative: right).
    pub fn galois_element_for_rotation(&self, steps: i64) -> usize {
        let two_n = 2 * self.n() as u64;
        let slots = self.max_slots() as i64;
        let k = steps.rem_euclid(slots) as u64;
        // 5^k mod 2N by square-and-multiply (2N <= 2^18, no overflow).
        let mut result = 1u64;
        let mut base = 5u64;
        let mut e = k;
        while e > 0 {
            if e & 1 == 1 {
                result = result * base % two_n;
            }
            base = base * base % two_n;
            e >>= 1;
        }
        result as usize
    }

    /// Galois element of complex conjugation.
    pub fn galois_element_conjugate(&self) -> usize {
        2 * self.n() - 1
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }
}

/// A prime generator: (bits, ring degree, count, primes to avoid).
type PrimeGenerator = fn(u32, usize, usize, &[u64]) -> Result<Vec<u64>, CkksError>;

fn generate(bits: &[u32], n: usize, exclude: &[u64], gen: PrimeGenerator) -> Result<Vec<u64>, CkksError> {
    // Generate all primes of one size at once (so they are distinct and
    // alternate around 2^bits), then hand them out in the requested order.
    let mut pools: std::collections::BTreeMap<u32, std::vec::IntoIter<u64>> = Default::default();
    let mut taken: Vec<u64> = exclude.to_vec();
    for &b in bits {
        if let std::collections::btree_map::Entry::Vacant(e) = pools.entry(b) {
            let count = bits.iter().filter(|&&x| x == b).count();
            let primes = gen(b, n, count, &taken)?;
            taken.extend(&primes);
            e.insert(primes.into_iter());
        }
    }
    bits.iter()
        .map(|b| {
            pools
                .get_mut(b)
                .and_then(|it| it.next())
                .ok_or_else(|| CkksError::InvalidParameters("prime pool exhausted".into()))
        })
        .collect()
}
