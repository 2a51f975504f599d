//! Load on loopback: 50 concurrent clients (five tenants, ten clients
//! each, every client its own QUIC connection) submit the demo model to a
//! real coordinator process with two worker processes for a bounded time,
//! against tight per-tenant limits (request rate, held-query quota, a
//! small upload budget and queue). Every accepted query must come back
//! correct (nothing accepted is lost), refusals must be the typed
//! backpressure ones, and the coordinator's and workers' peak memory must
//! stay within what the configured limits allow.
//!
//! Reports one JSON line (throughput, latency percentiles, refusals, peak
//! memory). `NEXUS_LOAD_SECONDS` sets the submission window (default 20);
//! `NEXUS_LOAD_CLIENTS` the client count (default 50, five tenants).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_client::cluster::{ClientError, ClusterClient};
use nexus_nn::DEMO_MODEL;
use nexus_proto::ids::TenantId;
use nexus_proto::messages::ErrorCode;
use nexus_proto::tls::certificate_from_pem;
use nexus_tests::{binary, free_tcp_port, metric, scrape, DemoClient, Killed};
use quinn::rustls::pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const TENANTS: usize = 5;
/// Per-tenant limits under test.
const RATE: f64 = 40.0;
const BURST: f64 = 40.0;
const HELD: usize = 4;
const MAX_QUEUED: usize = 12;
const UPLOAD_BUDGET: u64 = 32 << 20;
const WORKER_CACHE_MIB: u64 = 64;
const WORKER_POOL_MIB: u64 = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident memory of process `pid` in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A new connection of tenant `t{t}` (token `token-{t}`).
async fn connect_tenant(addr: SocketAddr, ca: &CertificateDer<'static>, t: usize) -> ClusterClient {
    ClusterClient::connect(addr, "localhost", ca, TenantId::new(&format!("t{t}")).unwrap(), format!("token-{t}"))
        .await
        .unwrap()
}

#[derive(Default, Debug)]
struct Tally {
    accepted: u64,
    completed: u64,
    wrong: u64,
    latencies: Vec<f64>,
    refused: BTreeMap<String, u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_under_tenant_limits_lose_nothing_and_stay_within_memory() {
    let seconds = env_or("NEXUS_LOAD_SECONDS", 20);
    let clients_total = env_or("NEXUS_LOAD_CLIENTS", 50) as usize;
    let coordinator_bin = binary("nexus-coordinator", "nexus-coordinator");
    let worker_bin = binary("nexus-worker", "nexus-worker");
    let dir = std::env::temp_dir().join(format!("nexus-load-{}", std::process::id()));
    let certs = dir.join("certs");
    assert!(Command::new(&coordinator_bin)
        .args(["init-certs", "--dir", certs.to_str().unwrap(), "--workers", "2"])
        .status()
        .unwrap()
        .success());
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let tenants: String = (0..TENANTS).map(|t| format!("t{t} = \"token-{t}\"\n")).collect();
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncerts = \"{}\"\nmetrics = \"{metrics}\"\nmax_queued = {MAX_QUEUED}\n\
             max_blob = {UPLOAD_BUDGET}\n\n[limits]\nrequests_per_second = {RATE}\nrequest_burst = {BURST}\n\
             max_held_per_tenant = {HELD}\nupload_bytes_in_flight = {UPLOAD_BUDGET}\n\n[tenants]\n{tenants}",
            certs.display()
        ),
    )
    .unwrap();
    let mut children = Killed::default();
    let mut coord = Command::new(&coordinator_bin)
        .args(["run", "--config", config.to_str().unwrap(), "--print-addr"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(coord.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let coordinator_pid = coord.id();
    children.0.push(coord);
    let addr: SocketAddr = line.trim().parse().unwrap();
    let mut worker_pids = Vec::new();
    for i in 0..2 {
        let w = Command::new(&worker_bin)
            .args(["--coordinator", &addr.to_string(), "--certs", certs.to_str().unwrap()])
            .args(["--name", &format!("worker-{i}"), "--threads", "1", "--allow-insecure-parameters"])
            .args(["--key-cache-mib", &WORKER_CACHE_MIB.to_string()])
            .args(["--buffer-pool-mib", &WORKER_POOL_MIB.to_string()])
            .spawn()
            .unwrap();
        worker_pids.push(w.id());
        children.0.push(w);
    }
    let ca = certificate_from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();

    // Each tenant its own keys; key sets registered once per tenant.
    let mut demos = Vec::new();
    let mut key_sets = Vec::new();
    for t in 0..TENANTS {
        let demo = Arc::new(DemoClient::new(16));
        let c = connect_tenant(addr, &ca, t).await;
        key_sets.push(c.register_keys(&demo.keys, demo.params.digest()).await.unwrap().0);
        demos.push(demo);
    }
    let baseline = peak_rss(coordinator_pid);
    let key_set_memory = nexus_nn::KeySet::from_bytes(&demos[0].keys, 1 << 30, true).unwrap().memory_bytes() as u64;
    let query_bytes = demos[0].inputs().iter().map(Vec::len).sum::<usize>() as u64;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let stop_submitting = start + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for i in 0..clients_total {
        let t = i % TENANTS;
        let (demo, key_set, tally, ca) = (demos[t].clone(), key_sets[t], tally.clone(), ca.clone());
        handles.push(tokio::spawn(async move {
            let client = connect_tenant(addr, &ca, t).await;
            let inputs = demo.inputs();
            while Instant::now() < stop_submitting {
                let submitted = Instant::now();
                let query = match client.submit(key_set, DEMO_MODEL, &inputs).await {
                    Ok(q) => q,
                    Err(ClientError::Refused(e)) => {
                        // Backpressure is the only acceptable refusal.
                        assert!(
                            matches!(e.code, ErrorCode::Busy | ErrorCode::QuotaExceeded | ErrorCode::RateLimited),
                            "unexpected refusal {e:?}"
                        );
                        *tally.lock().await.refused.entry(format!("{:?}", e.code)).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(100 + rand::random::<u64>() % 100)).await;
                        continue;
                    }
                    Err(e) => panic!("client {i}: {e}"),
                };
                tally.lock().await.accepted += 1;
                // Accepted: it must come back, correct, even after the window.
                client.wait(query, Duration::from_secs(300)).await.unwrap();
                let err = demo.max_error(&client.fetch(query).await.unwrap());
                client.release(query).await.unwrap();
                let mut tl = tally.lock().await;
                tl.completed += 1;
                tl.latencies.push(submitted.elapsed().as_secs_f64());
                if err >= 1e-4 {
                    tl.wrong += 1;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let text = scrape(metrics).unwrap_or_default();
    let rate_limited = text
        .lines()
        .find_map(|l| l.strip_prefix("nexus_coordinator_requests_refused_total{code=\"RateLimited\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let finished = metric(&text, "nexus_coordinator_queries_finished_total").unwrap_or(0.0);
    let coordinator_peak = peak_rss(coordinator_pid);
    let worker_peak = worker_pids.iter().map(|&p| peak_rss(p)).max().unwrap_or(0);
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);

    let mut tl = tally.lock().await;
    tl.latencies.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "test": "load", "clients": clients_total, "tenants": TENANTS, "seconds": elapsed,
        "accepted": tl.accepted, "completed": tl.completed, "wrong": tl.wrong,
        "throughput_qps": tl.completed as f64 / elapsed,
        "latency_p50_s": percentile(&tl.latencies, 0.5), "latency_p95_s": percentile(&tl.latencies, 0.95),
        "latency_p99_s": percentile(&tl.latencies, 0.99),
        "refused_at_submit": tl.refused, "rate_limited_requests": rate_limited,
        "coordinator_peak_rss_mb": coordinator_peak as f64 / 1048576.0,
        "coordinator_baseline_rss_mb": baseline as f64 / 1048576.0,
        "worker_peak_rss_mb": worker_peak as f64 / 1048576.0,
        "query_bytes": query_bytes, "key_set_memory_mb": key_set_memory as f64 / 1048576.0,
    });
    println!("{report}");

    assert!(tl.accepted > 0, "nothing was accepted: {report}");
    assert_eq!(tl.completed, tl.accepted, "accepted queries lost: {report}");
    assert_eq!(tl.wrong, 0, "wrong results: {report}");
    assert!(finished >= tl.accepted as f64, "coordinator finished {finished} of {} accepted", tl.accepted);
    assert!(!tl.refused.is_empty() || rate_limited > 0.0, "the limits were never reached, so not tested: {report}");
    // What the limits allow the coordinator to hold beyond its state after
    // key registration: every tenant's held queries (inputs, checkpoints
    // and outputs: three copies at most, each freed ciphertext possibly
    // kept by the allocator), the upload budget being received, and
    // transport buffers; 256 MiB of slack for the runtime and allocator.
    let allowed = baseline + (TENANTS * HELD) as u64 * query_bytes * 3 + UPLOAD_BUDGET + (256 << 20);
    assert!(coordinator_peak <= allowed, "coordinator peak {coordinator_peak} over {allowed}: {report}");
    // A worker holds its key cache (one key set at least), its buffer
    // pool, the key set its one running task pins and the one being fetched
    // and decoded (wire bytes and decoded form), a task's working set and
    // its runtime.
    let worker_allowed =
        (WORKER_CACHE_MIB << 20).max(key_set_memory) + (WORKER_POOL_MIB << 20) + 3 * key_set_memory + (256 << 20);
    assert!(worker_peak <= worker_allowed, "worker peak {worker_peak} over {worker_allowed}: {report}");
}
