use nexus_ckks::*;
fn coeffs(enc: &Encoder, pt: &Plaintext) -> Vec<f64> { enc.decode_coefficients(pt).unwrap().iter().map(|x| x * pt.scale()).collect() }
fn main() {
    for preset in ["INSECURE_N12_QP640_TEST", "N16_QP1500_TERN"] {
        let params = Parameters::preset(preset).unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let rlk = kg.relin_key(&sk);
        let g = params.galois_element_for_rotation(1);
        let gks = kg.galois_keys_for_elements(&sk, &[g]).unwrap();
        let enc = Encoder::new(&params);
        let n = params.n();
        let pt = enc.encode_coefficients(&vec![0.0; n], params.max_level(), 1.0).unwrap();
        let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
        let ev = Evaluator::new(&params);
        let dec = Decryptor::new(&params);
        let fresh = coeffs(&enc, &dec.decrypt(&ct, &sk).unwrap());
        let rot = coeffs(&enc, &dec.decrypt(&ev.apply_galois(&ct, g, &gks).unwrap(), &sk).unwrap());
        let mut sigma_fresh = vec![0.0; n];
        for i in 0..n { let k = i * g % (2 * n); if k < n { sigma_fresh[k] += fresh[i] } else { sigma_fresh[k - n] -= fresh[i] } }
        let ks: Vec<f64> = (0..n).map(|i| rot[i] - sigma_fresh[i]).collect();
        let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // relin noise: decrypt(relin(ct*ct)) vs decrypt degree-2
        let d2 = ev.mul(&ct, &ct).unwrap();
        let a = coeffs(&enc, &dec.decrypt(&d2, &sk).unwrap());
        let b = coeffs(&enc, &dec.decrypt(&ev.relinearize(&d2, &rlk).unwrap(), &sk).unwrap());
        let rl: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
        println!("{preset}: fresh rms 2^{:.1}, rotation KS noise rms 2^{:.1} mean {:.1}, relin KS noise rms 2^{:.1} mean {:.1}", rms(&fresh).log2(), rms(&ks).log2(), mean(&ks), rms(&rl).log2(), mean(&rl));
    }
}
