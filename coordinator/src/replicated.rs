//! The coordinators' replicated state: key sets, admitted queries with their
//! inputs, and each query's checkpoints (which tasks of its graph,
//! [`crate::plan`], finished, and the ciphertexts still needed). Every
//! change is a [`Command`] in the raft log, applied in log order on every
//! coordinator, so a new leader (or a restarted cluster) resumes every
//! query from its finished tasks.
//!
//! Commands and snapshots are MessagePack behind a version byte. Applying
//! is deterministic and total: a command that does not decode or does not
//! fit the state is rejected with a reason, never a panic.

use nexus_proto::ids::{KeySetId, QueryId, TenantId};
use nexus_proto::messages::{ErrorCode, QueryState, QueryStatus};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::consensus::StateMachine;
use crate::plan::{self, Source};

// 2: BLAKE3 blob digests and key-set ids (protocol version 2).
// 3: key-set bytes out of the log (`crate::keystore`): the log names a key
// set by digest and length. Logs and snapshots of an older version are
// refused with the version named.
// 4: queries run as task graphs: a checkpoint names a task of the graph
// and carries all its outputs.
const COMMAND_VERSION: u8 = 4;
const SNAPSHOT_VERSION: u8 = 4;

/// SHA-256 of a tenant's token: the log and snapshots never hold tokens.
pub type TokenHash = [u8; 32];

/// The hash stored for `token`.
pub fn token_hash(token: &str) -> TokenHash {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A state change.
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// The tenants and their token hashes (a new leader replicates its
    /// configuration, so every member authenticates alike).
    SetTenants {
        /// Tenant to token hash.
        tenants: BTreeMap<TenantId, TokenHash>,
    },
    /// A tenant's key set (content-addressed). Its bytes are not in the
    /// log: the leader stored them on a majority of the coordinators'
    /// key stores before proposing this.
    RegisterKeySet {
        /// Owner.
        tenant: TenantId,
        /// BLAKE3 digest of the key set's wire bytes.
        key_set: KeySetId,
        /// Digest of the CKKS parameters the keys belong to (as the client
        /// declared it; inputs are checked against it at admission).
        params_digest: [u8; 32],
        /// Length of the wire bytes.
        len: u64,
    },
    /// The tenant no longer uses a key set: it stops owning it, and a key
    /// set no tenant owns leaves the state (every member then removes its
    /// bytes). Refused while the tenant has unfinished queries on it.
    DeleteKeySet {
        /// The owner giving it up.
        tenant: TenantId,
        /// The key set.
        key_set: KeySetId,
    },
    /// A query enters the queue.
    Admit {
        /// Its id (random, chosen by the leader).
        query: QueryId,
        /// The client's idempotency key.
        request: u64,
        /// Owner.
        tenant: TenantId,
        /// Key set its inputs are encrypted under.
        key_set: KeySetId,
        /// Model name.
        model: String,
        /// Stages (layers) of its plan, as the leader planned it.
        layers: u32,
        /// Refuse if this many queries are pending (the admission bound).
        max_pending: u32,
        /// Refuse if the tenant holds this many queries (pending, or
        /// finished and not yet released); 0: no per-tenant bound (logs
        /// written before the quota existed).
        #[serde(default)]
        max_held_per_tenant: u32,
        /// Admission time on the leader's clock (ms since the Unix epoch),
        /// for the latency metric.
        admitted_ms: u64,
        /// Input ciphertexts.
        inputs: Vec<serde_bytes::ByteBuf>,
    },
    /// Task `task` of the query's graph finished with `outputs`.
    Checkpoint {
        /// The query.
        query: QueryId,
        /// Which task of the graph.
        task: u32,
        /// Its output ciphertexts.
        outputs: Vec<serde_bytes::ByteBuf>,
    },
    /// The tenant is done with a query (its result fetched, or it gave up
    /// on it): the query and its ciphertexts leave the state; a running
    /// one stops at its next layer.
    Release {
        /// Owner (only the owner may release).
        tenant: TenantId,
        /// The query.
        query: QueryId,
    },
    /// The query cannot finish.
    Fail {
        /// The query.
        query: QueryId,
        /// Why.
        reason: String,
    },
}

impl Command {
    /// Version byte and MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![COMMAND_VERSION];
        rmp_serde::encode::write(&mut out, self).map_err(|e| format!("encoding a raft command: {e}"))?;
        Ok(out)
    }

    /// Reads a command written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&COMMAND_VERSION, body)) => {
                rmp_serde::from_slice(body).map_err(|e| format!("raft command does not decode: {e}"))
            }
            Some((v, _)) => Err(format!("raft command version {v}, this coordinator reads {COMMAND_VERSION}")),
            None => Err("empty raft command".into()),
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Tenant table replaced.
    TenantsSet,
    /// Key set stored (or already there).
    KeySetRegistered {
        /// It was there before.
        already_present: bool,
    },
    /// The tenant gave up a key set.
    KeySetDeleted {
        /// No tenant owns it any more: it left the state, and its bytes
        /// are to be removed from every member's key store.
        retired: bool,
    },
    /// Query admitted (or, for a repeated request, admitted before).
    Admitted {
        /// Its id.
        query: QueryId,
        /// Pending queries ahead of it.
        position: u32,
        /// The request id was admitted before: nothing new entered.
        replayed: bool,
    },
    /// Checkpoint recorded.
    Checkpointed {
        /// `false`: a stale or duplicate result, ignored.
        advanced: bool,
        /// This checkpoint finished the query.
        completed: bool,
    },
    /// Failure recorded.
    Failed,
    /// Query forgotten.
    Released,
    /// Refused: the state does not allow it.
    Rejected(ErrorCode, String),
}

/// A key set and the tenants that registered it.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeySetEntry {
    /// Tenants allowed to use it.
    pub owners: BTreeSet<TenantId>,
    /// Digest of its CKKS parameters.
    pub params_digest: [u8; 32],
    /// Length of its wire bytes (in the key store).
    pub len: u64,
}

/// Ciphertexts shared without copies (the state and the tasks reading
/// them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blobs(pub Vec<Arc<Vec<u8>>>);

impl Serialize for Blobs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|b| serde_bytes::Bytes::new(b)))
    }
}

impl<'de> Deserialize<'de> for Blobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bufs = Vec::<serde_bytes::ByteBuf>::deserialize(d)?;
        Ok(Blobs(bufs.into_iter().map(|b| Arc::new(b.into_vec())).collect()))
    }
}

/// An admitted query.
#[derive(Debug, Serialize, Deserialize)]
pub struct Query {
    /// Owner.
    pub tenant: TenantId,
    /// Key set.
    pub key_set: KeySetId,
    /// Model name.
    pub model: String,
    /// Stages (layers) of the plan.
    pub layers: u32,
    /// Input ciphertexts.
    pub inputs: u32,
    /// Tasks of its graph.
    pub tasks: u32,
    /// The tasks whose outputs are the result, in order.
    pub results: Vec<u32>,
    /// Admission order.
    pub seq: u64,
    /// Admission time, ms since the Unix epoch (leader's clock).
    pub admitted_ms: u64,
    /// Tasks finished.
    pub finished: BTreeSet<u32>,
    /// Ciphertexts still needed, by [`Source::key`]: the inputs and each
    /// finished task's outputs until every task reading them has finished;
    /// the result tasks' outputs stay.
    pub values: BTreeMap<u64, Blobs>,
    /// Set once it cannot finish.
    pub failed: Option<String>,
}

impl Query {
    /// Every result task finished.
    pub fn done(&self) -> bool {
        self.results.iter().all(|r| self.finished.contains(r))
    }

    /// The result: the result tasks' outputs, in order.
    pub fn outputs(&self) -> Vec<Arc<Vec<u8>>> {
        let values = self.results.iter().filter_map(|r| self.values.get(&Source::Task(*r).key()));
        values.flat_map(|b| b.0.iter().cloned()).collect()
    }

    /// Done or failed.
    pub fn finished(&self) -> bool {
        self.failed.is_some() || self.done()
    }

    /// Progress as the client sees it.
    pub fn status(&self, query: QueryId, position: u32) -> QueryStatus {
        let tasks_done = self.finished.len() as u32;
        // The graph of an admitted query always plans (it did at admission).
        let layers_done = match plan::graph(&self.model, self.inputs) {
            Ok(g) => g.stages_done(&self.finished),
            Err(_) => 0,
        };
        let state = match (&self.failed, self.done()) {
            (Some(reason), _) => QueryState::Failed { reason: reason.clone() },
            (None, true) => QueryState::Done,
            (None, false) if tasks_done == 0 => QueryState::Queued { position },
            (None, false) => QueryState::Running,
        };
        QueryStatus { query, state, layers_done, layers_total: self.layers, tasks_done, tasks_total: self.tasks }
    }
}

/// The replicated state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Replicated {
    /// Tenants and their token hashes.
    pub tenants: BTreeMap<TenantId, TokenHash>,
    /// Key sets by id.
    pub key_sets: HashMap<KeySetId, KeySetEntry>,
    /// Queries by id.
    pub queries: HashMap<QueryId, Query>,
    /// (tenant, request id) of every admission, for idempotent resubmission.
    requests: HashMap<TenantId, HashMap<u64, QueryId>>,
    next_seq: u64,
    /// Key sets deleted by their last owner and not registered again: each
    /// member removes their bytes from its key store (also a member that
    /// learns of the deletion from a snapshot). Absent from snapshots
    /// written before deletion existed, and left out while empty, so that
    /// coordinators without deletion read the snapshot (a field past their
    /// last one would be refused).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retired_key_sets: BTreeSet<KeySetId>,
    /// When this member applied each retirement (its own clock; not
    /// replicated, absent for one learnt from a snapshot).
    #[serde(skip)]
    retired_at: HashMap<KeySetId, Instant>,
}

impl Replicated {
    /// Whether `token` is `tenant`'s (compared in constant time).
    pub fn authorize(&self, tenant: &TenantId, token: &str) -> bool {
        let Some(expected) = self.tenants.get(tenant) else { return false };
        let got = token_hash(token);
        expected.iter().zip(&got).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// A query, only if `tenant` owns it (another tenant's query looks like
    /// a missing one).
    pub fn query_of(&self, tenant: &TenantId, query: QueryId) -> Option<&Query> {
        self.queries.get(&query).filter(|q| &q.tenant == tenant)
    }

    /// Queries admitted and not finished.
    pub fn pending(&self) -> usize {
        self.queries.values().filter(|q| !q.finished()).count()
    }

    /// Queries `tenant` holds: pending, or finished and not released.
    pub fn held_by(&self, tenant: &TenantId) -> usize {
        self.queries.values().filter(|q| &q.tenant == tenant).count()
    }

    /// Pending queries admitted before `query`.
    pub fn position(&self, query: &Query) -> u32 {
        self.queries.values().filter(|q| !q.finished() && q.seq < query.seq).count() as u32
    }

    /// Key sets deleted by their last owner, each with the time this member
    /// applied the deletion (if it did rather than restoring a snapshot).
    pub fn retired_since(&self) -> Vec<(KeySetId, Option<Instant>)> {
        self.retired_key_sets.iter().map(|k| (*k, self.retired_at.get(k).copied())).collect()
    }

    /// Unfinished queries, oldest first.
    pub fn unfinished(&self) -> Vec<QueryId> {
        let mut qs: Vec<(&QueryId, &Query)> = self.queries.iter().filter(|(_, q)| !q.finished()).collect();
        qs.sort_by_key(|(_, q)| q.seq);
        qs.into_iter().map(|(id, _)| *id).collect()
    }

    fn apply_command(&mut self, command: Command) -> Outcome {
        match command {
            Command::SetTenants { tenants } => {
                self.tenants = tenants;
                Outcome::TenantsSet
            }
            Command::RegisterKeySet { tenant, key_set, params_digest, len } => {
                let entry = self.key_sets.entry(key_set).or_insert_with(|| KeySetEntry {
                    owners: BTreeSet::new(),
                    params_digest,
                    len,
                });
                let already_present = !entry.owners.insert(tenant);
                self.retired_key_sets.remove(&key_set);
                self.retired_at.remove(&key_set);
                Outcome::KeySetRegistered { already_present }
            }
            Command::DeleteKeySet { tenant, key_set } => {
                let Some(entry) = self.key_sets.get_mut(&key_set).filter(|k| k.owners.contains(&tenant)) else {
                    return Outcome::Rejected(
                        ErrorCode::NotFound,
                        format!("key set {key_set} is not registered for tenant {tenant}"),
                    );
                };
                let using = |q: &&Query| q.tenant == tenant && q.key_set == key_set && !q.finished();
                let unfinished = self.queries.values().filter(using).count();
                if unfinished > 0 {
                    return Outcome::Rejected(
                        ErrorCode::InUse,
                        format!(
                            "key set {key_set} is in use by unfinished queries of tenant {tenant} ({unfinished}): \
                             wait for them or release them first"
                        ),
                    );
                }
                entry.owners.remove(&tenant);
                let retired = entry.owners.is_empty();
                if retired {
                    self.key_sets.remove(&key_set);
                    self.retired_key_sets.insert(key_set);
                    self.retired_at.insert(key_set, Instant::now());
                }
                Outcome::KeySetDeleted { retired }
            }
            Command::Admit {
                query,
                request,
                tenant,
                key_set,
                model,
                layers,
                max_pending,
                max_held_per_tenant,
                admitted_ms,
                inputs,
            } => {
                if let Some(&existing) = self.requests.get(&tenant).and_then(|r| r.get(&request)) {
                    let position = self.queries.get(&existing).map(|q| self.position(q)).unwrap_or(0);
                    return Outcome::Admitted { query: existing, position, replayed: true };
                }
                if !self.key_sets.get(&key_set).is_some_and(|k| k.owners.contains(&tenant)) {
                    return Outcome::Rejected(
                        ErrorCode::NotFound,
                        format!("key set {key_set} is not registered for tenant {tenant}"),
                    );
                }
                if inputs.is_empty() || layers == 0 {
                    return Outcome::Rejected(ErrorCode::BadRequest, "a query needs inputs and layers".into());
                }
                let graph = match plan::graph(&model, inputs.len().min(u32::MAX as usize) as u32) {
                    Ok(g) if g.stages == layers && !g.nodes.is_empty() => g,
                    Ok(g) => {
                        return Outcome::Rejected(
                            ErrorCode::Internal,
                            format!("model {model:?} plans {} stages here, {layers} on the leader", g.stages),
                        )
                    }
                    Err(reason) => return Outcome::Rejected(ErrorCode::BadRequest, reason),
                };
                if self.queries.contains_key(&query) {
                    return Outcome::Rejected(ErrorCode::Internal, format!("query id {query} collides; resubmit"));
                }
                let held = self.held_by(&tenant);
                if max_held_per_tenant > 0 && held >= max_held_per_tenant as usize {
                    return Outcome::Rejected(
                        ErrorCode::QuotaExceeded,
                        format!(
                            "tenant {tenant} holds {held} queries (quota {max_held_per_tenant}): \
                             fetch and release finished results, or wait for running ones"
                        ),
                    );
                }
                let pending = self.pending();
                if pending >= max_pending as usize {
                    return Outcome::Rejected(ErrorCode::Busy, format!("{pending} queries pending; retry later"));
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let count = inputs.len() as u32;
                let values = (0..count)
                    .zip(inputs)
                    .map(|(i, b)| (Source::Input(i).key(), Blobs(vec![Arc::new(b.into_vec())])))
                    .collect();
                let query_entry = Query {
                    tenant: tenant.clone(),
                    key_set,
                    model,
                    layers,
                    inputs: count,
                    tasks: graph.nodes.len() as u32,
                    results: graph.results,
                    seq,
                    admitted_ms,
                    finished: BTreeSet::new(),
                    values,
                    failed: None,
                };
                self.queries.insert(query, query_entry);
                self.requests.entry(tenant).or_default().insert(request, query);
                Outcome::Admitted { query, position: pending as u32, replayed: false }
            }
            Command::Checkpoint { query, task, outputs } => {
                let Some(q) = self.queries.get_mut(&query) else {
                    return Outcome::Rejected(ErrorCode::NotFound, format!("no query {query}"));
                };
                const STALE: Outcome = Outcome::Checkpointed { advanced: false, completed: false };
                if q.failed.is_some() {
                    return STALE;
                }
                let graph = match plan::graph(&q.model, q.inputs) {
                    Ok(g) => g,
                    Err(reason) => return Outcome::Rejected(ErrorCode::Internal, reason),
                };
                let Some(node) = graph.nodes.get(task as usize) else {
                    return Outcome::Rejected(ErrorCode::BadRequest, format!("query {query} has no task {task}"));
                };
                // A late duplicate (a task run twice across a failover)
                // changes nothing.
                if q.finished.contains(&task) {
                    return STALE;
                }
                let unread = |s: &Source| matches!(s, Source::Task(t) if !q.finished.contains(t));
                if node.sources.iter().any(unread) {
                    return Outcome::Rejected(
                        ErrorCode::BadRequest,
                        format!("task {task} of query {query} finished before the tasks it reads"),
                    );
                }
                q.finished.insert(task);
                let outputs = outputs.into_iter().map(|b| Arc::new(b.into_vec())).collect();
                q.values.insert(Source::Task(task).key(), Blobs(outputs));
                // Values every reader has now read leave the state.
                for source in &node.sources {
                    let result = matches!(source, Source::Task(t) if q.results.contains(t));
                    if !result && graph.consumed(*source, &q.finished) {
                        q.values.remove(&source.key());
                    }
                }
                Outcome::Checkpointed { advanced: true, completed: q.done() }
            }
            Command::Release { tenant, query } => {
                if self.query_of(&tenant, query).is_none() {
                    return Outcome::Rejected(ErrorCode::NotFound, format!("no query {query}"));
                }
                self.queries.remove(&query);
                // Its idempotency entry goes too: the request id named a
                // query that no longer exists.
                if let Some(requests) = self.requests.get_mut(&tenant) {
                    requests.retain(|_, q| *q != query);
                }
                Outcome::Released
            }
            Command::Fail { query, reason } => {
                if let Some(q) = self.queries.get_mut(&query) {
                    if !q.done() {
                        q.failed.get_or_insert(reason);
                    }
                }
                Outcome::Failed
            }
        }
    }
}

impl StateMachine for Replicated {
    type Output = Outcome;

    fn apply(&mut self, data: &[u8]) -> Outcome {
        match Command::decode(data) {
            Ok(command) => self.apply_command(command),
            Err(reason) => Outcome::Rejected(ErrorCode::Internal, reason),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // Encoding plain maps, strings and byte strings into a Vec cannot
        // fail; an empty snapshot would still be refused on restore.
        if rmp_serde::encode::write(&mut out, self).is_err() {
            out.truncate(1);
        }
        out
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        match data.split_first() {
            Some((&SNAPSHOT_VERSION, body)) => {
                *self = rmp_serde::from_slice(body).map_err(|e| format!("snapshot does not decode: {e}"))?;
                Ok(())
            }
            Some((v, _)) => Err(format!("snapshot version {v}, this coordinator reads {SNAPSHOT_VERSION}")),
            None => Err("empty snapshot".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn apply(state: &mut Replicated, c: Command) -> Outcome {
        state.apply(&c.encode().unwrap())
    }

    fn admit(request: u64, query: u64, tenant: &TenantId, key_set: KeySetId) -> Command {
        Command::Admit {
            query: QueryId(query),
            request,
            tenant: tenant.clone(),
            key_set,
            model: "mlp-demo".into(),
            layers: 3,
            max_pending: 2,
            max_held_per_tenant: 0,
            admitted_ms: 0,
            inputs: vec![serde_bytes::ByteBuf::from(vec![1u8, 2]), serde_bytes::ByteBuf::from(vec![3u8])],
        }
    }

    #[test]
    fn deleting_key_sets() {
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let ks = KeySetId::of(b"keys");
        let register =
            |t: &TenantId| Command::RegisterKeySet { tenant: t.clone(), key_set: ks, params_digest: [7; 32], len: 4 };
        let delete = |t: &TenantId| Command::DeleteKeySet { tenant: t.clone(), key_set: ks };
        let mut s = Replicated::default();
        assert!(matches!(apply(&mut s, delete(&a)), Outcome::Rejected(ErrorCode::NotFound, _)), "never registered");
        apply(&mut s, register(&a));
        apply(&mut s, register(&b));
        assert!(matches!(apply(&mut s, delete(&b)), Outcome::KeySetDeleted { retired: false }), "a still owns it");
        assert!(matches!(apply(&mut s, delete(&b)), Outcome::Rejected(ErrorCode::NotFound, _)), "b no longer owns it");
        assert!(matches!(apply(&mut s, admit(1, 10, &b, ks)), Outcome::Rejected(ErrorCode::NotFound, _)));
        // A pending query keeps it; a finished (unreleased) one does not.
        assert!(matches!(apply(&mut s, admit(1, 10, &a, ks)), Outcome::Admitted { .. }));
        assert!(
            matches!(apply(&mut s, delete(&a)), Outcome::Rejected(ErrorCode::InUse, m) if m.contains("unfinished queries of tenant a (1)")),
            "in use"
        );
        apply(&mut s, Command::Fail { query: QueryId(10), reason: "test".into() });
        assert_eq!(apply(&mut s, delete(&a)), Outcome::KeySetDeleted { retired: true });
        assert!(!s.key_sets.contains_key(&ks));
        assert!(matches!(s.retired_since().as_slice(), [(k, Some(_))] if *k == ks), "retired here, with its time");
        assert!(matches!(apply(&mut s, admit(2, 11, &a, ks)), Outcome::Rejected(ErrorCode::NotFound, _)));
        // A snapshot carries the retirement (not this member's clock).
        let mut restored = Replicated::default();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.retired_since(), vec![(ks, None)]);
        // Registered again: no longer retired.
        apply(&mut restored, register(&b));
        assert!(restored.retired_since().is_empty());
        assert!(matches!(apply(&mut restored, admit(2, 11, &b, ks)), Outcome::Admitted { .. }));
    }

    #[test]
    fn snapshots_from_before_key_set_deletion_restore() {
        let ks = KeySetId::of(b"keys");
        let mut s = Replicated::default();
        apply(
            &mut s,
            Command::RegisterKeySet {
                tenant: TenantId::new("a").unwrap(),
                key_set: ks,
                params_digest: [7; 32],
                len: 4,
            },
        );
        // The state as coordinators without deletion wrote it: the same
        // fields, without the retired key sets.
        let old = (&s.tenants, &s.key_sets, &s.queries, &s.requests, s.next_seq);
        let mut bytes = vec![SNAPSHOT_VERSION];
        rmp_serde::encode::write(&mut bytes, &old).unwrap();
        let mut restored = Replicated::default();
        restored.restore(&bytes).unwrap();
        assert!(restored.key_sets.contains_key(&ks) && restored.retired_key_sets.is_empty());
        // And the other way: without deletions, the snapshot is the old
        // format, which coordinators without deletion read.
        assert_eq!(s.snapshot(), bytes);
    }

    #[test]
    fn admission_checkpoints_and_snapshot_round_trip() {
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let ks = KeySetId::of(b"keys");
        let mut s = Replicated::default();
        // b cannot use a key set only a registered.
        apply(&mut s, Command::RegisterKeySet { tenant: a.clone(), key_set: ks, params_digest: [7; 32], len: 4 });
        let register = Command::RegisterKeySet { tenant: a.clone(), key_set: ks, params_digest: [7; 32], len: 9 << 30 };
        assert!(register.encode().unwrap().len() < 128, "the log names a key set, it does not carry it");
        assert!(matches!(apply(&mut s, admit(1, 10, &b, ks)), Outcome::Rejected(ErrorCode::NotFound, _)));
        let admitted = |q, position, replayed| Outcome::Admitted { query: QueryId(q), position, replayed };
        assert_eq!(apply(&mut s, admit(1, 10, &a, ks)), admitted(10, 0, false));
        // The same request again (a retry after failover) is the same query.
        assert_eq!(apply(&mut s, admit(1, 11, &a, ks)), admitted(10, 0, true));
        assert_eq!(apply(&mut s, admit(2, 12, &a, ks)), admitted(12, 1, false));
        assert!(matches!(apply(&mut s, admit(3, 13, &a, ks)), Outcome::Rejected(ErrorCode::Busy, _)));
        // mlp-demo on two inputs: tasks 0-2 read input 0, tasks 3-5 input 1.
        let cp = |task, out: u8| Command::Checkpoint {
            query: QueryId(10),
            task,
            outputs: vec![serde_bytes::ByteBuf::from(vec![out])],
        };
        let (advanced, stale) = (
            Outcome::Checkpointed { advanced: true, completed: false },
            Outcome::Checkpointed { advanced: false, completed: false },
        );
        assert_eq!(apply(&mut s, cp(0, 7)), advanced);
        assert_eq!(apply(&mut s, cp(0, 8)), stale, "duplicate task ignored");
        assert!(
            matches!(apply(&mut s, cp(2, 8)), Outcome::Rejected(ErrorCode::BadRequest, m) if m.contains("before the tasks it reads")),
            "a task whose inputs are not finished is refused"
        );
        assert!(
            matches!(apply(&mut s, cp(6, 8)), Outcome::Rejected(ErrorCode::BadRequest, m) if m.contains("no task 6"))
        );
        // Input 0 was read by its only reader: it left the state.
        let q = s.query_of(&a, QueryId(10)).unwrap();
        let keys: Vec<u64> = q.values.keys().copied().collect();
        assert_eq!(keys, vec![Source::Input(1).key(), Source::Task(0).key()]);
        assert_eq!(s.unfinished(), vec![QueryId(10), QueryId(12)]);
        let mut restored = Replicated::default();
        restored.restore(&s.snapshot()).unwrap();
        for r in [&mut s, &mut restored] {
            apply(r, cp(1, 9));
            apply(r, cp(2, 10));
            let status = r.query_of(&a, QueryId(10)).unwrap().status(QueryId(10), 0);
            assert_eq!((status.layers_done, status.tasks_done, status.tasks_total), (0, 3, 6), "input 1 is behind");
            for task in 3..5 {
                apply(r, cp(task, task as u8));
            }
            assert_eq!(apply(r, cp(5, 6)), Outcome::Checkpointed { advanced: true, completed: true });
            let q = r.query_of(&a, QueryId(10)).unwrap();
            assert!(q.done());
            assert_eq!(q.outputs().iter().map(|o| o[0]).collect::<Vec<_>>(), vec![10, 6]);
            assert_eq!(q.values.len(), 2, "only the results are kept");
            let status = q.status(QueryId(10), 0);
            assert_eq!((status.layers_done, status.layers_total), (3, 3));
            assert!(r.query_of(&b, QueryId(10)).is_none());
            assert_eq!(r.unfinished(), vec![QueryId(12)]);
        }
        let mut bad = admit(9, 19, &a, ks);
        if let Command::Admit { layers, .. } = &mut bad {
            *layers = 2;
        }
        assert!(
            matches!(apply(&mut s, bad), Outcome::Rejected(ErrorCode::Internal, m) if m.contains("3 stages here, 2 on the leader"))
        );
        assert!(matches!(s.apply(&[9, 1, 2]), Outcome::Rejected(ErrorCode::Internal, _)));
        let tenants = BTreeMap::from([(a.clone(), token_hash("s3cret"))]);
        assert_eq!(apply(&mut s, Command::SetTenants { tenants }), Outcome::TenantsSet);
        assert!(s.authorize(&a, "s3cret") && !s.authorize(&a, "s3cret ") && !s.authorize(&b, "s3cret"));
        assert!(!String::from_utf8_lossy(&s.snapshot()).contains("s3cret"), "tokens are stored hashed");
        assert!(s.restore(&[]).is_err());
    }

    #[test]
    fn tenant_quota_counts_held_queries_until_released() {
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let ks = KeySetId::of(b"keys");
        let mut s = Replicated::default();
        for t in [&a, &b] {
            apply(&mut s, Command::RegisterKeySet { tenant: t.clone(), key_set: ks, params_digest: [7; 32], len: 4 });
        }
        let quota = |request, query, tenant: &TenantId| {
            let mut c = admit(request, query, tenant, ks);
            if let Command::Admit { max_pending, max_held_per_tenant, .. } = &mut c {
                *max_pending = 100;
                *max_held_per_tenant = 2;
            }
            c
        };
        assert!(matches!(apply(&mut s, quota(1, 10, &a)), Outcome::Admitted { .. }));
        assert!(matches!(apply(&mut s, quota(2, 11, &a)), Outcome::Admitted { .. }));
        match apply(&mut s, quota(3, 12, &a)) {
            Outcome::Rejected(ErrorCode::QuotaExceeded, m) => assert!(m.contains("quota 2"), "{m}"),
            other => panic!("expected the quota refusal, got {other:?}"),
        }
        // Another tenant is not held back by a's quota.
        assert!(matches!(apply(&mut s, quota(1, 20, &b)), Outcome::Admitted { .. }));
        // Finished queries still count until released.
        for task in 0..6 {
            let outputs = vec![serde_bytes::ByteBuf::from(vec![1])];
            apply(&mut s, Command::Checkpoint { query: QueryId(10), task, outputs });
        }
        assert!(s.query_of(&a, QueryId(10)).unwrap().done());
        assert!(matches!(apply(&mut s, quota(3, 12, &a)), Outcome::Rejected(ErrorCode::QuotaExceeded, _)));
        // Only the owner releases; twice is an unknown query.
        let release = |t: &TenantId, q| Command::Release { tenant: t.clone(), query: QueryId(q) };
        assert!(matches!(apply(&mut s, release(&b, 10)), Outcome::Rejected(ErrorCode::NotFound, _)));
        assert_eq!(apply(&mut s, release(&a, 10)), Outcome::Released);
        assert!(matches!(apply(&mut s, release(&a, 10)), Outcome::Rejected(ErrorCode::NotFound, _)));
        assert!(s.query_of(&a, QueryId(10)).is_none());
        // A running query can be released too (cancelled): its chain stops.
        assert_eq!(apply(&mut s, release(&a, 11)), Outcome::Released);
        assert!(!s.unfinished().contains(&QueryId(11)));
        let mut restored = Replicated::default();
        restored.restore(&s.snapshot()).unwrap();
        for r in [&mut s, &mut restored] {
            assert_eq!(r.held_by(&a), 0);
            assert!(matches!(apply(r, quota(3, 12, &a)), Outcome::Admitted { query: QueryId(12), .. }));
            assert!(matches!(apply(r, quota(4, 13, &a)), Outcome::Admitted { query: QueryId(13), .. }));
            assert!(matches!(apply(r, quota(5, 14, &a)), Outcome::Rejected(ErrorCode::QuotaExceeded, _)));
        }
    }
}
