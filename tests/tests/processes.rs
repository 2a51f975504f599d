//! The real binaries as separate processes: `nexus-coordinator init-certs`,
//! `nexus-coordinator run`, two `nexus-worker`s, and a client (the library)
//! running the embedded demo model through them over QUIC.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::*;
use nexus_client::cluster::ClusterClient;
use nexus_nn::{DemoMlp, KeySet, DEMO_MODEL};
use nexus_proto::ids::TenantId;
use nexus_proto::tls::certificate_from_pem;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The workspace binary `name` of package `package`, built if missing
/// (`cargo test --workspace` has built it already).
fn binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building {name}");
    }
    path
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_two_worker_processes_serve_the_demo_model() {
    let coordinator = binary("nexus-coordinator", "nexus-coordinator");
    let worker = binary("nexus-worker", "nexus-worker");
    let dir = std::env::temp_dir().join(format!("nexus-processes-{}", std::process::id()));
    let status = Command::new(&coordinator)
        .args(["init-certs", "--dir", dir.to_str().unwrap(), "--workers", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut children = Killed(Vec::new());
    let mut coord = Command::new(&coordinator)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--certs",
            dir.to_str().unwrap(),
            "--tenant",
            "acme=s3cret",
            "--print-addr",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(coord.stdout.take().unwrap()).read_line(&mut line).unwrap();
    children.0.push(coord);
    let addr: std::net::SocketAddr = line.trim().parse().unwrap();
    for i in 0..2 {
        children.0.push(
            Command::new(&worker)
                .args(["--coordinator", &addr.to_string(), "--certs", dir.to_str().unwrap()])
                .args(["--name", &format!("worker-{i}"), "--threads", "1", "--allow-insecure-parameters"])
                .spawn()
                .unwrap(),
        );
    }

    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let model = DemoMlp::embedded(params.max_slots()).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let keys = KeySet {
        params: params.clone(),
        relin: kg.relin_key(&sk),
        galois: kg.galois_keys(&sk, &model.rotations(), false).unwrap(),
    };
    let tokens: Vec<Vec<f64>> =
        (0..200).map(|t| (0..16).map(|c| ((t * 16 + c) as f64 * 0.37).sin()).collect()).collect();
    let encoder = Encoder::new(&params);
    let inputs: Vec<Vec<u8>> = model
        .pack(&tokens)
        .unwrap()
        .iter()
        .map(|s| {
            let pt = encoder.encode_real(s, model.levels(), params.default_scale()).unwrap();
            Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap().to_bytes(&params).unwrap()
        })
        .collect();
    let ca = certificate_from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let client =
        ClusterClient::connect(addr, "localhost", &ca, TenantId::new("acme").unwrap(), "s3cret".into()).await.unwrap();
    let (key_set, _) = client.register_keys(&keys.to_bytes().unwrap(), params.digest()).await.unwrap();
    let query = client.submit(key_set, DEMO_MODEL, &inputs).await.unwrap();
    // Workers may still be connecting: the coordinator retries until one is there.
    let status = client.wait(query, Duration::from_secs(120)).await.unwrap();
    assert_eq!(status.tasks_done, 3 * inputs.len() as u32);
    let outputs = client.fetch(query).await.unwrap();
    let ct = Ciphertext::from_bytes(&params, &outputs[0], 1 << 30).unwrap();
    let got = model.unpack(&encoder.decode_real(&Decryptor::new(&params).decrypt(&ct, &sk).unwrap()).unwrap(), 200);
    let want = model.plain(&tokens).unwrap();
    let err = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "max error {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
