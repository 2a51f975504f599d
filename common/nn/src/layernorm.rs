//! LayerNorm over the rows of an interleaved [`RowLayout`]:
//! `gamma * (x - mean) / sqrt(var + eps) + beta`, with the mean, the variance,
//! gamma and beta all included (the reference skips mean, gamma and beta).
//!
//! Depth: mean 1, square 1, inverse square root (initial guess on the
//! declared variance interval, then Newton), final product 1. The centred
//! input times gamma is computed beside the inverse square root, off the
//! critical path. Padding slots are masked together with the mean, so they
//! contribute nothing to the variance and come out as zero.

use crate::cost::OpCost;
use crate::engine::Engine;
use crate::error::{check_range, invalid, NnError};
use crate::layout::RowLayout;
use crate::newton::{no_refresh, NewtonApprox, NewtonTarget, RefreshFn};
use nexus_ckks::{Ciphertext, Parameters};

/// A LayerNorm with its weights and the variance interval it is valid on.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    layout: RowLayout,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    eps: f64,
    var_range: (f64, f64),
    invsqrt: NewtonApprox,
    /// Rows at and beyond this index are padding: they come out as zero
    /// and their variance is replaced by one in range.
    /// Which rows are real (the others are padding tokens).
    real_rows: Option<Vec<bool>>,
}

impl LayerNorm {
    /// `gamma` and `beta` have `row_len` entries; every row's variance plus
    /// `eps` must lie in `var_range`; `max_rel_error` bounds the inverse
    /// square root's relative error.
    pub fn new(
        layout: RowLayout,
        gamma: Vec<f64>,
        beta: Vec<f64>,
        eps: f64,
        var_range: (f64, f64),
        max_rel_error: f64,
    ) -> Result<Self, NnError> {
        let d = layout.row_len();
        if gamma.len() != d || beta.len() != d {
            return Err(invalid(
                "layernorm",
                format!("gamma/beta have {}/{} entries, rows have {d}", gamma.len(), beta.len()),
            ));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(invalid("layernorm", format!("eps {eps} must be finite and >= 0")));
        }
        // Fitted on the row sums of squares S = d var, so 1/d never costs a
        // level: gamma absorbs sqrt(d) instead (the relative error of the
        // fit is the same on the scaled interval).
        let (lo, hi) = (var_range.0 * d as f64, var_range.1 * d as f64);
        let invsqrt = NewtonApprox::new(NewtonTarget::InverseSqrt, lo, hi, max_rel_error)?;
        Ok(Self { layout, gamma, beta, eps, var_range, invsqrt, real_rows: None })
    }

    /// Only the first `n` rows are real (padding tokens): the others come
    /// out as exact zeros whatever they hold, at no extra level.
    pub fn with_real_rows(self, n: usize) -> Result<Self, NnError> {
        let rows = self.layout.rows();
        self.with_row_mask((0..rows).map(|r| r < n).collect())
    }

    /// Only the rows where `real` is true are real (padding tokens of a
    /// batch of sentences); see [`with_real_rows`](Self::with_real_rows).
    pub fn with_row_mask(mut self, real: Vec<bool>) -> Result<Self, NnError> {
        if real.len() != self.layout.rows() || !real.contains(&true) {
            return Err(invalid(
                "layernorm",
                format!("a mask of {} rows with a real one for {} rows", real.len(), self.layout.rows()),
            ));
        }
        self.real_rows = Some(real);
        Ok(self)
    }

    fn is_real(&self, row: usize) -> bool {
        self.real_rows.as_ref().is_none_or(|real| real[row])
    }

    /// The layout the operator reads and writes.
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    /// The inverse square root approximation in use.
    pub fn invsqrt(&self) -> &NewtonApprox {
        &self.invsqrt
    }

    /// The f64 twin (same approximation of `1/sqrt`); refuses rows whose
    /// variance is outside the declared interval.
    pub fn plain(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, NnError> {
        let d = self.layout.row_len() as f64;
        let mut out = Vec::with_capacity(rows.len());
        for (r, row) in rows.iter().enumerate() {
            if !self.is_real(r) {
                out.push(vec![0.0; row.len()]);
                continue;
            }
            let mean = row.iter().sum::<f64>() / d;
            let squares = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() + d * self.eps;
            check_range("layernorm variance", &[squares / d], self.var_range.0, self.var_range.1)?;
            let inv = self.invsqrt.evaluate(squares) * d.sqrt();
            out.push(row.iter().enumerate().map(|(j, x)| self.gamma[j] * (x - mean) * inv + self.beta[j]).collect());
        }
        Ok(out)
    }

    /// Levels, rotations (two row sums), products, Galois elements.
    pub fn cost(&self, params: &Parameters) -> OpCost {
        let sums = self.layout.sum_cost(params);
        OpCost {
            levels: 2 + self.invsqrt.depth() + 1,
            rotations: 2 * sums.rotations,
            products: 1 + self.invsqrt.products() + 1,
            bootstraps: 0,
            galois_elements: sums.galois_elements,
        }
    }

    /// `per_element` in every real row, zeros in padding rows.
    fn broadcast(&self, per_element: &[f64]) -> Vec<f64> {
        let rows: Vec<Vec<f64>> = (0..self.layout.rows())
            .map(|r| if self.is_real(r) { per_element.to_vec() } else { vec![0.0; per_element.len()] })
            .collect();
        self.layout.pack(&rows).unwrap_or_default()
    }

    /// `per_row[r]` on every slot of row `r` (padding positions included:
    /// the row sums leave their value on every slot of the row).
    fn pad_offset(&self, per_row: &[f64]) -> Vec<f64> {
        let rows = self.layout.rows();
        (0..self.layout.slots()).map(|s| per_row[s % rows]).collect()
    }

    /// Encrypted LayerNorm on a ciphertext in the layout (padding zero).
    pub fn apply(&self, engine: &Engine<'_>, x: &Ciphertext) -> Result<Ciphertext, NnError> {
        let level = x.level();
        if level < self.cost(engine.params()).levels {
            return Err(invalid(
                "layernorm",
                format!("input at level {level}, needs {}", self.cost(engine.params()).levels),
            ));
        }
        self.apply_refreshing(engine, x.clone(), f64::INFINITY, &mut no_refresh)
    }

    /// [`apply`](Self::apply) with `refresh` called before each stage
    /// (centring and squaring, the inverse square root and its Newton
    /// steps, the final products); `input_bound` bounds `|x|`.
    pub fn apply_refreshing(
        &self,
        engine: &Engine<'_>,
        x: Ciphertext,
        input_bound: f64,
        refresh: &mut RefreshFn<'_>,
    ) -> Result<Ciphertext, NnError> {
        let d = self.layout.row_len() as f64;
        let deviation = (d * self.var_range.1).sqrt();
        // Three levels: mean, square, and the gamma product (done early so
        // the centred values need no bootstrap of their own).
        let x = refresh.refresh(x, 3, input_bound)?;
        let level = x.level();
        let sums = self.layout.row_sums(engine.eval, &x, engine.galois)?;
        let mean_masked: Vec<f64> = self.layout.mask().iter().map(|m| m / d).collect();
        let mean = engine.mul_plain_to(&sums, &mean_masked, level - 1, x.scale())?;
        let centred = engine.sub(&x, &mean)?;
        let gamma: Vec<f64> = self.gamma.iter().map(|g| g * d.sqrt()).collect();
        let gamma_max = gamma.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        let scaled = engine.mul_plain_to(
            &centred,
            &self.broadcast(&gamma),
            centred.level().saturating_sub(1),
            centred.scale(),
        )?;
        let squares = engine.mul(&centred, &centred)?;
        let var_sum = self.layout.row_sums(engine.eval, &squares, engine.galois)?;
        let mut var_sum = engine.eval.add_const(&var_sum, d * self.eps)?;
        if self.real_rows.is_some() {
            // Padding rows get a variance in the middle of the range, so the
            // inverse square root stays on its interval there.
            let mid = d * (self.var_range.0 + self.var_range.1) / 2.0;
            let per_row: Vec<f64> = (0..self.layout.rows()).map(|r| if self.is_real(r) { 0.0 } else { mid }).collect();
            let offset = self.pad_offset(&per_row);
            let offset = engine.encoder.encode_real(&offset, var_sum.level(), var_sum.scale())?;
            var_sum = engine.eval.add_plain(&var_sum, &offset)?;
        }
        let inv = self.invsqrt.apply_refreshing(engine, var_sum, refresh)?;
        let inv_bound = self.invsqrt.evaluate(self.invsqrt.lo()) * 1.5;
        let (scaled, inv) = refresh.refresh_pair((scaled, 1, gamma_max * deviation), (inv, 1, inv_bound))?;
        let out = engine.mul(&scaled, &inv)?;
        let beta = engine.encoder.encode_real(&self.broadcast(&self.beta), out.level(), out.scale())?;
        Ok(engine.eval.add_plain(&out, &beta)?)
    }
}
