//! The real binaries as separate processes: `nexus-coordinator init-certs`,
//! `nexus-coordinator run`, two `nexus-worker`s, and the `nexus` client CLI
//! (`keygen`, `keys upload`, `submit`, `status --watch`, `fetch`, `digest`, `keys delete`) running
//! the embedded demo model through them over QUIC, then a sentence through
//! a tiny BERT served from the workers' model root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::Parameters;
use nexus_client::encoder::ClientEncoder;
use nexus_nn::DemoMlp;
use nexus_tests::{binary, Killed};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const PRESET: &str = "INSECURE_N12_QP640_TEST";
const BERT_PRESET: &str = "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST";

/// Runs the client CLI with the connection flags; returns stdout.
fn nexus(cli: &Path, args: &[&str], conn: &[String]) -> String {
    let out = Command::new(cli).args(args).args(conn).env("NEXUS_TOKEN", "s3cret").output().unwrap();
    assert!(
        out.status.success(),
        "nexus {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn coordinator_two_workers_and_the_client_cli_serve_the_demo_model() {
    let coordinator = binary("nexus-coordinator", "nexus-coordinator");
    let worker = binary("nexus-worker", "nexus-worker");
    let cli = binary("nexus-client", "nexus");
    let dir = std::env::temp_dir().join(format!("nexus-processes-{}", std::process::id()));
    let certs = dir.join("certs");
    let status = Command::new(&coordinator)
        .args(["init-certs", "--dir", certs.to_str().unwrap(), "--workers", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut children = Killed::default();
    let coordinator_log = dir.join("coordinator.log");
    let mut coord = Command::new(&coordinator)
        .args(["run", "--listen", "127.0.0.1:0", "--certs", certs.to_str().unwrap()])
        .args(["--tenant", "acme=s3cret", "--print-addr", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&coordinator_log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(coord.stdout.take().unwrap()).read_line(&mut line).unwrap();
    children.0.push(coord);
    let addr = line.trim().to_string();
    // The workers' model root: one BERT-family model directory.
    let models = dir.join("models");
    std::fs::create_dir_all(models.join("tiny-bert")).unwrap();
    nexus_tests::write_tiny_bert(&models.join("tiny-bert"));
    for i in 0..2 {
        children.0.push(
            Command::new(&worker)
                .args(["--coordinator", &addr, "--certs", certs.to_str().unwrap()])
                .args(["--name", &format!("worker-{i}"), "--threads", "1", "--allow-insecure-parameters"])
                .args(["--models", models.to_str().unwrap()])
                .spawn()
                .unwrap(),
        );
    }

    // The tenant's side, all through the CLI.
    let client_dir = dir.join("client");
    let d = client_dir.to_str().unwrap();
    let conn: Vec<String> =
        ["--coordinator", &addr, "--ca", certs.join("ca.pem").to_str().unwrap(), "--tenant", "acme"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    nexus(&cli, &["keygen", "--dir", d, "--preset", PRESET], &[]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(client_dir.join("secret.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the secret key is readable by others: {mode:o}");
    assert!(nexus(&cli, &["keys", "upload", "--dir", d], &conn).contains("registered"));
    let tokens: Vec<Vec<f64>> =
        (0..200).map(|t| (0..16).map(|c| ((t * 16 + c) as f64 * 0.37).sin()).collect()).collect();
    let input = dir.join("input.json");
    std::fs::write(&input, serde_json::to_string(&tokens).unwrap()).unwrap();
    let query = nexus(&cli, &["submit", "--dir", d, "--input", input.to_str().unwrap()], &conn).trim().to_string();
    let watched = nexus(&cli, &["status", &query, "--watch"], &conn);
    assert!(watched.contains("done"), "{watched}");
    let out = dir.join("result.json");
    nexus(&cli, &["fetch", "--dir", d, &query, "--out", out.to_str().unwrap(), "--release"], &conn);
    let got: Vec<Vec<f64>> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let model = DemoMlp::embedded(Parameters::preset(PRESET).unwrap().max_slots()).unwrap();
    let want = model.plain(&tokens).unwrap();
    assert_eq!(got.len(), want.len());
    let err = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "max error {err}");
    // Released: the coordinator no longer has it.
    let gone = Command::new(&cli)
        .args(["fetch", "--dir", d, &query])
        .args(&conn)
        .env("NEXUS_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no query"), "{}", String::from_utf8_lossy(&gone.stderr));
    // Bad input is refused with a reason, before anything is sent.
    std::fs::write(&input, "[[1, 2], [3]]").unwrap();
    let refused = Command::new(&cli)
        .args(["submit", "--dir", d, "--input", input.to_str().unwrap()])
        .args(&conn)
        .env("NEXUS_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("features"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Text through the tokenizer: a BERT-family model's keys (for queries
    // of two sentences, with a trained head that client and workers read
    // from the model directory), a sentence in, its encrypted embedding
    // and class computed layer by layer on the workers; then two sentences
    // in one query.
    let bert_dir = dir.join("bert-client");
    let b = bert_dir.to_str().unwrap();
    let model_dir = models.join("tiny-bert");
    let m = model_dir.to_str().unwrap();
    let params = Parameters::preset(BERT_PRESET).unwrap();
    let client_model = ClientEncoder::load(&model_dir, None, 8, 2, BERT_PRESET, &params).unwrap();
    let prototypes = ["the cat sat on the mat", "a dog ran home"].map(|t| client_model.plain_embedding(t).unwrap());
    let names = ["cats", "dogs"];
    nexus_tests::write_trained_head(&model_dir, "pets", &names, &prototypes, vec![0.05, -0.05]);
    let head = client_model.head(&client_model.head_choice(None, Some("pets")).unwrap().unwrap(), &params).unwrap();
    // The class of each fetched sentence is the plaintext head's.
    let check_class = |result: &serde_json::Value, text: &str| {
        let (logits, min_gap) = client_model.plain_logits(text, &head, &params).unwrap();
        assert!((logits[0] - logits[1]).abs() > min_gap, "{text}: the Argmax cannot resolve {logits:?}");
        let want = nexus_nn::bert::head::argmax_index(&logits);
        assert_eq!(result["class"]["index"], want, "{text}: {result}");
        assert_eq!(result["class"]["label"], names[want], "{text}: {result}");
    };
    // A head file the client lacks: refused before any key is generated.
    let absent = Command::new(&cli)
        .args(["keygen", "--dir", b, "--preset", BERT_PRESET, "--model", "bert", "--model-dir", m])
        .args(["--max-tokens", "8", "--head", "absent"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&absent.stderr).contains("heads/absent.safetensors"), "{absent:?}");
    assert!(!bert_dir.join("secret.key").exists());
    nexus(
        &cli,
        &[
            "keygen",
            "--dir",
            b,
            "--preset",
            BERT_PRESET,
            "--model",
            "bert",
            "--model-dir",
            m,
            "--max-tokens",
            "8",
            "--sentences",
            "2",
            "--head",
            "pets",
        ],
        &[],
    );
    nexus(&cli, &["keys", "upload", "--dir", b], &conn);
    let text = "A dog ran home fast";
    let sentence = nexus(&cli, &["submit", "--dir", b, "--text", text], &conn).trim().to_string();
    let watched = nexus(&cli, &["status", &sentence, "--watch"], &conn);
    assert!(watched.contains("layer 4/4"), "two layers, the pooling and the head: {watched}");
    // Keys for two sentences per query: a list, one result per sentence sent.
    let fetched: serde_json::Value =
        serde_json::from_str(&nexus(&cli, &["fetch", "--dir", b, &sentence], &conn)).unwrap();
    let rows: Vec<Vec<f64>> =
        fetched.as_array().unwrap().iter().map(|r| serde_json::from_value(r["embedding"].clone()).unwrap()).collect();
    let plain = client_model.plain_embedding(text).unwrap();
    assert_eq!(rows.len(), 1);
    check_class(&fetched[0], text);
    let similarity = nexus_nn::bert::cosine(&rows[0], &plain);
    assert!(similarity > 0.999, "cosine with the plaintext embedding {similarity}");
    let texts = ["The cat sat on the mat", "a dog ran home"];
    let file = dir.join("sentences.txt");
    std::fs::write(&file, texts.join("\n\n")).unwrap();
    let pair = nexus(&cli, &["submit", "--dir", b, "--text-file", file.to_str().unwrap()], &conn).trim().to_string();
    nexus(&cli, &["status", &pair, "--watch"], &conn);
    let fetched: serde_json::Value = serde_json::from_str(&nexus(&cli, &["fetch", "--dir", b, &pair], &conn)).unwrap();
    let sentences = fetched.as_array().unwrap();
    assert_eq!(sentences.len(), 2, "{fetched}");
    for (result, text) in sentences.iter().zip(texts) {
        let embedding: Vec<f64> = serde_json::from_value(result["embedding"].clone()).unwrap();
        let similarity = nexus_nn::bert::cosine(&embedding, &client_model.plain_embedding(text).unwrap());
        assert!(similarity > 0.999, "{text}: cosine with the plaintext embedding {similarity}");
        check_class(result, text);
    }
    // `nexus digest` names the model directory and its head file as the
    // ids of the queries submitted from it do.
    let digests: serde_json::Value = serde_json::from_str(&nexus(&cli, &["digest", m], &[])).unwrap();
    let model = digests["model"].as_str().unwrap();
    assert!(model.starts_with("tiny-bert@"), "{digests}");
    let head = format!("head=pets/2/{}", digests["heads"]["pets"].as_str().unwrap());
    let records: Vec<String> = std::fs::read_dir(bert_dir.join("queries"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert!(record.contains(&format!("bert:{model}:")) && record.contains(&head), "{record} vs {digests}");
    }
    // More sentences than the keys' blocks: refused before anything is sent.
    let refused = Command::new(&cli)
        .args(["submit", "--dir", b, "--text", "one", "--text", "two", "--text", "three"])
        .args(&conn)
        .env("NEXUS_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("3 sentences for a query of 2"), "{:?}", refused);
    // A matrix is not a sentence.
    let refused = Command::new(&cli)
        .args(["submit", "--dir", b, "--input", input.to_str().unwrap()])
        .args(&conn)
        .env("NEXUS_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("takes text"), "{:?}", refused);
    // The demo key set deleted from the cluster: the local keys stay and
    // can be registered again.
    assert!(nexus(&cli, &["keys", "delete", "--dir", d], &conn).contains("deleted"));
    let again = Command::new(&cli)
        .args(["keys", "delete", "--dir", d])
        .args(&conn)
        .env("NEXUS_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to delete"), "{:?}", again);
    let registered = nexus(&cli, &["keys", "upload", "--dir", d], &conn);
    assert!(registered.contains("registered") && !registered.contains("already"), "{registered}");

    // The coordinator logged structured events, one JSON object per line.
    let log = std::fs::read_to_string(&coordinator_log).unwrap();
    let events: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let has = |message: &str, field: Option<(&str, &str)>| {
        events
            .iter()
            .any(|e| e["message"] == message && field.is_none_or(|(k, v)| e[k].as_str().is_some_and(|got| got == v)))
    };
    assert!(has("coordinator started", None), "{log}");
    assert!(has("worker registered", None), "{log}");
    assert!(has("query admitted", Some(("query", &query))), "{log}");
    assert!(has("query finished", Some(("query", &query))), "{log}");
    assert!(has("query released", Some(("query", &query))), "{log}");
    assert!(has("request refused", None), "the fetch after release is refused: {log}");
    assert!(has("key set deleted by its owner", None), "{log}");
    assert!(events.iter().all(|e| e["level"].is_string() && e["timestamp"].is_string()), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
