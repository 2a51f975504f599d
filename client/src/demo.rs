//! `nexus demo`: a whole cluster in this process (one coordinator, two
//! workers, real QUIC with mutual TLS on loopback) runs an encrypted
//! inference of the embedded model `mlp-demo` (`y = GELU(x W1) W2`, see
//! `nexus_nn::model`) at a 128-bit-secure preset. The client generates keys,
//! uploads them once, submits the encrypted token batch, watches per-layer
//! progress, fetches and decrypts the result and prints it next to the
//! plaintext f64 computation of the same model.

use crate::cluster::{ClientError, ClusterClient};
use nexus_ckks::{Ciphertext, CkksError, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters, Wire};
use nexus_coordinator::{Coordinator, CoordinatorConfig, RaftSettings};
use nexus_nn::{DemoMlp, KeySet, NnError, DEMO_MODEL};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::ClusterCa;
use nexus_proto::ProtoError;
use nexus_worker::{run as run_worker, WorkerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Demo failures.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Engine error.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// Operator error.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// Protocol error.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Client error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Cluster setup error.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Parameter preset.
    pub preset: String,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Worker processes' stand-ins (separate QUIC endpoints in this process).
    pub workers: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { preset: "N15_QP860_TERN".into(), tokens: 2048, workers: 2 }
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Preset used.
    pub preset: String,
    /// Whether the preset is 128-bit secure.
    pub secure: bool,
    /// Workers in the cluster.
    pub workers: usize,
    /// Decrypted outputs, one row per token.
    pub encrypted: Vec<Vec<f64>>,
    /// Plaintext f64 outputs.
    pub plaintext: Vec<Vec<f64>>,
    /// Max absolute error.
    pub max_abs_error: f64,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Timings in milliseconds: (phase, ms).
    pub timings_ms: Vec<(&'static str, f64)>,
}

/// Deterministic pseudo-embeddings in [-1, 1] (the tokenizer and the real
/// embedding table come with the model issue).
fn synthetic(i: usize, salt: u64) -> f64 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt).rotate_left(17) ^ salt;
    (x % 20001) as f64 / 10000.0 - 1.0
}

/// Runs the demo, reporting progress lines through `progress`.
pub fn run(config: &DemoConfig, progress: impl FnMut(&str) + Send) -> Result<DemoReport, DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DemoError::Cluster(e.to_string()))?;
    runtime.block_on(run_async(config, progress))
}

async fn run_async(config: &DemoConfig, mut progress: impl FnMut(&str) + Send) -> Result<DemoReport, DemoError> {
    let start = Instant::now();
    let mut timings = Vec::new();
    let mut timed = |name: &'static str, t: Instant, progress: &mut dyn FnMut(&str)| {
        let ms = t.elapsed().as_secs_f64() * 1e3;
        progress(&format!("  {name:<34} {ms:>9.1} ms"));
        timings.push((name, ms));
    };
    let params = Parameters::preset(&config.preset)?;
    let model = DemoMlp::embedded(params.max_slots())?;
    model.check(&params)?;
    if config.tokens == 0 || config.workers == 0 {
        return Err(DemoError::Cluster("need at least one token and one worker".into()));
    }
    progress(&format!(
        "nexus demo: model {DEMO_MODEL} ({} -> {} -> GELU -> {}), {} tokens, preset {} (N = 2^{}, {}), {} workers",
        model.d_in,
        model.hidden,
        model.d_out,
        config.tokens,
        config.preset,
        params.log_n(),
        if params.is_secure() { "128-bit secure" } else { "INSECURE test size" },
        config.workers
    ));

    // Client: keys.
    let t = Instant::now();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = KeySet::new(params.clone(), kg.relin_key(&sk), kg.galois_keys(&sk, &model.rotations(), false)?);
    let key_bytes = keys.to_bytes()?;
    timed("client: key generation", t, &mut progress);

    // Client: encrypt the batch.
    let t = Instant::now();
    let tokens: Vec<Vec<f64>> =
        (0..config.tokens).map(|r| (0..model.d_in).map(|c| synthetic(r * model.d_in + c, 11)).collect()).collect();
    let encoder = Encoder::new(&params);
    let encryptor = Encryptor::new(&params);
    let inputs = model
        .pack(&tokens)?
        .iter()
        .map(|slots| {
            let pt = encoder.encode_real(slots, model.levels(), params.default_scale())?;
            encryptor.encrypt_pk(&pt, &pk)?.to_bytes(&params)
        })
        .collect::<Result<Vec<_>, CkksError>>()?;
    timed("client: encode + encrypt", t, &mut progress);

    // The cluster.
    let t = Instant::now();
    let ca = ClusterCa::generate("nexus demo CA")?;
    let coordinator = Coordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().map_err(|e| DemoError::Cluster(format!("{e}")))?,
        ca: ca.certificate(),
        identity: ca.issue_coordinator(&["localhost", "127.0.0.1"])?,
        tenants: HashMap::from([("demo".to_string(), "demo-token".to_string())]),
        max_queued: 8,
        max_blob: 8 << 30,
        max_attempts: 3,
        metrics_listen: None,
        raft: RaftSettings::default(),
        limits: nexus_coordinator::limits::Limits::default(),
    })
    .await
    .map_err(|e| DemoError::Cluster(e.to_string()))?;
    let addr = coordinator.local_addr().map_err(|e| DemoError::Cluster(e.to_string()))?;
    let mut workers = Vec::new();
    for i in 0..config.workers {
        let name = format!("worker-{i}");
        workers.push(tokio::spawn(run_worker(WorkerConfig {
            coordinators: vec![addr.to_string()],
            server_name: "localhost".into(),
            ca: ca.certificate(),
            identity: ca.issue(&name, &[&name])?,
            threads: 1,
            key_cache_bytes: 4 << 30,
            metrics_listen: None,
            reconnect_for: std::time::Duration::from_secs(10),
            models: None,
            allow_insecure_parameters: !params.is_secure(),
            lean_keys: false,
        })));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while coordinator.workers().await < config.workers {
        if Instant::now() > deadline {
            return Err(DemoError::Cluster("workers did not register".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    timed("cluster: start (QUIC, mutual TLS)", t, &mut progress);

    // Client: upload keys once, submit, watch, fetch.
    let t = Instant::now();
    let tenant = TenantId::new("demo")?;
    let client = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, "demo-token".into()).await?;
    let (key_set, _) = client.register_keys(&key_bytes, params.digest()).await?;
    timed("client: upload evaluation keys", t, &mut progress);
    let t = Instant::now();
    let query = client.submit(key_set, DEMO_MODEL, &inputs).await?;
    let mut last = (u32::MAX, u32::MAX);
    let status = loop {
        let s = client.status(query).await?;
        if (s.layers_done, s.tasks_done) != last {
            last = (s.layers_done, s.tasks_done);
            progress(&format!(
                "  query {query}: layer {}/{} done, tasks {}/{} ({:?})",
                s.layers_done, s.layers_total, s.tasks_done, s.tasks_total, s.state
            ));
        }
        match &s.state {
            nexus_proto::messages::QueryState::Done => break s,
            nexus_proto::messages::QueryState::Failed { reason } => return Err(DemoError::Cluster(reason.clone())),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let outputs = client.fetch(query).await?;
    client.release(query).await?;
    timed("cluster: encrypted inference", t, &mut progress);
    let stats = coordinator.stats().await;
    coordinator.shutdown().await;
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }

    // Client: decrypt and compare.
    let t = Instant::now();
    let decryptor = Decryptor::new(&params);
    let per_ct = model.tokens_per_ciphertext();
    let mut encrypted = Vec::with_capacity(config.tokens);
    for (i, bytes) in outputs.iter().enumerate() {
        let ct = Ciphertext::from_bytes(&params, bytes, 1 << 30)?;
        let slots = encoder.decode_real(&decryptor.decrypt(&ct, &sk)?)?;
        encrypted.extend(model.unpack(&slots, config.tokens - i * per_ct));
    }
    timed("client: decrypt + decode", t, &mut progress);
    let plaintext = model.plain(&tokens)?;
    let max_abs_error =
        encrypted.iter().flatten().zip(plaintext.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    progress(&format!(
        "  {} tasks on {} workers, key set sent {} times ({:.1} MB), {} retries",
        status.tasks_total,
        config.workers,
        stats.key_sets_sent.values().sum::<u32>(),
        stats.key_bytes_sent as f64 / 1e6,
        stats.tasks_retried
    ));
    Ok(DemoReport {
        preset: config.preset.clone(),
        secure: params.is_secure(),
        workers: config.workers,
        encrypted,
        plaintext,
        max_abs_error,
        seconds: start.elapsed().as_secs_f64(),
        timings_ms: timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_cluster_matches_plaintext_on_test_parameters() {
        let config = DemoConfig { preset: "INSECURE_N12_QP640_TEST".into(), tokens: 300, workers: 2 };
        let report = run(&config, |_| {}).unwrap();
        assert_eq!(report.encrypted.len(), 300);
        assert_eq!(report.encrypted[0].len(), 4);
        assert!(report.max_abs_error < 1e-4, "max error {}", report.max_abs_error);
        assert!(!report.secure);
        let bad = DemoConfig { workers: 0, ..config };
        assert!(run(&bad, |_| {}).is_err());
    }
}
