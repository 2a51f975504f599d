//! Key sets stay out of the raft log: three in-process coordinators (a raft
//! group with logs on disk, real mutual-TLS QUIC on loopback). A key set is
//! on a majority of the members' key stores when its registration is
//! acknowledged, the raft logs stay small, and a member that was down
//! fetches the bytes from a peer when it comes back. Workers take key sets
//! from the followers, leaving the leader's link to the tasks. A key set
//! deleted by its last owner leaves every member's store (a member that was
//! down when it happened included) and the workers' caches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_client::cluster::ClientError;
use nexus_client::cluster::ClusterClient;
use nexus_coordinator::{Coordinator, CoordinatorConfig, RaftSettings};
use nexus_nn::DEMO_MODEL;
use nexus_proto::ids::{KeySetId, TenantId};
use nexus_proto::messages::ErrorCode;
use nexus_proto::tls::ClusterCa;
use nexus_tests::{
    free_tcp_port, free_udp_port, loopback_peers, metric, scrape, test_coordinator, test_worker, DemoClient,
};
use nexus_worker::WorkerConfig;
use rand::{RngCore, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

/// The three members' configurations: data in `dir/raft-ID`.
fn group(ca: &ClusterCa, dir: &Path) -> Vec<CoordinatorConfig> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_udp_port(), free_udp_port())).collect();
    let peers = loopback_peers(&ports);
    ports
        .iter()
        .enumerate()
        .map(|(i, (public, raft))| CoordinatorConfig {
            listen: ([127, 0, 0, 1], *public).into(),
            raft: RaftSettings {
                id: i as u64 + 1,
                peers: peers.clone(),
                listen: Some(([127, 0, 0, 1], *raft).into()),
                dir: Some(dir.join(format!("raft-{}", i + 1))),
                ..RaftSettings::default()
            },
            ..test_coordinator(ca, &[("acme", "s3cret"), ("beta", "b3ta")])
        })
        .collect()
}

/// Starts the three members; returns their configurations, the running
/// members and the leader's index.
async fn start_group(ca: &ClusterCa, dir: &Path) -> (Vec<CoordinatorConfig>, Vec<Option<Coordinator>>, usize) {
    let configs = group(ca, dir);
    let mut members = Vec::new();
    for c in &configs {
        members.push(Some(Coordinator::start(c.clone()).await.unwrap()));
    }
    let leader = wait_for_leader(&members).await;
    (configs, members, leader)
}

async fn wait_for_leader(members: &[Option<Coordinator>]) -> usize {
    let start = Instant::now();
    loop {
        if let Some(i) = members.iter().position(|m| m.as_ref().is_some_and(|c| c.role().leader_ready)) {
            return i;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a member again on its old ports. The stopped instance's sockets
/// close once its tasks have wound down (a restarted process gets fresh
/// ones at once): retry while the port is still held.
async fn restart(config: &CoordinatorConfig) -> Coordinator {
    let start = Instant::now();
    loop {
        match Coordinator::start(config.clone()).await {
            Ok(c) => return c,
            Err(e) if e.to_string().contains("in use") && start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("restarting the member: {e}"),
        }
    }
}

/// Bytes of a member's raft state (log, snapshot, hard state): everything
/// in its data directory but the key store.
fn raft_bytes(member_dir: &Path) -> u64 {
    std::fs::read_dir(member_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sets_are_on_a_majority_before_the_log_names_them_and_reach_the_rest_later() {
    let ca = ClusterCa::generate("nexus test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (configs, mut members, leader) = start_group(&ca, dir.path()).await;
    // One follower is down while the key set is registered.
    let absent = (leader + 1) % 3;
    members[absent].take().unwrap().shutdown().await;

    let mut keys = vec![0u8; 8 << 20];
    rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut keys);
    // The stopped member's address first: the client must move on to a
    // live member.
    let publics: Vec<String> = (0..3).map(|k| configs[(absent + k) % 3].listen.to_string()).collect();
    let tenant = TenantId::new("acme").unwrap();
    let client =
        ClusterClient::connect_any(&publics, "localhost", &ca.certificate(), tenant, "s3cret".into()).await.unwrap();
    let (key_set, already_present) = client.register_keys(&keys, [7; 32]).await.unwrap();
    assert!(!already_present);
    let stored = |i: usize| dir.path().join(format!("raft-{}/keys/{}", i + 1, key_set.to_hex()));

    // Acknowledged: both running members hold the bytes, durably.
    for i in (0..3).filter(|&i| i != absent) {
        assert_eq!(std::fs::read(stored(i)).unwrap(), keys, "member {} holds the key set", i + 1);
    }
    assert!(!stored(absent).exists());
    // The log and snapshot name the key set; they do not carry it.
    for i in 0..3 {
        let bytes = raft_bytes(&dir.path().join(format!("raft-{}", i + 1)));
        assert!(bytes < keys.len() as u64 / 8, "member {}'s raft state is {bytes} bytes", i + 1);
    }

    // The absent member comes back and fetches the bytes from a peer.
    members[absent] = Some(restart(&configs[absent]).await);
    let start = Instant::now();
    while !stored(absent).exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "the returning member never fetched the key set");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read(stored(absent)).unwrap(), keys);

    // Registering it again costs no transfer among the members.
    let (again, already_present) = client.register_keys(&keys, [7; 32]).await.unwrap();
    assert_eq!((again, already_present), (key_set, true));
    for m in members.into_iter().flatten() {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fetch_key_sets_from_the_followers() {
    let ca = ClusterCa::generate("nexus test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (configs, members, leader) = start_group(&ca, dir.path()).await;
    let publics: Vec<String> = configs.iter().map(|c| c.listen.to_string()).collect();
    let demo = DemoClient::new(16);
    let tenant = TenantId::new("acme").unwrap();
    let client =
        ClusterClient::connect_any(&publics, "localhost", &ca.certificate(), tenant, "s3cret".into()).await.unwrap();
    let (key_set, _) = client.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    // Two workers that know every member; they register with the leader.
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let name = format!("worker-{i}");
            let config = WorkerConfig { coordinators: publics.clone(), ..test_worker(configs[0].listen, &ca, &name) };
            tokio::spawn(nexus_worker::run(config))
        })
        .collect();
    let lead = members[leader].as_ref().unwrap();
    let start = Instant::now();
    while lead.workers().await < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "the workers did not register with the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queries: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(client.submit(key_set, DEMO_MODEL, &demo.inputs()).await.unwrap());
        }
        v
    };
    for q in queries {
        client.wait(q, Duration::from_secs(120)).await.unwrap();
        assert!(demo.max_error(&client.fetch(q).await.unwrap()) < 1e-4);
    }
    let sent = |i: usize| members[i].as_ref().unwrap().metrics().key_bytes_sent.get();
    let from_followers: u64 = (0..3).filter(|&i| i != leader).map(sent).sum();
    let len = demo.keys.len() as u64;
    println!("key bytes sent: leader {}, followers {from_followers} ({len} per key set)", sent(leader));
    assert_eq!(sent(leader), 0, "the leader's link carried a key set");
    assert!(
        from_followers.is_multiple_of(len) && (1..=2).contains(&(from_followers / len)),
        "each worker that ran a task fetched the key set once, from a follower: {from_followers} bytes"
    );
    for m in members.into_iter().flatten() {
        m.shutdown().await;
    }
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
}

/// Runs one demo query and checks its result.
async fn run_query(client: &ClusterClient, demo: &DemoClient, key_set: KeySetId) {
    let q = client.submit(key_set, DEMO_MODEL, &demo.inputs()).await.unwrap();
    client.wait(q, Duration::from_secs(120)).await.unwrap();
    assert!(demo.max_error(&client.fetch(q).await.unwrap()) < 1e-4);
}

/// Polls `done` every 100 ms for up to `secs` seconds.
async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_sets_leave_every_member_and_worker() {
    let ca = ClusterCa::generate("nexus test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (configs, mut members, leader) = start_group(&ca, dir.path()).await;
    let publics: Vec<String> = configs.iter().map(|c| c.listen.to_string()).collect();
    let demo = DemoClient::new(16);
    let connect = |tenant: &str, token: &str| {
        let (publics, ca) = (publics.clone(), ca.certificate());
        let (tenant, token) = (TenantId::new(tenant).unwrap(), token.to_string());
        async move { ClusterClient::connect_any(&publics, "localhost", &ca, tenant, token).await.unwrap() }
    };
    let (acme, beta) = (connect("acme", "s3cret").await, connect("beta", "b3ta").await);
    // Both tenants register the same bytes (the same keys): one key set.
    let (key_set, _) = acme.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    assert_eq!(beta.register_keys(&demo.keys, demo.params.digest()).await.unwrap(), (key_set, false));
    let stored = |i: usize| dir.path().join(format!("raft-{}/keys/{}", i + 1, key_set.to_hex()));
    eventually(30, "every member holds the key set", || (0..3).all(|i| stored(i).exists())).await;
    let gauges = |m: &Option<Coordinator>| {
        m.as_ref().map(|c| (c.metrics().key_sets.get(), c.metrics().key_store_bytes.get() as usize))
    };
    let held = Some((1, demo.keys.len()));
    eventually(10, "the key-store gauges count the key set", || members.iter().all(|m| gauges(m) == held)).await;

    let metrics = ([127, 0, 0, 1], free_tcp_port()).into();
    let config = WorkerConfig {
        coordinators: publics.clone(),
        metrics_listen: Some(metrics),
        ..test_worker(configs[0].listen, &ca, "worker-0")
    };
    let worker = tokio::spawn(nexus_worker::run(config));
    let cache_bytes = || scrape(metrics).and_then(|text| metric(&text, "nexus_worker_key_cache_bytes")).unwrap_or(-1.0);
    run_query(&acme, &demo, key_set).await;
    assert!(cache_bytes() > 0.0, "the worker caches the key set");

    // acme gives it up: beta still owns it, so it stays everywhere.
    acme.delete_keys(key_set).await.unwrap();
    match acme.submit(key_set, DEMO_MODEL, &demo.inputs()).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message),
        other => panic!("a deleted key set took a query: {other:?}"),
    }
    match acme.delete_keys(key_set).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message),
        other => panic!("deleted twice: {other:?}"),
    }
    assert!((0..3).all(|i| stored(i).exists()));
    run_query(&beta, &demo, key_set).await;

    // beta gives it up while a follower is down: the last owner.
    let absent = (leader + 1) % 3;
    members[absent].take().unwrap().shutdown().await;
    beta.delete_keys(key_set).await.unwrap();
    eventually(2, "the leader removes the bytes", || !stored(leader).exists()).await;
    let live = (leader + 2) % 3;
    eventually(10, "the live follower removes the bytes", || !stored(live).exists()).await;
    eventually(10, "the worker drops the key set", || cache_bytes() == 0.0).await;
    assert!(stored(absent).exists());
    members[absent] = Some(restart(&configs[absent]).await);
    eventually(30, "the returning member removes the bytes", || !stored(absent).exists()).await;
    eventually(10, "the key-store gauges are empty", || members.iter().all(|m| gauges(m) == Some((0, 0)))).await;

    // Registered again: stored again, and usable.
    let (again, already_present) = acme.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    assert_eq!((again, already_present), (key_set, false));
    eventually(30, "every member holds the key set again", || (0..3).all(|i| stored(i).exists())).await;
    // Time for a removal that should not happen (the members check every 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!((0..3).all(|i| stored(i).exists()), "a member removed the key set registered again");
    run_query(&acme, &demo, key_set).await;
    assert!(cache_bytes() > 0.0, "the worker fetched the key set again");
    for m in members.into_iter().flatten() {
        m.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}
