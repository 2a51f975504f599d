//! Writes the fuzz corpus seeds: one valid encoding of every object each
//! decoder reads (frames of every message type, ciphertexts full and
//! seeded at a low and a high level, plaintexts, every key type, parameter
//! sets, a key set, model configurations, weights, a trained head and model
//! ids, raft commands and a snapshot), so the fuzzers start from the real
//! formats.
//!
//! `cargo run --release -p nexus-tests --example fuzz_seeds -- fuzz/corpus`
//! (the seeds are committed; rerun after a format change).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a developer tool: fails loudly

use nexus_ckks::wire::parameters_to_bytes;
use nexus_ckks::*;
use nexus_coordinator::consensus::StateMachine;
use nexus_coordinator::replicated::{Command, Replicated};
use nexus_nn::bert::head::ClassifierHead;
use nexus_nn::bert::{BertConfig, BertWeights};
use nexus_nn::KeySet;
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::{encode_message, DEFAULT_MAX_FRAME};
use nexus_proto::ids::{KeySetId, QueryId, TaskId, TenantId, WorkerId};
use nexus_proto::messages::*;
use std::path::{Path, PathBuf};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let tenant = TenantId::new("acme").unwrap();
    let blob = BlobRef::of(b"blob");
    let key_set = KeySetId::of(b"keys");
    let query = QueryId(42);

    // Frames.
    let requests = [
        ClientRequest::RegisterKeySet {
            tenant: tenant.clone(),
            token: "t".into(),
            key_set,
            params_digest: [1; 32],
            keys: blob,
        },
        ClientRequest::SubmitQuery {
            tenant: tenant.clone(),
            token: "t".into(),
            key_set,
            model: "mlp-demo".into(),
            inputs: vec![blob, blob],
            request: 7,
        },
        ClientRequest::Status { tenant: tenant.clone(), token: "t".into(), query },
        ClientRequest::FetchResult { tenant: tenant.clone(), token: "t".into(), query },
        ClientRequest::Release { tenant: tenant.clone(), token: "t".into(), query },
        ClientRequest::DeleteKeySet { tenant: tenant.clone(), token: "t".into(), key_set },
    ];
    for (i, r) in requests.iter().enumerate() {
        write(&root, "frame", &format!("request-{i}"), &encode_message("seed", r, DEFAULT_MAX_FRAME).unwrap());
    }
    let responses = [
        ClientResponse::QueryAccepted { query, position: 3 },
        ClientResponse::Result { query, outputs: vec![blob] },
        ClientResponse::Error(ErrorReply {
            code: ErrorCode::RateLimited,
            message: "retry in 5 ms".into(),
            leader: Some("a:1".into()),
        }),
        ClientResponse::Error(ErrorReply {
            code: ErrorCode::InUse,
            message: "key set in use by unfinished queries (1)".into(),
            leader: None,
        }),
    ];
    for (i, r) in responses.iter().enumerate() {
        write(&root, "frame", &format!("response-{i}"), &encode_message("seed", r, DEFAULT_MAX_FRAME).unwrap());
    }
    let task = TaskAssignment {
        task: TaskId { query, index: 3 },
        key_set,
        model: "mlp-demo".into(),
        kind: TaskKind::Elementwise { layer: 1, op: ElementwiseOp::Gelu },
        inputs: vec![blob],
    };
    write(
        &root,
        "frame",
        "coordinator-assign",
        &encode_message("seed", &CoordinatorMessage::Assign(task), DEFAULT_MAX_FRAME).unwrap(),
    );
    write(
        &root,
        "frame",
        "coordinator-registered",
        &encode_message("seed", &CoordinatorMessage::Registered { worker: WorkerId(1) }, DEFAULT_MAX_FRAME).unwrap(),
    );
    let worker = [
        WorkerMessage::Register {
            capabilities: Capabilities { threads: 2, memory_bytes: 1 << 30, gpus: vec![] },
            cached: vec![key_set],
        },
        WorkerMessage::FetchKeys { key_set },
        WorkerMessage::TaskResult {
            task: TaskId { query, index: 1 },
            outcome: TaskOutcome::Done { outputs: vec![blob], micros: 5 },
        },
    ];
    for (i, m) in worker.iter().enumerate() {
        write(&root, "frame", &format!("worker-{i}"), &encode_message("seed", m, DEFAULT_MAX_FRAME).unwrap());
    }

    // CKKS objects at the fuzzers' parameter set.
    let params = Parameters::preset("INSECURE_N11_QP230_TEST").unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let encoder = Encoder::new(&params);
    let values: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64 * 0.1).sin()).collect();
    for level in [0, params.max_level()] {
        let pt = encoder.encode_real(&values, level, params.default_scale()).unwrap();
        write(&root, "plaintext", &format!("level-{level}"), &pt.to_bytes(&params).unwrap());
        let full = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
        write(&root, "ciphertext", &format!("full-level-{level}"), &full.to_bytes(&params).unwrap());
        let seeded = Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap();
        write(&root, "ciphertext", &format!("seeded-level-{level}"), &seeded.to_bytes(&params).unwrap());
    }
    write(&root, "keys", "public", &pk.to_bytes(&params).unwrap());
    write(&root, "keys", "secret", &sk.to_bytes(&params).unwrap());
    let relin = kg.relin_key(&sk);
    write(&root, "keys", "relin", &relin.to_bytes(&params).unwrap());
    let galois = kg.galois_keys(&sk, &[1], false).unwrap();
    write(&root, "keys", "galois-set", &galois.to_bytes(&params).unwrap());
    let one = kg.galois_key(&sk, params.galois_element_for_rotation(1)).unwrap();
    write(&root, "keys", "galois-one", &one.to_bytes(&params).unwrap());

    // Parameter sets (the strict decoder accepts only the secure ones).
    for preset in ["INSECURE_N11_QP230_TEST", "N16_QP1545_H192", "N13_QP147_TERN"] {
        let p = Parameters::preset(preset).unwrap();
        write(&root, "parameters", preset, &parameters_to_bytes(&p).unwrap());
    }
    // A key set: secure parameters (the worker's decoder refuses others),
    // then an insecure one to seed the structure past the parameters.
    let secure = Parameters::preset("N13_QP147_TERN").unwrap();
    let mut skg = KeyGenerator::new(&secure);
    let ssk = skg.secret_key();
    let secure_set = KeySet::new(secure.clone(), skg.relin_key(&ssk), GaloisKeys::new());
    write(&root, "key_set", "secure-relin-only", &secure_set.to_bytes().unwrap());
    let small_set = KeySet::new(params.clone(), relin, GaloisKeys::new());
    write(&root, "key_set", "insecure-relin-only", &small_set.to_bytes().unwrap());

    // Model files.
    let minilm = r#"{"architectures":["BertModel"],"attention_probs_dropout_prob":0.1,"hidden_act":"gelu",
        "hidden_dropout_prob":0.1,"hidden_size":384,"initializer_range":0.02,"intermediate_size":1536,
        "layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert","num_attention_heads":12,
        "num_hidden_layers":6,"pad_token_id":0,"position_embedding_type":"absolute","type_vocab_size":2,
        "vocab_size":30522}"#;
    write(&root, "model_config", "minilm-config.json", minilm.as_bytes());
    let weights = BertWeights::random(BertConfig::tiny(), 1).unwrap();
    write(&root, "model_config", "tiny.safetensors", &weights.to_safetensors().unwrap());
    let rows = vec![vec![0.5; BertConfig::tiny().hidden]; 2];
    let head = ClassifierHead::new(vec!["cat".into(), "dog".into()], rows, vec![0.1, -0.1], BertConfig::tiny().hidden);
    write(&root, "model_config", "head.safetensors", &head.unwrap().to_safetensors().unwrap());
    write(&root, "model_config", "head-id.txt", b"bert:tiny@0123456789abcdef:2:8,6:8:head=pets/2/0123456789abcdef");
    write(&root, "model_config", "labels-id.txt", b"bert:tiny@0123456789abcdef:2:8:8:a cat;a dog");

    // Raft commands and a snapshot.
    let mut state = Replicated::default();
    let commands = [
        Command::SetTenants { tenants: [(tenant.clone(), [3; 32])].into_iter().collect() },
        Command::RegisterKeySet { tenant: tenant.clone(), key_set: KeySetId::of(b"k"), params_digest: [2; 32], len: 1 },
        Command::Admit {
            query,
            request: 9,
            tenant: tenant.clone(),
            key_set: KeySetId::of(b"k"),
            model: "gelu".into(),
            layers: 1,
            max_pending: 4,
            max_held_per_tenant: 2,
            admitted_ms: 1,
            inputs: vec![serde_bytes::ByteBuf::from(vec![1u8, 2, 3])],
        },
        Command::Checkpoint { query, task: 0, outputs: vec![serde_bytes::ByteBuf::from(vec![4u8, 5])] },
        Command::Fail { query, reason: "seed".into() },
        Command::Release { tenant: tenant.clone(), query },
        Command::DeleteKeySet { tenant: tenant.clone(), key_set: KeySetId::of(b"k") },
    ];
    for (i, c) in commands.iter().enumerate() {
        let bytes = c.encode().unwrap();
        state.apply(&bytes);
        write(&root, "raft_command", &format!("command-{i}"), &bytes);
        if i == 3 {
            write(&root, "raft_command", "snapshot", &state.snapshot());
        }
    }
    println!("seeds written under {}", root.display());
}
