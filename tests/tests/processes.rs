//! The real binaries as separate processes: `nexus-coordinator init-certs`,
//! `nexus-coordinator run`, two `nexus-worker`s, and a client (the library)
//! running the embedded demo model through them over QUIC.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_client::cluster::ClusterClient;
use nexus_nn::DEMO_MODEL;
use nexus_proto::ids::TenantId;
use nexus_proto::tls::certificate_from_pem;
use nexus_tests::{binary, DemoClient, Killed};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let mut children = Killed::default();
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

    let demo = DemoClient::new(200);
    let inputs = demo.inputs();
    let ca = certificate_from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let client =
        ClusterClient::connect(addr, "localhost", &ca, TenantId::new("acme").unwrap(), "s3cret".into()).await.unwrap();
    let (key_set, _) = client.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    let query = client.submit(key_set, DEMO_MODEL, &inputs).await.unwrap();
    // Workers may still be connecting: the coordinator waits for one.
    let status = client.wait(query, Duration::from_secs(120)).await.unwrap();
    assert_eq!(status.tasks_done, 3 * inputs.len() as u32);
    let err = demo.max_error(&client.fetch(query).await.unwrap());
    assert!(err < 1e-4, "max error {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
