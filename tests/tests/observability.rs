//! Observability checked against the real tools: every metric the Grafana
//! dashboards and the Prometheus rules use is declared in the code, and a
//! real Prometheus server scrapes a running cluster, loads the rules, finds
//! the task counters moving and evaluates every dashboard query.
//!
//! The Prometheus test needs `prometheus` on PATH (Debian's package;
//! `.ci/run` installs it and sets `NEXUS_REQUIRE_PROMETHEUS=1` so that CI
//! cannot skip it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_client::cluster::ClusterClient;
use nexus_coordinator::{Coordinator, CoordinatorConfig};
use nexus_nn::DEMO_MODEL;
use nexus_proto::ids::TenantId;
use nexus_proto::metrics::{CoordinatorMetrics, WorkerMetrics};
use nexus_proto::tls::ClusterCa;
use nexus_tests::{free_tcp_port, http_get, test_coordinator, test_worker, DemoClient};
use nexus_worker::{run, WorkerConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

/// Every series name the code can export.
fn declared_names() -> BTreeSet<String> {
    let c = CoordinatorMetrics::new().unwrap();
    let w = WorkerMetrics::new().unwrap();
    // Labelled families only appear once a child exists.
    c.tasks.with_label_values(&["gelu"]).inc();
    c.task_seconds.with_label_values(&["gelu"]).observe(1.0);
    let mut names = BTreeSet::new();
    for family in c.registry.gather().into_iter().chain(w.registry.gather()) {
        let name = family.get_name().to_string();
        if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    names
}

/// `nexus_...` identifiers in a PromQL expression (recording-rule names
/// `nexus:...` are not metrics the code exports).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("nexus_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Every panel query of every dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(ops().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dash: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{}: panel {} has no query", path.display(), panel["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap().to_string();
                assert!(!expr.trim().is_empty(), "{}: empty query in {}", path.display(), panel["title"]);
                out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
            }
        }
    }
    out
}

/// Grafana's variables replaced by what Prometheus understands.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$__interval", "15s")
}

#[test]
fn dashboards_and_rules_use_only_declared_metrics() {
    let declared = declared_names();
    let rules = std::fs::read_to_string(ops().join("prometheus/rules/nexus.rules.yml")).unwrap();
    let mut used: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .flat_map(|(title, e)| metric_names(&e).into_iter().map(move |m| (title.clone(), m)))
        .collect();
    used.extend(metric_names(&rules).into_iter().map(|m| ("alert rules".to_string(), m)));
    assert!(used.len() > 20, "found only {} metric uses", used.len());
    for (place, name) in used {
        assert!(
            declared.contains(&name),
            "{place} uses {name}, which the code does not export; declared: {declared:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_running_cluster() {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        assert!(
            std::env::var_os("NEXUS_REQUIRE_PROMETHEUS").is_none(),
            "prometheus is not installed (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: prometheus is not installed (apt-get install prometheus); .ci/run installs it");
        return;
    }
    // A cluster with metrics endpoints.
    let ca = ClusterCa::generate("observability").unwrap();
    let coordinator = Coordinator::start(CoordinatorConfig {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_coordinator(&ca, &[("acme", "s3cret")])
    })
    .await
    .unwrap();
    let addr = coordinator.local_addr().unwrap();
    let worker_metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    tokio::spawn(run(WorkerConfig { metrics_listen: Some(worker_metrics), ..test_worker(addr, &ca, "worker-0") }));

    // A real Prometheus scraping both every second, with our rules.
    let dir = std::env::temp_dir().join(format!("nexus-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = ops().join("prometheus/rules/nexus.rules.yml").canonicalize().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: nexus-coordinator\n    static_configs:\n      - targets: ['{}']\n  - job_name: nexus-worker\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        coordinator.metrics_addr().unwrap(),
        worker_metrics
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let prometheus = nexus_tests::Killed(vec![Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap()]);

    let query = |expr: &str| -> Option<serde_json::Value> {
        let body = http_get(web, &format!("/api/v1/query?query={}", percent_encode(expr)))?;
        serde_json::from_str(&body).ok()
    };
    let tasks_total = || -> Option<f64> {
        let v = query("sum(nexus_coordinator_tasks_total)")?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };

    // Work for the counters.
    let demo = DemoClient::new(64);
    let client =
        ClusterClient::connect(addr, "localhost", &ca.certificate(), TenantId::new("acme").unwrap(), "s3cret".into())
            .await
            .unwrap();
    let (key_set, _) = client.register_keys(&demo.keys, demo.params.digest()).await.unwrap();
    let run_query = || async {
        let q = client.submit(key_set, DEMO_MODEL, &demo.inputs()).await.unwrap();
        client.wait(q, Duration::from_secs(60)).await.unwrap();
    };
    run_query().await;
    // Prometheus sees the first batch, then the counter moves with the next.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(v) = tasks_total().filter(|v| *v > 0.0) {
            break v;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped the task counter; see {}", dir.display());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    run_query().await;
    loop {
        if tasks_total().is_some_and(|v| v > first) {
            break;
        }
        assert!(Instant::now() < deadline, "the task counter did not move past {first}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The worker was scraped too, and the rules loaded.
    let up = query("up{job=\"nexus-worker\"}").unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "worker target down: {up}");
    let rules: serde_json::Value = serde_json::from_str(&http_get(web, "/api/v1/rules").unwrap()).unwrap();
    let groups: BTreeSet<&str> =
        rules["data"]["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(groups, BTreeSet::from(["nexus.recording", "nexus.alerts"]));
    // Every dashboard query parses and evaluates.
    for (title, expr) in dashboard_queries() {
        let v = query(&concrete(&expr)).unwrap_or_else(|| panic!("no answer for {title}: {expr}"));
        assert_eq!(v["status"], "success", "panel {title}: {expr}: {v}");
    }
    drop(prometheus);
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
