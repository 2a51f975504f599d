//! The `nexus` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nexus_client::demo::{run, DemoConfig};
use nexus_client::{commands, infer, scaling};
use std::path::PathBuf;

// Why mimalloc: glibc malloc returns large freed buffers to the kernel and
// re-faults them, which took about a third of the CPU when moving blobs
// over QUIC; mimalloc keeps them (see docs/PERFORMANCE.md, blob transfer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "nexus", version, about = "Nexus: transformer inference on homomorphically encrypted data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an encrypted inference through an in-process cluster (one
    /// coordinator, workers, QUIC with mutual TLS on loopback) and compare
    /// it with plaintext.
    Demo {
        /// Parameter preset (see nexus_ckks::presets).
        #[arg(long, default_value = "N15_QP860_TERN")]
        preset: String,
        /// Tokens in the batch.
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Workers in the cluster.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Threads for the engine (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print progress as text and, last, one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Generate a secret key, a public key and a model's evaluation keys
    /// into a client directory.
    Keygen {
        /// Client directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// Parameter preset.
        #[arg(long, default_value = "N15_QP860_TERN")]
        preset: String,
        /// Model the keys serve: mlp-demo, gelu, layernorm (rows of 768),
        /// softmax (rows of 128, values in [-10, 0]) or bert (a
        /// BERT-family encoder from --model-dir; text in, embedding out;
        /// needs a preset with bootstrapping, N16_QP1545_H192).
        #[arg(long, default_value = "mlp-demo")]
        model: String,
        /// With --model bert: the model directory (config.json,
        /// model.safetensors, tokenizer.json); the workers serve a
        /// directory of the same name under their --models root.
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// With --model bert: longest sentence in tokens, [CLS] and [SEP]
        /// included (the keys cover its power-of-two block).
        #[arg(long, default_value_t = 32, requires = "model_dir")]
        max_tokens: usize,
        /// With --model bert: run only the first N layers.
        #[arg(long, requires = "model_dir")]
        layers: Option<usize>,
        /// With --model bert: sentences per query (throughput mode above
        /// 1): they are packed side by side in one ciphertext and run
        /// together, for the time of one. The keys cover exactly this
        /// many blocks; a query of fewer fills the rest with copies of
        /// its first sentence. MiniLM at 16 tokens fits 4 at N16_QP1545_H192.
        #[arg(long, default_value_t = 1, requires = "model_dir")]
        sentences: usize,
        /// With --model bert: a zero-shot classification head, one class
        /// per label text (separated by ';'); the keys then cover a head
        /// and every query asks the workers for its class too (`fetch`
        /// prints the embedding and the class).
        #[arg(long, requires = "model_dir")]
        labels: Option<String>,
        /// With --model bert: a trained classification head instead,
        /// `heads/NAME.safetensors` in the model directory (Hugging Face
        /// `classifier.weight` and `classifier.bias` over the mean-pooled
        /// embedding; classes named by the header's `labels` metadata,
        /// separated by ';', else by index). The workers read the file of
        /// the same name in their copy of the model.
        #[arg(long, value_name = "NAME", requires = "model_dir", conflicts_with = "labels")]
        head: Option<String>,
    },
    /// Evaluation keys.
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
    /// Encrypt a JSON matrix (one row per token, the model's row width)
    /// or, for a BERT-family model, sentences (up to the keys'
    /// --sentences, in one query), and submit it; prints the query id.
    Submit {
        /// Client directory.
        #[arg(long)]
        dir: PathBuf,
        /// JSON file: an array of rows of numbers.
        #[arg(long, required_unless_present_any = ["text", "text_file"], conflicts_with_all = ["text", "text_file"])]
        input: Option<PathBuf>,
        /// A sentence (BERT-family models: tokenized, embedded and
        /// encrypted here); repeatable.
        #[arg(long)]
        text: Vec<String>,
        /// A file with one sentence per line (blank lines skipped), after
        /// any --text.
        #[arg(long)]
        text_file: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// A query's progress.
    Status {
        /// Query id (q123).
        query: String,
        /// Redraw a progress bar until the query ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Fetch and decrypt a finished query's result (JSON rows).
    Fetch {
        /// Client directory.
        #[arg(long)]
        dir: PathBuf,
        /// Query id (q123).
        query: String,
        /// Write the JSON here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Once the result is written, delete it on the coordinator (it
        /// then stops counting against the tenant's query quota).
        #[arg(long)]
        release: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Encrypted sentence embeddings with a BERT-family model, in this
    /// process (latency mode): one JSON object per sentence.
    Infer {
        /// Model directory: config.json, model.safetensors, tokenizer.json
        /// (ops/models/fetch-minilm.sh fetches all-MiniLM-L6-v2).
        #[arg(long)]
        model: PathBuf,
        /// A sentence (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// A file with one sentence per line.
        #[arg(long)]
        text_file: Option<PathBuf>,
        /// Tokens per sentence including [CLS] and [SEP].
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
        /// Parameter preset (with a bootstrapping configuration).
        #[arg(long, default_value = "N16_QP1545_H192")]
        preset: String,
        /// Run only the first N layers (quick measurements).
        #[arg(long)]
        layers: Option<usize>,
        /// Margin on the calibrated value ranges.
        #[arg(long, default_value_t = 1.5)]
        margin: f64,
        /// Engine threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// One JSON object per sentence on stdout (progress on stderr).
        #[arg(long)]
        json: bool,
        /// Throughput mode: sentences share ciphertexts (as many as fit
        /// one, at the longest sentence's token block) and run together.
        #[arg(long)]
        batch: bool,
        /// With --batch: at most this many sentences per ciphertext.
        #[arg(long, requires = "batch")]
        batch_size: Option<usize>,
        /// A classification head (safetensors with Hugging Face's
        /// classifier.weight and classifier.bias) run after the pooling,
        /// ending in an encrypted Argmax.
        #[arg(long, conflicts_with = "labels")]
        head: Option<PathBuf>,
        /// A zero-shot head instead: one class per label text (separated
        /// by ';'), weighted by the model's embedding of it.
        #[arg(long)]
        labels: Option<String>,
        /// The head's Argmax resolves top-two gaps of 2^-BITS of its
        /// range (the logit bound): more bits, finer and slower.
        #[arg(long, value_name = "BITS", default_value_t = nexus_nn::bert::head::DEFAULT_GAP_BITS)]
        head_gap_bits: u32,
        /// Which Galois keys to hold lean (uniform halves regenerated from
        /// their seeds at each use): less memory, slower key switches.
        #[arg(long, value_enum, default_value_t = infer::LeanKeys::default())]
        lean_keys: infer::LeanKeys,
        /// With --batch: run two batches of as many sentences side by side,
        /// every bootstrap shared by both (2), or one at a time (1).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2), requires = "batch")]
        lanes: u8,
    },
    /// A BERT-family model directory as query ids name it: one JSON line,
    /// `{"model": "NAME@DIGEST", "heads": {"NAME": "DIGEST", ...}}` (the
    /// digest of the files the client reads, and of each trained head in
    /// its heads/). Run it on a client's copy and on the workers' to see
    /// whether they would serve the client's queries.
    Digest {
        /// Model directory: config.json, model.safetensors, tokenizer.json.
        model_dir: PathBuf,
    },
    /// Cluster benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Scaling projection: calibrate per-task costs here, run the batch
    /// through 1 and 2 worker processes, validate the discrete-event model
    /// against both, and project throughput for 1 to 256 workers (one JSON
    /// object per line).
    Sim {
        /// Parameter preset.
        #[arg(long, default_value = "N15_QP860_TERN")]
        preset: String,
        /// Tokens per query.
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        /// Queries per worker in each batch (the batch grows with the cluster).
        #[arg(long, default_value_t = 8)]
        queries_per_worker: usize,
        /// Worker counts to project.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,256")]
        workers: Vec<usize>,
        /// The coordinator's link in the projection, Gbit/s.
        #[arg(long, default_value_t = 10.0)]
        link_gbps: f64,
        /// Link used for validation on this machine (loopback QUIC with
        /// TLS and hashing), GB/s.
        #[arg(long, default_value_t = 0.2)]
        loopback_gbs: f64,
        /// Coordinator CPU per task (dispatch and replicated checkpoint), ms;
        /// replaced by the value measured in the 1-worker run unless
        /// --no-validate.
        #[arg(long, default_value_t = 2.0)]
        coordinator_ms: f64,
        /// Skip the cluster runs (projection only).
        #[arg(long)]
        no_validate: bool,
        /// Also project CPU and GPU mixes, a GPU worker running the tasks
        /// this many times faster than a CPU worker (from a GPU worker's
        /// measured costs; no default: none is measured here).
        #[arg(long)]
        gpu_speedup: Option<f64>,
        /// With --gpu-speedup: the GPU share of each projected cluster.
        #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1")]
        gpu_shares: Vec<f64>,
        /// Project a workload measured elsewhere instead of calibrating the
        /// demo model: a JSON costs object (`ops/bench/task-costs.py` makes
        /// one from a cluster run's logs). Projection only; its
        /// coordinator CPU per task replaces --coordinator-ms.
        #[arg(long, conflicts_with_all = ["preset", "tokens"])]
        costs: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Upload the evaluation keys (once per key set; a repeat is a no-op).
    Upload {
        /// Client directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete the uploaded key set from the cluster (refused while queries
    /// on it are unfinished); the keys stay in the directory.
    Delete {
        /// Client directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// How to reach the cluster. The token comes from `NEXUS_TOKEN` or
/// `--token-file`, never from the command line.
#[derive(clap::Args, Debug)]
struct ConnArgs {
    /// Coordinator address host:port (repeat for every member).
    #[arg(long = "coordinator", required = true)]
    coordinators: Vec<String>,
    /// Name on the coordinators' certificates.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Cluster CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Tenant name.
    #[arg(long)]
    tenant: String,
    /// File holding the tenant's token (else the NEXUS_TOKEN variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl ConnArgs {
    fn connection(&self) -> Result<commands::Connection> {
        let token = match &self.token_file {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?.trim().to_string()
            }
            None => std::env::var("NEXUS_TOKEN").context("no token: set NEXUS_TOKEN or pass --token-file")?,
        };
        Ok(commands::Connection {
            coordinators: self.coordinators.clone(),
            server_name: self.server_name.clone(),
            ca: self.ca.clone(),
            tenant: self.tenant.clone(),
            token,
        })
    }
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// A batch of queries through K local worker processes: throughput and
    /// latency percentiles (one JSON object).
    Cluster {
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Queries in the batch.
        #[arg(long, default_value_t = 8)]
        queries: usize,
        /// Parameter preset.
        #[arg(long, default_value = "N15_QP860_TERN")]
        preset: String,
        /// Tokens per query.
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
    },
}

/// The `nexus-worker` binary next to this one.
fn worker_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("nexus-worker");
    if !path.exists() {
        anyhow::bail!("{} not found: build it with `cargo build --release -p nexus-worker`", path.display());
    }
    Ok(path)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| anyhow::anyhow!("{e}");
    match cli.command {
        Command::Keygen { dir, preset, model, model_dir, max_tokens, layers, sentences, labels, head } => {
            let labels = labels.map(|l| l.split(';').map(|s| s.trim().to_string()).collect::<Vec<_>>());
            let encoder = model_dir.map(|dir| nexus_client::encoder::EncoderChoice {
                dir,
                layers: layers.unwrap_or(0),
                max_tokens,
                sentences,
                labels,
                // The name, as the file in heads/ is called without its
                // extension.
                head: head.map(|h| h.trim().trim_end_matches(".safetensors").to_string()),
            });
            println!("{}", commands::keygen(&dir, &preset, &model, encoder).map_err(boxed)?);
            Ok(())
        }
        Command::Keys { what: KeysCommand::Upload { dir, conn } } => {
            let conn = conn.connection()?;
            println!("{}", runtime()?.block_on(commands::upload(&dir, &conn)).map_err(boxed)?);
            Ok(())
        }
        Command::Keys { what: KeysCommand::Delete { dir, conn } } => {
            let conn = conn.connection()?;
            println!("{}", runtime()?.block_on(commands::delete_keys(&dir, &conn)).map_err(boxed)?);
            Ok(())
        }
        Command::Submit { dir, input, text, text_file, conn } => {
            let conn = conn.connection()?;
            let mut texts = text;
            if let Some(path) = text_file {
                let body = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
            }
            let input = match (input, texts.is_empty()) {
                (Some(path), _) => commands::QueryInput::Matrix(path),
                (None, false) => commands::QueryInput::Texts(texts),
                (None, true) => anyhow::bail!("pass --input, or --text / --text-file with at least one sentence"),
            };
            println!("{}", runtime()?.block_on(commands::submit(&dir, &conn, &input)).map_err(boxed)?);
            Ok(())
        }
        Command::Status { query, watch, conn } => {
            let query = commands::parse_query(&query).map_err(|e| anyhow::anyhow!(e))?;
            let conn = conn.connection()?;
            runtime()?.block_on(commands::status(&conn, query, watch)).map_err(boxed)
        }
        Command::Fetch { dir, query, out, release, conn } => {
            let query = commands::parse_query(&query).map_err(|e| anyhow::anyhow!(e))?;
            let conn = conn.connection()?;
            let rt = runtime()?;
            let fetched = rt.block_on(commands::fetch(&dir, &conn, query)).map_err(boxed)?;
            let text = serde_json::to_string(&fetched)?;
            match out {
                Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
                None => println!("{text}"),
            }
            if release {
                rt.block_on(commands::release(&conn, query)).map_err(boxed)?;
                eprintln!("released {query}");
            }
            Ok(())
        }
        Command::Infer {
            model,
            text,
            text_file,
            max_tokens,
            preset,
            layers,
            margin,
            threads,
            json: as_json,
            batch,
            batch_size,
            head,
            labels,
            head_gap_bits,
            lean_keys,
            lanes,
        } => {
            if let Some(t) = threads {
                rayon::ThreadPoolBuilder::new().num_threads(t).build_global()?;
            }
            let mut texts = text;
            if let Some(path) = text_file {
                let body = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
            }
            if texts.is_empty() {
                anyhow::bail!("no input: pass --text or --text-file");
            }
            if batch_size == Some(0) {
                anyhow::bail!("--batch-size must be at least 1");
            }
            let batch = batch.then(|| batch_size.unwrap_or(0));
            let head = match (head, labels) {
                (Some(path), _) => Some(infer::HeadSource::File(path)),
                (None, Some(l)) => {
                    let labels: Vec<String> =
                        l.split(';').map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
                    if labels.len() < 2 {
                        anyhow::bail!("--labels needs at least two labels separated by ';'");
                    }
                    Some(infer::HeadSource::Labels(labels))
                }
                (None, None) => None,
            };
            let options = infer::InferOptions {
                model,
                texts,
                max_tokens,
                preset,
                layers,
                margin,
                batch,
                head,
                head_gap_bits,
                lean_keys,
                lanes: usize::from(lanes),
            };
            let mut emit = |r: &infer::InferResult| -> anyhow::Result<()> {
                if as_json {
                    println!("{}", json(r)?);
                } else {
                    println!(
                        "{:?}: cosine {:.6}, {:.1} s per input (batch of {}), upload {:.2} MB, download {:.2} MB, \
                         keys {:.0} MB",
                        r.text,
                        r.cosine,
                        r.seconds,
                        r.batch_size,
                        r.upload_bytes as f64 / 1e6,
                        r.download_bytes as f64 / 1e6,
                        r.key_bytes as f64 / 1e6
                    );
                    if let Some(c) = &r.class {
                        println!(
                            "  class {:?} (plaintext head: {:?}, {})",
                            c.label,
                            c.plain_label,
                            if c.agrees { "agrees" } else { "DISAGREES" }
                        );
                    }
                }
                Ok(())
            };
            infer::run(&options, &mut |line| eprintln!("{line}"), &mut emit)?;
            Ok(())
        }
        Command::Digest { model_dir } => {
            println!("{}", json(&nexus_client::encoder::directory_digests(&model_dir).map_err(boxed)?)?);
            Ok(())
        }
        Command::Bench { what: BenchCommand::Cluster { workers, queries, preset, tokens } } => {
            let report = runtime()?
                .block_on(scaling::bench_cluster(&preset, tokens, workers, queries, &worker_binary()?))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", json(&report)?);
            Ok(())
        }
        Command::Sim {
            preset,
            tokens,
            queries_per_worker,
            workers,
            link_gbps,
            loopback_gbs,
            coordinator_ms,
            no_validate,
            gpu_speedup,
            gpu_shares,
            costs,
        } => {
            if let Some(s) = gpu_speedup.filter(|s| !(s.is_finite() && *s > 0.0)) {
                anyhow::bail!("--gpu-speedup {s}: a GPU worker's speed relative to a CPU worker, a positive number");
            }
            if let Some(s) = gpu_shares.iter().find(|s| !(0.0..=1.0).contains(*s)) {
                anyhow::bail!("--gpu-shares: {s} is not a share between 0 and 1");
            }
            let (costs, measured_elsewhere) = match costs {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    (scaling::Costs::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?, true)
                }
                None => {
                    // Costs at one engine thread: what each worker process uses.
                    rayon::ThreadPoolBuilder::new().num_threads(1).build_global()?;
                    (scaling::calibrate(&preset, tokens, 3).map_err(|e| anyhow::anyhow!("{e}"))?, false)
                }
            };
            println!("{}", json(&serde_json::json!({"costs": costs}))?);
            let mut coordinator_s = costs.coordinator_s_per_task.unwrap_or(coordinator_ms / 1e3);
            let mut worker_overhead_s = 0.0;
            if !no_validate && !measured_elsewhere {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mean_task = costs.task_seconds.iter().sum::<f64>() / costs.task_seconds.len() as f64;
                for k in [1usize, 2] {
                    let q = queries_per_worker * k;
                    let measured = runtime()?
                        .block_on(scaling::bench_cluster(&preset, tokens, k, q, &worker_binary()?))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if k == 1 {
                        // The 1-worker run measures the coordinator's CPU
                        // per task and the worker's beyond the tasks'
                        // calibrated cost; the 2-worker run is predicted
                        // from them.
                        coordinator_s = measured.coordinator_cpu_s_per_task;
                        worker_overhead_s = (measured.worker_cpu_s_per_task - mean_task).max(0.0);
                    }
                    // Both runs on this host: the coordinator shares its cores.
                    let local = scaling::SimCluster {
                        coordinator_s_per_task: coordinator_s,
                        link_bytes_per_s: loopback_gbs * 1e9,
                        worker_overhead_s_per_task: worker_overhead_s,
                        shared_cores: Some(cores),
                    };
                    let projected = scaling::simulate(&costs, local, k, q, true);
                    let error = projected.throughput_qps / measured.throughput_qps - 1.0;
                    println!(
                        "{}",
                        json(
                            &serde_json::json!({"validation": {"workers": k, "measured": measured, "simulated": projected, "relative_error": error}})
                        )?
                    );
                }
            }
            let link = scaling::SimCluster {
                worker_overhead_s_per_task: worker_overhead_s,
                ..scaling::SimCluster::dedicated(coordinator_s, link_gbps * 1e9 / 8.0)
            };
            // CPU and GPU mixes (key sets cached): efficiency against the
            // fleet's capacity in CPU workers.
            if let Some(speedup) = gpu_speedup {
                let base = scaling::simulate(&costs, link, 1, queries_per_worker, true);
                for &k in &workers {
                    for &share in &gpu_shares {
                        let gpu = ((k as f64 * share).round() as usize).clamp(usize::from(share > 0.0), k);
                        let fleet = scaling::Fleet { cpu: k - gpu, gpu, gpu_speedup: speedup };
                        let queries = (queries_per_worker as f64 * fleet.cpu_equivalents()).ceil() as usize;
                        let r = scaling::simulate_fleet(&costs, link, fleet, queries, true);
                        let efficiency = r.throughput_qps / (base.throughput_qps * fleet.cpu_equivalents());
                        println!(
                            "{}",
                            json(
                                &serde_json::json!({"projection": r, "warm_key_caches": true, "gpu_speedup": speedup, "gpu_share": share, "efficiency": efficiency})
                            )?
                        );
                    }
                }
            }
            // Steady state (key sets cached) and a cold first batch (every
            // worker fetches the key set from the coordinator).
            for warm in [true, false] {
                let base = scaling::simulate(&costs, link, 1, queries_per_worker, warm);
                for &k in &workers {
                    let r = scaling::simulate(&costs, link, k, queries_per_worker * k, warm);
                    let efficiency = r.throughput_qps / (base.throughput_qps * k as f64);
                    println!(
                        "{}",
                        json(&serde_json::json!({"projection": r, "warm_key_caches": warm, "efficiency": efficiency}))?
                    );
                }
            }
            Ok(())
        }
        Command::Demo { preset, tokens, workers, threads, json } => {
            let mut builder = rayon::ThreadPoolBuilder::new();
            if let Some(t) = threads {
                builder = builder.num_threads(t);
            }
            builder.build_global()?;
            let config = DemoConfig { preset, tokens, workers };
            let report = run(&config, |line| {
                if !json {
                    println!("{line}")
                }
            });
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    if json {
                        println!("{{\"ok\": false, \"error\": {:?}}}", e.to_string());
                    }
                    return Err(e.into());
                }
            };
            let ok = report.max_abs_error < 1e-3;
            if json {
                let timings: Vec<String> = report.timings_ms.iter().map(|(k, v)| format!("\"{k}\": {v:.1}")).collect();
                println!(
                    "{{\"ok\": {ok}, \"max_abs_err\": {:e}, \"seconds\": {:.2}, \"workers\": {}, \"secure\": {}, \"preset\": \"{}\", \"tokens\": {}, \"timings_ms\": {{{}}}}}",
                    report.max_abs_error,
                    report.seconds,
                    report.workers,
                    report.secure,
                    report.preset,
                    report.encrypted.len(),
                    timings.join(", ")
                );
            } else {
                println!("\ntoken   decrypted (encrypted inference)            plaintext f64                              max |error|");
                for (t, (e, p)) in report.encrypted.iter().zip(&report.plaintext).enumerate().take(6) {
                    let err = e.iter().zip(p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:>9.5}")).collect::<Vec<_>>().join(" ");
                    println!("{t:>5}   {}   {}   {err:.1e}", fmt(e), fmt(p));
                }
                println!("...   ({} tokens)", report.encrypted.len());
                println!(
                    "max |error| = {:.3e} ({:.1} bits) in {:.1} s; the coordinator and workers never saw the input or the output.",
                    report.max_abs_error,
                    -report.max_abs_error.log2(),
                    report.seconds
                );
            }
            if !ok {
                anyhow::bail!("decrypted result differs from plaintext by {:e}", report.max_abs_error);
            }
            Ok(())
        }
    }
}
