//! The batcher's effect: two tenants' GELU queries queued alternately
//! through a coordinator and one worker (two threads) whose key cache
//! holds one key set, over loopback QUIC. Run once with the default batch
//! (`batch_tasks` 64: each key set's queued queries run together) and once
//! alternating task by task (`batch_tasks` 1), side by side: wall time,
//! key sets sent to the worker and key-set switches, and the ratio.
//!
//! `cargo run --release -p nexus-tests --example batcher -- [PRESET] [QUERIES_PER_TENANT]`
//! (defaults: N16_QP1500_TERN, 6; one ciphertext per query). Every task is
//! queued before the worker joins, so the order is the batcher's alone.
//! Outputs are decrypted and checked against GELU in f64.

use nexus_ckks::*;
use nexus_client::cluster::ClusterClient;
use nexus_coordinator::{Coordinator, CoordinatorConfig};
use nexus_nn::{KeySet, OperatorModel};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::ClusterCa;
use nexus_worker::{run, WorkerConfig};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tenant: secret key, key-set bytes, one encrypted input, its values.
struct Tenant {
    sk: SecretKey,
    keys: Vec<u8>,
    input: Vec<u8>,
    values: Vec<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().cloned().unwrap_or_else(|| "N16_QP1500_TERN".into());
    let per_tenant: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(6);
    let params = Parameters::preset(&preset)?;
    let gelu = OperatorModel::named("gelu", params.max_slots())?.ok_or("no gelu model")?;
    let levels = gelu.cost(&params).levels;
    let encoder = Encoder::new(&params);
    let mut tenants = Vec::new();
    for k in 0..2 {
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let keys = KeySet::new(params.clone(), kg.relin_key(&sk), kg.galois_keys(&sk, &gelu.rotations(), false)?);
        let values = gelu.sample(params.max_slots(), k)?;
        let pt = encoder.encode_real(&values, levels, params.default_scale())?;
        let input = Encryptor::new(&params).encrypt_pk(&pt, &pk)?.to_bytes(&params)?;
        tenants.push(Tenant { sk, keys: keys.to_bytes()?, input, values });
    }
    let mut runs = Vec::new();
    for batch_tasks in [64u32, 1] {
        let (seconds, sent, switches, max_err) = queue_and_run(&params, &tenants, per_tenant, batch_tasks).await?;
        println!(
            "{{\"batch_tasks\": {batch_tasks}, \"seconds\": {seconds:.3}, \"key_sets_sent\": {sent}, \"key_set_switches\": {switches}, \"max_abs_err\": {max_err:.2e}}}"
        );
        runs.push(seconds);
    }
    println!(
        "{{\"case\": \"batcher\", \"preset\": \"{preset}\", \"queries\": {}, \"key_set_bytes\": {}, \"batched_s\": {:.3}, \"alternating_s\": {:.3}, \"ratio\": {:.3}}}",
        2 * per_tenant,
        tenants[0].keys.len(),
        runs[0],
        runs[1],
        runs[0] / runs[1]
    );
    Ok(())
}

/// Queues `per_tenant` queries of each tenant alternately, starts the
/// worker, waits for all: (seconds from the worker's start, key sets sent,
/// key-set switches, largest error against f64).
async fn queue_and_run(
    params: &Parameters,
    tenants: &[Tenant],
    per_tenant: usize,
    batch_tasks: u32,
) -> Result<(f64, u32, u64, f64), BoxError> {
    let ca = ClusterCa::generate("batcher")?;
    let limits = nexus_coordinator::limits::Limits { batch_tasks, ..Default::default() };
    let coordinator = Coordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse()?,
        ca: ca.certificate(),
        identity: ca.issue_coordinator(&["localhost"])?,
        tenants: [("t0", "a"), ("t1", "b")].iter().map(|(t, k)| (t.to_string(), k.to_string())).collect(),
        max_queued: 2 * per_tenant,
        max_blob: 8 << 30,
        max_attempts: 1,
        metrics_listen: None,
        raft: nexus_coordinator::RaftSettings::default(),
        limits,
    })
    .await?;
    let addr = coordinator.local_addr()?;
    let mut clients = Vec::new();
    let mut key_sets = Vec::new();
    for (i, token) in ["a", "b"].into_iter().enumerate() {
        let tenant = TenantId::new(&format!("t{i}"))?;
        let c = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, token.into()).await?;
        key_sets.push(c.register_keys(&tenants[i].keys, params.digest()).await?.0);
        clients.push(c);
    }
    let mut queries = Vec::new();
    for _ in 0..per_tenant {
        for (i, c) in clients.iter().enumerate() {
            queries.push((i, c.submit(key_sets[i], "gelu", std::slice::from_ref(&tenants[i].input)).await?));
        }
    }
    let started = Instant::now();
    let worker = tokio::spawn(run(WorkerConfig {
        coordinators: vec![addr.to_string()],
        server_name: "localhost".into(),
        ca: ca.certificate(),
        identity: ca.issue("worker-0", &["worker-0"])?,
        threads: 2,
        // Room for one key set: a second evicts the first.
        key_cache_bytes: 1,
        allow_insecure_parameters: !params.is_secure(),
        lean_keys: false,
        metrics_listen: None,
        reconnect_for: Duration::from_secs(10),
        models: None,
    }));
    let mut outputs = Vec::new();
    for (i, q) in queries {
        clients[i].wait(q, Duration::from_secs(3600)).await?;
        outputs.push((i, clients[i].fetch(q).await?));
    }
    let seconds = started.elapsed().as_secs_f64();
    let encoder = Encoder::new(params);
    let gelu = OperatorModel::named("gelu", params.max_slots())?.ok_or("no gelu model")?;
    let mut max_err = 0f64;
    for (i, out) in outputs {
        let t = &tenants[i];
        let ct = Ciphertext::from_bytes(params, out.first().ok_or("no output")?, 8 << 30)?;
        let got = encoder.decode_real(&Decryptor::new(params).decrypt(&ct, &t.sk)?)?;
        let want = gelu.plain(&t.values)?;
        max_err = want.iter().zip(&got).fold(max_err, |m, (w, g)| m.max((w - g).abs()));
    }
    let stats = coordinator.stats().await;
    coordinator.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    Ok((seconds, stats.key_sets_sent.values().sum(), stats.key_set_switches, max_err))
}
