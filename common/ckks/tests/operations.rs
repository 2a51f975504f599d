//! Every evaluator operation against a complex reference, per parameter set,
//! with the precision (bits = -log2 of the max abs error) asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use rand::{Rng, SeedableRng};

struct Fixture {
    params: Parameters,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinKey,
    gks: GaloisKeys,
    enc: Encoder,
    encryptor: Encryptor,
    dec: Decryptor,
    eval: Evaluator,
    /// Minimum precision (bits) expected of a fresh ciphertext; one
    /// multiplication or key switch loses a few bits more.
    fresh_bits: f64,
}

const STEPS: [i64; 5] = [1, 2, 5, -1, -7];

fn fixture(preset: &str, fresh_bits: f64) -> Fixture {
    let params = Parameters::preset(preset).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let n = params.n();
    let mut elements: Vec<usize> = STEPS.iter().map(|&s| params.galois_element_for_rotation(s)).collect();
    elements.push(params.galois_element_conjugate());
    elements.push(n / 2 + 1);
    let gks = kg.galois_keys_for_elements(&sk, &elements).unwrap();
    Fixture {
        enc: Encoder::new(&params),
        encryptor: Encryptor::new(&params),
        dec: Decryptor::new(&params),
        eval: Evaluator::new(&params),
        params,
        sk,
        pk,
        rlk,
        gks,
        fresh_bits,
    }
}

fn random(n: usize, seed: u64) -> Vec<Complex64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| Complex64::new(rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0))).collect()
}

fn bits(got: &[Complex64], want: &[Complex64]) -> f64 {
    let err = got.iter().zip(want).map(|(a, b)| (a - b).norm()).fold(0.0, f64::max);
    -err.log2()
}

impl Fixture {
    fn encrypt(&self, v: &[Complex64]) -> Ciphertext {
        let pt = self.enc.encode_complex(v, self.params.max_level(), self.params.default_scale()).unwrap();
        self.encryptor.encrypt_pk(&pt, &self.pk).unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<Complex64> {
        self.enc.decode_complex(&self.dec.decrypt(ct, &self.sk).unwrap()).unwrap()
    }
    fn check(&self, name: &str, ct: &Ciphertext, want: &[Complex64], min_bits: f64) {
        let b = bits(&self.decrypt(ct), want);
        println!("{name}: {b:.1} bits");
        assert!(b >= min_bits, "{name}: precision {b:.1} bits < {min_bits}");
    }
}

fn run_all(f: &Fixture) {
    let slots = f.params.max_slots();
    let a = random(slots, 1);
    let b = random(slots, 2);
    let (ca, cb) = (f.encrypt(&a), f.encrypt(&b));
    let e = &f.eval;
    let fresh = f.fresh_bits;
    let after_mul = fresh - 4.0;

    f.check("encrypt_pk", &ca, &a, fresh);
    let pt = f.enc.encode_complex(&a, f.params.max_level(), f.params.default_scale()).unwrap();
    let seeded = f.encryptor.encrypt_sk(&pt, &f.sk).unwrap();
    assert!(seeded.is_seeded());
    f.check("encrypt_sk", &seeded, &a, fresh);

    let zip = |g: &dyn Fn(Complex64, Complex64) -> Complex64| -> Vec<Complex64> {
        a.iter().zip(&b).map(|(&x, &y)| g(x, y)).collect()
    };
    f.check("add", &e.add(&ca, &cb).unwrap(), &zip(&|x, y| x + y), fresh - 1.0);
    f.check("sub", &e.sub(&ca, &cb).unwrap(), &zip(&|x, y| x - y), fresh - 1.0);
    f.check("neg", &e.neg(&ca), &a.iter().map(|x| -x).collect::<Vec<_>>(), fresh);

    let pb = f.enc.encode_complex(&b, f.params.max_level(), f.params.default_scale()).unwrap();
    f.check("add_plain", &e.add_plain(&ca, &pb).unwrap(), &zip(&|x, y| x + y), fresh - 1.0);
    f.check("sub_plain", &e.sub_plain(&ca, &pb).unwrap(), &zip(&|x, y| x - y), fresh - 1.0);
    let pb_q = f.enc.encode_complex(&b, f.params.max_level(), f.params.q()[f.params.max_level()] as f64).unwrap();
    let mp = e.rescale(&e.mul_plain(&ca, &pb_q).unwrap()).unwrap();
    assert!((mp.scale() / f.params.default_scale() - 1.0).abs() < 1e-12);
    f.check("mul_plain+rescale", &mp, &zip(&|x, y| x * y), after_mul);
    // A dot product of ciphertexts (degree 1 and 2) with plaintexts is the
    // sum of the products, exactly: the same residues.
    let top = f.params.max_level();
    let pa_q = f.enc.encode_complex(&a, top, f.params.q()[top] as f64).unwrap();
    let square = e.mul(&ca, &cb).unwrap();
    for (x, y) in [(&ca, &cb), (&square, &e.mul(&cb, &ca).unwrap())] {
        let dot = e.dot_plain(&[x, y, x], &[&pb_q, &pa_q, &pa_q]).unwrap();
        let mut sum = e.mul_plain(x, &pb_q).unwrap();
        e.add_assign(&mut sum, &e.mul_plain(y, &pa_q).unwrap()).unwrap();
        e.add_assign(&mut sum, &e.mul_plain(x, &pa_q).unwrap()).unwrap();
        assert_eq!(dot, sum, "dot_plain of degree {}", x.degree());
    }
    let want: Vec<Complex64> = a.iter().zip(&b).map(|(&x, &y)| x * y + y * x).collect();
    f.check(
        "dot_plain+rescale",
        &e.rescale(&e.dot_plain(&[&ca, &cb], &[&pb_q, &pa_q]).unwrap()).unwrap(),
        &want,
        after_mul,
    );
    assert!(e.dot_plain(&[], &[]).is_err());
    assert!(e.dot_plain(&[&ca, &cb], &[&pb_q]).is_err(), "one plaintext per ciphertext");
    let low = e.drop_to_level(&cb, top - 1).unwrap();
    assert!(matches!(e.dot_plain(&[&ca, &low], &[&pb_q, &pa_q]), Err(CkksError::LevelMismatch { .. })));
    let pb_2q = f.enc.encode_complex(&b, top, 2.0 * f.params.q()[top] as f64).unwrap();
    assert!(matches!(e.dot_plain(&[&ca, &cb], &[&pb_q, &pb_2q]), Err(CkksError::ScaleMismatch { .. })));
    assert!(matches!(e.dot_plain(&[&ca, &square], &[&pb_q, &pa_q]), Err(CkksError::DegreeMismatch { .. })));

    // A product at a lower level reads its operands in place: the same
    // residues as dropping copies first.
    let (a_low, b_low) = (e.drop_to_level(&ca, top - 1).unwrap(), e.drop_to_level(&cb, top - 1).unwrap());
    assert_eq!(e.mul_at(&ca, &cb, top - 1).unwrap(), e.mul(&a_low, &b_low).unwrap());
    assert!(matches!(e.mul_at(&ca, &low, top), Err(CkksError::NotEnoughLevels { .. })));
    // A linear combination of ciphertexts at several levels and degrees is
    // the sum of the constant products of copies dropped to its level.
    let s = ca.scale();
    assert_eq!(s, s.log2().round().exp2(), "the fixture's scale is a power of two");
    let lc = e.linear_combination(&[(&ca, 3.0), (&low, -2.0), (&square, 1.0)], top - 1, square.scale()).unwrap();
    let mut want_lc = e.mul_const_with_scale(&e.drop_to_level(&square, top - 1).unwrap(), 1.0, 1.0).unwrap();
    for (ct, c) in [(&ca, 3.0), (&low, -2.0)] {
        let term = e.mul_const_with_scale(&e.drop_to_level(ct, top - 1).unwrap(), c, s).unwrap();
        e.add_assign(&mut want_lc, &term).unwrap();
    }
    assert_eq!(lc, want_lc);
    let lc = e.rescale(&e.linear_combination(&[(&ca, 0.5), (&cb, -1.5)], top, s * f.params.q()[top] as f64).unwrap());
    f.check("linear_combination", &lc.unwrap(), &zip(&|x, y| 0.5 * x - 1.5 * y), fresh - 2.0);
    // More terms than one accumulation holds (128) are summed in chunks.
    let many = vec![(&ca, 1.0); 130];
    assert_eq!(e.linear_combination(&many, top, s).unwrap(), e.mul_integer(&ca, 130));
    assert!(e.linear_combination(&[], top, s).is_err());
    assert!(matches!(e.linear_combination(&[(&ca, 1.0), (&low, 1.0)], top, s), Err(CkksError::NotEnoughLevels { .. })));
    assert!(e.linear_combination(&[(&ca, 1.0)], top, f64::NAN).is_err());
    assert!(e.linear_combination(&[(&ca, f64::INFINITY)], top, s).is_err());

    f.check("add_const", &e.add_const(&ca, 0.75).unwrap(), &a.iter().map(|x| x + 0.75).collect::<Vec<_>>(), fresh);
    let c = Complex64::new(0.25, -0.5);
    f.check(
        "add_const_complex",
        &e.add_const_complex(&ca, c).unwrap(),
        &a.iter().map(|x| x + c).collect::<Vec<_>>(),
        fresh,
    );
    f.check(
        "mul_const",
        &e.rescale(&e.mul_const(&ca, -1.5).unwrap()).unwrap(),
        &a.iter().map(|x| x * -1.5).collect::<Vec<_>>(),
        after_mul,
    );
    f.check(
        "mul_const_complex",
        &e.rescale(&e.mul_const_complex(&ca, c).unwrap()).unwrap(),
        &a.iter().map(|x| x * c).collect::<Vec<_>>(),
        after_mul,
    );
    f.check("mul_integer", &e.mul_integer(&ca, -3), &a.iter().map(|x| x * -3.0).collect::<Vec<_>>(), fresh - 2.0);

    let prod = e.mul_relin_rescale(&ca, &cb, &f.rlk).unwrap();
    assert_eq!(prod.level(), f.params.max_level() - 1);
    f.check("mul_relin_rescale", &prod, &zip(&|x, y| x * y), after_mul);
    let deg2 = e.mul(&ca, &cb).unwrap();
    assert_eq!(deg2.degree(), 2);
    // Rescaling a degree-2 ciphertext leaves a rounding error on c2 that
    // decryption multiplies by s^2: about 5 bits below the relinearised product.
    f.check("mul (degree 2, decrypted directly)", &e.rescale(&deg2).unwrap(), &zip(&|x, y| x * y), fresh - 6.0);
    f.check(
        "square",
        &e.rescale(&e.relinearize(&e.square(&ca).unwrap(), &f.rlk).unwrap()).unwrap(),
        &a.iter().map(|x| x * x).collect::<Vec<_>>(),
        after_mul,
    );

    // A chain of products down to level 0 keeps precision.
    let mut acc = ca.clone();
    let mut want = a.clone();
    while acc.level() > 0 {
        let bl = e.drop_to_level(&cb, acc.level()).unwrap();
        acc = e.mul_relin_rescale(&acc, &bl, &f.rlk).unwrap();
        want = want.iter().zip(&b).map(|(x, y)| x * y).collect();
    }
    f.check("product chain to level 0", &acc, &want, after_mul - 4.0);

    for &s in &STEPS {
        let r = e.rotate(&ca, s, &f.gks).unwrap();
        let want: Vec<Complex64> = (0..slots).map(|i| a[(i as i64 + s).rem_euclid(slots as i64) as usize]).collect();
        f.check(&format!("rotate {s}"), &r, &want, after_mul);
    }
    let hoisted = e.rotate_hoisted(&ca, &STEPS, &f.gks).unwrap();
    for (&s, r) in STEPS.iter().zip(&hoisted) {
        let want: Vec<Complex64> = (0..slots).map(|i| a[(i as i64 + s).rem_euclid(slots as i64) as usize]).collect();
        f.check(&format!("rotate_hoisted {s}"), r, &want, after_mul);
        assert_eq!(f.decrypt(r).len(), slots);
    }
    let mid = e.drop_to_level(&ca, f.params.max_level() / 2).unwrap();
    let rm = e.rotate(&mid, 1, &f.gks).unwrap();
    assert_eq!(rm.level(), f.params.max_level() / 2);
    f.check("rotate at a lower level", &rm, &(0..slots).map(|i| a[(i + 1) % slots]).collect::<Vec<_>>(), after_mul);
    f.check(
        "conjugate",
        &e.conjugate(&ca, &f.gks).unwrap(),
        &a.iter().map(|x| x.conj()).collect::<Vec<_>>(),
        after_mul,
    );

    // X^k on coefficient-encoded data shifts coefficients negacyclically.
    let n = f.params.n();
    let coeffs: Vec<f64> = (0..n).map(|i| ((i * 7 % 13) as f64 - 6.0) / 8.0).collect();
    let cpt = f.enc.encode_coefficients(&coeffs, f.params.max_level(), f.params.default_scale()).unwrap();
    let cct = f.encryptor.encrypt_pk(&cpt, &f.pk).unwrap();
    let shifted = f.enc.decode_coefficients(&f.dec.decrypt(&e.mul_monomial(&cct, 3), &f.sk).unwrap()).unwrap();
    let err = (0..n)
        .map(|i| {
            let want = if i >= 3 { coeffs[i - 3] } else { -coeffs[n + i - 3] };
            (shifted[i] - want).abs()
        })
        .fold(0.0, f64::max);
    assert!(-err.log2() >= fresh, "mul_monomial: {:.1} bits", -err.log2());
    // The automorphism X -> X^(N/2+1) of NEXUS's expansion, on coefficients.
    let g = n / 2 + 1;
    let auto =
        f.enc.decode_coefficients(&f.dec.decrypt(&e.apply_galois(&cct, g, &f.gks).unwrap(), &f.sk).unwrap()).unwrap();
    let mut want = vec![0.0; n];
    for (i, &c) in coeffs.iter().enumerate() {
        let k = i * g % (2 * n);
        if k < n {
            want[k] += c;
        } else {
            want[k - n] -= c;
        }
    }
    let err = auto.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(-err.log2() >= after_mul, "automorphism N/2+1: {:.1} bits", -err.log2());
}

fn run_errors(f: &Fixture) {
    let e = &f.eval;
    let v = random(8, 3);
    let ca = f.encrypt(&v);
    let low = e.drop_to_level(&ca, 1).unwrap();
    match e.add(&ca, &low) {
        Err(CkksError::LevelMismatch { left, right, .. }) => assert_eq!((left, right), (f.params.max_level(), 1)),
        other => panic!("expected a level mismatch, got {other:?}"),
    }
    let scaled = e.mul_const(&ca, 1.0).unwrap();
    assert!(matches!(e.add(&ca, &scaled), Err(CkksError::ScaleMismatch { .. })));
    let g = f.params.galois_element_for_rotation(3);
    let err = e.rotate(&ca, 3, &f.gks).unwrap_err();
    assert_eq!(err, CkksError::MissingGaloisKey(g));
    assert!(err.to_string().contains(&format!("missing Galois key for element {g}")));
    // Different slot layouts do not mix.
    let other_slots = f
        .encryptor
        .encrypt_pk(&f.enc.encode_real_slots(&[1.0], 4, f.params.max_level(), f.params.default_scale()).unwrap(), &f.pk)
        .unwrap();
    assert!(e.add(&ca, &other_slots).unwrap_err().to_string().contains("encodings differ"));
    assert!(e.with_encoding(&ca, Encoding::Slots(3)).is_err());
    let mut scaled_ct = ca.clone();
    assert!(scaled_ct.set_scale(f64::NAN).is_err() && scaled_ct.set_scale(-1.0).is_err());
    let level0 = e.drop_to_level(&ca, 0).unwrap();
    assert!(matches!(e.rescale(&level0), Err(CkksError::NotEnoughLevels { .. })));
    let deg2 = e.mul(&ca, &ca).unwrap();
    assert!(matches!(e.mul(&deg2, &ca), Err(CkksError::DegreeMismatch { .. })));
    assert!(matches!(e.rotate(&deg2, 1, &f.gks), Err(CkksError::DegreeMismatch { .. })));
    // Keys from other parameters are refused.
    let other =
        Parameters::preset(if f.params.log_n() == 11 { "INSECURE_N12_QP640_TEST" } else { "INSECURE_N11_QP230_TEST" })
            .unwrap();
    let mut kg = KeyGenerator::new(&other);
    let osk = kg.secret_key();
    let orlk = kg.relin_key(&osk);
    assert!(matches!(e.relinearize(&deg2, &orlk), Err(CkksError::ParametersMismatch(_))));
    assert!(matches!(f.dec.decrypt(&ca, &osk), Err(CkksError::ParametersMismatch(_))));
}

#[test]
fn all_operations_n11_dnum5() {
    let f = fixture("INSECURE_N11_QP230_TEST", 17.5);
    run_all(&f);
    run_errors(&f);
}

#[test]
fn all_operations_n12_dnum3() {
    let f = fixture("INSECURE_N12_QP640_TEST", 26.0);
    run_all(&f);
    run_errors(&f);
}

#[test]
fn sparse_slots_and_real_vectors() {
    let f = fixture("INSECURE_N12_QP640_TEST", 26.0);
    for slots in [1usize, 8, 256] {
        let v: Vec<f64> = (0..slots).map(|i| (i as f64 * 0.37).cos()).collect();
        let pt = f.enc.encode_real_slots(&v, slots, f.params.max_level(), f.params.default_scale()).unwrap();
        let ct = f.encryptor.encrypt_pk(&pt, &f.pk).unwrap();
        let rot = f.eval.rotate(&ct, 1, &f.gks).unwrap();
        let got = f.enc.decode_real(&f.dec.decrypt(&rot, &f.sk).unwrap()).unwrap();
        assert_eq!(got.len(), slots);
        let err = (0..slots).map(|i| (got[i] - v[(i + 1) % slots]).abs()).fold(0.0, f64::max);
        assert!(-err.log2() > 20.0, "slots {slots}: {:.1} bits", -err.log2());
    }
}

#[test]
fn lean_keys_switch_exactly_like_full_keys() {
    let f = fixture("INSECURE_N12_QP640_TEST", 20.0);
    let lean = f.gks.clone().lean();
    assert!(lean.memory_bytes() * 2 <= f.gks.memory_bytes() + 1, "lean keys hold the b halves only");
    let v = random(f.params.max_slots(), 3);
    let ct = f
        .encryptor
        .encrypt_pk(&f.enc.encode_complex(&v, f.params.max_level(), f.params.default_scale()).unwrap(), &f.pk)
        .unwrap();
    for &s in &STEPS {
        // Bit-identical: the regenerated halves are the sampled ones.
        assert_eq!(f.eval.rotate(&ct, s, &lean).unwrap(), f.eval.rotate(&ct, s, &f.gks).unwrap(), "rotation by {s}");
    }
    let hoisted = f.eval.rotate_hoisted(&ct, &STEPS, &lean).unwrap();
    assert_eq!(hoisted, f.eval.rotate_hoisted(&ct, &STEPS, &f.gks).unwrap());
    // Restricted lean keys (SlotToCoeff's) too.
    let g = f.params.galois_element_for_rotation(1);
    let level = f.params.max_level() - 2;
    let low = f.eval.drop_to_level(&ct, level).unwrap();
    let mut restricted = GaloisKeys::new();
    restricted.insert(f.gks.get(g).unwrap().restricted_to_level(&f.params, level));
    // A top-level lean key at a low level samples only the digits it reads.
    let lowest = f.eval.drop_to_level(&ct, 1).unwrap();
    assert_eq!(f.eval.rotate(&lowest, 2, &lean).unwrap(), f.eval.rotate(&lowest, 2, &f.gks).unwrap());
    let restricted_lean = restricted.clone().lean();
    assert_eq!(f.eval.rotate(&low, 1, &restricted_lean).unwrap(), f.eval.rotate(&low, 1, &restricted).unwrap());
}
