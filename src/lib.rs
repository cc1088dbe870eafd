//! fjord: a Kafka-compatible message broker in KRaft mode.

pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod group;
pub mod kafka;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod process_metrics;
pub mod replication;
pub mod storage;
pub mod topic_config;
