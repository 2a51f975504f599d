//! The raft group on an in-memory network that drops, duplicates, delays
//! and partitions messages (seeded: a failure names its seed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use raft::eraftpb::Message;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A set of u64 in insertion order; re-inserting is a no-op, so retried
/// proposals are harmless.
#[derive(Default)]
struct Values(Vec<u64>);

impl StateMachine for Values {
    type Output = usize;
    fn apply(&mut self, data: &[u8]) -> usize {
        let Ok(bytes) = <[u8; 8]>::try_from(data) else { return usize::MAX };
        let v = u64::from_le_bytes(bytes);
        if !self.0.contains(&v) {
            self.0.push(v);
        }
        self.0.len()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        if !data.len().is_multiple_of(8) {
            return Err(format!("{} bytes is not a list of u64", data.len()));
        }
        self.0 = data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        Ok(())
    }
}

struct Network {
    replicas: Mutex<Vec<Option<Replica<Values>>>>,
    isolated: Mutex<HashSet<u64>>,
    rng: Mutex<rand::rngs::StdRng>,
    drop_rate: f64,
}

impl Network {
    fn deliver(self: &Arc<Self>, m: Message) {
        let cut = {
            let iso = self.isolated.lock().unwrap();
            iso.contains(&m.from) || iso.contains(&m.to)
        };
        if cut {
            return;
        }
        let (drop, dup, delay) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.gen_bool(self.drop_rate), rng.gen_bool(0.1), rng.gen_range(0..30u64))
        };
        if drop {
            return;
        }
        let copies = if dup { 2 } else { 1 };
        let net = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            let target = net.replicas.lock().unwrap().get(m.to as usize - 1).cloned().flatten();
            if let Some(r) = target {
                for _ in 0..copies {
                    r.step(m.clone());
                }
            }
        });
    }
}

fn config(id: u64) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(id, vec![1, 2, 3]);
    c.tick = Duration::from_millis(10);
    c.snapshot_entries = 8;
    c
}

fn start(net: &Arc<Network>, id: u64, storage: LogStorage) -> Replica<Values> {
    let n = net.clone();
    let r = Replica::start(config(id), storage, Values::default(), Box::new(move |m| n.deliver(m))).unwrap();
    net.replicas.lock().unwrap()[id as usize - 1] = Some(r.clone());
    r
}

fn network(seed: u64, drop_rate: f64) -> Arc<Network> {
    Arc::new(Network {
        replicas: Mutex::new(vec![None, None, None]),
        isolated: Mutex::new(HashSet::new()),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        drop_rate,
    })
}

/// Proposes `v` to whichever replica leads, retrying until applied.
async fn propose(net: &Network, v: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if Instant::now() > deadline {
            let roles: Vec<Role> = net.replicas.lock().unwrap().iter().flatten().map(|r| r.role()).collect();
            panic!("value {v} not committed in 20 s; roles {roles:?}");
        }
        let leader = {
            let iso = net.isolated.lock().unwrap().clone();
            net.replicas
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .find(|r| r.role().leader_ready && !iso.contains(&r.id()))
                .cloned()
        };
        if let Some(r) = leader {
            if r.propose(v.to_le_bytes().to_vec()).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn converged(net: &Network, want: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs: Vec<Vec<u64>> =
            net.replicas.lock().unwrap().iter().flatten().map(|r| r.read(|m| m.0.clone())).collect();
        if logs.iter().all(|l| l.len() == want && *l == logs[0]) {
            return logs[0].clone();
        }
        assert!(Instant::now() < deadline, "replicas did not converge: {logs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_network_commits_every_value_once_in_one_order() {
    for seed in [1u64, 2] {
        let net = network(seed, 0.2);
        for id in 1..=3 {
            start(&net, id, LogStorage::in_memory(&[1, 2, 3]));
        }
        for v in 0..40 {
            propose(&net, v).await;
        }
        let log = converged(&net, 40).await;
        assert_eq!(log.iter().copied().collect::<HashSet<_>>().len(), 40, "seed {seed}");
        for r in net.replicas.lock().unwrap().iter().flatten() {
            r.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_catches_up_by_snapshot() {
    let net = network(7, 0.05);
    for id in 1..=3 {
        start(&net, id, LogStorage::in_memory(&[1, 2, 3]));
    }
    for v in 0..5 {
        propose(&net, v).await;
    }
    let old = net.replicas.lock().unwrap().iter().flatten().find(|r| r.role().leader_ready).unwrap().clone();
    net.isolated.lock().unwrap().insert(old.id());
    let cut = Instant::now();
    // The others elect a new leader and go on (past a snapshot: 8 entries).
    for v in 5..30 {
        propose(&net, v).await;
    }
    assert!(cut.elapsed() < Duration::from_secs(10));
    let new_leader = net.replicas.lock().unwrap().iter().flatten().find(|r| r.role().leader_ready).unwrap().clone();
    assert_ne!(new_leader.id(), old.id());
    net.isolated.lock().unwrap().clear();
    let log = converged(&net, 30).await;
    assert_eq!(log.iter().copied().collect::<HashSet<_>>().len(), 30);
    for r in net.replicas.lock().unwrap().iter().flatten() {
        r.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_group_restarts_from_disk() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = network(11, 0.0);
    for id in 1..=3u64 {
        start(&net, id, LogStorage::open(dirs[id as usize - 1].path(), &[1, 2, 3]).unwrap());
    }
    for v in 0..20 {
        propose(&net, v).await;
    }
    converged(&net, 20).await;
    for r in net.replicas.lock().unwrap().iter_mut() {
        if let Some(r) = r.take() {
            r.stop();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Everyone restarts from its own directory: snapshot plus log tail.
    let net = network(12, 0.0);
    for id in 1..=3u64 {
        start(&net, id, LogStorage::open(dirs[id as usize - 1].path(), &[1, 2, 3]).unwrap());
    }
    for v in 20..25 {
        propose(&net, v).await;
    }
    let log = converged(&net, 25).await;
    assert_eq!(log, (0..25).collect::<Vec<_>>());
    for r in net.replicas.lock().unwrap().iter().flatten() {
        r.stop();
    }
}
