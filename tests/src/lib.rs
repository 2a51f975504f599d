//! Support for the cross-crate system tests in `tests/tests/`: the real
//! binaries as processes, free loopback ports, the demo model's encrypted
//! inputs and their check, and reading Prometheus metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support fails loudly on purpose

use nexus_ckks::*;
use nexus_nn::bert::head::ClassifierHead;
use nexus_nn::bert::{BertConfig, BertWeights};
use nexus_nn::{DemoMlp, KeySet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

/// The workspace binary `name` of package `package`, brought up to date
/// first: cargo builds another package's binaries for this package's tests
/// only if asked, and a stale binary would test old code (a no-op build
/// takes a fraction of a second).
pub fn binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building {name}");
    dir.join(name)
}

/// An in-process test worker named `name` (a certificate issued by `ca`)
/// for the coordinator at `addr`: one thread, a 1 GiB key cache, insecure
/// test parameters accepted, no metrics, no model root. Tests override
/// fields with `WorkerConfig { .., ..test_worker(..) }`.
pub fn test_worker(addr: SocketAddr, ca: &nexus_proto::tls::ClusterCa, name: &str) -> nexus_worker::WorkerConfig {
    nexus_worker::WorkerConfig {
        coordinators: vec![addr.to_string()],
        server_name: "localhost".into(),
        ca: ca.certificate(),
        identity: ca.issue(name, &[name]).unwrap(),
        threads: 1,
        key_cache_bytes: 1 << 30,
        allow_insecure_parameters: true,
        lean_keys: false,
        metrics_listen: None,
        reconnect_for: Duration::from_secs(10),
        models: None,
    }
}

/// An in-process test coordinator on a free loopback port with a
/// certificate from `ca` (for `localhost` and `127.0.0.1`), the given
/// tenants (name, token), a group of one in memory, 16 queued queries,
/// 4 GiB blobs, 3 attempts, no metrics. Tests override fields with
/// `CoordinatorConfig { .., ..test_coordinator(..) }`.
pub fn test_coordinator(
    ca: &nexus_proto::tls::ClusterCa,
    tenants: &[(&str, &str)],
) -> nexus_coordinator::CoordinatorConfig {
    nexus_coordinator::CoordinatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca: ca.certificate(),
        identity: ca.issue_coordinator(&["localhost", "127.0.0.1"]).unwrap(),
        tenants: tenants.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect(),
        max_queued: 16,
        max_blob: 1 << 32,
        max_attempts: 3,
        metrics_listen: None,
        raft: nexus_coordinator::RaftSettings::default(),
        limits: nexus_coordinator::limits::Limits::default(),
    }
}

/// A raft group's members on loopback: member `i + 1` at
/// `ports[i] = (public, raft)`.
pub fn loopback_peers(ports: &[(u16, u16)]) -> Vec<nexus_coordinator::PeerConfig> {
    ports
        .iter()
        .enumerate()
        .map(|(i, (public, raft))| nexus_coordinator::PeerConfig {
            id: i as u64 + 1,
            raft: format!("127.0.0.1:{raft}"),
            public: format!("127.0.0.1:{public}"),
        })
        .collect()
}

/// Child processes killed (SIGKILL) when dropped.
#[derive(Debug, Default)]
pub struct Killed(pub Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback UDP port free right now (QUIC endpoints).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback TCP port free right now (metrics endpoints).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /metrics` from `addr`, if it answers within a second.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    http_get(addr, "/metrics")
}

/// The body of `GET path` from `addr` (HTTP/1.1, no chunked encoding), if
/// it answers 200 within a few seconds.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The demo model's client side at test parameters: keys, encrypted
/// inputs, and the check of decrypted outputs against the plaintext model.
pub struct DemoClient {
    /// Parameters.
    pub params: Parameters,
    model: DemoMlp,
    sk: SecretKey,
    /// The evaluation key set's wire bytes.
    pub keys: Vec<u8>,
    tokens: Vec<Vec<f64>>,
    pk: PublicKey,
}

impl std::fmt::Debug for DemoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("DemoClient").field("tokens", &self.tokens.len()).finish_non_exhaustive()
    }
}

impl DemoClient {
    /// Keys for `INSECURE_N12_QP640_TEST` and `tokens` input rows.
    pub fn new(tokens: usize) -> Self {
        let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
        let model = DemoMlp::embedded(params.max_slots()).unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let keys =
            KeySet::new(params.clone(), kg.relin_key(&sk), kg.galois_keys(&sk, &model.rotations(), false).unwrap());
        let tokens: Vec<Vec<f64>> =
            (0..tokens).map(|t| (0..16).map(|c| ((t * 16 + c) as f64 * 0.37).sin()).collect()).collect();
        Self { keys: keys.to_bytes().unwrap(), params, model, sk, tokens, pk }
    }

    /// Freshly encrypted input ciphertexts (wire bytes).
    pub fn inputs(&self) -> Vec<Vec<u8>> {
        self.inputs_at_level(self.model.levels())
    }

    /// Input ciphertexts at `level` (the model needs [`DemoMlp::levels`]).
    pub fn inputs_at_level(&self, level: usize) -> Vec<Vec<u8>> {
        let encoder = Encoder::new(&self.params);
        self.model
            .pack(&self.tokens)
            .unwrap()
            .iter()
            .map(|s| {
                let pt = encoder.encode_real(s, level, self.params.default_scale()).unwrap();
                Encryptor::new(&self.params).encrypt_pk(&pt, &self.pk).unwrap().to_bytes(&self.params).unwrap()
            })
            .collect()
    }

    /// Largest absolute error of decrypted `outputs` against the model.
    pub fn max_error(&self, outputs: &[Vec<u8>]) -> f64 {
        let encoder = Encoder::new(&self.params);
        let want = self.model.plain(&self.tokens).unwrap();
        let mut got: Vec<Vec<f64>> = Vec::new();
        for o in outputs {
            let ct = Ciphertext::from_bytes(&self.params, o, 1 << 30).unwrap();
            let slots = encoder.decode_real(&Decryptor::new(&self.params).decrypt(&ct, &self.sk).unwrap()).unwrap();
            got.extend(self.model.unpack(&slots, self.tokens.len() - got.len()));
        }
        assert_eq!(got.len(), want.len(), "outputs cover every token");
        got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    }
}

/// The all-MiniLM-L6-v2 directory (`ops/models/fetch-minilm.sh` puts it
/// there): `NEXUS_MINILM_DIR`, else `$NEXUS_MODEL_CACHE/all-MiniLM-L6-v2`,
/// else `~/.cache/nexus/models/all-MiniLM-L6-v2`. `None` (with a line
/// saying how to get it) when absent, unless `NEXUS_REQUIRE_MINILM=1`
/// (set by `.ci/run`, which fetches it), where absence fails the test.
pub fn minilm_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("NEXUS_MINILM_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("NEXUS_MODEL_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nexus/models")
        });
        cache.join("all-MiniLM-L6-v2")
    });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("NEXUS_REQUIRE_MINILM").as_deref() != Ok("1"),
        "NEXUS_REQUIRE_MINILM=1 but {} has no model.safetensors",
        dir.display()
    );
    eprintln!("skipped: all-MiniLM-L6-v2 not found at {} (run ops/models/fetch-minilm.sh)", dir.display());
    None
}

/// The tiny model's words (besides the special tokens).
pub const WORDS: &[&str] = &["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "home", "fast", "."];

/// Writes a trained classification head into the model directory `dir`
/// (`heads/NAME.safetensors`, as clients and workers read it): one class
/// per embedding of `prototypes`, named by `labels`, its weights the
/// embedding normalised, with `bias`. Returns the head.
pub fn write_trained_head(
    dir: &Path,
    name: &str,
    labels: &[&str],
    prototypes: &[Vec<f64>],
    bias: Vec<f64>,
) -> ClassifierHead {
    let rows: Vec<Vec<f64>> = prototypes
        .iter()
        .map(|e| {
            let norm = e.iter().map(|v| v * v).sum::<f64>().sqrt();
            e.iter().map(|v| v / norm).collect()
        })
        .collect();
    let names = labels.iter().map(|l| l.to_string()).collect();
    let hidden = rows.first().map_or(0, Vec::len);
    let head = ClassifierHead::new(names, rows, bias, hidden).expect("a valid head");
    std::fs::create_dir_all(dir.join("heads")).expect("creates heads/");
    std::fs::write(dir.join("heads").join(format!("{name}.safetensors")), head.to_safetensors().expect("serialises"))
        .expect("writes");
    head
}

/// Writes a model directory (config.json, model.safetensors,
/// tokenizer.json) of a tiny random BERT (`BertConfig::tiny`, seed 21)
/// with a WordPiece vocabulary of a few words.
pub fn write_tiny_bert(dir: &Path) {
    let config = BertConfig::tiny();
    let weights = BertWeights::random(config.clone(), 21).expect("weights");
    std::fs::write(dir.join("model.safetensors"), weights.to_safetensors().expect("serialises")).expect("writes");
    let hf = serde_json::json!({
        "hidden_act": "gelu", "hidden_size": config.hidden, "intermediate_size": config.intermediate,
        "layer_norm_eps": config.layer_norm_eps, "max_position_embeddings": config.max_positions,
        "num_attention_heads": config.heads, "num_hidden_layers": config.layers,
        "type_vocab_size": config.type_vocab, "vocab_size": config.vocab
    });
    std::fs::write(dir.join("config.json"), hf.to_string()).expect("writes");
    // vocab.txt: one token per line, the id is the line number.
    let vocab: Vec<&str> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"].iter().chain(WORDS).copied().collect();
    let vocab_file = dir.join("vocab.txt");
    std::fs::write(&vocab_file, vocab.join("\n") + "\n").expect("writes");
    let model =
        WordPiece::from_file(&vocab_file.to_string_lossy()).unk_token("[UNK]".into()).build().expect("wordpiece");
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::default())).expect("normalizer");
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2))));
    tokenizer.save(dir.join("tokenizer.json"), false).expect("saves tokenizer");
}
