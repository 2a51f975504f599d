//! Admission limits that protect the coordinator's memory and fairness
//! between tenants, beyond the replicated queue bounds: a request rate per
//! tenant (token buckets), the bytes of uploads being received at once,
//! and the number of client connections.
//!
//! These are leader-local: a new leader starts with full buckets, which
//! lets a tenant at most one extra burst per failover.

use nexus_proto::ids::TenantId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits configured on a coordinator.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Requests per second a tenant may make, sustained (every request
    /// counts: uploads, submissions, status polls, fetches).
    pub requests_per_second: f64,
    /// Requests a tenant may make at once above the sustained rate.
    pub request_burst: f64,
    /// Queries a tenant may hold at once: pending, or finished and not yet
    /// released (0: only the global queue bound applies).
    pub max_held_per_tenant: u32,
    /// Bytes of blobs (key sets, inputs) being received at once, over all
    /// clients; an upload waits for room up to [`UPLOAD_WAIT`], then is
    /// refused as busy. Must be at least the largest blob accepted.
    pub upload_bytes_in_flight: u64,
    /// Client connections open at once; more are refused at the handshake.
    pub max_client_connections: usize,
    /// Tasks of one key set and model a worker takes in a row while tasks
    /// of others wait (the batcher: queued queries of one key set run
    /// together on the workers holding its keys). 1 alternates task by
    /// task.
    pub batch_tasks: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_second: 200.0,
            request_burst: 400.0,
            max_held_per_tenant: 32,
            upload_bytes_in_flight: 24 << 30,
            max_client_connections: 4096,
            batch_tasks: 64,
        }
    }
}

/// How long an upload waits for room under the in-flight byte budget.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(30);

/// Per-tenant token buckets.
#[derive(Debug)]
pub(crate) struct RequestRates {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RequestRates {
    pub fn new(limits: &Limits) -> Self {
        Self { per_second: limits.requests_per_second, burst: limits.request_burst.max(1.0), buckets: Mutex::default() }
    }

    /// Takes one request from `tenant`'s bucket at `now`, or says how long
    /// until one is available. Only authenticated tenants reach this, so
    /// the map holds at most the configured tenants.
    pub fn take(&self, tenant: &TenantId, now: Instant) -> Result<(), Duration> {
        let unlimited = self.per_second.is_nan() || self.per_second <= 0.0 || self.per_second.is_infinite();
        if unlimited {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

/// The in-flight upload byte budget (counted in KiB so that blobs of
/// many GiB fit a semaphore's permit count).
#[derive(Debug, Clone)]
pub(crate) struct UploadBudget {
    kib: Arc<Semaphore>,
    total_kib: u64,
}

impl UploadBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS as u64);
        Self { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// Room for `bytes`, waiting up to `wait`; `Err` says why not:
    /// [`UploadRefusal::TooLarge`] can never fit, [`UploadRefusal::Busy`]
    /// may on a retry.
    pub async fn reserve(&self, bytes: u64, wait: Duration) -> Result<OwnedSemaphorePermit, UploadRefusal> {
        let kib = bytes.div_ceil(1024);
        if kib > self.total_kib || kib > u32::MAX as u64 {
            return Err(UploadRefusal::TooLarge(format!(
                "an upload of {bytes} bytes exceeds the coordinator's in-flight upload budget of {} bytes",
                self.total_kib * 1024
            )));
        }
        match tokio::time::timeout(wait, self.kib.clone().acquire_many_owned(kib as u32)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(UploadRefusal::Busy("the coordinator is shutting down".into())),
            Err(_) => Err(UploadRefusal::Busy(format!(
                "{bytes} bytes of upload could not start within {wait:?}: other uploads fill the \
                 coordinator's in-flight budget; retry later"
            ))),
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    pub fn available_bytes(&self) -> u64 {
        self.kib.available_permits() as u64 * 1024
    }
}

/// Why an upload cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadRefusal {
    /// Larger than the whole budget: never fits.
    TooLarge(String),
    /// No room within the wait: retry later.
    Busy(String),
}

/// Counts open client connections; a slot is given back when dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionSlots {
    open: Arc<AtomicUsize>,
}

/// One open client connection.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionSlots {
    /// A slot if fewer than `max` are taken.
    pub fn take(&self, max: usize) -> Option<ConnectionSlot> {
        let mut current = self.open.load(Ordering::SeqCst);
        loop {
            if current >= max {
                return None;
            }
            match self.open.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(ConnectionSlot { open: self.open.clone() }),
                Err(now) => current = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let limits = Limits { requests_per_second: 10.0, request_burst: 3.0, ..Limits::default() };
        let rates = RequestRates::new(&limits);
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rates.take(&a, t0).is_ok());
        }
        let wait = rates.take(&a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(rates.take(&b, t0).is_ok(), "b has its own bucket");
        // 100 ms later exactly one more request fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(rates.take(&a, t1).is_ok());
        assert!(rates.take(&a, t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rates.take(&a, t2).is_ok());
        }
        assert!(rates.take(&a, t2).is_err());
    }

    #[test]
    fn a_zero_rate_means_unlimited() {
        let rates = RequestRates::new(&Limits { requests_per_second: 0.0, ..Limits::default() });
        let a = TenantId::new("a").unwrap();
        let now = Instant::now();
        assert!((0..10_000).all(|_| rates.take(&a, now).is_ok()));
    }

    #[tokio::test]
    async fn uploads_wait_for_room_and_oversized_ones_are_refused() {
        let budget = UploadBudget::new(10 << 10);
        let first = budget.reserve(6 << 10, Duration::from_millis(10)).await.unwrap();
        match budget.reserve(6 << 10, Duration::from_millis(20)).await {
            Err(UploadRefusal::Busy(m)) => assert!(m.contains("in-flight budget"), "{m}"),
            other => panic!("expected a busy refusal, got {other:?}"),
        }
        match budget.reserve(11 << 10, Duration::from_secs(1)).await {
            Err(UploadRefusal::TooLarge(m)) => assert!(m.contains("exceeds"), "{m}"),
            other => panic!("expected a too-large refusal, got {other:?}"),
        }
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 << 10, Duration::from_secs(5)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(budget.available_bytes(), 10 << 10);
    }

    #[test]
    fn connection_slots_are_counted_and_given_back() {
        let slots = ConnectionSlots::default();
        let (x, y) = (slots.take(2).unwrap(), slots.take(2).unwrap());
        assert!(slots.take(2).is_none());
        drop(x);
        assert!(slots.take(2).is_some());
        drop(y);
    }
}
