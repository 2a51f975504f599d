//! Hybrid key switching: ModUp of each digit, inner product with the key,
//! ModDown. Decomposition is separate so rotations can be hoisted (one
//! decomposition, many keys).

use super::keys::SwitchingKey;
use crate::ring::{Basis, KeyLimbs, Ntt, Poly};
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
    let digit_data: Vec<&[u64]> = digits.iter().map(|d| d.data()).collect();
    let kb: Vec<KeyLimbs<'_>> = key.b[..digits.len()].iter().map(|p| key_limbs(params, p)).collect();
    let uniform = key.uniform_halves(params, digits.len(), level);
    let ka: Vec<KeyLimbs<'_>> = uniform.iter().map(|p| key_limbs(params, p)).collect();
    let mut out_b = Poly::<Ntt>::uninit(ring, ext);
    let mut out_a = Poly::<Ntt>::uninit(ring, ext);
    ring.backend().key_inner_product(ring, ext, &digit_data, &kb, &ka, out_b.data_mut(), out_a.data_mut());
    let inner = params.inner();
    for out in [&mut out_b, &mut out_a] {
        ring.backend().mod_down(ring, ext, &inner.mod_down, &inner.p_inv_mod_q, out.data_mut());
        out.truncate_q(level + 1);
    }
    (out_b, out_a)
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
