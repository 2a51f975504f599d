//! Frames and blobs over real QUIC on loopback with mutual TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
                                                    // The binaries run on mimalloc (see worker/src/main.rs); measure the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::ids::{KeySetId, TenantId};
use nexus_proto::messages::{ClientRequest, ClientResponse};
use nexus_proto::quic::{endpoint, recv_blob, recv_message, send_blob, send_message, Link};
use nexus_proto::tls::{client_config, peer_is_authenticated, server_config, ClusterCa};
use std::net::SocketAddr;
use std::time::Instant;

/// A server that stores one key set per connection and answers whether the
/// peer presented a certificate.
async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let authenticated = peer_is_authenticated(&conn);
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let req: ClientRequest = recv_message(&mut recv, "request", DEFAULT_MAX_FRAME).await.unwrap();
                let reply = match req {
                    ClientRequest::RegisterKeySet { key_set, keys, .. } => {
                        // Checked against the announced digest as it arrived.
                        let bytes = recv_blob(&mut recv, &keys, 1 << 30).await.unwrap();
                        assert_eq!(bytes.len() as u64, keys.len);
                        assert_eq!(KeySetId::of_blob(&keys), key_set);
                        ClientResponse::KeySetRegistered { key_set, already_present: authenticated }
                    }
                    other => panic!("unexpected {other:?}"),
                };
                send_message(&mut send, "response", &reply, DEFAULT_MAX_FRAME).await.unwrap();
                send.finish().unwrap();
            }
        });
    }
}

async fn register(endpoint: &quinn::Endpoint, addr: SocketAddr, bytes: &[u8]) -> Result<ClientResponse, String> {
    let conn = endpoint.connect(addr, "localhost").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let keys = BlobRef::of(bytes);
    let req = ClientRequest::RegisterKeySet {
        tenant: TenantId::new("t").unwrap(),
        token: "secret".into(),
        key_set: KeySetId::of_blob(&keys),
        params_digest: [0; 32],
        keys,
    };
    send_message(&mut send, "request", &req, DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())?;
    send_blob(&mut send, bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv_message(&mut recv, "response", DEFAULT_MAX_FRAME).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_blobs_over_loopback_quic() {
    let ca = ClusterCa::generate("nexus test ca").unwrap();
    let coordinator = ca.issue_coordinator(&["localhost", "127.0.0.1"]).unwrap();
    let worker = ca.issue("worker-0", &["worker-0"]).unwrap();
    let server = endpoint(
        "127.0.0.1:0".parse().unwrap(),
        Some(server_config(&ca.certificate(), &coordinator, Link::Loopback).unwrap()),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(serve(server));

    let bytes: Vec<u8> = (0..(64usize << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    // A worker with a certificate: authenticated, blob intact.
    let mut w = endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    w.set_default_client_config(client_config(&ca.certificate(), Some(&worker), Link::Loopback).unwrap());
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let reply = register(&w, addr, &bytes).await.unwrap();
        rates.push(bytes.len() as f64 / t.elapsed().as_secs_f64() / 1e9);
        assert_eq!(reply, ClientResponse::KeySetRegistered { key_set: KeySetId::of(&bytes), already_present: true });
    }
    rates.sort_by(f64::total_cmp);
    println!("64 MiB key set over loopback QUIC (mTLS, BLAKE3-checked), 5 uploads: median {:.2} GB/s", rates[2]);

    // A tenant's client without a certificate connects but is not authenticated.
    let mut c = endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    c.set_default_client_config(client_config(&ca.certificate(), None, Link::Loopback).unwrap());
    let reply = register(&c, addr, &bytes[..1000]).await.unwrap();
    assert!(matches!(reply, ClientResponse::KeySetRegistered { already_present: false, .. }));

    // A certificate from another CA is refused by the handshake, and the
    // client refuses a server it cannot verify.
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let rogue = rogue_ca.issue("worker-x", &["worker-x"]).unwrap();
    let mut r = endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    r.set_default_client_config(client_config(&ca.certificate(), Some(&rogue), Link::Loopback).unwrap());
    assert!(register(&r, addr, &bytes[..10]).await.is_err());
    let mut u = endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    u.set_default_client_config(client_config(&rogue_ca.certificate(), None, Link::Loopback).unwrap());
    assert!(register(&u, addr, &bytes[..10]).await.is_err());
}
