//! Distribution overhead: the same GELU workload run in this process and
//! through a coordinator and one worker over loopback QUIC (mutual TLS,
//! SHA-256-checked blobs), side by side, as a ratio.
//!
//! `cargo run --release -p nexus-tests --example overhead -- [PRESET] [INPUTS] [REPEATS]`
//! (defaults: N16_QP1500_TERN, 4 ciphertexts, 3 repeats). The cluster time
//! covers submit, dispatch, transfers both ways, execution, status polling
//! and fetch; keys are uploaded and cached once beforehand (as in steady
//! state); the local time covers the same GELU evaluations.

use nexus_ckks::*;
use nexus_client::cluster::ClusterClient;
use nexus_coordinator::{Coordinator, CoordinatorConfig, RaftSettings};
use nexus_nn::{Engine, Gelu, KeySet};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::ClusterCa;
use nexus_worker::{run, WorkerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().cloned().unwrap_or_else(|| "N16_QP1500_TERN".into());
    let count: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let repeats: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let params = Parameters::preset(&preset)?;
    let gelu = Gelu::bert_default()?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = KeySet { params: params.clone(), relin: kg.relin_key(&sk), galois: GaloisKeys::new() };
    let encoder = Encoder::new(&params);
    let slots = params.max_slots();
    let inputs: Vec<Ciphertext> = (0..count)
        .map(|k| {
            let v: Vec<f64> = (0..slots).map(|i| ((i + k) as f64 * 0.001).sin() * 7.0).collect();
            let pt = encoder.encode_real(&v, gelu.cost().levels, params.default_scale())?;
            Ok(Encryptor::new(&params).encrypt_pk(&pt, &pk)?)
        })
        .collect::<Result<_, BoxError>>()?;
    let input_bytes: Vec<Vec<u8>> = inputs.iter().map(|c| c.to_bytes(&params)).collect::<Result<_, _>>()?;

    // Local.
    let eval = Evaluator::new(&params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: &keys.relin, galois: &keys.galois };
    let mut local = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        for c in &inputs {
            gelu.apply(&engine, c)?;
        }
        local.push(t.elapsed().as_secs_f64());
    }

    // Cluster: one coordinator, one worker, loopback QUIC.
    let ca = ClusterCa::generate("overhead")?;
    let coordinator = Coordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse()?,
        ca: ca.certificate(),
        identity: ca.issue_coordinator(&["localhost"])?,
        tenants: HashMap::from([("bench".to_string(), "t".to_string())]),
        max_queued: 8,
        max_blob: 8 << 30,
        max_attempts: 1,
        metrics_listen: None,
        raft: RaftSettings::default(),
    })
    .await?;
    let addr = coordinator.local_addr()?;
    tokio::spawn(run(WorkerConfig {
        coordinators: vec![addr.to_string()],
        server_name: "localhost".into(),
        ca: ca.certificate(),
        identity: ca.issue("worker-0", &["worker-0"])?,
        threads: 2,
        key_cache_bytes: 8 << 30,
        allow_insecure_parameters: !params.is_secure(),
        metrics_listen: None,
        reconnect_for: std::time::Duration::from_secs(10),
    }));
    while coordinator.workers().await < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), TenantId::new("bench")?, "t".into()).await?;
    let (key_set, _) = client.register_keys(&keys.to_bytes()?, params.digest()).await?;
    // Warm-up: the worker fetches and caches the key set.
    let q = client.submit(key_set, "gelu", &input_bytes[..1]).await?;
    client.wait(q, Duration::from_secs(600)).await?;
    let mut cluster = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let q = client.submit(key_set, "gelu", &input_bytes).await?;
        client.wait(q, Duration::from_secs(600)).await?;
        let out = client.fetch(q).await?;
        cluster.push(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), count);
    }
    coordinator.shutdown().await;
    let (l, c) = (median(local), median(cluster));
    println!(
        "{{\"case\": \"gelu\", \"preset\": \"{preset}\", \"ciphertexts\": {count}, \"local_s\": {l:.3}, \"cluster_s\": {c:.3}, \"ratio\": {:.3}, \"repeats\": {repeats}}}",
        c / l
    );
    Ok(())
}
