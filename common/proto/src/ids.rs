//! Identifiers. Key sets are content-addressed (BLAKE3 of their wire
//! bytes), so a re-upload is recognised and costs nothing; task ids are
//! `(query, index)`, so a retried task's result is idempotent.

use crate::blob::BlobRef;
use crate::error::ProtoError;
use serde::{Deserialize, Serialize};
use std::fmt;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// BLAKE3 digest of a key set's serialized evaluation keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeySetId(pub [u8; 32]);

impl KeySetId {
    /// The id of a key set's wire bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::hash(bytes).into())
    }

    /// The id of the key set whose bytes `blob` announces: both are the
    /// BLAKE3 digest of the same bytes, so a received key set is checked against
    /// its id by the blob's own digest check, without hashing it again.
    pub fn of_blob(blob: &BlobRef) -> Self {
        Self(blob.digest)
    }

    /// All 64 hex digits (`Display` shows the first 16).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ProtoError> {
        let bad = |msg: String| ProtoError::InvalidId { what: "key set id", msg };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad(format!("{s:?} is not 64 hex digits")));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| bad(format!("{s:?}: {e}")))?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for KeySetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex(&self.0[..8]))
    }
}

impl fmt::Debug for KeySetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySetId({})", hex(&self.0))
    }
}

/// A query, unique across coordinators (assigned by the raft leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryId(pub u64);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// One ciphertext-level task of a query's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    /// The query.
    pub query: QueryId,
    /// Index of the task in the query's plan.
    pub index: u32,
}

/// A registered worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

/// A tenant name: 1 to 64 characters of `[a-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates a tenant name.
    pub fn new(name: &str) -> Result<Self, ProtoError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(ProtoError::InvalidId {
                what: "tenant",
                msg: format!("{name:?} must be 1-64 characters of [a-z0-9_-]"),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = ProtoError;
    fn try_from(s: String) -> Result<Self, ProtoError> {
        Self::new(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
