//! The CKKS scheme: encoding, keys, encryption, evaluation.

pub mod encoding;
pub mod encryption;
pub mod evaluator;
pub mod keys;
pub(crate) mod keyswitch;
pub mod plaintext;
pub mod sampling;
