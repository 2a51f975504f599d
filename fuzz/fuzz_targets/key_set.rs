//! A model key set as a worker receives it (parameters, relinearisation
//! key, Galois keys; 128-bit parameters only, as the worker decodes them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_nn::KeySet;

fuzz_target!(|data: &[u8]| {
    let _ = KeySet::from_bytes(data, 1 << 24, false);
});
