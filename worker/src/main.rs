//! `nexus-worker`: a thin binary over the library. Connects to the
//! coordinator with its certificate from `--certs DIR` (`ca.pem`,
//! `NAME.pem`, `NAME.key` as written by `nexus-coordinator init-certs`) and
//! runs tasks until the coordinator shuts it down.

use anyhow::{Context, Result};
use clap::Parser;
use nexus_proto::tls::{certificate_from_pem, Identity};
use nexus_worker::{run, WorkerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

// Why mimalloc: glibc malloc returns large freed buffers to the kernel and
// re-faults them, which took about a third of the CPU when moving blobs
// over QUIC; mimalloc keeps them (see docs/PERFORMANCE.md, blob transfer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "nexus-worker", version, about = "Nexus worker")]
struct Cli {
    /// Coordinator address, host:port (repeat for every member of the raft
    /// group; the worker follows the leader).
    #[arg(long = "coordinator", required = true)]
    coordinators: Vec<String>,
    /// Name in the coordinator's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Certificate directory.
    #[arg(long)]
    certs: PathBuf,
    /// This worker's certificate name (worker-0 ...).
    #[arg(long)]
    name: String,
    /// Threads for task execution (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Key-cache budget in MiB.
    #[arg(long, default_value_t = 12 * 1024)]
    key_cache_mib: u64,
    /// Free buffers kept for reuse, in MiB (part of the worker's memory
    /// next to the key cache; buffers of evicted key sets return there).
    #[arg(long, default_value_t = 1024)]
    buffer_pool_mib: u64,
    /// Accept key sets at insecure test parameters (never in production).
    #[arg(long)]
    allow_insecure_parameters: bool,
    /// Cache Galois keys without their uniform halves (about half the
    /// memory per key set, for regenerating them at every key switch).
    #[arg(long)]
    lean_keys: bool,
    /// Model root: one directory per BERT-family model (config.json,
    /// model.safetensors, tokenizer.json), named by `bert:NAME@DIGEST:...`
    /// queries (the digest of the client's files: these must be the same).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Exit after this many seconds without reaching any coordinator.
    #[arg(long, default_value_t = 60)]
    reconnect_secs: u64,
    /// Log lines as `text` or `json` (one object per event) on stderr;
    /// `RUST_LOG` filters (default `info`).
    #[arg(long, default_value = "text")]
    log_format: nexus_proto::logging::LogFormat,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    nexus_proto::logging::init(cli.log_format);
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = cli.threads {
        pool = pool.num_threads(t);
    }
    pool.build_global().context("thread pool")?;
    nexus_ckks::ring::set_max_pooled_bytes(usize::try_from(cli.buffer_pool_mib << 20).unwrap_or(usize::MAX));
    let config = WorkerConfig {
        coordinators: cli.coordinators,
        server_name: cli.server_name,
        ca: certificate_from_pem(&read(&cli.certs.join("ca.pem"))?)?,
        identity: Identity::from_pem(
            &read(&cli.certs.join(format!("{}.pem", cli.name)))?,
            &read(&cli.certs.join(format!("{}.key", cli.name)))?,
        )?,
        threads: rayon::current_num_threads() as u32,
        key_cache_bytes: cli.key_cache_mib << 20,
        allow_insecure_parameters: cli.allow_insecure_parameters,
        lean_keys: cli.lean_keys,
        metrics_listen: cli.metrics,
        reconnect_for: std::time::Duration::from_secs(cli.reconnect_secs),
        models: cli.models,
    };
    tracing::info!(name = %cli.name, coordinators = %config.coordinators.join(", "), threads = config.threads, "worker starting");
    run(config).await?;
    tracing::info!("coordinator shut the worker down");
    Ok(())
}
