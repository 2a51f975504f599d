//! `1/x` and `1/sqrt(x)` on a declared interval: a Chebyshev initial guess
//! refined by Newton steps, with the degree and the step count chosen in
//! code for the smallest depth that meets the requested relative error.
//!
//! - inverse: `y <- y (2 - x y)` (depth 2 per step);
//! - inverse square root: `y <- 1.5 y + (-x/2 y) y^2`, with `-x/2` computed
//!   once beside the initial guess, so a step costs depth 2, not 3.
//!
//! Relative error squares (times about 1.5 for the square root) per step,
//! so a coarse polynomial plus two or three steps beats a fine polynomial.
//!
//! The iteration runs on `u = x / c` with `c = sqrt(lo hi)`, the geometric
//! centre, so every intermediate (`u`, `y`, `y^2`) is of order one: CKKS
//! noise is absolute (about 2^-28 per product at scale 2^40 and N = 2^12),
//! so `y^2 = 5e-6` would keep only 4 significant digits. Dividing by `c` and
//! multiplying the result back are both free: they only change the scale
//! metadata, never the ciphertext.
//!
//! A *prescaled* approximation ([`NewtonApprox::prescaled`]) takes its input
//! already multiplied by `k = 2 / (hi - lo)`, which a caller folds into an
//! earlier product at no level: the guess then sees an interval of width
//! 2, `[m - 1, m + 1]`, and is a polynomial on `[-1, 1]` in `k x - m` (a
//! free constant shift), so it needs no change of variable: one level less.

use crate::engine::Engine;
use crate::error::{invalid, NnError};
use nexus_ckks::circuits::Chebyshev;
use nexus_ckks::Ciphertext;

/// Which function is approximated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewtonTarget {
    /// `1 / x`.
    Inverse,
    /// `1 / sqrt(x)`.
    InverseSqrt,
}

/// A fitted initial guess and a number of Newton steps.
#[derive(Clone, Debug, PartialEq)]
pub struct NewtonApprox {
    target: NewtonTarget,
    centre: f64,
    guess: Chebyshev,
    steps: usize,
    rel_error: f64,
    /// The interval.
    lo: f64,
    hi: f64,
    /// `Some(k)`: the input arrives as `k x` with `k = 2 / (hi - lo)`, and
    /// the guess is a polynomial on [-1, 1] in `k x - m` (see the module
    /// documentation); `None`: the guess reads `x / centre`.
    prescale: Option<f64>,
}

const DEGREES: [usize; 5] = [3, 7, 15, 31, 63];
/// How far (in bits) a prescaled input's scale may be from the default
/// scale for its guess to run at it (the primes are within a few parts per
/// million of the default scale).
const SCALE_TOLERANCE_BITS: f64 = 1e-3;
const MAX_STEPS: usize = 8;
const GRID: usize = 4096;

impl NewtonApprox {
    /// The shallowest (then cheapest) approximation of `target` on
    /// `[lo, hi]` whose relative error, measured on a geometric grid, is at
    /// most `max_rel_error`.
    pub fn new(target: NewtonTarget, lo: f64, hi: f64, max_rel_error: f64) -> Result<Self, NnError> {
        Self::fit(target, lo, hi, max_rel_error, false)
    }

    /// Like [`new`](Self::new) for an input that arrives multiplied by
    /// [`input_factor`](Self::input_factor) (`2 / (hi - lo)`): the guess
    /// then costs one level less.
    pub fn prescaled(target: NewtonTarget, lo: f64, hi: f64, max_rel_error: f64) -> Result<Self, NnError> {
        Self::fit(target, lo, hi, max_rel_error, true)
    }

    /// What the encrypted input must be multiplied by: `2 / (hi - lo)`
    /// when prescaled, otherwise 1.
    pub fn input_factor(&self) -> f64 {
        self.prescale.unwrap_or(1.0)
    }

    /// The guess's variable for input `x`: `k x - m` (prescaled) or `x / c`.
    fn guess_variable(&self, x: f64) -> f64 {
        match self.prescale {
            Some(k) => k * x - self.prescale_shift(),
            None => x / self.centre,
        }
    }

    /// `m = k (lo + hi) / 2`, the middle of the prescaled interval.
    fn prescale_shift(&self) -> f64 {
        self.prescale.map_or(0.0, |k| k * (self.lo + self.hi) / 2.0)
    }

    fn fit(target: NewtonTarget, lo: f64, hi: f64, max_rel_error: f64, prescaled: bool) -> Result<Self, NnError> {
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo) {
            return Err(invalid("newton", format!("interval [{lo}, {hi}] must satisfy 0 < lo < hi")));
        }
        if !(max_rel_error > 0.0 && max_rel_error < 1.0) {
            return Err(invalid("newton", format!("relative error {max_rel_error} must be in (0, 1)")));
        }
        let exact = move |x: f64| match target {
            NewtonTarget::Inverse => 1.0 / x,
            NewtonTarget::InverseSqrt => 1.0 / x.sqrt(),
        };
        let centre = (lo * hi).sqrt();
        let prescale = prescaled.then(|| 2.0 / (hi - lo));
        let mut best: Option<(usize, usize, Self)> = None;
        for degree in DEGREES {
            // The guess approximates f(u), u = x / centre, in its variable.
            let guess = match prescale {
                Some(k) => {
                    let m = k * (lo + hi) / 2.0;
                    Chebyshev::interpolate(|t| exact((t + m) / (k * centre)), -1.0, 1.0, degree)
                }
                None => Chebyshev::interpolate(exact, lo / centre, hi / centre, degree),
            };
            for steps in 0..=MAX_STEPS {
                let candidate = Self { target, centre, guess: guess.clone(), steps, rel_error: 0.0, lo, hi, prescale };
                let rel_error = candidate.measured_error(lo, hi);
                if rel_error <= max_rel_error {
                    let key = (candidate.depth(), candidate.products());
                    if best.as_ref().is_none_or(|(d, p, _)| key < (*d, *p)) {
                        best = Some((key.0, key.1, Self { rel_error, ..candidate }));
                    }
                    break;
                }
            }
        }
        best.map(|(_, _, a)| a).ok_or_else(|| {
            invalid(
                "newton",
                format!(
                    "no degree <= 63 with <= {MAX_STEPS} steps reaches relative error {max_rel_error} on [{lo}, {hi}]"
                ),
            )
        })
    }

    fn measured_error(&self, lo: f64, hi: f64) -> f64 {
        let ratio = (hi / lo).powf(1.0 / (GRID - 1) as f64);
        let mut worst = 0.0f64;
        let mut x = lo;
        for _ in 0..GRID {
            let want = match self.target {
                NewtonTarget::Inverse => 1.0 / x,
                NewtonTarget::InverseSqrt => 1.0 / x.sqrt(),
            };
            let err = ((self.evaluate(x) - want) / want).abs();
            // A diverging iteration gives NaN: treat it as a failure.
            worst = if err.is_nan() { f64::INFINITY } else { worst.max(err) };
            x = (x * ratio).min(hi);
        }
        worst
    }

    /// The f64 twin: exactly the arithmetic the encrypted path performs.
    pub fn evaluate(&self, x: f64) -> f64 {
        let mut y = self.guess.evaluate(self.guess_variable(x));
        let x = x / self.centre;
        for _ in 0..self.steps {
            y = match self.target {
                NewtonTarget::Inverse => y * (2.0 - x * y),
                NewtonTarget::InverseSqrt => 1.5 * y + (-0.5 * x * y) * (y * y),
            };
        }
        y / self.output_factor()
    }

    /// `f(x) = f(u) / factor` for `u = x / centre`.
    fn output_factor(&self) -> f64 {
        match self.target {
            NewtonTarget::Inverse => self.centre,
            NewtonTarget::InverseSqrt => self.centre.sqrt(),
        }
    }

    /// Start of the interval.
    pub fn lo(&self) -> f64 {
        self.lo
    }

    /// Relative error bound measured on the interval.
    pub fn rel_error(&self) -> f64 {
        self.rel_error
    }

    /// Newton steps.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Degree of the initial guess.
    pub fn degree(&self) -> usize {
        self.guess.degree()
    }

    /// Levels consumed.
    pub fn depth(&self) -> usize {
        self.guess.depth() + 2 * self.steps
    }

    /// Ciphertext products (the initial guess's baby-step giant-step count is
    /// bounded by its degree; Newton steps take 2 or 3 each).
    pub fn products(&self) -> usize {
        let per_step = match self.target {
            NewtonTarget::Inverse => 2,
            NewtonTarget::InverseSqrt => 3,
        };
        polynomial_products(self.guess.degree()) + per_step * self.steps
    }

    /// Encrypted evaluation; the result's scale is whatever the products
    /// leave (decoding uses it).
    pub fn apply(&self, engine: &Engine<'_>, x: &Ciphertext) -> Result<Ciphertext, NnError> {
        self.apply_refreshing(engine, x.clone(), &mut no_refresh)
    }

    /// [`apply`](Self::apply) with `refresh` called before every stage (the
    /// initial guess, each Newton step) with the levels the stage needs and
    /// a bound on the value, so a bootstrap can go in between.
    pub fn apply_refreshing(
        &self,
        engine: &Engine<'_>,
        x: Ciphertext,
        refresh: &mut RefreshFn<'_>,
    ) -> Result<Ciphertext, NnError> {
        let e = engine.eval;
        let scale = engine.params().default_scale();
        let k = self.input_factor();
        // A guess on [-1, 1] runs at its input's scale, so that must be on
        // the primes' (products of products drift off it); otherwise one
        // constant product lands it there, the level a change of variable
        // would have cost. (A refresh keeps the scale.)
        let off_scale = self.prescale.is_some() && (x.scale() / scale).log2().abs() > SCALE_TOLERANCE_BITS;
        let x = refresh.refresh(x, self.guess.depth().max(1) + usize::from(off_scale), self.hi * k)?;
        let mut y = if self.prescale.is_some() {
            let on_scale = if off_scale { engine.mul_const_to(&x, 1.0, x.level() - 1, scale)? } else { x.clone() };
            // k x - m: a free shift onto the guess's [-1, 1].
            let t = e.add_const(&on_scale, -self.prescale_shift())?;
            engine.polynomial(&t, &self.guess, scale)?
        } else {
            // The guess reads u = x / c through the scale metadata (free);
            // its change of variable then costs a level.
            let mut u_meta = x.clone();
            u_meta.set_scale(x.scale() * self.centre)?;
            engine.polynomial(&u_meta, &self.guess, scale)?
        };
        // The Newton steps need u = x / c at a prime-sized scale, which one
        // constant product beside the guess provides (off the critical path).
        let below = x.level().saturating_sub(1);
        let y_bound = self.evaluate(self.lo) * self.output_factor() * 1.5;
        let u_bound = self.hi / self.centre;
        match self.target {
            NewtonTarget::Inverse => {
                let mut u = engine.mul_const_to(&x, 1.0 / (k * self.centre), below, scale)?;
                for _ in 0..self.steps {
                    (y, u) = refresh.refresh_pair((y, 2, y_bound), (u, 2, u_bound))?;
                    let uy = engine.mul(&u, &y)?;
                    let two_minus = e.add_const(&e.neg(&uy), 2.0)?;
                    y = engine.mul(&y, &two_minus)?;
                }
            }
            NewtonTarget::InverseSqrt => {
                let mut minus_half_u = engine.mul_const_to(&x, -0.5 / (k * self.centre), below, scale)?;
                for _ in 0..self.steps {
                    (y, minus_half_u) = refresh.refresh_pair((y, 2, y_bound), (minus_half_u, 2, u_bound))?;
                    let a = engine.mul(&minus_half_u, &y)?;
                    let b = engine.mul(&y, &y)?;
                    let t = engine.mul(&a, &b)?;
                    let linear = engine.mul_const_to(&y, 1.5, t.level(), t.scale())?;
                    y = engine.add(&t, &linear)?;
                }
            }
        }
        let scale = y.scale() * self.output_factor();
        y.set_scale(scale)?;
        Ok(y)
    }
}

/// Called before a stage of a deep operator with the ciphertexts the stage
/// is about to use, the levels it needs and a bound on their values; gives
/// back the ciphertexts to use (bootstrapped where they had too few
/// levels, or unchanged). Any `FnMut(ciphertext, needed, bound)` is one.
pub trait Refresher {
    /// `ct` with at least `needed` levels.
    fn refresh(&mut self, ct: Ciphertext, needed: usize, bound: f64) -> Result<Ciphertext, NnError>;

    /// Two ciphertexts the same stage needs: an implementation may
    /// bootstrap them together (two real vectors fit one complex
    /// bootstrap).
    fn refresh_pair(
        &mut self,
        (a, needed_a, bound_a): (Ciphertext, usize, f64),
        (b, needed_b, bound_b): (Ciphertext, usize, f64),
    ) -> Result<(Ciphertext, Ciphertext), NnError> {
        Ok((self.refresh(a, needed_a, bound_a)?, self.refresh(b, needed_b, bound_b)?))
    }
}

impl<F: FnMut(Ciphertext, usize, f64) -> Result<Ciphertext, NnError>> Refresher for F {
    fn refresh(&mut self, ct: Ciphertext, needed: usize, bound: f64) -> Result<Ciphertext, NnError> {
        self(ct, needed, bound)
    }
}

/// The refresher of the deep operators' `apply_refreshing`.
pub type RefreshFn<'a> = dyn Refresher + 'a;

/// The refresh of operators run without bootstrapping: the ciphertext as
/// is (their callers check the levels up front).
pub(crate) fn no_refresh(ct: Ciphertext, _needed: usize, _bound: f64) -> Result<Ciphertext, NnError> {
    Ok(ct)
}

/// Upper bound on the ciphertext products of a baby-step giant-step
/// evaluation of degree `d` (baby steps plus giant steps plus one product
/// per split).
pub(crate) fn polynomial_products(d: usize) -> usize {
    let baby = (d as f64).sqrt().ceil() as usize;
    baby + d / baby.max(1) + (usize::BITS - d.leading_zeros()) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_meet_their_error_and_prefer_shallow_plans() {
        for (target, lo, hi) in [(NewtonTarget::Inverse, 1.0, 128.0), (NewtonTarget::InverseSqrt, 0.25, 256.0)] {
            let a = NewtonApprox::new(target, lo, hi, 1e-7).unwrap();
            assert!(a.rel_error() <= 1e-7);
            for i in 0..1000 {
                let x = lo + (hi - lo) * i as f64 / 999.0;
                let want = if target == NewtonTarget::Inverse { 1.0 / x } else { 1.0 / x.sqrt() };
                assert!(((a.evaluate(x) - want) / want).abs() <= 1.01e-7, "{target:?} at {x}");
            }
            println!("{target:?} on [{lo}, {hi}]: degree {} + {} steps, depth {}", a.degree(), a.steps(), a.depth());
            assert!(a.depth() <= 13, "{target:?}: depth {}", a.depth());
        }
        assert!(NewtonApprox::new(NewtonTarget::Inverse, 0.0, 1.0, 1e-3).is_err());
        assert!(NewtonApprox::prescaled(NewtonTarget::Inverse, 1.0, 1.0, 1e-3).is_err());
    }

    /// The prescaled guess is the same polynomial in an affine variable, so
    /// it meets the same error with one level less.
    #[test]
    fn prescaled_fits_save_the_change_of_variable() {
        for (target, lo, hi, err) in [
            (NewtonTarget::Inverse, 0.014, 2.475, 1e-4),
            (NewtonTarget::Inverse, 0.014, 2.475, 0.25),
            (NewtonTarget::Inverse, 1.0, 128.0, 1e-7),
            (NewtonTarget::InverseSqrt, 0.25, 256.0, 1e-5),
        ] {
            let plain = NewtonApprox::new(target, lo, hi, err).unwrap();
            let pre = NewtonApprox::prescaled(target, lo, hi, err).unwrap();
            assert!(pre.rel_error() <= err);
            assert_eq!(pre.input_factor(), 2.0 / (hi - lo));
            assert_eq!(plain.input_factor(), 1.0);
            assert_eq!(pre.depth() + 1, plain.depth(), "{target:?} on [{lo}, {hi}] at {err}");
            for i in 0..1000 {
                let x = lo + (hi - lo) * i as f64 / 999.0;
                let want = if target == NewtonTarget::Inverse { 1.0 / x } else { 1.0 / x.sqrt() };
                assert!(((pre.evaluate(x) - want) / want).abs() <= err * 1.01, "{target:?} at {x}");
            }
        }
        assert!(NewtonApprox::new(NewtonTarget::Inverse, 1.0, 2.0, 0.0).is_err());
    }
}
