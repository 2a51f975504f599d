//! A BERT-family encoder on the cluster: a tiny random BERT served from
//! the workers' model root, a sentence tokenized, embedded and encrypted
//! by the client library, every layer as a graph of steps (projections
//! side by side, attention, the feed-forward product in tiles, GELU,...)
//! and the pooling run as tasks on two workers over loopback QUIC with
//! mutual TLS (bootstrapping inside the steps, at insecure test
//! parameters), the result bit-identical to the same graph run
//! in-process, to whole layers run in-process, and, decrypted, close to
//! the plaintext model. With a zero-shot head, its logits, one task per
//! Argmax round and the mask follow, and the decrypted class is the
//! plaintext head's; that query packs three sentences side by side
//! (throughput mode, keys for four), each decrypted with its own class.
//! A trained head file in the model directory runs the same way, and one
//! the workers lack, or of other classes than the query names, fails the
//! query at its first step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::{Ciphertext, Decryptor, Encoder, Encryptor, KeyGenerator, Parameters, Wire};
use nexus_client::cluster::ClusterClient;
use nexus_client::encoder::ClientEncoder;
use nexus_coordinator::plan::{self, Source};
use nexus_coordinator::{Coordinator, CoordinatorConfig};
use nexus_nn::bert::{cosine, CalibratedHead};
use nexus_proto::ids::{KeySetId, TenantId};
use nexus_proto::messages::{QueryState, TaskKind};
use nexus_proto::models::{head_file_digest, BertModelId, HeadChoice};
use nexus_proto::tls::ClusterCa;
use nexus_tests::{test_coordinator, test_worker};
use nexus_worker::{execute::execute, run, WorkerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PRESET: &str = "INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST";

/// Submits `input` as a query of `model` that must fail; its reason.
async fn failure(client: &ClusterClient, key_set: KeySetId, model: &str, input: &[u8]) -> String {
    let query = client.submit(key_set, model, &[input.to_vec()]).await.unwrap();
    loop {
        match client.status(query).await.unwrap().state {
            QueryState::Failed { reason } => return reason,
            QueryState::Done => panic!("query of {model} finished"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_bert_runs_layer_by_layer_on_two_workers() {
    let root = std::env::temp_dir().join(format!("nexus-encoder-cluster-{}", std::process::id()));
    let dir = root.join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    nexus_tests::write_tiny_bert(&dir);

    // Client: keys for sentences of up to 8 tokens, one sentence encrypted.
    let params = Parameters::preset(PRESET).unwrap();
    let client_model = ClientEncoder::load(&dir, None, 8, 1, PRESET, &params).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let keys = client_model.generate_keys(PRESET, &params, &mut kg, &sk, false).unwrap();
    let key_bytes = keys.to_bytes().unwrap();
    let text = "The cat sat on the mat";
    let (id, slots) = client_model.pack(&[text], &params, None).unwrap();
    assert_eq!(id.to_string(), format!("bert:tiny-bert@{}:2:8:8", client_model.digest()));
    let encoder = Encoder::new(&params);
    let pt = encoder.encode_real(&slots, client_model.level(), params.default_scale()).unwrap();
    let input = Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap().to_bytes(&params).unwrap();

    // The same tasks in this process, without the network, with the keys
    // lean as the workers hold them (timed), and in full for the whole
    // layers below (the client generated them lean; a lean key switch
    // regenerates the same uniform halves, so the bytes must agree).
    let full_keys = nexus_nn::KeySet::from_bytes(&key_bytes, usize::MAX, true).unwrap();
    let keys = nexus_nn::KeySet::from_bytes(&key_bytes, usize::MAX, true).unwrap().lean();
    let model = id.to_string();
    let graph = plan::graph(&model, 1).unwrap();
    assert!(graph.nodes.iter().any(|n| matches!(n.kind, TaskKind::EncoderStep { .. })));
    // Run twice, timing the second: the first warms what the cluster's
    // first query warms too (the model, its calibration, the bootstrapping
    // circuit, the engine's buffer pool).
    let mut runs = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let mut values: HashMap<u64, Vec<Vec<u8>>> = HashMap::from([(Source::Input(0).key(), vec![input.clone()])]);
        for (i, node) in graph.nodes.iter().enumerate() {
            let inputs: Vec<Vec<u8>> = node.sources.iter().flat_map(|s| values[&s.key()].clone()).collect();
            let outputs = execute(Some(&root), &model, &node.kind, &keys, &inputs).unwrap();
            values.insert(Source::Task(i as u32).key(), outputs);
        }
        let result = graph.results.iter().flat_map(|r| values[&Source::Task(*r).key()].clone()).collect::<Vec<_>>();
        runs.push((started.elapsed().as_secs_f64(), result));
    }
    let (in_process, expected) = runs.pop().unwrap();
    assert!(runs[0].1 == expected, "the tasks are deterministic");
    // The steps compose to whole layers: the same bytes.
    let started = Instant::now();
    let mut outputs = vec![input.clone()];
    for kind in [TaskKind::EncoderLayer { layer: 0 }, TaskKind::EncoderLayer { layer: 1 }, TaskKind::MeanPool] {
        outputs = execute(Some(&root), &model, &kind, &full_keys, &outputs).unwrap();
    }
    let whole_layers = started.elapsed().as_secs_f64();
    assert!(outputs == expected, "layer steps differ from whole layers");

    // The cluster: a coordinator and two workers serving the model root.
    let ca = ClusterCa::generate("nexus test").unwrap();
    let config = CoordinatorConfig { max_queued: 8, max_attempts: 2, ..test_coordinator(&ca, &[("acme", "s3cret")]) };
    let coordinator = Coordinator::start(config).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    // The workers cache their keys lean, as the timed local run does.
    for i in 0..2 {
        let name = format!("worker-{i}");
        let config = WorkerConfig { models: Some(root.clone()), lean_keys: true, ..test_worker(addr, &ca, &name) };
        tokio::spawn(run(config));
    }
    for _ in 0..500 {
        if coordinator.workers().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tenant = TenantId::new("acme").unwrap();
    let client = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, "s3cret".into()).await.unwrap();
    let (key_set, _) = client.register_keys(&key_bytes, params.digest()).await.unwrap();
    // A first query fetches the key set onto a worker; the second is timed.
    let first = client.submit(key_set, &model, std::slice::from_ref(&input)).await.unwrap();
    client.wait(first, Duration::from_secs(600)).await.unwrap();
    let started = Instant::now();
    let query = client.submit(key_set, &model, &[input]).await.unwrap();
    let status = client.wait(query, Duration::from_secs(600)).await.unwrap();
    let clustered = started.elapsed().as_secs_f64();
    println!(
        "tiny BERT, 2 layers + pooling at {PRESET}: in-process {in_process:.2} s as {} steps, {whole_layers:.2} s as \
         whole layers; cluster {clustered:.2} s ({:.2}x the steps in-process)",
        graph.nodes.len(),
        clustered / in_process
    );
    assert_eq!((status.layers_done, status.layers_total), (3, 3), "two layers and the pooling: {status:?}");
    assert_eq!((status.tasks_done, status.tasks_total), (21, 21), "ten steps per layer and the pooling: {status:?}");
    let outputs = client.fetch(query).await.unwrap();
    assert!(outputs == expected, "the cluster's result differs from the same tasks run in-process");

    // Decrypted: the plaintext model's sentence embedding.
    let ct = Ciphertext::from_bytes(&params, &outputs[0], 1 << 30).unwrap();
    let decoded = encoder.decode_real(&Decryptor::new(&params).decrypt(&ct, &sk).unwrap()).unwrap();
    let embedding = client_model.unpack(&id, &decoded, &params).unwrap().remove(0);
    let plain = client_model.plain_embedding(text).unwrap();
    let similarity = cosine(&embedding, &plain);
    assert!(similarity > 0.999, "cosine with the plaintext embedding {similarity}");

    // A model the workers do not have fails the query, naming it.
    let missing = model.replace("tiny-bert", "absent-bert");
    let reason = failure(&client, key_set, &missing, &expected[0]).await;
    assert!(reason.contains("absent-bert"), "{reason}");
    // Two sentences per query with keys for one: refused at the first
    // step, naming the keys, not deep inside a layer.
    let two = model.replace(":2:8:8", ":2:8,8:8");
    let reason = failure(&client, key_set, &two, &expected[0]).await;
    assert!(reason.contains("rotation keys") && reason.contains("--sentences"), "{reason}");
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_sentences_and_their_zero_shot_head_run_as_one_query() {
    let root = std::env::temp_dir().join(format!("nexus-encoder-head-{}", std::process::id()));
    let dir = root.join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    nexus_tests::write_tiny_bert(&dir);
    // One layer keeps the test short; three labels: two Argmax rounds.
    // Keys for four sentences per query; three submitted (the fourth
    // block holds a copy of the first).
    let params = Parameters::preset(PRESET).unwrap();
    let client_model = ClientEncoder::load(&dir, Some(1), 8, 4, PRESET, &params).unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.secret_key();
    let key_bytes = client_model.generate_keys(PRESET, &params, &mut kg, &sk, true).unwrap().to_bytes().unwrap();
    let labels: Vec<String> = ["the cat sat on the mat", "a dog ran home", "fast ."].map(String::from).to_vec();
    let texts = ["The cat sat on the mat", "a dog ran home", "fast dog"];
    // One class each. A sentence whose head logits leave the range the
    // workers calibrated is named before it is sent (its Argmax would
    // diverge, and take the other sentences of its ciphertext along).
    let zero_shot = HeadChoice::ZeroShot(labels.clone());
    let head = client_model.head(&zero_shot, &params).unwrap();
    for text in texts {
        assert_eq!(client_model.range_warnings(text, Some(&head)).unwrap(), Vec::<String>::new(), "{text}");
    }
    let warned = client_model.range_warnings("fast .", Some(&head)).unwrap();
    assert!(warned.iter().any(|w| w.contains("beyond the bound")), "{warned:?}");
    let (id, slots) = client_model.pack(&texts, &params, Some(&zero_shot)).unwrap();
    assert_eq!(id.encoder_only().to_string(), format!("bert:tiny-bert@{}:1:8,6,4,8:8", id.digest));
    assert!(client_model.pack(&[texts[0]; 5], &params, None).unwrap_err().to_string().contains("5 sentences"));
    let model = id.to_string();
    assert!(model.ends_with(":the cat sat on the mat;a dog ran home;fast ."), "{model}");
    let graph = plan::graph(&model, 1).unwrap();
    let head_kinds: Vec<&TaskKind> = graph.nodes[11..].iter().map(|n| &n.kind).collect();
    assert_eq!(
        head_kinds,
        [
            &TaskKind::HeadLogits,
            &TaskKind::ArgmaxRound { round: 0 },
            &TaskKind::ArgmaxRound { round: 1 },
            &TaskKind::ArgmaxMask
        ]
    );
    let encoder = Encoder::new(&params);
    let encrypt = |slots: &[f64]| {
        let pt = encoder.encode_real(slots, client_model.level(), params.default_scale()).unwrap();
        Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap().to_bytes(&params).unwrap()
    };
    let input = encrypt(&slots);
    // Checked by decryption only: the first test checks that the graph
    // gives the same bytes on the cluster as in-process, and the head's
    // comparisons are the most expensive tasks here.
    // Through a coordinator and one worker.
    let ca = ClusterCa::generate("nexus test").unwrap();
    let coordinator = Coordinator::start(test_coordinator(&ca, &[("acme", "s3cret")])).await.unwrap();
    let addr = coordinator.local_addr().unwrap();
    let config = WorkerConfig { models: Some(root.clone()), lean_keys: true, ..test_worker(addr, &ca, "worker-0") };
    tokio::spawn(run(config));
    let tenant = TenantId::new("acme").unwrap();
    let client = ClusterClient::connect(addr, "localhost", &ca.certificate(), tenant, "s3cret".into()).await.unwrap();
    let (key_set, _): (KeySetId, bool) = client.register_keys(&key_bytes, params.digest()).await.unwrap();
    let run_query = |model: String, input: Vec<u8>| {
        let client = &client;
        async move {
            let query = client.submit(key_set, &model, &[input]).await.unwrap();
            client.wait(query, Duration::from_secs(600)).await.unwrap();
            let outputs = client.fetch(query).await.unwrap();
            (outputs, client.status(query).await.unwrap())
        }
    };
    let (outputs, status) = run_query(model, input).await;
    assert_eq!((status.layers_done, status.layers_total), (3, 3), "a layer, the pooling, the head: {status:?}");
    assert_eq!(status.tasks_total, 10 + 1 + 4);
    assert_eq!(outputs.len(), 2, "the embedding and the mask");

    // Decrypted: each sentence's embedding, and the plaintext head's
    // class, from its own block.
    let decode = |bytes: &[u8]| {
        let ct = Ciphertext::from_bytes(&params, bytes, 1 << 30).unwrap();
        encoder.decode_real(&Decryptor::new(&params).decrypt(&ct, &sk).unwrap()).unwrap()
    };
    // Each sentence's embedding and the class its head picked, against the
    // plaintext model and head.
    let check = |id, outputs: &[Vec<u8>], head: &CalibratedHead| {
        let embeddings = client_model.unpack(id, &decode(&outputs[0]), &params).unwrap();
        let classes = client_model.unpack_classes(id, &decode(&outputs[1]), &params).unwrap();
        assert_eq!((embeddings.len(), classes.len()), (4, 4), "one per block");
        for (i, text) in texts.iter().enumerate() {
            let plain = client_model.plain_embedding(text).unwrap();
            assert!(cosine(&embeddings[i], &plain) > 0.999, "sentence {i}");
            // Blocks are not mixed up: another sentence's embedding is
            // farther off.
            let other = client_model.plain_embedding(texts[(i + 1) % texts.len()]).unwrap();
            assert!(cosine(&embeddings[i], &other) < cosine(&embeddings[i], &plain), "sentence {i}");
            let class = &classes[i];
            let (logits, min_gap) = client_model.plain_logits(text, head, &params).unwrap();
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let want = nexus_nn::bert::head::argmax_index(&logits);
            println!(
                "head, {text:?}: logits {logits:?} (resolves {min_gap:.2e}), mask {:?} -> {:?}",
                class.mask, class.label
            );
            assert!(
                sorted[0] - sorted[1] > min_gap,
                "pick sentences whose top two logits the Argmax resolves: {logits:?}"
            );
            assert_eq!((class.index, class.label.as_str()), (want, head.head.labels[want].as_str()), "sentence {i}");
            for (j, m) in class.mask.iter().enumerate() {
                let one_hot = if j == want { 1.0 } else { 0.0 };
                assert!((m - one_hot).abs() < 0.05, "sentence {i}: mask {:?}", class.mask);
            }
        }
    };
    check(&id, &outputs, &head);
    assert_eq!(head.head.labels, labels);

    // A trained head: `heads/two.safetensors` in the model directory, read
    // by the client and the worker alike; through the same cluster and
    // keys. Two classes (one Argmax round) whose rows are the first two
    // labels' prototypes, with biases of their own.
    let prototypes: Vec<Vec<f64>> = labels[..2].iter().map(|l| client_model.plain_embedding(l).unwrap()).collect();
    nexus_tests::write_trained_head(&dir, "two", &["cat", "dog"], &prototypes, vec![0.05, -0.05]);
    let choice = client_model.head_choice(None, Some("two")).unwrap().unwrap();
    let digest = head_file_digest(&std::fs::read(dir.join("heads/two.safetensors")).unwrap());
    assert_eq!(choice, HeadChoice::Trained { file: "two".into(), classes: 2, digest: digest.clone() });
    let err = client_model.head_choice(None, Some("absent")).unwrap_err().to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
    let head = client_model.head(&choice, &params).unwrap();
    assert_eq!(head.head.labels, ["cat", "dog"], "named by the file's metadata");
    for text in texts {
        assert_eq!(client_model.range_warnings(text, Some(&head)).unwrap(), Vec::<String>::new(), "{text}");
    }
    let (id, slots) = client_model.pack(&texts, &params, Some(&choice)).unwrap();
    assert_eq!(id.to_string(), format!("bert:tiny-bert@{}:1:8,6,4,8:8:head=two/2/{digest}", id.digest));
    let input = encrypt(&slots);
    // A head file the workers lack, another file than the client's, or
    // one of other classes than the id names, fails the query at its
    // first step, naming it.
    let model = id.to_string();
    let reason = failure(&client, key_set, &model.replace("two/2/", "absent/2/"), &input).await;
    assert!(reason.contains("\"absent\"") && reason.contains("absent.safetensors"), "{reason}");
    let other = head_file_digest(b"another file");
    let reason = failure(&client, key_set, &model.replace(&digest, &other), &input).await;
    assert!(reason.contains(&format!("is not the client's ({other})")), "{reason}");
    let reason = failure(&client, key_set, &model.replace("two/2/", "two/3/"), &input).await;
    assert!(reason.contains("the file has 2 classes, the query names 3"), "{reason}");
    // So does a query made with other model files than the workers' (the
    // id names their digest), and the client refuses to read a result
    // made with other files than its own.
    let other_model = BertModelId { digest: "0123456789abcdef".into(), ..id.clone() };
    let reason = failure(&client, key_set, &other_model.to_string(), &input).await;
    assert!(reason.contains("\"tiny-bert\"") && reason.contains("are not the client's (0123456789abcdef)"), "{reason}");
    let err = client_model.unpack(&other_model, &slots, &params).unwrap_err().to_string();
    assert!(err.contains("its files changed since the query was made"), "{err}");
    // The client refuses to read a mask with a file changed since.
    let changed = HeadChoice::Trained { file: "two".into(), classes: 2, digest: other };
    let err = client_model.head(&changed, &params).unwrap_err().to_string();
    assert!(err.contains("not the one the query named"), "{err}");
    let (outputs, status) = run_query(id.to_string(), input).await;
    assert_eq!(status.tasks_total, 10 + 1 + 3, "one Argmax round");
    check(&id, &outputs, &head);
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
}
