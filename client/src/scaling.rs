//! Horizontal scaling: measure and project.
//!
//! - [`calibrate`]: per-task costs of the embedded model measured in this
//!   process (each layer on one ciphertext, median of repeats), ciphertext
//!   and key-set sizes.
//! - [`bench_cluster`]: a batch of queries through an in-process
//!   coordinator and K worker *processes* over loopback QUIC; throughput and
//!   latency percentiles.
//! - [`simulate`]: a discrete-event model of the cluster (coordinator CPU,
//!   the coordinator's network link, workers) fed with the calibrated costs;
//!   it projects throughput for any number of workers and names the busiest
//!   resource. It is validated against `bench_cluster` at 1 and 2 workers.

use crate::cluster::ClusterClient;
use nexus_ckks::{Encoder, Encryptor, Evaluator, KeyGenerator, Parameters, Wire};
use nexus_coordinator::{Coordinator, CoordinatorConfig, RaftSettings};
use nexus_nn::{DemoMlp, Engine, KeySet, DEMO_MODEL};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::ClusterCa;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The workload and its measured costs: [`calibrate`]'s for the demo
/// model, or read from a file ([`Costs::from_json`]) for a workload measured
/// elsewhere (a BERT encoder through the real binaries:
/// `ops/bench/task-costs.py`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    /// Parameter preset.
    pub preset: String,
    /// Engine threads per worker the costs were measured with.
    pub threads: usize,
    /// Seconds per task, in task order: the chain every input goes
    /// through, or with `model` its plan's tasks on one input.
    pub task_seconds: Vec<f64>,
    /// Input ciphertexts per query.
    pub inputs_per_query: usize,
    /// Bytes entering each task, and of the final output.
    pub ciphertext_bytes: Vec<u64>,
    /// Bytes of the evaluation key set.
    pub key_bytes: u64,
    /// What each task of the chain is (informative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_kinds: Vec<String>,
    /// Coordinator CPU per task (seconds), where the measurement includes
    /// it; otherwise the 1-worker validation run measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_s_per_task: Option<f64>,
    /// The model measured, as the coordinator plans it: the tasks are its
    /// graph on one input, and each starts once the tasks it reads have
    /// finished (a BERT layer's Q, K and V projections side by side).
    /// Without it the tasks form a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Bytes each task outputs (with `model`; a chain's are the next
    /// task's `ciphertext_bytes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_bytes: Vec<u64>,
}

/// How an input's tasks depend on each other, for the simulation.
struct TaskGraph {
    /// Per task, the tasks it reads (none: it reads the query's input).
    sources: Vec<Vec<usize>>,
    /// Per task, the tasks that read it.
    readers: Vec<Vec<usize>>,
    /// Per task, the bytes it outputs.
    output_bytes: Vec<u64>,
}

impl Costs {
    /// Costs from JSON (the object `nexus sim` prints under `costs`),
    /// checked: every figure finite and not negative, one ciphertext size per
    /// task plus the final output's.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let costs: Costs = serde_json::from_str(text).map_err(|e| format!("costs: {e}"))?;
        costs.check()?;
        Ok(costs)
    }

    fn check(&self) -> Result<(), String> {
        if self.task_seconds.is_empty() {
            return Err("costs: task_seconds is empty (one entry per task of an input)".into());
        }
        // A task may measure 0 (an empty tile, under the log's millisecond).
        if let Some((i, t)) = self.task_seconds.iter().enumerate().find(|(_, t)| !(t.is_finite() && **t >= 0.0)) {
            return Err(format!("costs: task_seconds[{i}] = {t} is not a number of seconds"));
        }
        if self.ciphertext_bytes.len() != self.task_seconds.len() + 1 {
            return Err(format!(
                "costs: {} ciphertext sizes for {} tasks (one per task's input, then the final output)",
                self.ciphertext_bytes.len(),
                self.task_seconds.len()
            ));
        }
        if self.inputs_per_query == 0 || self.threads == 0 || self.key_bytes == 0 {
            return Err("costs: inputs_per_query, threads and key_bytes must be at least 1".into());
        }
        if let Some(c) = self.coordinator_s_per_task.filter(|c| !(c.is_finite() && *c >= 0.0)) {
            return Err(format!("costs: coordinator_s_per_task = {c} is not a number of seconds"));
        }
        let Some(model) = &self.model else {
            if !self.output_bytes.is_empty() {
                return Err("costs: output_bytes without a model (a chain's outputs are ciphertext_bytes)".into());
            }
            return Ok(());
        };
        let plan = nexus_coordinator::plan::graph(model, 1).map_err(|e| format!("costs: model {model:?}: {e}"))?;
        let tasks = self.task_seconds.len();
        if plan.nodes.len() != tasks {
            return Err(format!(
                "costs: model {model:?} plans {} tasks per input, task_seconds has {tasks}",
                plan.nodes.len()
            ));
        }
        if self.task_kinds.len() != tasks {
            return Err(format!(
                "costs: {} task kinds for {tasks} tasks of model {model:?} (each is checked against the plan)",
                self.task_kinds.len()
            ));
        }
        for (k, (node, measured)) in plan.nodes.iter().zip(&self.task_kinds).enumerate() {
            let planned = format!("{:?}", node.kind);
            if &planned != measured {
                return Err(format!("costs: task {k} is {measured} in task_kinds, {planned} in the plan of {model:?}"));
            }
        }
        if self.output_bytes.len() != tasks {
            return Err(format!(
                "costs: {} output sizes for {tasks} tasks of model {model:?}",
                self.output_bytes.len()
            ));
        }
        Ok(())
    }

    /// The tasks' dependencies: the model's plan, else a chain. Costs are
    /// checked when read, so a plan that no longer matches them counts as
    /// a chain here.
    fn graph(&self) -> TaskGraph {
        let tasks = self.task_seconds.len();
        let chain = || TaskGraph {
            sources: (0..tasks).map(|k| if k == 0 { vec![] } else { vec![k - 1] }).collect(),
            readers: (0..tasks).map(|k| if k + 1 < tasks { vec![k + 1] } else { vec![] }).collect(),
            output_bytes: self.ciphertext_bytes.iter().skip(1).copied().collect(),
        };
        let plan = self.model.as_deref().and_then(|m| nexus_coordinator::plan::graph(m, 1).ok());
        let Some(plan) = plan.filter(|p| p.nodes.len() == tasks && self.output_bytes.len() == tasks) else {
            return chain();
        };
        let sources: Vec<Vec<usize>> = plan
            .nodes
            .iter()
            .map(|n| {
                let tasks = n.sources.iter().filter_map(|s| match s {
                    nexus_coordinator::plan::Source::Task(t) => Some(*t as usize),
                    nexus_coordinator::plan::Source::Input(_) => None,
                });
                tasks.collect()
            })
            .collect();
        let mut readers = vec![Vec::new(); tasks];
        for (k, s) in sources.iter().enumerate() {
            for &source in s {
                readers[source].push(k);
            }
        }
        TaskGraph { sources, readers, output_bytes: self.output_bytes.clone() }
    }
}

/// A client side of the demo model: keys and encrypted queries.
struct Workload {
    params: Parameters,
    keys: Vec<u8>,
    inputs: Vec<Vec<u8>>,
    model: DemoMlp,
    key_set: KeySet,
}

fn workload(preset: &str, tokens: usize) -> Result<Workload, BoxError> {
    let params = Parameters::preset(preset)?;
    let model = DemoMlp::embedded(params.max_slots())?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let key_set = KeySet::new(params.clone(), kg.relin_key(&sk), kg.galois_keys(&sk, &model.rotations(), false)?);
    let rows: Vec<Vec<f64>> =
        (0..tokens).map(|t| (0..model.d_in).map(|c| ((t * 31 + c * 7) as f64 * 0.013).sin()).collect()).collect();
    let encoder = Encoder::new(&params);
    let inputs = model
        .pack(&rows)?
        .iter()
        .map(|s| -> Result<Vec<u8>, BoxError> {
            let pt = encoder.encode_real(s, model.levels(), params.default_scale())?;
            Ok(Encryptor::new(&params).encrypt_pk(&pt, &pk)?.to_bytes(&params)?)
        })
        .collect::<Result<_, _>>()?;
    Ok(Workload { keys: key_set.to_bytes()?, params, inputs, model, key_set })
}

/// Measures each task's cost as a worker pays it, in this process (on the
/// caller's rayon pool), median of `repeats`: decode and check the input
/// (with its digest), run the layer, encode the output (and hash it).
pub fn calibrate(preset: &str, tokens: usize, repeats: usize) -> Result<Costs, BoxError> {
    let w = workload(preset, tokens)?;
    let eval = Evaluator::new(&w.params);
    let encoder = Encoder::new(&w.params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: w.key_set.relin(), galois: w.key_set.galois() };
    let first = w.inputs.first().ok_or("no input ciphertext")?;
    let mut ct = nexus_ckks::Ciphertext::from_bytes(&w.params, first, 1 << 32)?;
    let mut task_seconds = Vec::new();
    let mut ciphertext_bytes = vec![first.len() as u64];
    for layer in 0..w.model.layers().len() {
        let mut times = Vec::new();
        let mut out = None;
        let bytes = ct.to_bytes(&w.params)?;
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            let input = nexus_ckks::Ciphertext::from_bytes(&w.params, &bytes, 1 << 32)?;
            let _ = nexus_proto::ids::KeySetId::of(&bytes);
            let y = w.model.run_layer(layer, &engine, &input)?;
            let _ = nexus_proto::ids::KeySetId::of(&y.to_bytes(&w.params)?);
            times.push(t.elapsed().as_secs_f64());
            out = Some(y);
        }
        times.sort_by(f64::total_cmp);
        task_seconds.push(times[times.len() / 2]);
        ct = out.ok_or("no output")?;
        ciphertext_bytes.push(ct.to_bytes(&w.params)?.len() as u64);
    }
    Ok(Costs {
        preset: preset.to_string(),
        threads: rayon::current_num_threads(),
        task_seconds,
        inputs_per_query: w.inputs.len(),
        ciphertext_bytes,
        key_bytes: w.keys.len() as u64,
        task_kinds: Vec::new(),
        coordinator_s_per_task: None,
        model: None,
        output_bytes: Vec::new(),
    })
}

/// What a cluster run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Worker processes.
    pub workers: usize,
    /// Queries in the batch.
    pub queries: usize,
    /// Tasks run.
    pub tasks: usize,
    /// First submission to last completion.
    pub makespan_s: f64,
    /// Queries per second.
    pub throughput_qps: f64,
    /// Query latency percentiles (submission to done).
    pub latency_p50_s: f64,
    /// 95th percentile.
    pub latency_p95_s: f64,
    /// 99th percentile.
    pub latency_p99_s: f64,
    /// CPU this process (the coordinator; the client only polls) spent per
    /// task during the batch.
    pub coordinator_cpu_s_per_task: f64,
    /// CPU the worker processes spent per task during the batch (the
    /// task's compute and everything around it: QUIC, TLS, the runtime).
    pub worker_cpu_s_per_task: f64,
}

/// CPU seconds process `pid` (this one for `None`) has used (Linux
/// `/proc/PID/stat`; 0 elsewhere).
fn process_cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    // Fields after the command name (which may contain spaces) start at ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
    ticks / 100.0
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0)
}

/// Runs `queries` queries of `tokens` tokens at once through an in-process
/// coordinator and `workers` worker processes (`worker_bin`, one engine
/// thread each), after a warm-up that gives every worker the key set.
pub async fn bench_cluster(
    preset: &str,
    tokens: usize,
    workers: usize,
    queries: usize,
    worker_bin: &Path,
) -> Result<BenchReport, BoxError> {
    let w = workload(preset, tokens)?;
    let dir = std::env::temp_dir().join(format!("nexus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = ClusterCa::generate("nexus bench")?;
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem())?;
    let coordinator = Coordinator::start(CoordinatorConfig {
        listen: "127.0.0.1:0".parse()?,
        ca: ca.certificate(),
        identity: ca.issue_coordinator(&["localhost"])?,
        tenants: HashMap::from([("bench".to_string(), "bench-token".to_string())]),
        max_queued: queries.max(1) + 1,
        max_blob: 16 << 30,
        max_attempts: 3,
        metrics_listen: None,
        raft: RaftSettings::default(),
        // The bench measures the cluster's capacity, not the tenant limits.
        limits: nexus_coordinator::limits::Limits {
            requests_per_second: 0.0,
            max_held_per_tenant: 0,
            ..nexus_coordinator::limits::Limits::default()
        },
    })
    .await?;
    let addr = coordinator.local_addr()?;
    let mut children = Children(Vec::new());
    for i in 0..workers {
        let name = format!("worker-{i}");
        let (chain, key) = ca.issue(&name, &[&name])?.to_pem();
        std::fs::write(dir.join(format!("{name}.pem")), chain)?;
        std::fs::write(dir.join(format!("{name}.key")), key)?;
        // One core per worker where `taskset` exists: a worker process
        // otherwise spreads concurrent tasks over every core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = Path::new("/usr/bin/taskset").exists();
        let mut cmd = if pin { Command::new("/usr/bin/taskset") } else { Command::new(worker_bin) };
        if pin {
            cmd.args(["-c", &(i % cores).to_string()]).arg(worker_bin);
        }
        cmd.args(["--coordinator", &addr.to_string(), "--certs"])
            .arg(&dir)
            .args(["--name", &name, "--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !w.params.is_secure() {
            cmd.arg("--allow-insecure-parameters");
        }
        children.0.push(cmd.spawn().map_err(|e| format!("starting {}: {e}", worker_bin.display()))?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while coordinator.workers().await < workers {
        if Instant::now() > deadline {
            return Err("workers did not register within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), TenantId::new("bench")?, "bench-token".into())
            .await?;
    let (key_set, _) = client.register_keys(&w.keys, w.params.digest()).await?;
    // Warm-up: every worker fetches the key set once (steady state).
    while coordinator.stats().await.key_sets_sent.len() < workers {
        let qs: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..workers {
                v.push(client.submit(key_set, DEMO_MODEL, &w.inputs).await?);
            }
            v
        };
        for q in qs {
            client.wait(q, Duration::from_secs(600)).await?;
        }
    }
    let done_before = coordinator.stats().await.tasks_done;
    let workers_cpu =
        |children: &Children| -> f64 { children.0.iter().map(|c| process_cpu_seconds(Some(c.id()))).sum() };
    let (cpu_before, workers_cpu_before) = (process_cpu_seconds(None), workers_cpu(&children));
    let start = Instant::now();
    let mut submitted = Vec::new();
    for _ in 0..queries {
        submitted.push((client.submit(key_set, DEMO_MODEL, &w.inputs).await?, start.elapsed().as_secs_f64()));
    }
    let mut latencies = Vec::new();
    let mut pending = submitted;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (q, at) in pending {
            let s = client.status(q).await?;
            match s.state {
                nexus_proto::messages::QueryState::Done => latencies.push(start.elapsed().as_secs_f64() - at),
                nexus_proto::messages::QueryState::Failed { reason } => {
                    return Err(format!("query {q}: {reason}").into())
                }
                _ => still.push((q, at)),
            }
        }
        pending = still;
        // Polling is cheap but not free: it runs on the coordinator whose
        // CPU per task this run measures.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let makespan = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(None) - cpu_before;
    let worker_cpu = workers_cpu(&children) - workers_cpu_before;
    let tasks = (coordinator.stats().await.tasks_done - done_before) as usize;
    coordinator.shutdown().await;
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(f64::total_cmp);
    Ok(BenchReport {
        workers,
        queries,
        tasks,
        makespan_s: makespan,
        throughput_qps: queries as f64 / makespan,
        latency_p50_s: percentile(&latencies, 0.5),
        latency_p95_s: percentile(&latencies, 0.95),
        latency_p99_s: percentile(&latencies, 0.99),
        coordinator_cpu_s_per_task: cpu / tasks.max(1) as f64,
        worker_cpu_s_per_task: worker_cpu / tasks.max(1) as f64,
    })
}

/// The simulated cluster's fixed parts.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SimCluster {
    /// Coordinator CPU per dispatch plus per checkpoint (seconds).
    pub coordinator_s_per_task: f64,
    /// The coordinator's link, bytes per second (every ciphertext and key
    /// set crosses it).
    pub link_bytes_per_s: f64,
    /// Worker CPU per task beyond the task's measured cost (receiving and
    /// sending over QUIC and TLS, the runtime), seconds.
    pub worker_overhead_s_per_task: f64,
    /// Cores of one host that the coordinator shares with the workers,
    /// each worker pinned to its own (a local run); `None`: the
    /// coordinator has a machine of its own. With every core taken by a
    /// worker, the coordinator's CPU comes out of the workers' cores.
    pub shared_cores: Option<usize>,
}

impl SimCluster {
    /// A coordinator on its own machine behind a link of `link_bytes_per_s`.
    pub fn dedicated(coordinator_s_per_task: f64, link_bytes_per_s: f64) -> Self {
        Self { coordinator_s_per_task, link_bytes_per_s, worker_overhead_s_per_task: 0.0, shared_cores: None }
    }
}

/// The workers of a simulated cluster: CPU workers at the measured costs,
/// and GPU workers that run every task `gpu_speedup` times faster (their
/// transfers, and the coordinator's work per task, stay what they are).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Fleet {
    /// CPU workers.
    pub cpu: usize,
    /// GPU workers.
    pub gpu: usize,
    /// A GPU worker's speed on the tasks relative to a CPU worker's.
    pub gpu_speedup: f64,
}

impl Fleet {
    /// `workers` CPU workers.
    pub fn cpu(workers: usize) -> Self {
        Self { cpu: workers, gpu: 0, gpu_speedup: 1.0 }
    }

    /// All workers.
    pub fn len(&self) -> usize {
        self.cpu + self.gpu
    }

    /// Whether there is no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fleet's capacity in CPU workers.
    pub fn cpu_equivalents(&self) -> f64 {
        self.cpu as f64 + self.gpu as f64 * self.gpu_speedup
    }
}

/// What a simulation projects.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// Workers.
    pub workers: usize,
    /// Of which GPU workers.
    pub gpu_workers: usize,
    /// Queries in the batch.
    pub queries: usize,
    /// Projected makespan.
    pub makespan_s: f64,
    /// Projected queries per second.
    pub throughput_qps: f64,
    /// Busy fraction of the coordinator CPU, the link, and the average worker.
    pub utilisation: [f64; 3],
    /// The busiest resource.
    pub bottleneck: &'static str,
}

/// Discrete-event simulation of a batch of `queries` on `workers` workers.
/// Every input's tasks run in the order of its graph (each once the tasks
/// it reads have finished: [`Costs::model`]'s plan, else a chain); each
/// task passes through the
/// coordinator (dispatch), the link (its input, plus the key set on a
/// worker's first task), a worker (compute), the link (output) and the
/// coordinator (checkpoint). The coordinator, the link and each worker are
/// FIFO servers, served in event-time order; a task goes to the worker with
/// the fewest outstanding tasks (as the coordinator's scheduler does). A
/// worker pays its task's cost plus [`SimCluster::worker_overhead_s_per_task`],
/// and the coordinator's CPU too where it shares a host whose cores the
/// workers all hold ([`SimCluster::shared_cores`]).
pub fn simulate(costs: &Costs, cluster: SimCluster, workers: usize, queries: usize, warm: bool) -> SimReport {
    simulate_fleet(costs, cluster, Fleet::cpu(workers), queries, warm)
}

/// [`simulate`] with CPU and GPU workers (the first `fleet.cpu` are CPUs).
/// The least-outstanding assignment gives the faster workers more tasks,
/// as it does in the coordinator.
pub fn simulate_fleet(costs: &Costs, cluster: SimCluster, fleet: Fleet, queries: usize, warm: bool) -> SimReport {
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Stage {
        Dispatch,
        Input,
        Compute,
        Output,
        Checkpoint,
    }
    let fleet = if fleet.is_empty() { Fleet::cpu(1) } else { fleet };
    let workers = fleet.len();
    let speed = |w: usize| if w < fleet.cpu { 1.0 } else { fleet.gpu_speedup.max(f64::MIN_POSITIVE) };
    let graph = costs.graph();
    let ns = |s: f64| (s * 1e9).round() as u64;
    let link = |bytes: u64| ns(bytes as f64 / cluster.link_bytes_per_s);
    let half = ns(cluster.coordinator_s_per_task / 2.0);
    // A worker's core also runs its transfers and runtime, and on a shared
    // host whose cores the workers all hold, the coordinator (whose own
    // server below still serialises its work).
    let coordinator_on_workers = cluster.shared_cores.is_some_and(|cores| workers >= cores);
    let worker_extra = ns(cluster.worker_overhead_s_per_task)
        + if coordinator_on_workers { ns(cluster.coordinator_s_per_task) } else { 0 };
    /// (time, sequence, stage, query, input, task, worker)
    type Event = (u64, u64, Stage, usize, usize, usize, usize);
    let mut events: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut seq = 0u64;
    // Per query and input, each task's sources not finished yet.
    let mut unread: Vec<Vec<usize>> =
        vec![graph.sources.iter().map(Vec::len).collect(); queries * costs.inputs_per_query];
    for q in 0..queries {
        for i in 0..costs.inputs_per_query {
            for root in (0..graph.sources.len()).filter(|&k| graph.sources[k].is_empty()) {
                events.push(Reverse((0, seq, Stage::Dispatch, q, i, root, 0)));
                seq += 1;
            }
        }
    }
    let (mut coord_free, mut link_free) = (0u64, 0u64);
    let mut worker_free = vec![0u64; workers];
    let mut outstanding = vec![0usize; workers];
    // Warm: the key set is cached everywhere already (steady state).
    let mut has_keys = vec![warm; workers];
    let (mut coord_busy, mut link_busy, mut worker_busy) = (0u64, 0u64, 0u64);
    let mut makespan = 0u64;
    while let Some(Reverse((t, _, stage, q, i, task, w))) = events.pop() {
        let (next, end, worker) = match stage {
            Stage::Dispatch => {
                let end = t.max(coord_free) + half;
                coord_free = end;
                coord_busy += half;
                let (w, _) = outstanding.iter().enumerate().min_by_key(|(_, n)| **n).unwrap_or((0, &0));
                outstanding[w] += 1;
                (Some(Stage::Input), end, w)
            }
            Stage::Input => {
                let mut bytes = costs.ciphertext_bytes[task];
                if !has_keys[w] {
                    bytes += costs.key_bytes;
                    has_keys[w] = true;
                }
                let end = t.max(link_free) + link(bytes);
                link_free = end;
                link_busy += link(bytes);
                (Some(Stage::Compute), end, w)
            }
            Stage::Compute => {
                let c = ns(costs.task_seconds[task] / speed(w)) + worker_extra;
                let end = t.max(worker_free[w]) + c;
                worker_free[w] = end;
                worker_busy += c;
                (Some(Stage::Output), end, w)
            }
            Stage::Output => {
                let bytes = graph.output_bytes[task];
                let end = t.max(link_free) + link(bytes);
                link_free = end;
                link_busy += link(bytes);
                outstanding[w] -= 1;
                (Some(Stage::Checkpoint), end, w)
            }
            Stage::Checkpoint => {
                let end = t.max(coord_free) + half;
                coord_free = end;
                coord_busy += half;
                makespan = makespan.max(end);
                let waiting = &mut unread[q * costs.inputs_per_query + i];
                for &reader in &graph.readers[task] {
                    waiting[reader] -= 1;
                    if waiting[reader] == 0 {
                        events.push(Reverse((end, seq, Stage::Dispatch, q, i, reader, 0)));
                        seq += 1;
                    }
                }
                (None, end, w)
            }
        };
        if let Some(stage) = next {
            events.push(Reverse((end, seq, stage, q, i, task, worker)));
            seq += 1;
        }
    }
    let span = makespan.max(1) as f64;
    let utilisation = [coord_busy as f64 / span, link_busy as f64 / span, worker_busy as f64 / span / workers as f64];
    let names = ["coordinator", "network", "workers"];
    let busiest = (0..3).max_by(|a, b| utilisation[*a].total_cmp(&utilisation[*b])).unwrap_or(2);
    SimReport {
        workers,
        gpu_workers: fleet.gpu,
        queries,
        makespan_s: makespan as f64 / 1e9,
        throughput_qps: queries as f64 / (makespan as f64 / 1e9).max(1e-12),
        utilisation,
        bottleneck: names[busiest],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs() -> Costs {
        Costs {
            preset: "test".into(),
            threads: 1,
            task_seconds: vec![1.0, 0.5, 0.5],
            inputs_per_query: 2,
            ciphertext_bytes: vec![1000, 1000, 1000, 500],
            key_bytes: 1_000_000,
            task_kinds: Vec::new(),
            coordinator_s_per_task: None,
            model: None,
            output_bytes: Vec::new(),
        }
    }

    #[test]
    fn costs_read_from_json_are_checked() {
        let text = serde_json::to_string(&costs()).unwrap();
        let read = Costs::from_json(&text).unwrap();
        assert_eq!(read.task_seconds, costs().task_seconds);
        let with = |field: &str, value: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v[field] = value;
            Costs::from_json(&v.to_string())
        };
        assert_eq!(with("coordinator_s_per_task", 0.25.into()).unwrap().coordinator_s_per_task, Some(0.25));
        assert!(with("task_seconds", serde_json::json!([1.0, -2.0])).unwrap_err().contains("task_seconds[1]"));
        assert!(with("task_seconds", serde_json::json!([])).unwrap_err().contains("empty"));
        assert!(with("ciphertext_bytes", serde_json::json!([1, 2])).unwrap_err().contains("2 ciphertext sizes"));
        assert!(with("key_bytes", 0.into()).unwrap_err().contains("key_bytes"));
        assert!(Costs::from_json("{").unwrap_err().starts_with("costs:"));
        assert!(with("key_byte", 1.into()).unwrap_err().contains("key_byte"), "unknown fields are refused");
    }

    /// A one-layer BERT plan's costs: Q, K and V (tasks 1-3) take 10 s
    /// each, the rest 0.1 s.
    fn bert_costs() -> Costs {
        let model = "bert:m@0123456789abcdef:1:9:16".to_string();
        let plan = nexus_coordinator::plan::graph(&model, 1).unwrap();
        let tasks = plan.nodes.len();
        Costs {
            task_seconds: (0..tasks).map(|k| if (1..=3).contains(&k) { 10.0 } else { 0.1 }).collect(),
            inputs_per_query: 1,
            ciphertext_bytes: vec![1000; tasks + 1],
            task_kinds: plan.nodes.iter().map(|n| format!("{:?}", n.kind)).collect(),
            model: Some(model),
            output_bytes: vec![1000; tasks],
            ..costs()
        }
    }

    #[test]
    fn a_model_plan_runs_independent_tasks_side_by_side() {
        let free = SimCluster::dedicated(0.0, 1e15);
        let dag = bert_costs();
        let tasks = dag.task_seconds.len();
        assert_eq!(tasks, 11, "ten steps and the pooling");
        let chain = Costs { model: None, output_bytes: Vec::new(), ..dag.clone() };
        // One query on three workers: the projections at once (then 7 of
        // the 8 other tasks on the critical path: the feed-forward tiles
        // run side by side too), or one after the other.
        let parallel = simulate(&dag, free, 3, 1, true);
        assert!((parallel.makespan_s - (10.0 + 7.0 * 0.1)).abs() < 1e-6, "{parallel:?}");
        let serial = simulate(&chain, free, 3, 1, true);
        assert!((serial.makespan_s - (30.0 + 8.0 * 0.1)).abs() < 1e-6, "{serial:?}");
        // Many queries keep every worker busy either way: the same work.
        let (dag_many, chain_many) = (simulate(&dag, free, 3, 30, true), simulate(&chain, free, 3, 30, true));
        let work = 30.0 * (30.0 + 8.0 * 0.1) / 3.0;
        for r in [&dag_many, &chain_many] {
            assert!(r.makespan_s >= work - 1e-6 && r.makespan_s < work * 1.1, "{r:?}");
        }
        // Costs that do not match the plan are refused, naming what differs.
        let json = |c: &Costs| serde_json::to_string(c).unwrap();
        assert!(Costs::from_json(&json(&dag)).is_ok());
        let short = Costs { task_seconds: vec![1.0; tasks - 1], ciphertext_bytes: vec![1; tasks], ..dag.clone() };
        assert!(Costs::from_json(&json(&short)).unwrap_err().contains("plans 11 tasks per input"));
        let mut swapped = dag.clone();
        swapped.task_kinds.swap(1, 4);
        assert!(Costs::from_json(&json(&swapped)).unwrap_err().contains("task 1 is EncoderStep"));
        let unnamed = Costs { task_kinds: Vec::new(), ..dag.clone() };
        assert!(Costs::from_json(&json(&unnamed)).unwrap_err().contains("0 task kinds"));
        let no_outputs = Costs { output_bytes: vec![1; 3], ..dag.clone() };
        assert!(Costs::from_json(&json(&no_outputs)).unwrap_err().contains("3 output sizes"));
        let unknown = Costs { model: Some("resnet".into()), ..dag.clone() };
        assert!(Costs::from_json(&json(&unknown)).unwrap_err().contains("unknown model"));
        assert!(Costs::from_json(&json(&Costs { output_bytes: vec![1; 3], ..costs() }))
            .unwrap_err()
            .contains("without a model"));
    }

    #[test]
    fn compute_bound_batches_scale_with_workers() {
        let free = SimCluster::dedicated(0.0, 1e15);
        let one = simulate(&costs(), free, 1, 8, false);
        // 8 queries x 2 inputs x 2 s of work, all on one worker.
        assert!((one.makespan_s - 32.0).abs() < 1e-6, "{one:?}");
        assert_eq!(one.bottleneck, "workers");
        let four = simulate(&costs(), free, 4, 8, false);
        assert!((four.makespan_s - 8.0).abs() < 1e-6, "{four:?}");
    }

    #[test]
    fn a_coordinator_sharing_the_workers_cores_slows_them() {
        let on_host = |overhead| SimCluster {
            coordinator_s_per_task: 0.1,
            link_bytes_per_s: 1e15,
            worker_overhead_s_per_task: overhead,
            shared_cores: Some(2),
        };
        // One worker of two cores: the coordinator has a core of its own.
        let one = simulate(&costs(), on_host(0.0), 1, 8, true);
        let dedicated = simulate(&costs(), SimCluster::dedicated(0.1, 1e15), 1, 8, true);
        assert!((one.makespan_s - dedicated.makespan_s).abs() < 1e-6, "{one:?} vs {dedicated:?}");
        // Two workers take both cores: every task also pays the
        // coordinator's 0.1 s, and the overhead, on a worker's core.
        let two = simulate(&costs(), on_host(0.05), 2, 8, true);
        let free = simulate(&costs(), SimCluster::dedicated(0.1, 1e15), 2, 8, true);
        // 8 queries x 2 inputs x 3 tasks on two workers: 24 tasks each.
        let slower = two.makespan_s - free.makespan_s;
        assert!((slower - 24.0 * 0.15).abs() < 0.2, "{slower} s slower: {two:?} vs {free:?}");
    }

    #[test]
    fn gpu_workers_run_faster_until_the_coordinator_saturates() {
        let free = SimCluster::dedicated(0.0, 1e15);
        let cpu = simulate(&costs(), free, 1, 40, true);
        // A GPU four times as fast as a CPU alone: four times the speed.
        let gpu = simulate_fleet(&costs(), free, Fleet { cpu: 0, gpu: 1, gpu_speedup: 4.0 }, 40, true);
        assert!((cpu.makespan_s / gpu.makespan_s - 4.0).abs() < 1e-6, "{gpu:?}");
        // Beside a CPU: faster than the CPU alone, at most the fleet's
        // capacity (5 CPUs). Tasks go to the worker with the fewest
        // outstanding, as in the coordinator, which does not weigh speed:
        // the CPU's queue holds as many first tasks as the GPU's, and the
        // pair ends below the GPU alone (3.3x here).
        let fleet = Fleet { cpu: 1, gpu: 1, gpu_speedup: 4.0 };
        assert_eq!(fleet.cpu_equivalents(), 5.0);
        let mixed = simulate_fleet(&costs(), free, fleet, 40, true);
        assert_eq!((mixed.workers, mixed.gpu_workers), (2, 1));
        let ratio = cpu.makespan_s / mixed.makespan_s;
        println!("one CPU and one 4x GPU: {ratio:.2}x one CPU");
        assert!(ratio > 1.0 && ratio <= 5.0 + 1e-9, "speed-up {ratio}: {mixed:?}");
        // The coordinator's work per task does not get faster with the
        // workers: with fast GPUs it is what limits the cluster.
        let busy = SimCluster::dedicated(0.05, 1e15);
        let gpus = simulate_fleet(&costs(), busy, Fleet { cpu: 0, gpu: 16, gpu_speedup: 40.0 }, 64, true);
        assert_eq!(gpus.bottleneck, "coordinator", "{gpus:?}");
    }

    #[test]
    fn a_slow_link_or_coordinator_is_named_as_the_bottleneck() {
        let slow_link = SimCluster::dedicated(0.0, 100.0);
        let r = simulate(&costs(), slow_link, 16, 32, false);
        assert_eq!(r.bottleneck, "network");
        assert!(r.utilisation[1] > 0.9, "{r:?}");
        let slow_coordinator = SimCluster::dedicated(0.4, 1e15);
        let r = simulate(&costs(), slow_coordinator, 64, 128, true);
        assert_eq!(r.bottleneck, "coordinator");
        // Every task needs 0.4 s of the coordinator: 128 x 2 x 3 tasks.
        assert!(r.makespan_s >= 128.0 * 2.0 * 3.0 * 0.4 - 1e-6, "{r:?}");
    }
}
