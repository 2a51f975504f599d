//! Buffers of received blobs, handed back once their bytes are used, for
//! the next blob to fill.
//!
//! A ciphertext at 2^16 is tens of megabytes. Allocations that large come
//! straight from the kernel, which zeroes every page on its first touch:
//! receiving into a fresh buffer per blob spent about a fifth of the
//! loopback transfer's CPU time in page clearing (docs/PERFORMANCE.md).
//! A receiver that decodes a blob and drops it (a worker's task inputs)
//! gives the buffer back here instead, and a sender encodes into a buffer
//! from here that returns when quinn drops it ([`shared`]); the pool keeps
//! a few, bounded in bytes, and a blob too large for any of them gets a
//! fresh one.

use std::sync::Mutex;

/// Buffers kept at most.
const MAX_BUFFERS: usize = 8;
/// Bytes of capacity kept at most, over all buffers.
const MAX_BYTES: usize = 192 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `len` bytes: the smallest kept
/// one that fits without being more than twice as large (a long-lived
/// blob would otherwise pin a much larger buffer: a coordinator in the
/// same process as its workers keeps the blobs it receives), or a new one.
/// Its previous bytes are gone (length 0).
pub fn take(len: usize) -> Vec<u8> {
    let fits = |capacity: usize| capacity >= len && capacity / 2 <= len;
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let best = (0..pool.len()).filter(|&i| fits(pool[i].capacity())).min_by_key(|&i| pool[i].capacity())?;
        Some(pool.swap_remove(best))
    });
    reused.unwrap_or_else(|| Vec::with_capacity(len))
}

/// Hands `buf` back for a later [`take`]. Kept if the pool has room for
/// its capacity, otherwise freed; small buffers are not worth keeping.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < (1 << 20) {
        return;
    }
    buf.clear();
    let Ok(mut pool) = POOL.lock() else { return };
    let kept: usize = pool.iter().map(Vec::capacity).sum();
    if pool.len() < MAX_BUFFERS && kept + buf.capacity() <= MAX_BYTES {
        pool.push(buf);
    }
}

/// `buf` as [`bytes::Bytes`] for quinn (no copy) that hands the buffer
/// back to the pool once the last reference is dropped (the stream's data
/// acknowledged): a sender encoding into [`take`]n buffers reuses them.
pub fn shared(buf: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from_owner(Returned(buf))
}

/// A buffer that goes back to the pool when dropped.
#[derive(Debug)]
struct Returned(Vec<u8>);

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer handed back is taken again (the smallest that fits), comes
    /// back empty, and the pool's bounds hold. One test: the pool is
    /// process-wide.
    #[test]
    fn buffers_are_reused_within_bounds() {
        let mut big = take(4 << 20);
        big.extend_from_slice(&[9; 100]);
        let big_ptr = big.as_ptr();
        let small = Vec::<u8>::with_capacity(2 << 20);
        let small_ptr = small.as_ptr();
        give(big);
        give(small);
        let again = take(1 << 20);
        assert_eq!(again.as_ptr(), small_ptr, "the smallest buffer that fits");
        assert!(again.is_empty());
        let again_big = take(3 << 20);
        assert_eq!(again_big.as_ptr(), big_ptr);
        assert!(again_big.is_empty(), "no bytes of the previous blob");
        assert!(take(64 << 20).capacity() >= 64 << 20, "none fits: a fresh one");
        // A buffer more than twice the blob's size stays in the pool.
        let large = Vec::<u8>::with_capacity(16 << 20);
        let large_ptr = large.as_ptr();
        give(large);
        let (smaller, small_blob) = (take(4 << 20), take(1000));
        assert_ne!(smaller.as_ptr(), large_ptr);
        assert_ne!(small_blob.as_ptr(), large_ptr, "small blobs get small buffers");
        let fitting = take(9 << 20);
        assert_eq!(fitting.as_ptr(), large_ptr);
        // Shared with quinn: back in the pool when the last clone goes.
        let mut sent = take(5 << 20);
        sent.resize(100, 1);
        let sent_ptr = sent.as_ptr();
        let bytes = shared(sent);
        let chunk = bytes.slice(10..20);
        drop(bytes);
        assert!(POOL.lock().unwrap().is_empty(), "still referenced by a chunk");
        drop(chunk);
        let back = take(5 << 20);
        assert_eq!(back.as_ptr(), sent_ptr);
        give(Vec::with_capacity(1024));
        assert!(POOL.lock().unwrap().is_empty(), "small buffers are not kept");
        for _ in 0..MAX_BUFFERS + 4 {
            give(Vec::with_capacity(30 << 20));
        }
        let pool = POOL.lock().unwrap();
        assert!(pool.len() <= MAX_BUFFERS);
        assert!(pool.iter().map(Vec::capacity).sum::<usize>() <= MAX_BYTES);
        assert_eq!(pool.len(), MAX_BYTES / (30 << 20));
    }
}
