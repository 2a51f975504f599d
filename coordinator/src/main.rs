//! `nexus-coordinator`: a thin binary over the library.
//!
//! - `init-certs --dir DIR --workers N`: writes the cluster CA, the
//!   coordinator's certificate and one certificate per worker (PEM).
//! - `run [--config FILE] [--listen ADDR] [--certs DIR] [--tenant NAME=TOKEN]...`:
//!   serves until interrupted. The TOML file holds the same keys as the
//!   flags (`listen`, `certs`, `max_queued`, `max_blob`, `max_attempts`,
//!   `metrics`, `raft_id`, `raft_listen`, `data_dir`, `[tenants]`,
//!   `[[peers]]` with `id`, `raft`, `public`, and `[limits]` with
//!   `requests_per_second`, `request_burst`, `max_held_per_tenant`,
//!   `upload_bytes_in_flight`, `max_client_connections`, `batch_tasks`);
//!   flags override it.
//!
//! A raft group of three: start each with its own `--id`, `--raft-listen`
//! and `--data-dir`, and the same three `--peer ID=RAFT_ADDR=PUBLIC_ADDR`.
//! Without peers the coordinator is a group of one (durable if
//! `--data-dir` is given).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nexus_coordinator::limits::Limits;
use nexus_coordinator::{Coordinator, CoordinatorConfig, PeerConfig, RaftSettings};
use nexus_proto::logging::LogFormat;
use nexus_proto::tls::{certificate_from_pem, ClusterCa, Identity};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

// Why mimalloc: glibc malloc returns large freed buffers to the kernel and
// re-faults them, which took about a third of the CPU when moving blobs
// over QUIC; mimalloc keeps them (see docs/PERFORMANCE.md, blob transfer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "nexus-coordinator", version, about = "Nexus coordinator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a CA and leaf certificates for a cluster.
    InitCerts {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Worker certificates to issue (worker-0 ...).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Names the coordinator is reached by (DNS names or IPs).
        #[arg(long = "name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
    /// Serve.
    Run(Box<RunArgs>),
}

/// `run`'s flags.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory with ca.pem, coordinator.pem, coordinator.key.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Tenant credentials, NAME=TOKEN (repeatable).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Print the bound address on stdout once listening (for scripts).
    #[arg(long)]
    print_addr: bool,
    /// Log lines as `text` or `json` (one object per event) on stderr;
    /// `RUST_LOG` filters (default `info`).
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// This coordinator's raft id.
    #[arg(long)]
    id: Option<u64>,
    /// Raft group member, ID=RAFT_ADDR=PUBLIC_ADDR (repeat for every
    /// member, this one included).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Raft endpoint listen address.
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// Directory of the raft log (durable state).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Queries admitted and not finished, at most (default 64).
    #[arg(long)]
    max_queued: Option<usize>,
    /// Largest blob accepted in bytes (default 16 GiB).
    #[arg(long)]
    max_blob: Option<u64>,
    /// Attempts per task before its query fails (default 3).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Requests per second per tenant, sustained (default 200; 0: no limit).
    #[arg(long)]
    requests_per_second: Option<f64>,
    /// Queries a tenant may hold, pending or finished and not released
    /// (default 32; 0: no per-tenant bound).
    #[arg(long)]
    max_held_per_tenant: Option<u32>,
    /// Tasks of one key set and model a worker takes in a row while others
    /// wait (default 64; 1 alternates task by task).
    #[arg(long)]
    batch_tasks: Option<u32>,
}

/// `[limits]` in the TOML file (defaults: [`Limits::default`]).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    requests_per_second: Option<f64>,
    request_burst: Option<f64>,
    max_held_per_tenant: Option<u32>,
    upload_bytes_in_flight: Option<u64>,
    max_client_connections: Option<usize>,
    batch_tasks: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    certs: Option<PathBuf>,
    max_queued: Option<usize>,
    max_blob: Option<u64>,
    max_attempts: Option<u32>,
    metrics: Option<SocketAddr>,
    raft_id: Option<u64>,
    raft_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tenants: HashMap<String, String>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    id: u64,
    raft: String,
    public: String,
}

/// The limits: defaults, then the file's `[limits]`, then flags.
fn limits(
    file: &FileLimits,
    requests_per_second: Option<f64>,
    max_held_per_tenant: Option<u32>,
    batch_tasks: Option<u32>,
) -> Result<Limits> {
    let d = Limits::default();
    let l = Limits {
        requests_per_second: requests_per_second.or(file.requests_per_second).unwrap_or(d.requests_per_second),
        request_burst: file.request_burst.unwrap_or(d.request_burst),
        max_held_per_tenant: max_held_per_tenant.or(file.max_held_per_tenant).unwrap_or(d.max_held_per_tenant),
        upload_bytes_in_flight: file.upload_bytes_in_flight.unwrap_or(d.upload_bytes_in_flight),
        max_client_connections: file.max_client_connections.unwrap_or(d.max_client_connections),
        batch_tasks: batch_tasks.or(file.batch_tasks).unwrap_or(d.batch_tasks),
    };
    if l.requests_per_second.is_nan() || l.requests_per_second < 0.0 || l.requests_per_second.is_infinite() {
        bail!("requests_per_second {}: expected a finite number >= 0", l.requests_per_second);
    }
    if l.request_burst.is_nan() || l.request_burst < 1.0 || l.request_burst.is_infinite() {
        bail!("request_burst {}: expected a finite number >= 1", l.request_burst);
    }
    if l.max_client_connections == 0 {
        bail!("max_client_connections 0 would refuse every client");
    }
    if l.batch_tasks == 0 {
        bail!("batch_tasks 0: expected at least 1 (1 alternates key sets task by task)");
    }
    Ok(l)
}

fn parse_peer(spec: &str) -> Result<PeerConfig> {
    let parts: Vec<&str> = spec.split('=').collect();
    let [id, raft, public] = parts[..] else { bail!("--peer {spec:?}: expected ID=RAFT_ADDR=PUBLIC_ADDR") };
    let id = id.parse().with_context(|| format!("--peer {spec:?}: id {id:?} is not a number"))?;
    if id == 0 {
        bail!("--peer {spec:?}: raft ids start at 1");
    }
    Ok(PeerConfig { id, raft: raft.to_string(), public: public.to_string() })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn init_certs(dir: &Path, workers: usize, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = ClusterCa::generate("nexus cluster CA")?;
    write(&dir.join("ca.pem"), &ca.certificate_pem())?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (chain, key) = ca.issue_coordinator(&names)?.to_pem();
    write(&dir.join("coordinator.pem"), &chain)?;
    write(&dir.join("coordinator.key"), &key)?;
    for i in 0..workers {
        let name = format!("worker-{i}");
        let (chain, key) = ca.issue(&name, &[&name])?.to_pem();
        write(&dir.join(format!("{name}.pem")), &chain)?;
        write(&dir.join(format!("{name}.key")), &key)?;
    }
    eprintln!("wrote ca.pem, coordinator.{{pem,key}} and {workers} worker certificates to {}", dir.display());
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::InitCerts { dir, workers, names } => init_certs(&dir, workers, &names),
        Command::Run(args) => {
            let RunArgs {
                config,
                listen,
                certs,
                tenants,
                print_addr,
                log_format,
                metrics,
                id,
                peers,
                raft_listen,
                data_dir,
                max_queued,
                max_blob,
                max_attempts,
                requests_per_second,
                max_held_per_tenant,
                batch_tasks,
            } = *args;
            nexus_proto::logging::init(log_format);
            let file: FileConfig = match &config {
                Some(path) => {
                    let text = String::from_utf8(read(path)?).context("config is not UTF-8")?;
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
                }
                None => FileConfig::default(),
            };
            let mut tenant_map = file.tenants;
            for t in tenants {
                let Some((name, token)) = t.split_once('=') else { bail!("--tenant {t:?}: expected NAME=TOKEN") };
                tenant_map.insert(name.to_string(), token.to_string());
            }
            if tenant_map.is_empty() {
                bail!("no tenants configured: pass --tenant NAME=TOKEN or a [tenants] table");
            }
            let certs = certs.or(file.certs).context("no certificate directory: pass --certs or set `certs`")?;
            let ca = certificate_from_pem(&read(&certs.join("ca.pem"))?)?;
            let identity =
                Identity::from_pem(&read(&certs.join("coordinator.pem"))?, &read(&certs.join("coordinator.key"))?)?;
            let config = CoordinatorConfig {
                listen: listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7443))),
                ca,
                identity,
                tenants: tenant_map,
                max_queued: max_queued.or(file.max_queued).unwrap_or(64),
                max_blob: max_blob.or(file.max_blob).unwrap_or(16 << 30),
                max_attempts: max_attempts.or(file.max_attempts).unwrap_or(3),
                metrics_listen: metrics.or(file.metrics),
                raft: RaftSettings {
                    id: id.or(file.raft_id).unwrap_or(1),
                    peers: if peers.is_empty() {
                        file.peers
                            .into_iter()
                            .map(|p| PeerConfig { id: p.id, raft: p.raft, public: p.public })
                            .collect()
                    } else {
                        peers.iter().map(|p| parse_peer(p)).collect::<Result<_>>()?
                    },
                    listen: raft_listen.or(file.raft_listen),
                    dir: data_dir.or(file.data_dir),
                    ..RaftSettings::default()
                },
                limits: limits(&file.limits, requests_per_second, max_held_per_tenant, batch_tasks)?,
            };
            let coordinator = Coordinator::start(config).await?;
            if let Some(m) = coordinator.metrics_addr() {
                tracing::info!(url = %format!("http://{m}/metrics"), "serving metrics");
            }
            let addr = coordinator.local_addr()?;
            if print_addr {
                println!("{addr}");
                if let Some(raft) = coordinator.raft_addr() {
                    println!("{raft}");
                }
            }
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            tracing::info!("interrupted: shutting down");
            coordinator.shutdown().await;
            Ok(())
        }
    }
}
