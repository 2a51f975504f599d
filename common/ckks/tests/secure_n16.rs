//! The 128-bit-secure presets end to end. Slow (N = 2^15 and 2^16 keys);
//! run with `cargo test --release -p nexus-ckks --test secure_n16 -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;

fn check_preset(name: &str, min_bits: f64) {
    let params = Parameters::preset(name).unwrap();
    assert!(params.is_secure());
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let gks = kg.galois_keys(&sk, &[1, 5], true).unwrap();
    let enc = Encoder::new(&params);
    let dec = Decryptor::new(&params);
    let eval = Evaluator::new(&params);
    let slots = params.max_slots();
    let a: Vec<f64> = (0..slots).map(|i| ((i * 7919 % 2003) as f64 / 1001.5) - 1.0).collect();
    let b: Vec<f64> = (0..slots).map(|i| ((i * 104729 % 3001) as f64 / 1500.5) - 1.0).collect();
    let ca = Encryptor::new(&params)
        .encrypt_pk(&enc.encode_real(&a, params.max_level(), params.default_scale()).unwrap(), &pk)
        .unwrap();
    let cb = Encryptor::new(&params)
        .encrypt_pk(&enc.encode_real(&b, params.max_level(), params.default_scale()).unwrap(), &pk)
        .unwrap();
    let bits = |ct: &Ciphertext, want: &dyn Fn(usize) -> f64| {
        let got = enc.decode_real(&dec.decrypt(ct, &sk).unwrap()).unwrap();
        -(0..slots).map(|i| (got[i] - want(i)).abs()).fold(0.0, f64::max).log2()
    };
    let prod = eval.mul_relin_rescale(&ca, &cb, &rlk).unwrap();
    let p = bits(&prod, &|i| a[i] * b[i]);
    let r = bits(&eval.rotate(&ca, 5, &gks).unwrap(), &|i| a[(i + 5) % slots]);
    let h = eval.rotate_hoisted(&ca, &[1, 5], &gks).unwrap();
    let hb = bits(&h[1], &|i| a[(i + 5) % slots]);
    println!("{name}: mul {p:.1} bits, rotate {r:.1} bits, hoisted {hb:.1} bits");
    for (what, got) in [("mul_relin_rescale", p), ("rotate", r), ("rotate_hoisted", hb)] {
        assert!(got >= min_bits, "{name} {what}: {got:.1} bits < {min_bits}");
    }
}

#[test]
#[ignore = "N = 2^16 keys: run with --ignored in release"]
fn n16_ternary_secure_preset() {
    check_preset("N16_QP1500_TERN", 22.0);
}

#[test]
#[ignore = "N = 2^16 keys: run with --ignored in release"]
fn n16_sparse_secure_preset() {
    check_preset("N16_QP1420_H192", 22.0);
}

#[test]
#[ignore = "N = 2^15 keys: run with --ignored in release"]
fn n15_ternary_secure_preset() {
    check_preset("N15_QP860_TERN", 22.0);
}
