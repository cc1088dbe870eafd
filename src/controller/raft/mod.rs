//! openraft glue, kept thin: the type config, the RocksDB log store, the state
//! machine that replays metadata records into the image, and the TCP network.
//! What the metadata means lives in `crate::metadata` and `crate::controller`.

// openraft's storage traits fix the error type to its (large) StorageError;
// helpers that feed those traits return it too, on cold paths only.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod rpc;
pub mod state_machine;

use std::io::Cursor;

use crate::metadata::MetadataBatch;

/// What applying one log entry tells the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied;

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum.
    pub TypeConfig:
        D = MetadataBatch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type MetadataRaft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;

/// Wraps any error as the `AnyError` openraft's storage errors carry.
pub(crate) fn any(e: impl std::error::Error + 'static) -> openraft::AnyError {
    openraft::AnyError::new(&e)
}
