//! Nexus worker: registers with the coordinator over mutual-TLS QUIC,
//! receives tasks on coordinator-opened streams, fetches each key set once
//! into a byte-budgeted LRU cache, runs the task with `nexus-nn` on a
//! blocking thread, and streams the outputs back.

pub mod cache;
pub mod execute;

use cache::KeyCache;
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::{KeySetId, WorkerId};
use nexus_proto::messages::{
    Capabilities, CoordinatorMessage, TaskAssignment, TaskOutcome, WorkerMessage, SHUTDOWN_REASON,
};
use nexus_proto::metrics::WorkerMetrics;
use nexus_proto::quic::{recv_blob, recv_message, send_blob_owned, send_message, Link};
use nexus_proto::tls::{client_config, Identity};
use nexus_proto::ProtoError;
use quinn::rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Mutex;

pub use nexus_proto::PROTOCOL_VERSION;

/// Largest blob a worker accepts (keys of the N = 2^16 bootstrapping set
/// are about 9 GB; ciphertexts far less).
pub const MAX_BLOB: u64 = 16 << 30;

/// Worker failures.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// Protocol or transport error.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// QUIC connection error.
    #[error("connection to the coordinator: {0}")]
    Connection(String),
    /// The coordinator answered out of protocol.
    #[error("coordinator: unexpected {0}")]
    Unexpected(String),
}

/// Worker configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Coordinator addresses (host:port): every member of the raft group,
    /// tried in turn; a follower redirects to the leader.
    pub coordinators: Vec<String>,
    /// Name in the coordinator's certificate.
    pub server_name: String,
    /// Cluster CA.
    pub ca: CertificateDer<'static>,
    /// This worker's certificate and key.
    pub identity: Identity,
    /// Threads for task execution.
    pub threads: u32,
    /// Key-cache budget in bytes.
    pub key_cache_bytes: u64,
    /// Accept key sets at parameters marked insecure (test clusters only).
    pub allow_insecure_parameters: bool,
    /// Cache Galois keys lean ([`nexus_nn::KeySet::lean`]): about half the
    /// memory per key set (an N = 2^16 BERT key set holds 12.4 GB in full),
    /// for regenerating each key's uniform halves at every key switch.
    pub lean_keys: bool,
    /// Where to serve Prometheus `/metrics` (none: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Give up after this long without reaching any coordinator.
    pub reconnect_for: Duration,
    /// Model root: one directory per BERT-family model (config.json,
    /// model.safetensors, tokenizer.json) that queries name as
    /// `bert:NAME@DIGEST:...` (the digest of the client's copy of the files,
    /// which this one's must equal); none: the embedded models only.
    pub models: Option<PathBuf>,
}

/// How a session with one coordinator ended.
enum SessionEnd {
    /// The coordinator told this worker to stop.
    Shutdown,
    /// A follower named the leader (or knows none yet).
    Redirect(Option<String>),
    /// The connection was lost after registering.
    Lost,
}

/// Runs until a coordinator sends `Shutdown`, following the raft leader
/// across failovers (the key cache survives reconnections).
pub async fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    let conn_err = |e: String| WorkerError::Connection(e);
    if config.coordinators.is_empty() {
        return Err(conn_err("no coordinator address given".into()));
    }
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mut endpoint = nexus_proto::quic::endpoint(any, None).map_err(|e| conn_err(e.to_string()))?;
    endpoint.set_default_client_config(client_config(
        &config.ca,
        Some(&config.identity),
        Link::to_hosts(&config.coordinators),
    )?);
    let cache = Arc::new(Mutex::new(KeyCache::new(config.key_cache_bytes)));
    // Tasks run (key set pinned, working set allocated) this many at a
    // time; more only split the same cores and multiply the memory. Later
    // ones wait holding just their inputs, so transfers still overlap.
    let slots = Arc::new(tokio::sync::Semaphore::new(config.threads.max(1) as usize));
    let metrics = Arc::new(WorkerMetrics::new()?);
    if let Some(addr) = config.metrics_listen {
        let busy = metrics.clone();
        nexus_proto::metrics::serve_with(metrics.registry.clone(), addr, Arc::new(move || busy.accrue_busy())).await?;
    }
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut last_contact = Instant::now();
    loop {
        let target = hint.take().unwrap_or_else(|| {
            next += 1;
            config.coordinators[(next - 1) % config.coordinators.len()].clone()
        });
        match session(&endpoint, &target, &config, &cache, &slots, &metrics).await {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Redirect(leader)) => {
                tracing::info!(from = %target, leader = ?leader, "not the leader: redirected");
                last_contact = Instant::now();
                if leader.is_none() {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                hint = leader;
            }
            Ok(SessionEnd::Lost) => {
                tracing::warn!(coordinator = %target, "connection lost; reconnecting");
                last_contact = Instant::now();
            }
            Err(e) => {
                if last_contact.elapsed() > config.reconnect_for {
                    tracing::error!(error = %e, "no coordinator reachable; giving up");
                    return Err(e);
                }
                tracing::debug!(coordinator = %target, error = %e, "connection attempt failed");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Pause between connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long a worker waits for another coordinator to answer a key fetch
/// (connection and the key set's header) before it asks the next one.
const KEY_SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(
    endpoint: &quinn::Endpoint,
    target: &str,
    server_name: &str,
) -> Result<quinn::Connection, WorkerError> {
    let conn_err = |e: String| WorkerError::Connection(format!("{target}: {e}"));
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| conn_err(e.to_string()))?
        .next()
        .ok_or_else(|| conn_err("resolves to no address".into()))?;
    endpoint.connect(addr, server_name).map_err(|e| conn_err(e.to_string()))?.await.map_err(|e| conn_err(e.to_string()))
}

/// Where a worker fetches a key set it lacks: first the coordinators
/// other than the one it serves (every member's key store holds the same
/// content-addressed bytes, and the leader's CPU and link carry every
/// task), in an order that spreads workers and key sets over them; then
/// the leader it is connected to.
#[derive(Clone, Debug)]
struct KeySources {
    endpoint: quinn::Endpoint,
    server_name: String,
    /// Every configured coordinator but the session's.
    others: Vec<String>,
    /// This worker's offset into `others` (random per process).
    spread: u64,
}

impl KeySources {
    fn new(endpoint: &quinn::Endpoint, config: &WorkerConfig, session: &str, spread: u64) -> Self {
        let others = config.coordinators.iter().filter(|c| c.as_str() != session).cloned().collect();
        Self { endpoint: endpoint.clone(), server_name: config.server_name.clone(), others, spread }
    }

    /// `others` rotated by the worker's and the key set's offsets.
    fn order(&self, key_set: &KeySetId) -> impl Iterator<Item = &String> {
        let n = self.others.len().max(1);
        let mut first = [0u8; 8];
        first.copy_from_slice(&key_set.0[..8]);
        let start = (self.spread ^ u64::from_le_bytes(first)) as usize % n;
        self.others.iter().cycle().skip(start).take(self.others.len())
    }

    /// The key set's bytes (checked against the announced reference) from
    /// another coordinator, or `None` when none answers in time or holds it.
    async fn fetch(&self, key_set: KeySetId) -> Option<(Vec<u8>, BlobRef)> {
        for target in self.order(&key_set) {
            let started = async {
                let conn = connect(&self.endpoint, target, &self.server_name).await?;
                let (recv, blob) = request_keys(&conn, key_set).await?;
                Ok::<_, WorkerError>((conn, recv, blob))
            };
            let (conn, mut recv, blob) = match tokio::time::timeout(KEY_SOURCE_TIMEOUT, started).await {
                Ok(Ok(started)) => started,
                Ok(Err(e)) => {
                    tracing::debug!(coordinator = %target, %key_set, error = %e, "no key set from this member");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(coordinator = %target, %key_set, "key fetch timed out");
                    continue;
                }
            };
            let bytes = recv_blob(&mut recv, &blob, MAX_BLOB).await;
            conn.close(0u32.into(), b"key set received");
            match bytes {
                Ok(bytes) => {
                    tracing::info!(coordinator = %target, %key_set, bytes = bytes.len(), "key set fetched from a member");
                    return Some((bytes, blob));
                }
                Err(e) => tracing::warn!(coordinator = %target, %key_set, error = %e, "key set transfer failed"),
            }
        }
        None
    }
}

/// Asks `conn` for `key_set`: the stream the bytes follow on, and their
/// announced reference.
async fn request_keys(
    conn: &quinn::Connection,
    key_set: KeySetId,
) -> Result<(quinn::RecvStream, BlobRef), WorkerError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| WorkerError::Connection(e.to_string()))?;
    send_message(&mut send, "fetch keys", &WorkerMessage::FetchKeys { key_set }, DEFAULT_MAX_FRAME).await?;
    send.finish().map_err(|e| WorkerError::Connection(e.to_string()))?;
    match recv_message(&mut recv, "keys", DEFAULT_MAX_FRAME).await? {
        CoordinatorMessage::Keys { key_set: got, keys } if got == key_set => Ok((recv, keys)),
        other => Err(WorkerError::Unexpected(format!("{other:?} for key set {key_set}"))),
    }
}

async fn session(
    endpoint: &quinn::Endpoint,
    target: &str,
    config: &WorkerConfig,
    cache: &Arc<Mutex<KeyCache>>,
    slots: &Arc<tokio::sync::Semaphore>,
    metrics: &Arc<WorkerMetrics>,
) -> Result<SessionEnd, WorkerError> {
    let conn_err = |e: String| WorkerError::Connection(format!("{target}: {e}"));
    let conn = connect(endpoint, target, &config.server_name).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| conn_err(e.to_string()))?;
    let capabilities = Capabilities { threads: config.threads, memory_bytes: config.key_cache_bytes, gpus: vec![] };
    let cached = cache.lock().await.ids();
    send_message(&mut send, "register", &WorkerMessage::Register { capabilities, cached }, DEFAULT_MAX_FRAME).await?;
    send.finish().map_err(|e| conn_err(e.to_string()))?;
    let id = match recv_message(&mut recv, "registration", DEFAULT_MAX_FRAME).await? {
        CoordinatorMessage::Registered { worker } => worker,
        CoordinatorMessage::NotLeader { leader } => return Ok(SessionEnd::Redirect(leader)),
        other => return Err(WorkerError::Unexpected(format!("{other:?}"))),
    };
    tracing::info!(worker = id.0, coordinator = %target, "registered");
    // A random offset per session spreads workers over the other members.
    let spread = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), target);
    let sources = KeySources::new(endpoint, config, target, spread);
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(quinn::ConnectionError::LocallyClosed) => return Ok(SessionEnd::Shutdown),
            Err(quinn::ConnectionError::ApplicationClosed(close)) if close.reason.as_ref() == SHUTDOWN_REASON => {
                return Ok(SessionEnd::Shutdown)
            }
            Err(_) => return Ok(SessionEnd::Lost),
        };
        let (conn, cache, slots, metrics) = (conn.clone(), cache.clone(), slots.clone(), metrics.clone());
        let intake =
            KeyIntake { insecure: config.allow_insecure_parameters, lean: config.lean_keys, sources: sources.clone() };
        let models = config.models.clone();
        tokio::spawn(async move {
            // A failed stream is reported to the coordinator as a failed
            // task where possible; either way the worker keeps serving.
            let _ = serve_stream(id, conn, cache, slots, &metrics, intake, models, send, recv).await;
        });
    }
}

/// Where key sets come from and how they are taken in.
#[derive(Clone, Debug)]
struct KeyIntake {
    /// Accept insecure test parameters.
    insecure: bool,
    /// Keep the Galois keys lean.
    lean: bool,
    /// The coordinators to fetch them from.
    sources: KeySources,
}

#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    _id: WorkerId,
    conn: quinn::Connection,
    cache: Arc<Mutex<KeyCache>>,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: &WorkerMetrics,
    intake: KeyIntake,
    models: Option<PathBuf>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), WorkerError> {
    let task = match recv_message(&mut recv, "coordinator message", DEFAULT_MAX_FRAME).await? {
        CoordinatorMessage::Assign(task) => task,
        CoordinatorMessage::Shutdown => {
            conn.close(0u32.into(), b"shutdown");
            return Ok(());
        }
        CoordinatorMessage::ForgetKeys { key_set } => {
            let mut guard = cache.lock().await;
            if guard.remove(&key_set) {
                tracing::info!(%key_set, "key set deleted by its owner; dropped from the cache");
                metrics.key_cache_bytes.set(guard.stats().bytes as i64);
            }
            return Ok(());
        }
        other => return Err(WorkerError::Unexpected(format!("{other:?}"))),
    };
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for blob in &task.inputs {
        inputs.push(recv_blob(&mut recv, blob, MAX_BLOB).await?);
    }
    let _slot = slots.acquire_owned().await.map_err(|e| WorkerError::Unexpected(e.to_string()))?;
    // Busy and timed from here: waiting for a slot is not work.
    let _busy = Busy::start(metrics);
    let started = Instant::now();
    metrics.tasks.inc();
    let keys = keys_for(&conn, &cache, metrics, task.key_set, &intake).await;
    let keys_ms = started.elapsed().as_millis() as u64;
    let input_bytes: usize = inputs.iter().map(Vec::len).sum();
    let outcome = match keys {
        Ok(keys) => run_task(task.clone(), keys, inputs, models).await,
        Err(e) => Err((e.to_string(), true)),
    };
    match &outcome {
        // What `ops/bench/task-costs.py` reads (with the JSON log format)
        // to feed `nexus sim --costs`.
        Ok(outputs) => tracing::debug!(
            query = %task.task.query, task = task.task.index, kind = ?task.kind, model = %task.model, keys_ms,
            ms = started.elapsed().as_millis() as u64, input_bytes,
            output_bytes = outputs.iter().map(Vec::len).sum::<usize>(), "task done"
        ),
        Err((reason, _)) => {
            tracing::warn!(query = %task.task.query, task = task.task.index, kind = ?task.kind, %reason, "task failed")
        }
    }
    let (message, outputs) = match outcome {
        Ok(outputs) => {
            let refs = outputs.iter().map(|o| BlobRef::of(o)).collect();
            let micros = started.elapsed().as_micros() as u64;
            (
                WorkerMessage::TaskResult { task: task.task, outcome: TaskOutcome::Done { outputs: refs, micros } },
                outputs,
            )
        }
        Err((reason, retryable)) => {
            (WorkerMessage::TaskResult { task: task.task, outcome: TaskOutcome::Failed { reason, retryable } }, vec![])
        }
    };
    send_message(&mut send, "task result", &message, DEFAULT_MAX_FRAME).await?;
    for o in outputs {
        // The buffer goes back to the pool once quinn is done with it.
        send_blob_owned(&mut send, nexus_proto::recycle::shared(o)).await?;
    }
    send.finish().map_err(|e| WorkerError::Connection(e.to_string()))?;
    Ok(())
}

/// A running task in the busy gauge and the task-time histogram until
/// dropped (on every return path).
struct Busy<'a> {
    metrics: &'a WorkerMetrics,
    started: Instant,
}

impl<'a> Busy<'a> {
    fn start(metrics: &'a WorkerMetrics) -> Self {
        metrics.task_started();
        Self { metrics, started: Instant::now() }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.metrics.task_seconds.observe(self.started.elapsed().as_secs_f64());
        self.metrics.task_ended();
    }
}

/// The key set from the cache, fetched on a miss (from another
/// coordinator if one answers, else from the leader on `conn`).
async fn keys_for(
    conn: &quinn::Connection,
    cache: &Mutex<KeyCache>,
    metrics: &WorkerMetrics,
    key_set: KeySetId,
    intake: &KeyIntake,
) -> Result<Arc<nexus_nn::KeySet>, WorkerError> {
    let mut guard = cache.lock().await;
    if let Some(keys) = guard.get(&key_set) {
        metrics.key_cache_hits.inc();
        return Ok(keys);
    }
    metrics.key_cache_misses.inc();
    // Holding the lock while fetching makes concurrent tasks of the same key
    // set wait for one transfer instead of starting several.
    let (bytes, blob) = match intake.sources.fetch(key_set).await {
        Some(fetched) => fetched,
        None => {
            let (mut recv, blob) = request_keys(conn, key_set).await?;
            (recv_blob(&mut recv, &blob, MAX_BLOB).await?, blob)
        }
    };
    // recv_blob checked the bytes against the announced digest.
    if KeySetId::of_blob(&blob) != key_set {
        return Err(WorkerError::Unexpected(format!("key set bytes do not hash to {key_set}")));
    }
    let (insecure, lean) = (intake.insecure, intake.lean);
    let keys = tokio::task::spawn_blocking(move || {
        let keys = nexus_nn::KeySet::from_bytes(&bytes, MAX_BLOB as usize, insecure)?;
        Ok::<_, nexus_nn::NnError>(if lean { keys.lean() } else { keys })
    })
    .await
    .map_err(|e| WorkerError::Unexpected(e.to_string()))?
    .map_err(|e| WorkerError::Unexpected(format!("key set {key_set}: {e}")))?;
    let evictions = guard.stats().evictions;
    tracing::info!(%key_set, bytes = keys.memory_bytes(), "key set fetched and cached");
    let keys = guard.insert(key_set, keys);
    metrics.key_cache_evictions.inc_by(guard.stats().evictions - evictions);
    metrics.key_cache_bytes.set(guard.stats().bytes as i64);
    Ok(keys)
}

async fn run_task(
    task: TaskAssignment,
    keys: Arc<nexus_nn::KeySet>,
    inputs: Vec<Vec<u8>>,
    models: Option<PathBuf>,
) -> Result<Vec<Vec<u8>>, (String, bool)> {
    tokio::task::spawn_blocking(move || {
        let outputs = execute::execute(models.as_deref(), &task.model, &task.kind, &keys, &inputs);
        // Decoded and done with: their buffers take the next task's inputs.
        inputs.into_iter().for_each(nexus_proto::recycle::give);
        outputs
    })
    .await
    .map_err(|e| (format!("task panicked: {e}"), false))?
    .map_err(|e| (e, false))
}
