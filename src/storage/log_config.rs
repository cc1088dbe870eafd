//! The effective settings of one partition log: a topic's overrides on top
//! of the broker's `log.*` defaults, already resolved and validated (see
//! `crate::topic_config`). Storage never reads config files or records.

/// Which timestamp a stored batch carries (Kafka's `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    #[default]
    CreateTime,
    /// The leader stamps each batch with its own clock on append.
    LogAppendTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before one grows past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this old even if it is not full.
    pub segment_ms: u64,
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps all.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger; -1 keeps all.
    pub retention_bytes: i64,
    /// `flush.messages`: fdatasync after this many records; `u64::MAX` leaves it to the OS.
    pub flush_messages: u64,
    /// `flush.ms`: fdatasync data older than this; `None` leaves it to the OS.
    pub flush_ms: Option<u64>,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: i32,
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete` (retention applies). Compaction is not implemented.
    pub delete_retention: bool,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
}

impl Default for LogConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: None,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            delete_retention: true,
            min_insync_replicas: 1,
        }
    }
}
