//! Encrypted sign, comparison and maximum from a [`CompositeSign`].
//!
//! `max(a, b) = (a + b)/2 + (a - b) sgn(a - b)/2`. With inputs in
//! `[-bound/2, bound/2]` the difference divided by `bound` lies in [-1, 1],
//! where the composite sign is within `error` of `sgn` once
//! `|a - b| >= gap * bound`. Closer pairs may come out anywhere between the
//! two values, so the maximum is off by at most `gap * bound / 2` (plus the
//! sign error times `|a - b| / 2`): that is what [`Comparator::max_error`]
//! states and the tests check.

use crate::approx::CompositeSign;
use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{invalid, NnError};
use crate::newton::polynomial_products;
use nexus_ckks::bootstrapping::{BootstrapKeys, Bootstrapper};
use nexus_ckks::Ciphertext;

/// Optional bootstrapping between stages (deep comparisons).
#[derive(Clone, Copy, Debug)]
pub struct Refresh<'a> {
    /// The circuit.
    pub bootstrapper: &'a Bootstrapper,
    /// Its keys.
    pub keys: &'a BootstrapKeys,
}

/// What the comparisons call when an operand is short of levels: a
/// plain bootstrap (no scaling, the values are already small).
pub trait Ensure {
    /// `ct` with at least `needed` levels.
    fn ensure(&mut self, engine: &Engine<'_>, ct: Ciphertext, needed: usize) -> Result<Ciphertext, NnError>;
}

impl Refresh<'_> {
    /// Fails unless bootstrapping leaves at least `needed` levels.
    pub fn check_provides(&self, needed: usize) -> Result<(), NnError> {
        if self.bootstrapper.output_level() < needed {
            return Err(invalid(
                "refresh",
                format!("{needed} levels needed, bootstrapping only provides {}", self.bootstrapper.output_level()),
            ));
        }
        Ok(())
    }
}

impl Ensure for Refresh<'_> {
    /// Bootstraps `ct` if it has fewer than `needed` levels.
    fn ensure(&mut self, engine: &Engine<'_>, ct: Ciphertext, needed: usize) -> Result<Ciphertext, NnError> {
        if ct.level() >= needed {
            return Ok(ct);
        }
        self.check_provides(needed)?;
        Ok(self.bootstrapper.bootstrap(engine.eval, &ct, self.keys)?)
    }
}

/// Sign and maximum for inputs in `[-bound/2, bound/2]`.
#[derive(Clone, Debug)]
pub struct Comparator {
    sign: CompositeSign,
    bound: f64,
}

impl Comparator {
    /// A comparator resolving differences of at least `gap * bound` with
    /// sign error at most `sign_error`, each sign stage at most
    /// `max_stage_depth` levels deep.
    pub fn new(bound: f64, gap: f64, sign_error: f64, max_stage_depth: usize) -> Result<Self, NnError> {
        if !(bound.is_finite() && bound > 0.0) {
            return Err(invalid("compare", format!("bound {bound} must be positive")));
        }
        Ok(Self { sign: CompositeSign::with_max_stage_depth(gap, sign_error, max_stage_depth)?, bound })
    }

    /// The composite sign.
    pub fn sign(&self) -> &CompositeSign {
        &self.sign
    }

    /// Input bound (values in `[-bound/2, bound/2]`).
    pub fn bound(&self) -> f64 {
        self.bound
    }

    /// Worst error of one encrypted-free maximum (f64 reasoning, see the
    /// module docs).
    pub fn max_error(&self) -> f64 {
        self.bound * (self.sign.gap() * (1.0 + self.sign.error()) + self.sign.error()) / 2.0
    }

    /// Levels of [`sign_of_difference`](Self::sign_of_difference): the
    /// scaling by `1/bound` and the stages.
    pub fn sign_levels(&self) -> usize {
        1 + self.sign.depth()
    }

    /// Cost of one maximum (no refresh).
    pub fn max_cost(&self) -> OpCost {
        let products: usize = self.sign.stages().iter().map(|s| polynomial_products(s.degree())).sum();
        OpCost { levels: self.sign_levels() + 1, products: products + 1, ..OpCost::default() }
    }

    /// f64 twin of `sgn((a - b) / bound)`.
    pub fn plain_sign(&self, diff: f64) -> f64 {
        self.sign.evaluate(diff / self.bound)
    }

    /// f64 twin of the maximum.
    pub fn plain_max(&self, a: f64, b: f64) -> f64 {
        (a + b) / 2.0 + (a - b) * self.plain_sign(a - b) / 2.0
    }

    /// Encrypted `sgn(diff / bound)`, refreshing between stages if needed.
    pub fn sign_of_difference(
        &self,
        engine: &Engine<'_>,
        diff: &Ciphertext,
        mut refresh: Option<&mut (dyn Ensure + '_)>,
    ) -> Result<Ciphertext, NnError> {
        let scale = engine.params().default_scale();
        let first = 1 + self.sign.stages().first().map_or(0, |s| s.depth());
        let mut x = refresh_to(engine, diff.clone(), first, refresh.as_deref_mut())?;
        x = engine.mul_const_to(&x, 1.0 / self.bound, x.level().saturating_sub(1), scale)?;
        for stage in self.sign.stages() {
            x = refresh_to(engine, x, stage.depth(), refresh.as_deref_mut())?;
            x = engine.polynomial(&x, stage, scale)?;
        }
        Ok(x)
    }

    /// Encrypted `max(a, b)` slot-wise.
    pub fn max(
        &self,
        engine: &Engine<'_>,
        a: &Ciphertext,
        b: &Ciphertext,
        mut refresh: Option<&mut (dyn Ensure + '_)>,
    ) -> Result<Ciphertext, NnError> {
        let diff = engine.sub(a, b)?;
        let sum = engine.add(a, b)?;
        let sign = self.sign_of_difference(engine, &diff, refresh.as_deref_mut())?;
        let sign = refresh_to(engine, sign, 1, refresh.as_deref_mut())?;
        // (a - b)/2 computed beside the sign (off the critical path), at the
        // sign's level or one below the difference's, whichever is lower (a
        // refreshed sign sits above the unrefreshed inputs).
        let diff = refresh_to(engine, diff, 2, refresh.as_deref_mut())?;
        let sum = refresh_to(engine, sum, 2, refresh)?;
        let level = sign.level().min(diff.level() - 1);
        let half_diff = engine.mul_const_to(&diff, 0.5, level, sign.scale())?;
        let prod = engine.mul(&half_diff, &sign)?;
        let half_sum = engine.mul_const_to(&sum, 0.5, prod.level(), prod.scale())?;
        engine.add(&prod, &half_sum)
    }
}

fn refresh_to(
    engine: &Engine<'_>,
    ct: Ciphertext,
    needed: usize,
    refresh: Option<&mut (dyn Ensure + '_)>,
) -> Result<Ciphertext, NnError> {
    match refresh {
        Some(r) => r.ensure(engine, ct, needed),
        None if ct.level() >= needed => Ok(ct),
        None => Err(invalid("compare", format!("operand at level {}, needs {needed}; pass a refresh", ct.level()))),
    }
}
