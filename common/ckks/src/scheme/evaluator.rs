//! Homomorphic operations on ciphertexts.
//!
//! Level and scale rules: binary operations need operands at the same level
//! (drop the higher one with [`Evaluator::drop_to_level`], or use
//! [`Evaluator::mul_at`] and [`Evaluator::linear_combination`], which read
//! higher operands in place at the level asked for); additions need
//! equal scales up to a relative 2^-20 (the drift left by rescaling with
//! primes that differ from 2^40 by a few parts per million), otherwise they
//! fail with [`CkksError::ScaleMismatch`]. Products multiply scales;
//! [`Evaluator::rescale`] divides by the last prime.

use super::keys::{GaloisKeys, RelinKey};
use super::keyswitch::{apply_key, decompose, switch, switch_add_rescale};
use super::plaintext::{Ciphertext, Encoding, Plaintext};
use crate::error::CkksError;
use crate::ring::{Basis, Coeff, Ntt, Poly};
use crate::Parameters;
use num_complex::Complex64;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Relative scale difference tolerated by additions.
pub const SCALE_TOLERANCE: f64 = 1.0 / (1u64 << 20) as f64;

/// Evaluates operations on ciphertexts (stateless apart from parameters).
///
/// ```
/// use nexus_ckks::*;
/// let params = Parameters::preset("INSECURE_N11_QP230_TEST")?;
/// let mut kg = KeyGenerator::new(&params);
/// let sk = kg.secret_key();
/// let pk = kg.public_key(&sk);
/// let gks = kg.galois_keys(&sk, &[1, 2], false)?;
/// let enc = Encoder::new(&params);
/// let pt = enc.encode_real(&[1.0, 2.0, 3.0, 4.0], params.max_level(), params.default_scale())?;
/// let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk)?;
/// let eval = Evaluator::new(&params);
/// // One decomposition, two rotations.
/// let rotated = eval.rotate_hoisted(&ct, &[1, 2], &gks)?;
/// let out = enc.decode_real(&Decryptor::new(&params).decrypt(&rotated[1], &sk)?)?;
/// assert!((out[0] - 3.0).abs() < 1e-3 && (out[1] - 4.0).abs() < 1e-3);
/// // A missing key is a typed error naming the Galois element.
/// assert!(matches!(eval.rotate(&ct, 3, &gks), Err(CkksError::MissingGaloisKey(_))));
/// # Ok::<(), CkksError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Evaluator {
    params: Parameters,
    /// NTT forms of `X^k` by `(k mod 2N, level)`: an expansion multiplies
    /// by the same 13 monomials tens of thousands of times.
    monomials: Arc<Mutex<MonomialCache>>,
}

/// `(k mod 2N, level)` to the NTT form of `X^k`.
type MonomialCache = HashMap<(usize, usize), Arc<Poly<Ntt>>>;

fn same_scale(op: &'static str, a: f64, b: f64) -> Result<(), CkksError> {
    let rel = ((a - b) / a).abs();
    if rel.is_nan() || rel > SCALE_TOLERANCE {
        return Err(CkksError::ScaleMismatch { op, left: a.log2(), right: b.log2() });
    }
    Ok(())
}

fn same_level(op: &'static str, a: usize, b: usize) -> Result<(), CkksError> {
    if a != b {
        return Err(CkksError::LevelMismatch { op, left: a, right: b });
    }
    Ok(())
}

fn same_encoding(op: &'static str, a: Encoding, b: Encoding) -> Result<(), CkksError> {
    if a != b {
        return Err(CkksError::InvalidInput(format!("{op}: encodings differ ({a:?} vs {b:?})")));
    }
    Ok(())
}

fn key_covers(key: &crate::scheme::keys::GaloisKey, level: usize) -> Result<(), CkksError> {
    if key.max_level() < level {
        return Err(CkksError::InvalidInput(format!(
            "Galois key for element {} is restricted to level {}, ciphertext at level {level}",
            key.element(),
            key.max_level()
        )));
    }
    Ok(())
}

fn degree_one(op: &'static str, ct: &Ciphertext) -> Result<(), CkksError> {
    if ct.parts.len() != 2 {
        return Err(CkksError::DegreeMismatch { op, degree: ct.parts.len() - 1, expected: 1 });
    }
    Ok(())
}

impl Evaluator {
    /// An evaluator for `params`.
    pub fn new(params: &Parameters) -> Self {
        Self { params: params.clone(), monomials: Arc::default() }
    }

    /// The parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    fn ring(&self) -> &crate::ring::RingContext {
        self.params.ring()
    }

    fn derived(&self, parts: Vec<Poly<Ntt>>, like: &Ciphertext, scale: f64) -> Ciphertext {
        Ciphertext { parts, level: like.level, scale, encoding: like.encoding, seed: None }
    }

    /// Applies an out-of-place map to every part (computing into fresh
    /// buffers rather than copying first and updating in place saves a
    /// pass over the ciphertext: a tenth of a bootstrap was such copies).
    fn map_parts(&self, ct: &Ciphertext, scale: f64, f: impl Fn(&Poly<Ntt>) -> Poly<Ntt>) -> Ciphertext {
        let parts = ct.parts.iter().map(f).collect();
        self.derived(parts, ct, scale)
    }

    /// `a + b`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut out = a.clone();
        self.add_assign(&mut out, b)?;
        Ok(out)
    }

    /// `a += b`.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        self.combine_assign("add", a, b, Poly::add_assign)
    }

    /// `a - b`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        let mut out = a.clone();
        self.sub_assign(&mut out, b)?;
        Ok(out)
    }

    /// `a -= b`.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<(), CkksError> {
        self.combine_assign("sub", a, b, Poly::sub_assign)
    }

    /// `a = f(a, b)` part by part, after the level, encoding and scale
    /// checks of an addition (a lower degree is padded with zero parts).
    fn combine_assign(
        &self,
        op: &'static str,
        a: &mut Ciphertext,
        b: &Ciphertext,
        f: impl Fn(&mut Poly<Ntt>, &crate::ring::RingContext, &Poly<Ntt>),
    ) -> Result<(), CkksError> {
        self.check_level(op, a)?;
        same_level(op, a.level, b.level)?;
        same_encoding(op, a.encoding, b.encoding)?;
        same_scale(op, a.scale, b.scale)?;
        let ring = self.ring();
        while a.parts.len() < b.parts.len() {
            a.parts.push(Poly::zero(ring, Basis::q(a.level)));
        }
        for (x, y) in a.parts.iter_mut().zip(&b.parts) {
            f(x, ring, y);
        }
        a.seed = None;
        Ok(())
    }

    /// `-a`.
    pub fn neg(&self, a: &Ciphertext) -> Ciphertext {
        let mut out = a.clone();
        self.neg_assign(&mut out);
        out
    }

    /// `a = -a`.
    pub fn neg_assign(&self, a: &mut Ciphertext) {
        for p in &mut a.parts {
            p.neg_assign(self.ring());
        }
        a.seed = None;
    }

    /// A ciphertext whose level exceeds these parameters' chain was built
    /// for other parameters.
    fn check_level(&self, op: &'static str, ct: &Ciphertext) -> Result<(), CkksError> {
        if ct.level > self.params.max_level() || ct.parts.iter().any(|p| p.n() != self.params.n()) {
            return Err(CkksError::ParametersMismatch(op));
        }
        Ok(())
    }

    /// The plaintext's polynomial over the chain limbs of `level` (borrowed
    /// when it is already there: no copy).
    fn plain_at_level<'a>(
        &self,
        op: &'static str,
        pt: &'a Plaintext,
        level: usize,
    ) -> Result<std::borrow::Cow<'a, Poly<Ntt>>, CkksError> {
        if pt.level > self.params.max_level() || pt.poly.n() != self.params.n() {
            return Err(CkksError::ParametersMismatch(op));
        }
        if pt.level < level {
            return Err(CkksError::LevelMismatch { op, left: level, right: pt.level });
        }
        let basis = Basis::q(level);
        Ok(if pt.poly.basis() == basis {
            std::borrow::Cow::Borrowed(&pt.poly)
        } else {
            std::borrow::Cow::Owned(pt.poly.restricted(basis))
        })
    }

    /// `ct + pt` (the plaintext may be at a higher level).
    pub fn add_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.combine_plain("add_plain", ct, pt, |c, p| c.add_assign(self.ring(), p))
    }

    /// `ct - pt`.
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.combine_plain("sub_plain", ct, pt, |c, p| c.sub_assign(self.ring(), p))
    }

    /// Checks, then applies `f(c0, pt)` on a copy of `ct` (addition-like
    /// operations touch only `c0`).
    fn combine_plain(
        &self,
        op: &'static str,
        ct: &Ciphertext,
        pt: &Plaintext,
        f: impl Fn(&mut Poly<Ntt>, &Poly<Ntt>),
    ) -> Result<Ciphertext, CkksError> {
        self.check_level(op, ct)?;
        same_encoding(op, ct.encoding, pt.encoding)?;
        same_scale(op, ct.scale, pt.scale)?;
        let p = self.plain_at_level(op, pt, ct.level)?;
        let mut out = ct.clone();
        f(&mut out.parts[0], &p);
        out.seed = None;
        Ok(out)
    }

    /// `ct * pt`; the scale becomes the product of the scales.
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext, CkksError> {
        self.check_level("mul_plain", ct)?;
        same_encoding("mul_plain", ct.encoding, pt.encoding)?;
        let p = self.plain_at_level("mul_plain", pt, ct.level)?;
        Ok(self.map_parts(ct, ct.scale * pt.scale, |c| c.times(self.ring(), &p)))
    }

    /// `sum_i cts[i] * pts[i]` in one pass: each product is accumulated
    /// without its own ciphertext and reduced once per coefficient (a
    /// linear transform's inner sums, where the separate products and
    /// additions were a third of the memory traffic). The ciphertexts must
    /// share level, degree, encoding and the products' scale.
    pub fn dot_plain(&self, cts: &[&Ciphertext], pts: &[&Plaintext]) -> Result<Ciphertext, CkksError> {
        const OP: &str = "dot_plain";
        let Some(first) = cts.first() else {
            return Err(CkksError::InvalidInput(format!("{OP}: no terms")));
        };
        if cts.len() != pts.len() {
            return Err(CkksError::InvalidInput(format!("{OP}: {} ciphertexts, {} plaintexts", cts.len(), pts.len())));
        }
        let scale = first.scale * pts[0].scale;
        for (ct, pt) in cts.iter().zip(pts) {
            self.check_level(OP, ct)?;
            same_level(OP, first.level, ct.level)?;
            same_encoding(OP, first.encoding, ct.encoding)?;
            same_encoding(OP, ct.encoding, pt.encoding)?;
            if ct.parts.len() != first.parts.len() {
                return Err(CkksError::DegreeMismatch {
                    op: OP,
                    degree: ct.parts.len() - 1,
                    expected: first.parts.len() - 1,
                });
            }
            same_scale(OP, scale, ct.scale * pt.scale)?;
        }
        let plains = pts.iter().map(|pt| self.plain_at_level(OP, pt, first.level)).collect::<Result<Vec<_>, _>>()?;
        let plains: Vec<&Poly<Ntt>> = plains.iter().map(|p| p.as_ref()).collect();
        let basis = Basis::q(first.level);
        let parts = (0..first.parts.len())
            .map(|i| {
                let part: Vec<&Poly<Ntt>> = cts.iter().map(|ct| &ct.parts[i]).collect();
                Poly::dot(self.ring(), basis, &part, &plains)
            })
            .collect();
        Ok(self.derived(parts, first, scale))
    }

    /// Residues of `round(v)` modulo each chain prime up to `level`.
    fn constant_residues(&self, v: f64, level: usize) -> Result<Vec<u64>, CkksError> {
        let r = v.round();
        if !r.is_finite() || r.abs() >= 2f64.powi(126) {
            return Err(CkksError::InvalidInput(format!("constant {v} is too large")));
        }
        let big = r as i128;
        Ok(self.ring().q()[..=level].iter().map(|m| m.reduce_i128(big)).collect())
    }

    /// `ct + c` for a real constant.
    pub fn add_const(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        let mut out = ct.clone();
        self.add_const_assign(&mut out, c)?;
        Ok(out)
    }

    /// `ct += c` for a real constant.
    pub fn add_const_assign(&self, ct: &mut Ciphertext, c: f64) -> Result<(), CkksError> {
        self.check_level("add_const", ct)?;
        let res = self.constant_residues(c * ct.scale, ct.level)?;
        ct.parts[0].add_scalar_assign(self.ring(), &res);
        ct.seed = None;
        Ok(())
    }

    /// `sum_i c_i cts[i]` at `level` with scale `scale`: each constant is
    /// encoded as the integer `round(c_i scale / cts[i].scale)`, the one
    /// that brings its ciphertext to `scale` (so the terms add exactly,
    /// whatever their own scales). The inputs may sit above `level` and
    /// differ in degree; each is read in place (no copy at `level`), and
    /// the sum is one pass, reduced once per coefficient: a polynomial's
    /// leaves `sum c_i T_i` were a copy, a product and an addition per term.
    pub fn linear_combination(
        &self,
        terms: &[(&Ciphertext, f64)],
        level: usize,
        scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        let scaled: Vec<(&Ciphertext, f64)> = terms.iter().map(|&(ct, c)| (ct, c * scale / ct.scale)).collect();
        self.integer_combination("linear_combination", &scaled, level, scale)
    }

    /// `sum_i round(v_i) cts[i]` at `level`, given the scale `scale`.
    fn integer_combination(
        &self,
        op: &'static str,
        terms: &[(&Ciphertext, f64)],
        level: usize,
        scale: f64,
    ) -> Result<Ciphertext, CkksError> {
        let Some((first, _)) = terms.first() else {
            return Err(CkksError::InvalidInput(format!("{op}: no terms")));
        };
        if !(scale.is_finite() && scale > 0.0) {
            return Err(CkksError::InvalidInput(format!("{op}: scale {scale} is not a positive number")));
        }
        for (ct, _) in terms {
            self.check_level(op, ct)?;
            same_encoding(op, first.encoding, ct.encoding)?;
            if ct.level < level {
                return Err(CkksError::NotEnoughLevels { op, level: ct.level, needed: level });
            }
        }
        let residues = terms.iter().map(|&(_, v)| self.constant_residues(v, level)).collect::<Result<Vec<_>, _>>()?;
        let degree = terms.iter().map(|(ct, _)| ct.parts.len()).max().unwrap_or(0);
        let basis = Basis::q(level);
        let parts = (0..degree)
            .map(|i| {
                let (polys, scalars): (Vec<&Poly<Ntt>>, Vec<&[u64]>) = terms
                    .iter()
                    .zip(&residues)
                    .filter_map(|((ct, _), r)| ct.parts.get(i).map(|p| (p, r.as_slice())))
                    .unzip();
                Poly::scalar_dot(self.ring(), basis, &polys, &scalars)
            })
            .collect();
        Ok(Ciphertext { parts, level, scale, encoding: first.encoding, seed: None })
    }

    /// The NTT form of `re + im X^(N/2)` (which decodes to `re + i im` in
    /// every slot) at `level`.
    fn complex_constant_poly(&self, c: Complex64, scale: f64, level: usize) -> Result<Poly<Ntt>, CkksError> {
        let ring = self.ring();
        let basis = Basis::q(level);
        let re = self.constant_residues(c.re * scale, level)?;
        let im = self.constant_residues(c.im * scale, level)?;
        let mut p = Poly::<Coeff>::zero(ring, basis);
        let n = ring.n();
        for j in 0..basis.limbs() {
            p.data_mut()[j * n] = re[j];
            p.data_mut()[j * n + n / 2] = im[j];
        }
        Ok(p.into_ntt(ring))
    }

    /// `ct + c` for a complex constant.
    pub fn add_const_complex(&self, ct: &Ciphertext, c: Complex64) -> Result<Ciphertext, CkksError> {
        let p = self.complex_constant_poly(c, ct.scale, ct.level)?;
        let mut out = ct.clone();
        out.parts[0].add_assign(self.ring(), &p);
        out.seed = None;
        Ok(out)
    }

    /// `ct * c` for a real constant encoded at the scale of the ciphertext's
    /// last prime, so that a following [`rescale`](Self::rescale) restores
    /// the input scale exactly.
    pub fn mul_const(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext, CkksError> {
        let const_scale = self.params.q()[ct.level] as f64;
        self.mul_const_with_scale(ct, c, const_scale)
    }

    /// `ct * round(c * const_scale)`; the scale is multiplied by `const_scale`.
    pub fn mul_const_with_scale(&self, ct: &Ciphertext, c: f64, const_scale: f64) -> Result<Ciphertext, CkksError> {
        self.integer_combination("mul_const", &[(ct, c * const_scale)], ct.level, ct.scale * const_scale)
    }

    /// `ct * c` for a complex constant, encoded at the last prime's scale.
    pub fn mul_const_complex(&self, ct: &Ciphertext, c: Complex64) -> Result<Ciphertext, CkksError> {
        let const_scale = self.params.q()[ct.level] as f64;
        let p = self.complex_constant_poly(c, const_scale, ct.level)?;
        Ok(self.map_parts(ct, ct.scale * const_scale, |x| x.times(self.ring(), &p)))
    }

    /// `ct * k` for an integer (exact; the scale is unchanged).
    pub fn mul_integer(&self, ct: &Ciphertext, k: i64) -> Ciphertext {
        let res: Vec<u64> = self.ring().q()[..=ct.level].iter().map(|m| m.reduce_i64(k)).collect();
        self.map_parts(ct, ct.scale, |p| p.times_scalars(self.ring(), &res))
    }

    /// `ct * X^k` (negacyclic: `X^N = -1`), for any integer `k`.
    pub fn mul_monomial(&self, ct: &Ciphertext, k: i64) -> Ciphertext {
        let ring = self.ring();
        let n = ring.n() as i64;
        let k = k.rem_euclid(2 * n);
        let key = (k as usize, ct.level);
        let cached = self.monomials.lock().ok().and_then(|m| m.get(&key).cloned());
        let mono = match cached {
            Some(m) => m,
            None => {
                let basis = Basis::q(ct.level);
                let mut mono = Poly::<Coeff>::zero(ring, basis);
                let (pos, negative) = if k < n { (k, false) } else { (k - n, true) };
                for j in 0..basis.limbs() {
                    let m = ring.modulus_of(basis, j);
                    mono.limb_mut(j)[pos as usize] = if negative { m.neg(1) } else { 1 };
                }
                let mono = Arc::new(mono.into_ntt(ring));
                if let Ok(mut cache) = self.monomials.lock() {
                    // Bounded: a handful of monomials per level is the use.
                    if cache.len() < 4096 {
                        cache.insert(key, mono.clone());
                    }
                }
                mono
            }
        };
        self.map_parts(ct, ct.scale, |p| p.times(ring, &mono))
    }

    /// Tensor product `(a0 b0, a0 b1 + a1 b0, a1 b1)` (degree 2, not
    /// relinearised).
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext, CkksError> {
        same_level("mul", a.level, b.level)?;
        self.mul_at(a, b, a.level)
    }

    /// The tensor product of `a` and `b` at `level` (at or below both
    /// levels), reading only their first limbs: no copies at `level` first.
    pub fn mul_at(&self, a: &Ciphertext, b: &Ciphertext, level: usize) -> Result<Ciphertext, CkksError> {
        degree_one("mul", a)?;
        degree_one("mul", b)?;
        self.check_level("mul", a)?;
        self.check_level("mul", b)?;
        same_encoding("mul", a.encoding, b.encoding)?;
        if level > a.level.min(b.level) {
            return Err(CkksError::NotEnoughLevels { op: "mul", level: a.level.min(b.level), needed: level });
        }
        let ring = self.ring();
        let basis = Basis::q(level);
        let (a0, a1, b0, b1) = (&a.parts[0], &a.parts[1], &b.parts[0], &b.parts[1]);
        let d0 = Poly::dot(ring, basis, &[a0], &[b0]);
        let d1 = Poly::dot(ring, basis, &[a0, a1], &[b1, b0]);
        let d2 = Poly::dot(ring, basis, &[a1], &[b1]);
        Ok(Ciphertext { parts: vec![d0, d1, d2], level, scale: a.scale * b.scale, encoding: a.encoding, seed: None })
    }

    /// `a^2` (degree 2).
    pub fn square(&self, a: &Ciphertext) -> Result<Ciphertext, CkksError> {
        degree_one("square", a)?;
        let ring = self.ring();
        let (a0, a1) = (&a.parts[0], &a.parts[1]);
        let mut d0 = a0.clone();
        d0.mul_assign(ring, a0);
        let mut d1 = a0.clone();
        d1.mul_assign(ring, a1);
        let d1c = d1.clone();
        d1.add_assign(ring, &d1c);
        let mut d2 = a1.clone();
        d2.mul_assign(ring, a1);
        Ok(self.derived(vec![d0, d1, d2], a, a.scale * a.scale))
    }

    /// Relinearises a degree-2 ciphertext back to degree 1.
    pub fn relinearize(&self, ct: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext, CkksError> {
        if ct.parts.len() != 3 {
            return Err(CkksError::DegreeMismatch { op: "relinearize", degree: ct.parts.len() - 1, expected: 2 });
        }
        if rlk.0.digest != self.params.digest() {
            return Err(CkksError::ParametersMismatch("relinearisation key"));
        }
        let ring = self.ring();
        let (k0, k1) = switch(&self.params, &ct.parts[2], &rlk.0);
        let mut c0 = ct.parts[0].clone();
        let mut c1 = ct.parts[1].clone();
        c0.add_assign(ring, &k0);
        c1.add_assign(ring, &k1);
        Ok(self.derived(vec![c0, c1], ct, ct.scale))
    }

    /// `relinearize(a * b)`.
    pub fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext, CkksError> {
        self.relinearize(&self.mul(a, b)?, rlk)
    }

    /// `rescale(relinearize(a * b))`, with one rounding (see
    /// [`relinearize_rescale`](Self::relinearize_rescale)).
    pub fn mul_relin_rescale(&self, a: &Ciphertext, b: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext, CkksError> {
        self.relinearize_rescale(&self.mul(a, b)?, rlk)
    }

    /// `rescale(relinearize(ct))` for a degree-2 ciphertext (a degree-1 one
    /// is only rescaled), with ModDown and the rescale fused into one
    /// division by `P q_l`: fewer NTTs and one rounding instead of two.
    pub fn relinearize_rescale(&self, ct: &Ciphertext, rlk: &RelinKey) -> Result<Ciphertext, CkksError> {
        match ct.parts.len() {
            2 => return self.rescale(ct),
            3 => {}
            d => return Err(CkksError::DegreeMismatch { op: "relinearize_rescale", degree: d - 1, expected: 2 }),
        }
        self.check_level("relinearize_rescale", ct)?;
        if ct.level == 0 {
            return Err(CkksError::NotEnoughLevels { op: "relinearize_rescale", level: 0, needed: 1 });
        }
        if rlk.0.digest != self.params.digest() {
            return Err(CkksError::ParametersMismatch("relinearisation key"));
        }
        let Some(parts) = switch_add_rescale(&self.params, &ct.parts[2], &rlk.0, [&ct.parts[0], &ct.parts[1]]) else {
            return self.rescale(&self.relinearize(ct, rlk)?);
        };
        let q_last = self.params.q()[ct.level] as f64;
        Ok(Ciphertext {
            parts: parts.into(),
            level: ct.level - 1,
            scale: ct.scale / q_last,
            encoding: ct.encoding,
            seed: None,
        })
    }

    /// Divides by the last prime of the level (rounding): level - 1, scale
    /// divided by that prime.
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext, CkksError> {
        self.check_level("rescale", ct)?;
        if ct.level == 0 {
            return Err(CkksError::NotEnoughLevels { op: "rescale", level: 0, needed: 1 });
        }
        let ring = self.ring();
        let basis = Basis::q(ct.level);
        let inv = &self.params.inner().rescale_inv[ct.level];
        let parts = ct
            .parts
            .par_iter()
            .map(|p| {
                let mut out = Poly::<Ntt>::uninit(ring, Basis::q(ct.level - 1));
                ring.backend().rescale_by_last(ring, basis, inv, p.data(), out.data_mut());
                out
            })
            .collect();
        let q_last = self.params.q()[ct.level] as f64;
        Ok(Ciphertext { parts, level: ct.level - 1, scale: ct.scale / q_last, encoding: ct.encoding, seed: None })
    }

    /// Drops an owned ciphertext to `level` in place (no copy).
    pub fn drop_owned_to_level(&self, mut ct: Ciphertext, level: usize) -> Result<Ciphertext, CkksError> {
        if level > ct.level {
            return Err(CkksError::NotEnoughLevels { op: "drop_to_level", level: ct.level, needed: level });
        }
        for p in &mut ct.parts {
            p.truncate_q(level + 1);
        }
        ct.level = level;
        ct.seed = None;
        Ok(ct)
    }

    /// Drops to `level` without changing the scale.
    pub fn drop_to_level(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext, CkksError> {
        if level > ct.level {
            return Err(CkksError::NotEnoughLevels { op: "drop_to_level", level: ct.level, needed: level });
        }
        // Copies only the limbs that stay.
        let parts = ct.parts.iter().map(|p| p.restricted(Basis::q(level))).collect();
        let mut out = self.derived(parts, ct, ct.scale);
        out.level = level;
        Ok(out)
    }

    /// Applies `X -> X^g` and switches the key back to `s`.
    pub fn apply_galois(&self, ct: &Ciphertext, g: usize, keys: &GaloisKeys) -> Result<Ciphertext, CkksError> {
        degree_one("apply_galois", ct)?;
        self.check_level("apply_galois", ct)?;
        if g == 1 {
            return Ok(ct.clone());
        }
        let key = keys.get(g)?;
        if key.key.digest != self.params.digest() {
            return Err(CkksError::ParametersMismatch("Galois key"));
        }
        key_covers(key, ct.level)?;
        let ring = self.ring();
        let c1 = ct.parts[1].automorphism(ring, g);
        let (k0, k1) = switch(&self.params, &c1, &key.key);
        let mut c0 = ct.parts[0].automorphism(ring, g);
        c0.add_assign(ring, &k0);
        Ok(self.derived(vec![c0, k1], ct, ct.scale))
    }

    /// Rotates slots left by `steps` (negative: right).
    pub fn rotate(&self, ct: &Ciphertext, steps: i64, keys: &GaloisKeys) -> Result<Ciphertext, CkksError> {
        self.apply_galois(ct, self.params.galois_element_for_rotation(steps), keys)
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, ct: &Ciphertext, keys: &GaloisKeys) -> Result<Ciphertext, CkksError> {
        self.apply_galois(ct, self.params.galois_element_conjugate(), keys)
    }

    /// Several rotations of one ciphertext sharing one decomposition
    /// (hoisting): the ModUp of `c1` is done once, each rotation then costs a
    /// permutation, an inner product and a ModDown.
    pub fn rotate_hoisted(
        &self,
        ct: &Ciphertext,
        steps: &[i64],
        keys: &GaloisKeys,
    ) -> Result<Vec<Ciphertext>, CkksError> {
        let elements: Vec<usize> = steps.iter().map(|&s| self.params.galois_element_for_rotation(s)).collect();
        self.apply_galois_hoisted(ct, &elements, keys)
    }

    /// Hoisted version of [`apply_galois`](Self::apply_galois) for several elements.
    pub fn apply_galois_hoisted(
        &self,
        ct: &Ciphertext,
        elements: &[usize],
        keys: &GaloisKeys,
    ) -> Result<Vec<Ciphertext>, CkksError> {
        degree_one("apply_galois_hoisted", ct)?;
        self.check_level("apply_galois_hoisted", ct)?;
        for &g in elements {
            if g != 1 {
                let key = keys.get(g)?;
                if key.key.digest != self.params.digest() {
                    return Err(CkksError::ParametersMismatch("Galois key"));
                }
                key_covers(key, ct.level)?;
            }
        }
        let ring = self.ring();
        let dec = decompose(&self.params, &ct.parts[1]);
        elements
            .iter()
            .map(|&g| {
                if g == 1 {
                    return Ok(ct.clone());
                }
                let key = keys.get(g)?;
                let rotated: Vec<Poly<Ntt>> = dec.digits.iter().map(|d| d.automorphism(ring, g)).collect();
                let (k0, k1) = apply_key(&self.params, &rotated, dec.level, &key.key);
                let mut c0 = ct.parts[0].automorphism(ring, g);
                c0.add_assign(ring, &k0);
                Ok(self.derived(vec![c0, k1], ct, ct.scale))
            })
            .collect()
    }

    /// Changes the slot layout metadata (e.g. after a circuit that maps a
    /// coefficient-encoded input to slots).
    pub fn with_encoding(&self, ct: &Ciphertext, encoding: Encoding) -> Result<Ciphertext, CkksError> {
        if let Encoding::Slots(s) = encoding {
            if s == 0 || !s.is_power_of_two() || s > self.params.max_slots() {
                return Err(CkksError::InvalidInput(format!(
                    "slot count {s} is not a power of two in 1..={}",
                    self.params.max_slots()
                )));
            }
        }
        let mut out = ct.clone();
        out.encoding = encoding;
        Ok(out)
    }
}
