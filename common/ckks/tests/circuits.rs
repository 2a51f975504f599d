//! Polynomial evaluation and linear transforms against their f64 twins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::circuits::{Chebyshev, LinearTransform, PolynomialEvaluator};
use nexus_ckks::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn setup(preset: &str, steps: &[i64]) -> (Parameters, SecretKey, PublicKey, RelinKey, GaloisKeys) {
    let params = Parameters::preset(preset).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let gks = kg.galois_keys(&sk, steps, false).unwrap();
    (params, sk, pk, rlk, gks)
}

#[test]
fn chebyshev_polynomials_match_their_plaintext_twin() {
    let (params, sk, pk, rlk, _) = setup("INSECURE_N12_QP640_TEST", &[]);
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let dec = Decryptor::new(&params);
    let pe = PolynomialEvaluator::new(&eval, &rlk);
    let slots = params.max_slots();
    let cases: Vec<(&str, Chebyshev)> = vec![
        ("sin(3x) on [-1, 1], degree 15", Chebyshev::interpolate(|x| (3.0 * x).sin(), -1.0, 1.0, 15)),
        ("exp(x) on [-2, 1], degree 12", Chebyshev::interpolate(f64::exp, -2.0, 1.0, 12)),
        ("tanh(2x) on [-3, 3], degree 31", Chebyshev::interpolate(|x| (2.0 * x).tanh(), -3.0, 3.0, 31)),
        ("constant 0.3", Chebyshev { a: -1.0, b: 1.0, coeffs: vec![0.3] }),
        ("x on [-1, 1]", Chebyshev { a: -1.0, b: 1.0, coeffs: vec![0.0, 1.0] }),
        ("cos(4x) on [-1, 1], degree 7", Chebyshev::interpolate(|x| (4.0 * x).cos(), -1.0, 1.0, 7)),
        ("exp(x) on [-1, 1], degree 8", Chebyshev::interpolate(f64::exp, -1.0, 1.0, 8)),
        ("sin(6x) on [-1, 1], degree 63", Chebyshev::interpolate(|x| (6.0 * x).sin(), -1.0, 1.0, 63)),
    ];
    for (name, poly) in cases {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let x: Vec<f64> = (0..slots).map(|_| rng.gen_range(poly.a..poly.b)).collect();
        let pt = enc.encode_real(&x, params.max_level(), params.default_scale()).unwrap();
        let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
        let out = pe.evaluate(&ct, &poly, ct.scale()).unwrap();
        assert_eq!(out.scale(), ct.scale(), "{name}: scale not kept exactly");
        let levels_used = params.max_level() - out.level();
        assert_eq!(levels_used, poly.depth(), "{name}: levels used vs stated depth");
        let log2 = (usize::BITS - poly.degree().max(1).leading_zeros()) as usize;
        assert_eq!(poly.depth(), log2 + usize::from(!poly.is_unit_interval()), "{name}: depth not optimal");
        let got = enc.decode_real(&Decryptor::new(&params).decrypt(&out, &sk).unwrap()).unwrap();
        let err = (0..slots).map(|i| (got[i] - poly.evaluate(x[i])).abs()).fold(0.0, f64::max);
        println!("{name}: {:.1} bits, {levels_used} levels", -err.log2());
        assert!(-err.log2() > 18.0, "{name}: {:.1} bits", -err.log2());
        let _ = &dec;
    }
}

#[test]
fn linear_transforms_match_plaintext_and_compose() {
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let n = params.max_slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut diag = |ks: &[usize]| {
        let mut d = BTreeMap::new();
        for &k in ks {
            d.insert(k, (0..n).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect());
        }
        LinearTransform::from_diagonals(n, d).unwrap()
    };
    let a = diag(&[0, 1, 2, 5, 17, 64, n - 1, n - 8]);
    let b = diag(&[0, 3, n / 2]);
    let ab = a.compose(&b).unwrap();
    let mut steps: Vec<i64> = a.rotations();
    steps.extend(b.rotations());
    steps.extend(ab.rotations());
    steps.sort_unstable();
    steps.dedup();
    let (params, sk, pk, _, gks) = setup("INSECURE_N12_QP640_TEST", &steps);
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let z: Vec<Complex64> = (0..n).map(|i| Complex64::new((i as f64 * 0.1).sin(), (i as f64 * 0.3).cos())).collect();
    let ct = Encryptor::new(&params)
        .encrypt_pk(&enc.encode_complex(&z, params.max_level(), params.default_scale()).unwrap(), &pk)
        .unwrap();
    let decode = |c: &Ciphertext| enc.decode_complex(&Decryptor::new(&params).decrypt(c, &sk).unwrap()).unwrap();
    let bits = |got: &[Complex64], want: &[Complex64]| {
        -got.iter().zip(want).map(|(x, y)| (x - y).norm()).fold(0.0, f64::max).log2()
    };
    let out_a = a.evaluate(&eval, &enc, &ct, &gks).unwrap();
    assert_eq!(out_a.level(), params.max_level() - 1);
    assert_eq!(out_a.scale(), ct.scale());
    let pa = bits(&decode(&out_a), &a.apply(&z));
    let out_ba = a.evaluate(&eval, &enc, &b.evaluate(&eval, &enc, &ct, &gks).unwrap(), &gks).unwrap();
    let out_ab = ab.evaluate(&eval, &enc, &ct, &gks).unwrap();
    let want = ab.apply(&z);
    let (p2, p1) = (bits(&decode(&out_ba), &want), bits(&decode(&out_ab), &want));
    println!(
        "A z: {pa:.1} bits; A(B z): {p2:.1} bits; (AB) z: {p1:.1} bits; rotations A {} AB {}",
        a.rotation_count(),
        ab.rotation_count()
    );
    assert!(pa > 20.0 && p1 > 18.0 && p2 > 18.0);
    let missing =
        LinearTransform::from_diagonals(n, BTreeMap::from([(7usize, vec![Complex64::new(1.0, 0.0); n])])).unwrap();
    assert!(matches!(missing.evaluate(&eval, &enc, &ct, &GaloisKeys::new()), Err(CkksError::MissingGaloisKey(_))));
    // Given the input's rotations (shared by transforms reading the same
    // input), the result is the same ciphertext; a missing one is an error.
    let mut steps = a.baby_steps();
    steps.extend(b.baby_steps());
    steps.sort_unstable();
    steps.dedup();
    let rotations: BTreeMap<i64, Ciphertext> =
        steps.iter().copied().zip(eval.rotate_hoisted(&ct, &steps, &gks).unwrap()).collect();
    let one = Complex64::new(1.0, 0.0);
    assert_eq!(a.evaluate_rotated(&eval, &enc, &rotations, &gks, one, ct.scale()).unwrap(), out_a);
    let mut partial = rotations.clone();
    partial.remove(a.baby_steps().last().unwrap());
    let err = a.evaluate_rotated(&eval, &enc, &partial, &gks, one, ct.scale()).unwrap_err();
    assert!(err.to_string().contains("rotation by"), "{err}");
}

/// Diagonals that repeat with a short period (block-diagonal maps, the
/// butterfly groups of bootstrapping) are encoded from one period; the
/// transform must still be the map, giant-step shifts and a complex
/// multiplier included.
#[test]
fn periodic_diagonals_are_encoded_from_one_period() {
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let n = params.max_slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut periodic = |p: usize| -> Vec<Complex64> {
        let one: Vec<Complex64> =
            (0..p).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect();
        (0..n).map(|j| one[j % p]).collect()
    };
    let wanted = [(0usize, 1usize), (1, 8), (3, 2), (17, 64), (64, 16), (n - 1, 4), (n - 40, n)];
    let diagonals: BTreeMap<usize, Vec<Complex64>> = wanted.iter().map(|&(k, p)| (k, periodic(p))).collect();
    let t = LinearTransform::from_diagonals(n, diagonals).unwrap();
    for &(k, p) in &wanted {
        assert_eq!(t.periods()[&k], p, "diagonal {k}");
    }
    let (params, sk, pk, _, gks) = setup("INSECURE_N12_QP640_TEST", &t.rotations());
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let z: Vec<Complex64> = (0..n).map(|i| Complex64::new((i as f64 * 0.7).sin(), (i as f64 * 0.2).cos())).collect();
    let ct = Encryptor::new(&params)
        .encrypt_pk(&enc.encode_complex(&z, params.max_level(), params.default_scale()).unwrap(), &pk)
        .unwrap();
    let multiplier = Complex64::new(0.5, -0.25);
    let out = t.evaluate_complex_times_to_scale(&eval, &enc, &ct, &gks, multiplier, ct.scale()).unwrap();
    let got = enc.decode_complex(&Decryptor::new(&params).decrypt(&out, &sk).unwrap()).unwrap();
    let want: Vec<Complex64> = t.apply(&z).iter().map(|v| v * multiplier).collect();
    let bits = -got.iter().zip(&want).map(|(x, y)| (x - y).norm()).fold(0.0, f64::max).log2();
    println!("periodic diagonals: {bits:.1} bits");
    assert!(bits > 20.0, "{bits:.1} bits");
}

/// Block-constant diagonals times a shared pattern (a linear layer's
/// weights times the token mask) are the same map as their dense form:
/// the same periods, the same plaintext application and, encrypted, the
/// map within the usual precision.
#[test]
fn kronecker_diagonals_are_their_dense_form() {
    use nexus_ckks::circuits::Diagonal;
    use std::sync::Arc;
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let n = params.max_slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mask: Arc<[f64]> = (0..16).map(|t| if t < 11 { 1.0 } else { 0.0 }).collect();
    let halves: Arc<[f64]> = (0..8).map(|t| [0.5, -1.5][t % 2]).collect();
    let mut random = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let repeated = |v: Vec<f64>, times: usize| -> Vec<f64> { (0..times).flat_map(|_| v.clone()).collect() };
    let cases: Vec<(usize, Diagonal)> = vec![
        (0, Diagonal::Kronecker { values: random(n / 16), pattern: mask.clone() }),
        (16, Diagonal::Kronecker { values: repeated(random(4), n / 64), pattern: mask.clone() }),
        (48, Diagonal::Kronecker { values: vec![0.75; n / 8], pattern: halves.clone() }),
        (n - 16, Diagonal::Kronecker { values: vec![-0.25; n / 16], pattern: mask.clone() }),
        (5, Diagonal::Kronecker { values: random(n), pattern: Arc::from([1.0]) }),
    ];
    let dense: BTreeMap<usize, Vec<Complex64>> =
        cases.iter().map(|(k, d)| (*k, (0..n).map(|j| d.at(j)).collect())).collect();
    let t = LinearTransform::from_diagonal_values(n, cases.into_iter().collect()).unwrap();
    let twin = LinearTransform::from_diagonals(n, dense).unwrap();
    assert_eq!(t.periods(), twin.periods());
    assert_eq!(t.periods()[&16], 64, "block values of period 4, blocks of 16");
    assert_eq!(t.periods()[&48], 2, "equal blocks of an alternating pattern");
    let z: Vec<Complex64> = (0..n).map(|i| Complex64::new((i as f64 * 0.3).cos(), (i as f64 * 0.9).sin())).collect();
    assert_eq!(t.apply(&z), twin.apply(&z));
    let bad = Diagonal::Kronecker { values: vec![1.0; n / 3], pattern: Arc::from([1.0, 1.0, 1.0]) };
    assert!(LinearTransform::from_diagonal_values(n, BTreeMap::from([(0, bad)])).is_err(), "a block of 3 slots");

    let (params, sk, pk, _, gks) = setup("INSECURE_N12_QP640_TEST", &t.rotations());
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let ct = Encryptor::new(&params)
        .encrypt_pk(&enc.encode_complex(&z, params.max_level(), params.default_scale()).unwrap(), &pk)
        .unwrap();
    let decode = |c: &Ciphertext| enc.decode_complex(&Decryptor::new(&params).decrypt(c, &sk).unwrap()).unwrap();
    let multiplier = Complex64::new(-0.5, 0.25);
    let got = decode(&t.evaluate_complex_times_to_scale(&eval, &enc, &ct, &gks, multiplier, ct.scale()).unwrap());
    let want: Vec<Complex64> = twin.apply(&z).iter().map(|v| v * multiplier).collect();
    let bits = -got.iter().zip(&want).map(|(x, y)| (x - y).norm()).fold(0.0, f64::max).log2();
    println!("kronecker diagonals: {bits:.1} bits");
    assert!(bits > 20.0, "{bits:.1} bits");
}
