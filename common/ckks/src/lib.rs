//! # nexus-ckks: the RNS-CKKS engine of Nexus
//!
//! Layered like Lattigo: [`math`] (modular arithmetic, NTT, RNS) ->
//! [`ring`] (RNS polynomials with their domain in the type, the backend
//! trait) -> the CKKS scheme ([`Parameters`], [`Encoder`], keys,
//! [`Encryptor`], [`Decryptor`], [`Evaluator`], [`wire`] format).
//!
//! ```
//! use nexus_ckks::{Parameters, Encoder, KeyGenerator, Encryptor, Decryptor, Evaluator};
//!
//! let params = Parameters::preset("INSECURE_N12_QP640_TEST").unwrap();
//! let mut keygen = KeyGenerator::new(&params);
//! let sk = keygen.secret_key();
//! let pk = keygen.public_key(&sk);
//! let rlk = keygen.relin_key(&sk);
//! let encoder = Encoder::new(&params);
//! let values: Vec<f64> = (0..params.max_slots()).map(|i| (i as f64 / 1000.0).sin()).collect();
//! let pt = encoder.encode_real(&values, params.max_level(), params.default_scale()).unwrap();
//! let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
//! let eval = Evaluator::new(&params);
//! let sq = eval.mul_relin_rescale(&ct, &ct, &rlk).unwrap();
//! let out = encoder.decode_real(&Decryptor::new(&params).decrypt(&sq, &sk).unwrap()).unwrap();
//! assert!((out[7] - values[7] * values[7]).abs() < 1e-6);
//! ```
//!
//! Parallelism: every kernel runs on the current rayon pool; wrap calls in
//! `rayon::ThreadPool::install` to choose the thread count.

pub mod bootstrapping;
pub mod circuits;
pub mod error;
pub mod math;
pub mod params;
pub mod presets;
pub mod ring;

pub use error::CkksError;
pub use params::{Parameters, ParametersLiteral, Primes, SecretDistribution, SecurityLevel};
pub mod scheme;
pub mod wire;

pub use num_complex::Complex64;
pub use scheme::encoding::Encoder;
pub use scheme::encryption::{Decryptor, Encryptor};
pub use scheme::evaluator::Evaluator;
pub use scheme::keys::{GaloisKey, GaloisKeys, KeyGenerator, PublicKey, RelinKey, SecretKey, SwitchingKey};
pub use scheme::plaintext::{Ciphertext, Encoding, Plaintext};
pub use wire::Wire;
