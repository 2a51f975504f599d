//! The coordinator's in-memory state (replicated through raft with the HA
//! issue).

use nexus_proto::ids::{KeySetId, QueryId, TenantId, WorkerId};
use nexus_proto::messages::{Capabilities, QueryState, QueryStatus};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Counters exported as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks finished.
    pub tasks_done: u64,
    /// Tasks retried after a failure.
    pub tasks_retried: u64,
    /// Key-set bytes sent to workers.
    pub key_bytes_sent: u64,
    /// Key sets sent, per worker id.
    pub key_sets_sent: HashMap<u32, u32>,
}

#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub id: WorkerId,
    pub conn: quinn::Connection,
    #[allow(dead_code)] // read by the scheduler's capability filter (GPU tasks)
    pub capabilities: Capabilities,
    pub cached: HashSet<KeySetId>,
    pub running: u32,
}

impl WorkerEntry {
    pub fn new(id: WorkerId, conn: quinn::Connection, capabilities: Capabilities, cached: Vec<KeySetId>) -> Self {
        Self { id, conn, capabilities, cached: cached.into_iter().collect(), running: 0 }
    }
}

#[derive(Debug)]
pub(crate) struct QueryRecord {
    pub tenant: TenantId,
    #[allow(dead_code)] // batching by key set
    pub key_set: KeySetId,
    outputs: Vec<Option<Arc<Vec<u8>>>>,
    layers: usize,
    tasks_done: usize,
    failed: Option<String>,
}

impl QueryRecord {
    pub fn new(tenant: TenantId, key_set: KeySetId, inputs: usize, layers: usize) -> Self {
        Self { tenant, key_set, outputs: vec![None; inputs], layers, tasks_done: 0, failed: None }
    }

    pub fn task_done(&mut self) {
        self.tasks_done += 1;
    }

    pub fn complete(&mut self, index: usize, output: Arc<Vec<u8>>) {
        // Idempotent: a retried task's second result changes nothing.
        if let Some(slot) = self.outputs.get_mut(index) {
            slot.get_or_insert(output);
        }
    }

    pub fn fail(&mut self, reason: String) {
        self.failed.get_or_insert(reason);
    }

    pub fn finished(&self) -> bool {
        self.failed.is_some() || self.outputs.iter().all(Option::is_some)
    }

    pub fn outputs(&self) -> Option<Vec<Arc<Vec<u8>>>> {
        if self.failed.is_some() {
            return None;
        }
        self.outputs.iter().cloned().collect()
    }

    pub fn status(&self, query: QueryId) -> QueryStatus {
        let total = self.outputs.len() * self.layers;
        let finished = self.outputs.iter().all(Option::is_some);
        let state = match (&self.failed, finished) {
            (Some(reason), _) => QueryState::Failed { reason: reason.clone() },
            (None, true) => QueryState::Done,
            (None, false) if self.tasks_done == 0 => QueryState::Queued { position: 0 },
            (None, false) => QueryState::Running,
        };
        QueryStatus {
            query,
            state,
            layers_done: (self.tasks_done / self.outputs.len().max(1)) as u32,
            layers_total: self.layers as u32,
            tasks_done: self.tasks_done as u32,
            tasks_total: total as u32,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub key_sets: HashMap<KeySetId, Arc<Vec<u8>>>,
    pub queries: HashMap<QueryId, QueryRecord>,
    pub workers: Vec<WorkerEntry>,
    pub next_query: u64,
    pub next_worker: u32,
    pub stats: Stats,
}

impl State {
    /// A query, only if it belongs to `tenant` (another tenant's query
    /// looks like a missing one).
    pub fn query_of(&self, tenant: &TenantId, query: QueryId) -> Option<&QueryRecord> {
        self.queries.get(&query).filter(|q| &q.tenant == tenant)
    }

    /// A task left `worker`; on success it now caches `key_set`.
    pub fn release(&mut self, worker: WorkerId, key_set: Option<KeySetId>) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.running = w.running.saturating_sub(1);
            if let Some(k) = key_set {
                w.cached.insert(k);
            }
        }
    }
}
