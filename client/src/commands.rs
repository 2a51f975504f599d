//! The `nexus` subcommands a tenant runs against a cluster: `keygen`,
//! `keys upload`, `submit`, `status [--watch]`, `fetch`.
//!
//! A client directory holds what the tenant keeps: `client.toml` (preset,
//! model, uploaded key set), `secret.key` (mode 0600, never sent),
//! `public.key`, `evaluation.keys` (uploaded once) and `queries/<id>.toml`
//! (how to unpack each submitted query's result).

use crate::cluster::ClusterClient;
use crate::encoder::{ClientEncoder, EncoderChoice};
use crate::packing::ClientModel;
use nexus_ckks::{Ciphertext, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters, PublicKey, SecretKey, Wire};
use nexus_nn::KeySet;
use nexus_proto::ids::{KeySetId, QueryId, TenantId};
use nexus_proto::messages::{ErrorCode, QueryState};
use nexus_proto::models::{BertModelId, BERT_PREFIX};
use nexus_proto::tls::certificate_from_pem;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest key or ciphertext file read back.
const MAX_FILE: usize = 16 << 30;

/// `client.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientState {
    /// Parameter preset of the keys.
    pub preset: String,
    /// Model the keys serve.
    pub model: String,
    /// Key set id once uploaded (hex).
    pub key_set: Option<String>,
    /// The BERT-family model, when `model` is `bert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderChoice>,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Coordinator addresses (host:port), every member of the group.
    pub coordinators: Vec<String>,
    /// Name on the coordinators' certificates.
    pub server_name: String,
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// Tenant.
    pub tenant: String,
    /// Tenant token.
    pub token: String,
}

impl Connection {
    async fn connect(&self) -> Result<ClusterClient, BoxError> {
        let ca = certificate_from_pem(&read(&self.ca)?)?;
        let tenant = TenantId::new(&self.tenant)?;
        Ok(ClusterClient::connect_any(&self.coordinators, &self.server_name, &ca, tenant, self.token.clone()).await?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BoxError> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

fn load_state(dir: &Path) -> Result<ClientState, BoxError> {
    let path = dir.join("client.toml");
    let text = String::from_utf8(read(&path)?)?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn save_state(dir: &Path, state: &ClientState) -> Result<(), BoxError> {
    write(&dir.join("client.toml"), toml::to_string(state)?.as_bytes())
}

/// A client directory's model.
enum Model {
    /// Rows in, rows out (mlp-demo and the single operators).
    Rows(ClientModel),
    /// A BERT-family encoder: text in, a sentence embedding out.
    Encoder(Box<ClientEncoder>),
}

fn model_for(state: &ClientState, params: &Parameters) -> Result<Model, BoxError> {
    if state.model == BERT_PREFIX {
        let choice = state.encoder.as_ref().ok_or("client.toml names model bert without its [encoder] table")?;
        let encoder = ClientEncoder::load(
            &choice.dir,
            Some(choice.layers),
            choice.max_tokens,
            choice.sentences,
            &state.preset,
            params,
        )?;
        return Ok(Model::Encoder(Box::new(encoder)));
    }
    Ok(Model::Rows(ClientModel::named(&state.model, params)?))
}

/// Generates a secret key, public key and the model's evaluation keys
/// (`encoder`: the model directory, layers and longest sentence when
/// `model` is `bert`).
pub fn keygen(dir: &Path, preset: &str, model: &str, encoder: Option<EncoderChoice>) -> Result<String, BoxError> {
    let params = Parameters::preset(preset)?;
    match (model == BERT_PREFIX, encoder.is_some()) {
        (true, false) => return Err(format!("model {BERT_PREFIX} needs its directory (--model-dir)").into()),
        (false, true) => return Err(format!("a model directory goes with model {BERT_PREFIX}, not {model:?}").into()),
        _ => {}
    }
    let mut state = ClientState { preset: preset.to_string(), model: model.to_string(), key_set: None, encoder };
    if let Some(choice) = &mut state.encoder {
        // Later commands may run from another directory.
        choice.dir = choice.dir.canonicalize().map_err(|e| format!("model directory {}: {e}", choice.dir.display()))?;
        if choice.layers == 0 {
            choice.layers = nexus_nn::bert::BertConfig::from_dir(&choice.dir)?.layers;
        }
    }
    let m = model_for(&state, &params)?;
    if let (Model::Encoder(e), Some(choice)) = (&m, &state.encoder) {
        // The head is checked as the coordinator will check each query's
        // id, and built once here, so that bad labels or a missing or
        // unusable head file are named before any key is generated.
        if let Some(head) = e.head_choice(choice.labels.as_deref(), choice.head.as_deref())? {
            BertModelId::new("model", e.digest(), 1, 2, 2)?.with_head(head.clone())?;
            e.head(&head, &params)?;
        }
    }
    if dir.join("secret.key").exists() {
        return Err(format!("{} already holds a secret key; use another directory", dir.display()).into());
    }
    std::fs::create_dir_all(dir.join("queries"))?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = match &m {
        Model::Rows(m) => KeySet::new(params.clone(), kg.relin_key(&sk), kg.galois_keys(&sk, &m.rotations(), false)?),
        Model::Encoder(e) => {
            let head = state.encoder.as_ref().is_some_and(EncoderChoice::has_head);
            e.generate_keys(preset, &params, &mut kg, &sk, head)?
        }
    };
    let sk_path = dir.join("secret.key");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode_0600().open(&sk_path)?;
    f.write_all(&sk.to_bytes(&params)?)?;
    write(&dir.join("public.key"), &pk.to_bytes(&params)?)?;
    // Streamed: the encoded set (GBs at 2^16) is never in memory whole.
    let eval_path = dir.join("evaluation.keys");
    let written = write_key_set(&eval_path, &keys).map_err(|e| format!("writing {}: {e}", eval_path.display()))?;
    save_state(dir, &state)?;
    Ok(format!(
        "keys for {model} at {preset} in {}: secret.key (keep it), public.key, evaluation.keys ({:.1} MB, upload with `nexus keys upload`)",
        dir.display(),
        written as f64 / 1e6
    ))
}

fn write_key_set(path: &Path, keys: &KeySet) -> Result<u64, BoxError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let written = keys.write_to(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(written)
}

/// Opening a file readable by its owner only (the secret key).
trait OwnerOnly {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    #[cfg(unix)]
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
    #[cfg(not(unix))]
    fn mode_0600(&mut self) -> &mut Self {
        self
    }
}

/// Uploads the evaluation keys (once; a repeat is recognised).
pub async fn upload(dir: &Path, conn: &Connection) -> Result<String, BoxError> {
    let mut state = load_state(dir)?;
    let params = Parameters::preset(&state.preset)?;
    let keys = read(&dir.join("evaluation.keys"))?;
    let client = conn.connect().await?;
    let (id, present) = client.register_keys(&keys, params.digest()).await?;
    state.key_set = Some(id.to_hex());
    save_state(dir, &state)?;
    Ok(format!("key set {id} {}", if present { "was already registered" } else { "registered" }))
}

/// Deletes the uploaded key set from the cluster; the local keys stay (a
/// later `keys upload` registers them again).
pub async fn delete_keys(dir: &Path, conn: &Connection) -> Result<String, BoxError> {
    let mut state = load_state(dir)?;
    let key_set = state.key_set.as_deref().ok_or("no key set uploaded from this directory: nothing to delete")?;
    let key_set = KeySetId::from_hex(key_set)?;
    // Not registered for this tenant: deleted already (a reply lost after
    // the deletion went through, or another client of the tenant's).
    let said = match conn.connect().await?.delete_keys(key_set).await {
        Ok(()) => "deleted",
        Err(crate::cluster::ClientError::Refused(e)) if e.code == ErrorCode::NotFound => "was deleted already",
        Err(e) => return Err(e.into()),
    };
    state.key_set = None;
    save_state(dir, &state)?;
    Ok(format!("key set {key_set} {said}"))
}

/// `queries/<id>.toml`: what fetch needs to unpack the result.
#[derive(Debug, Serialize, Deserialize)]
struct Submitted {
    /// Rows (row models); a BERT-family query's sentences, the blocks
    /// after them holding copies of the first.
    tokens: usize,
    /// Values per row (absent in records of older clients: mlp-demo).
    #[serde(default)]
    width: usize,
    /// The model id sent (BERT-family queries: it names the token count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

/// What a query carries.
#[derive(Debug, Clone)]
pub enum QueryInput {
    /// A JSON file: an array of rows of numbers (row models).
    Matrix(PathBuf),
    /// Sentences (BERT-family models), packed into one query.
    Texts(Vec<String>),
}

/// Encrypts the input and submits it.
pub async fn submit(dir: &Path, conn: &Connection, input: &QueryInput) -> Result<QueryId, BoxError> {
    let state = load_state(dir)?;
    let params = Parameters::preset(&state.preset)?;
    let key_set = state.key_set.as_deref().ok_or("no key set uploaded yet: run `nexus keys upload` first")?;
    let key_set = KeySetId::from_hex(key_set)?;
    let pk = PublicKey::from_bytes(&params, &read(&dir.join("public.key"))?, MAX_FILE)?;
    let encoder = Encoder::new(&params);
    let (model, input) = match (model_for(&state, &params)?, input) {
        (Model::Rows(m), QueryInput::Matrix(path)) => (m, path.as_path()),
        (Model::Encoder(e), QueryInput::Texts(texts)) => {
            e.check_count(texts.len())?;
            let choice = state.encoder.as_ref();
            let choice =
                e.head_choice(choice.and_then(|c| c.labels.as_deref()), choice.and_then(|c| c.head.as_deref()))?;
            // A value out of range in one sentence spoils every sentence
            // of the ciphertext at its next bootstrap, not only its own.
            let shared = if texts.len() > 1 { ", and those of every sentence of this query" } else { "" };
            let head = choice.as_ref().map(|c| e.head(c, &params)).transpose()?;
            for text in texts {
                for line in e.range_warnings(text, head.as_ref())? {
                    eprintln!("warning: {text:?}: {line}: the encrypted result may be inaccurate{shared}");
                }
            }
            let (id, slots) = e.pack(texts, &params, choice.as_ref())?;
            let pt = encoder.encode_real(&slots, e.level(), params.default_scale())?;
            let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk)?.to_bytes(&params)?;
            let query = conn.connect().await?.submit(key_set, &id.to_string(), &[ct]).await?;
            let record = Submitted { tokens: texts.len(), width: 0, model: Some(id.to_string()) };
            write(&dir.join("queries").join(format!("{}.toml", query.0)), toml::to_string(&record)?.as_bytes())?;
            return Ok(query);
        }
        (Model::Rows(_), QueryInput::Texts(_)) => {
            return Err(format!("model {} takes a JSON matrix (--input), not text", state.model).into())
        }
        (Model::Encoder(_), QueryInput::Matrix(_)) => return Err("a BERT-family model takes text (--text)".into()),
    };
    let rows: Vec<Vec<f64>> = serde_json::from_slice(&read(input)?)
        .map_err(|e| format!("{}: expected a JSON array of rows of numbers: {e}", input.display()))?;
    if rows.is_empty() {
        return Err(format!("{}: no rows", input.display()).into());
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.iter().any(|x| !x.is_finite())) {
        return Err(format!("{}: row {i} has a non-finite value: {r:?}", input.display()).into());
    }
    let inputs = model
        .pack(&rows, params.max_slots())
        .map_err(|e| format!("{}: {e}", input.display()))?
        .iter()
        .map(|s| -> Result<Vec<u8>, BoxError> {
            let pt = encoder.encode_real(s, model.levels(&params), params.default_scale())?;
            Ok(Encryptor::new(&params).encrypt_pk(&pt, &pk)?.to_bytes(&params)?)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = conn.connect().await?;
    let query = client.submit(key_set, &state.model, &inputs).await?;
    let record = toml::to_string(&Submitted { tokens: rows.len(), width: rows[0].len(), model: None })?;
    write(&dir.join("queries").join(format!("{}.toml", query.0)), record.as_bytes())?;
    Ok(query)
}

/// Parses `q123` or `123`.
pub fn parse_query(s: &str) -> Result<QueryId, String> {
    s.trim_start_matches('q').parse().map(QueryId).map_err(|_| format!("{s:?} is not a query id (q<number>)"))
}

/// Prints the query's progress; with `watch`, redraws a bar until it ends.
pub async fn status(conn: &Connection, query: QueryId, watch: bool) -> Result<(), BoxError> {
    let client = conn.connect().await?;
    let started = Instant::now();
    loop {
        let s = client.status(query).await?;
        let width = 30;
        let filled = (width * s.tasks_done as usize).checked_div(s.tasks_total as usize).unwrap_or(0);
        let state = match &s.state {
            QueryState::Queued { position } => format!("queued ({position} ahead)"),
            QueryState::Running => "running".into(),
            QueryState::Done => "done".into(),
            QueryState::Failed { reason } => format!("failed: {reason}"),
        };
        let line = format!(
            "{query} [{}{}] layer {}/{}, tasks {}/{}, {state}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            s.layers_done,
            s.layers_total,
            s.tasks_done,
            s.tasks_total
        );
        let finished = matches!(s.state, QueryState::Done | QueryState::Failed { .. });
        if !watch {
            println!("{line}");
            return Ok(());
        }
        print!("\r{line} ({:.0} s)", started.elapsed().as_secs_f64());
        std::io::stdout().flush()?;
        if finished {
            println!();
            return match s.state {
                QueryState::Failed { reason } => Err(format!("query {query} failed: {reason}").into()),
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes a query (and its result) on the coordinator.
pub async fn release(conn: &Connection, query: QueryId) -> Result<(), BoxError> {
    conn.connect().await?.release(query).await?;
    Ok(())
}

/// A query's decrypted result.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Fetched {
    /// Rows (a row model's tokens; a BERT-family model's sentence
    /// embedding as one row).
    Rows(Vec<Vec<f64>>),
    /// A sentence embedding and the class its head picked.
    Classified {
        /// The sentence embedding.
        embedding: Vec<f64>,
        /// The class.
        class: crate::encoder::Class,
    },
    /// Each sentence's result, in the order they were submitted (keys for
    /// several sentences per query, however many the query had).
    Sentences(Vec<SentenceResult>),
}

/// One sentence of a query of several.
#[derive(Debug, Serialize)]
pub struct SentenceResult {
    /// The sentence embedding.
    pub embedding: Vec<f64>,
    /// The class its head picked (queries with a head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<crate::encoder::Class>,
}

/// Fetches, decrypts and unpacks a finished query's result.
pub async fn fetch(dir: &Path, conn: &Connection, query: QueryId) -> Result<Fetched, BoxError> {
    let state = load_state(dir)?;
    let params = Parameters::preset(&state.preset)?;
    let model = model_for(&state, &params)?;
    let record_path = dir.join("queries").join(format!("{}.toml", query.0));
    let record: Submitted = toml::from_str(&String::from_utf8(read(&record_path)?)?)
        .map_err(|e| format!("{}: {e}", record_path.display()))?;
    let sk = SecretKey::from_bytes(&params, &read(&dir.join("secret.key"))?, MAX_FILE)?;
    let client = conn.connect().await?;
    let outputs = client.fetch(query).await?;
    let encoder = Encoder::new(&params);
    let decryptor = Decryptor::new(&params);
    let model = match model {
        Model::Rows(m) => m,
        Model::Encoder(e) => {
            let id = record.model.as_deref().map(BertModelId::parse).transpose()?.flatten();
            let id = id.ok_or_else(|| format!("{}: no BERT model id recorded", record_path.display()))?;
            let expected = if id.head.is_some() { 2 } else { 1 };
            if outputs.len() != expected {
                return Err(format!(
                    "result has {} ciphertexts, expected {expected} (the embedding, then a head's class mask)",
                    outputs.len()
                )
                .into());
            }
            let decoded = |bytes: &[u8]| -> Result<Vec<f64>, BoxError> {
                let ct = Ciphertext::from_bytes(&params, bytes, MAX_FILE)?;
                Ok(encoder.decode_real(&decryptor.decrypt(&ct, &sk)?)?)
            };
            // Records of older clients hold the sentence's token count.
            let sentences = if id.lengths.len() == 1 { 1 } else { record.tokens };
            // Keys for several sentences per query: a list, however many
            // were sent, so that scripts see one shape.
            let listed = id.lengths.len() > 1;
            if !(1..=id.lengths.len()).contains(&sentences) {
                return Err(format!(
                    "{}: {sentences} sentences for a query of {}",
                    record_path.display(),
                    id.lengths.len()
                )
                .into());
            }
            let embeddings = e.unpack(&id, &decoded(&outputs[0])?, &params)?;
            let classes = match outputs.get(1) {
                Some(mask) => e.unpack_classes(&id, &decoded(mask)?, &params)?.into_iter().map(Some).collect(),
                None => vec![None; embeddings.len()],
            };
            let mut each = embeddings.into_iter().zip(classes).take(sentences);
            return Ok(match (listed, each.next()) {
                (false, Some((embedding, Some(class)))) => Fetched::Classified { embedding, class },
                (false, Some((embedding, None))) => Fetched::Rows(vec![embedding]),
                (_, first) => Fetched::Sentences(
                    first
                        .into_iter()
                        .chain(each)
                        .map(|(embedding, class)| SentenceResult { embedding, class })
                        .collect(),
                ),
            });
        }
    };
    let mut rows = Vec::with_capacity(record.tokens);
    for bytes in &outputs {
        let ct = Ciphertext::from_bytes(&params, bytes, MAX_FILE)?;
        let slots = encoder.decode_real(&decryptor.decrypt(&ct, &sk)?)?;
        rows.extend(model.unpack(&slots, record.tokens - rows.len(), record.width)?);
    }
    if rows.len() != record.tokens {
        return Err(format!("result has {} rows, the query had {} tokens", rows.len(), record.tokens).into());
    }
    Ok(Fetched::Rows(rows))
}
