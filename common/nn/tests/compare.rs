//! Composite sign, maximum and argmax on ciphertexts against their f64
//! twins, with the stated resolution checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::bootstrapping::{BootstrapConfig, Bootstrapper};
use nexus_ckks::*;
use nexus_nn::{Argmax, Comparator, Engine, Refresh};
use rand::{Rng, SeedableRng};

#[test]
fn encrypted_maximum_is_within_its_stated_error() {
    let params = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let galois = GaloisKeys::new();
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &rlk, galois: &galois };
    let cmp = Comparator::new(2.0, 2f64.powi(-8), 2f64.powi(-12), 6).unwrap();
    println!("sign depth {}, max cost {:?}, max error {:.2e}", cmp.sign().depth(), cmp.max_cost(), cmp.max_error());
    let slots = params.max_slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let a: Vec<f64> = (0..slots).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..slots).map(|i| if i % 7 == 0 { a[i] + 1e-3 } else { rng.gen_range(-1.0..1.0) }).collect();
    let enc = |v: &[f64]| {
        let pt = encoder.encode_real(v, params.max_level(), params.default_scale()).unwrap();
        Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap()
    };
    let out = cmp.max(&engine, &enc(&a), &enc(&b), None).unwrap();
    assert_eq!(params.max_level() - out.level(), cmp.max_cost().levels);
    let got = encoder.decode_real(&Decryptor::new(&params).decrypt(&out, &sk).unwrap()).unwrap();
    let (mut to_twin, mut to_exact) = (0.0f64, 0.0f64);
    for i in 0..slots {
        to_twin = to_twin.max((got[i] - cmp.plain_max(a[i], b[i])).abs());
        to_exact = to_exact.max((got[i] - a[i].max(b[i])).abs());
    }
    println!("max: vs twin {to_twin:.2e}, vs exact {to_exact:.2e}");
    assert!(to_twin < 1e-4, "{to_twin}");
    assert!(to_exact <= cmp.max_error() + 1e-4, "{to_exact} > {}", cmp.max_error());
}

#[test]
fn argmax_of_8_values_with_bootstrapping_is_one_hot() {
    let params = Parameters::preset("INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST").unwrap();
    let boot = Bootstrapper::new(&params, BootstrapConfig::default()).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = boot.generate_keys(&mut kg, &sk).unwrap();
    // Stages fit between bootstraps with room for the product and constants.
    let argmax = Argmax::new(8, 0.5, 2f64.powi(-6), 2f64.powi(-8), boot.output_level() - 3).unwrap();
    let galois = kg.galois_keys(&sk, &argmax.rotations(), false).unwrap();
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &keys.relin, galois: &galois };
    let refresh = Refresh { bootstrapper: &boot, keys: &keys };
    println!(
        "argmax 8: min gap {:.3}, sign depth {}, bootstrap output level {}",
        argmax.min_gap(),
        argmax.comparator().sign().depth(),
        boot.output_level()
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for trial in 0..2 {
        let mut v: Vec<f64> = (0..8).map(|_| rng.gen_range(-0.5..0.3)).collect();
        let top = rng.gen_range(0..8);
        let runner_up = v.iter().cloned().fold(f64::MIN, f64::max);
        v[top] = (runner_up + argmax.min_gap()).min(0.5);
        // Computations run at or below the bootstrapping's output level (the
        // primes above it belong to the bootstrapping circuit).
        let level = boot.output_level();
        let pt = encoder.encode_real(&argmax.pack(&v, params.max_slots()).unwrap(), level, params.default_scale());
        let ct = Encryptor::new(&params).encrypt_pk(&pt.unwrap(), &pk).unwrap();
        let out = argmax.apply(&engine, &ct, Some(&mut { refresh })).unwrap();
        let got = encoder.decode_real(&Decryptor::new(&params).decrypt(&out, &sk).unwrap()).unwrap();
        let twin = argmax.plain(&v).unwrap();
        for s in 0..8 {
            let want = if s == top { 1.0 } else { 0.0 };
            assert!((got[s] - want).abs() < 0.01, "trial {trial} slot {s}: {} (twin {})", got[s], twin[s]);
            assert!((twin[s] - want).abs() < 0.01);
            assert!((got[s + 8] - got[s]).abs() < 1e-3, "period");
        }
        println!(
            "trial {trial}: top {top}, mask {:?}",
            &got[..8].iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
    }
    assert!(argmax.pack(&[0.0; 7], params.max_slots()).is_err());
    assert!(argmax.pack(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7], params.max_slots()).is_err());
}
