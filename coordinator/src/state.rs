//! The coordinator's local, unreplicated state: connected workers and
//! their task slots, the ready tasks waiting for one, the queries it is
//! driving, counters. Everything that must survive a crash is in
//! [`crate::replicated`].

use crate::schedule::{Grant, Group, Streak, Waiting};
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
    /// Tasks given to a worker whose previous task used another key set
    /// (or that had none): what the batcher keeps low.
    pub key_set_switches: u64,
}

#[derive(Debug)]
pub(crate) struct WorkerEntry {
    pub id: WorkerId,
    pub conn: quinn::Connection,
    /// Its task slots (threads) bound the tasks it is given before others.
    pub capabilities: Capabilities,
    pub cached: HashSet<KeySetId>,
    /// Tasks given and not yet returned.
    pub running: u32,
    /// The group its slots were given last.
    pub streak: Option<Streak>,
}

impl WorkerEntry {
    pub fn new(id: WorkerId, conn: quinn::Connection, capabilities: Capabilities, cached: Vec<KeySetId>) -> Self {
        Self { id, conn, capabilities, cached: cached.into_iter().collect(), running: 0, streak: None }
    }

    /// Tasks it runs at once.
    fn threads(&self) -> u32 {
        self.capabilities.threads.max(1)
    }

    /// Tasks it is given at once: one per thread, and one more whose
    /// inputs arrive while the others run, so a thread finishing a task
    /// does not wait for the next one's transfer.
    fn slots(&self) -> u32 {
        self.threads() + 1
    }
}

/// A slot for a ready task, now or later.
#[derive(Debug)]
pub(crate) enum Slot {
    /// A worker with a free slot.
    Now(Grant),
    /// Every slot is taken: the task waits as `id`, its slot arrives on
    /// the receiver.
    Queued(u64, tokio::sync::oneshot::Receiver<Grant>),
}

#[derive(Debug, Default)]
pub(crate) struct Local {
    pub workers: Vec<WorkerEntry>,
    pub next_worker: u32,
    /// Ready tasks waiting for a slot.
    pub waiting: Waiting,
    /// Queries this coordinator is driving now.
    pub running: HashSet<QueryId>,
    pub stats: Stats,
}

impl Local {
    /// A slot for a task of `group`: on the worker with a free slot that
    /// has an idle thread, then holds the key set, then runs the fewest
    /// tasks; else the task waits for [`Local::fill`] to give it one.
    pub fn acquire(&mut self, group: Group) -> Slot {
        let free = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.running < w.slots())
            .min_by_key(|(_, w)| (w.running >= w.threads(), !w.cached.contains(&group.key_set), w.running));
        match free.map(|(i, _)| i) {
            Some(i) => Slot::Now(self.give(i, &group)),
            None => {
                let (id, rx) = self.waiting.push(group);
                Slot::Queued(id, rx)
            }
        }
    }

    /// A task left `worker`; on success it now caches `key_set`. Its slot
    /// goes to a waiting task.
    pub fn release(&mut self, worker: WorkerId, key_set: Option<KeySetId>, batch_tasks: u32) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.running = w.running.saturating_sub(1);
            if let Some(k) = key_set {
                w.cached.insert(k);
            }
        }
        self.fill(worker, batch_tasks);
    }

    /// Gives `worker`'s free slots to waiting tasks (the batcher's choice:
    /// [`crate::schedule::next_for`]).
    pub fn fill(&mut self, worker: WorkerId, batch_tasks: u32) {
        let Some(i) = self.workers.iter().position(|w| w.id == worker) else { return };
        while self.workers[i].running < self.workers[i].slots() {
            let w = &self.workers[i];
            let Some(waiter) = self.waiting.take_for(w.streak.as_ref(), &w.cached, batch_tasks) else { return };
            if waiter.tx.is_closed() {
                // It stopped waiting (its query was abandoned).
                continue;
            }
            let grant = self.give(i, &waiter.group);
            if waiter.tx.send(grant).is_err() {
                // It stopped waiting in the meantime: the slot is free again.
                self.workers[i].running -= 1;
            }
        }
    }

    /// A slot on `workers[i]` for a task of `group`.
    fn give(&mut self, i: usize, group: &Group) -> Grant {
        let w = &mut self.workers[i];
        if w.streak.as_ref().map(|s| s.group.key_set) != Some(group.key_set) {
            self.stats.key_set_switches += 1;
        }
        w.streak = Some(Streak::then(w.streak.as_ref(), group));
        w.running += 1;
        Grant { worker: w.id, conn: w.conn.clone() }
    }
}
