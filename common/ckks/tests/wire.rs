//! Wire format: round trips, seeded sizes, a golden file pinning the
//! format, and typed errors for every kind of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_ckks::wire::{parameters_from_bytes, parameters_to_bytes, HEADER_LEN};
use nexus_ckks::*;

const LIMIT: usize = 1 << 30;
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ciphertext_v2_insecure_n11.bin");
/// The same ciphertext in format 1, whose seed expanded through one stream.
const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ciphertext_v1_insecure_n11.bin");

fn setup() -> (Parameters, SecretKey, KeyGenerator) {
    let params = Parameters::preset("INSECURE_N11_QP230_TEST").unwrap();
    let mut kg = KeyGenerator::from_seed_insecure(&params, [42; 32]);
    let sk = kg.secret_key();
    (params, sk, kg)
}

fn golden_values() -> Vec<f64> {
    (0..16).map(|i| i as f64 / 16.0 - 0.5).collect()
}

fn golden_ciphertext(params: &Parameters, sk: &SecretKey) -> Ciphertext {
    let pt = Encoder::new(params).encode_real(&golden_values(), 1, params.default_scale()).unwrap();
    Encryptor::from_seed_insecure(params, [7; 32]).encrypt_sk(&pt, sk).unwrap()
}

#[test]
fn golden_file_pins_the_format() {
    let (params, sk, _) = setup();
    let bytes = golden_ciphertext(&params, &sk).to_bytes(&params).unwrap();
    if std::env::var_os("NEXUS_BLESS").is_some() {
        std::fs::write(GOLDEN, &bytes).unwrap();
    }
    let golden = std::fs::read(GOLDEN).expect("golden file missing: run with NEXUS_BLESS=1 once");
    assert_eq!(bytes, golden, "the encoding changed: bump FORMAT_VERSION and re-bless");
    let ct = Ciphertext::from_bytes(&params, &golden, LIMIT).unwrap();
    let out = Encoder::new(&params).decode_real(&Decryptor::new(&params).decrypt(&ct, &sk).unwrap()).unwrap();
    for (a, b) in out.iter().zip(golden_values()) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn a_version_1_object_is_refused_naming_its_version() {
    let (params, _, _) = setup();
    let v1 = std::fs::read(GOLDEN_V1).unwrap();
    let err = Ciphertext::from_bytes(&params, &v1, LIMIT).unwrap_err().to_string();
    assert!(err.contains("format version 1 is not supported"), "{err}");
}

#[test]
fn round_trips_and_seeded_sizes() {
    let (params, sk, mut kg) = setup();
    let pk = kg.public_key(&sk);
    let rlk = kg.relin_key(&sk);
    let gks = kg.galois_keys(&sk, &[1, -3], true).unwrap();
    let enc = Encoder::new(&params);
    let pt = enc.encode_real(&[0.5, -0.25], params.max_level(), params.default_scale()).unwrap();
    let full = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
    let seeded = Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap();
    let (fb, sb) = (full.to_bytes(&params).unwrap(), seeded.to_bytes(&params).unwrap());
    assert_eq!(Ciphertext::from_bytes(&params, &fb, LIMIT).unwrap(), full);
    assert_eq!(Ciphertext::from_bytes(&params, &sb, LIMIT).unwrap(), seeded);
    let ratio = sb.len() as f64 / fb.len() as f64;
    assert!((0.49..0.52).contains(&ratio), "seeded/full = {ratio}");
    // Packed: 80 bits per coefficient over two components, plus a header.
    let packed = 2 * params.n() * params.q().iter().map(|&q| 64 - q.leading_zeros() as usize).sum::<usize>() / 8;
    assert!(fb.len() < packed + 200, "{} vs {packed}", fb.len());
    assert_eq!(PublicKey::from_bytes(&params, &pk.to_bytes(&params).unwrap(), LIMIT).unwrap(), pk);
    assert_eq!(RelinKey::from_bytes(&params, &rlk.to_bytes(&params).unwrap(), LIMIT).unwrap(), rlk);
    let gkb = gks.to_bytes(&params).unwrap();
    assert_eq!(GaloisKeys::from_bytes(&params, &gkb, LIMIT).unwrap(), gks);
    // The streamed encoding (one key packed at a time) is the same bytes.
    let mut streamed = Vec::new();
    gks.write_to(&params, &mut streamed).unwrap();
    assert_eq!(streamed, gkb);
    assert_eq!(gks.encoded_len(&params).unwrap(), gkb.len() as u64);
    let mut streamed = Vec::new();
    rlk.write_to(&params, &mut streamed).unwrap();
    assert_eq!(streamed, rlk.to_bytes(&params).unwrap());
    // Length-prefixed: 8 little-endian length bytes, then the same bytes,
    // for the streaming override and the default alike.
    for (prefixed, plain) in [
        {
            let mut out = Vec::new();
            let n = gks.write_length_prefixed(&params, &mut out).unwrap();
            assert_eq!(n, out.len() as u64);
            (out, gkb.clone())
        },
        {
            let mut out = Vec::new();
            let n = rlk.write_length_prefixed(&params, &mut out).unwrap();
            assert_eq!(n, out.len() as u64);
            (out, rlk.to_bytes(&params).unwrap())
        },
    ] {
        assert_eq!(prefixed[..8], (plain.len() as u64).to_le_bytes());
        assert_eq!(prefixed[8..], plain[..]);
    }
    let one = gks.get(params.galois_element_for_rotation(1)).unwrap();
    assert_eq!(&GaloisKey::from_bytes(&params, &one.to_bytes(&params).unwrap(), LIMIT).unwrap(), one);
    assert_eq!(Plaintext::from_bytes(&params, &pt.to_bytes(&params).unwrap(), LIMIT).unwrap(), pt);
    let skb = sk.to_bytes(&params).unwrap();
    let sk2 = SecretKey::from_bytes(&params, &skb, LIMIT).unwrap();
    let dec = enc.decode_real(&Decryptor::new(&params).decrypt(&full, &sk2).unwrap()).unwrap();
    assert!((dec[0] - 0.5).abs() < 1e-3);
    // Test parameters are refused from the wire; secure ones round-trip.
    let pb = parameters_to_bytes(&params).unwrap();
    assert!(parameters_from_bytes(&pb, 1 << 16).unwrap_err().to_string().contains("128-bit"));
    let secure = Parameters::preset("N15_QP860_TERN").unwrap();
    assert_eq!(parameters_from_bytes(&parameters_to_bytes(&secure).unwrap(), 1 << 16).unwrap(), secure);
}

fn decode_error(params: &Parameters, bytes: &[u8]) -> String {
    match Ciphertext::from_bytes(params, bytes, 1 << 20) {
        Err(CkksError::Decode { what, reason }) => {
            assert_eq!(what, "ciphertext");
            reason
        }
        other => panic!("expected a decode error, got {:?}", other.map(|c| c.level())),
    }
}

#[test]
fn bad_inputs_get_typed_errors() {
    let (params, sk, _) = setup();
    let good = golden_ciphertext(&params, &sk).to_bytes(&params).unwrap();
    assert!(decode_error(&params, &good[..10]).contains("truncated"));
    assert!(decode_error(&params, &good[..good.len() - 1]).contains("payload length"));
    assert!(decode_error(&params, &vec![0u8; 1 << 21]).contains("exceed the limit"));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(decode_error(&params, &bad).contains("magic"));
    let mut bad = good.clone();
    bad[4] = 9;
    assert!(decode_error(&params, &bad).contains("format version 9"));
    let mut bad = good.clone();
    bad[6] = 3;
    assert!(decode_error(&params, &bad).contains("object kind"));
    let mut bad = good.clone();
    bad[7] = 1;
    assert!(decode_error(&params, &bad).contains("reserved"));
    let other = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    assert!(decode_error(&other, &good).contains("other parameters"));
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] = 0xff;
    bad[last - 1] = 0xff;
    assert!(decode_error(&params, &bad).contains("not reduced"), "{}", decode_error(&params, &bad));
    let mut bad = good.clone();
    for b in &mut bad[HEADER_LEN..HEADER_LEN + 8] {
        *b = 0xc1; // reserved MessagePack byte
    }
    assert!(decode_error(&params, &bad).contains("malformed payload"));
    // Random bytes after a valid header.
    let mut bad = good[..HEADER_LEN].to_vec();
    bad.extend((0..500u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    bad[40..48].copy_from_slice(&500u64.to_le_bytes());
    decode_error(&params, &bad);
    assert!(matches!(parameters_from_bytes(b"\x93\x01\x02", 100), Err(CkksError::Decode { .. })));
}

#[test]
fn wrong_level_in_payload_is_refused() {
    let (params, sk, _) = setup();
    let ct = golden_ciphertext(&params, &sk);
    // Re-encode the level-1 ciphertext's payload claiming level 3.
    let eval = Evaluator::new(&params);
    let bytes = eval.drop_to_level(&ct, 0).unwrap().to_bytes(&params).unwrap();
    let mut tampered = bytes.clone();
    // The first payload field is the level (a positive fixint in a fixarray).
    assert_eq!(tampered[HEADER_LEN + 1], 0);
    tampered[HEADER_LEN + 1] = 3;
    assert!(decode_error(&params, &tampered).contains("limbs"));
    tampered[HEADER_LEN + 1] = 100;
    assert!(decode_error(&params, &tampered).contains("exceeds the maximum"));
}

#[test]
fn level_restricted_galois_keys_round_trip_rotate_below_and_refuse_above() {
    let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
    let mut kg = KeyGenerator::from_seed_insecure(&params, [3; 32]);
    let sk = kg.secret_key();
    let g = params.galois_element_for_rotation(5);
    let full = kg.galois_key(&sk, g).unwrap();
    let low = full.restricted_to_level(&params, 3);
    assert_eq!((full.max_level(), low.max_level()), (params.max_level(), 3));
    assert!(low.key_digits() < full.key_digits());
    let bytes = low.to_bytes(&params).unwrap();
    assert!(bytes.len() < full.to_bytes(&params).unwrap().len() / 2);
    let back = GaloisKey::from_bytes(&params, &bytes, LIMIT).unwrap();
    assert_eq!(back, low);
    let mut keys = GaloisKeys::new();
    keys.insert(back);
    let (enc, eval, dec) = (Encoder::new(&params), Evaluator::new(&params), Decryptor::new(&params));
    let v: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64 * 0.01).sin()).collect();
    let ct = Encryptor::new(&params).encrypt_sk(&enc.encode_real(&v, 3, params.default_scale()).unwrap(), &sk).unwrap();
    let got = enc.decode_real(&dec.decrypt(&eval.rotate(&ct, 5, &keys).unwrap(), &sk).unwrap()).unwrap();
    let err = (0..v.len()).map(|i| (got[i] - v[(i + 5) % v.len()]).abs()).fold(0.0, f64::max);
    assert!(err < 1e-6, "{err}");
    let high =
        Encryptor::new(&params).encrypt_sk(&enc.encode_real(&v, 4, params.default_scale()).unwrap(), &sk).unwrap();
    let msg = eval.rotate(&high, 5, &keys).unwrap_err().to_string();
    assert!(msg.contains("restricted to level 3"), "{msg}");
}
