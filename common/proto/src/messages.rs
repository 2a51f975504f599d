//! Every message between client, coordinator and worker. Blobs (keys,
//! ciphertexts) are announced by [`BlobRef`] and follow as chunk frames.

use crate::blob::BlobRef;
use crate::ids::{KeySetId, QueryId, TaskId, TenantId, WorkerId};
use serde::{Deserialize, Serialize};

/// Client to coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Upload evaluation keys once (content-addressed; a re-upload of a known
    /// id is answered without the blob being read).
    RegisterKeySet {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// BLAKE3 digest of the key set's bytes.
        key_set: KeySetId,
        /// Digest of the CKKS parameters the keys belong to.
        params_digest: [u8; 32],
        /// The keys (chunks follow).
        keys: BlobRef,
    },
    /// Give up a key set: the tenant stops owning it, and a key set no
    /// tenant owns is removed from every coordinator's key store and every
    /// worker's cache. Refused while the tenant has unfinished queries on it.
    DeleteKeySet {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// The key set.
        key_set: KeySetId,
    },
    /// Submit an encrypted query.
    SubmitQuery {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// Key set the input is encrypted under.
        key_set: KeySetId,
        /// Model name.
        model: String,
        /// Encrypted input ciphertexts (chunks follow, in order).
        inputs: Vec<BlobRef>,
        /// Client-chosen random id: resubmitting after a lost reply or a
        /// failover returns the query already admitted, never a second one.
        request: u64,
    },
    /// Progress of a query (only its tenant may ask).
    Status {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// The query.
        query: QueryId,
    },
    /// The encrypted result of a finished query (only its tenant may ask).
    FetchResult {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// The query.
        query: QueryId,
    },
    /// The tenant is done with a query: its ciphertexts are deleted and it
    /// stops counting against the tenant's quota (a running query is
    /// cancelled).
    Release {
        /// Tenant.
        tenant: TenantId,
        /// Tenant token.
        token: String,
        /// The query.
        query: QueryId,
    },
}

/// Coordinator to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// Keys stored (or already present).
    KeySetRegistered {
        /// The key set.
        key_set: KeySetId,
        /// Whether the coordinator already had it.
        already_present: bool,
    },
    /// The tenant no longer owns the key set (replicated): no query of its
    /// can use it any more.
    KeySetDeleted {
        /// The key set.
        key_set: KeySetId,
    },
    /// Query admitted (replicated, so it will not be lost).
    QueryAccepted {
        /// Its id.
        query: QueryId,
        /// Position in the queue.
        position: u32,
    },
    /// Progress.
    Status(QueryStatus),
    /// The encrypted outputs (chunks follow, in order).
    Result {
        /// The query.
        query: QueryId,
        /// Output ciphertexts.
        outputs: Vec<BlobRef>,
    },
    /// The query is gone.
    Released {
        /// The query.
        query: QueryId,
    },
    /// A refusal.
    Error(ErrorReply),
}

/// Where a query is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryState {
    /// Waiting for a batch.
    Queued {
        /// Queries ahead of it.
        position: u32,
    },
    /// Tasks are running.
    Running,
    /// Finished; the result can be fetched.
    Done,
    /// Failed for good.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Progress of a query, per layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStatus {
    /// The query.
    pub query: QueryId,
    /// State.
    pub state: QueryState,
    /// Layers finished.
    pub layers_done: u32,
    /// Layers in the plan.
    pub layers_total: u32,
    /// Tasks finished.
    pub tasks_done: u32,
    /// Tasks in the plan.
    pub tasks_total: u32,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Malformed or inconsistent request.
    BadRequest,
    /// Unknown tenant or wrong token.
    Unauthorized,
    /// The tenant's quota is used up.
    QuotaExceeded,
    /// The admission queue is full: retry later (backpressure).
    Busy,
    /// Unknown query or key set.
    NotFound,
    /// Not the raft leader: ask the leader named in the message.
    NotLeader,
    /// A bug or an unavailable dependency.
    Internal,
    /// The tenant sends requests faster than its rate limit: retry after
    /// the delay the message names.
    RateLimited,
    /// Still used by unfinished work (a key set its owner deletes while
    /// its queries run): retry once that work is done or released.
    InUse,
}

/// A refusal with a message naming what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable class.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
    /// With `NotLeader`: the leader's client address, if known.
    pub leader: Option<String>,
}

/// A worker's resources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPU threads it runs tasks with.
    pub threads: u32,
    /// Memory budget for keys and tasks.
    pub memory_bytes: u64,
    /// GPUs (name, memory).
    pub gpus: Vec<(String, u64)>,
}

/// Element-wise operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElementwiseOp {
    /// GELU.
    Gelu,
    /// Softmax over rows.
    Softmax,
    /// LayerNorm over rows.
    LayerNorm,
}

/// What a task computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// One tile of a compressed-input product: its partial outputs.
    MatMulTile {
        /// Layer in the model plan.
        layer: u32,
        /// Input ciphertext index.
        input: u32,
        /// First output row block.
        first_block: u32,
        /// One past the last output row block (`u32::MAX`: the last).
        end_block: u32,
    },
    /// A rotation-based product of one ciphertext.
    MatMulDiagonal {
        /// Layer.
        layer: u32,
    },
    /// Attention of one head.
    Attention {
        /// Layer.
        layer: u32,
        /// Head.
        head: u32,
    },
    /// An element-wise operator on one ciphertext.
    Elementwise {
        /// Layer.
        layer: u32,
        /// Operator.
        op: ElementwiseOp,
    },
    /// One encoder layer of a BERT-family model on one sentence's
    /// ciphertext (attention, feed-forward block, both LayerNorms and the
    /// bootstraps between them).
    EncoderLayer {
        /// Layer.
        layer: u32,
    },
    /// Mean pooling of the encoder's output (the sentence embedding).
    MeanPool,
    /// Bootstrap one ciphertext.
    Bootstrap,
    /// One argmax comparison round.
    ArgmaxRound {
        /// Round index.
        round: u32,
    },
    /// One step of a BERT-family encoder layer; a layer's steps form a
    /// graph (the three projections run side by side, as do the tiles of
    /// the product into the feed-forward layout).
    EncoderStep {
        /// Layer.
        layer: u32,
        /// Which step.
        step: EncoderStep,
    },
    /// The sum of a compressed-input product's tiles (their partial
    /// outputs in tile order): the product's output ciphertexts.
    MatMulAssemble {
        /// Layer.
        layer: u32,
    },
    /// A classification head's scaled logits from the pooled embedding
    /// (before the Argmax rounds).
    HeadLogits,
    /// The Argmax's one-hot class mask: the logits and the last
    /// `ArgmaxRound`'s output in.
    ArgmaxMask,
}

/// The steps of one encoder layer (`nexus_nn::bert::encrypted::LayerSteps`),
/// with the inputs each takes, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncoderStep {
    /// The layer's input, bootstrapped if the projections need levels.
    Input,
    /// Query projection of the refreshed input.
    Query,
    /// Key projection of the refreshed input.
    Key,
    /// Value projection of the refreshed input.
    Value,
    /// Scores, Softmax and weighted sum of every head at once (the heads
    /// share each ciphertext): query, key, value in.
    Attention,
    /// Output projection, residual and LayerNorm: the attention's context
    /// and the refreshed input in.
    AttentionOutput,
    /// Output ciphertexts `[tile n / tiles, (tile + 1) n / tiles)` of the
    /// product into the feed-forward layout (`n` wide ciphertexts; a tile
    /// may be empty): the attention block's output in.
    FeedForwardIn {
        /// This tile.
        tile: u32,
        /// Tiles of the product.
        tiles: u32,
    },
    /// GELU on every wide ciphertext (refreshed two per bootstrap): the
    /// tiles' outputs in order.
    Gelu,
    /// The product back, residual and LayerNorm: GELU's outputs and the
    /// attention block's output in.
    FeedForwardOut,
}

/// A task sent to a worker (input ciphertexts follow as chunks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// Idempotent id.
    pub task: TaskId,
    /// Model the task belongs to (layer indices refer to its plan).
    pub model: String,
    /// Evaluation keys it needs.
    pub key_set: KeySetId,
    /// What to compute.
    pub kind: TaskKind,
    /// Inputs.
    pub inputs: Vec<BlobRef>,
}

/// Worker to coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// Join the cluster.
    Register {
        /// Resources.
        capabilities: Capabilities,
        /// Key sets already cached (after a restart).
        cached: Vec<KeySetId>,
    },
    /// Liveness and load.
    Heartbeat {
        /// Sender.
        worker: WorkerId,
        /// Tasks running.
        running: u32,
        /// Key sets cached.
        cached: Vec<KeySetId>,
    },
    /// Ask for a key set it lacks (the coordinator streams it once).
    FetchKeys {
        /// The key set.
        key_set: KeySetId,
    },
    /// A task finished (outputs follow as chunks) or failed.
    TaskResult {
        /// The task.
        task: TaskId,
        /// Outputs, or why not.
        outcome: TaskOutcome,
    },
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// Outputs (chunks follow, in order).
    Done {
        /// Output ciphertexts.
        outputs: Vec<BlobRef>,
        /// Worker-side time in microseconds.
        micros: u64,
    },
    /// Failed; `retryable` failures are rescheduled elsewhere.
    Failed {
        /// Why.
        reason: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

/// Close reason of a coordinator that stops the whole cluster (a group of
/// one): its workers stop too. A member of a larger group closes with
/// another reason and its workers move on to the new leader.
pub const SHUTDOWN_REASON: &[u8] = b"shutdown";

/// Coordinator to worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// Registration accepted.
    Registered {
        /// The worker's id.
        worker: WorkerId,
    },
    /// Run a task.
    Assign(TaskAssignment),
    /// A key set (chunks follow).
    Keys {
        /// The key set.
        key_set: KeySetId,
        /// Its bytes.
        keys: BlobRef,
    },
    /// Drop a key set from the cache: its last owner deleted it.
    ForgetKeys {
        /// The key set.
        key_set: KeySetId,
    },
    /// Drain and stop.
    Shutdown,
    /// This coordinator does not lead: register with the leader (its
    /// worker address, if known).
    NotLeader {
        /// The leader's address for workers.
        leader: Option<String>,
    },
}
