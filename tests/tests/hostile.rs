//! Hostile input against a running cluster: random bytes, a wrong protocol
//! version, truncated and oversized frames, an oversized blob, a corrupted
//! blob, ciphertexts at the wrong parameters, at the wrong level or garbage
//! instead of one, another tenant's key set and queries, replayed
//! submissions, registrations and releases. Each gets a refusal (or a
//! failed query) naming what was wrong, and the cluster keeps serving a
//! well-behaved tenant throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::{Encoder, Encryptor, KeyGenerator, Parameters, Wire};
use nexus_client::cluster::{ClientError, ClusterClient};
use nexus_coordinator::{Coordinator, CoordinatorConfig};
use nexus_nn::DEMO_MODEL;
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::{encode_message, header, FrameKind, DEFAULT_MAX_FRAME};
use nexus_proto::ids::TenantId;
use nexus_proto::messages::{ClientRequest, ClientResponse, ErrorCode};
use nexus_proto::quic::{recv_message, Link};
use nexus_proto::tls::{client_config, ClusterCa};
use nexus_tests::{test_coordinator, test_worker, DemoClient};
use nexus_worker::run;
use std::net::SocketAddr;
use std::time::Duration;

/// Sends raw bytes as one request stream; returns the coordinator's reply
/// (or `None` if it closed the stream without one).
async fn raw(endpoint: &quinn::Endpoint, addr: SocketAddr, bytes: &[u8]) -> Option<ClientResponse> {
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(
        Duration::from_secs(5),
        recv_message::<_, ClientResponse>(&mut recv, "reply", DEFAULT_MAX_FRAME),
    )
    .await
    .ok()?
    .ok()
}

fn refusal(reply: Option<ClientResponse>) -> (ErrorCode, String) {
    match reply {
        Some(ClientResponse::Error(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_the_cluster_keeps_serving() {
    let ca = ClusterCa::generate("hostile").unwrap();
    let max_blob = 64 << 20;
    let coordinator = Coordinator::start(CoordinatorConfig {
        max_blob,
        max_attempts: 2,
        ..test_coordinator(&ca, &[("acme", "s3cret"), ("bolt", "b0lt")])
    })
    .await
    .unwrap();
    let addr = coordinator.local_addr().unwrap();
    tokio::spawn(run(test_worker(addr, &ca, "worker-0")));
    let demo = DemoClient::new(64);
    let tenant = TenantId::new("acme").unwrap();
    let client =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant.clone(), "s3cret".into()).await.unwrap();
    let (key_set, _) = client.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    let good_query = || async {
        let q = client.submit(key_set, DEMO_MODEL, &demo.inputs()).await.unwrap();
        client.wait(q, Duration::from_secs(60)).await.unwrap();
        assert!(demo.max_error(&client.fetch(q).await.unwrap()) < 1e-4);
    };
    good_query().await;

    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(&ca.certificate(), None, Link::Loopback).unwrap());

    // Random bytes.
    let (code, msg) = refusal(raw(&endpoint, addr, &[0x5a; 300]).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("magic"), "{msg}");
    // A frame from a future protocol version.
    let mut frame = encode_message(
        "req",
        &ClientRequest::Status { tenant: tenant.clone(), token: "s3cret".into(), query: nexus_proto::ids::QueryId(1) },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    frame[4..6].copy_from_slice(&99u16.to_be_bytes());
    let (code, msg) = refusal(raw(&endpoint, addr, &frame).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("version 99"), "{msg}");
    // A header announcing more than the frame limit.
    let (_, msg) = refusal(raw(&endpoint, addr, &header(FrameKind::Message, u32::MAX)).await);
    assert!(msg.contains("exceeds the limit"), "{msg}");
    // A truncated frame.
    frame[4..6].copy_from_slice(&nexus_proto::PROTOCOL_VERSION.to_be_bytes());
    let (_, msg) = refusal(raw(&endpoint, addr, &frame[..frame.len() - 3]).await);
    assert!(msg.contains("truncated") || msg.contains("decod"), "{msg}");
    // A blob larger than the coordinator accepts: refused by its announced size.
    let inputs = demo.inputs();
    let huge = ClientRequest::SubmitQuery {
        tenant: tenant.clone(),
        token: "s3cret".into(),
        key_set,
        model: DEMO_MODEL.into(),
        inputs: vec![BlobRef { len: max_blob + 1, digest: [0; 32] }],
        request: 1,
    };
    let (code, msg) = refusal(raw(&endpoint, addr, &encode_message("req", &huge, DEFAULT_MAX_FRAME).unwrap()).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("limit") || msg.contains("exceeds"), "{msg}");
    // Many blobs, each within the limit, together over the coordinator's
    // in-flight upload budget: refused before any byte is read.
    let many = ClientRequest::SubmitQuery {
        tenant: tenant.clone(),
        token: "s3cret".into(),
        key_set,
        model: DEMO_MODEL.into(),
        inputs: vec![BlobRef { len: max_blob, digest: [0; 32] }; 500],
        request: 3,
    };
    let (code, msg) = refusal(raw(&endpoint, addr, &encode_message("req", &many, DEFAULT_MAX_FRAME).unwrap()).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("in-flight upload budget"), "{msg}");
    // A blob whose bytes do not match its hash.
    let mut corrupted = encode_message(
        "req",
        &ClientRequest::SubmitQuery {
            tenant: tenant.clone(),
            token: "s3cret".into(),
            key_set,
            model: DEMO_MODEL.into(),
            inputs: vec![BlobRef::of(&inputs[0])],
            request: 2,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let mut bytes = inputs[0].clone();
    bytes[1000] ^= 1;
    corrupted.extend_from_slice(&header(FrameKind::BlobChunk, bytes.len() as u32));
    corrupted.extend_from_slice(&bytes);
    let (code, msg) = refusal(raw(&endpoint, addr, &corrupted).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("digest") || msg.contains("hash"), "{msg}");

    // A ciphertext at other parameters than the key set's is refused at
    // admission.
    let other = Parameters::preset("INSECURE_N12_QP1500_DEEP_TEST").unwrap();
    let mut kg = KeyGenerator::new(&other);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let pt = Encoder::new(&other).encode_real(&[0.5; 8], 2, other.default_scale()).unwrap();
    let alien = Encryptor::new(&other).encrypt_pk(&pt, &pk).unwrap().to_bytes(&other).unwrap();
    match client.submit(key_set, DEMO_MODEL, &[alien]).await {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("not a ciphertext at the parameters"), "{}", e.message);
        }
        other => panic!("a ciphertext at the wrong parameters must be refused: {other:?}"),
    }
    // Garbage where a ciphertext belongs, likewise.
    assert!(matches!(
        client.submit(key_set, DEMO_MODEL, &[vec![1u8; 100]]).await,
        Err(ClientError::Refused(e)) if e.code == ErrorCode::BadRequest
    ));

    // A ciphertext at a level the model cannot start from: admitted (the
    // coordinator never decrypts or decodes inputs), then the query fails
    // with the worker's reason, and only that query.
    let low = client.submit(key_set, DEMO_MODEL, &demo.inputs_at_level(0)).await.unwrap();
    match client.wait(low, Duration::from_secs(60)).await {
        Err(ClientError::Query(q, reason)) => {
            assert_eq!(q, low);
            assert!(reason.contains("level"), "{reason}");
        }
        other => panic!("an input at level 0 must fail its query: {other:?}"),
    }

    // Another tenant cannot use or delete acme's key set, nor see, fetch or
    // release acme's queries (they look like missing ones).
    let bolt =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), TenantId::new("bolt").unwrap(), "b0lt".into())
            .await
            .unwrap();
    match bolt.submit(key_set, DEMO_MODEL, &demo.inputs()).await {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert!(e.message.contains("not registered for tenant bolt"), "{}", e.message);
        }
        other => panic!("another tenant's key set must be refused: {other:?}"),
    }
    match bolt.delete_keys(key_set).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message),
        other => panic!("another tenant deleted acme's key set: {other:?}"),
    }
    for refused in [bolt.status(low).await.err(), bolt.fetch(low).await.err(), bolt.release(low).await.err()] {
        assert!(matches!(refused, Some(ClientError::Refused(e)) if e.code == ErrorCode::NotFound));
    }

    // Replays: the same submission (same idempotency key) is one query; the
    // same key set again is already present; a released query is gone, and
    // releasing it again is refused.
    let admitted = coordinator.metrics().queries_admitted.get();
    let inputs = demo.inputs();
    let first = client.submit_request(key_set, DEMO_MODEL, &inputs, 77).await.unwrap();
    let replayed = client.submit_request(key_set, DEMO_MODEL, &inputs, 77).await.unwrap();
    assert_eq!(first, replayed);
    assert_eq!(coordinator.metrics().queries_admitted.get(), admitted + 1, "a replay admits nothing new");
    assert_eq!(client.register_keys(&demo.keys, demo.params.digest()).await.unwrap(), (key_set, true));
    client.wait(first, Duration::from_secs(60)).await.unwrap();
    assert!(demo.max_error(&client.fetch(first).await.unwrap()) < 1e-4);
    client.release(first).await.unwrap();
    assert!(matches!(client.fetch(first).await, Err(ClientError::Refused(e)) if e.code == ErrorCode::NotFound));
    assert!(matches!(client.release(first).await, Err(ClientError::Refused(e)) if e.code == ErrorCode::NotFound));

    // Nothing accepted was lost, and the cluster still serves.
    good_query().await;
    let st = coordinator.stats().await;
    assert!(st.tasks_done >= 6, "{st:?}");
    coordinator.shutdown().await;
}
