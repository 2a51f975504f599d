//! Nexus coordinator: accepts tenants' clients (token-authenticated) and
//! workers (certificate-authenticated) on one mutual-TLS QUIC endpoint,
//! stores key sets by content address, admits queries into a bounded
//! queue, expands each into ciphertext-level tasks and hands them to
//! workers' task slots through the batcher ([`schedule`]: queued queries of
//! one key set run together on the workers holding its keys), retrying
//! failed tasks elsewhere.
//!
//! Coordinators form a raft group ([`consensus`]): key sets, admitted
//! queries and every input's checkpoint after each layer are in the
//! replicated log ([`replicated`]), so no accepted query is lost when a
//! coordinator dies. Only the leader serves clients and workers and
//! schedules; followers answer `NotLeader` with the leader's address. A new
//! leader resumes every unfinished query from its last checkpoint; a late
//! result from before the failover is ignored (checkpoints only advance by
//! one layer). A single coordinator is a group of one.

pub mod consensus;
mod keyreplication;
pub mod keystore;
pub mod limits;
pub mod plan;
pub mod replicated;
mod schedule;
mod state;

use consensus::{LogStorage, PeerAddress, ProposeError, RaftTransport, Replica, ReplicaConfig, Role};
use keyreplication::KeyReplication;
use keystore::KeyStore;
use limits::{ConnectionSlots, Limits, RequestRates, UploadBudget, UploadRefusal, UPLOAD_WAIT};
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::{KeySetId, QueryId, TaskId, TenantId, WorkerId};
use nexus_proto::messages::*;
use nexus_proto::metrics::CoordinatorMetrics;
use nexus_proto::quic::{recv_blob, recv_message, send_blob_owned, send_message, shared_bytes, Link};
use nexus_proto::tls::{peer_is_authenticated, server_config, Identity};
use nexus_proto::ProtoError;
use quinn::rustls::pki_types::CertificateDer;
use replicated::{Command, Outcome, Replicated};
use schedule::Group;
use state::{Local, Slot, WorkerEntry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

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
    /// The raft log or group could not start.
    #[error("raft: {0}")]
    Raft(String),
}

/// One member of the coordinator group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Raft id (1, 2, 3, ...).
    pub id: u64,
    /// Its raft endpoint (host:port).
    pub raft: String,
    /// Its client and worker endpoint (host:port), given to redirected
    /// clients and workers.
    pub public: String,
}

/// The raft group this coordinator belongs to.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// This coordinator's raft id.
    pub id: u64,
    /// Every member, this one included; empty: a group of one.
    pub peers: Vec<PeerConfig>,
    /// Where the raft endpoint listens (needed with peers).
    pub listen: Option<SocketAddr>,
    /// Directory of the raft log; none: in memory (a group of one that
    /// need not survive a restart, like the embedded demo).
    pub dir: Option<PathBuf>,
    /// Raft tick (elections after 8-16 ticks, heartbeats every 2).
    pub tick: Duration,
    /// Largest raft message accepted from a peer.
    pub max_message: u64,
}

impl Default for RaftSettings {
    /// A group of one, in memory.
    fn default() -> Self {
        Self { id: 1, peers: vec![], listen: None, dir: None, tick: Duration::from_millis(100), max_message: 64 << 30 }
    }
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
    /// The raft group.
    pub raft: RaftSettings,
    /// Per-tenant rate and quota, upload memory, connection count.
    pub limits: Limits,
}

/// How often a member checks that it holds every key set's bytes (and
/// none of a deleted one's).
const KEY_REPAIR_INTERVAL: Duration = Duration::from_secs(2);

/// How long telling a worker to drop a deleted key set may wait for a
/// stream (a worker busy with its maximum of streams).
const FORGET_KEYS_WITHIN: Duration = Duration::from_secs(5);

/// How long a task waits for any worker before it counts as a failed
/// attempt (workers reconnect after a failover within a few seconds).
const WORKER_WAIT: Duration = Duration::from_secs(30);

type Reply = Result<(ClientResponse, Vec<Arc<Vec<u8>>>), ErrorReply>;

/// A running coordinator.
#[derive(Debug, Clone)]
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    replica: Replica<Replicated>,
    transport: Option<RaftTransport>,
    /// Key-set bytes (the log names key sets by digest only).
    keys: KeyReplication,
    local: Arc<Mutex<Local>>,
    /// The term in which this leader finished taking over (tenants
    /// replicated, queries resumed): it serves requests only then.
    serving_term: Arc<AtomicU64>,
    config: Arc<CoordinatorConfig>,
    metrics: CoordinatorMetrics,
    metrics_addr: Option<SocketAddr>,
    rates: Arc<RequestRates>,
    uploads: UploadBudget,
    connections: ConnectionSlots,
}

impl Coordinator {
    /// Opens the raft log, joins the group, binds the endpoints and starts
    /// serving.
    pub async fn start(config: CoordinatorConfig) -> Result<Self, CoordinatorError> {
        let raft_err = |e: String| CoordinatorError::Raft(e);
        if config.limits.upload_bytes_in_flight < config.max_blob {
            return Err(CoordinatorError::Endpoint(format!(
                "the in-flight upload budget ({} bytes) is below the largest blob accepted ({} bytes)",
                config.limits.upload_bytes_in_flight, config.max_blob
            )));
        }
        let settings = &config.raft;
        let voters: Vec<u64> =
            if settings.peers.is_empty() { vec![settings.id] } else { settings.peers.iter().map(|p| p.id).collect() };
        if !voters.contains(&settings.id) {
            return Err(raft_err(format!("raft id {} is not among the peers {voters:?}", settings.id)));
        }
        // The public endpoint first: a start that fails on it leaves no
        // raft replica running behind.
        let server = server_config(&config.ca, &config.identity, Link::of_listen(config.listen))?;
        let endpoint = nexus_proto::quic::endpoint(config.listen, Some(server))
            .map_err(|e| CoordinatorError::Endpoint(e.to_string()))?;
        let (storage, store) = match &settings.dir {
            Some(dir) => (
                LogStorage::open(dir, &voters).map_err(|e| raft_err(e.to_string()))?,
                KeyStore::open(&dir.join("keys")).map_err(raft_err)?,
            ),
            None => (LogStorage::in_memory(&voters), KeyStore::in_memory()),
        };
        let others: Vec<PeerAddress> = settings
            .peers
            .iter()
            .filter(|p| p.id != settings.id)
            .map(|p| PeerAddress { id: p.id, raft: p.raft.clone() })
            .collect();
        let mut replica_config = ReplicaConfig::new(settings.id, voters.clone());
        replica_config.tick = settings.tick;
        let (transport, outbox): (_, consensus::replica::Outbox) = if voters.len() > 1 {
            let listen = settings.listen.ok_or_else(|| raft_err("a raft group needs a raft listen address".into()))?;
            let t =
                RaftTransport::bind(listen, &config.ca, &config.identity, settings.max_message).map_err(raft_err)?;
            let outbox = t.outbox(&others);
            (Some(t), outbox)
        } else {
            (None, Box::new(|_| {}))
        };
        let replica = Replica::start(replica_config, storage, Replicated::default(), outbox).map_err(raft_err)?;
        let keys = KeyReplication::new(store, transport.clone(), others, config.max_blob);
        if let Some(t) = &transport {
            let r = replica.clone();
            t.serve(move |m| r.step(m), keys.streams());
        }
        let metrics = CoordinatorMetrics::new()?;
        let metrics_addr = match config.metrics_listen {
            Some(addr) => Some(nexus_proto::metrics::serve(metrics.registry.clone(), addr).await?),
            None => None,
        };
        let me = Self {
            endpoint,
            replica,
            transport,
            keys,
            local: Arc::new(Mutex::new(Local::default())),
            serving_term: Arc::new(AtomicU64::new(0)),
            rates: Arc::new(RequestRates::new(&config.limits)),
            uploads: UploadBudget::new(config.limits.upload_bytes_in_flight),
            connections: ConnectionSlots::default(),
            config: Arc::new(config),
            metrics,
            metrics_addr,
        };
        info!(
            listen = %me.endpoint.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            raft_id = me.config.raft.id,
            peers = me.config.raft.peers.len(),
            durable = me.config.raft.dir.is_some(),
            "coordinator started"
        );
        let accept = me.clone();
        tokio::spawn(async move { accept.accept_loop().await });
        let watch = me.clone();
        tokio::spawn(async move { watch.follow_leadership().await });
        if me.transport.is_some() {
            let repair = me.clone();
            tokio::spawn(async move { repair.repair_key_sets().await });
        }
        Ok(me)
    }

    /// The bound client/worker address.
    pub fn local_addr(&self) -> Result<SocketAddr, CoordinatorError> {
        self.endpoint.local_addr().map_err(|e| CoordinatorError::Endpoint(e.to_string()))
    }

    /// The bound raft address (groups of more than one).
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.transport.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The Prometheus collectors.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.metrics
    }

    /// Where this coordinator stands in the raft group.
    pub fn role(&self) -> Role {
        self.replica.role()
    }

    /// Counters so far.
    pub async fn stats(&self) -> Stats {
        self.local.lock().await.stats.clone()
    }

    /// Number of registered workers.
    pub async fn workers(&self) -> usize {
        self.local.lock().await.workers.len()
    }

    /// Stops this coordinator. A group of one takes its workers down with
    /// it; a member of a larger group leaves them to the next leader.
    pub async fn shutdown(&self) {
        let alone = self.config.raft.peers.len() <= 1;
        if alone {
            let conns: Vec<quinn::Connection> =
                self.local.lock().await.workers.iter().map(|w| w.conn.clone()).collect();
            for conn in conns {
                if let Ok((mut send, _recv)) = conn.open_bi().await {
                    let _ = send_message(&mut send, "shutdown", &CoordinatorMessage::Shutdown, DEFAULT_MAX_FRAME).await;
                    let _ = send.finish();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.endpoint.close(0u32.into(), if alone { SHUTDOWN_REASON } else { b"coordinator stopping" });
        if let Some(t) = &self.transport {
            t.close();
        }
        self.replica.stop();
    }

    /// Fetches from peers the bytes of every key set in the log that this
    /// member lacks (it was down or in the minority when the key set was
    /// stored), so that it can serve them once it leads; removes the bytes
    /// of key sets deleted by their last owner (also when this member
    /// learnt of the deletion from a snapshot, or was down when it
    /// happened).
    async fn repair_key_sets(self) {
        let mut watch = self.replica.watch();
        loop {
            let known = self.replica.read(|s| s.key_sets.keys().copied().collect::<Vec<_>>());
            let wanted: Vec<KeySetId> = known.into_iter().filter(|k| !self.keys.contains(k)).collect();
            if !wanted.is_empty() {
                self.keys.repair(wanted).await;
            }
            // Read after the repair, which can take minutes: a key set
            // registered again meanwhile is no longer retired.
            let retired = self.replica.read(|s| s.retired_since());
            for key_set in self.keys.remove_retired(&retired).await {
                info!(%key_set, "deleted key set removed from the key store");
            }
            self.metrics.key_sets.set(self.replica.read(|s| s.key_sets.len()) as i64);
            self.metrics.key_store_bytes.set(self.keys.stored_bytes() as i64);
            if watch.borrow().stopped {
                return;
            }
            let _ = tokio::time::timeout(KEY_REPAIR_INTERVAL, watch.changed()).await;
        }
    }

    /// Reacts to leadership changes: a leader resumes every unfinished
    /// query; a deposed one drops its workers (they find the new leader).
    async fn follow_leadership(self) {
        let mut watch = self.replica.watch();
        let mut led_term = None;
        loop {
            let role = watch.borrow_and_update().clone();
            self.metrics.raft_term.set(role.term as i64);
            // Leading means serving: elected and done taking over.
            let serving = role.leader_ready && self.serving_term.load(Ordering::SeqCst) == role.term;
            self.metrics.raft_leader.set(i64::from(serving));
            if role.leader_ready && led_term != Some(role.term) {
                led_term = Some(role.term);
                self.metrics.raft_leader_changes.inc();
                // This leader's tenant configuration becomes everyone's
                // before it serves a request.
                let tenants = self.configured_tenants();
                if self.replica.read(|s| s.tenants != tenants)
                    && self.propose(&Command::SetTenants { tenants }).await.is_err()
                {
                    // Lost leadership meanwhile, or retry the takeover.
                    led_term = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                self.serving_term.store(role.term, Ordering::SeqCst);
                self.metrics.raft_leader.set(1);
                let unfinished = self.replica.read(|s| s.unfinished());
                info!(term = role.term, resumed_queries = unfinished.len(), "leading");
                self.metrics.queries_resumed.inc_by(unfinished.len() as u64);
                self.metrics.queue_depth.set(self.replica.read(|s| s.pending()) as i64);
                for query in unfinished {
                    self.start_query(query).await;
                }
            } else if !role.leader_ready && led_term.is_some() {
                info!(term = role.term, leader = role.leader, "no longer leading; dropping workers");
                led_term = None;
                let mut local = self.local.lock().await;
                for w in local.workers.drain(..) {
                    w.conn.close(3u32.into(), b"not the leader any more");
                }
                self.metrics.workers.set(0);
            }
            if role.stopped || watch.changed().await.is_err() {
                return;
            }
        }
    }

    /// The leader's public address, for redirects.
    fn leader_hint(&self, role: &Role) -> Option<String> {
        self.config.raft.peers.iter().find(|p| p.id == role.leader && role.leader != 0).map(|p| p.public.clone())
    }

    /// Ok if this coordinator leads (waiting briefly for a fresh election
    /// to settle), else the `NotLeader` reply naming the leader.
    async fn require_leader(&self) -> Result<(), ErrorReply> {
        let mut watch = self.replica.watch();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let role = watch.borrow_and_update().clone();
            if role.leader_ready && self.serving_term.load(Ordering::SeqCst) == role.term {
                return Ok(());
            }
            let leader_elsewhere = role.leader != 0 && role.leader != self.replica.id();
            if leader_elsewhere || role.stopped || tokio::time::Instant::now() >= deadline {
                let hint = self.leader_hint(&role).filter(|_| leader_elsewhere);
                let message = match &hint {
                    Some(addr) => format!("not the leader; the leader is at {addr}"),
                    None => "not the leader; no leader is ready yet, retry".to_string(),
                };
                return Err(ErrorReply { code: ErrorCode::NotLeader, message, leader: hint });
            }
            // Role changes wake this at once; taking over (tenants,
            // resumption) is polled.
            let _ = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        }
    }

    /// Replicates a command; the error is the reply to give a client.
    async fn propose(&self, command: &Command) -> Result<Outcome, ErrorReply> {
        let data = command.encode().map_err(|m| reply(ErrorCode::Internal, m))?;
        match self.replica.propose(data).await {
            Ok(outcome) => Ok(outcome),
            Err(ProposeError::NotLeader(_)) => {
                let role = self.replica.role();
                let hint = self.leader_hint(&role);
                Err(ErrorReply { code: ErrorCode::NotLeader, message: "leadership moved; retry".into(), leader: hint })
            }
            Err(e) => Err(reply(ErrorCode::NotLeader, format!("{e}; retry with the same request id"))),
        }
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let Some(slot) = self.connections.take(self.config.limits.max_client_connections) else {
                warn!(remote = %incoming.remote_address(), "connection refused: connection limit reached");
                self.metrics.connections_refused.inc();
                incoming.refuse();
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
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
        // First stream: registration, or a key fetch on a connection that
        // only fetches key sets (from any member: see `serve_key_fetch`).
        let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
        let (capabilities, cached) =
            match recv_message::<_, WorkerMessage>(&mut recv, "worker registration", DEFAULT_MAX_FRAME).await {
                Ok(WorkerMessage::Register { capabilities, cached }) => (capabilities, cached),
                Ok(WorkerMessage::FetchKeys { key_set }) => {
                    info!(remote = %conn.remote_address(), %key_set, "key-set fetch from a worker");
                    self.serve_key_fetch(send, key_set, None).await;
                    self.serve_key_fetches(&conn, None).await;
                    return;
                }
                _ => {
                    conn.close(1u32.into(), b"expected registration");
                    return;
                }
            };
        if let Err(e) = self.require_leader().await {
            let _ = send_message(
                &mut send,
                "redirect",
                &CoordinatorMessage::NotLeader { leader: e.leader },
                DEFAULT_MAX_FRAME,
            )
            .await;
            let _ = send.finish();
            let _ = send.stopped().await;
            return;
        }
        let (id, deleted) = {
            let mut local = self.local.lock().await;
            // A worker that was away when a key set it caches was deleted
            // drops it once registered; a deletion after this point finds
            // the worker in the list.
            let (cached, deleted): (Vec<KeySetId>, Vec<KeySetId>) =
                self.replica.read(|s| cached.into_iter().partition(|k| s.key_sets.contains_key(k)));
            let id = WorkerId(local.next_worker);
            local.next_worker += 1;
            local.workers.push(WorkerEntry::new(id, conn.clone(), capabilities, cached));
            self.metrics.workers.set(local.workers.len() as i64);
            // Tasks waiting for a slot start on the new worker.
            local.fill(id, self.config.limits.batch_tasks);
            self.schedule_metrics(&local);
            (id, deleted)
        };
        info!(worker = id.0, remote = %conn.remote_address(), "worker registered");
        if send_message(&mut send, "registered", &CoordinatorMessage::Registered { worker: id }, DEFAULT_MAX_FRAME)
            .await
            .is_err()
        {
            return;
        }
        let _ = send.finish();
        for key_set in deleted {
            self.forget_keys_on(&conn, key_set).await;
        }
        self.serve_key_fetches(&conn, Some(id)).await;
        // Connection gone (or silent past the idle timeout): forget the
        // worker; its running tasks fail and are retried elsewhere.
        warn!(worker = id.0, reason = ?conn.close_reason(), "worker gone");
        let mut local = self.local.lock().await;
        local.workers.retain(|w| w.id != id);
        self.metrics.workers.set(local.workers.len() as i64);
    }

    /// Serves the key fetches a worker's connection opens until it closes
    /// (`id`: the worker registered on it, if any).
    async fn serve_key_fetches(&self, conn: &quinn::Connection, id: Option<WorkerId>) {
        while let Ok((send, mut recv)) = conn.accept_bi().await {
            let me = self.clone();
            tokio::spawn(async move {
                if let Ok(WorkerMessage::FetchKeys { key_set }) =
                    recv_message::<_, WorkerMessage>(&mut recv, "worker request", DEFAULT_MAX_FRAME).await
                {
                    me.serve_key_fetch(send, key_set, id).await;
                }
            });
        }
    }

    /// Streams a key set to a worker. Any member serves it, leader or
    /// not: key sets are content-addressed and every member's key store
    /// holds them (or fetches them from a peer), so workers can take them
    /// from followers and leave the leader's CPU and link to the tasks. A
    /// key set this member does not know yet ends the stream without a
    /// reply (the worker then asks another member).
    async fn serve_key_fetch(&self, mut send: quinn::SendStream, key_set: KeySetId, id: Option<WorkerId>) {
        let worker = id.map(|w| w.0);
        if !self.replica.read(|s| s.key_sets.contains_key(&key_set)) {
            warn!(?worker, key_set = %key_set, "worker asked for an unknown key set");
            return;
        }
        let stored = match self.keys.get(key_set).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                warn!(?worker, key_set = %key_set, "no coordinator holds the key set's bytes");
                return;
            }
            Err(e) => {
                warn!(?worker, key_set = %key_set, error = %e, "reading the key set");
                return;
            }
        };
        // The key set's id is its bytes' digest, announced as is; the store
        // checks what it reads from disk against it while sending.
        let len = stored.len();
        let keys = BlobRef { len, digest: key_set.0 };
        let msg = CoordinatorMessage::Keys { key_set, keys };
        if send_message(&mut send, "keys", &msg, DEFAULT_MAX_FRAME).await.is_err() {
            return;
        }
        if let Err(e) = self.keys.send(key_set, stored, &mut send).await {
            warn!(?worker, key_set = %key_set, error = %e, "sending the key set");
            let _ = send.reset(quinn::VarInt::from_u32(0));
            return;
        }
        let _ = send.finish();
        self.metrics.key_bytes_sent.inc_by(len);
        self.metrics.bytes_sent.inc_by(len);
        let mut local = self.local.lock().await;
        local.stats.key_bytes_sent += len;
        if let Some(id) = id {
            *local.stats.key_sets_sent.entry(id.0).or_insert(0) += 1;
            if let Some(w) = local.workers.iter_mut().find(|w| w.id == id) {
                w.cached.insert(key_set);
            }
        }
    }

    async fn serve_client(&self, conn: quinn::Connection) {
        let remote = conn.remote_address();
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
                    Err(err) => {
                        match err.code {
                            ErrorCode::Busy
                            | ErrorCode::RateLimited
                            | ErrorCode::QuotaExceeded
                            | ErrorCode::InUse
                            | ErrorCode::NotLeader => {
                                debug!(code = ?err.code, reason = %err.message, "request refused")
                            }
                            _ => {
                                info!(code = ?err.code, reason = %err.message, %remote, "request refused")
                            }
                        }
                        me.metrics.requests_refused.with_label_values(&[&format!("{:?}", err.code)]).inc();
                        (ClientResponse::Error(err), vec![])
                    }
                };
                if send_message(&mut send, "response", &response, DEFAULT_MAX_FRAME).await.is_ok() {
                    for b in blobs {
                        let len = b.len() as u64;
                        if send_blob_owned(&mut send, shared_bytes(b)).await.is_err() {
                            return;
                        }
                        me.metrics.bytes_sent.inc_by(len);
                    }
                    let _ = send.finish();
                }
            });
        }
    }

    /// Redirects to the leader unless this coordinator leads, then
    /// authorizes there. In this order because only a leader that has
    /// finished taking over is sure to hold the configured tenant table: a
    /// follower (or a leader just elected in a fresh cluster) may not have
    /// applied it yet and would refuse a valid token.
    async fn authorize_on_leader(&self, tenant: &TenantId, token: &str) -> Result<(), ErrorReply> {
        self.require_leader().await?;
        self.authorize(tenant, token)
    }

    /// Checks the token against the replicated tenant table, then takes
    /// one request from the tenant's rate.
    fn authorize(&self, tenant: &TenantId, token: &str) -> Result<(), ErrorReply> {
        if !self.replica.read(|s| s.authorize(tenant, token)) {
            return Err(reply(ErrorCode::Unauthorized, format!("unknown tenant {tenant} or wrong token")));
        }
        self.rates.take(tenant, std::time::Instant::now()).map_err(|wait| {
            reply(
                ErrorCode::RateLimited,
                format!(
                    "tenant {tenant} exceeds its {} requests per second; retry in {} ms",
                    self.config.limits.requests_per_second,
                    wait.as_millis().max(1)
                ),
            )
        })
    }

    /// Room in the in-flight upload budget for blobs of these sizes.
    async fn reserve_upload(&self, blobs: &[&BlobRef]) -> Result<tokio::sync::OwnedSemaphorePermit, ErrorReply> {
        let bytes = blobs.iter().fold(0u64, |acc, b| acc.saturating_add(b.len));
        self.uploads.reserve(bytes, UPLOAD_WAIT).await.map_err(|refusal| match refusal {
            UploadRefusal::TooLarge(m) => reply(ErrorCode::BadRequest, m),
            UploadRefusal::Busy(m) => reply(ErrorCode::Busy, m),
        })
    }

    /// The configured tenants as a replicated table (token hashes).
    fn configured_tenants(&self) -> BTreeMap<TenantId, replicated::TokenHash> {
        self.config
            .tenants
            .iter()
            .filter_map(|(name, token)| Some((TenantId::new(name).ok()?, replicated::token_hash(token))))
            .collect()
    }

    async fn handle(&self, req: ClientRequest, recv: &mut quinn::RecvStream) -> Reply {
        let max = self.config.max_blob;
        match req {
            ClientRequest::RegisterKeySet { tenant, token, key_set, keys, params_digest } => {
                self.authorize_on_leader(&tenant, &token).await?;
                // The id is the bytes' digest: refused before any byte is read.
                if KeySetId::of_blob(&keys) != key_set {
                    return Err(reply(ErrorCode::BadRequest, format!("key set bytes do not hash to {key_set}")));
                }
                // In memory, an upload takes its size until it is stored;
                // on disk, one chunk at a time.
                let _room = match self.keys.in_memory_only() {
                    true => Some(self.reserve_upload(&[&keys]).await?),
                    false => None,
                };
                let len = keys.len;
                // Checked against the digest even when already stored: a
                // tenant proves it holds the bytes, not only their id.
                self.keys.receive(key_set, len, recv).await.map_err(|e| match e {
                    keystore::ReceiveError::Refused(e) => reply(ErrorCode::BadRequest, e.to_string()),
                    keystore::ReceiveError::Storage(e) => {
                        reply(ErrorCode::Internal, format!("storing the key set: {e}"))
                    }
                })?;
                self.metrics.bytes_received.inc_by(len);
                let owned = self.replica.read(|s| s.key_sets.get(&key_set).is_some_and(|k| k.owners.contains(&tenant)));
                if owned {
                    return Ok((ClientResponse::KeySetRegistered { key_set, already_present: true }, vec![]));
                }
                self.keys
                    .store_on_majority(key_set)
                    .await
                    .map_err(|e| reply(ErrorCode::Internal, format!("storing the key set: {e}")))?;
                match self.propose(&Command::RegisterKeySet { tenant, key_set, params_digest, len }).await? {
                    Outcome::KeySetRegistered { already_present } => {
                        Ok((ClientResponse::KeySetRegistered { key_set, already_present }, vec![]))
                    }
                    other => Err(refusal(other)),
                }
            }
            ClientRequest::DeleteKeySet { tenant, token, key_set } => {
                self.authorize_on_leader(&tenant, &token).await?;
                match self.propose(&Command::DeleteKeySet { tenant: tenant.clone(), key_set }).await? {
                    Outcome::KeySetDeleted { retired } => {
                        info!(%tenant, %key_set, retired, "key set deleted by its owner");
                        if retired {
                            // In the background: the reply does not wait
                            // for a large file's removal or slow workers.
                            let me = self.clone();
                            tokio::spawn(async move { me.retire_key_set(key_set).await });
                        }
                        Ok((ClientResponse::KeySetDeleted { key_set }, vec![]))
                    }
                    other => Err(refusal(other)),
                }
            }
            ClientRequest::SubmitQuery { tenant, token, key_set, model, inputs, request } => {
                self.authorize_on_leader(&tenant, &token).await?;
                let count = inputs.len().min(u32::MAX as usize) as u32;
                let graph = plan::graph(&model, count).map_err(|m| reply(ErrorCode::BadRequest, m))?;
                let _room = self.reserve_upload(&inputs.iter().collect::<Vec<_>>()).await?;
                let mut blobs = Vec::with_capacity(inputs.len());
                for b in &inputs {
                    let bytes =
                        recv_blob(recv, b, max).await.map_err(|e| reply(ErrorCode::BadRequest, e.to_string()))?;
                    blobs.push(serde_bytes::ByteBuf::from(bytes));
                }
                self.metrics.bytes_received.inc_by(blobs.iter().map(|b| b.len() as u64).sum());
                // Inputs must be ciphertexts at the key set's parameters: a
                // mismatch is refused here rather than failing on a worker.
                let expected = self.replica.read(|s| s.key_sets.get(&key_set).map(|k| k.params_digest));
                if let Some(expected) = expected {
                    for (i, b) in blobs.iter().enumerate() {
                        if ciphertext_params_digest(b) != Some(expected) {
                            return Err(reply(
                                ErrorCode::BadRequest,
                                format!("input {i} is not a ciphertext at the parameters of key set {key_set}"),
                            ));
                        }
                    }
                }
                let command = Command::Admit {
                    query: QueryId(rand::random::<u64>().max(1)),
                    request,
                    tenant,
                    key_set,
                    model,
                    layers: graph.stages,
                    max_pending: self.config.max_queued.min(u32::MAX as usize) as u32,
                    max_held_per_tenant: self.config.limits.max_held_per_tenant,
                    admitted_ms: unix_ms(),
                    inputs: blobs,
                };
                match self.propose(&command).await? {
                    Outcome::Admitted { query, position, replayed } => {
                        if !replayed {
                            self.metrics.queries_admitted.inc();
                            info!(%query, inputs = count, position, "query admitted");
                        }
                        self.metrics.queue_depth.set(self.replica.read(|s| s.pending()) as i64);
                        // Also on a replay: the first attempt's reply may
                        // have been lost before its tasks started (a query
                        // already running here is not started twice).
                        self.start_query(query).await;
                        Ok((ClientResponse::QueryAccepted { query, position }, vec![]))
                    }
                    other => Err(refusal(other)),
                }
            }
            ClientRequest::Status { tenant, token, query } => {
                self.authorize_on_leader(&tenant, &token).await?;
                self.replica.read(|s| {
                    let q = s
                        .query_of(&tenant, query)
                        .ok_or_else(|| reply(ErrorCode::NotFound, format!("no query {query}")))?;
                    Ok((ClientResponse::Status(q.status(query, s.position(q))), vec![]))
                })
            }
            ClientRequest::FetchResult { tenant, token, query } => {
                self.authorize_on_leader(&tenant, &token).await?;
                self.replica.read(|s| {
                    let q = s
                        .query_of(&tenant, query)
                        .ok_or_else(|| reply(ErrorCode::NotFound, format!("no query {query}")))?;
                    if let Some(reason) = &q.failed {
                        return Err(reply(ErrorCode::BadRequest, format!("query {query} failed: {reason}")));
                    }
                    if !q.done() {
                        return Err(reply(ErrorCode::BadRequest, format!("query {query} is not finished")));
                    }
                    let outputs = q.outputs();
                    let refs = outputs.iter().map(|o| BlobRef::of(o)).collect();
                    Ok((ClientResponse::Result { query, outputs: refs }, outputs))
                })
            }
            ClientRequest::Release { tenant, token, query } => {
                self.authorize_on_leader(&tenant, &token).await?;
                match self.propose(&Command::Release { tenant, query }).await? {
                    Outcome::Released => {
                        info!(%query, "query released");
                        self.metrics.queue_depth.set(self.replica.read(|s| s.pending()) as i64);
                        Ok((ClientResponse::Released { query }, vec![]))
                    }
                    other => Err(refusal(other)),
                }
            }
        }
    }

    /// Removes a key set no tenant owns any more from this member's store
    /// at once (the other members do at their next check, every
    /// [`KEY_REPAIR_INTERVAL`]) and from the caches of this leader's
    /// workers. Like the members' checks, it keeps bytes received after
    /// the deletion (the key set is being registered again).
    async fn retire_key_set(&self, key_set: KeySetId) {
        let retired = self.replica.read(|s| s.retired_since()).into_iter().filter(|(k, _)| *k == key_set);
        self.keys.remove_retired(&retired.collect::<Vec<_>>()).await;
        // Every worker is told: one may hold it without this leader knowing
        // yet (fetched from a follower, no task finished since).
        let conns: Vec<quinn::Connection> = {
            let mut local = self.local.lock().await;
            let mut conns = Vec::with_capacity(local.workers.len());
            for w in local.workers.iter_mut() {
                w.cached.remove(&key_set);
                conns.push(w.conn.clone());
            }
            conns
        };
        for conn in conns {
            self.forget_keys_on(&conn, key_set).await;
        }
    }

    /// Tells a worker to drop `key_set` from its cache (best effort: a
    /// worker that misses it is told when it registers again).
    async fn forget_keys_on(&self, conn: &quinn::Connection, key_set: KeySetId) {
        let message = CoordinatorMessage::ForgetKeys { key_set };
        let sent = match tokio::time::timeout(FORGET_KEYS_WITHIN, conn.open_bi()).await {
            Ok(Ok((mut send, _recv))) => send_message(&mut send, "forget keys", &message, DEFAULT_MAX_FRAME)
                .await
                .map_err(|e| e.to_string())
                .and_then(|()| send.finish().map_err(|e| e.to_string())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no stream within {FORGET_KEYS_WITHIN:?}")),
        };
        if let Err(e) = sent {
            warn!(%key_set, remote = %conn.remote_address(), error = %e, "telling a worker to drop a deleted key set");
        }
    }

    /// Starts driving `query` unless already driven here.
    async fn start_query(&self, query: QueryId) {
        if !self.local.lock().await.running.insert(query) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.run_query(query).await;
            me.local.lock().await.running.remove(&query);
        });
    }

    /// Runs `query`'s unfinished tasks, every task whose inputs are ready
    /// at once, recording a checkpoint after each (outputs flow through the
    /// coordinator, each task may run on a different worker). Stops when
    /// the query finishes, fails, or this coordinator stops leading.
    async fn run_query(&self, query: QueryId) {
        // Digests of the values this loop received (recv_blob checked them
        // against the bytes as they arrived); others are hashed once.
        let mut known: HashMap<u64, Vec<BlobRef>> = HashMap::new();
        let mut running: tokio::task::JoinSet<(u32, Result<Vec<Received>, Dispatch>)> = tokio::task::JoinSet::new();
        let mut in_flight: HashSet<u32> = HashSet::new();
        loop {
            let next = self.replica.read(|s| {
                let q = s.queries.get(&query).filter(|q| !q.finished())?;
                Some((q.key_set, q.model.clone(), q.inputs, q.finished.clone(), q.values.clone()))
            });
            let Some((key_set, model, inputs, finished, values)) = next else { break };
            let Ok(graph) = plan::graph(&model, inputs) else { break };
            let mut missing = None;
            for node in graph.ready(&finished) {
                if in_flight.contains(&node) {
                    continue;
                }
                let spec = &graph.nodes[node as usize];
                let mut task_inputs = Vec::new();
                for source in &spec.sources {
                    // A ready task's sources are held until it finishes.
                    let Some(blobs) = values.get(&source.key()) else {
                        missing = Some(format!("task {node}: its input {source:?} is not in the state"));
                        break;
                    };
                    let refs = known.remove(&source.key()).filter(|r| r.len() == blobs.0.len());
                    let refs = refs.unwrap_or_else(|| blobs.0.iter().map(|b| BlobRef::of(b)).collect());
                    task_inputs.extend(refs.iter().copied().zip(blobs.0.iter().cloned()));
                    known.insert(source.key(), refs);
                }
                if missing.is_some() {
                    break;
                }
                let task = TaskId { query, index: node };
                let (me, model, kind) = (self.clone(), model.clone(), spec.kind.clone());
                in_flight.insert(node);
                running.spawn(async move { (node, me.dispatch(task, key_set, &model, kind, task_inputs).await) });
            }
            if let Some(reason) = missing {
                self.fail(query, reason).await;
                break;
            }
            let Some(joined) = running.join_next().await else { break };
            let Ok((node, result)) = joined else { break };
            in_flight.remove(&node);
            match result {
                Ok(outputs) => {
                    let kind = &graph.nodes[node as usize].kind;
                    if outputs.is_empty()
                        && !matches!(kind, TaskKind::EncoderStep { step: EncoderStep::FeedForwardIn { .. }, .. })
                    {
                        self.fail(query, format!("task {node} ({}) returned no output", kind_label(kind))).await;
                        break;
                    }
                    known.insert(plan::Source::Task(node).key(), outputs.iter().map(|(r, _)| *r).collect());
                    let outputs = outputs.into_iter().map(|(_, b)| serde_bytes::ByteBuf::from(b)).collect();
                    let command = Command::Checkpoint { query, task: node, outputs };
                    match self.propose(&command).await {
                        Ok(Outcome::Checkpointed { completed, .. }) => {
                            self.local.lock().await.stats.tasks_done += 1;
                            if completed {
                                info!(%query, "query finished");
                                self.metrics.queries_finished.inc();
                                let admitted = self.replica.read(|s| s.queries.get(&query).map(|q| q.admitted_ms));
                                if let Some(at) = admitted {
                                    self.metrics.query_seconds.observe(unix_ms().saturating_sub(at) as f64 / 1e3);
                                }
                            }
                            self.metrics.queue_depth.set(self.replica.read(|s| s.pending()) as i64);
                        }
                        _ => break,
                    }
                }
                Err(Dispatch::Abandoned) => break,
                Err(Dispatch::Failed(failure)) => {
                    let kind = kind_label(&graph.nodes[node as usize].kind);
                    self.fail(query, format!("task {node} ({kind}) failed: {failure}")).await;
                    break;
                }
            }
        }
        // A failed, released or abandoned query's tasks still running finish
        // on their own (aborting them would skip handing their workers'
        // slots back); their outputs are dropped.
        running.detach_all();
    }

    /// Records that `query` cannot finish.
    async fn fail(&self, query: QueryId, reason: String) {
        warn!(%query, %reason, "query failed");
        if self.propose(&Command::Fail { query, reason }).await.is_ok() {
            self.metrics.queries_failed.inc();
            self.metrics.queue_depth.set(self.replica.read(|s| s.pending()) as i64);
        }
    }

    /// Runs one task to completion, retrying elsewhere. Only failures the
    /// worker reports count against `max_attempts`; a lost worker (killed,
    /// or silent past the idle timeout) costs no attempt, up to
    /// [`MAX_LOST`] losses per task.
    async fn dispatch(
        &self,
        task: TaskId,
        key_set: KeySetId,
        model: &str,
        kind: TaskKind,
        inputs: Vec<Sent>,
    ) -> Result<Vec<Received>, Dispatch> {
        let label = kind_label(&kind);
        let timer = self.metrics.task_seconds.with_label_values(&[label]).start_timer();
        let (mut failed, mut lost) = (0u32, 0u32);
        loop {
            let group = Group { key_set, model: model.to_string() };
            let Some((worker, conn)) = self.acquire(group).await? else {
                return Err(Dispatch::Failed(format!("no worker registered for {} s", WORKER_WAIT.as_secs())));
            };
            debug!(query = %task.query, task = task.index, worker = worker.0, kind = label, "task dispatched");
            let failure = match self.run_on(&conn, task, key_set, model, (kind.clone(), &inputs)).await {
                Ok(output) => {
                    self.release(worker, Some(key_set)).await;
                    timer.observe_duration();
                    self.metrics.tasks.with_label_values(&[label]).inc();
                    return Ok(output);
                }
                Err(f) => f,
            };
            let mut local = self.local.lock().await;
            if matches!(failure, Failure::Lost(_)) && conn.close_reason().is_some() {
                // Forget a dead worker now rather than when its connection
                // task notices (and before its slot could go to a waiting
                // task).
                local.workers.retain(|w| w.id != worker);
                self.metrics.workers.set(local.workers.len() as i64);
            }
            local.release(worker, None, self.config.limits.batch_tasks);
            self.schedule_metrics(&local);
            let give_up = match &failure {
                Failure::Lost(_) => {
                    lost += 1;
                    lost >= MAX_LOST
                }
                Failure::Reported { retryable, .. } => {
                    failed += 1;
                    !retryable || failed >= self.config.max_attempts
                }
            };
            warn!(
                query = %task.query, task = task.index, worker = worker.0, %failure, retry = !give_up,
                "task attempt failed"
            );
            if give_up {
                return Err(Dispatch::Failed(failure.to_string()));
            }
            local.stats.tasks_retried += 1;
            self.metrics.tasks_retried.inc();
        }
    }

    /// A task slot for a task of `group` (see [`Local::acquire`]), waiting
    /// for one while every slot is taken; `None` once no worker has been
    /// registered for [`WORKER_WAIT`], `Abandoned` once this coordinator
    /// no longer leads.
    async fn acquire(&self, group: Group) -> Result<Option<(WorkerId, quinn::Connection)>, Dispatch> {
        let (mut id, mut rx) = {
            let mut local = self.local.lock().await;
            let slot = local.acquire(group.clone());
            self.schedule_metrics(&local);
            match slot {
                Slot::Now(g) => return Ok(Some((g.worker, g.conn))),
                Slot::Queued(id, rx) => (id, rx),
            }
        };
        let mut no_worker_since: Option<tokio::time::Instant> = None;
        loop {
            let dropped = match tokio::time::timeout(Duration::from_millis(200), &mut rx).await {
                Ok(Ok(g)) => return Ok(Some((g.worker, g.conn))),
                Ok(Err(_)) => true,
                Err(_) => false,
            };
            let leading = self.replica.role().leader_ready;
            let mut local = self.local.lock().await;
            if dropped {
                // Not expected (only this task cancels its place), but
                // never spin on a closed channel: queue again.
                (id, rx) = local.waiting.push(group.clone());
            }
            let now = tokio::time::Instant::now();
            no_worker_since = if local.workers.is_empty() { no_worker_since.or(Some(now)) } else { None };
            let waited_out = no_worker_since.is_some_and(|since| now - since >= WORKER_WAIT);
            if leading && !waited_out {
                continue;
            }
            // Stop waiting; a slot given meanwhile goes back.
            local.waiting.cancel(id);
            rx.close();
            if let Ok(g) = rx.try_recv() {
                local.release(g.worker, None, self.config.limits.batch_tasks);
            }
            self.schedule_metrics(&local);
            return if leading { Ok(None) } else { Err(Dispatch::Abandoned) };
        }
    }

    /// A task left `worker` (on success it now holds `key_set`); its slot
    /// goes to a waiting task.
    async fn release(&self, worker: WorkerId, key_set: Option<KeySetId>) {
        let mut local = self.local.lock().await;
        local.release(worker, key_set, self.config.limits.batch_tasks);
        self.schedule_metrics(&local);
    }

    /// The batcher's gauges from `local`.
    fn schedule_metrics(&self, local: &Local) {
        self.metrics.tasks_waiting.set(local.waiting.len() as i64);
        let reported = self.metrics.key_set_switches.get();
        self.metrics.key_set_switches.inc_by(local.stats.key_set_switches.saturating_sub(reported));
    }

    async fn run_on(
        &self,
        conn: &quinn::Connection,
        task: TaskId,
        key_set: KeySetId,
        model: &str,
        (kind, inputs): (TaskKind, &[Sent]),
    ) -> Result<Vec<Received>, Failure> {
        let lost = |e: String| Failure::Lost(e);
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        let assign = CoordinatorMessage::Assign(TaskAssignment {
            task,
            model: model.to_string(),
            key_set,
            kind,
            inputs: inputs.iter().map(|(r, _)| *r).collect(),
        });
        send_message(&mut send, "assign", &assign, DEFAULT_MAX_FRAME).await.map_err(|e| lost(e.to_string()))?;
        for (_, bytes) in inputs {
            send_blob_owned(&mut send, shared_bytes(bytes.clone())).await.map_err(|e| lost(e.to_string()))?;
        }
        send.finish().map_err(|e| lost(e.to_string()))?;
        match recv_message::<_, WorkerMessage>(&mut recv, "task result", DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| lost(e.to_string()))?
        {
            WorkerMessage::TaskResult { task: got, outcome: TaskOutcome::Done { outputs, .. } } if got == task => {
                let mut received = Vec::with_capacity(outputs.len());
                for blob in outputs {
                    let bytes =
                        recv_blob(&mut recv, &blob, self.config.max_blob).await.map_err(|e| lost(e.to_string()))?;
                    received.push((blob, bytes));
                }
                Ok(received)
            }
            WorkerMessage::TaskResult { outcome: TaskOutcome::Failed { reason, retryable }, .. } => {
                Err(Failure::Reported { reason, retryable })
            }
            other => Err(Failure::Reported { reason: format!("unexpected worker reply {other:?}"), retryable: true }),
        }
    }
}

/// A task's input: its digest and the shared bytes.
type Sent = (BlobRef, Arc<Vec<u8>>);

/// A task's output as received (checked against its digest).
type Received = (BlobRef, Vec<u8>);

/// Connection losses tolerated per task.
const MAX_LOST: u32 = 8;

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// The worker's connection broke.
    Lost(String),
    /// The worker ran the task and reported a failure.
    Reported { reason: String, retryable: bool },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lost(e) => write!(f, "worker lost: {e}"),
            Failure::Reported { reason, .. } => f.write_str(reason),
        }
    }
}

/// Why a task has no output.
enum Dispatch {
    /// Every attempt failed.
    Failed(String),
    /// This coordinator stopped leading; the new leader runs it.
    Abandoned,
}

fn kind_label(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::MatMulTile { .. } => "matmul_tile",
        TaskKind::MatMulDiagonal { .. } => "matmul_diagonal",
        TaskKind::Attention { .. } => "attention",
        TaskKind::Elementwise { op: ElementwiseOp::Gelu, .. } => "gelu",
        TaskKind::Elementwise { op: ElementwiseOp::Softmax, .. } => "softmax",
        TaskKind::Elementwise { op: ElementwiseOp::LayerNorm, .. } => "layernorm",
        TaskKind::EncoderLayer { .. } => "encoder_layer",
        TaskKind::MeanPool => "mean_pool",
        TaskKind::Bootstrap => "bootstrap",
        TaskKind::ArgmaxRound { .. } => "argmax_round",
        TaskKind::MatMulAssemble { .. } => "matmul_assemble",
        TaskKind::HeadLogits => "head_logits",
        TaskKind::ArgmaxMask => "argmax_mask",
        TaskKind::EncoderStep { step, .. } => match step {
            EncoderStep::Input => "bootstrap",
            EncoderStep::Query | EncoderStep::Key | EncoderStep::Value => "projection",
            EncoderStep::Attention => "attention",
            EncoderStep::AttentionOutput => "attention_output",
            EncoderStep::FeedForwardIn { .. } => "matmul_tile",
            EncoderStep::Gelu => "gelu",
            EncoderStep::FeedForwardOut => "feed_forward_out",
        },
    }
}

/// The parameter digest in a CKKS ciphertext's wire header (nexus-ckks
/// `wire`: magic `NXCK`, version, kind, reserved, then the digest at bytes
/// 8..40); `None` if the bytes do not start like a ciphertext.
fn ciphertext_params_digest(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.get(..4)? != b"NXCK" {
        return None;
    }
    bytes.get(8..40)?.try_into().ok()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn reply(code: ErrorCode, message: String) -> ErrorReply {
    ErrorReply { code, message, leader: None }
}

/// The client's reply for an outcome that is not the one asked for.
fn refusal(outcome: Outcome) -> ErrorReply {
    match outcome {
        Outcome::Rejected(code, message) => reply(code, message),
        other => reply(ErrorCode::Internal, format!("unexpected raft outcome {other:?}")),
    }
}
