//! Composite minimax approximations of `sgn(x)` on `[-1, -gap] U [gap, 1]`.
//!
//! Stage `i` is the odd minimax polynomial for 1 on `[d_i, 1]`, divided by
//! its maximum on [0, 1] so that every stage maps [-1, 1] into [-1, 1]; it
//! maps `[d_i, 1]` into `[d_(i+1), 1]` with `d_(i+1) = (1 - e_i) / max`.
//! The last stage is not rescaled: its error is the composite's error for
//! every `|x| >= gap`. Stages are chosen greedily by progress per level of
//! `logit(d)`, preferring the cheapest final stage that meets the error.
//! Everything is computed here; there are no coefficient tables.

use super::minimax::minimax_odd;
use crate::error::{invalid, NnError};
use nexus_ckks::circuits::Chebyshev;

const DEGREES: [usize; 5] = [3, 7, 15, 31, 63];
const MAX_STAGES: usize = 12;

/// A composite sign approximation.
#[derive(Clone, Debug, PartialEq)]
pub struct CompositeSign {
    stages: Vec<Chebyshev>,
    gap: f64,
    error: f64,
    peak: f64,
}

struct Stage {
    poly: Chebyshev,
    /// Minimax error on `[d, 1]`.
    error: f64,
    /// Maximum of `|p|` on [0, 1].
    peak: f64,
}

fn stage(d: f64, degree: usize) -> Result<Stage, NnError> {
    let (poly, _) = minimax_odd(|_| 1.0, d, 1.0, degree)?;
    // Error and peak re-measured on a dense grid (Remez's own grid is
    // coarser), with a 1% margin so that the next stage's interval is never
    // entered from below.
    let dense = 20000;
    let error = (0..=dense).map(|i| d + (1.0 - d) * i as f64 / dense as f64).map(|x| (poly.evaluate(x) - 1.0).abs());
    let error = 1.01 * error.fold(0.0, f64::max);
    let peak = (0..=dense).map(|i| poly.evaluate(i as f64 / dense as f64).abs()).fold(0.0, f64::max).max(1.0 + error);
    Ok(Stage { poly, error, peak })
}

fn depth_of(degree: usize) -> usize {
    (usize::BITS - degree.leading_zeros()) as usize
}

fn scaled(poly: &Chebyshev, factor: f64) -> Chebyshev {
    Chebyshev { a: poly.a, b: poly.b, coeffs: poly.coeffs.iter().map(|c| c * factor).collect() }
}

impl CompositeSign {
    /// A composite within `max_error` of `sgn` for `gap <= |x| <= 1`, with
    /// stages of depth at most 6.
    pub fn new(gap: f64, max_error: f64) -> Result<Self, NnError> {
        Self::with_max_stage_depth(gap, max_error, 6)
    }

    /// As [`new`](Self::new), each stage at most `max_stage_depth` deep
    /// (so that a stage fits between two bootstraps).
    pub fn with_max_stage_depth(gap: f64, max_error: f64, max_stage_depth: usize) -> Result<Self, NnError> {
        if !(gap > 0.0 && gap < 1.0) {
            return Err(invalid("sign", format!("gap {gap} must be in (0, 1)")));
        }
        if !(max_error > 0.0 && max_error < 1.0) {
            return Err(invalid("sign", format!("error {max_error} must be in (0, 1)")));
        }
        let logit = |d: f64| (d / (1.0 - d)).ln();
        let mut stages = Vec::new();
        let mut d = gap;
        for _ in 0..MAX_STAGES {
            let candidates = DEGREES
                .iter()
                .filter(|&&deg| depth_of(deg) <= max_stage_depth)
                .map(|&deg| stage(d, deg).map(|s| (deg, s)))
                .collect::<Result<Vec<_>, _>>()?;
            // Finish with the shallowest stage that meets the error.
            if let Some((_, last)) = candidates.iter().find(|(_, s)| s.error <= max_error) {
                stages.push(last.poly.clone());
                return Self::checked(stages, gap, last.error);
            }
            let (_, best) = candidates
                .into_iter()
                .map(|(deg, s)| {
                    let next = (1.0 - s.error) / s.peak;
                    ((logit(next) - logit(d)) / depth_of(deg) as f64, s)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .ok_or_else(|| invalid("sign", "no candidate degree"))?;
            d = (1.0 - best.error) / best.peak;
            stages.push(scaled(&best.poly, 1.0 / best.peak));
        }
        Err(invalid("sign", format!("gap {gap} and error {max_error} need more than {MAX_STAGES} stages")))
    }

    /// A composite with explicit stage degrees (all but the last rescaled).
    pub fn with_degrees(gap: f64, degrees: &[usize]) -> Result<Self, NnError> {
        if !(gap > 0.0 && gap < 1.0) || degrees.is_empty() {
            return Err(invalid("sign", format!("gap {gap} must be in (0, 1) and degrees non-empty")));
        }
        let mut d = gap;
        let mut stages = Vec::new();
        for (i, &deg) in degrees.iter().enumerate() {
            let s = stage(d, deg)?;
            if i + 1 == degrees.len() {
                stages.push(s.poly);
                return Self::checked(stages, gap, s.error);
            }
            d = (1.0 - s.error) / s.peak;
            stages.push(scaled(&s.poly, 1.0 / s.peak));
        }
        Err(invalid("sign", "no stages"))
    }

    /// Verifies the bound on a dense grid (a failure here is a bug in the
    /// construction, reported rather than trusted).
    fn checked(stages: Vec<Chebyshev>, gap: f64, last_error: f64) -> Result<Self, NnError> {
        let me = Self { stages, gap, error: last_error, peak: 1.0 };
        let mut worst: f64 = 0.0;
        let mut overall: f64 = 0.0;
        for i in 0..=20000 {
            let x = i as f64 / 20000.0;
            let y = me.evaluate(x);
            overall = overall.max(y.abs());
            if x >= gap {
                worst = worst.max((y - 1.0).abs());
            }
        }
        // The last stage may overshoot slightly inside (0, gap); 2^-10 above
        // 1 is harmless for comparisons (they multiply by |a - b| < gap).
        let slack = 1e-9;
        if worst > last_error + slack || overall > 1.0 + last_error.max(2f64.powi(-10)) {
            return Err(invalid("sign", format!("composite check failed: error {worst:.3e}, peak {overall:.6}")));
        }
        Ok(Self { error: worst.max(last_error), peak: overall, ..me })
    }

    /// The stages, applied first to last.
    pub fn stages(&self) -> &[Chebyshev] {
        &self.stages
    }

    /// Smallest `|x|` resolved.
    pub fn gap(&self) -> f64 {
        self.gap
    }

    /// Max `|p(x) - sgn(x)|` for `gap <= |x| <= 1`.
    pub fn error(&self) -> f64 {
        self.error
    }

    /// Max of `|p(x)|` over [-1, 1] (measured).
    pub fn peak(&self) -> f64 {
        self.peak
    }

    /// Levels on ciphertexts (the stages' depths).
    pub fn depth(&self) -> usize {
        self.stages.iter().map(|s| s.depth()).sum()
    }

    /// The f64 twin.
    pub fn evaluate(&self, x: f64) -> f64 {
        self.stages.iter().fold(x, |v, s| s.evaluate(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composites_meet_their_bounds() {
        for log_gap in [6, 8, 10, 12] {
            let gap = 2f64.powi(-log_gap);
            let t = std::time::Instant::now();
            let s = CompositeSign::new(gap, 2f64.powi(-12)).unwrap();
            let degrees: Vec<usize> = s.stages().iter().map(|p| p.degree()).collect();
            println!(
                "gap 2^-{log_gap}: degrees {degrees:?}, depth {}, error {:.2e}, {:?}",
                s.depth(),
                s.error(),
                t.elapsed()
            );
            assert!(s.error() <= 2f64.powi(-12));
            let mut state = 12345u64;
            for _ in 0..20000 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                let y = s.evaluate(x);
                assert!(y.abs() <= s.peak() + 1e-12 && s.peak() <= 1.0 + 2f64.powi(-10), "unbounded at {x}");
                if x.abs() >= gap {
                    assert!((y - x.signum()).abs() <= s.error() + 1e-9, "x = {x}: {y}");
                }
            }
        }
        assert!(CompositeSign::new(0.0, 0.1).is_err());
        assert!(CompositeSign::new(0.1, 1.5).is_err());
        let explicit = CompositeSign::with_degrees(0.1, &[7, 7, 15]).unwrap();
        assert_eq!(explicit.depth(), 3 + 3 + 4);
    }
}
