//! The coordinator's local, unreplicated state: connected workers, the
//! chains it is driving, counters. Everything that must survive a crash is
//! in [`crate::replicated`].

use nexus_proto::ids::{KeySetId, QueryId, WorkerId};
use nexus_proto::messages::Capabilities;
use std::collections::{HashMap, HashSet};

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
    /// Its task slots (threads) bound the tasks it is given before others.
    pub capabilities: Capabilities,
    pub cached: HashSet<KeySetId>,
    pub running: u32,
}

impl WorkerEntry {
    pub fn new(id: WorkerId, conn: quinn::Connection, capabilities: Capabilities, cached: Vec<KeySetId>) -> Self {
        Self { id, conn, capabilities, cached: cached.into_iter().collect(), running: 0 }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Local {
    pub workers: Vec<WorkerEntry>,
    pub next_worker: u32,
    /// Queries this coordinator is driving now.
    pub running: HashSet<QueryId>,
    pub stats: Stats,
}

impl Local {
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
