//! The server binaries contain no secret-key code: the symbol tables of
//! `nexus-coordinator` and `nexus-worker` (release build) hold none of the
//! engine's secret-key type, key generator, secret-key encryption or
//! decryption, while the client binary holds them (the check can fail).
//! The crates share `nexus-ckks`; the linker drops what the servers never
//! call, so this test is what keeps it that way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use nexus_tests::binary;
use std::process::Command;

const SECRET_SYMBOLS: &[&str] = &[
    "nexus_ckks::scheme::keys::SecretKey",
    "nexus_ckks::scheme::keys::KeyGenerator",
    "nexus_ckks::scheme::encryption::Decryptor",
    "nexus_ckks::scheme::encryption::Encryptor::encrypt_sk",
];

/// Demangled symbol names of `path` (`nm` from binutils).
fn symbols(path: &std::path::Path) -> String {
    let out = Command::new("nm").arg("-C").arg(path).output().expect("running nm (binutils)");
    assert!(out.status.success(), "nm {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn secret_symbols(path: &std::path::Path) -> Vec<String> {
    symbols(path)
        .lines()
        .filter(|l| SECRET_SYMBOLS.iter().any(|s| l.contains(s)))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn server_binaries_link_no_secret_key_code() {
    for (package, name) in [("nexus-coordinator", "nexus-coordinator"), ("nexus-worker", "nexus-worker")] {
        let found = secret_symbols(&binary(package, name));
        assert!(found.is_empty(), "{name} links secret-key code: {found:#?}");
    }
    let client = secret_symbols(&binary("nexus-client", "nexus"));
    assert!(
        client.iter().any(|s| s.contains("Decryptor")),
        "the client binary shows no decryption symbol: the check would not see secret-key code"
    );
}
