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
use crate::keystore::{KeyStore, ReceiveError, StoredKeys};
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::KeySetId;
use nexus_proto::quic::{recv_message, send_message};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
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

    /// Bytes of every key set stored here.
    pub fn stored_bytes(&self) -> u64 {
        self.store.stored_bytes()
    }

    /// Whether key sets are held in memory here (no data directory).
    pub fn in_memory_only(&self) -> bool {
        self.store.in_memory_only()
    }

    /// Receives an upload of `key_set` (`len` bytes) from `r` into this
    /// store, checked against its id (see [`KeyStore::receive`]).
    pub async fn receive<R: AsyncRead + Unpin>(
        &self,
        key_set: KeySetId,
        len: u64,
        r: &mut R,
    ) -> Result<(), ReceiveError> {
        self.store.receive(key_set, len, self.max_blob, r).await
    }

    /// Copies `key_set`, stored here, to enough peers for a majority of the
    /// group; the remaining peers keep receiving in the background.
    pub async fn store_on_majority(&self, key_set: KeySetId) -> Result<(), String> {
        let Some(stored) = self.store.stored(&key_set) else {
            return Err(format!("key set {key_set} is not stored here"));
        };
        // A majority of the group of n = peers + 1 is n/2 + 1 members:
        // n/2 (= ceil(peers / 2)) besides this one.
        let needed = self.peers.len().div_ceil(2);
        if needed == 0 {
            return Ok(());
        }
        let Some(transport) = self.transport.clone() else {
            return Err("a raft group of several members has no transport".into());
        };
        let deadline_after = replication_deadline(stored.len());
        let (tx, mut rx) = mpsc::channel(self.peers.len());
        for peer in self.peers.iter().cloned() {
            let (transport, store, stored, tx) = (transport.clone(), self.store.clone(), stored.clone(), tx.clone());
            tokio::spawn(async move {
                let result = offer(&transport, &peer, key_set, &store, stored).await;
                let _ = tx.send((peer.id, result)).await;
            });
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + deadline_after;
        let (mut stored, mut failures) = (0, Vec::new());
        while stored < needed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, Ok(())))) => stored += 1,
                Ok(Some((peer, Err(e)))) => failures.push(format!("coordinator {peer}: {e}")),
                Ok(None) => break,
                Err(_) => {
                    failures.push(format!("timed out after {deadline_after:?}"));
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

    /// The stored bytes of `key_set`: from this store, else fetched from a
    /// peer into it. `Ok(None)`: no member has them.
    pub async fn get(&self, key_set: KeySetId) -> Result<Option<StoredKeys>, String> {
        match self.store.stored(&key_set) {
            Some(stored) => Ok(Some(stored)),
            None => self.fetch_from_peers(key_set).await,
        }
    }

    /// Streams `stored` (from [`get`](Self::get)) on `send`.
    pub async fn send<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        key_set: KeySetId,
        stored: StoredKeys,
        send: &mut W,
    ) -> Result<(), String> {
        self.store.send(&key_set, stored, send).await
    }

    /// Removes the deleted key sets stored here (see
    /// [`KeyStore::remove_retired`]).
    pub async fn remove_retired(&self, retired: &[(KeySetId, Option<std::time::Instant>)]) -> Vec<KeySetId> {
        self.store.remove_retired(retired).await
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

    async fn fetch_from_peers(&self, key_set: KeySetId) -> Result<Option<StoredKeys>, String> {
        let Some(transport) = &self.transport else { return Ok(None) };
        let mut errors = Vec::new();
        for peer in self.peers.iter() {
            match fetch(transport, peer, key_set, self).await {
                Ok(true) => match self.store.stored(&key_set) {
                    Some(stored) => return Ok(Some(stored)),
                    None => errors.push(format!("coordinator {}: stored, then gone", peer.id)),
                },
                Ok(false) => {}
                Err(e) => errors.push(format!("coordinator {}: {e}", peer.id)),
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors.join("; "))
        }
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
                    // The leader is registering it (again): a copy it
                    // counts on, not one left over from a deletion.
                    self.store.mark_received(key_set, std::time::Instant::now());
                    return reply(&mut send, PeerKeyReply::Have).await;
                }
                reply(&mut send, PeerKeyReply::Send).await?;
                let outcome = self.receive(key_set, len, &mut recv).await.map_err(|e| match e {
                    ReceiveError::Refused(e) => format!("receiving key set {key_set}: {e}"),
                    ReceiveError::Storage(e) => format!("storing key set {key_set}: {e}"),
                });
                let answer = match &outcome {
                    Ok(()) => PeerKeyReply::Stored,
                    Err(reason) => PeerKeyReply::Failed { reason: reason.clone() },
                };
                reply(&mut send, answer).await?;
                let _ = send.finish();
                outcome
            }
            PeerKeyRequest::Fetch { key_set } => {
                match self.store.stored(&key_set) {
                    Some(stored) => {
                        reply(&mut send, PeerKeyReply::Keys { len: stored.len() }).await?;
                        self.send(key_set, stored, &mut send).await?;
                    }
                    None => reply(&mut send, PeerKeyReply::Missing).await?,
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

/// Offers `stored` to `peer`; `Ok` once the peer holds it.
async fn offer(
    transport: &RaftTransport,
    peer: &PeerAddress,
    key_set: KeySetId,
    store: &KeyStore,
    stored: StoredKeys,
) -> Result<(), String> {
    let (mut send, mut recv) = transport.open_stream(peer).await?;
    let request = PeerKeyRequest::Offer { key_set, len: stored.len() };
    send_message(&mut send, "peer key request", &request, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
    let answer = |r: Result<PeerKeyReply, nexus_proto::ProtoError>| r.map_err(|e| e.to_string());
    match answer(recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await)? {
        PeerKeyReply::Have => return Ok(()),
        PeerKeyReply::Send => {}
        other => return Err(format!("unexpected answer to an offer: {other:?}")),
    }
    store.send(&key_set, stored, &mut send).await?;
    let _ = send.finish();
    match answer(recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await)? {
        PeerKeyReply::Stored => Ok(()),
        PeerKeyReply::Failed { reason } => Err(reason),
        other => Err(format!("unexpected answer after the key set's bytes: {other:?}")),
    }
}

/// Asks `peer` for `key_set` and stores it in `into`; `Ok(false)` if the
/// peer does not hold it.
async fn fetch(
    transport: &RaftTransport,
    peer: &PeerAddress,
    key_set: KeySetId,
    into: &KeyReplication,
) -> Result<bool, String> {
    let (mut send, mut recv) = transport.open_stream(peer).await?;
    let request = PeerKeyRequest::Fetch { key_set };
    send_message(&mut send, "peer key request", &request, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    match recv_message(&mut recv, "peer key reply", DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())? {
        PeerKeyReply::Keys { len } => {
            into.receive(key_set, len, &mut recv).await.map(|()| true).map_err(|e| e.to_string())
        }
        PeerKeyReply::Missing => Ok(false),
        PeerKeyReply::Failed { reason } => Err(reason),
        other => Err(format!("unexpected answer to a fetch: {other:?}")),
    }
}
