//! Remez exchange for odd polynomials in the Chebyshev basis.
//!
//! `p(x) = sum_k a_k T_(2k+1)(x)` minimising `max |p - f|` on `[lo, hi]`
//! (`0 < lo < hi <= 1`); by oddness it approximates the odd extension of
//! `f` on `[-hi, -lo]` equally well. The Chebyshev basis keeps the linear
//! systems well conditioned up to degree 63 or so.

use crate::error::{invalid, NnError};
use nexus_ckks::circuits::Chebyshev;

/// `T_j(x)` for `|x| <= 1`.
fn cheb(j: usize, x: f64) -> f64 {
    (j as f64 * x.clamp(-1.0, 1.0).acos()).cos()
}

/// Solves `m x = b` by Gaussian elimination with partial pivoting.
fn solve(mut m: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = m[row][col] / m[col][col];
            for k in col..n {
                m[row][k] -= f * m[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / m[row][row];
    }
    Some(x)
}

fn odd_poly(coeffs: &[f64]) -> Chebyshev {
    let mut c = vec![0.0; 2 * coeffs.len()];
    for (k, a) in coeffs.iter().enumerate() {
        c[2 * k + 1] = *a;
    }
    Chebyshev { a: -1.0, b: 1.0, coeffs: c }
}

/// The odd minimax polynomial of odd `degree` for `f` on `[lo, hi]`, and its
/// maximum error measured on a dense grid.
pub fn minimax_odd(f: impl Fn(f64) -> f64, lo: f64, hi: f64, degree: usize) -> Result<(Chebyshev, f64), NnError> {
    if !(lo > 0.0 && hi <= 1.0 && lo < hi) {
        return Err(invalid("minimax", format!("interval [{lo}, {hi}] must satisfy 0 < lo < hi <= 1")));
    }
    if degree.is_multiple_of(2) || degree > 127 {
        return Err(invalid("minimax", format!("degree {degree} must be odd and at most 127")));
    }
    let n = degree / 2 + 1; // unknown coefficients
    let grid_len = 64 * (n + 2);
    // An odd p(x) is x q(x^2): the natural variable is t = x^2, so points
    // are Chebyshev-spaced in t (in x they would cluster badly near lo and
    // the first systems would be ill-conditioned beyond degree 15).
    let (t_lo, t_hi) = (lo * lo, hi * hi);
    let in_t = |i: usize, count: usize| {
        let t = (t_lo + t_hi) / 2.0 - (t_hi - t_lo) / 2.0 * (std::f64::consts::PI * i as f64 / count as f64).cos();
        t.sqrt()
    };
    let grid: Vec<f64> = (0..=grid_len).map(|i| in_t(i, grid_len)).collect();
    let mut refs: Vec<f64> = (0..n + 1).map(|i| in_t(i, n)).collect();
    let mut best: Option<(Vec<f64>, f64)> = None;
    for _ in 0..60 {
        let m: Vec<Vec<f64>> = refs
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let mut row: Vec<f64> = (0..n).map(|k| cheb(2 * k + 1, x)).collect();
                row.push(if i % 2 == 0 { 1.0 } else { -1.0 });
                row
            })
            .collect();
        let rhs: Vec<f64> = refs.iter().map(|&x| f(x)).collect();
        let Some(sol) = solve(m, rhs) else { break };
        let coeffs = sol[..n].to_vec();
        let poly = odd_poly(&coeffs);
        let err: Vec<f64> = grid.iter().map(|&x| poly.evaluate(x) - f(x)).collect();
        let max_err = err.iter().fold(0.0f64, |a, e| a.max(e.abs()));
        if best.as_ref().is_none_or(|(_, b)| max_err < *b) {
            best = Some((coeffs.clone(), max_err));
        }
        // Local extrema of the error (endpoints included), one per sign run.
        let mut extrema: Vec<(f64, f64)> = Vec::new();
        for i in 0..grid.len() {
            let is_extremum = (i == 0 || err[i].abs() >= err[i - 1].abs())
                && (i + 1 == grid.len() || err[i].abs() >= err[i + 1].abs());
            if !is_extremum {
                continue;
            }
            match extrema.last_mut() {
                Some(last) if last.1.signum() == err[i].signum() => {
                    if err[i].abs() > last.1.abs() {
                        *last = (grid[i], err[i]);
                    }
                }
                _ => extrema.push((grid[i], err[i])),
            }
        }
        while extrema.len() > n + 1 {
            // Drop the smaller end so that alternation is kept.
            let (first, last) = (extrema[0].1.abs(), extrema[extrema.len() - 1].1.abs());
            if first < last {
                extrema.remove(0);
            } else {
                extrema.pop();
            }
        }
        if extrema.len() < n + 1 {
            break;
        }
        let min_ext = extrema.iter().fold(f64::INFINITY, |a, e| a.min(e.1.abs()));
        refs = extrema.iter().map(|e| e.0).collect();
        if (max_err - min_ext) <= 1e-6 * max_err {
            break;
        }
    }
    let (coeffs, err) =
        best.ok_or_else(|| invalid("minimax", format!("degree {degree} on [{lo}, {hi}]: singular system")))?;
    Ok((odd_poly(&coeffs), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_one_case_is_exact_and_higher_degrees_equioscillate() {
        let lo = 0.2;
        let (p, e) = minimax_odd(|_| 1.0, lo, 1.0, 1).unwrap();
        assert!((p.coeffs[1] - 2.0 / (1.0 + lo)).abs() < 1e-6, "{:?}", p.coeffs);
        assert!((e - (1.0 - lo) / (1.0 + lo)).abs() < 1e-6);
        // Minimax beats interpolation of a smooth sign surrogate of the same degree.
        for degree in [7, 15, 31] {
            let (p, e) = minimax_odd(|_| 1.0, 0.05, 1.0, degree).unwrap();
            assert!(p.coeffs.iter().step_by(2).all(|c| *c == 0.0), "even coefficients must vanish");
            let cheb = Chebyshev::interpolate(|x: f64| (20.0 * x).tanh(), -1.0, 1.0, degree);
            let e_cheb = (0..1000).map(|i| 0.05 + 0.95 * i as f64 / 999.0).map(|x| (cheb.evaluate(x) - 1.0).abs());
            assert!(e < e_cheb.fold(0.0, f64::max), "degree {degree}: {e}");
            assert!((p.evaluate(-0.5) + p.evaluate(0.5)).abs() < 1e-12, "odd");
        }
        assert!(minimax_odd(|_| 1.0, 0.0, 1.0, 7).is_err());
        assert!(minimax_odd(|_| 1.0, 0.1, 1.0, 8).is_err());
    }
}
