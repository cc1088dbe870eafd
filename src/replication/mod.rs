//! The broker's replicas (Kafka's `ReplicaManager`): which partitions this
//! node hosts, leads and follows, kept in step with the metadata image, and
//! the produce and fetch paths into their logs.
//!
//! Partition data is not in Raft. The image says who leads each partition
//! at which leader epoch and who is in its ISR. A leader appends produced
//! batches, serves followers' fetches (their fetch offset is their log
//! end), keeps the high watermark at the smallest log end in the ISR, and
//! asks the active controller to shrink the ISR when a follower has not
//! caught up for `replica.lag.time.max.ms`, or to expand it when one has.
//! `acks=all` waits for the high watermark to pass the batch. Followers run
//! `fetcher` tasks, one per leader. Deleted topics' logs are removed.

pub mod fetcher;
pub mod replica_manager;

pub use replica_manager::{
    AlwaysActive, FetchOutcome, IsrChannel, IsrUpdate, IsrUpdated, Liveness, Partition,
    PartitionError, ReplicaManager,
};
