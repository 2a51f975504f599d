//! Frames, messages and blobs: round trips and every refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_proto::blob::{read_blob, write_blob, BlobRef, CHUNK};
use nexus_proto::frame::{decode_message, encode_message, read_message, write_message, DEFAULT_MAX_FRAME, HEADER_LEN};
use nexus_proto::ids::{KeySetId, QueryId, TaskId, TenantId, WorkerId};
use nexus_proto::messages::*;
use nexus_proto::ProtoError;
use proptest::prelude::*;

fn samples() -> (Vec<ClientRequest>, Vec<WorkerMessage>, Vec<CoordinatorMessage>) {
    let keys = BlobRef::of(b"keys");
    let key_set = KeySetId::of(b"keys");
    let tenant = TenantId::new("acme-1").unwrap();
    let task = TaskId { query: QueryId(7), index: 3 };
    let client = vec![
        ClientRequest::RegisterKeySet {
            tenant: tenant.clone(),
            token: "t".into(),
            key_set,
            params_digest: [9; 32],
            keys,
        },
        ClientRequest::SubmitQuery {
            tenant,
            token: "t".into(),
            key_set,
            model: "bert-tiny".into(),
            inputs: vec![keys; 3],
            request: 77,
        },
        ClientRequest::Status { tenant: TenantId::new("b").unwrap(), token: "t".into(), query: QueryId(1) },
        ClientRequest::FetchResult { tenant: TenantId::new("b").unwrap(), token: "t".into(), query: QueryId(u64::MAX) },
        ClientRequest::DeleteKeySet { tenant: TenantId::new("b").unwrap(), token: "t".into(), key_set },
    ];
    let worker = vec![
        WorkerMessage::Register {
            capabilities: Capabilities { threads: 2, memory_bytes: 24 << 30, gpus: vec![("H100".into(), 80 << 30)] },
            cached: vec![key_set],
        },
        WorkerMessage::Heartbeat { worker: WorkerId(2), running: 1, cached: vec![] },
        WorkerMessage::FetchKeys { key_set },
        WorkerMessage::TaskResult { task, outcome: TaskOutcome::Done { outputs: vec![keys], micros: 12 } },
        WorkerMessage::TaskResult { task, outcome: TaskOutcome::Failed { reason: "oom".into(), retryable: true } },
    ];
    let kinds = vec![
        TaskKind::MatMulTile { layer: 0, input: 1, first_block: 0, end_block: 2 },
        TaskKind::MatMulDiagonal { layer: 1 },
        TaskKind::Attention { layer: 1, head: 11 },
        TaskKind::Elementwise { layer: 1, op: ElementwiseOp::Softmax },
        TaskKind::EncoderLayer { layer: 5 },
        TaskKind::MeanPool,
        TaskKind::Bootstrap,
        TaskKind::ArgmaxRound { round: 14 },
        TaskKind::EncoderStep { layer: 2, step: EncoderStep::FeedForwardIn { tile: 1, tiles: 2 } },
        TaskKind::EncoderStep { layer: 0, step: EncoderStep::Attention },
        TaskKind::MatMulAssemble { layer: 0 },
        TaskKind::HeadLogits,
        TaskKind::ArgmaxMask,
    ];
    let mut coord: Vec<CoordinatorMessage> = kinds
        .into_iter()
        .map(|kind| {
            CoordinatorMessage::Assign(TaskAssignment {
                task,
                model: "mlp-demo".into(),
                key_set,
                kind,
                inputs: vec![keys],
            })
        })
        .collect();
    coord.push(CoordinatorMessage::Registered { worker: WorkerId(0) });
    coord.push(CoordinatorMessage::Keys { key_set, keys });
    coord.push(CoordinatorMessage::ForgetKeys { key_set });
    coord.push(CoordinatorMessage::Shutdown);
    coord.push(CoordinatorMessage::NotLeader { leader: Some("10.0.0.2:7443".into()) });
    (client, worker, coord)
}

#[test]
fn every_message_round_trips() {
    let (client, worker, coord) = samples();
    for m in client {
        let bytes = encode_message("client request", &m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_message::<ClientRequest>("client request", &bytes, DEFAULT_MAX_FRAME).unwrap(), m);
    }
    for m in worker {
        let mut stream = Vec::new();
        write_message(&mut stream, "worker message", &m, DEFAULT_MAX_FRAME).unwrap();
        let got: WorkerMessage = read_message(&mut stream.as_slice(), "worker message", DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(got, m);
    }
    for m in coord {
        let bytes = encode_message("coordinator message", &m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_message::<CoordinatorMessage>("coordinator message", &bytes, DEFAULT_MAX_FRAME).unwrap(), m);
    }
    let status = ClientResponse::Status(QueryStatus {
        query: QueryId(3),
        state: QueryState::Queued { position: 4 },
        layers_done: 0,
        layers_total: 12,
        tasks_done: 0,
        tasks_total: 900,
    });
    let bytes = encode_message("response", &status, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(decode_message::<ClientResponse>("response", &bytes, DEFAULT_MAX_FRAME).unwrap(), status);
}

#[test]
fn malformed_frames_are_refused_with_reasons() {
    let m = ClientRequest::Status { tenant: TenantId::new("b").unwrap(), token: "t".into(), query: QueryId(1) };
    let good = encode_message("req", &m, DEFAULT_MAX_FRAME).unwrap();
    let decode = |b: &[u8]| decode_message::<ClientRequest>("req", b, DEFAULT_MAX_FRAME);
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(decode(&bad), Err(ProtoError::BadMagic(_))));
    let mut bad = good.clone();
    bad[5] = 9;
    assert!(matches!(decode(&bad), Err(ProtoError::UnsupportedVersion { got: 9, .. })));
    let mut bad = good.clone();
    bad[6] = 7;
    assert!(matches!(decode(&bad), Err(ProtoError::UnknownKind(7))));
    let mut bad = good.clone();
    bad[7] = 1;
    assert!(decode(&bad).unwrap_err().to_string().contains("reserved"));
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&bad), Err(ProtoError::FrameTooLarge { .. })));
    assert!(matches!(decode(&good[..good.len() - 1]), Err(ProtoError::Truncated { .. })));
    assert!(matches!(decode(&good[..5]), Err(ProtoError::Truncated { .. })));
    // A well-framed payload of the wrong type is a decode error.
    let other =
        encode_message("x", &WorkerMessage::FetchKeys { key_set: KeySetId([0; 32]) }, DEFAULT_MAX_FRAME).unwrap();
    assert!(matches!(decode(&other), Err(ProtoError::Decode { .. })));
    // A frame larger than the sender's limit is not produced.
    let big = ClientRequest::SubmitQuery {
        tenant: TenantId::new("a").unwrap(),
        token: "x".repeat(2000),
        key_set: KeySetId([0; 32]),
        model: "m".into(),
        inputs: vec![],
        request: 0,
    };
    assert!(matches!(encode_message("req", &big, 1000), Err(ProtoError::FrameTooLarge { .. })));
    // Invalid tenant names are refused, also when decoding.
    assert!(TenantId::new("Acme").is_err() && TenantId::new("").is_err() && TenantId::new(&"a".repeat(65)).is_err());
    let mut forged = encode_message(
        "req",
        &ClientRequest::Status { tenant: TenantId::new("b").unwrap(), token: "t".into(), query: QueryId(1) },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    forged.truncate(HEADER_LEN);
    let body = rmp_serde::to_vec_named(&("RegisterKeySet",)).unwrap();
    forged.extend_from_slice(&body);
    forged[8..12].copy_from_slice(&(body.len() as u32).to_be_bytes());
    assert!(decode(&forged).is_err());
}

#[test]
fn blobs_stream_in_chunks_and_are_verified() {
    let data: Vec<u8> = (0..(2 * CHUNK + 12345)).map(|i| (i * 7 % 251) as u8).collect();
    let blob = BlobRef::of(&data);
    let mut stream = Vec::new();
    write_blob(&mut stream, &data).unwrap();
    assert_eq!(stream.len(), data.len() + 3 * HEADER_LEN);
    assert_eq!(read_blob(&mut stream.as_slice(), &blob, 1 << 30).unwrap(), data);
    // Over the receiver's limit: refused before reading.
    assert!(read_blob(&mut stream.as_slice(), &blob, 1000).unwrap_err().to_string().contains("limit"));
    // Corrupted byte: digest mismatch.
    let mut corrupt = stream.clone();
    corrupt[HEADER_LEN + 5] ^= 1;
    assert!(read_blob(&mut corrupt.as_slice(), &blob, 1 << 30)
        .unwrap_err()
        .to_string()
        .contains("BLAKE3 digest mismatch"));
    // Short stream.
    assert!(read_blob(&mut &stream[..stream.len() - 10], &blob, 1 << 30).unwrap_err().to_string().contains("ended"));
    // Announced shorter than sent: the chunk overruns.
    let short = BlobRef { len: 10, ..blob };
    assert!(read_blob(&mut stream.as_slice(), &short, 1 << 30).unwrap_err().to_string().contains("overruns"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_message::<ClientRequest>("req", &bytes, DEFAULT_MAX_FRAME);
        let _ = read_message::<_, WorkerMessage>(&mut bytes.as_slice(), "w", DEFAULT_MAX_FRAME);
        let _ = read_blob(&mut bytes.as_slice(), &BlobRef { len: 100, digest: [0; 32] }, 1000);
    }
}
