//! The engine's error type.

use thiserror::Error;

/// Every failure of the engine. Messages name the operation and the offending
/// value.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CkksError {
    /// Parameters are malformed, inconsistent or insecure.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// Two operands are at different levels.
    #[error("{op}: level mismatch ({left} vs {right}); drop the higher operand to the lower level first")]
    LevelMismatch {
        /// Operation name.
        op: &'static str,
        /// Level of the left operand.
        left: usize,
        /// Level of the right operand.
        right: usize,
    },
    /// Two operands have different scales.
    #[error("{op}: scale mismatch (2^{left:.4} vs 2^{right:.4})")]
    ScaleMismatch {
        /// Operation name.
        op: &'static str,
        /// log2 of the left scale.
        left: f64,
        /// log2 of the right scale.
        right: f64,
    },
    /// The operation needs more levels than the operand has.
    #[error("{op}: not enough levels (operand at level {level}, needs at least {needed})")]
    NotEnoughLevels {
        /// Operation name.
        op: &'static str,
        /// Operand level.
        level: usize,
        /// Minimum level required.
        needed: usize,
    },
    /// A Galois key is missing.
    #[error("missing Galois key for element {0}")]
    MissingGaloisKey(usize),
    /// A relinearisation key is needed and absent.
    #[error("missing relinearisation key")]
    MissingRelinKey,
    /// A ciphertext has the wrong number of components.
    #[error("{op}: ciphertext has degree {degree}, expected {expected}")]
    DegreeMismatch {
        /// Operation name.
        op: &'static str,
        /// Actual degree.
        degree: usize,
        /// Expected degree.
        expected: usize,
    },
    /// Input values do not fit (too many, not finite, too large for the scale).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Objects built for different parameters were combined.
    #[error("{0}: object was built for other parameters")]
    ParametersMismatch(&'static str),
    /// Decoding bytes failed.
    #[error("decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Encoding to bytes failed.
    #[error("encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}
