//! One attention head's ciphertext x ciphertext products against their f64
//! twins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use nexus_nn::{Engine, HeadAttention};
use rand::{Rng, SeedableRng};

#[test]
fn scores_and_weighted_sum_match_plaintext() {
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let (t, d) = (16, 8);
    let head = HeadAttention::new(t, d, params.max_slots()).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let galois = kg.galois_keys(&sk, &head.rotations(), false).unwrap();
    let (eval, encoder) = (Evaluator::new(&params), Encoder::new(&params));
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &rlk, galois: &galois };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let mut mat = |rows: usize, cols: usize, lo: f64, hi: f64| -> Vec<Vec<f64>> {
        (0..rows).map(|_| (0..cols).map(|_| rng.gen_range(lo..hi)).collect()).collect()
    };
    let (q, k, v) = (mat(t, d, -1.0, 1.0), mat(t, d, -1.0, 1.0), mat(t, d, -1.0, 1.0));
    let a = mat(t, t, 0.0, 0.2);
    let enc = |slots: Vec<f64>| {
        let pt = encoder.encode_real(&slots, params.max_level(), params.default_scale()).unwrap();
        Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap()
    };
    let dec = |ct: &Ciphertext| encoder.decode_real(&Decryptor::new(&params).decrypt(ct, &sk).unwrap()).unwrap();
    let max_err = |x: &[Vec<f64>], y: &[Vec<f64>]| {
        x.iter().flatten().zip(y.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    };

    let s =
        head.scores(&engine, &enc(head.pack_interleaved(&q).unwrap()), &enc(head.pack_row_major(&k).unwrap())).unwrap();
    assert_eq!(params.max_level() - s.level(), head.scores_cost(&params).levels);
    let e1 = max_err(&head.unpack_scores(&dec(&s)), &HeadAttention::plain_scores(&q, &k));
    let o = head
        .weighted_sum(&engine, &enc(head.pack_scores(&a).unwrap()), &enc(head.pack_row_major(&v).unwrap()))
        .unwrap();
    assert_eq!(params.max_level() - o.level(), head.weighted_sum_cost(&params).levels);
    let e2 = max_err(&head.unpack_interleaved(&dec(&o)), &HeadAttention::plain_weighted_sum(&a, &v));
    println!("Q K^T: {e1:.2e}, A V: {e2:.2e}, {} rotations each", head.scores_cost(&params).rotations);
    assert!(e1 < 1e-5 && e2 < 1e-5, "{e1} {e2}");
    assert!(HeadAttention::new(12, 4, 2048).is_err());
    assert!(head.pack_row_major(&q[1..]).is_err());
}
