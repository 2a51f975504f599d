//! Key switching adds small, unbiased noise (the exact centred ModDown), and
//! automorphisms agree between the coefficient and NTT domains.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::ring::{Basis, Coeff, Poly};
use nexus_ckks::*;
use proptest::prelude::*;

fn coefficients(enc: &Encoder, pt: &Plaintext) -> Vec<f64> {
    enc.decode_coefficients(pt).unwrap().iter().map(|x| x * pt.scale()).collect()
}

/// Key-switching noise of a rotation in the integer domain: mean and rms.
fn rotation_noise(preset: &str) -> (f64, f64, f64) {
    let params = Parameters::preset(preset).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let g = params.galois_element_for_rotation(1);
    let gks = kg.galois_keys_for_elements(&sk, &[g]).unwrap();
    let enc = Encoder::new(&params);
    let n = params.n();
    let zero = enc.encode_coefficients(&vec![0.0; n], params.max_level(), 1.0).unwrap();
    let ct = Encryptor::new(&params).encrypt_pk(&zero, &pk).unwrap();
    let dec = Decryptor::new(&params);
    let fresh = coefficients(&enc, &dec.decrypt(&ct, &sk).unwrap());
    let rotated = Evaluator::new(&params).apply_galois(&ct, g, &gks).unwrap();
    let after = coefficients(&enc, &dec.decrypt(&rotated, &sk).unwrap());
    let mut expected = vec![0.0; n];
    for (i, &c) in fresh.iter().enumerate() {
        let k = i * g % (2 * n);
        if k < n {
            expected[k] += c;
        } else {
            expected[k - n] -= c;
        }
    }
    let noise: Vec<f64> = after.iter().zip(&expected).map(|(a, e)| a - e).collect();
    let mean = noise.iter().sum::<f64>() / n as f64;
    let rms = (noise.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
    let fresh_rms = (fresh.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
    (mean, rms, fresh_rms)
}

#[test]
fn key_switching_noise_is_small_and_unbiased() {
    for preset in ["INSECURE_N11_QP230_TEST", "INSECURE_N12_QP640_TEST"] {
        let (mean, rms, fresh_rms) = rotation_noise(preset);
        let n = Parameters::preset(preset).unwrap().n() as f64;
        // An exact ModDown leaves rounding errors r0 + r1 s with r uniform in
        // [-1/2, 1/2): rms sqrt((1 + 2N/3) / 12) for a ternary secret.
        let rounding_rms = ((1.0 + 2.0 * n / 3.0) / 12.0).sqrt();
        println!("{preset}: key-switch noise mean {mean:.2} rms {rms:.1} (rounding bound {rounding_rms:.1}), fresh rms {fresh_rms:.1}");
        // A biased fast conversion gave |mean| in the tens to hundreds.
        assert!(mean.abs() < 2.0, "{preset}: biased key-switching noise, mean {mean}");
        assert!(
            rms < 1.5 * rounding_rms,
            "{preset}: key-switching noise rms {rms} above 1.5x the rounding noise {rounding_rms}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn ntt_permutation_equals_coefficient_automorphism(g_half in 0usize..2048, seed in any::<u64>()) {
        use rand::{Rng, SeedableRng};
        let params = Parameters::preset("INSECURE_N11_QP230_TEST").unwrap();
        let ring = params.ring();
        let g = 2 * g_half + 1;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let coeffs: Vec<i64> = (0..params.n()).map(|_| rng.gen_range(-1000..1000)).collect();
        let basis = Basis { q: params.q().len(), p: params.p().len() };
        let p = Poly::<Coeff>::from_signed(ring, basis, &coeffs);
        let via_coeff = p.automorphism(ring, g).into_ntt(ring);
        let via_ntt = p.into_ntt(ring).automorphism(ring, g);
        prop_assert_eq!(via_coeff, via_ntt);
    }
}
