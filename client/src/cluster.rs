//! Talking to a coordinator: upload keys once, submit encrypted queries,
//! poll status, fetch encrypted results. Tenants authenticate with a token;
//! the coordinator is verified against the cluster CA.

use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::{KeySetId, QueryId, TenantId};
use nexus_proto::messages::{ClientRequest, ClientResponse, ErrorCode, ErrorReply, QueryState, QueryStatus};
use nexus_proto::quic::{recv_blob, recv_message, send_blob, send_message, Link};
use nexus_proto::tls::client_config;
use nexus_proto::ProtoError;
use quinn::rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::Mutex;

/// Client failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Protocol or transport error.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Connection error.
    #[error("connection: {0}")]
    Connection(String),
    /// The coordinator refused the request.
    #[error("coordinator refused ({:?}): {}", .0.code, .0.message)]
    Refused(ErrorReply),
    /// Reply out of protocol.
    #[error("unexpected reply {0}")]
    Unexpected(String),
    /// The query failed or did not finish in time.
    #[error("query {0}: {1}")]
    Query(QueryId, String),
}

/// A tenant's connection to the coordinator group. Requests go to the
/// raft leader: a follower's `NotLeader` reply or a lost connection sends
/// the request to the named leader or the next coordinator, until
/// `failover_timeout` passes. Every request is safe to repeat (a query
/// submission carries a random request id that the group deduplicates).
#[derive(Debug)]
pub struct ClusterClient {
    endpoint: quinn::Endpoint,
    addrs: Vec<String>,
    server_name: String,
    current: Mutex<Current>,
    tenant: TenantId,
    token: String,
    max_blob: u64,
    /// How long a request keeps looking for the leader.
    pub failover_timeout: Duration,
}

/// How long a request without blobs (status, fetch) waits for its reply
/// header before trying another coordinator.
pub const REPLY_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Current {
    conn: Option<quinn::Connection>,
    /// Address of `conn`.
    target: Option<String>,
    /// Leader named by the last redirect.
    hint: Option<String>,
    next: usize,
    /// Addresses that failed recently, and when: tried last.
    suspect: HashMap<String, Instant>,
}

/// How long a failed address is tried only after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

impl Current {
    /// The redirect's leader, else the next address not failed recently.
    fn pick(&mut self, addrs: &[String]) -> String {
        if let Some(h) = self.hint.take() {
            return h;
        }
        self.suspect.retain(|_, at| at.elapsed() < SUSPECT_FOR);
        for _ in 0..addrs.len() {
            self.next += 1;
            let a = &addrs[(self.next - 1) % addrs.len()];
            if !self.suspect.contains_key(a) {
                return a.clone();
            }
        }
        // Everything failed recently: the least recently failed.
        let oldest = self.suspect.iter().min_by_key(|(_, at)| **at).map(|(a, _)| a.clone());
        oldest.unwrap_or_else(|| addrs[0].clone())
    }

    /// Drops the connection; `failed` marks its address suspect.
    fn drop_connection(&mut self, failed: bool) {
        self.conn = None;
        if let (true, Some(t)) = (failed, self.target.take()) {
            self.suspect.insert(t, Instant::now());
        }
    }
}

impl ClusterClient {
    /// Connects to `addr` (certificate name `server_name`, trusted via `ca`).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        ca: &CertificateDer<'static>,
        tenant: TenantId,
        token: String,
    ) -> Result<Self, ClientError> {
        Self::connect_any(&[addr.to_string()], server_name, ca, tenant, token).await
    }

    /// Connects to the first reachable of `addrs` (host:port, every member
    /// of the coordinator group).
    pub async fn connect_any(
        addrs: &[String],
        server_name: &str,
        ca: &CertificateDer<'static>,
        tenant: TenantId,
        token: String,
    ) -> Result<Self, ClientError> {
        let cerr = |e: String| ClientError::Connection(e);
        if addrs.is_empty() {
            return Err(cerr("no coordinator address given".into()));
        }
        let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint = nexus_proto::quic::endpoint(any, None).map_err(|e| cerr(e.to_string()))?;
        endpoint.set_default_client_config(client_config(ca, None, Link::to_hosts(addrs))?);
        let me = Self {
            endpoint,
            addrs: addrs.to_vec(),
            server_name: server_name.to_string(),
            current: Mutex::new(Current::default()),
            tenant,
            token,
            max_blob: 16 << 30,
            failover_timeout: Duration::from_secs(30),
        };
        // Each failed address becomes suspect, so the next attempt picks
        // another: one round over the group.
        let mut failures = Vec::new();
        for _ in 0..me.addrs.len() {
            match me.connection().await {
                Ok(_) => return Ok(me),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(cerr(format!("no coordinator reachable: {}", failures.join("; "))))
    }

    /// The open connection, or a new one to the hinted leader or the next
    /// address.
    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let target = cur.pick(&self.addrs);
        cur.target = Some(target.clone());
        let cerr = |e: String| ClientError::Connection(format!("{target}: {e}"));
        let addr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| cerr(e.to_string()))?
            .next()
            .ok_or_else(|| cerr("resolves to no address".into()))?;
        let connecting = self.endpoint.connect(addr, &self.server_name).map_err(|e| cerr(e.to_string()))?;
        let conn = match tokio::time::timeout(Duration::from_secs(1), connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                cur.drop_connection(true);
                return Err(cerr(e.to_string()));
            }
            Err(_) => {
                cur.drop_connection(true);
                return Err(cerr("no handshake within 1 s".into()));
            }
        };
        cur.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Sends a request to the leader, following redirects and failovers.
    /// Requests without blobs expect their reply within [`REPLY_WITHIN`]
    /// (a dead coordinator is then left before the idle timeout).
    async fn call(
        &self,
        req: &ClientRequest,
        blobs: &[&[u8]],
    ) -> Result<(ClientResponse, quinn::RecvStream), ClientError> {
        let deadline = Instant::now() + self.failover_timeout;
        let mut rate_limited = 0u32;
        loop {
            let result = match self.connection().await {
                Ok(conn) if blobs.is_empty() => tokio::time::timeout(REPLY_WITHIN, self.call_once(&conn, req, blobs))
                    .await
                    .unwrap_or_else(|_| Err(ClientError::Connection(format!("no reply within {REPLY_WITHIN:?}")))),
                Ok(conn) => self.call_once(&conn, req, blobs).await,
                Err(e) => Err(e),
            };
            let retry = match &result {
                Err(ClientError::Refused(e)) if e.code == ErrorCode::NotLeader => {
                    let mut cur = self.current.lock().await;
                    cur.drop_connection(false);
                    cur.hint = e.leader.clone();
                    true
                }
                Err(ClientError::Connection(_))
                | Err(ClientError::Proto(ProtoError::Io(_)))
                | Err(ClientError::Proto(ProtoError::Truncated { .. })) => {
                    self.current.lock().await.drop_connection(true);
                    true
                }
                // Over the tenant's request rate: the refusal names the
                // wait; the request was not acted on, so resending is safe.
                Err(ClientError::Refused(e)) if e.code == ErrorCode::RateLimited => {
                    rate_limited += 1;
                    true
                }
                _ => false,
            };
            if !retry || Instant::now() >= deadline {
                return result;
            }
            let pause = match &result {
                Err(ClientError::Refused(e)) if e.code == ErrorCode::RateLimited => {
                    retry_after(&e.message).unwrap_or(Duration::from_millis(50)) * rate_limited.min(8)
                        + Duration::from_millis(rand::random::<u64>() % 20)
                }
                _ => Duration::from_millis(100),
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn call_once(
        &self,
        conn: &quinn::Connection,
        req: &ClientRequest,
        blobs: &[&[u8]],
    ) -> Result<(ClientResponse, quinn::RecvStream), ClientError> {
        let cerr = |e: String| ClientError::Connection(e);
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| cerr(e.to_string()))?;
        send_message(&mut send, "request", req, DEFAULT_MAX_FRAME).await?;
        // A refusal (bad token, unknown model, not the leader) may arrive
        // before the blobs were read: the coordinator then stops the
        // stream, and its reply is what matters, not the interrupted upload.
        let mut upload: Result<(), ClientError> = Ok(());
        for b in blobs {
            if let Err(e) = send_blob(&mut send, b).await {
                upload = Err(e.into());
                break;
            }
        }
        if upload.is_ok() {
            send.finish().map_err(|e| cerr(e.to_string()))?;
        }
        match recv_message(&mut recv, "response", DEFAULT_MAX_FRAME).await {
            Ok(ClientResponse::Error(e)) => Err(ClientError::Refused(e)),
            Ok(ok) => upload.map(|()| (ok, recv)),
            Err(e) => Err(upload.err().unwrap_or(e.into())),
        }
    }

    /// Uploads a key set (a no-op if the coordinator has it); returns its id
    /// and whether it was already present.
    pub async fn register_keys(&self, bytes: &[u8], params_digest: [u8; 32]) -> Result<(KeySetId, bool), ClientError> {
        let keys = BlobRef::of(bytes);
        let key_set = KeySetId::of_blob(&keys);
        let req = ClientRequest::RegisterKeySet {
            tenant: self.tenant.clone(),
            token: self.token.clone(),
            key_set,
            params_digest,
            keys,
        };
        match self.call(&req, &[bytes]).await?.0 {
            ClientResponse::KeySetRegistered { key_set: got, already_present } if got == key_set => {
                Ok((key_set, already_present))
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Gives up a key set: this tenant no longer owns it, and a key set no
    /// tenant owns is removed from every coordinator and worker. Refused
    /// while the tenant has unfinished queries on it.
    pub async fn delete_keys(&self, key_set: KeySetId) -> Result<(), ClientError> {
        let req = ClientRequest::DeleteKeySet { tenant: self.tenant.clone(), token: self.token.clone(), key_set };
        match self.call(&req, &[]).await?.0 {
            ClientResponse::KeySetDeleted { key_set: got } if got == key_set => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Submits an encrypted query.
    pub async fn submit(&self, key_set: KeySetId, model: &str, inputs: &[Vec<u8>]) -> Result<QueryId, ClientError> {
        self.submit_request(key_set, model, inputs, rand::random()).await
    }

    /// Submits an encrypted query under the idempotency key `request`: a
    /// resubmission with the same key (after a lost reply, or by a client
    /// that restarted) returns the query admitted the first time.
    pub async fn submit_request(
        &self,
        key_set: KeySetId,
        model: &str,
        inputs: &[Vec<u8>],
        request: u64,
    ) -> Result<QueryId, ClientError> {
        let req = ClientRequest::SubmitQuery {
            tenant: self.tenant.clone(),
            token: self.token.clone(),
            key_set,
            model: model.to_string(),
            inputs: inputs.iter().map(|b| BlobRef::of(b)).collect(),
            request,
        };
        let blobs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        match self.call(&req, &blobs).await?.0 {
            ClientResponse::QueryAccepted { query, .. } => Ok(query),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Progress of a query.
    pub async fn status(&self, query: QueryId) -> Result<QueryStatus, ClientError> {
        let req = ClientRequest::Status { tenant: self.tenant.clone(), token: self.token.clone(), query };
        match self.call(&req, &[]).await?.0 {
            ClientResponse::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Polls until the query is done (or failed, or `timeout` passes),
    /// every 20 ms at first, backing off to every 100 ms (each poll counts
    /// against the tenant's request rate).
    pub async fn wait(&self, query: QueryId, timeout: Duration) -> Result<QueryStatus, ClientError> {
        let start = Instant::now();
        let mut every = Duration::from_millis(20);
        loop {
            let status = self.status(query).await?;
            match &status.state {
                QueryState::Done => return Ok(status),
                QueryState::Failed { reason } => return Err(ClientError::Query(query, reason.clone())),
                _ if start.elapsed() > timeout => return Err(ClientError::Query(query, "timed out".into())),
                _ => {
                    tokio::time::sleep(every).await;
                    every = (every * 5 / 4).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Tells the coordinator the tenant is done with `query` (after its
    /// result is fetched, or to cancel it): its ciphertexts are deleted and
    /// it stops counting against the tenant's quota.
    pub async fn release(&self, query: QueryId) -> Result<(), ClientError> {
        let req = ClientRequest::Release { tenant: self.tenant.clone(), token: self.token.clone(), query };
        match self.call(&req, &[]).await?.0 {
            ClientResponse::Released { query: got } if got == query => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The encrypted outputs of a finished query.
    pub async fn fetch(&self, query: QueryId) -> Result<Vec<Vec<u8>>, ClientError> {
        let req = ClientRequest::FetchResult { tenant: self.tenant.clone(), token: self.token.clone(), query };
        let (reply, mut recv) = self.call(&req, &[]).await?;
        match reply {
            ClientResponse::Result { query: got, outputs } if got == query => {
                let mut out = Vec::with_capacity(outputs.len());
                for b in &outputs {
                    out.push(recv_blob(&mut recv, b, self.max_blob).await?);
                }
                Ok(out)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// The wait a `RateLimited` refusal names ("... retry in N ms").
fn retry_after(message: &str) -> Option<Duration> {
    let rest = &message[message.rfind("retry in ")? + "retry in ".len()..];
    let ms: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_millis(ms.min(10_000)))
}
