//! The ring `Z_Q[X]/(X^N + 1)` in RNS form over a chain of primes
//! `q_0..q_L` followed by special primes `p_0..p_{k-1}`.

pub mod backend;
pub mod poly;
pub(crate) mod pool;

pub use backend::{Backend, CpuBackend, KeyLimbs, ModDownRescale, UniformHalves};
pub use poly::{Coeff, Domain, Ntt, Poly};
pub use pool::{pooled_bytes, set_max_pooled_bytes};

use crate::math::dot::Reducer52;
use crate::math::{Modulus, NttTable};
use crate::CkksError;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Which primes a polynomial's limbs belong to: the first `q` primes of the
/// chain followed by the first `p` special primes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Basis {
    /// Number of chain primes (level + 1).
    pub q: usize,
    /// Number of special primes.
    pub p: usize,
}

impl Basis {
    /// The chain primes only, up to `level`.
    pub fn q(level: usize) -> Self {
        Self { q: level + 1, p: 0 }
    }

    /// Total limb count.
    pub fn limbs(&self) -> usize {
        self.q + self.p
    }
}

/// Ring degree, primes with their NTT tables, and the backend.
#[derive(Debug)]
pub struct RingContext {
    n: usize,
    q: Vec<Modulus>,
    p: Vec<Modulus>,
    /// Tables for `q` then `p`.
    ntt: Vec<NttTable>,
    /// IFMA reduction constants, same order as `ntt`.
    reducers: Vec<Reducer52>,
    backend: Arc<dyn Backend>,
    permutations: RwLock<HashMap<usize, Arc<[u32]>>>,
}

impl RingContext {
    /// Builds the context; every prime must be `1 mod 2n` and distinct.
    pub fn new(n: usize, q: &[u64], p: &[u64], backend: Arc<dyn Backend>) -> Result<Self, CkksError> {
        let to_moduli = |v: &[u64]| v.iter().map(|&x| Modulus::new(x)).collect::<Result<Vec<_>, _>>();
        let (q, p) = (to_moduli(q)?, to_moduli(p)?);
        let ntt = q.iter().chain(&p).map(|m| NttTable::new(n, *m)).collect::<Result<Vec<_>, _>>()?;
        let reducers = q.iter().chain(&p).map(Reducer52::new).collect();
        Ok(Self { n, q, p, ntt, reducers, backend, permutations: RwLock::new(HashMap::new()) })
    }

    /// Ring degree N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The chain primes.
    pub fn q(&self) -> &[Modulus] {
        &self.q
    }

    /// The special primes.
    pub fn p(&self) -> &[Modulus] {
        &self.p
    }

    /// The backend running the kernels.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The index of limb `limb` of `basis` in the whole chain: `q` primes
    /// first, then the special primes.
    #[inline]
    pub fn chain_index_of(&self, basis: Basis, limb: usize) -> usize {
        if limb < basis.q {
            limb
        } else {
            self.q.len() + (limb - basis.q)
        }
    }

    /// The prime of limb `limb` of a polynomial in `basis`.
    #[inline]
    pub fn modulus_of(&self, basis: Basis, limb: usize) -> &Modulus {
        let i = self.chain_index_of(basis, limb);
        if i < self.q.len() {
            &self.q[i]
        } else {
            &self.p[i - self.q.len()]
        }
    }

    /// The NTT table of limb `limb` in `basis`.
    #[inline]
    pub fn ntt_of(&self, basis: Basis, limb: usize) -> &NttTable {
        &self.ntt[self.chain_index_of(basis, limb)]
    }

    /// The IFMA reduction constants of limb `limb` in `basis`.
    #[inline]
    pub fn reducer_of(&self, basis: Basis, limb: usize) -> &Reducer52 {
        &self.reducers[self.chain_index_of(basis, limb)]
    }

    /// All moduli of a basis, in limb order.
    pub fn moduli(&self, basis: Basis) -> Vec<Modulus> {
        (0..basis.limbs()).map(|j| *self.modulus_of(basis, j)).collect()
    }

    /// The NTT-domain permutation realising `X -> X^g` (cached per `g`).
    pub fn automorphism_permutation(&self, g: usize) -> Arc<[u32]> {
        if let Some(p) = self.permutations.read().ok().and_then(|m| m.get(&g).cloned()) {
            return p;
        }
        let table = &self.ntt[0];
        let two_n = 2 * self.n;
        let perm: Arc<[u32]> =
            (0..self.n).map(|i| table.slot_of_exponent(table.slot_exponent(i) * g % two_n) as u32).collect();
        if let Ok(mut m) = self.permutations.write() {
            m.insert(g, perm.clone());
        }
        perm
    }
}
