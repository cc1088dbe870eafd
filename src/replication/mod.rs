//! The broker's replicas (Kafka's `ReplicaManager`): which partitions this
//! node hosts and leads, kept in step with the metadata image, and the
//! produce and fetch paths into their logs.
//!
//! Partition data is not in Raft. The image says who leads each partition
//! at which leader epoch; this module opens a log for every partition whose
//! replicas include this node, deletes logs of topics the image no longer
//! has, and refuses produce/fetch where this node is not the leader so that
//! clients refresh their metadata.

pub mod replica_manager;

pub use replica_manager::{Partition, PartitionError, ReplicaManager};
