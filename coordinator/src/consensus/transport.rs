//! Raft messages between coordinators over their own mutual-TLS QUIC
//! endpoint (a dedicated port). Both ends must present a cluster
//! certificate valid for [`COORDINATOR_PEER_NAME`]; a worker's certificate
//! is refused.
//!
//! Each batch of messages to a peer travels on one unidirectional stream as
//! frames `[len u64][protobuf Message]`, each at most `max_message` bytes.
//! Sending never blocks the Ready loop: a full queue or a dead link drops
//! messages, which raft retransmits.
//!
//! The same endpoint carries the coordinators' other traffic among
//! themselves on bidirectional streams (key-set bytes, which stay out of
//! the raft log): [`RaftTransport::open_stream`] and the `streams` handler
//! of [`RaftTransport::serve`].

use nexus_proto::quic::Link;
use nexus_proto::tls::{client_config, peer_has_name, peer_server_config, Identity, COORDINATOR_PEER_NAME};
use protobuf::Message as _;
use quinn::rustls::pki_types::CertificateDer;
use raft::eraftpb::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::replica::Outbox;

/// Handles a peer's bidirectional stream (spawning what takes time).
pub type PeerStreams = Arc<dyn Fn(quinn::SendStream, quinn::RecvStream) + Send + Sync>;

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;

/// A raft peer's address (host:port, resolved at each connection attempt).
#[derive(Clone, Debug)]
pub struct PeerAddress {
    /// Raft member id.
    pub id: u64,
    /// Its raft endpoint.
    pub raft: String,
}

/// The raft endpoint of one coordinator.
#[derive(Debug, Clone)]
pub struct RaftTransport {
    endpoint: quinn::Endpoint,
    max_message: u64,
}

impl RaftTransport {
    /// Binds the raft endpoint.
    pub fn bind(
        listen: SocketAddr,
        ca: &CertificateDer<'static>,
        identity: &Identity,
        max_message: u64,
    ) -> Result<Self, String> {
        // Peers reach this endpoint where it listens: on loopback they all
        // run on this machine.
        let link = Link::of_listen(listen);
        let server = peer_server_config(ca, identity, link).map_err(|e| e.to_string())?;
        let mut endpoint =
            nexus_proto::quic::endpoint(listen, Some(server)).map_err(|e| format!("raft endpoint: {e}"))?;
        endpoint.set_default_client_config(client_config(ca, Some(identity), link).map_err(|e| e.to_string())?);
        Ok(Self { endpoint, max_message })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.endpoint.local_addr().map_err(|e| e.to_string())
    }

    /// An outbox that routes each message to its peer's sender task.
    pub fn outbox(&self, peers: &[PeerAddress]) -> Outbox {
        let mut queues = HashMap::new();
        for peer in peers {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(peer.id, tx);
            tokio::spawn(send_loop(self.endpoint.clone(), peer.clone(), rx));
        }
        Box::new(move |m: Message| {
            if let Some(q) = queues.get(&m.to) {
                let _ = q.try_send(m);
            }
        })
    }

    /// Accepts peers' connections: hands every raft message to `step` and
    /// every bidirectional stream to `streams`.
    pub fn serve(&self, step: impl Fn(Message) + Send + Sync + 'static, streams: PeerStreams) {
        let (endpoint, max) = (self.endpoint.clone(), self.max_message);
        let step = Arc::new(step);
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let (step, streams) = (step.clone(), streams.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    if !peer_has_name(&conn, COORDINATOR_PEER_NAME) {
                        conn.close(2u32.into(), b"raft peers need a coordinator certificate");
                        return;
                    }
                    let bi = conn.clone();
                    tokio::spawn(async move {
                        while let Ok((send, recv)) = bi.accept_bi().await {
                            streams(send, recv);
                        }
                    });
                    while let Ok(mut stream) = conn.accept_uni().await {
                        let step = step.clone();
                        tokio::spawn(async move {
                            while let Ok(Some(m)) = read_frame(&mut stream, max).await {
                                step(m);
                            }
                        });
                    }
                });
            }
        });
    }

    /// A bidirectional stream to `peer` on a connection of its own (these
    /// carry bulk transfers, which must not delay raft's messages).
    pub async fn open_stream(&self, peer: &PeerAddress) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let conn = connect(&self.endpoint, peer)
            .await
            .ok_or_else(|| format!("coordinator {} at {} is unreachable", peer.id, peer.raft))?;
        conn.open_bi().await.map_err(|e| format!("opening a stream to coordinator {}: {e}", peer.id))
    }

    /// Closes the endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

async fn send_loop(endpoint: quinn::Endpoint, peer: PeerAddress, mut rx: mpsc::Receiver<Message>) {
    let mut conn: Option<quinn::Connection> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(|c| c.close_reason().is_some()) {
            conn = connect(&endpoint, &peer).await;
            if conn.is_none() {
                // Unreachable: drop this batch (raft retransmits) and back off.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = &conn else { continue };
        if write_batch(c, &batch).await.is_err() {
            conn = None;
        }
    }
}

async fn connect(endpoint: &quinn::Endpoint, peer: &PeerAddress) -> Option<quinn::Connection> {
    let addr = tokio::net::lookup_host(&peer.raft).await.ok()?.next()?;
    let connecting = endpoint.connect(addr, COORDINATOR_PEER_NAME).ok()?;
    tokio::time::timeout(Duration::from_secs(1), connecting).await.ok()?.ok()
}

async fn write_batch(conn: &quinn::Connection, batch: &[Message]) -> Result<(), String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    for m in batch {
        let bytes = m.write_to_bytes().map_err(|e| e.to_string())?;
        stream.write_all(&(bytes.len() as u64).to_le_bytes()).await.map_err(|e| e.to_string())?;
        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
    }
    stream.finish().map_err(|e| e.to_string())
}

/// One message, `None` at the end of the stream.
async fn read_frame(stream: &mut quinn::RecvStream, max: u64) -> Result<Option<Message>, String> {
    let mut len = [0u8; 8];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(format!("raft message of {len} bytes exceeds the {max}-byte limit"));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Message::parse_from_bytes(&body).map(Some).map_err(|e| e.to_string())
}
