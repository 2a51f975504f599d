//! Hybrid key switching: ModUp of each digit, inner product with the key,
//! ModDown. Decomposition is separate so rotations can be hoisted (one
//! decomposition, many keys).

use super::keys::SwitchingKey;
use super::sampling::expand_uniform_limb;
use crate::ring::{Basis, KeyLimbs, Ntt, Poly, UniformHalves};
use crate::Parameters;

/// A polynomial decomposed into digits, each extended to the chain limbs of
/// its level plus the special limbs, in NTT form.
#[derive(Debug, Clone)]
pub(crate) struct Decomposed {
    pub level: usize,
    pub digits: Vec<Poly<Ntt>>,
}

/// ModUp of every digit of `c` (NTT form over `Q_level`).
pub(crate) fn decompose(params: &Parameters, c: &Poly<Ntt>) -> Decomposed {
    let ring = params.ring();
    let level = c.basis().q - 1;
    let n = ring.n();
    let alpha = params.alpha();
    let ext = Basis { q: level + 1, p: params.p().len() };
    let coeff = c.clone().into_coeff(ring);
    let tables = &params.inner().levels[level];
    let digits = tables
        .mod_up
        .iter()
        .enumerate()
        .map(|(j, conv)| {
            let start = j * alpha;
            let end = ((j + 1) * alpha).min(level + 1);
            let mut out = Poly::<Ntt>::uninit(ring, ext);
            ring.backend().mod_up_digit(
                ring,
                ext,
                conv,
                start..end,
                &coeff.data()[start * n..end * n],
                &c.data()[start * n..end * n],
                out.data_mut(),
            );
            out
        })
        .collect();
    Decomposed { level, digits }
}

fn key_limbs<'a>(params: &Parameters, p: &'a Poly<Ntt>) -> KeyLimbs<'a> {
    // Keys may be restricted to fewer chain limbs than the parameters have.
    let split = p.basis().q * params.n();
    KeyLimbs { q: &p.data()[..split], p: &p.data()[split..] }
}

/// Inner product of decomposed digits with `key`, over the chain limbs
/// of `level` plus the special limbs (before ModDown): `(k0, k1)` with
/// `k0 + k1 s ~ P c s'`.
pub(crate) fn key_product(
    params: &Parameters,
    digits: &[Poly<Ntt>],
    level: usize,
    key: &SwitchingKey,
) -> (Poly<Ntt>, Poly<Ntt>) {
    let ring = params.ring();
    let ext = Basis { q: level + 1, p: params.p().len() };
    let digit_data: Vec<&[u64]> = digits.iter().map(|d| d.data()).collect();
    let kb: Vec<KeyLimbs<'_>> = key.b[..digits.len()].iter().map(|p| key_limbs(params, p)).collect();
    let ka: Vec<KeyLimbs<'_>> = key.a[..digits.len().min(key.a.len())].iter().map(|p| key_limbs(params, p)).collect();
    // A lean key's digit `d` is stream `d` of its seed (`expand_uniform_ntt`).
    let seeded = |digit: usize, index: usize, prime: u64, limb: &mut [u64]| {
        expand_uniform_limb(key.seed, digit as u64, index, prime, limb)
    };
    let uniform = match key.is_lean() {
        true => UniformHalves::Sampled(&seeded),
        false => UniformHalves::Held(&ka),
    };
    let mut out_b = Poly::<Ntt>::uninit(ring, ext);
    let mut out_a = Poly::<Ntt>::uninit(ring, ext);
    ring.backend().key_inner_product(ring, ext, &digit_data, &kb, uniform, out_b.data_mut(), out_a.data_mut());
    (out_b, out_a)
}

/// Inner product of decomposed digits with `key`, then ModDown: returns
/// `(k0, k1)` over `Q_level` with `k0 + k1 s ~ c s'`.
pub(crate) fn apply_key(
    params: &Parameters,
    digits: &[Poly<Ntt>],
    level: usize,
    key: &SwitchingKey,
) -> (Poly<Ntt>, Poly<Ntt>) {
    let ring = params.ring();
    let ext = Basis { q: level + 1, p: params.p().len() };
    let (mut out_b, mut out_a) = key_product(params, digits, level, key);
    let inner = params.inner();
    for out in [&mut out_b, &mut out_a] {
        ring.backend().mod_down(ring, ext, &inner.mod_down, &inner.p_inv_mod_q, out.data_mut());
        out.truncate_q(level + 1);
    }
    (out_b, out_a)
}

/// Key switching of `c` added to `(d0, d1)`, then divided by the level's
/// last prime, with one rounding: `round((P (d0, d1) + key_product) / (P
/// q_l))` over `Q_{level-1}` (ModDown and rescale fused: the special
/// limbs and the last chain limb are converted together, which spares
/// the rescale's NTTs). `level >= 1`.
pub(crate) fn switch_add_rescale(
    params: &Parameters,
    c: &Poly<Ntt>,
    key: &SwitchingKey,
    d: [&Poly<Ntt>; 2],
) -> Option<[Poly<Ntt>; 2]> {
    let ring = params.ring();
    // The tables first: without them nothing is computed twice.
    let level = c.basis().q - 1;
    let tables = params.inner().levels.get(level)?.mod_down_rescale.as_ref()?;
    let dec = decompose(params, c);
    let ext = Basis { q: level + 1, p: params.p().len() };
    let (k0, k1) = key_product(params, &dec.digits, level, key);
    drop(dec);
    let fused = |mut k: Poly<Ntt>, d: &Poly<Ntt>| {
        let mut out = Poly::<Ntt>::uninit(ring, Basis::q(level - 1));
        ring.backend().mod_down_rescale(ring, ext, tables, k.data_mut(), d.data(), out.data_mut());
        out
    };
    let (r0, r1) = rayon::join(|| fused(k0, d[0]), || fused(k1, d[1]));
    Some([r0, r1])
}

/// Key switching of one polynomial.
pub(crate) fn switch(params: &Parameters, c: &Poly<Ntt>, key: &SwitchingKey) -> (Poly<Ntt>, Poly<Ntt>) {
    let dec = decompose(params, c);
    apply_key(params, &dec.digits, dec.level, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::keys::KeyGenerator;
    use std::time::Instant;

    /// The fused ModDown and rescale differs from ModDown then rescale by
    /// at most one (two roundings against one), the same integer in every
    /// limb, and almost never at all (the first rounding moves the second's
    /// input by at most `1 / (2 q_l)`), on every level of a chain with 40-,
    /// 55- and 60-bit primes and of one with 30-bit primes.
    #[test]
    fn fused_mod_down_rescale_matches_the_two_step_within_one() {
        for preset in ["INSECURE_N11_QP230_TEST", "INSECURE_N12_QP1121_H32_BOOT_TEST"] {
            let params = Parameters::preset(preset).unwrap();
            let mut kg = KeyGenerator::new(&params);
            let sk = kg.secret_key();
            let rlk = kg.relin_key(&sk);
            let ring = params.ring();
            let n = ring.n();
            let mut sampler = crate::scheme::sampling::Sampler::from_seed([7; 32]);
            let (mut differing, mut total) = (0usize, 0usize);
            for level in 1..=params.max_level() {
                let basis = Basis::q(level);
                let c = sampler.uniform_ntt(ring, basis);
                let d = [sampler.uniform_ntt(ring, basis), sampler.uniform_ntt(ring, basis)];
                let fused = switch_add_rescale(&params, &c, &rlk.0, [&d[0], &d[1]]).unwrap();
                let (k0, k1) = switch(&params, &c, &rlk.0);
                for (j, k) in [k0, k1].into_iter().enumerate() {
                    let mut y = d[j].clone();
                    y.add_assign(ring, &k);
                    let mut two_step = Poly::<Ntt>::uninit(ring, Basis::q(level - 1));
                    let inv = &params.inner().rescale_inv[level];
                    ring.backend().rescale_by_last(ring, basis, inv, y.data(), two_step.data_mut());
                    let mut diff = fused[j].clone();
                    diff.sub_assign(ring, &two_step);
                    let diff = diff.into_coeff(ring);
                    for k in 0..n {
                        let residues: Vec<u64> = (0..level).map(|i| diff.data()[i * n + k]).collect();
                        let q = &params.q()[..level];
                        let as_int = |r: u64, qi: u64| -> i32 {
                            if r == 0 {
                                0
                            } else if r == 1 {
                                1
                            } else if r == qi - 1 {
                                -1
                            } else {
                                9
                            }
                        };
                        let e = as_int(residues[0], q[0]);
                        assert!(e.abs() <= 1, "{preset} level {level} coefficient {k}: {residues:?}");
                        for (i, &r) in residues.iter().enumerate() {
                            assert_eq!(as_int(r, q[i]), e, "{preset} level {level} coefficient {k} limb {i}");
                        }
                        differing += usize::from(e != 0);
                        total += 1;
                    }
                }
            }
            assert!(differing * 1000 <= total, "{preset}: {differing} of {total} coefficients differ");
        }
    }

    /// Phase timings of one key switch at the benchmark preset.
    #[test]
    #[ignore = "N = 2^16 timing breakdown: cargo test --release -p nexus-ckks --lib keyswitch -- --ignored --nocapture"]
    fn phase_breakdown_n16() {
        let params = Parameters::preset("bench-n16-l27").unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let g = params.galois_element_for_rotation(1);
        let gk = kg.galois_key(&sk, g).unwrap();
        let ring = params.ring();
        let c = crate::scheme::sampling::Sampler::from_os().uniform_ntt(ring, Basis::q(params.max_level()));
        for _ in 0..6 {
            let t = Instant::now();
            let coeff = c.clone().into_coeff(ring);
            let t_intt = t.elapsed();
            drop(coeff);
            let t = Instant::now();
            let dec = decompose(&params, &c);
            let t_dec = t.elapsed();
            let t = Instant::now();
            let rotated: Vec<Poly<Ntt>> = dec.digits.iter().map(|d| d.automorphism(ring, g)).collect();
            let t_perm = t.elapsed();
            let t = Instant::now();
            let _ = apply_key(&params, &rotated, dec.level, &gk.key);
            let t_apply = t.elapsed();
            // Pieces of the first digit's ModUp.
            let coeff = c.clone().into_coeff(ring);
            let n = ring.n();
            let alpha = params.alpha();
            let conv = &params.inner().levels[params.max_level()].mod_up[1];
            let src = &coeff.data()[alpha * n..2 * alpha * n];
            let t = Instant::now();
            let mut scaled = vec![0u64; src.len()];
            for (i, (s, x)) in scaled.chunks_mut(n).zip(src.chunks(n)).enumerate() {
                conv.scale_source_limb(i, x, s);
            }
            let t_scale = t.elapsed();
            let mut outs = vec![0u64; conv.to().len() * n];
            let t = Instant::now();
            conv.convert_blocked(&scaled, n, None, outs.chunks_mut(n).collect());
            let t_conv = t.elapsed();
            println!(
                "digit 1: scale {t_scale:?} convert {t_conv:?} ({} targets x {} sources)",
                conv.to().len(),
                conv.from().len()
            );
            println!("intt(c1) {t_intt:?}  decompose {t_dec:?}  permute digits {t_perm:?}  inner product + mod down {t_apply:?}");
        }
    }
}
