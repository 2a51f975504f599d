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

#[test]
fn diagonal_product_matches_exact_product_and_the_cost_model_respects_layouts() {
    use nexus_nn::matmul::cost_model::{choose, diagonal_work, Method, OperandLayout};
    use nexus_nn::matmul::DiagonalMatMul;
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let (d_in, d_out, tokens) = (40, 24, 40);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let w: Vec<f64> = (0..d_in * d_out).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x: Vec<Vec<f64>> = (0..tokens).map(|_| (0..d_in).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
    let mm = DiagonalMatMul::new(&w, d_in, d_out, params.max_slots()).unwrap();
    assert_eq!(mm.tokens_per_ciphertext(), 32);
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let galois = kg.galois_keys(&sk, &mm.rotations(), false).unwrap();
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &rlk, galois: &galois };
    let want = mm.plain(&x, &w);
    let mut got = Vec::new();
    for (i, slots) in mm.pack(&x).unwrap().iter().enumerate() {
        let pt = encoder.encode_real(slots, params.max_level(), params.default_scale()).unwrap();
        let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
        let out = mm.apply(&engine, &ct).unwrap();
        assert_eq!(out.level(), params.max_level() - mm.cost(&params).levels);
        let dec = encoder.decode_real(&Decryptor::new(&params).decrypt(&out, &sk).unwrap()).unwrap();
        got.extend(mm.unpack(&dec, tokens - i * 32));
    }
    let err = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!(
        "diagonal product: {} rotations, {} plaintext products, max err {err:.2e}",
        mm.cost(&params).rotations,
        mm.plaintext_products()
    );
    assert!(err < 1e-5, "{err}");
    assert!(mm.cost(&params).rotations <= 2 * 12, "BSGS: {} rotations", mm.cost(&params).rotations);
    // The cost model never picks the compressed method for slot-packed operands.
    let d = diagonal_work(&params, &mm, tokens, params.max_level());
    assert_eq!(choose(OperandLayout::Slots, Some(0.0), Some(d)).unwrap().method, Method::Diagonal);
    assert_eq!(choose(OperandLayout::Coefficients, Some(1.0), Some(0.5)).unwrap().method, Method::Compressed);
    assert!(DiagonalMatMul::new(&w[1..], d_in, d_out, params.max_slots()).is_err());
}
