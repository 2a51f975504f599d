//! GELU, LayerNorm and Softmax on ciphertexts against their f64 twins and the
//! exact functions, at small insecure parameters with the N = 2^16 chain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use nexus_nn::functions::gelu;
use nexus_nn::{Engine, Gelu, LayerNorm, NnError, RowLayout, Softmax};
use rand::{Rng, SeedableRng};

const PRESET: &str = "INSECURE_N12_QP1500_DEEP_TEST";

struct Keys {
    params: Parameters,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinKey,
    galois: GaloisKeys,
    eval: Evaluator,
    encoder: Encoder,
}

fn keys(steps: &[i64]) -> Keys {
    let params = Parameters::preset(PRESET).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let galois = kg.galois_keys(&sk, steps, false).unwrap();
    Keys { eval: Evaluator::new(&params), encoder: Encoder::new(&params), params, sk, pk, rlk, galois }
}

impl Keys {
    fn engine(&self) -> Engine<'_> {
        Engine { eval: &self.eval, encoder: &self.encoder, rlk: &self.rlk, galois: &self.galois }
    }
    fn encrypt(&self, v: &[f64]) -> Ciphertext {
        let pt = self.encoder.encode_real(v, self.params.max_level(), self.params.default_scale()).unwrap();
        Encryptor::new(&self.params).encrypt_pk(&pt, &self.pk).unwrap()
    }
    fn decrypt(&self, ct: &Ciphertext) -> Vec<f64> {
        self.encoder.decode_real(&Decryptor::new(&self.params).decrypt(ct, &self.sk).unwrap()).unwrap()
    }
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn gelu_matches_twin_and_exact_on_random_and_linspace_inputs() {
    let k = keys(&[]);
    let g = Gelu::bert_default().unwrap();
    let slots = k.params.max_slots();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let random: Vec<f64> = (0..slots).map(|_| rng.gen_range(-8.0..8.0)).collect();
    let linspace: Vec<f64> = (0..slots).map(|i| -8.0 + 16.0 * i as f64 / (slots - 1) as f64).collect();
    for (name, x) in [("random", random), ("linspace", linspace)] {
        let ct = k.encrypt(&x);
        let out = g.apply(&k.engine(), &ct).unwrap();
        assert_eq!(k.params.max_level() - out.level(), g.cost().levels, "{name}: levels");
        let got = k.decrypt(&out);
        let twin = g.plain(&x).unwrap();
        let exact: Vec<f64> = x.iter().map(|&v| gelu(v)).collect();
        let (e_twin, e_exact) = (max_abs(&got, &twin), max_abs(&got, &exact));
        println!("gelu {name}: vs twin {e_twin:.2e}, vs exact {e_exact:.2e}");
        assert!(e_twin < 1e-5, "{name}: {e_twin}");
        assert!(e_exact < 1.2e-4, "{name}: {e_exact}");
    }
    assert!(matches!(g.plain(&[0.0, 9.0]), Err(NnError::OutOfRange { index: 1, .. })));
}

#[test]
fn layernorm_matches_twin_and_exact_with_padding() {
    let slots = 2048;
    let layout = RowLayout::new(2, 768, slots).unwrap();
    let k = keys(&layout.sum_rotations());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let gamma: Vec<f64> = (0..768).map(|_| rng.gen_range(0.5..1.5)).collect();
    let beta: Vec<f64> = (0..768).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let ln = LayerNorm::new(layout.clone(), gamma.clone(), beta.clone(), 1e-12, (0.25, 256.0), 1e-6).unwrap();
    println!(
        "invsqrt: degree {} + {} Newton steps, cost {:?}",
        ln.invsqrt().degree(),
        ln.invsqrt().steps(),
        ln.cost(&k.params)
    );
    let rows = vec![
        (0..768).map(|j| -10.0 + 20.0 * j as f64 / 767.0).collect::<Vec<f64>>(),
        (0..768).map(|_| rng.gen_range(-3.0..5.0)).collect(),
    ];
    let ct = k.encrypt(&layout.pack(&rows).unwrap());
    let out = ln.apply(&k.engine(), &ct).unwrap();
    assert_eq!(k.params.max_level() - out.level(), ln.cost(&k.params).levels);
    let slots_out = k.decrypt(&out);
    let got = layout.unpack(&slots_out).unwrap();
    let twin = ln.plain(&rows).unwrap();
    for (r, row) in rows.iter().enumerate() {
        let mean = row.iter().sum::<f64>() / 768.0;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 768.0;
        let exact: Vec<f64> =
            row.iter().enumerate().map(|(j, x)| gamma[j] * (x - mean) / var.sqrt() + beta[j]).collect();
        let (e_twin, e_exact) = (max_abs(&got[r], &twin[r]), max_abs(&got[r], &exact));
        println!("layernorm row {r}: vs twin {e_twin:.2e}, vs exact {e_exact:.2e}");
        assert!(e_twin < 1e-4 && e_exact < 1e-4, "row {r}: {e_twin} {e_exact}");
    }
    // Padding comes out as zero.
    let mask = layout.mask();
    let pad = slots_out.iter().zip(&mask).filter(|(_, m)| **m == 0.0).map(|(v, _)| v.abs()).fold(0.0, f64::max);
    assert!(pad < 1e-4, "padding {pad}");
    // A row whose variance is outside the declared interval is refused by the twin.
    assert!(ln.plain(&[vec![0.0; 768], rows[1].clone()]).is_err());
}

#[test]
fn softmax_matches_twin_and_exact() {
    let slots = 2048;
    let layout = RowLayout::new(16, 128, slots).unwrap();
    let k = keys(&layout.sum_rotations());
    let sm = Softmax::new(layout.clone(), -10.0, 0.0, 1e-6).unwrap();
    println!(
        "softmax: exp degree {}, inverse degree {} + {} steps, cost {:?}",
        sm.exp_degree(),
        sm.inverse().degree(),
        sm.inverse().steps(),
        sm.cost(&k.params)
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<Vec<f64>> = (0..16)
        .map(|r| match r % 3 {
            0 => (0..128).map(|j| -10.0 * j as f64 / 127.0).collect(),
            1 => (0..128).map(|_| rng.gen_range(-10.0..0.0)).collect(),
            _ => (0..128).map(|_| rng.gen_range(-10.0..-9.0)).collect(), // tiny row sum
        })
        .collect();
    let ct = k.encrypt(&layout.pack(&rows).unwrap());
    let out = sm.apply(&k.engine(), &ct).unwrap();
    assert_eq!(k.params.max_level() - out.level(), sm.cost(&k.params).levels);
    let got = layout.unpack(&k.decrypt(&out)).unwrap();
    let twin = sm.plain(&rows).unwrap();
    for (r, row) in rows.iter().enumerate() {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let exact: Vec<f64> = row.iter().map(|x| (x - m).exp() / s).collect();
        let (e_twin, e_exact) = (max_abs(&got[r], &twin[r]), max_abs(&got[r], &exact));
        assert!(e_twin < 1e-5 && e_exact < 1e-5, "row {r}: {e_twin:.2e} {e_exact:.2e}");
        if r < 3 {
            println!("softmax row {r}: vs twin {e_twin:.2e}, vs exact {e_exact:.2e}");
        }
    }
    assert!(sm.plain(&[vec![0.5; 128]]).is_err());
}
