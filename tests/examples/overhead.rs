//! Distribution overhead: the same workload run in this process and
//! through a coordinator and one worker over loopback QUIC (mutual TLS,
//! digest-checked blobs), side by side, as a ratio. The workload is one
//! operator on every input ciphertext (`--model gelu|layernorm|softmax`,
//! the operator benchmarks' cases), or with `--model mlp-demo` the tiny
//! model (product, GELU, product: three tasks per ciphertext, every
//! intermediate checkpointed by the coordinator), or with `--model matmul`
//! the compressed-input product benchmark (`A` 4096x768 by `B` 768x64
//! encrypted, at `N13_QP147_TERN` by default: one tile task per input
//! ciphertext, then one task adding the tiles' partials; INPUTS is set by
//! the shape). The cluster's results are decrypted and checked against the
//! f64 twin.
//!
//! `cargo run --release -p nexus-tests --example overhead -- [PRESET] [INPUTS] [REPEATS] [--ha] [--model gelu|layernorm|softmax|mlp-demo|matmul]`
//! (defaults: N16_QP1500_TERN, 4 ciphertexts, 3 repeats, gelu). `--ha` runs three
//! coordinators as a raft group with on-disk logs (every admission and
//! every layer checkpoint replicated and fsynced) instead of a group of
//! one in memory. The cluster time
//! covers submit, dispatch, transfers both ways, execution, status polling
//! and fetch; keys are uploaded and cached once beforehand (as in steady
//! state); the local time covers the same evaluations.

use nexus_ckks::*;
use nexus_client::cluster::ClusterClient;
use nexus_coordinator::{Coordinator, CoordinatorConfig, RaftSettings};
use nexus_nn::matmul::MATMUL_SHAPE;
use nexus_nn::{DemoMlp, Engine, KeySet, MatMulModel, OperatorModel, DEMO_MODEL, MATMUL_MODEL, OPERATOR_MODELS};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::ClusterCa;
use nexus_worker::{run, WorkerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Workers registered with whichever coordinator leads.
async fn leader_workers(coordinators: &[Coordinator]) -> usize {
    let mut n = 0;
    for c in coordinators {
        n = n.max(c.workers().await);
    }
    n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let ha = args.iter().any(|a| a == "--ha");
    args.retain(|a| a != "--ha");
    let model = match args.iter().position(|a| a == "--model") {
        Some(i) if i + 1 < args.len() => {
            let m = args.remove(i + 1);
            args.remove(i);
            m
        }
        Some(_) => return Err("--model needs a name: gelu, layernorm, softmax, mlp-demo or matmul".into()),
        None => "gelu".to_string(),
    };
    if !OPERATOR_MODELS.contains(&model.as_str()) && model != DEMO_MODEL && model != MATMUL_MODEL {
        return Err(
            format!("--model {model:?}: expected one of {OPERATOR_MODELS:?}, {DEMO_MODEL} or {MATMUL_MODEL}").into()
        );
    }
    if model == MATMUL_MODEL {
        let preset = args.first().cloned().unwrap_or_else(|| "N13_QP147_TERN".into());
        let repeats: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
        return matmul(&preset, repeats, ha).await;
    }
    let preset = args.first().cloned().unwrap_or_else(|| "N16_QP1500_TERN".into());
    let count: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let repeats: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let params = Parameters::preset(&preset)?;
    let mlp = DemoMlp::embedded(params.max_slots())?;
    let op = OperatorModel::named(&model, params.max_slots())?;
    let is_mlp = model == DEMO_MODEL;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let rotations = match &op {
        Some(op) => op.rotations(),
        None => mlp.rotations(),
    };
    let galois = kg.galois_keys(&sk, &rotations, false)?;
    let keys = KeySet::new(params.clone(), kg.relin_key(&sk), galois);
    let encoder = Encoder::new(&params);
    let slots = params.max_slots();
    let levels = match &op {
        Some(op) => op.cost(&params).levels,
        None => mlp.levels(),
    };
    let per_ct = mlp.tokens_per_ciphertext();
    let tokens: Vec<Vec<f64>> =
        (0..count * per_ct).map(|t| (0..16).map(|c| ((t * 16 + c) as f64 * 0.37).sin()).collect()).collect();
    let vectors: Vec<Vec<f64>> = if is_mlp {
        mlp.pack(&tokens)?
    } else {
        let op = op.as_ref().ok_or("no operator")?;
        (0..count).map(|k| op.sample(slots, k)).collect::<Result<_, _>>()?
    };
    let inputs: Vec<Ciphertext> = vectors
        .iter()
        .map(|v| {
            let pt = encoder.encode_real(v, levels, params.default_scale())?;
            Ok(Encryptor::new(&params).encrypt_pk(&pt, &pk)?)
        })
        .collect::<Result<_, BoxError>>()?;
    let input_bytes: Vec<Vec<u8>> = inputs.iter().map(|c| c.to_bytes(&params)).collect::<Result<_, _>>()?;

    // Local.
    let eval = Evaluator::new(&params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: keys.relin(), galois: keys.galois() };
    let mut local = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        for c in &inputs {
            if is_mlp {
                let mut ct = c.clone();
                for layer in 0..mlp.layers().len() {
                    ct = mlp.run_layer(layer, &engine, &ct)?;
                }
            } else if let Some(op) = &op {
                op.apply(&engine, c)?;
            }
        }
        local.push(t.elapsed().as_secs_f64());
    }

    let cluster_run = Cluster::start(&params, &keys, ha).await?;
    let (client, key_set) = (&cluster_run.client, cluster_run.key_set);
    // Warm-up: the worker fetches and caches the key set.
    let q = client.submit(key_set, &model, &input_bytes[..1]).await?;
    client.wait(q, Duration::from_secs(600)).await?;
    let mut cluster = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let q = client.submit(key_set, &model, &input_bytes).await?;
        client.wait(q, Duration::from_secs(600)).await?;
        let out = client.fetch(q).await?;
        cluster.push(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), count);
        outputs = out;
    }
    // The cluster computed what was asked: decrypted against the f64 twin.
    let decryptor = Decryptor::new(&params);
    let mut max_err = 0f64;
    for (k, (bytes, v)) in outputs.iter().zip(&vectors).enumerate() {
        let got = encoder.decode_real(&decryptor.decrypt(&Ciphertext::from_bytes(&params, bytes, 8 << 30)?, &sk)?)?;
        let (want, got) = match &op {
            Some(op) => (op.plain(v)?, got),
            None => {
                let want = mlp.plain(&tokens[k * per_ct..(k + 1) * per_ct])?.concat();
                (want, mlp.unpack(&got, per_ct).concat())
            }
        };
        max_err = want.iter().zip(&got).fold(max_err, |m, (w, g)| m.max((w - g).abs()));
    }
    let members = cluster_run.stop().await;
    let (l, c) = (median(local), median(cluster));
    println!(
        "{{\"case\": \"{model}\", \"preset\": \"{preset}\", \"ciphertexts\": {count}, \"coordinators\": {members}, \"local_s\": {l:.3}, \"cluster_s\": {c:.3}, \"ratio\": {:.3}, \"repeats\": {repeats}, \"max_abs_err\": {max_err:.2e}}}",
        c / l
    );
    Ok(())
}

/// One coordinator (or a raft group of three), one worker with two
/// threads, loopback QUIC, the key set registered.
struct Cluster {
    coordinators: Vec<Coordinator>,
    client: ClusterClient,
    key_set: nexus_proto::ids::KeySetId,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn start(params: &Parameters, keys: &KeySet, ha: bool) -> Result<Self, BoxError> {
        let ca = ClusterCa::generate("overhead")?;
        let members = if ha { 3 } else { 1 };
        let free = || -> Result<u16, BoxError> { Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let ports: Vec<(u16, u16)> = (0..members).map(|_| Ok((free()?, free()?))).collect::<Result<_, BoxError>>()?;
        let dir = std::env::temp_dir().join(format!("nexus-overhead-{}", std::process::id()));
        let peers = if ha { nexus_tests::loopback_peers(&ports) } else { vec![] };
        let mut coordinators = Vec::new();
        for (i, (public, raft)) in ports.iter().enumerate() {
            coordinators.push(
                Coordinator::start(CoordinatorConfig {
                    listen: format!("127.0.0.1:{public}").parse()?,
                    ca: ca.certificate(),
                    identity: ca.issue_coordinator(&["localhost"])?,
                    tenants: HashMap::from([("bench".to_string(), "t".to_string())]),
                    max_queued: 8,
                    max_blob: 8 << 30,
                    max_attempts: 1,
                    metrics_listen: None,
                    raft: RaftSettings {
                        id: i as u64 + 1,
                        peers: peers.clone(),
                        listen: ha.then(|| format!("127.0.0.1:{raft}").parse()).transpose()?,
                        dir: ha.then(|| dir.join(format!("raft-{}", i + 1))),
                        ..RaftSettings::default()
                    },
                    limits: nexus_coordinator::limits::Limits::default(),
                })
                .await?,
            );
        }
        let addrs: Vec<String> = ports.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        tokio::spawn(run(WorkerConfig {
            coordinators: addrs.clone(),
            server_name: "localhost".into(),
            ca: ca.certificate(),
            identity: ca.issue("worker-0", &["worker-0"])?,
            threads: 2,
            key_cache_bytes: 8 << 30,
            allow_insecure_parameters: !params.is_secure(),
            lean_keys: false,
            metrics_listen: None,
            reconnect_for: std::time::Duration::from_secs(10),
            models: None,
        }));
        while leader_workers(&coordinators).await < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let client =
            ClusterClient::connect_any(&addrs, "localhost", &ca.certificate(), TenantId::new("bench")?, "t".into())
                .await?;
        let (key_set, _) = client.register_keys(&keys.to_bytes()?, params.digest()).await?;
        Ok(Self { coordinators, client, key_set, dir })
    }

    /// Stops it; the number of coordinators it had.
    async fn stop(self) -> usize {
        for c in &self.coordinators {
            c.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.coordinators.len()
    }
}

/// The compressed-input product: `B` (768x64, uniform in [-1, 1]) packed
/// and encrypted by the client, the six tiles and their sum in this
/// process (weights encoded beforehand, as the worker's cache holds them
/// after the warm-up) and through the cluster.
async fn matmul(preset: &str, repeats: usize, ha: bool) -> Result<(), BoxError> {
    let params = Parameters::preset(preset)?;
    let served = MatMulModel::new(&params)?;
    let mm = served.product();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let galois = kg.galois_keys_for_elements(&sk, &mm.galois_elements(&params))?;
    let keys = KeySet::new(params.clone(), kg.relin_key(&sk), galois);
    let encoder = Encoder::new(&params);
    let (_, n, k) = MATMUL_SHAPE;
    let b: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.37).sin()).collect();
    let level = params.max_level();
    let inputs: Vec<Ciphertext> = mm
        .pack(&b)?
        .iter()
        .map(|c| {
            Ok(Encryptor::new(&params)
                .encrypt_pk(&encoder.encode_coefficients(c, level, params.default_scale())?, &pk)?)
        })
        .collect::<Result<_, BoxError>>()?;
    let input_bytes: Vec<Vec<u8>> = inputs.iter().map(|c| c.to_bytes(&params)).collect::<Result<_, _>>()?;

    let eval = Evaluator::new(&params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: keys.relin(), galois: keys.galois() };
    let weights = served.weights(&encoder, level)?;
    let mut local = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let mut partials = Vec::new();
        for (i, ct) in inputs.iter().enumerate() {
            partials.extend(served.run_tile(&engine, &weights, served.tile(i)?, ct)?);
        }
        served.assemble(&engine, partials)?;
        local.push(t.elapsed().as_secs_f64());
    }

    let cluster_run = Cluster::start(&params, &keys, ha).await?;
    let (client, key_set) = (&cluster_run.client, cluster_run.key_set);
    // Warm-up: the worker fetches the key set and encodes the weights.
    let q = client.submit(key_set, MATMUL_MODEL, &input_bytes).await?;
    client.wait(q, Duration::from_secs(600)).await?;
    let mut cluster = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let q = client.submit(key_set, MATMUL_MODEL, &input_bytes).await?;
        client.wait(q, Duration::from_secs(600)).await?;
        outputs = client.fetch(q).await?;
        cluster.push(t.elapsed().as_secs_f64());
    }
    let decryptor = Decryptor::new(&params);
    let decoded = outputs
        .iter()
        .map(|bytes| {
            Ok(encoder.decode_real(&decryptor.decrypt(&Ciphertext::from_bytes(&params, bytes, 8 << 30)?, &sk)?)?)
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let columns: Vec<Vec<Vec<f64>>> = decoded.chunks(k).map(|block| block.to_vec()).collect();
    let got = mm.unpack(&columns)?;
    let want = mm.plain(served.a(), &b);
    let max_err = want.iter().zip(&got).fold(0f64, |m, (w, g)| m.max((w - g).abs()));
    let members = cluster_run.stop().await;
    let (l, c) = (median(local), median(cluster));
    println!(
        "{{\"case\": \"{MATMUL_MODEL}\", \"preset\": \"{preset}\", \"ciphertexts\": {}, \"outputs\": {}, \"coordinators\": {members}, \"local_s\": {l:.3}, \"cluster_s\": {c:.3}, \"ratio\": {:.3}, \"repeats\": {repeats}, \"max_abs_err\": {max_err:.2e}}}",
        inputs.len(),
        outputs.len(),
        c / l
    );
    Ok(())
}
