//! The compressed-input product against the exact product, tiled.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use nexus_nn::matmul::expand::expansion_galois_elements;
use nexus_nn::{CompressedMatMul, Engine};
use rand::{Rng, SeedableRng};

#[test]
fn compressed_product_matches_exact_product_over_tiles() {
    let params = Parameters::preset("N13_QP147_TERN").unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let rlk = kg.relin_key(&sk);
    let galois = kg.galois_keys_for_elements(&sk, &expansion_galois_elements(&params)).unwrap();
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &rlk, galois: &galois };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // Two row blocks (m > 4096 slots), two input ciphertexts (n k > 8192), the second partly filled.
    let (m, n, k) = (4100, 41, 202);
    let mm = CompressedMatMul::new(&params, m, n, k).unwrap();
    assert_eq!((mm.inputs(), mm.row_blocks(), mm.tiles().len()), (2, 2, 2));
    let a: Vec<f64> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let level = params.max_level();
    let inputs: Vec<Ciphertext> = mm
        .pack(&b)
        .unwrap()
        .iter()
        .map(|coeffs| {
            let pt = encoder.encode_coefficients(coeffs, level, params.default_scale()).unwrap();
            Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap()
        })
        .collect();
    let weights = mm.encode_weights(&encoder, &a, level, 2f64.powi(30)).unwrap();
    let partials: Vec<_> =
        mm.tiles().into_iter().map(|tile| mm.run_tile(&engine, tile, &inputs[tile.input], &weights).unwrap()).collect();
    assert_eq!(mm.tile_cost(&params, mm.tiles()[0]).rotations, 8191);
    let out = mm.assemble(&engine, partials).unwrap();
    let dec = Decryptor::new(&params);
    let decoded: Vec<Vec<Vec<f64>>> = out
        .iter()
        .map(|cols| cols.iter().map(|c| encoder.decode_real(&dec.decrypt(c, &sk).unwrap()).unwrap()).collect())
        .collect();
    let got = mm.unpack(&decoded).unwrap();
    let want = mm.plain(&a, &b);
    let errs: Vec<f64> = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).collect();
    let max = errs.iter().cloned().fold(0.0, f64::max);
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    println!("compressed product {m}x{n} by {n}x{k}: mean abs err {mean:.2e}, max {max:.2e}");
    assert!(max < 1e-4, "max error {max}");
    // A slot-encoded operand and a bad shape are refused.
    let slot_ct = Encryptor::new(&params)
        .encrypt_sk(&encoder.encode_real(&[1.0], level, params.default_scale()).unwrap(), &sk)
        .unwrap();
    assert!(mm.run_tile(&engine, mm.tiles()[0], &slot_ct, &weights).is_err());
    assert!(mm.pack(&b[1..]).is_err());
    assert!(CompressedMatMul::new(&params, 0, 1, 1).is_err());
}
