//! Criterion benches: the NTT (IFMA and portable) at N = 2^16 and the main
//! evaluator operations at a small test preset. The full N = 2^16 operation
//! table comes from `examples/bench.rs` (see docs/PERFORMANCE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benches fail loudly on purpose

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nexus_ckks::math::{Modulus, NttTable};
use nexus_ckks::*;
use std::hint::black_box;

fn ntt(c: &mut Criterion) {
    let params = Parameters::preset("bench-n16-l27").unwrap();
    let table = NttTable::new(params.n(), Modulus::new(params.q()[1]).unwrap()).unwrap();
    let mut data: Vec<u64> = (0..params.n() as u64).map(|i| i * 7919 % params.q()[1]).collect();
    let mut group = c.benchmark_group("ntt_forward_2^16");
    group.bench_function(BenchmarkId::new("dispatch", if table.uses_ifma() { "ifma" } else { "portable" }), |b| {
        b.iter(|| table.forward(black_box(&mut data)))
    });
    group.bench_function("portable", |b| b.iter(|| table.forward_portable(black_box(&mut data))));
    group.finish();
}

fn operations(c: &mut Criterion) {
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let gks = kg.galois_keys(&sk, &[1, 2, 3, 4, 5, 6, 7, 8], false).unwrap();
    let enc = Encoder::new(&params);
    let v: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64).sin()).collect();
    let pt = enc.encode_real(&v, params.max_level(), params.default_scale()).unwrap();
    let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
    let eval = Evaluator::new(&params);
    let mut group = c.benchmark_group("ops_insecure_n12");
    group.bench_function("mul_relin_rescale", |b| b.iter(|| eval.mul_relin_rescale(&ct, &ct, &rlk).unwrap()));
    group.bench_function("rotate", |b| b.iter(|| eval.rotate(&ct, 1, &gks).unwrap()));
    let steps: Vec<i64> = (1..=8).collect();
    group.bench_function("rotate_hoisted_8", |b| b.iter(|| eval.rotate_hoisted(&ct, &steps, &gks).unwrap()));
    group.bench_function("rescale", |b| {
        let m = eval.mul_relin(&ct, &ct, &rlk).unwrap();
        b.iter(|| eval.rescale(&m).unwrap())
    });
    group.finish();
}

criterion_group!(benches, ntt, operations);
criterion_main!(benches);
