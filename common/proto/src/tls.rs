//! Cluster certificates (rcgen) and QUIC endpoint configurations (rustls
//! with the ring provider, TLS 1.3 only, ALPN `nexus/1`).
//!
//! One cluster CA signs every leaf. Coordinators and workers authenticate
//! each other with certificates (mutual TLS): the coordinator's endpoint
//! verifies a presented client certificate against the CA, and the worker
//! path refuses connections that presented none. Tenants' clients connect
//! without a certificate and authenticate every request with their token.

use crate::error::ProtoError;
use crate::quic::Link;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// ALPN protocol id.
pub const ALPN: &[u8] = b"nexus/1";

/// The name every coordinator certificate carries (besides its addresses):
/// raft peers dial each other by it and accept only certificates with it,
/// so a worker's certificate cannot speak raft.
pub const COORDINATOR_PEER_NAME: &str = "nexus-coordinator";

/// QUIC keep-alive interval: the liveness heartbeat on every connection
/// (coordinator and workers, clients, raft peers). Keep-alives run on the
/// async runtime, not the compute threads, so a long task does not
/// silence them.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(500);

/// A connection silent this long is dead: a lost worker's tasks are
/// reassigned after it, and workers and clients look for a new leader.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn tls_err(what: &'static str) -> impl Fn(String) -> ProtoError {
    move |msg| ProtoError::InvalidId { what, msg }
}

/// A certificate and its private key, DER-encoded.
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Identity").field("chain_len", &self.chain.len()).finish_non_exhaustive()
    }
}

impl Identity {
    /// PEM of the certificate chain and of the private key (for
    /// `nexus-coordinator init-certs`).
    pub fn to_pem(&self) -> (String, String) {
        let chain: String =
            self.chain.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))).collect();
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", self.key.secret_pkcs8_der().to_vec()));
        (chain, key)
    }

    /// An identity from PEM files' contents (chain, PKCS#8 key).
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, ProtoError> {
        use rustls::pki_types::pem::PemObject;
        let err = tls_err("PEM identity");
        let chain =
            CertificateDer::pem_slice_iter(chain).collect::<Result<Vec<_>, _>>().map_err(|e| err(e.to_string()))?;
        if chain.is_empty() {
            return Err(err("no certificate in the chain file".into()));
        }
        let key = PrivatePkcs8KeyDer::from_pem_slice(key).map_err(|e| err(e.to_string()))?;
        Ok(Self { chain, key })
    }
}

/// A certificate (the cluster CA) from PEM.
pub fn certificate_from_pem(pem: &[u8]) -> Result<CertificateDer<'static>, ProtoError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).map_err(|e| tls_err("PEM certificate")(e.to_string()))
}

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A fresh CA (ECDSA P-256).
    pub fn generate(name: &str) -> Result<Self, ProtoError> {
        let err = tls_err("certificate authority");
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| err(e.to_string()))?;
        Ok(Self { cert, key })
    }

    /// The CA certificate (DER), the trust root of every endpoint.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// PEM of the CA certificate.
    pub fn certificate_pem(&self) -> String {
        self.cert.pem()
    }

    /// A coordinator's leaf: valid for `names` (how clients and workers
    /// reach it) and for [`COORDINATOR_PEER_NAME`] (how raft peers know it).
    pub fn issue_coordinator(&self, names: &[&str]) -> Result<Identity, ProtoError> {
        let mut all = names.to_vec();
        all.push(COORDINATOR_PEER_NAME);
        self.issue("coordinator", &all)
    }

    /// A leaf certificate for `common_name`, valid for `names` (DNS names or
    /// IP addresses), usable as server and client certificate.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Result<Identity, ProtoError> {
        let err = tls_err("leaf certificate");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(|e| err(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(|e| err(e.to_string()))?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.certificate()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<rustls::RootCertStore, ProtoError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| tls_err("CA certificate")(e.to_string()))?;
    Ok(roots)
}

/// The coordinator's endpoint: presents `identity`; client certificates are
/// verified against `ca` when presented (workers) and optional (tenants'
/// clients, which authenticate by token). Every request is one
/// bidirectional stream: a peer gets [`MAX_STREAMS_PER_CONNECTION`] at once
/// (more wait for flow control, not for the coordinator's memory) and no
/// unidirectional ones.
pub fn server_config(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    link: Link,
) -> Result<quinn::ServerConfig, ProtoError> {
    let mut transport = transport_settings(link);
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    server_config_with(ca, identity, transport)
}

/// The raft endpoint between coordinators: as [`server_config`], with
/// unidirectional streams (one per raft message batch).
pub fn peer_server_config(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    link: Link,
) -> Result<quinn::ServerConfig, ProtoError> {
    server_config_with(ca, identity, transport_settings(link))
}

fn server_config_with(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    transport: quinn::TransportConfig,
) -> Result<quinn::ServerConfig, ProtoError> {
    let err = tls_err("server TLS configuration");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), PrivateKeyDer::Pkcs8(identity.key.clone_key()))
        .map_err(|e| err(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| err(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Transport settings shared by both ends. Large blobs: generous
/// flow-control windows so a 1 GB/s transfer is not window-bound on
/// loopback; path-MTU discovery up to the link's datagram size (see
/// [`Link`]), since on loopback and jumbo-frame networks 1452-byte
/// packets spend much of a transfer on per-packet crypto and syscalls.
fn transport_settings(link: Link) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(64 << 20));
    transport.receive_window(quinn::VarInt::from_u32(256 << 20));
    transport.send_window(256 << 20);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(link.max_udp_payload());
    transport.mtu_discovery_config(Some(mtu));
    transport.enable_segmentation_offload(link.segmentation_offload());
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport
}

/// Requests (streams) one peer may have open on the coordinator at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// A worker's or client's configuration: trusts `ca`; presents `identity`
/// if given (workers must); sized for `link` (see [`Link::to`]).
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
    link: Link,
) -> Result<quinn::ClientConfig, ProtoError> {
    let err = tls_err("client TLS configuration");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
            .map_err(|e| err(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| err(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_settings(link)));
    Ok(config)
}

/// Whether the peer of `conn` presented a certificate (verified against
/// the CA by the handshake): required on the worker path.
pub fn peer_is_authenticated(conn: &quinn::Connection) -> bool {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .is_some_and(|chain| !chain.is_empty())
}

/// Whether the peer of `conn` presented a CA-verified certificate valid for
/// `name` (a DNS subject alternative name).
pub fn peer_has_name(conn: &quinn::Connection, name: &str) -> bool {
    let Some(chain) = conn.peer_identity().and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok()) else {
        return false;
    };
    let Some(leaf) = chain.first() else { return false };
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(name) else { return false };
    webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
}
