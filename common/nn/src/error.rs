//! The operators' error type.

use nexus_ckks::CkksError;
use thiserror::Error;

/// Every failure of an operator. Messages name the operator and the offending
/// value.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum NnError {
    /// The engine refused an operation.
    #[error(transparent)]
    Ckks(#[from] CkksError),
    /// A configuration or shape is invalid.
    #[error("{op}: {msg}")]
    InvalidConfig {
        /// Operator name.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// A plaintext input is outside the range the operator is valid on.
    #[error("{op}: input {value} at index {index} is outside the supported range [{lo}, {hi}]")]
    OutOfRange {
        /// Operator name.
        op: &'static str,
        /// Offending value.
        value: f64,
        /// Its index.
        index: usize,
        /// Range start.
        lo: f64,
        /// Range end.
        hi: f64,
    },
}

pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> NnError {
    NnError::InvalidConfig { op, msg: msg.into() }
}

/// Checks that every value lies in `[lo, hi]` (the plaintext twins and the
/// client-side encoders call this so that out-of-range inputs are refused,
/// never silently approximated badly).
pub fn check_range(op: &'static str, values: &[f64], lo: f64, hi: f64) -> Result<(), NnError> {
    match values.iter().position(|v| !(lo..=hi).contains(v)) {
        Some(index) => Err(NnError::OutOfRange { op, value: values[index], index, lo, hi }),
        None => Ok(()),
    }
}
