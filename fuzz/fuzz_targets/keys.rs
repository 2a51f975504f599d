//! Every key type at a small parameter set, from the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_ckks::{GaloisKey, GaloisKeys, Parameters, PublicKey, RelinKey, SecretKey, Wire};
use std::sync::OnceLock;

fn params() -> &'static Parameters {
    static P: OnceLock<Parameters> = OnceLock::new();
    P.get_or_init(|| Parameters::preset("INSECURE_N11_QP230_TEST").expect("preset"))
}

const LIMIT: usize = 1 << 23;

fuzz_target!(|data: &[u8]| {
    let p = params();
    let _ = PublicKey::from_bytes(p, data, LIMIT);
    let _ = RelinKey::from_bytes(p, data, LIMIT);
    let _ = GaloisKey::from_bytes(p, data, LIMIT);
    let _ = GaloisKeys::from_bytes(p, data, LIMIT);
    let _ = SecretKey::from_bytes(p, data, LIMIT);
});
