//! Cross-crate system tests live in `tests/tests/`.
