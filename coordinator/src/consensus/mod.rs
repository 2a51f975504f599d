//! Consensus among the coordinators: a raft group (raft-rs) whose log holds
//! every state change the cluster must not lose.
//!
//! - [`storage`]: raft-rs's `Storage` on disk (or in memory), snapshots and
//!   compaction.
//! - [`replica`]: the Ready loop on its own thread and the state-machine
//!   interface.
//! - [`transport`]: raft messages over mutual-TLS QUIC.

pub mod replica;
pub mod storage;
pub mod transport;

#[cfg(test)]
mod tests;

pub use replica::{ProposeError, Replica, ReplicaConfig, Role, StateMachine};
pub use storage::{LogError, LogStorage};
pub use transport::{PeerAddress, PeerStreams, RaftTransport};
