//! Encoding real and complex vectors into plaintext polynomials.
//!
//! Slot encoding uses the canonical embedding: slot `j` of an `n`-slot
//! plaintext is the evaluation of the polynomial at `zeta^(5^j)`, computed
//! by a special FFT over the rotation group. Sparse slot counts (`n < N/2`)
//! embed into `X^(N/2n)`. Coefficient encoding puts values straight into
//! coefficients (the compressed input of NEXUS's first layer).
//!
//! Decoding reconstructs each coefficient exactly from its residues (Garner's
//! mixed radix with centred digits) before converting to floating point, so
//! no precision is lost to the RNS representation.

use super::plaintext::{Encoding, Plaintext};
use crate::error::CkksError;
use crate::ring::{Basis, Coeff, Ntt, Poly};
use crate::Parameters;
use num_complex::Complex64;

/// Encodes and decodes plaintexts.
///
/// ```
/// use nexus_ckks::{Complex64, Encoder, Parameters};
/// let params = Parameters::preset("INSECURE_N11_QP230_TEST").unwrap();
/// let enc = Encoder::new(&params);
/// let v = [Complex64::new(0.25, -1.0), Complex64::new(3.0, 0.5)];
/// let pt = enc.encode_complex(&v, 2, params.default_scale()).unwrap();
/// let back = enc.decode_complex(&pt).unwrap();
/// assert!((back[1] - v[1]).norm() < 1e-6);
/// // Coefficient encoding (NEXUS's compressed input): N values per plaintext.
/// let coeffs: Vec<f64> = (0..params.n()).map(|i| i as f64 / 1e4).collect();
/// let pt = enc.encode_coefficients(&coeffs, 0, params.default_scale()).unwrap();
/// assert!((enc.decode_coefficients(&pt).unwrap()[7] - 7e-4).abs() < 1e-8);
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    params: Parameters,
    /// `5^j mod 2N` for `j < N/2`.
    rot_group: Vec<usize>,
    /// `exp(2 pi i k / 2N)` for `k <= 2N`.
    roots: Vec<Complex64>,
    /// The special FFT's twiddles, stage by stage: those of a stage with
    /// half-length `h` at `h..2h`, forward and inverse (contiguous loads
    /// instead of a gather from `roots` per butterfly).
    fft_twiddles: Vec<Complex64>,
    fft_twiddles_inv: Vec<Complex64>,
    /// Garner tables: `prefix_mod[i][k] = prod_{j<k} q_j mod q_i` for `k <= i`.
    prefix_mod: Vec<Vec<u64>>,
    /// `(prod_{j<i} q_j)^-1 mod q_i`.
    prefix_inv: Vec<u64>,
}

impl Encoder {
    /// An encoder for `params`.
    pub fn new(params: &Parameters) -> Self {
        let n = params.n();
        let m = 2 * n;
        let mut rot_group = Vec::with_capacity(n / 2);
        let mut g = 1usize;
        for _ in 0..n / 2 {
            rot_group.push(g);
            g = g * 5 % m;
        }
        let roots: Vec<Complex64> = (0..=m)
            .map(|k| {
                let angle = 2.0 * std::f64::consts::PI * k as f64 / m as f64;
                Complex64::new(angle.cos(), angle.sin())
            })
            .collect();
        let mut fft_twiddles = vec![Complex64::new(0.0, 0.0); (n / 2).max(1)];
        let mut fft_twiddles_inv = fft_twiddles.clone();
        let mut lenh = 1;
        while 2 * lenh <= n / 2 {
            // A stage of length 2h: lenq = 8h, twiddle exponents taken
            // modulo lenq and scaled up to the 2N-th roots.
            let lenq = 8 * lenh;
            let (mask, shift) = (lenq - 1, (m / lenq).trailing_zeros());
            for j in 0..lenh {
                let r = rot_group[j] & mask;
                fft_twiddles[lenh + j] = roots[r << shift];
                fft_twiddles_inv[lenh + j] = roots[(lenq - r) << shift];
            }
            lenh *= 2;
        }
        let q = params.ring().q();
        let mut prefix_mod = Vec::with_capacity(q.len());
        let mut prefix_inv = Vec::with_capacity(q.len());
        for (i, qi) in q.iter().enumerate() {
            let mut row = Vec::with_capacity(i + 1);
            let mut acc = 1u64;
            for k in 0..=i {
                row.push(acc);
                if k < i {
                    acc = qi.mul(acc, q[k].value() % qi.value());
                }
            }
            prefix_inv.push(qi.inv(row[i]).unwrap_or(0));
            prefix_mod.push(row);
        }
        Self { params: params.clone(), rot_group, roots, fft_twiddles, fft_twiddles_inv, prefix_mod, prefix_inv }
    }

    /// `5^j mod 2N` for `j < N/2` (the slot ordering).
    pub(crate) fn rotation_group(&self) -> &[usize] {
        &self.rot_group
    }

    /// `exp(2 pi i k / 2N)` for `k <= 2N`.
    pub(crate) fn roots(&self) -> &[Complex64] {
        &self.roots
    }

    fn check_slots(&self, slots: usize) -> Result<(), CkksError> {
        if slots == 0 || !slots.is_power_of_two() || slots > self.params.max_slots() {
            return Err(CkksError::InvalidInput(format!(
                "slot count {slots} must be a power of two in 1..={}",
                self.params.max_slots()
            )));
        }
        Ok(())
    }

    /// Special inverse FFT (slots -> coefficients of the embedding).
    fn fft_special_inv(&self, vals: &mut [Complex64]) {
        let size = vals.len();
        let mut lenh = size >> 1;
        while lenh >= 1 {
            let twiddles = &self.fft_twiddles_inv[lenh..2 * lenh];
            for block in vals.chunks_exact_mut(2 * lenh) {
                let (lo, hi) = block.split_at_mut(lenh);
                for ((x, y), w) in lo.iter_mut().zip(hi.iter_mut()).zip(twiddles) {
                    let u = *x + *y;
                    let v = (*x - *y) * w;
                    *x = u;
                    *y = v;
                }
            }
            lenh >>= 1;
        }
        bit_reverse_permute(vals);
        let inv = 1.0 / size as f64;
        vals.iter_mut().for_each(|v| *v *= inv);
    }

    /// Special FFT (coefficients of the embedding -> slots).
    fn fft_special(&self, vals: &mut [Complex64]) {
        let size = vals.len();
        bit_reverse_permute(vals);
        let mut lenh = 1;
        while 2 * lenh <= size {
            let twiddles = &self.fft_twiddles[lenh..2 * lenh];
            for block in vals.chunks_exact_mut(2 * lenh) {
                let (lo, hi) = block.split_at_mut(lenh);
                for ((x, y), w) in lo.iter_mut().zip(hi.iter_mut()).zip(twiddles) {
                    let u = *x;
                    let v = *y * w;
                    *x = u + v;
                    *y = u - v;
                }
            }
            lenh <<= 1;
        }
    }

    /// Encodes complex values into `values.len().next_power_of_two()` slots
    /// (zero padded) at `level` and `scale`.
    pub fn encode_complex(&self, values: &[Complex64], level: usize, scale: f64) -> Result<Plaintext, CkksError> {
        let slots = values.len().max(1).next_power_of_two();
        self.encode_complex_slots(values, slots, level, scale)
    }

    /// Encodes complex values into exactly `slots` slots.
    pub fn encode_complex_slots(
        &self,
        values: &[Complex64],
        slots: usize,
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        self.check_slots(slots)?;
        if values.len() > slots {
            return Err(CkksError::InvalidInput(format!("{} values do not fit in {slots} slots", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.re.is_finite() || !v.im.is_finite()) {
            return Err(CkksError::InvalidInput(format!("value {i} is not finite")));
        }
        let mut w = vec![Complex64::new(0.0, 0.0); slots];
        w[..values.len()].copy_from_slice(values);
        self.fft_special_inv(&mut w);
        // Fewer slots than N/2 embed into X^(N / 2 slots): the coefficients
        // of X^(i N / 2 slots) and X^((slots + i) N / 2 slots), whose NTT is
        // the size-2-slots NTT with each value repeated.
        let compact: Vec<f64> = w.iter().map(|v| v.re).chain(w.iter().map(|v| v.im)).collect();
        let ring = self.params.ring();
        let poly = if compact.len() == self.params.n() {
            self.scaled_coefficients(&compact, level, scale)?.into_ntt(ring)
        } else {
            let basis = Basis::q(level.min(self.params.max_level()));
            let mut residues = vec![0u64; basis.limbs() * compact.len()];
            self.write_residues(&compact, level, scale, compact.len(), &mut residues)?;
            let mut poly = Poly::<Ntt>::uninit(ring, basis);
            ring.backend().forward_ntt_sparse(ring, basis, &residues, poly.data_mut());
            poly
        };
        Ok(Plaintext { poly, level, scale, encoding: Encoding::Slots(slots) })
    }

    /// Encodes real values into slots.
    pub fn encode_real(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext, CkksError> {
        let c: Vec<Complex64> = values.iter().map(|&x| Complex64::new(x, 0.0)).collect();
        self.encode_complex(&c, level, scale)
    }

    /// Encodes real values into exactly `slots` slots.
    pub fn encode_real_slots(
        &self,
        values: &[f64],
        slots: usize,
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        let c: Vec<Complex64> = values.iter().map(|&x| Complex64::new(x, 0.0)).collect();
        self.encode_complex_slots(&c, slots, level, scale)
    }

    /// Puts up to N real values directly into the coefficients.
    pub fn encode_coefficients(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext, CkksError> {
        let n = self.params.n();
        if values.len() > n {
            return Err(CkksError::InvalidInput(format!("{} coefficients exceed N = {n}", values.len())));
        }
        let mut coeffs = vec![0f64; n];
        coeffs[..values.len()].copy_from_slice(values);
        let poly = self.scaled_coefficients(&coeffs, level, scale)?;
        Ok(Plaintext { poly: poly.into_ntt(self.params.ring()), level, scale, encoding: Encoding::Coefficients })
    }

    fn scaled_coefficients(&self, coeffs: &[f64], level: usize, scale: f64) -> Result<Poly<Coeff>, CkksError> {
        let ring = self.params.ring();
        let basis = Basis::q(level);
        // Every limb is written below when the coefficients fill it.
        let mut poly = if coeffs.len() == ring.n() {
            Poly::<Coeff>::uninit(ring, basis)
        } else {
            Poly::<Coeff>::zero(ring, basis)
        };
        self.write_residues(coeffs, level, scale, ring.n(), poly.data_mut())?;
        Ok(poly)
    }

    /// `round(coeffs * scale)` modulo every chain prime up to `level`, limb
    /// after limb (`stride` words per limb, the first `coeffs.len()` written).
    fn write_residues(
        &self,
        coeffs: &[f64],
        level: usize,
        scale: f64,
        stride: usize,
        out: &mut [u64],
    ) -> Result<(), CkksError> {
        if level > self.params.max_level() {
            return Err(CkksError::InvalidInput(format!(
                "level {level} exceeds the maximum {}",
                self.params.max_level()
            )));
        }
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(CkksError::InvalidInput(format!("scale {scale} must be finite and at least 1")));
        }
        let ring = self.params.ring();
        let basis = Basis::q(level);
        let log_q: f64 = self.params.q()[..=level].iter().map(|&q| (q as f64).log2()).sum();
        let bound = 2f64.powf((log_q - 1.0).min(126.0));
        // Rounded to i64 while the values fit (f64 -> i128 is a library
        // call, a few times slower), to i128 otherwise.
        const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
        let mut small = Vec::with_capacity(coeffs.len());
        let mut rounded = Vec::new();
        for (k, &c) in coeffs.iter().enumerate() {
            let v = (c * scale).round();
            if !v.is_finite() || v.abs() >= bound {
                return Err(CkksError::InvalidInput(format!(
                    "coefficient {k} = {c} times scale 2^{:.1} does not fit modulus of 2^{log_q:.0} at level {level}",
                    scale.log2()
                )));
            }
            if rounded.is_empty() && v.abs() < I64_LIMIT {
                small.push(v as i64);
            } else {
                if rounded.is_empty() {
                    rounded = small.iter().map(|&x| x as i128).collect();
                }
                rounded.push(v as i128);
            }
        }
        let small = rounded.is_empty().then_some(small);
        use rayon::prelude::*;
        out.par_chunks_mut(stride).enumerate().for_each(|(j, limb)| {
            let m = ring.modulus_of(basis, j);
            let limb = &mut limb[..coeffs.len()];
            if let Some(words) = &small {
                crate::math::lanes::reduce_signed(m, words, limb);
            } else {
                for (dst, &v) in limb.iter_mut().zip(&rounded) {
                    *dst = m.reduce_i128(v);
                }
            }
        });
        Ok(())
    }

    /// Encodes a slot vector of `slots` slots that repeats with period
    /// `period.len()` (a power of two dividing `slots`), given by one
    /// period. Such a vector is a polynomial in `X^(N / 2p)`, the encoding
    /// of the period in `p` slots: its FFT has size `p` and its NTT size
    /// `2p` per prime (see
    /// [`NttTable::forward_sparse`](crate::math::NttTable::forward_sparse)),
    /// a fraction of the full vector's encoding, and it decodes to the
    /// same values.
    pub fn encode_periodic_slots(
        &self,
        period: &[Complex64],
        slots: usize,
        level: usize,
        scale: f64,
    ) -> Result<Plaintext, CkksError> {
        self.check_slots(slots)?;
        let p = period.len();
        if p == 0 || !p.is_power_of_two() || !slots.is_multiple_of(p) {
            return Err(CkksError::InvalidInput(format!(
                "period {p} must be a power of two dividing the {slots} slots"
            )));
        }
        // One period in `p` slots is the same polynomial; only the slot
        // count it is read with differs.
        let mut pt = self.encode_complex_slots(period, p, level, scale)?;
        pt.encoding = Encoding::Slots(slots);
        Ok(pt)
    }

    /// Exact centred value of every coefficient of an NTT-form polynomial,
    /// as floating point.
    fn centred_coefficients(&self, pt: &Plaintext) -> Vec<f64> {
        let ring = self.params.ring();
        let coeff = pt.poly.clone().into_coeff(ring);
        let limbs = pt.level + 1;
        let n = ring.n();
        let q = ring.q();
        let mut out = vec![0f64; n];
        let mut digits = vec![0i64; limbs];
        for (k, o) in out.iter_mut().enumerate() {
            for i in 0..limbs {
                let qi = &q[i];
                // s = sum_{t<i} digits[t] * prod_{j<t} q_j mod q_i
                let mut s = 0u64;
                for t in 0..i {
                    s = qi.add(s, qi.mul(qi.reduce_i64(digits[t]), self.prefix_mod[i][t]));
                }
                let d = qi.mul(qi.sub(coeff.limb(i)[k], s), self.prefix_inv[i]);
                digits[i] = qi.center(d);
            }
            let mut v = 0f64;
            for i in (0..limbs).rev() {
                v = v * q[i].value() as f64 + digits[i] as f64;
            }
            *o = v;
        }
        out
    }

    /// Decodes the slots of a plaintext as complex values.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<Complex64>, CkksError> {
        let Encoding::Slots(slots) = pt.encoding else {
            return Err(CkksError::InvalidInput("plaintext is coefficient-encoded; use decode_coefficients".into()));
        };
        let coeffs = self.centred_coefficients(pt);
        let n = self.params.n();
        let gap = n / (2 * slots);
        let inv_scale = 1.0 / pt.scale;
        let mut w: Vec<Complex64> = (0..slots)
            .map(|i| Complex64::new(coeffs[i * gap] * inv_scale, coeffs[i * gap + n / 2] * inv_scale))
            .collect();
        self.fft_special(&mut w);
        Ok(w)
    }

    /// Decodes the slots of a plaintext, keeping the real parts.
    pub fn decode_real(&self, pt: &Plaintext) -> Result<Vec<f64>, CkksError> {
        Ok(self.decode_complex(pt)?.into_iter().map(|c| c.re).collect())
    }

    /// Decodes the N coefficients of a coefficient-encoded plaintext.
    pub fn decode_coefficients(&self, pt: &Plaintext) -> Result<Vec<f64>, CkksError> {
        if pt.encoding != Encoding::Coefficients {
            return Err(CkksError::InvalidInput("plaintext is slot-encoded; use decode_complex or decode_real".into()));
        }
        let inv_scale = 1.0 / pt.scale;
        Ok(self.centred_coefficients(pt).into_iter().map(|c| c * inv_scale).collect())
    }
}

fn bit_reverse_permute<T>(v: &mut [T]) {
    let n = v.len();
    let bits = n.trailing_zeros();
    if bits == 0 {
        return;
    }
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn params() -> Parameters {
        Parameters::preset("INSECURE_N11_QP230_TEST").unwrap()
    }

    #[test]
    fn slots_are_evaluations_at_powers_of_five() {
        let params = params();
        let enc = Encoder::new(&params);
        let n = params.n();
        for slots in [1usize, 4, n / 2] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(slots as u64);
            let vals: Vec<Complex64> =
                (0..slots).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect();
            let pt = enc.encode_complex(&vals, 2, 2f64.powi(30)).unwrap();
            let coeffs: Vec<f64> = enc.centred_coefficients(&pt).iter().map(|c| c / pt.scale).collect();
            for j in 0..slots {
                let e = enc.rot_group[j];
                let zeta = |k: usize| enc.roots[(k * e) % (2 * n)];
                let mut acc = Complex64::new(0.0, 0.0);
                for (k, &c) in coeffs.iter().enumerate() {
                    acc += zeta(k) * c;
                }
                assert!((acc - vals[j]).norm() < 1e-6, "slots {slots} slot {j}: {acc} vs {}", vals[j]);
            }
            let back = enc.decode_complex(&pt).unwrap();
            let err = back.iter().zip(&vals).map(|(a, b)| (a - b).norm()).fold(0.0, f64::max);
            assert!(err < 2f64.powi(-22), "slots {slots}: error {err}");
        }
    }

    /// A periodic vector encoded from one period is the polynomial the
    /// full encoding gives (up to each coefficient's rounding), at every
    /// slot count and period, and decodes to the repeated values.
    #[test]
    fn periodic_encoding_equals_the_full_one() {
        let params = params();
        let enc = Encoder::new(&params);
        let n = params.n();
        let level = params.max_level();
        let scale = 2f64.powi(30);
        for slots in [8usize, 64, n / 2] {
            for period in [1usize, 2, 8, slots] {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((slots * 31 + period) as u64);
                let one: Vec<Complex64> =
                    (0..period).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect();
                let full: Vec<Complex64> = (0..slots).map(|j| one[j % period]).collect();
                let fast = enc.encode_periodic_slots(&one, slots, level, scale).unwrap();
                let dense = enc.encode_complex_slots(&full, slots, level, scale).unwrap();
                assert_eq!(fast.encoding(), dense.encoding());
                let (a, b) = (enc.centred_coefficients(&fast), enc.centred_coefficients(&dense));
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
                assert!(worst <= 1.0, "slots {slots} period {period}: coefficients differ by {worst}");
                let back = enc.decode_complex(&fast).unwrap();
                let err = back.iter().zip(&full).map(|(x, y)| (x - y).norm()).fold(0.0, f64::max);
                assert!(err < 2f64.powi(-22), "slots {slots} period {period}: error {err}");
            }
        }
        let one = [Complex64::new(1.0, 0.0); 3];
        assert!(enc.encode_periodic_slots(&one, 8, level, scale).is_err(), "a period of 3");
        assert!(enc.encode_periodic_slots(&one[..2], 1, level, scale).is_err(), "a period longer than the slots");
        assert!(enc.encode_periodic_slots(&[Complex64::new(f64::NAN, 0.0)], 8, level, scale).is_err());
        assert!(enc.encode_periodic_slots(&one[..1], 8, level + 1, scale).is_err(), "a level above the chain");
    }

    #[test]
    fn coefficients_round_trip_and_large_values_are_refused() {
        let params = params();
        let enc = Encoder::new(&params);
        let vals: Vec<f64> = (0..params.n()).map(|i| (i as f64).sin() * 1000.0).collect();
        let pt = enc.encode_coefficients(&vals, params.max_level(), 2f64.powi(40)).unwrap();
        let back = enc.decode_coefficients(&pt).unwrap();
        let err = back.iter().zip(&vals).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
        // Values past 2^63 once scaled (from the middle on: the rounding
        // switches from i64 to i128 there) round-trip too.
        let wide: Vec<f64> =
            (0..params.n()).map(|i| if i < params.n() / 2 { 0.5 } else { -3e4 } * (i as f64).cos()).collect();
        let pt = enc.encode_coefficients(&wide, params.max_level(), 2f64.powi(50)).unwrap();
        let back = enc.decode_coefficients(&pt).unwrap();
        let err = back.iter().zip(&wide).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
        assert!(enc.encode_coefficients(&[1e30], 0, 2f64.powi(30)).is_err());
        assert!(enc.encode_real(&[f64::NAN], 0, 2f64.powi(30)).is_err());
        assert!(enc.encode_real(&vec![0.0; params.n()], 0, 2f64.powi(30)).is_err());
    }
}
