//! Ciphertext blobs over loopback QUIC: serialization, transfer and
//! deserialization, measured alone and as one pipeline.
//!
//! `cargo run --release -p nexus-tests --example transfer -- [PRESET] [CIPHERTEXTS] [REPEATS]`
//! (defaults: N16_QP1500_TERN, 16 ciphertexts at the top level, 5 repeats).
//!
//! The pipeline is what the cluster does with every ciphertext it moves:
//! the sender encodes it (wire format, bit-packed limbs), hashes the bytes
//! (BLAKE3, announced in the message before the blob) and streams it on its
//! own QUIC stream (mutual TLS, one connection kept open as between a
//! coordinator and a worker); the receiver checks the digest chunk by
//! chunk and decodes the ciphertext against the parameters (every
//! coefficient checked reduced), then hands the buffer back for the next
//! blob; the sender encodes into such buffers too, returned when quinn
//! drops them (`nexus_proto::recycle`, as a worker does with its task
//! inputs and outputs). All ciphertexts are in flight at once, both
//! ends in this process on the same cores. Rates are wire bytes per second,
//! median over the repeats.

use nexus_ckks::*;
use nexus_proto::blob::BlobRef;
use nexus_proto::frame::DEFAULT_MAX_FRAME;
use nexus_proto::quic::{endpoint, recv_blob, recv_message, send_blob_owned, send_message, Link};
use nexus_proto::tls::{client_config, server_config, ClusterCa};
use std::sync::Arc;
use std::time::Instant;

// As the cluster's binaries (see worker/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Receives ciphertexts, one per stream, and answers each with its level.
async fn receive(conn: quinn::Connection, params: Arc<Parameters>) -> Result<(), BoxError> {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let params = params.clone();
        tokio::spawn(async move {
            let answer = async {
                let blob: BlobRef = recv_message(&mut recv, "blob", DEFAULT_MAX_FRAME).await?;
                let bytes = recv_blob(&mut recv, &blob, 1 << 30).await?;
                let ct = Ciphertext::from_bytes(&params, &bytes, 1 << 30)?;
                // As a worker does with its task inputs once decoded.
                nexus_proto::recycle::give(bytes);
                Ok::<_, BoxError>(ct.level() as u64)
            }
            .await
            .map_err(|e| e.to_string());
            let _ = send_message(&mut send, "answer", &answer, DEFAULT_MAX_FRAME).await;
            let _ = send.finish();
        });
    }
    Ok(())
}

/// Sends one ciphertext as the cluster does; returns its wire size.
async fn send(conn: &quinn::Connection, params: &Parameters, ct: &Ciphertext) -> Result<u64, BoxError> {
    let bytes = ct.to_bytes_with(params, nexus_proto::recycle::take)?;
    let blob = BlobRef::of(&bytes);
    let (mut send, mut recv) = conn.open_bi().await?;
    send_message(&mut send, "blob", &blob, DEFAULT_MAX_FRAME).await?;
    send_blob_owned(&mut send, nexus_proto::recycle::shared(bytes)).await?;
    send.finish()?;
    let answer: Result<u64, String> = recv_message(&mut recv, "answer", DEFAULT_MAX_FRAME).await?;
    if answer? != ct.level() as u64 {
        return Err("the receiver decoded another level".into());
    }
    Ok(blob.len)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().cloned().unwrap_or_else(|| "N16_QP1500_TERN".into());
    let count: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let repeats: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let params = Arc::new(Parameters::preset(&preset)?);
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let encoder = Encoder::new(&params);
    let level = params.max_level();
    let cts: Vec<Ciphertext> = (0..count)
        .map(|k| {
            let v: Vec<f64> = (0..params.max_slots()).map(|i| ((i + k) as f64 * 0.001).sin()).collect();
            let pt = encoder.encode_real(&v, level, params.default_scale())?;
            Ok(Encryptor::new(&params).encrypt_pk(&pt, &pk)?)
        })
        .collect::<Result<_, BoxError>>()?;

    // Encoding and decoding alone, one core.
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    let mut wire = 0u64;
    for _ in 0..repeats {
        let t = Instant::now();
        let all: Vec<Vec<u8>> = cts.iter().map(|c| c.to_bytes(&params)).collect::<Result<_, _>>()?;
        let dt = t.elapsed().as_secs_f64();
        wire = all.iter().map(|b| b.len() as u64).sum();
        enc.push(wire as f64 / dt / 1e9);
        let t = Instant::now();
        for b in &all {
            Ciphertext::from_bytes(&params, b, 1 << 30)?;
        }
        dec.push(wire as f64 / t.elapsed().as_secs_f64() / 1e9);
    }

    let ca = ClusterCa::generate("nexus transfer bench")?;
    let server_id = ca.issue_coordinator(&["localhost", "127.0.0.1"])?;
    let client_id = ca.issue("worker-0", &["worker-0"])?;
    let server = endpoint("127.0.0.1:0".parse()?, Some(server_config(&ca.certificate(), &server_id, Link::Loopback)?))?;
    let addr = server.local_addr()?;
    let p = params.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(conn) = incoming.await {
                tokio::spawn(receive(conn, p.clone()));
            }
        }
    });
    let mut client = endpoint("127.0.0.1:0".parse()?, None)?;
    client.set_default_client_config(client_config(&ca.certificate(), Some(&client_id), Link::Loopback)?);
    let conn = client.connect(addr, "localhost")?.await?;

    // The pipeline; the first round also warms the connection up (MTU).
    let cts = Arc::new(cts);
    let mut piped = Vec::new();
    for round in 0..=repeats {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..cts.len() {
            let (conn, params, cts) = (conn.clone(), params.clone(), cts.clone());
            tasks.push(tokio::spawn(async move { send(&conn, &params, &cts[i]).await }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        if round > 0 {
            piped.push(total as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    conn.close(0u32.into(), b"done");

    println!(
        "{count} ciphertexts at level {level} of {preset}, {:.1} MB each on the wire, {repeats} repeats (median):",
        wire as f64 / count as f64 / 1e6
    );
    println!("  encode alone (1 core):                      {:.2} GB/s", median(enc));
    println!("  decode alone (1 core, checked):             {:.2} GB/s", median(dec));
    println!("  encode + hash + QUIC + check + decode (2 cores): {:.2} GB/s", median(piped));
    Ok(())
}
