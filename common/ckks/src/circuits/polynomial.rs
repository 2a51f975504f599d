//! Polynomial evaluation in the Chebyshev basis with baby-step giant-step
//! and exact scale management.
//!
//! - [`Chebyshev::interpolate`] fits `f` on `[a, b]` at the Chebyshev nodes
//!   (coefficients computed in code, no tables).
//! - [`PolynomialEvaluator::evaluate`] computes `sum c_k T_k(y)` with
//!   `y = (2x - a - b) / (b - a)` on a ciphertext in the optimal depth
//!   `ceil(log2(d + 1))`, plus one level for `y` unless the interval is
//!   [-1, 1]. Baby-step leaves `sum c_i T_i` pay one level for their
//!   constants, so the plan splits a leaf further wherever that level would
//!   show in the result.
//!
//! Scales are exact: every addition sees operands whose scales are equal by
//! construction. Leaf constants are encoded at the scale that makes their
//! product land on the target scale after rescaling, and
//! `T_{j+k} = 2 T_j T_k - T_{k-j}` multiplies `T_{k-j}` by a constant 1
//! encoded at `s_j s_k / s_{k-j}` (a level it has to spare) instead of
//! adding operands whose scales differ by the prime drift (about 2^-18).

use crate::error::CkksError;
use crate::scheme::evaluator::Evaluator;
use crate::scheme::keys::RelinKey;
use crate::scheme::plaintext::Ciphertext;
use std::collections::BTreeMap;

/// A polynomial in the Chebyshev basis on an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Chebyshev {
    /// Interval start.
    pub a: f64,
    /// Interval end.
    pub b: f64,
    /// Coefficients of `T_0, T_1, ...` in the variable `y`.
    pub coeffs: Vec<f64>,
}

impl Chebyshev {
    /// Interpolates `f` at the `degree + 1` Chebyshev nodes of `[a, b]`.
    pub fn interpolate(f: impl Fn(f64) -> f64, a: f64, b: f64, degree: usize) -> Self {
        let m = degree + 1;
        let nodes: Vec<f64> = (0..m).map(|j| (std::f64::consts::PI * (j as f64 + 0.5) / m as f64).cos()).collect();
        let values: Vec<f64> = nodes.iter().map(|&y| f((b - a) / 2.0 * y + (a + b) / 2.0)).collect();
        let coeffs = (0..m)
            .map(|k| {
                let s: f64 = nodes.iter().zip(&values).map(|(&y, &v)| v * (k as f64 * y.acos()).cos()).sum();
                let c = 2.0 * s / m as f64;
                if k == 0 {
                    c / 2.0
                } else {
                    c
                }
            })
            .collect();
        Self { a, b, coeffs }
    }

    /// Degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// Plaintext evaluation (Clenshaw), the f64 twin of the encrypted path.
    pub fn evaluate(&self, x: f64) -> f64 {
        let y = (2.0 * x - self.a - self.b) / (self.b - self.a);
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs.iter().skip(1).rev() {
            let b0 = 2.0 * y * b1 - b2 + c;
            b2 = b1;
            b1 = b0;
        }
        y * b1 - b2 + self.coeffs.first().copied().unwrap_or(0.0)
    }

    /// Levels consumed by [`PolynomialEvaluator::evaluate`]: the optimal
    /// `ceil(log2(d + 1))` (at least 1: even a constant is encoded as a
    /// scaled product), plus one to map an interval other than [-1, 1] onto
    /// it.
    pub fn depth(&self) -> usize {
        (usize::BITS - self.degree().max(1).leading_zeros()) as usize + usize::from(!self.is_unit_interval())
    }

    /// Whether the interval is exactly [-1, 1] (no change of variable).
    pub fn is_unit_interval(&self) -> bool {
        (self.b - self.a - 2.0).abs() < 1e-15 && (self.a + self.b).abs() < 1e-15
    }
}

/// Splits `p = q T_g + r` with `deg r < g` (Chebyshev basis), for
/// `g <= deg p < 2g`.
fn divide(coeffs: &[f64], g: usize) -> (Vec<f64>, Vec<f64>) {
    let d = coeffs.len() - 1;
    let mut q = vec![0.0; d - g + 1];
    let mut r = coeffs[..g].to_vec();
    q[0] = coeffs[g];
    for k in g + 1..=d {
        q[k - g] += 2.0 * coeffs[k];
        r[2 * g - k] -= coeffs[k];
    }
    (q, r)
}

/// Evaluates Chebyshev polynomials on ciphertexts.
#[derive(Debug)]
pub struct PolynomialEvaluator<'a> {
    eval: &'a Evaluator,
    rlk: &'a RelinKey,
}

/// One node of the evaluation plan (see `PolynomialEvaluator::plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Constant,
    Leaf,
    Split(usize),
}

struct Basis {
    /// `T_i` for `i` in `1..=baby` and the giant steps `2^k >= baby`.
    powers: BTreeMap<usize, Ciphertext>,
    baby: usize,
}

impl<'a> PolynomialEvaluator<'a> {
    /// An evaluator using `rlk` for products.
    pub fn new(eval: &'a Evaluator, rlk: &'a RelinKey) -> Self {
        Self { eval, rlk }
    }

    /// `2 a b - c` rescaled, with `c` brought to the scale of `a b` exactly
    /// (`c = None` means the constant 1). The operands are read in place at
    /// the lower level, and the doubling and the subtraction are one pass.
    fn product_minus(&self, a: &Ciphertext, b: &Ciphertext, c: Option<&Ciphertext>) -> Result<Ciphertext, CkksError> {
        let e = self.eval;
        let level = a.level().min(b.level());
        // Relinearised after the linear steps, fused with the rescale.
        let prod = e.mul_at(a, b, level)?;
        let out = match c {
            None => {
                let mut out = e.linear_combination(&[(&prod, 2.0)], level, prod.scale())?;
                e.add_const_assign(&mut out, -1.0)?;
                out
            }
            Some(c) => e.linear_combination(&[(&prod, 2.0), (c, -1.0)], level, prod.scale())?,
        };
        e.relinearize_rescale(&out, self.rlk)
    }

    fn basis(&self, y: &Ciphertext, degree: usize) -> Result<Basis, CkksError> {
        // Baby steps up to about sqrt(degree), a power of two.
        let log_d = (usize::BITS - degree.leading_zeros()) as usize;
        let baby = 1usize << log_d.div_ceil(2).max(1);
        let mut powers = BTreeMap::new();
        powers.insert(1, y.clone());
        let top = baby.max(1 << (log_d.saturating_sub(1)));
        let mut i = 2;
        while i <= top {
            let t = if i % 2 == 0 {
                let h = &powers[&(i / 2)];
                self.product_minus(h, h, None)?
            } else {
                // T_{2k+1} = 2 T_k T_{k+1} - T_1
                let (k, k1) = (&powers[&(i / 2)], &powers[&(i / 2 + 1)]);
                self.product_minus(k, k1, Some(&powers[&1]))?
            };
            powers.insert(i, t);
            i += if i < baby { 1 } else { i };
            if i > baby && !i.is_power_of_two() {
                i = i.next_power_of_two();
            }
        }
        Ok(Basis { powers, baby })
    }

    /// How `eval_rec` evaluates a polynomial of degree `degree`, and the level
    /// it returns at. A leaf `sum c_i T_i` costs one level more than its
    /// deepest `T_i` (the constant products); splitting `q T_g + r` at the
    /// largest power of two `g <= degree` costs one level more than the
    /// deeper of `q` and `T_g`. Leaves are cheaper in products, splits can be
    /// shallower, so a leaf is used only where it does not lose a level:
    /// this keeps the whole evaluation at the optimal depth
    /// `ceil(log2(d + 1))` while most of the work stays in baby-step leaves.
    fn plan(&self, basis: &Basis, degree: usize) -> (Step, usize) {
        if degree == 0 {
            return (Step::Constant, usize::MAX);
        }
        let leaf = (degree < basis.baby)
            .then(|| (1..=degree).map(|i| basis.powers[&i].level()).min().unwrap_or(0).saturating_sub(1));
        if degree == 1 {
            return (Step::Leaf, leaf.unwrap_or(0));
        }
        let g = 1usize << (usize::BITS - 1 - degree.leading_zeros());
        let (_, lq) = self.plan(basis, degree - g);
        let (_, lr) = self.plan(basis, g - 1);
        let split = lq.min(basis.powers[&g].level()).saturating_sub(1).min(lr);
        match leaf {
            Some(l) if l >= split => (Step::Leaf, l),
            _ => (Step::Split(g), split),
        }
    }

    /// The cheapest step that returns at level `need` or above (leaves
    /// wherever they are deep enough, so only the critical path is split),
    /// with the level it returns at.
    fn choose(&self, basis: &Basis, degree: usize, need: usize) -> (Step, usize) {
        if degree == 0 {
            return (Step::Constant, usize::MAX);
        }
        let leaf = (degree < basis.baby)
            .then(|| (1..=degree).map(|i| basis.powers[&i].level()).min().unwrap_or(0).saturating_sub(1));
        match leaf {
            Some(l) if l >= need || degree == 1 => return (Step::Leaf, l),
            _ => {}
        }
        let g = 1usize << (usize::BITS - 1 - degree.leading_zeros());
        let (_, lq) = self.choose(basis, degree - g, need + 1);
        let (_, lr) = self.choose(basis, g - 1, need);
        let split = lq.min(basis.powers[&g].level()).saturating_sub(1).min(lr);
        match leaf {
            Some(l) if l >= split => (Step::Leaf, l),
            _ => (Step::Split(g), split),
        }
    }

    fn leaf(&self, basis: &Basis, coeffs: &[f64], target_scale: f64) -> Result<Ciphertext, CkksError> {
        let e = self.eval;
        let m = coeffs.len().max(2) - 1;
        let level = (1..=m).map(|i| basis.powers[&i].level()).min().unwrap_or(0);
        if level == 0 {
            return Err(CkksError::NotEnoughLevels { op: "polynomial evaluation", level, needed: 1 });
        }
        let q = e.params().q()[level] as f64;
        // Each T_i's constant is encoded so that its product lands on
        // target_scale * q; an all-zero leaf keeps one (zero) term.
        let mut terms: Vec<(&Ciphertext, f64)> = (1..=m)
            .filter_map(|i| {
                let c = coeffs.get(i).copied().unwrap_or(0.0);
                (c != 0.0).then(|| (&basis.powers[&i], c))
            })
            .collect();
        if terms.is_empty() {
            terms.push((&basis.powers[&m], 0.0));
        }
        let mut acc = e.linear_combination(&terms, level, target_scale * q)?;
        e.add_const_assign(&mut acc, coeffs[0])?;
        let mut out = e.rescale(&acc)?;
        out.reset_scale(target_scale);
        Ok(out)
    }

    fn eval_rec(&self, basis: &Basis, coeffs: &[f64], target_scale: f64, need: usize) -> Result<Ciphertext, CkksError> {
        let e = self.eval;
        let d = coeffs.len() - 1;
        let g = match self.choose(basis, d, need).0 {
            Step::Split(g) => g,
            Step::Leaf | Step::Constant => return self.leaf(basis, coeffs, target_scale),
        };
        let (q, r) = divide(coeffs, g);
        let tg = &basis.powers[&g];
        let lq = self.choose(basis, q.len() - 1, need + 1).1;
        let lp = lq.min(tg.level());
        if lp == 0 {
            return Err(CkksError::NotEnoughLevels { op: "polynomial evaluation", level: 0, needed: 1 });
        }
        let prime = e.params().q()[lp] as f64;
        // q's scale makes q * T_g land exactly on target_scale after rescaling.
        let q_scale = target_scale * prime / tg.scale();
        let mut prod = if let [c] = q[..] {
            e.rescale(&e.linear_combination(&[(tg, c)], lp, target_scale * prime)?)?
        } else {
            let q_ct = self.eval_rec(basis, &q, q_scale, need + 1)?;
            e.relinearize_rescale(&e.mul_at(&q_ct, tg, lp)?, self.rlk)?
        };
        prod.reset_scale(target_scale);
        let r_ct = self.eval_rec(basis, &r, target_scale, need)?;
        let level = prod.level().min(r_ct.level());
        let mut sum = e.drop_owned_to_level(prod, level)?;
        e.add_assign(&mut sum, &e.drop_owned_to_level(r_ct, level)?)?;
        Ok(sum)
    }

    /// Evaluates `poly` on the slots of `ct`; the result has scale
    /// `target_scale` (use the input's scale to keep it).
    pub fn evaluate(&self, ct: &Ciphertext, poly: &Chebyshev, target_scale: f64) -> Result<Ciphertext, CkksError> {
        let e = self.eval;
        if poly.coeffs.is_empty() {
            return Err(CkksError::InvalidInput("polynomial has no coefficients".into()));
        }
        let (a, b) = (poly.a, poly.b);
        if !(a.is_finite() && b.is_finite() && b > a) {
            return Err(CkksError::InvalidInput(format!("interval [{a}, {b}] is empty or not finite")));
        }
        // Products rescale by the primes they consume; with primes far from
        // the working scale, T_i's scales would drift geometrically to 0 or
        // infinity. The working scale is the input's (unit interval) or the
        // prime below it (y is brought there).
        let working =
            if poly.is_unit_interval() { ct.scale() } else { e.params().q()[ct.level().saturating_sub(1)] as f64 };
        let levels = poly.depth().min(ct.level() + 1);
        for l in ct.level() + 1 - levels..=ct.level() {
            let ratio = (e.params().q()[l] as f64).log2() - working.log2();
            if ratio.abs() > 12.0 {
                return Err(CkksError::InvalidInput(format!(
                    "polynomial evaluation at level {}: prime {l} is 2^{ratio:.0} times the scale; evaluate at a level \
                     whose primes match the scale (e.g. at or below a bootstrapping's output level)",
                    ct.level()
                )));
            }
        }
        let half = (b - a) / 2.0;
        let mid = (a + b) / 2.0;
        // y = (x - mid) / half. Dividing by `half` through the scale metadata
        // would be free but makes T_i's scale grow like half^i (and the leaf
        // constants lose precision), so it costs one honest level unless the
        // interval is already [-1, 1].
        let y = if poly.is_unit_interval() {
            ct.clone()
        } else {
            let shifted = if mid != 0.0 { e.add_const(ct, -mid)? } else { ct.clone() };
            // The constant is the integer round(q / half); for a wide
            // interval it has few bits (2^23 for half = 2^17), and T_63
            // amplifies a relative error in y about 4000-fold near +-1. The
            // rounding is known exactly, so it goes into the scale instead of
            // the value: y is then (x - mid) / half to the noise.
            // y is brought to the scale of the prime below whatever the
            // input's scale (callers may fold a constant into it), so the
            // T_i keep prime-sized scales.
            let q = e.params().q()[shifted.level()] as f64;
            let working = e.params().q()[shifted.level().saturating_sub(1)] as f64;
            let const_scale = q * working / shifted.scale();
            let rounded = (const_scale / half).round();
            if rounded < 1.0 {
                return Err(CkksError::InvalidInput(format!("interval half-width {half} too large for the scale")));
            }
            let mut y = e.rescale(&e.mul_const_with_scale(&shifted, 1.0 / half, const_scale)?)?;
            y.reset_scale(shifted.scale() * rounded * half / q);
            y
        };
        // A constant is evaluated as c0 + 0 T_1 (one level, like degree 1).
        let mut coeffs = poly.coeffs.clone();
        if coeffs.len() == 1 {
            coeffs.push(0.0);
        }
        let basis = self.basis(&y, coeffs.len() - 1)?;
        // The best level any plan reaches; then the cheapest plan reaching it.
        let need = self.plan(&basis, coeffs.len() - 1).1;
        self.eval_rec(&basis, &coeffs, target_scale, need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_converges_and_division_is_exact() {
        let f = |x: f64| (3.0 * x).sin() + 0.5 * x * x;
        let p = Chebyshev::interpolate(f, -2.0, 3.0, 40);
        for i in 0..100 {
            let x = -2.0 + 5.0 * i as f64 / 99.0;
            assert!((p.evaluate(x) - f(x)).abs() < 1e-10, "x = {x}");
        }
        let coeffs: Vec<f64> = (0..13).map(|i| (i as f64 * 0.7).cos()).collect();
        let (q, r) = divide(&coeffs, 8);
        let cheb = |c: &[f64], y: f64| Chebyshev { a: -1.0, b: 1.0, coeffs: c.to_vec() }.evaluate(y);
        for i in 0..20 {
            let y = -1.0 + i as f64 / 10.0;
            let t8 = (8.0 * y.clamp(-1.0, 1.0).acos()).cos();
            assert!((cheb(&q, y) * t8 + cheb(&r, y) - cheb(&coeffs, y)).abs() < 1e-12);
        }
    }
}
