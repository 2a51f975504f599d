//! The batcher: which ready task a worker's free slot takes.
//!
//! Ready tasks of every query wait here for a slot instead of queueing on
//! the workers, so the coordinator decides the order. A worker keeps taking
//! tasks of the key set and model it served last (queued queries of one key
//! set run together, on the workers that hold its keys) for up to
//! `batch_tasks` tasks in a row while other groups wait; then the oldest
//! task of another group goes first, so no tenant starves. Interleaving two
//! tenants task by task on a worker whose key cache holds one key set would
//! fetch the keys for every task.

use nexus_proto::ids::{KeySetId, WorkerId};
use std::collections::{HashSet, VecDeque};
use tokio::sync::oneshot;

/// What a task needs from a worker: a key set and a model's weights.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Group {
    pub key_set: KeySetId,
    pub model: String,
}

/// The group a worker's slots were given last, and how many tasks of it in
/// a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Streak {
    pub group: Group,
    pub tasks: u32,
}

impl Streak {
    /// The streak after one more task of `group`.
    pub fn then(previous: Option<&Streak>, group: &Group) -> Streak {
        match previous {
            Some(s) if s.group == *group => Streak { group: group.clone(), tasks: s.tasks.saturating_add(1) },
            _ => Streak { group: group.clone(), tasks: 1 },
        }
    }
}

/// A slot given to a waiting task.
#[derive(Debug)]
pub(crate) struct Grant {
    pub worker: WorkerId,
    pub conn: quinn::Connection,
}

/// A ready task waiting for a slot.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub id: u64,
    pub group: Group,
    pub tx: oneshot::Sender<Grant>,
}

/// Ready tasks waiting for a slot, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    queue: VecDeque<Waiter>,
    next_id: u64,
}

impl Waiting {
    /// Queues a task of `group`; its id (to cancel) and where its slot
    /// will arrive.
    pub fn push(&mut self, group: Group) -> (u64, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Waiter { id, group, tx });
        (id, rx)
    }

    /// Forgets waiter `id` (it stopped waiting).
    pub fn cancel(&mut self, id: u64) {
        self.queue.retain(|w| w.id != id);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Takes the task a free slot of a worker takes (see [`next_for`]).
    pub fn take_for(
        &mut self,
        streak: Option<&Streak>,
        cached: &HashSet<KeySetId>,
        batch_tasks: u32,
    ) -> Option<Waiter> {
        let groups: Vec<&Group> = self.queue.iter().map(|w| &w.group).collect();
        let i = next_for(&groups, streak, cached, batch_tasks)?;
        self.queue.remove(i)
    }
}

/// Index in `waiting` (oldest first) of the task a worker's free slot
/// takes: the oldest of the group in its streak while the streak is under
/// `batch_tasks`; past it, the oldest of another group if any waits. With
/// no streak to follow, the oldest task whose key set the worker holds,
/// else the oldest task.
pub(crate) fn next_for(
    waiting: &[&Group],
    streak: Option<&Streak>,
    cached: &HashSet<KeySetId>,
    batch_tasks: u32,
) -> Option<usize> {
    if waiting.is_empty() {
        return None;
    }
    if let Some(s) = streak {
        let same = |g: &&Group| **g == s.group;
        let found = if s.tasks < batch_tasks.max(1) {
            waiting.iter().position(same)
        } else {
            waiting.iter().position(|g| !same(g)).or_else(|| waiting.iter().position(same))
        };
        if found.is_some() {
            return found;
        }
    }
    waiting.iter().position(|g| cached.contains(&g.key_set)).or(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(k: u8, model: &str) -> Group {
        Group { key_set: KeySetId([k; 32]), model: model.into() }
    }

    #[test]
    fn a_worker_keeps_its_group_until_the_batch_is_full_then_the_oldest_other_goes() {
        let (a, b) = (group(1, "gelu"), group(2, "gelu"));
        let waiting = [&b, &a, &b, &a];
        let none = HashSet::new();
        // Serving a: the oldest a, though b is older.
        let streak = Streak::then(None, &a);
        assert_eq!(next_for(&waiting, Some(&streak), &none, 4), Some(1));
        // Four of a in a row: b's oldest goes first.
        let full = Streak { group: a.clone(), tasks: 4 };
        assert_eq!(next_for(&waiting, Some(&full), &none, 4), Some(0));
        // Full, but nothing else waits: a again.
        assert_eq!(next_for(&[&a, &a], Some(&full), &none, 4), Some(0));
        // A batch of one alternates.
        assert_eq!(next_for(&[&a, &b], Some(&streak), &none, 1), Some(1));
        // The same key set under another model is another group.
        let other_model = group(1, "softmax");
        assert_eq!(next_for(&[&other_model, &a], Some(&streak), &none, 4), Some(1));
    }

    #[test]
    fn without_a_streak_the_held_key_set_then_the_oldest() {
        let (a, b) = (group(1, "gelu"), group(2, "gelu"));
        let held: HashSet<KeySetId> = [b.key_set].into_iter().collect();
        assert_eq!(next_for(&[&a, &b], None, &held, 8), Some(1));
        assert_eq!(next_for(&[&a, &b], None, &HashSet::new(), 8), Some(0));
        // A streak of a group nobody waits for falls back the same way.
        let gone = Streak::then(None, &group(3, "gelu"));
        assert_eq!(next_for(&[&a, &b], Some(&gone), &held, 8), Some(1));
        assert_eq!(next_for(&[], None, &held, 8), None);
    }

    #[test]
    fn streaks_count_tasks_of_one_group_in_a_row() {
        let (a, b) = (group(1, "gelu"), group(2, "gelu"));
        let s = Streak::then(None, &a);
        let s = Streak::then(Some(&s), &a);
        assert_eq!(s.tasks, 2);
        assert_eq!(Streak::then(Some(&s), &b), Streak { group: b, tasks: 1 });
    }

    #[test]
    fn waiting_takes_and_cancels_by_id() {
        let mut w = Waiting::default();
        let (a, b) = (group(1, "gelu"), group(2, "gelu"));
        let (first, _rx1) = w.push(a.clone());
        let (_second, _rx2) = w.push(b.clone());
        let (_third, _rx3) = w.push(a.clone());
        w.cancel(first);
        assert_eq!(w.len(), 2);
        let streak = Streak::then(None, &a);
        let taken = w.take_for(Some(&streak), &HashSet::new(), 8).map(|t| t.group);
        assert_eq!(taken, Some(a));
        assert_eq!(w.take_for(None, &HashSet::new(), 8).map(|t| t.group), Some(b));
        assert!(w.take_for(None, &HashSet::new(), 8).is_none());
    }
}
