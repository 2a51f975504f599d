//! A byte-budgeted LRU cache of decoded key sets.

use nexus_nn::KeySet;
use nexus_proto::ids::KeySetId;
use std::collections::HashMap;
use std::sync::Arc;

/// Cache statistics (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that fetched.
    pub misses: u64,
    /// Key sets evicted to stay within the budget.
    pub evictions: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// Key sets by id, least recently used evicted first.
#[derive(Debug)]
pub struct KeyCache {
    budget: u64,
    clock: u64,
    entries: HashMap<KeySetId, (Arc<KeySet>, u64, u64)>,
    stats: CacheStats,
}

impl KeyCache {
    /// An empty cache holding at most `budget` bytes (one key set larger
    /// than the budget is still admitted alone: a task needs it).
    pub fn new(budget: u64) -> Self {
        Self { budget, clock: 0, entries: HashMap::new(), stats: CacheStats::default() }
    }

    /// The key set, if cached (counts a hit or a miss).
    pub fn get(&mut self, id: &KeySetId) -> Option<Arc<KeySet>> {
        self.clock += 1;
        match self.entries.get_mut(id) {
            Some((keys, _, used)) => {
                *used = self.clock;
                self.stats.hits += 1;
                Some(keys.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Inserts a key set, evicting least recently used ones over budget.
    pub fn insert(&mut self, id: KeySetId, keys: KeySet) -> Arc<KeySet> {
        self.clock += 1;
        let size = keys.memory_bytes() as u64;
        while self.stats.bytes + size > self.budget && !self.entries.is_empty() {
            let oldest = self.entries.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| *k);
            if let Some((_, bytes, _)) = oldest.and_then(|k| self.entries.remove(&k)) {
                self.stats.bytes -= bytes;
                self.stats.evictions += 1;
            }
        }
        let keys = Arc::new(keys);
        self.entries.insert(id, (keys.clone(), size, self.clock));
        self.stats.bytes += size;
        keys
    }

    /// Drops a key set (its last owner deleted it); whether it was here.
    /// Tasks still running with it keep their reference until they end.
    pub fn remove(&mut self, id: &KeySetId) -> bool {
        match self.entries.remove(id) {
            Some((_, bytes, _)) => {
                self.stats.bytes -= bytes;
                true
            }
            None => false,
        }
    }

    /// Statistics so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Ids cached.
    pub fn ids(&self) -> Vec<KeySetId> {
        self.entries.keys().copied().collect()
    }
}
