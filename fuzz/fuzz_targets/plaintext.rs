//! Plaintexts at a small parameter set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_ckks::{Parameters, Plaintext, Wire};
use std::sync::OnceLock;

fn params() -> &'static Parameters {
    static P: OnceLock<Parameters> = OnceLock::new();
    P.get_or_init(|| Parameters::preset("INSECURE_N11_QP230_TEST").expect("preset"))
}

fuzz_target!(|data: &[u8]| {
    let _ = Plaintext::from_bytes(params(), data, 1 << 22);
});
