//! An in-process cluster over real loopback QUIC with mutual TLS: one
//! coordinator, two workers, a tenant's client. The encrypted outputs must
//! be byte-identical to running the same operator in this process, and each
//! worker must receive the key set at most once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use nexus_client::cluster::{ClientError, ClusterClient};
use nexus_coordinator::{Coordinator, CoordinatorConfig};
use nexus_nn::{Engine, Gelu, KeySet};
use nexus_proto::ids::TenantId;
use nexus_proto::messages::ErrorCode;
use nexus_proto::tls::ClusterCa;
use nexus_tests::{test_coordinator, test_worker};
use nexus_worker::run;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gelu_queries_through_coordinator_and_two_workers_match_in_process() {
    // The data owner's side.
    let params = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = KeySet::new(params.clone(), kg.relin_key(&sk), GaloisKeys::new());
    let key_bytes = keys.to_bytes().unwrap();
    let encoder = Encoder::new(&params);
    let slots = params.max_slots();
    let inputs: Vec<Ciphertext> = (0..3)
        .map(|k| {
            let v: Vec<f64> =
                (0..slots).map(|i| -8.0 + 16.0 * ((i * 7 + k * 13) % slots) as f64 / slots as f64).collect();
            let pt = encoder.encode_real(&v, 8, params.default_scale()).unwrap();
            Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap()
        })
        .collect();
    let input_bytes: Vec<Vec<u8>> = inputs.iter().map(|c| c.to_bytes(&params).unwrap()).collect();
    // The same computation in this process.
    let eval = Evaluator::new(&params);
    let engine = Engine { eval: &eval, encoder: &encoder, rlk: keys.relin(), galois: keys.galois() };
    let gelu = Gelu::bert_default().unwrap();
    let expected: Vec<Vec<u8>> =
        inputs.iter().map(|c| gelu.apply(&engine, c).unwrap().to_bytes(&params).unwrap()).collect();

    // The cluster.
    let ca = ClusterCa::generate("nexus test").unwrap();
    let config = CoordinatorConfig {
        max_queued: 32,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_coordinator(&ca, &[("acme", "s3cret")])
    };
    let coordinator = Coordinator::start(config).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let mut workers = Vec::new();
    for i in 0..2 {
        let name = format!("worker-{i}");
        workers.push(tokio::spawn(run(test_worker(addr, &ca, &name))));
    }
    for _ in 0..200 {
        if coordinator.workers().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(coordinator.workers().await, 2);

    let tenant = TenantId::new("acme").unwrap();
    let client =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant.clone(), "s3cret".into()).await.unwrap();
    let (key_set, present) = client.register_keys(&key_bytes, params.digest()).await.unwrap();
    assert!(!present);
    assert!(client.register_keys(&key_bytes, params.digest()).await.unwrap().1, "re-upload is recognised");
    for round in 0..3 {
        let query = client.submit(key_set, "gelu", &input_bytes).await.unwrap();
        let status = client.wait(query, Duration::from_secs(120)).await.unwrap();
        assert_eq!((status.tasks_done, status.tasks_total), (3, 3));
        let outputs = client.fetch(query).await.unwrap();
        assert_eq!(outputs, expected, "round {round}: outputs differ from the in-process computation");
    }
    // 17 more queued at once (20 queries of one tenant in all): key
    // material crosses the network once per worker, whatever the queue.
    let queued: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..17 {
            v.push(client.submit(key_set, "gelu", &input_bytes).await.unwrap());
        }
        v
    };
    for q in queued {
        client.wait(q, Duration::from_secs(300)).await.unwrap();
        assert_eq!(client.fetch(q).await.unwrap(), expected);
    }
    let stats = coordinator.stats().await;
    assert_eq!(stats.tasks_done, 60);
    assert!(stats.key_sets_sent.values().all(|&n| n <= 1), "a worker got the key set twice: {stats:?}");
    let fetched_by = stats.key_sets_sent.len() as u64;
    assert!(fetched_by >= 1);
    assert_eq!(
        coordinator.metrics().key_bytes_sent.get(),
        fetched_by * key_bytes.len() as u64,
        "key bytes sent = one key set per worker that ran a task"
    );
    println!(
        "cluster stats: {stats:?}; 20 queries, key bytes sent {} = {fetched_by} x {}",
        coordinator.metrics().key_bytes_sent.get(),
        key_bytes.len()
    );
    // The Prometheus endpoint serves the same counts.
    let body = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(coordinator.metrics_addr().unwrap()).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("nexus_coordinator_tasks_total{kind=\"gelu\"} 60"), "{body}");
    assert!(body.contains("nexus_coordinator_queries_finished_total 20"), "{body}");
    assert!(body.contains("nexus_coordinator_queue_depth_queries 0"), "{body}");

    // Refusals name what was wrong and lose nothing.
    let intruder = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, "wrong".into()).await.unwrap();
    match intruder.submit(key_set, "gelu", &input_bytes).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    match client.submit(key_set, "bert-large", &input_bytes).await {
        Err(ClientError::Refused(e)) => assert!(e.code == ErrorCode::BadRequest && e.message.contains("bert-large")),
        other => panic!("{other:?}"),
    }
    coordinator.shutdown().await;
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_interleave_without_mixing_keys_or_results() {
    let params = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
    let encoder = Encoder::new(&params);
    let tenants = tenants(&params, 2);
    let ca = ClusterCa::generate("two tenants").unwrap();
    let coordinator = Coordinator::start(test_coordinator(&ca, &[("alice", "a"), ("bob", "b")])).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    for i in 0..2 {
        let name = format!("worker-{i}");
        tokio::spawn(run(test_worker(addr, &ca, &name)));
    }
    let mut clients = Vec::new();
    for (name, token) in [("alice", "a"), ("bob", "b")] {
        clients.push(
            ClusterClient::connect(addr, "localhost", &ca.certificate(), TenantId::new(name).unwrap(), token.into())
                .await
                .unwrap(),
        );
    }
    let mut key_sets = Vec::new();
    for (c, t) in clients.iter().zip(&tenants) {
        key_sets.push(c.register_keys(&t.1, params.digest()).await.unwrap().0);
    }
    assert_ne!(key_sets[0], key_sets[1]);
    // Interleave: submit both tenants' queries before waiting for either.
    let mut queries: Vec<(usize, usize, nexus_proto::ids::QueryId)> = Vec::new();
    for round in 0..2 {
        for (i, c) in clients.iter().enumerate() {
            queries.push((i, round, c.submit(key_sets[i], "gelu", &tenants[i].2).await.unwrap()));
        }
    }
    // Another tenant's query looks like a missing one.
    let (_, _, alices) = queries[0];
    match clients[1].fetch(alices).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    for (i, _, q) in queries {
        clients[i].wait(q, Duration::from_secs(120)).await.unwrap();
        check_gelu(&params, &encoder, &tenants, i, &clients[i].fetch(q).await.unwrap());
    }
    coordinator.shutdown().await;
}

/// A tenant's secret key, key-set bytes, encrypted inputs and plain values.
type Tenant = (SecretKey, Vec<u8>, Vec<Vec<u8>>, Vec<f64>);

/// `n` tenants, each with its own secret key, key set and two inputs.
fn tenants(params: &Parameters, n: usize) -> Vec<Tenant> {
    let encoder = Encoder::new(params);
    (0..n)
        .map(|n| {
            let mut kg = KeyGenerator::new(params);
            let sk = kg.secret_key();
            let pk = kg.public_key(&sk);
            let keys = KeySet::new(params.clone(), kg.relin_key(&sk), GaloisKeys::new());
            let v: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64 * 0.01 + n as f64).sin() * 6.0).collect();
            let pt = encoder.encode_real(&v, 8, params.default_scale()).unwrap();
            let inputs = (0..2)
                .map(|_| Encryptor::new(params).encrypt_pk(&pt, &pk).unwrap().to_bytes(params).unwrap())
                .collect();
            (sk, keys.to_bytes().unwrap(), inputs, v)
        })
        .collect()
}

/// Tenant `i`'s GELU outputs decrypt correctly under its own key only.
fn check_gelu(params: &Parameters, encoder: &Encoder, tenants: &[Tenant], i: usize, outputs: &[Vec<u8>]) {
    let error_under = |ct: &Ciphertext, t: &Tenant| {
        let got = encoder.decode_real(&Decryptor::new(params).decrypt(ct, &t.0).unwrap()).unwrap();
        got.iter().zip(&tenants[i].3).map(|(g, x)| (g - nexus_nn::functions::gelu(*x)).abs()).fold(0.0, f64::max)
    };
    assert_eq!(outputs.len(), tenants[i].2.len());
    for bytes in outputs {
        let ct = Ciphertext::from_bytes(params, bytes, 1 << 30).unwrap();
        let err = error_under(&ct, &tenants[i]);
        assert!(err < 1e-3, "tenant {i}: {err}");
        for (j, other) in tenants.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(error_under(&ct, other) > 1.0, "tenant {i}'s output decrypts under tenant {j}'s key");
        }
    }
}

/// Two tenants' queries queued alternately on one worker whose key cache
/// holds one key set: the batcher runs each key set's queued queries
/// together, so the worker fetches each key set about once; alternating
/// task by task (`batch_tasks` 1) fetches keys for nearly every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batcher_runs_queued_queries_of_one_key_set_together() {
    let params = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
    let encoder = Encoder::new(&params);
    let tenants = tenants(&params, 2);
    let rounds = 5;
    let mut fetches = Vec::new();
    for batch_tasks in [64, 1] {
        let ca = ClusterCa::generate("batcher").unwrap();
        let mut config = test_coordinator(&ca, &[("alice", "a"), ("bob", "b")]);
        config.limits.batch_tasks = batch_tasks;
        config.max_queued = 2 * rounds;
        let coordinator = Coordinator::start(config).await.unwrap();
        let addr = coordinator.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut key_sets = Vec::new();
        for (i, (name, token)) in [("alice", "a"), ("bob", "b")].into_iter().enumerate() {
            let tenant = TenantId::new(name).unwrap();
            let c = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, token.into()).await.unwrap();
            key_sets.push(c.register_keys(&tenants[i].1, params.digest()).await.unwrap().0);
            clients.push(c);
        }
        let mut queries = Vec::new();
        for _ in 0..rounds {
            for (i, c) in clients.iter().enumerate() {
                queries.push((i, c.submit(key_sets[i], "gelu", &tenants[i].2).await.unwrap()));
            }
        }
        // The worker joins with every task queued, so the order is the
        // batcher's alone: one thread, room for one key set.
        let started = std::time::Instant::now();
        let worker =
            tokio::spawn(run(nexus_worker::WorkerConfig { key_cache_bytes: 1, ..test_worker(addr, &ca, "w") }));
        for (i, q) in queries {
            clients[i].wait(q, Duration::from_secs(300)).await.unwrap();
            check_gelu(&params, &encoder, &tenants, i, &clients[i].fetch(q).await.unwrap());
        }
        let stats = coordinator.stats().await;
        let sent: u32 = stats.key_sets_sent.values().sum();
        assert_eq!(coordinator.metrics().key_set_switches.get(), stats.key_set_switches);
        println!(
            "batch_tasks {batch_tasks}: {} tasks in {:.2} s, key sets sent {sent}, key-set switches {}",
            stats.tasks_done,
            started.elapsed().as_secs_f64(),
            stats.key_set_switches
        );
        fetches.push((sent, stats.key_set_switches));
        coordinator.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    }
    let tasks = 2 * rounds as u64 * 2;
    // Batched: each key set once (all of alice's queued tasks, then bob's).
    assert_eq!(fetches[0], (2, 2), "batched: (key-set fetches, switches) for {tasks} tasks");
    // Alternating: a switch, and a fetch, for nearly every task.
    assert!(fetches[1].1 >= tasks - 1, "alternating: {:?} for {tasks} tasks", fetches[1]);
    assert!(fetches[1].0 as u64 >= tasks / 2, "alternating: {:?} for {tasks} tasks", fetches[1]);
}
