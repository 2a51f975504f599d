//! A bounded pool of limb buffers.
//!
//! At N = 2^16 a ciphertext component is 14 MB and a key-switching digit
//! 18 MB; fresh allocations of that size are served by `mmap` and cost a
//! page fault and a page clear per 4 KiB, which was 15% of a rotation.
//! Polynomials and scratch buffers return their storage here on drop and
//! take it back on allocation. The pool keeps at most
//! [`DEFAULT_MAX_POOLED_BYTES`] (override with `NEXUS_POOL_MAX_BYTES`).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Default bound on pooled memory (1 GiB).
pub const DEFAULT_MAX_POOLED_BYTES: usize = 1 << 30;

struct Pool {
    /// Free buffers by capacity.
    free: BTreeMap<usize, Vec<Vec<u64>>>,
    bytes: usize,
    max_bytes: usize,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let max_bytes =
            std::env::var("NEXUS_POOL_MAX_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_POOLED_BYTES);
        Mutex::new(Pool { free: BTreeMap::new(), bytes: 0, max_bytes })
    })
}

/// Sets the bound on pooled memory for this process (a worker counts it
/// in its memory budget: buffers of dropped key sets come back here too),
/// dropping free buffers over the new bound at once.
pub fn set_max_pooled_bytes(max_bytes: usize) {
    if let Ok(mut p) = pool().lock() {
        p.max_bytes = max_bytes;
        while p.bytes > p.max_bytes {
            let largest = p.free.iter().filter(|(_, l)| !l.is_empty()).map(|(&c, _)| c).next_back();
            let Some(evicted) = largest.and_then(|c| p.free.get_mut(&c).and_then(|l| l.pop())) else {
                break;
            };
            p.bytes -= evicted.capacity() * 8;
        }
    }
}

/// Bytes held by free pooled buffers now.
pub fn pooled_bytes() -> usize {
    pool().lock().map_or(0, |p| p.bytes)
}

/// Small buffers are cheap to allocate; only large ones are pooled.
const MIN_POOLED_LEN: usize = 1 << 14;

/// A buffer of `len` words with unspecified contents.
pub(crate) fn take(len: usize) -> Vec<u64> {
    if len >= MIN_POOLED_LEN {
        if let Ok(mut p) = pool().lock() {
            // The smallest free buffer that holds `len` words, wasting at
            // most half of it: ciphertexts shrink by one limb per level, so
            // exact-size classes alone would rarely be reused.
            let class = p.free.range(len..=2 * len).find(|(_, list)| !list.is_empty()).map(|(&c, _)| c);
            if let Some(mut v) = class.and_then(|c| p.free.get_mut(&c).and_then(|list| list.pop())) {
                p.bytes -= v.capacity() * 8;
                // Buffers come back at the length they were last used with;
                // only a gap up to `len` is filled (a whole-buffer fill on
                // every return was a quarter of a bootstrap's memsets).
                if v.len() < len {
                    v.resize(len, 0);
                } else {
                    v.truncate(len);
                }
                return v;
            }
        }
    }
    vec![0; len]
}

/// A zeroed buffer of `len` words.
pub(crate) fn take_zeroed(len: usize) -> Vec<u64> {
    let mut v = take(len);
    v.fill(0);
    v
}

/// A copy of `src`.
pub(crate) fn take_copy(src: &[u64]) -> Vec<u64> {
    let mut v = take(src.len());
    v.copy_from_slice(src);
    v
}

/// Returns a buffer to the pool (dropped if the pool is full). Buffers are
/// keyed by capacity, so a truncated polynomial returns its full buffer.
pub(crate) fn give(v: Vec<u64>) {
    let len = v.capacity();
    if len < MIN_POOLED_LEN {
        return;
    }
    if let Ok(mut p) = pool().lock() {
        // Over budget: evict from the largest other class first (stale
        // sizes from earlier levels), so the working set stays pooled.
        while p.bytes + len * 8 > p.max_bytes {
            let victim = p.free.iter().filter(|(&c, l)| c != len && !l.is_empty()).map(|(&c, _)| c).next_back();
            let Some(evicted) = victim.and_then(|c| p.free.get_mut(&c).and_then(|l| l.pop())) else {
                break;
            };
            p.bytes -= evicted.capacity() * 8;
        }
        if p.bytes + len * 8 <= p.max_bytes {
            p.bytes += len * 8;
            p.free.entry(len).or_default().push(v);
        }
    }
}

/// A pooled scratch buffer, returned to the pool when dropped.
pub(crate) struct Scratch(Vec<u64>);

impl Scratch {
    pub(crate) fn new(len: usize) -> Self {
        Self(take(len))
    }
}

impl std::ops::Deref for Scratch {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [u64] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_the_bound_drops_free_buffers_at_once() {
        give(vec![0u64; MIN_POOLED_LEN * 4]);
        set_max_pooled_bytes(0);
        assert_eq!(pooled_bytes(), 0);
        give(vec![0u64; MIN_POOLED_LEN]);
        assert_eq!(pooled_bytes(), 0, "nothing is kept over the bound");
        set_max_pooled_bytes(DEFAULT_MAX_POOLED_BYTES);
        give(vec![0u64; MIN_POOLED_LEN]);
        assert!(pooled_bytes() >= MIN_POOLED_LEN * 8);
    }
}
