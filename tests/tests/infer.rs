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
    let out = Command::new(&nexus)
        .args(["infer", "--model"])
        .arg(&dir)
        .args(["--text", "The cat sat on the mat.", "--text", "A dog ran home"])
        .args(["--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST", "--max-tokens", "8", "--json"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nexus infer failed: {stderr}");
    assert!(stderr.contains("layer 2/2"), "progress per layer: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
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
    }

    // Throughput mode: both sentences in one ciphertext, and a zero-shot
    // head whose encrypted Argmax must agree with the plaintext head
    // wherever the top two logits are further apart than its resolution.
    let out = Command::new(&nexus)
        .args(["infer", "--model"])
        .arg(&dir)
        .args(["--text", "The cat sat on the mat.", "--text", "A dog ran home", "--batch"])
        .args(["--labels", "the cat sat;a dog ran home fast"])
        .args(["--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST", "--max-tokens", "8", "--json"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nexus infer --batch failed: {stderr}");
    let batch: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(batch.len(), 2);
    let mut resolved = 0;
    for (line, alone) in batch.iter().zip(&lines) {
        assert_eq!(line["batch_size"], 2, "{line}");
        assert!(line["cosine"].as_f64().expect("cosine") > 0.999, "{line}");
        let (e, e_alone): (Vec<f64>, Vec<f64>) = (
            serde_json::from_value(line["embedding"].clone()).expect("embedding"),
            serde_json::from_value(alone["embedding"].clone()).expect("embedding"),
        );
        let diff = e.iter().zip(&e_alone).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-3, "batched and alone differ by {diff}");
        let class = &line["class"];
        let (gap, resolution) = (class["plain_gap"].as_f64().expect("gap"), class["resolution"].as_f64().expect("res"));
        if gap > resolution {
            resolved += 1;
            assert_eq!(class["agrees"], true, "{line}");
        }
    }
    println!("{resolved} of 2 classes above the stated resolution");

    // Bad input: named, not a crash.
    for (args, message) in [
        (vec!["--labels", "only one"], "at least two labels"),
        (vec!["--head", "/nonexistent/head.safetensors"], "/nonexistent/head.safetensors"),
        (vec!["--batch", "--batch-size", "0"], "--batch-size must be at least 1"),
    ] {
        let out = Command::new(&nexus)
            .args(["infer", "--model"])
            .arg(&dir)
            .args(["--text", "x", "--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST"])
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
    }
    let missing =
        Command::new(&nexus).args(["infer", "--model", "/nonexistent/model", "--text", "x"]).output().expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/model/config.json"));
    let too_deep = Command::new(&nexus)
        .args(["infer", "--model"])
        .arg(&dir)
        .args(["--text", "x", "--layers", "3", "--preset", "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&too_deep.stderr).contains("--layers 3: the model has 2 layers"));
    let no_boot = Command::new(&nexus)
        .args(["infer", "--model"])
        .arg(&dir)
        .args(["--text", "x", "--preset", "INSECURE_N12_QP640_TEST"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&no_boot.stderr).contains("has no bootstrapping configuration"));
    let _ = std::fs::remove_dir_all(&dir);
}
