//! Nexus coordinator: accepts tenants' clients (token-authenticated) and
//! workers (certificate-authenticated) on one mutual-TLS QUIC endpoint,
//! stores key sets by content address, admits queries into a bounded
//! queue, expands each into ciphertext-level tasks and dispatches them with
//! key affinity (workers that already hold the key set first, then the
//! least loaded), retrying failed tasks elsewhere (task ids are idempotent).
//!
//! This is the cluster's first vertical slice: one coordinator (raft comes
//! with the HA issue), the `gelu` model (one task per input ciphertext).

pub mod consensus;
mod plan;
mod state;

use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::{KeySetId, QueryId, TaskId, TenantId, WorkerId};
use nexus_proto::messages::*;
use nexus_proto::metrics::CoordinatorMetrics;
use nexus_proto::quic::{recv_blob, recv_message, send_blob, send_message};
use nexus_proto::tls::{peer_is_authenticated, server_config, Identity};
use nexus_proto::ProtoError;
use quinn::rustls::pki_types::CertificateDer;
use state::{QueryRecord, State, WorkerEntry};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Mutex;

pub use nexus_proto::PROTOCOL_VERSION;
pub use state::Stats;

/// Coordinator failures.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// Protocol or transport error.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Endpoint error.
    #[error("endpoint: {0}")]
    Endpoint(String),
}

/// Coordinator configuration.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Cluster CA (workers' certificates are verified against it).
    pub ca: CertificateDer<'static>,
    /// The coordinator's certificate and key.
    pub identity: Identity,
    /// Tenant name to token.
    pub tenants: HashMap<String, String>,
    /// Queries admitted but not finished, at most.
    pub max_queued: usize,
    /// Largest blob accepted (key sets, ciphertexts).
    pub max_blob: u64,
    /// Attempts per task before the query fails.
    pub max_attempts: u32,
    /// Where to serve Prometheus `/metrics` (none: not served).
    pub metrics_listen: Option<SocketAddr>,
}

/// A running coordinator.
#[derive(Debug, Clone)]
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    state: Arc<Mutex<State>>,
    config: Arc<CoordinatorConfig>,
    metrics: CoordinatorMetrics,
    metrics_addr: Option<SocketAddr>,
}

impl Coordinator {
    /// Binds the endpoint (and the metrics endpoint) and starts accepting
    /// connections.
    pub async fn start(config: CoordinatorConfig) -> Result<Self, CoordinatorError> {
        let server = server_config(&config.ca, &config.identity)?;
        let endpoint =
            quinn::Endpoint::server(server, config.listen).map_err(|e| CoordinatorError::Endpoint(e.to_string()))?;
        let metrics = CoordinatorMetrics::new()?;
        let metrics_addr = match config.metrics_listen {
            Some(addr) => Some(nexus_proto::metrics::serve(metrics.registry.clone(), addr).await?),
            None => None,
        };
        let me = Self {
            endpoint,
            state: Arc::new(Mutex::new(State::default())),
            config: Arc::new(config),
            metrics,
            metrics_addr,
        };
        let accept = me.clone();
        tokio::spawn(async move { accept.accept_loop().await });
        Ok(me)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, CoordinatorError> {
        self.endpoint.local_addr().map_err(|e| CoordinatorError::Endpoint(e.to_string()))
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The Prometheus collectors.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// Counters so far.
    pub async fn stats(&self) -> Stats {
        self.state.lock().await.stats.clone()
    }

    /// Number of registered workers.
    pub async fn workers(&self) -> usize {
        self.state.lock().await.workers.len()
    }

    /// Asks every worker to stop and closes the endpoint.
    pub async fn shutdown(&self) {
        let conns: Vec<quinn::Connection> = self.state.lock().await.workers.iter().map(|w| w.conn.clone()).collect();
        for conn in conns {
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                let _ = send_message(&mut send, "shutdown", &CoordinatorMessage::Shutdown, DEFAULT_MAX_FRAME).await;
                let _ = send.finish();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if peer_is_authenticated(&conn) {
                    me.serve_worker(conn).await;
                } else {
                    me.serve_client(conn).await;
                }
            });
        }
    }

    async fn serve_worker(&self, conn: quinn::Connection) {
        // First stream: registration.
        let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
        let Ok(WorkerMessage::Register { capabilities, cached }) =
            recv_message::<_, WorkerMessage>(&mut recv, "worker registration", DEFAULT_MAX_FRAME).await
        else {
            conn.close(1u32.into(), b"expected registration");
            return;
        };
        let id = {
            let mut st = self.state.lock().await;
            let id = WorkerId(st.next_worker);
            st.next_worker += 1;
            st.workers.push(WorkerEntry::new(id, conn.clone(), capabilities, cached));
            self.metrics.workers.set(st.workers.len() as i64);
            id
        };
        if send_message(&mut send, "registered", &CoordinatorMessage::Registered { worker: id }, DEFAULT_MAX_FRAME)
            .await
            .is_err()
        {
            return;
        }
        let _ = send.finish();
        // Then: key fetches.
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(WorkerMessage::FetchKeys { key_set }) =
                    recv_message::<_, WorkerMessage>(&mut recv, "worker request", DEFAULT_MAX_FRAME).await
                else {
                    return;
                };
                let bytes = me.state.lock().await.key_sets.get(&key_set).cloned();
                let Some(bytes) = bytes else { return };
                let msg = CoordinatorMessage::Keys { key_set, keys: BlobRef::of(&bytes) };
                if send_message(&mut send, "keys", &msg, DEFAULT_MAX_FRAME).await.is_ok()
                    && send_blob(&mut send, &bytes).await.is_ok()
                {
                    let _ = send.finish();
                    me.metrics.key_bytes_sent.inc_by(bytes.len() as u64);
                    me.metrics.bytes_sent.inc_by(bytes.len() as u64);
                    let mut st = me.state.lock().await;
                    st.stats.key_bytes_sent += bytes.len() as u64;
                    *st.stats.key_sets_sent.entry(id.0).or_insert(0) += 1;
                    if let Some(w) = st.workers.iter_mut().find(|w| w.id == id) {
                        w.cached.insert(key_set);
                    }
                }
            });
        }
        // Connection gone: forget the worker (its running tasks are retried).
        let mut st = self.state.lock().await;
        st.workers.retain(|w| w.id != id);
        self.metrics.workers.set(st.workers.len() as i64);
    }

    async fn serve_client(&self, conn: quinn::Connection) {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let me = self.clone();
            tokio::spawn(async move {
                let reply = match recv_message::<_, ClientRequest>(&mut recv, "client request", DEFAULT_MAX_FRAME).await
                {
                    Ok(req) => me.handle(req, &mut recv).await,
                    Err(e) => Err(reply(ErrorCode::BadRequest, e.to_string())),
                };
                let (response, blobs) = match reply {
                    Ok(ok) => ok,
                    Err(err) => (ClientResponse::Error(err), vec![]),
                };
                if send_message(&mut send, "response", &response, DEFAULT_MAX_FRAME).await.is_ok() {
                    for b in &blobs {
                        if send_blob(&mut send, b).await.is_err() {
                            return;
                        }
                        me.metrics.bytes_sent.inc_by(b.len() as u64);
                    }
                    let _ = send.finish();
                }
            });
        }
    }

    fn authorize(&self, tenant: &TenantId, token: &str) -> Result<(), ErrorReply> {
        match self.config.tenants.get(tenant.as_str()) {
            Some(expected) if constant_time_eq(expected.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(reply(ErrorCode::Unauthorized, format!("unknown tenant {tenant} or wrong token"))),
        }
    }

    async fn handle(
        &self,
        req: ClientRequest,
        recv: &mut quinn::RecvStream,
    ) -> Result<(ClientResponse, Vec<Arc<Vec<u8>>>), ErrorReply> {
        let max = self.config.max_blob;
        match req {
            ClientRequest::RegisterKeySet { tenant, token, key_set, keys, .. } => {
                self.authorize(&tenant, &token)?;
                let bytes =
                    recv_blob(recv, &keys, max).await.map_err(|e| reply(ErrorCode::BadRequest, e.to_string()))?;
                self.metrics.bytes_received.inc_by(bytes.len() as u64);
                if KeySetId::of(&bytes) != key_set {
                    return Err(reply(ErrorCode::BadRequest, format!("key set bytes do not hash to {key_set}")));
                }
                let mut st = self.state.lock().await;
                let already_present = st.key_sets.contains_key(&key_set);
                st.key_sets.entry(key_set).or_insert_with(|| Arc::new(bytes));
                Ok((ClientResponse::KeySetRegistered { key_set, already_present }, vec![]))
            }
            ClientRequest::SubmitQuery { tenant, token, key_set, model, inputs } => {
                self.authorize(&tenant, &token)?;
                let chain = plan::chain(&model).map_err(|m| reply(ErrorCode::BadRequest, m))?;
                if inputs.is_empty() {
                    return Err(reply(ErrorCode::BadRequest, "a query needs at least one input ciphertext".into()));
                }
                let mut blobs = Vec::with_capacity(inputs.len());
                for b in &inputs {
                    blobs.push(Arc::new(
                        recv_blob(recv, b, max).await.map_err(|e| reply(ErrorCode::BadRequest, e.to_string()))?,
                    ));
                }
                let (query, position) = {
                    let mut st = self.state.lock().await;
                    if !st.key_sets.contains_key(&key_set) {
                        return Err(reply(ErrorCode::NotFound, format!("key set {key_set} is not registered")));
                    }
                    let pending = st.queries.values().filter(|q| !q.finished()).count();
                    if pending >= self.config.max_queued {
                        return Err(reply(ErrorCode::Busy, format!("{pending} queries pending; retry later")));
                    }
                    let query = QueryId(st.next_query);
                    st.next_query += 1;
                    st.queries.insert(query, QueryRecord::new(tenant, key_set, blobs.len(), chain.len()));
                    self.metrics.queries_admitted.inc();
                    self.metrics.queue_depth.inc();
                    self.metrics.bytes_received.inc_by(blobs.iter().map(|b| b.len() as u64).sum());
                    (query, pending as u32)
                };
                let count = blobs.len();
                for (index, input) in blobs.into_iter().enumerate() {
                    let (me, chain, model) = (self.clone(), chain.clone(), model.clone());
                    tokio::spawn(async move { me.run_chain(query, index, count, key_set, model, chain, input).await });
                }
                Ok((ClientResponse::QueryAccepted { query, position }, vec![]))
            }
            ClientRequest::Status { tenant, token, query } => {
                self.authorize(&tenant, &token)?;
                let st = self.state.lock().await;
                let q = st
                    .query_of(&tenant, query)
                    .ok_or_else(|| reply(ErrorCode::NotFound, format!("no query {query}")))?;
                Ok((ClientResponse::Status(q.status(query)), vec![]))
            }
            ClientRequest::FetchResult { tenant, token, query } => {
                self.authorize(&tenant, &token)?;
                let st = self.state.lock().await;
                let q = st
                    .query_of(&tenant, query)
                    .ok_or_else(|| reply(ErrorCode::NotFound, format!("no query {query}")))?;
                let outputs = q
                    .outputs()
                    .ok_or_else(|| reply(ErrorCode::BadRequest, format!("query {query} is not finished")))?;
                let refs = outputs.iter().map(|o| BlobRef::of(o)).collect();
                Ok((ClientResponse::Result { query, outputs: refs }, outputs))
            }
        }
    }

    /// Runs input `index`'s chain of layer tasks; each task may run on a
    /// different worker (outputs flow through the coordinator).
    #[allow(clippy::too_many_arguments)]
    async fn run_chain(
        &self,
        query: QueryId,
        index: usize,
        inputs: usize,
        key_set: KeySetId,
        model: String,
        chain: Vec<TaskKind>,
        input: Arc<Vec<u8>>,
    ) {
        let mut current = input;
        for (layer, kind) in chain.into_iter().enumerate() {
            let task = TaskId { query, index: (layer * inputs + index) as u32 };
            match self.dispatch(task, key_set, &model, kind, &current).await {
                Ok(output) => {
                    current = Arc::new(output);
                    let mut st = self.state.lock().await;
                    st.stats.tasks_done += 1;
                    if let Some(q) = st.queries.get_mut(&query) {
                        q.task_done();
                    }
                }
                Err(failure) => {
                    if let Some(q) = self.state.lock().await.queries.get_mut(&query) {
                        let was_finished = q.finished();
                        q.fail(format!("task {} (layer {layer}) failed: {failure}", task.index));
                        if !was_finished {
                            self.metrics.queries_failed.inc();
                            self.metrics.queue_depth.dec();
                        }
                    }
                    return;
                }
            }
        }
        if let Some(q) = self.state.lock().await.queries.get_mut(&query) {
            let was_finished = q.finished();
            q.complete(index, current);
            if !was_finished && q.finished() {
                self.metrics.queries_finished.inc();
                self.metrics.queue_depth.dec();
            }
        }
    }

    /// Runs one task to completion, retrying on other workers.
    async fn dispatch(
        &self,
        task: TaskId,
        key_set: KeySetId,
        model: &str,
        kind: TaskKind,
        input: &[u8],
    ) -> Result<Vec<u8>, String> {
        let mut failure = String::from("no attempt");
        let label = kind_label(&kind);
        let timer = self.metrics.task_seconds.with_label_values(&[label]).start_timer();
        for attempt in 0..self.config.max_attempts {
            let Some((worker, conn)) = self.pick_worker(key_set).await else {
                failure = "no worker available".into();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self.run_on(&conn, task, key_set, model, kind.clone(), input).await {
                Ok(output) => {
                    self.state.lock().await.release(worker, Some(key_set));
                    timer.observe_duration();
                    self.metrics.tasks.with_label_values(&[label]).inc();
                    return Ok(output);
                }
                Err((reason, retryable)) => {
                    let mut st = self.state.lock().await;
                    st.release(worker, None);
                    let retried = attempt + 1 < self.config.max_attempts && retryable;
                    st.stats.tasks_retried += u64::from(retried);
                    if retried {
                        self.metrics.tasks_retried.inc();
                    }
                    failure = reason;
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(failure)
    }

    async fn pick_worker(&self, key_set: KeySetId) -> Option<(WorkerId, quinn::Connection)> {
        let mut st = self.state.lock().await;
        let best = st.workers.iter_mut().min_by_key(|w| (!w.cached.contains(&key_set), w.running))?;
        best.running += 1;
        Some((best.id, best.conn.clone()))
    }

    async fn run_on(
        &self,
        conn: &quinn::Connection,
        task: TaskId,
        key_set: KeySetId,
        model: &str,
        kind: TaskKind,
        input: &[u8],
    ) -> Result<Vec<u8>, (String, bool)> {
        let net = |e: String| (e, true);
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| net(e.to_string()))?;
        let assign = CoordinatorMessage::Assign(TaskAssignment {
            task,
            model: model.to_string(),
            key_set,
            kind,
            inputs: vec![BlobRef::of(input)],
        });
        send_message(&mut send, "assign", &assign, DEFAULT_MAX_FRAME).await.map_err(|e| net(e.to_string()))?;
        send_blob(&mut send, input).await.map_err(|e| net(e.to_string()))?;
        send.finish().map_err(|e| net(e.to_string()))?;
        match recv_message::<_, WorkerMessage>(&mut recv, "task result", DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| net(e.to_string()))?
        {
            WorkerMessage::TaskResult { task: got, outcome: TaskOutcome::Done { outputs, .. } } if got == task => {
                let first = outputs.first().ok_or_else(|| ("task returned no output".to_string(), false))?;
                recv_blob(&mut recv, first, self.config.max_blob).await.map_err(|e| net(e.to_string()))
            }
            WorkerMessage::TaskResult { outcome: TaskOutcome::Failed { reason, retryable }, .. } => {
                Err((reason, retryable))
            }
            other => Err((format!("unexpected worker reply {other:?}"), true)),
        }
    }
}

fn kind_label(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::MatMulTile { .. } => "matmul_tile",
        TaskKind::MatMulDiagonal { .. } => "matmul_diagonal",
        TaskKind::Attention { .. } => "attention",
        TaskKind::Elementwise { op: ElementwiseOp::Gelu, .. } => "gelu",
        TaskKind::Elementwise { op: ElementwiseOp::Softmax, .. } => "softmax",
        TaskKind::Elementwise { op: ElementwiseOp::LayerNorm, .. } => "layernorm",
        TaskKind::Bootstrap => "bootstrap",
        TaskKind::ArgmaxRound { .. } => "argmax_round",
    }
}

fn reply(code: ErrorCode, message: String) -> ErrorReply {
    ErrorReply { code, message }
}

/// Token comparison whose time does not depend on where the first
/// difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
