//! Metric names and collectors, declared once (`nexus_<component>_<what>_<unit>`),
//! and a minimal `/metrics` HTTP endpoint in the Prometheus text format.

use crate::error::ProtoError;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn reg_err(e: prometheus::Error) -> ProtoError {
    ProtoError::Io(format!("metrics registry: {e}"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, ProtoError> {
    let c = IntCounter::new(name, help).map_err(reg_err)?;
    registry.register(Box::new(c.clone())).map_err(reg_err)?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, ProtoError> {
    let g = IntGauge::new(name, help).map_err(reg_err)?;
    registry.register(Box::new(g.clone())).map_err(reg_err)?;
    Ok(g)
}

/// The coordinator's metrics.
#[derive(Debug, Clone)]
pub struct CoordinatorMetrics {
    /// Registry they are registered in.
    pub registry: Registry,
    /// Queries admitted.
    pub queries_admitted: IntCounter,
    /// Queries finished.
    pub queries_finished: IntCounter,
    /// Queries failed.
    pub queries_failed: IntCounter,
    /// Queries admitted and not finished.
    pub queue_depth: IntGauge,
    /// Tasks finished, by kind.
    pub tasks: IntCounterVec,
    /// Task latency (dispatch to result), by kind.
    pub task_seconds: HistogramVec,
    /// Query latency, admission to the last checkpoint.
    pub query_seconds: Histogram,
    /// Task attempts retried.
    pub tasks_retried: IntCounter,
    /// Key-set bytes sent to workers.
    pub key_bytes_sent: IntCounter,
    /// Bytes received from clients and workers.
    pub bytes_received: IntCounter,
    /// Bytes sent to clients and workers.
    pub bytes_sent: IntCounter,
    /// Registered workers.
    pub workers: IntGauge,
    /// Raft term this coordinator is in.
    pub raft_term: IntGauge,
    /// 1 while this coordinator leads (and schedules), else 0.
    pub raft_leader: IntGauge,
    /// Times this coordinator became leader.
    pub raft_leader_changes: IntCounter,
    /// Queries resumed from the replicated log after a failover or restart.
    pub queries_resumed: IntCounter,
    /// Client requests refused, by error code (rate limits, quotas, full
    /// queue, bad input, ...).
    pub requests_refused: IntCounterVec,
    /// Client connections refused at the handshake (connection limit).
    pub connections_refused: IntCounter,
    /// Ready tasks waiting for a worker's task slot.
    pub tasks_waiting: IntGauge,
    /// Tasks given to a worker whose previous task used another key set
    /// (or that had none): what the batcher keeps low.
    pub key_set_switches: IntCounter,
    /// Key sets registered (the replicated state, as this member applied it).
    pub key_sets: IntGauge,
    /// Bytes of key sets in this member's key store (its volume, with a
    /// data directory).
    pub key_store_bytes: IntGauge,
}

impl CoordinatorMetrics {
    /// Fresh collectors in a fresh registry.
    pub fn new() -> Result<Self, ProtoError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| counter(&registry, name, help);
        let gauge = |name: &str, help: &str| gauge(&registry, name, help);
        let tasks = IntCounterVec::new(Opts::new("nexus_coordinator_tasks_total", "Tasks finished"), &["kind"])
            .map_err(reg_err)?;
        registry.register(Box::new(tasks.clone())).map_err(reg_err)?;
        let buckets = prometheus::exponential_buckets(0.01, 2.0, 16).map_err(reg_err)?;
        let task_seconds = HistogramVec::new(
            HistogramOpts::new("nexus_coordinator_task_duration_seconds", "Task latency from dispatch to result")
                .buckets(buckets),
            &["kind"],
        )
        .map_err(reg_err)?;
        registry.register(Box::new(task_seconds.clone())).map_err(reg_err)?;
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new("nexus_coordinator_query_duration_seconds", "Query latency from admission to result")
                .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0]),
        )
        .map_err(reg_err)?;
        registry.register(Box::new(query_seconds.clone())).map_err(reg_err)?;
        let requests_refused = IntCounterVec::new(
            Opts::new("nexus_coordinator_requests_refused_total", "Client requests refused"),
            &["code"],
        )
        .map_err(reg_err)?;
        registry.register(Box::new(requests_refused.clone())).map_err(reg_err)?;
        Ok(Self {
            queries_admitted: counter("nexus_coordinator_queries_admitted_total", "Queries admitted")?,
            queries_finished: counter("nexus_coordinator_queries_finished_total", "Queries finished")?,
            queries_failed: counter("nexus_coordinator_queries_failed_total", "Queries failed")?,
            queue_depth: gauge("nexus_coordinator_queue_depth_queries", "Queries admitted and not finished")?,
            tasks,
            task_seconds,
            query_seconds,
            tasks_retried: counter("nexus_coordinator_tasks_retried_total", "Task attempts retried")?,
            key_bytes_sent: counter("nexus_coordinator_key_sent_bytes_total", "Key-set bytes sent to workers")?,
            bytes_received: counter("nexus_coordinator_received_bytes_total", "Bytes received")?,
            bytes_sent: counter("nexus_coordinator_sent_bytes_total", "Bytes sent")?,
            workers: gauge("nexus_coordinator_workers", "Registered workers")?,
            raft_term: gauge("nexus_coordinator_raft_term", "Raft term")?,
            raft_leader: gauge(
                "nexus_coordinator_raft_leader",
                "1 while this coordinator leads and serves (elected and done taking over)",
            )?,
            raft_leader_changes: counter("nexus_coordinator_raft_leader_changes_total", "Times this became leader")?,
            queries_resumed: counter("nexus_coordinator_queries_resumed_total", "Queries resumed after failover")?,
            requests_refused,
            connections_refused: counter(
                "nexus_coordinator_connections_refused_total",
                "Client connections refused at the connection limit",
            )?,
            tasks_waiting: gauge("nexus_coordinator_tasks_waiting", "Ready tasks waiting for a worker's task slot")?,
            key_set_switches: counter(
                "nexus_coordinator_key_set_switches_total",
                "Tasks given to a worker whose previous task used another key set (or none)",
            )?,
            key_sets: gauge("nexus_coordinator_key_sets", "Key sets registered")?,
            key_store_bytes: gauge("nexus_coordinator_key_store_bytes", "Bytes of key sets in this key store")?,
            registry,
        })
    }
}

/// A worker's metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// Registry they are registered in.
    pub registry: Registry,
    /// Key-cache hits.
    pub key_cache_hits: IntCounter,
    /// Key-cache misses (fetches).
    pub key_cache_misses: IntCounter,
    /// Key sets evicted.
    pub key_cache_evictions: IntCounter,
    /// Bytes of key sets held.
    pub key_cache_bytes: IntGauge,
    /// Tasks run.
    pub tasks: IntCounter,
    /// Tasks running now.
    pub busy: IntGauge,
    /// Task execution time.
    pub task_seconds: Histogram,
    /// Wall seconds with at least one task running (tasks running side by
    /// side count once, unlike the task-time sum).
    pub busy_seconds: Counter,
    /// Tasks running, and since when at least one has been.
    occupancy: Arc<Mutex<(u32, Option<Instant>)>>,
}

impl WorkerMetrics {
    /// A task starts: the busy gauge, and the busy time from the first.
    pub fn task_started(&self) {
        self.busy.inc();
        if let Ok(mut o) = self.occupancy.lock() {
            o.0 += 1;
            if o.0 == 1 {
                o.1 = Some(Instant::now());
            }
        }
    }

    /// A task ends: the busy time up to now once none runs.
    pub fn task_ended(&self) {
        self.busy.dec();
        if let Ok(mut o) = self.occupancy.lock() {
            o.0 = o.0.saturating_sub(1);
            if o.0 == 0 {
                if let Some(since) = o.1.take() {
                    self.busy_seconds.inc_by(since.elapsed().as_secs_f64());
                }
            }
        }
    }

    /// Adds the busy time so far of the tasks running now (called before a
    /// scrape, so a long task shows as busy while it runs rather than all
    /// at once when it ends).
    pub fn accrue_busy(&self) {
        if let Ok(mut o) = self.occupancy.lock() {
            if let Some(since) = o.1.as_mut() {
                let now = Instant::now();
                self.busy_seconds.inc_by(now.duration_since(*since).as_secs_f64());
                *since = now;
            }
        }
    }

    /// Fresh collectors in a fresh registry.
    pub fn new() -> Result<Self, ProtoError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| counter(&registry, name, help);
        let gauge = |name: &str, help: &str| gauge(&registry, name, help);
        let buckets = prometheus::exponential_buckets(0.01, 2.0, 16).map_err(reg_err)?;
        let task_seconds = Histogram::with_opts(
            HistogramOpts::new("nexus_worker_task_duration_seconds", "Task execution time").buckets(buckets),
        )
        .map_err(reg_err)?;
        registry.register(Box::new(task_seconds.clone())).map_err(reg_err)?;
        let busy_seconds = Counter::new(
            "nexus_worker_busy_seconds_total",
            "Wall seconds with at least one task running (side-by-side tasks count once)",
        )
        .map_err(reg_err)?;
        registry.register(Box::new(busy_seconds.clone())).map_err(reg_err)?;
        Ok(Self {
            key_cache_hits: counter("nexus_worker_key_cache_hits_total", "Key-cache hits")?,
            key_cache_misses: counter("nexus_worker_key_cache_misses_total", "Key-cache misses (fetches)")?,
            key_cache_evictions: counter("nexus_worker_key_cache_evictions_total", "Key sets evicted")?,
            key_cache_bytes: gauge("nexus_worker_key_cache_bytes", "Bytes of key sets held")?,
            tasks: counter("nexus_worker_tasks_total", "Tasks run")?,
            busy: gauge("nexus_worker_busy_tasks", "Tasks running now")?,
            task_seconds,
            busy_seconds,
            occupancy: Arc::new(Mutex::new((0, None))),
            registry,
        })
    }
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Serves `GET /metrics` on `addr` (plain HTTP/1.1, one response per
/// connection); returns the bound address.
pub async fn serve(registry: Registry, addr: SocketAddr) -> Result<SocketAddr, ProtoError> {
    serve_with(registry, addr, Arc::new(|| {})).await
}

/// [`serve`], calling `before_render` ahead of each scrape (to bring
/// counters that accrue over time, such as busy seconds, up to date).
pub async fn serve_with(
    registry: Registry,
    addr: SocketAddr,
    before_render: Arc<dyn Fn() + Send + Sync>,
) -> Result<SocketAddr, ProtoError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| ProtoError::Io(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| ProtoError::Io(e.to_string()))?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (registry, before_render) = (registry.clone(), before_render.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let n = stream.read(&mut req).await.unwrap_or(0);
                let (status, body) = if req[..n].starts_with(b"GET /metrics") {
                    before_render();
                    ("200 OK", render(&registry))
                } else {
                    ("404 Not Found", "only GET /metrics is served\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
