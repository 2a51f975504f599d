//! Key-set bytes among the coordinators, beside the raft log.
//!
//! The log records a key set by digest and length; its bytes travel here,
//! peer to peer over the raft endpoint (mutual TLS, coordinator
//! certificates only):
//!
//! - Before the leader proposes a key set, [`KeyReplication::store_on_majority`]
//!   stores the bytes locally and on enough peers that they and the leader
//!   form a majority. Any later leader needs a majority to lead, which then
//!   includes a member holding the bytes.
//! - A member that applied a key set without its bytes (it was down, or
//!   slower than the majority) fetches them from a peer:
//!   [`KeyReplication::repair`] runs in the background, and
//!   [`KeyReplication::get`] fetches on demand when a worker asks the new
//!   leader for keys it lacks.
//!
//! On a peer stream: an `Offer` is answered `Have` (nothing sent) or `Send`
//! (the chunks follow, then `Stored`); a `Fetch` is answered with the key
//! set's chunks or `Missing`. Every received key set is checked against its
//! id (its digest) before it is stored.

use crate::consensus::{PeerAddress, PeerStreams, RaftTransport};
use crate::keystore::KeyStore;
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::KeySetId;
use nexus_proto::quic::{recv_blob, recv_message, send_blob_owned, send_message, shared_bytes};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

#[derive(Debug, Serialize, Deserialize)]
enum PeerKeyRequest {
    /// "I have this key set; do you?"
    Offer { key_set: KeySetId, len: u64 },
    /// "Send me this key set."
    Fetch { key_set: KeySetId },
}

#[derive(Debug, Serialize, Deserialize)]
enum PeerKeyReply {
    /// Already stored: nothing to send.
    Have,
    /// Send the chunks.
    Send,
    /// Received, checked and stored durably.
    Stored,
    /// The key set's chunks follow.
    Keys { len: u64 },
    /// Not stored here.
    Missing,
    /// The request could not be served.
    Failed { reason: String },
}

/// A key set's blob reference: its id is its bytes' digest.
fn blob_of(key_set: KeySetId, len: u64) -> BlobRef {
    BlobRef { len, digest: key_set.0 }
}

/// How long storing on a majority may take before the upload is refused:
/// a minute, plus the transfer at 20 MB/s (a pessimistic network).
fn replication_deadline(len: u64) -> Duration {
    Duration::from_secs(60 + len / 20_000_000)
}

/// This coordinator's key store and the way to its peers' stores.
#[derive(Debug, Clone)]
pub struct KeyReplication {
    store: KeyStore,
    transport: Option<RaftTransport>,
    peers: Arc<Vec<PeerAddress>>,
    max_blob: u64,
}

impl KeyReplication {
    /// `peers`: the other members (none in a group of one).
    pub fn new(store: KeyStore, transport: Option<RaftTransport>, peers: Vec<PeerAddress>, max_blob: u64) -> Self {
        Self { store, transport, peers: Arc::new(peers), max_blob }
    }

    /// Whether the bytes of `key_set` are stored here.
    pub fn contains(&self, key_set: &KeySetId) -> bool {
        self.store.contains(key_set)
    }

    /// Stores `bytes` (checked to be `key_set`'s by the caller) here and on
    /// enough peers for a majority of the group; the remaining peers keep
    /// receiving in the background.
    pub async fn store_on_majority(&self, key_set: KeySetId, bytes: Arc<Vec<u8>>) -> Result<(), String> {
        self.put_local(key_set, bytes.clone()).await?;
        // A majority of the group of n = peers + 1 is n/2 + 1 members:
        // n/2 (= ceil(peers / 2)) besides this one.
        let needed = self.peers.len().div_ceil(2);
        if needed == 0 {
            return Ok(());
        }
        let Some(transport) = self.transport.clone() else {
            return Err("a raft group of several members has no transport".into());
        };
        let (tx, mut rx) = mpsc::channel(self.peers.len());
        for peer in self.peers.iter().cloned() {
            let (transport, bytes, tx) = (transport.clone(), bytes.clone(), tx.clone());
            tokio::spawn(async move {
                let result = offer(&transport, &peer, key_set, bytes).await;
                let _ = tx.send((peer.id, result)).await;
            });
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + replication_deadline(bytes.len() as u64);
        let (mut stored, mut failures) = (0, Vec::new());
        while stored < needed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, Ok(())))) => stored += 1,
                Ok(Some((peer, Err(e)))) => failures.push(format!("coordinator {peer}: {e}")),
                Ok(None) => break,
                Err(_) => {
                    failures.push(format!("timed out after {:?}", replication_deadline(bytes.len() as u64)));
                    break;
                }
            }
        }
        if stored >= needed {
            Ok(())
        } else {
            Err(format!(
                "key set {key_set} reached {} of the {} coordinators a majority needs ({})",
                stored + 1,
                needed + 1,
                failures.join("; ")
            ))
        }
    }

    /// The bytes of `key_set`: from this store, else from a peer (then
    /// stored here). `Ok(None)`: no member has them.
    pub async fn get(&self, key_set: KeySetId) -> Result<Option<Arc<Vec<u8>>>, String> {
        match self.get_local(key_set).await? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.fetch_from_peers(key_set).await,
        }
    }

    /// The bytes of `key_set` from this store (read off the runtime's
    /// threads: a key set is gigabytes).
    async fn get_local(&self, key_set: KeySetId) -> Result<Option<Arc<Vec<u8>>>, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.get(&key_set))
            .await
            .map_err(|e| format!("reading key set {key_set}: {e}"))?
    }

    /// Fetches every key set in `wanted` that is not stored here from a peer.
    pub async fn repair(&self, wanted: Vec<KeySetId>) {
        for key_set in wanted.into_iter().filter(|k| !self.contains(k)) {
            match self.fetch_from_peers(key_set).await {
                Ok(Some(_)) => info!(key_set = %key_set, "key set fetched from a peer coordinator"),
                Ok(None) => warn!(key_set = %key_set, "no peer coordinator has the key set yet"),
                Err(e) => warn!(key_set = %key_set, error = %e, "fetching the key set from peers"),
            }
        }
    }

    async fn fetch_from_peers(&self, key_set: KeySetId) -> Result<Option<Arc<Vec<u8>>>, String> {
        let Some(transport) = &self.transport else { return Ok(None) };
        let mut errors = Vec::new();
        for peer in self.peers.iter() {
            match fetch(transport, peer, key_set, self.max_blob).await {
                Ok(Some(bytes)) => {
                    let bytes = Arc::new(bytes);
                    self.put_local(key_set, bytes.clone()).await?;
                    return Ok(Some(bytes));
                }
                Ok(None) => {}
                Err(e) => errors.push(format!("coordinator {}: {e}", peer.id)),
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors.join("; "))
        }
    }

    async fn put_local(&self, key_set: KeySetId, bytes: Arc<Vec<u8>>) -> Result<(), String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put(key_set, bytes))
            .await
            .map_err(|e| format!("storing key set {key_set}: {e}"))?
    }

    /// The handler of peers' key streams, for [`RaftTransport::serve`].
    pub fn streams(&self) -> PeerStreams {
        let me = self.clone();
        Arc::new(move |send, recv| {
            let me = me.clone();
            tokio::spawn(async move {
                if let Err(e) = me.answer(send, recv).await {
                    warn!(error = %e, "peer key-set request failed");
                }
            });
        })
    }

    async fn answer(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<(), String> {
        let request: PeerKeyRequest =
            recv_message(&mut recv, "peer key request", DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
        match request {
            PeerKeyRequest::Offer { key_set, len } => {
                if self.contains(&key_set) {
                    return reply(&mut send, PeerKeyReply::Have).await;
                }
                reply(&mut send, PeerKeyReply::Send).await?;
                let outcome = match recv_blob(&mut recv, &blob_of(key_set, len), self.max_blob).await {
                    Ok(bytes) => self.put_local(key_set, Arc::new(bytes)).await,
                    Err(e) => Err(format!("receiving key set {key_set}: {e}")),
                };
                let answer = match &outcome {
                    Ok(()) => PeerKeyReply::Stored,
                    Err(reason) => PeerKeyReply::Failed { reason: reason.clone() },
                };
                reply(&mut send, answer).await?;
                let _ = send.finish();
                outcome
            }
            PeerKeyRequest::Fetch { key_set } => {
                match self.get_local(key_set).await {
                    Ok(Some(bytes)) => {
                        reply(&mut send, PeerKeyReply::Keys { len: bytes.len() as u64 }).await?;
                        send_blob_owned(&mut send, shared_bytes(bytes)).await.map_err(|e| e.to_string())?;
                    }
                    Ok(None) => reply(&mut send, PeerKeyReply::Missing).await?,
                    Err(reason) => reply(&mut send, PeerKeyReply::Failed { reason }).await?,
                }
                let _ = send.finish();
                Ok(())
            }
        }
    }
}

async fn reply(send: &mut quinn::SendStream, r: PeerKeyReply) -> Result<(), String> {
    send_message(send, "peer key reply", &r, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())
}

/// Offers `bytes` to `peer`; `Ok` once the peer holds them.
async fn offer(
    transport: &RaftTransport,
    peer: &PeerAddress,
    key_set: KeySetId,
    bytes: Arc<Vec<u8>>,
) -> Result<(), String> {
    let (mut send, mut recv) = transport.open_stream(peer).await?;
    let request = PeerKeyRequest::Offer { key_set, len: bytes.len() as u64 };
    send_message(&mut send, "peer key request", &request, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
    let answer = |r: Result<PeerKeyReply, nexus_proto::ProtoError>| r.map_err(|e| e.to_string());
    match answer(recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await)? {
        PeerKeyReply::Have => return Ok(()),
        PeerKeyReply::Send => {}
        other => return Err(format!("unexpected answer to an offer: {other:?}")),
    }
    send_blob_owned(&mut send, shared_bytes(bytes)).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    match answer(recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await)? {
        PeerKeyReply::Stored => Ok(()),
        PeerKeyReply::Failed { reason } => Err(reason),
        other => Err(format!("unexpected answer after the key set's bytes: {other:?}")),
    }
}

/// Asks `peer` for `key_set`; `Ok(None)` if it does not hold it.
async fn fetch(
    transport: &RaftTransport,
    peer: &PeerAddress,
    key_set: KeySetId,
    max_blob: u64,
) -> Result<Option<Vec<u8>>, String> {
    let (mut send, mut recv) = transport.open_stream(peer).await?;
    let request = PeerKeyRequest::Fetch { key_set };
    send_message(&mut send, "peer key request", &request, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    match recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())? {
        PeerKeyReply::Keys { len } => {
            recv_blob(&mut recv, &blob_of(key_set, len), max_blob).await.map(Some).map_err(|e| e.to_string())
        }
        PeerKeyReply::Missing => Ok(None),
        PeerKeyReply::Failed { reason } => Err(reason),
        other => Err(format!("unexpected answer to a fetch: {other:?}")),
    }
}
