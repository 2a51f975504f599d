//! `nexus infer` as a user runs it: a model directory (config.json,
//! model.safetensors, tokenizer.json) of a tiny random BERT, text in,
//! decrypted embedding out, at insecure test parameters with bootstrapping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_tests::write_tiny_bert as write_model;
use std::process::Command;

#[test]
fn nexus_infer_embeds_text_under_encryption() {
    let dir = std::env::temp_dir().join(format!("nexus-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    write_model(&dir);
    let nexus = nexus_tests::binary("nexus-client", "nexus");
    // `nexus infer` on the tiny model; `fast` adds the test preset, 8
    // tokens and JSON output.
    let infer =
        |args: &[&str]| Command::new(&nexus).args(["infer", "--model"]).arg(&dir).args(args).output().expect("runs");
    let fast = |args: &[&str]| {
        infer(&[args, &["--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST", "--max-tokens", "8", "--json"]].concat())
    };
    let out = fast(&["--text", "The cat sat on the mat.", "--text", "A dog ran home"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nexus infer failed: {stderr}");
    assert!(stderr.contains("layer 2/2"), "progress per layer: {stderr}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    // [CLS] the cat sat on the mat . [SEP] is 9 tokens: truncated to 8, [SEP] kept.
    assert_eq!(lines[0]["tokens"], 8);
    assert_eq!(lines[1]["tokens"], 6);
    for line in &lines {
        let cosine = line["cosine"].as_f64().expect("cosine");
        assert!(cosine > 0.999, "{line}");
        let e: Vec<f64> = serde_json::from_value(line["embedding"].clone()).expect("embedding");
        assert_eq!(e.len(), 32);
        assert!(line["upload_bytes"].as_u64().expect("bytes") > 0);
        assert_eq!(line["in_range"], true, "{line}");
        assert_eq!(line["lean_keys"], "encoder", "the default: {line}");
    }

    // Every key lean: the same result, up to the noise of fresh keys.
    let out = fast(&["--text", "A dog ran home", "--lean-keys", "all"]);
    assert!(out.status.success(), "nexus infer --lean-keys all failed: {}", String::from_utf8_lossy(&out.stderr));
    let lean: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(lean["lean_keys"], "all");
    assert!(lean["cosine"].as_f64().expect("cosine") > 0.999, "{lean}");

    // Throughput mode: both sentences in one ciphertext, and a zero-shot
    // head whose encrypted Argmax must agree with the plaintext head
    // wherever the top two logits are further apart than its resolution.
    let out = fast(&[
        "--text",
        "The cat sat on the mat.",
        "--text",
        "A dog ran home",
        "--batch",
        "--labels",
        "the cat sat;a dog ran home fast",
        "--lean-keys",
        "none",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nexus infer --batch failed: {stderr}");
    let batch = json_lines(&out);
    assert_eq!(batch.len(), 2);
    let mut resolved = 0;
    for (line, alone) in batch.iter().zip(&lines) {
        assert_eq!(line["batch_size"], 2, "{line}");
        assert_eq!(line["lean_keys"], "none", "{line}");
        assert!(line["cosine"].as_f64().expect("cosine") > 0.999, "{line}");
        let diff = embedding_difference(line, alone);
        assert!(diff < 1e-3, "batched and alone differ by {diff}");
        let class = &line["class"];
        let (gap, resolution) = (class["plain_gap"].as_f64().expect("gap"), class["resolution"].as_f64().expect("res"));
        if gap > resolution {
            resolved += 1;
            assert_eq!(class["agrees"], true, "{line}");
        }
    }
    println!("{resolved} of 2 classes above the stated resolution");

    // Two lanes: the two sentences in two batches of one, side by side
    // (the default with --batch), every bootstrap shared: as many
    // bootstraps as one sentence alone, the same embeddings.
    let out = fast(&["--text", "The cat sat on the mat.", "--text", "A dog ran home", "--batch", "--batch-size", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nexus infer --batch --batch-size 1 failed: {stderr}");
    let paired = json_lines(&out);
    assert_eq!(paired.len(), 2);
    let bootstraps = |line: &serde_json::Value| -> u64 {
        line["layers"].as_array().expect("layers").iter().map(|l| l["bootstrap_count"].as_u64().expect("count")).sum()
    };
    for (line, alone) in paired.iter().zip(&lines) {
        assert_eq!((line["batch_size"].as_u64(), line["lanes"].as_u64()), (Some(1), Some(2)), "{line}");
        assert_eq!(bootstraps(line), bootstraps(alone), "two lanes bootstrap as often as one: {line}");
        let diff = embedding_difference(line, alone);
        assert!(diff < 1e-3, "two lanes and alone differ by {diff}");
    }

    // Bad input: named, not a crash.
    for (args, message) in [
        (vec!["--labels", "only one"], "at least two labels"),
        (vec!["--head", "/nonexistent/head.safetensors"], "/nonexistent/head.safetensors"),
        (vec!["--batch", "--batch-size", "0"], "--batch-size must be at least 1"),
        (vec!["--lean-keys", "some"], "--lean-keys"),
        (vec!["--batch", "--lanes", "3"], "--lanes"),
        (vec!["--lanes", "2"], "--batch"),
    ] {
        let out = infer(&[&["--text", "x", "--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST"], &args[..]].concat());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
    }
    let missing =
        Command::new(&nexus).args(["infer", "--model", "/nonexistent/model", "--text", "x"]).output().expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/model/config.json"));
    let too_deep = infer(&["--text", "x", "--layers", "3", "--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST"]);
    assert!(String::from_utf8_lossy(&too_deep.stderr).contains("--layers 3: the model has 2 layers"));
    let no_boot = infer(&["--text", "x", "--preset", "INSECURE_N12_QP640_TEST"]);
    assert!(String::from_utf8_lossy(&no_boot.stderr).contains("has no bootstrapping configuration"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nexus infer --json`'s stdout: one JSON object per line.
fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// The largest difference between two results' decrypted embeddings.
fn embedding_difference(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let embedding =
        |v: &serde_json::Value| -> Vec<f64> { serde_json::from_value(v["embedding"].clone()).expect("embedding") };
    embedding(a).iter().zip(&embedding(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
