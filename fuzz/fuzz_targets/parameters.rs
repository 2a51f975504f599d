//! CKKS parameters from the wire: both the strict (128-bit only) decoder a
//! server uses and the test-only one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_ckks::wire::{parameters_from_bytes, parameters_from_bytes_checked};

fuzz_target!(|data: &[u8]| {
    let _ = parameters_from_bytes(data, 1 << 16);
    let _ = parameters_from_bytes_checked(data, 1 << 16, true);
});
