//! On-disk state of a node's log directories: partition logs (segment files
//! of Kafka record batches) indexed by one RocksDB per node, and
//! `meta.properties`. Knows nothing of Kafka requests: handlers and the
//! replica manager call in, never the reverse.

pub mod batch;
pub mod index;
pub mod log;
pub mod log_config;
pub mod manager;
pub mod meta_properties;
pub mod producer_state;
pub mod records;

pub use log::{AppendInfo, FileRegion, LogError, PartitionLog, ReadInfo, ReadLimit};
pub use log_config::{LogConfig, TimestampType};
pub use manager::LogManager;
