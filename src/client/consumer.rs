//! A small Kafka consumer for one topic, with partitions assigned by the
//! caller (no group yet): the CLI's `consume`, `bench consume` and tests.
//!
//! Start positions come from ListOffsets (earliest -2, latest -1) or an
//! explicit offset. Each poll sends one sessionless Fetch (session id 0,
//! epoch -1, so the broker answers every partition in full, KIP-227) to each
//! partition leader at once and waits for all of them, so a long poll on
//! one leader does not hold the others back. Leader changes and missing
//! partitions mark the metadata stale; the next poll refreshes it and asks
//! the new leader. OFFSET_OUT_OF_RANGE resets the position by the reset
//! policy, as `auto.offset.reset` does.
//!
//! Fetched bytes come from the network, so batches are split and checked
//! here before `RecordBatchDecoder` sees them: the decoder reserves room
//! for the record count a batch declares, and a count that its bytes cannot
//! hold is refused rather than allocated. A last batch cut short by the
//! size limits is normal in Kafka and is simply fetched again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};
use kafka_protocol::ResponseError;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{broker_address, ClientError, KafkaClient};

/// ListOffsets' special timestamps.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

/// Bytes of a RecordBatch v2 before its records, after the 12-byte
/// base offset and length: epoch 4, magic 1, crc 4, attributes 2, last offset
/// delta 4, timestamps 16, producer id 8, epoch 2, base sequence 4, count 4.
const BATCH_HEADER_AFTER_LENGTH: usize = 49;
const LOG_OVERHEAD: usize = 12;
/// The least bytes an uncompressed record takes: seven one-byte varints
/// and the attributes byte (length, attributes, timestamp delta, offset
/// delta, key length, value length, header count).
const MIN_RECORD_BYTES: usize = 7;
/// A compressed batch's record count cannot be checked against its bytes;
/// this caps what the decoder may reserve for it.
const MAX_RECORDS_PER_COMPRESSED_BATCH: usize = 1 << 18;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    At(i64),
}

/// What to do when the position is outside the log (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail the poll with OFFSET_OUT_OF_RANGE.
    None,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest the broker holds a Fetch waiting for `min_bytes` (`fetch.max.wait.ms`).
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// Per Fetch response (`fetch.max.bytes`).
    pub max_bytes: i32,
    /// Per partition in a Fetch (`max.partition.fetch.bytes`).
    pub partition_max_bytes: i32,
    pub request_timeout: Duration,
    pub reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            reset: OffsetReset::Latest,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{topic}-{partition}: {}", describe(*.code))]
    Broker {
        topic: String,
        partition: i32,
        code: i16,
    },
    #[error("topic {topic}: {}", describe(*.code))]
    Topic { topic: String, code: i16 },
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    NoSuchPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error("{topic}-{partition}: bad record batch at offset {offset}: {reason}")]
    Corrupt {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

fn describe(code: i16) -> String {
    let name = ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    format!("{name} (error {code})")
}

struct PartitionState {
    /// The next offset to fetch; `None` until listed.
    position: Option<i64>,
    start: StartOffset,
    leader: i32,
    /// Offsets the broker reported in the last answer.
    high_watermark: i64,
    log_start_offset: i64,
}

pub struct Consumer {
    bootstrap: String,
    config: ConsumerConfig,
    topic: String,
    topic_id: Uuid,
    metadata_client: Option<KafkaClient>,
    brokers: HashMap<i32, String>,
    connections: HashMap<i32, KafkaClient>,
    partitions: BTreeMap<i32, PartitionState>,
    metadata_stale: bool,
}

impl Consumer {
    /// Assigns `partitions` of `topic` (every partition when `None`), each
    /// starting at `start`. Fails if the topic or a partition does not exist.
    pub async fn assign(
        bootstrap: &str,
        topic: &str,
        partitions: Option<Vec<i32>>,
        start: StartOffset,
        config: ConsumerConfig,
    ) -> Result<Consumer, ConsumeError> {
        let metadata_client = KafkaClient::connect(bootstrap, config.request_timeout).await?;
        let mut consumer = Consumer {
            bootstrap: bootstrap.to_string(),
            config,
            topic: topic.to_string(),
            topic_id: Uuid::nil(),
            metadata_client: Some(metadata_client),
            brokers: HashMap::new(),
            connections: HashMap::new(),
            partitions: BTreeMap::new(),
            metadata_stale: true,
        };
        let metadata = consumer.fetch_metadata().await?;
        let leaders = consumer.apply_metadata(&metadata)?;
        let count = leaders.len();
        let wanted = partitions.unwrap_or_else(|| leaders.keys().copied().collect());
        for partition in wanted {
            let Some(leader) = leaders.get(&partition) else {
                return Err(ConsumeError::NoSuchPartition {
                    topic: topic.to_string(),
                    partition,
                    count,
                });
            };
            consumer.partitions.insert(
                partition,
                PartitionState {
                    position: match start {
                        StartOffset::At(offset) => Some(offset),
                        _ => None,
                    },
                    start,
                    leader: *leader,
                    high_watermark: -1,
                    log_start_offset: -1,
                },
            );
        }
        consumer.metadata_stale = false;
        Ok(consumer)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next offset to be returned, by partition, where known.
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| s.position.map(|o| (*p, o)))
            .collect()
    }

    /// Moves `partition`'s next fetch to `offset` (a group's committed
    /// offset, say); a partition not assigned is ignored.
    pub fn seek(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.position = Some(offset);
        }
    }

    /// The high watermark each partition's leader last reported (-1 before any fetch).
    pub fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.high_watermark))
            .collect()
    }

    /// The earliest or latest offset of every assigned partition, asked now.
    pub async fn list_offsets(
        &mut self,
        which: StartOffset,
    ) -> Result<BTreeMap<i32, i64>, ConsumeError> {
        let timestamp = match which {
            StartOffset::Earliest => EARLIEST_TIMESTAMP,
            StartOffset::Latest => LATEST_TIMESTAMP,
            StartOffset::At(offset) => {
                return Ok(self.partitions.keys().map(|p| (*p, offset)).collect())
            }
        };
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        self.list(&partitions, timestamp).await
    }

    /// Up to one round of fetches: returns what arrived, possibly nothing
    /// (the broker waits up to `max_wait` for data before answering).
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ConsumeError> {
        let mut records = Vec::new();
        self.poll_into(&mut Sink::Records(&mut records)).await?;
        Ok(records)
    }

    /// Like [`Self::poll`], but hands back the fetched bytes, whole batches
    /// only, as the broker sent them, instead of decoded records: a reader
    /// that only needs to look at records walks them in place with
    /// [`FetchedBatches::for_each_record`], with no allocation per record.
    /// Positions move past the batches returned.
    pub async fn poll_batches(&mut self) -> Result<Vec<FetchedBatches>, ConsumeError> {
        let mut batches = Vec::new();
        self.poll_into(&mut Sink::Batches(&mut batches)).await?;
        Ok(batches)
    }

    async fn poll_into(&mut self, sink: &mut Sink<'_>) -> Result<(), ConsumeError> {
        if self.metadata_stale {
            self.refresh_metadata().await?;
        }
        self.initialise_positions().await?;
        let mut by_leader: HashMap<i32, Vec<(i32, i64)>> = HashMap::new();
        for (partition, state) in &self.partitions {
            if let Some(position) = state.position {
                by_leader
                    .entry(state.leader)
                    .or_default()
                    .push((*partition, position));
            }
        }
        let mut fetches = JoinSet::new();
        for (leader, partitions) in by_leader {
            let Some(mut client) = self.connection(leader).await else {
                self.metadata_stale = true;
                continue;
            };
            let request = self.fetch_request(&partitions);
            let requested: HashMap<i32, i64> = partitions.into_iter().collect();
            // A long poll waits max_wait; the request deadline is on top.
            fetches.spawn(async move {
                let result = client.request(request).await;
                (leader, client, requested, result)
            });
        }
        let mut out_of_range = Vec::new();
        while let Some(joined) = fetches.join_next().await {
            let Ok((leader, client, requested, result)) = joined else {
                continue;
            };
            match result {
                Ok(response) => {
                    self.connections.insert(leader, client);
                    self.absorb(response, &requested, sink, &mut out_of_range)?;
                }
                Err(e) => {
                    tracing::debug!("fetch from node {leader} failed: {e}");
                    self.metadata_stale = true;
                }
            }
        }
        if !out_of_range.is_empty() {
            self.reset(&out_of_range).await?;
        }
        if self.metadata_stale && sink.is_empty() {
            // Nothing to return and someone to find: don't spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Like [`Self::poll`] until at least one record arrives or `timeout` passes.
    pub async fn poll_for(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, ConsumeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.poll().await?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    fn fetch_request(&self, partitions: &[(i32, i64)]) -> FetchRequest {
        let partitions = partitions
            .iter()
            .map(|(partition, offset)| {
                FetchPartition::default()
                    .with_partition(*partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.config.partition_max_bytes)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(i32::try_from(self.config.max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_topic_id(self.topic_id)
                .with_partitions(partitions)])
    }

    /// Takes one Fetch answer: records at or past each requested offset,
    /// new positions, and which partitions need a reset or new metadata.
    fn absorb(
        &mut self,
        response: FetchResponse,
        requested: &HashMap<i32, i64>,
        sink: &mut Sink<'_>,
        out_of_range: &mut Vec<i32>,
    ) -> Result<(), ConsumeError> {
        if response.error_code != 0 {
            // A whole-request error (e.g. a session error): ask again.
            self.metadata_stale = true;
            return Ok(());
        }
        for topic in &response.responses {
            if topic.topic.0.as_str() != self.topic
                && (topic.topic_id.is_nil() || topic.topic_id != self.topic_id)
            {
                continue;
            }
            for data in &topic.partitions {
                let partition = data.partition_index;
                let Some(&fetch_offset) = requested.get(&partition) else {
                    continue;
                };
                let Some(state) = self.partitions.get_mut(&partition) else {
                    continue;
                };
                // A position moved since this fetch was sent (a reset) wins.
                if state.position != Some(fetch_offset) {
                    continue;
                }
                match ResponseError::try_from_code(data.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        out_of_range.push(partition);
                        continue;
                    }
                    Some(
                        ResponseError::NotLeaderOrFollower
                        | ResponseError::LeaderNotAvailable
                        | ResponseError::UnknownTopicOrPartition
                        | ResponseError::UnknownTopicId
                        | ResponseError::FencedLeaderEpoch
                        | ResponseError::UnknownLeaderEpoch
                        | ResponseError::KafkaStorageError
                        | ResponseError::ReplicaNotAvailable,
                    ) => {
                        self.metadata_stale = true;
                        continue;
                    }
                    Some(_) => {
                        return Err(ConsumeError::Broker {
                            topic: self.topic.clone(),
                            partition,
                            code: data.error_code,
                        })
                    }
                }
                state.high_watermark = data.high_watermark;
                state.log_start_offset = data.log_start_offset;
                let Some(bytes) = data.records.clone() else {
                    continue;
                };
                let corrupt = |reason| ConsumeError::Corrupt {
                    topic: self.topic.clone(),
                    partition,
                    offset: fetch_offset,
                    reason,
                };
                let next_offset = match sink {
                    Sink::Records(records) => {
                        let decoded =
                            decode_batches(bytes, partition, fetch_offset).map_err(corrupt)?;
                        records.extend(decoded.records);
                        decoded.next_offset
                    }
                    Sink::Batches(batches) => {
                        let (whole, next_offset) = whole_batches(bytes).map_err(corrupt)?;
                        if !whole.is_empty() {
                            batches.push(FetchedBatches {
                                partition,
                                fetch_offset,
                                bytes: whole,
                            });
                        }
                        next_offset
                    }
                };
                if let Some(next) = next_offset {
                    state.position = Some(next.max(fetch_offset));
                }
            }
        }
        Ok(())
    }

    async fn reset(&mut self, partitions: &[i32]) -> Result<(), ConsumeError> {
        let timestamp = match self.config.reset {
            OffsetReset::Earliest => EARLIEST_TIMESTAMP,
            OffsetReset::Latest => LATEST_TIMESTAMP,
            OffsetReset::None => {
                return Err(ConsumeError::Broker {
                    topic: self.topic.clone(),
                    partition: partitions[0],
                    code: ResponseError::OffsetOutOfRange.code(),
                })
            }
        };
        let offsets = self.list(partitions, timestamp).await?;
        for (partition, offset) in offsets {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.position = Some(offset);
            }
        }
        Ok(())
    }

    async fn initialise_positions(&mut self) -> Result<(), ConsumeError> {
        for which in [StartOffset::Earliest, StartOffset::Latest] {
            let pending: Vec<i32> = self
                .partitions
                .iter()
                .filter(|(_, s)| s.position.is_none() && s.start == which)
                .map(|(p, _)| *p)
                .collect();
            if pending.is_empty() {
                continue;
            }
            let timestamp = if which == StartOffset::Earliest {
                EARLIEST_TIMESTAMP
            } else {
                LATEST_TIMESTAMP
            };
            let offsets = self.list(&pending, timestamp).await?;
            for (partition, offset) in offsets {
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.position = Some(offset);
                }
            }
        }
        Ok(())
    }

    /// ListOffsets for `partitions` at `timestamp`, each asked of its
    /// leader; a partition whose leader is not reachable or not the leader
    /// any more is left out (and the metadata marked stale).
    async fn list(
        &mut self,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, ConsumeError> {
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in partitions {
            if let Some(state) = self.partitions.get(p) {
                by_leader.entry(state.leader).or_default().push(*p);
            }
        }
        let mut offsets = BTreeMap::new();
        for (leader, partitions) in by_leader {
            let Some(mut client) = self.connection(leader).await else {
                self.metadata_stale = true;
                continue;
            };
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(0)
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response: ListOffsetsResponse = match client.request(request).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("ListOffsets to node {leader} failed: {e}");
                    self.metadata_stale = true;
                    continue;
                }
            };
            self.connections.insert(leader, client);
            for p in response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == self.topic)
                .flat_map(|t| &t.partitions)
            {
                match ResponseError::try_from_code(p.error_code) {
                    None => {
                        offsets.insert(p.partition_index, p.offset);
                    }
                    Some(
                        ResponseError::NotLeaderOrFollower
                        | ResponseError::LeaderNotAvailable
                        | ResponseError::UnknownTopicOrPartition
                        | ResponseError::FencedLeaderEpoch
                        | ResponseError::UnknownLeaderEpoch
                        | ResponseError::OffsetNotAvailable,
                    ) => self.metadata_stale = true,
                    Some(_) => {
                        return Err(ConsumeError::Broker {
                            topic: self.topic.clone(),
                            partition: p.partition_index,
                            code: p.error_code,
                        })
                    }
                }
            }
        }
        Ok(offsets)
    }

    /// The connection to `node`, made if need be; taken out of the map so
    /// that a fetch task can own it (put back when it returns).
    async fn connection(&mut self, node: i32) -> Option<KafkaClient> {
        if let Some(client) = self.connections.remove(&node) {
            return Some(client);
        }
        let address = self.brokers.get(&node)?;
        match KafkaClient::connect(address, self.config.request_timeout + self.config.max_wait)
            .await
        {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::debug!("cannot connect to node {node} at {address}: {e}");
                None
            }
        }
    }

    async fn refresh_metadata(&mut self) -> Result<(), ConsumeError> {
        let metadata = match self.fetch_metadata().await {
            Ok(m) => m,
            Err(e) => {
                // Try again at the next poll, from another address perhaps.
                tracing::debug!("metadata refresh failed: {e}");
                self.metadata_client = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
        };
        let leaders = match self.apply_metadata(&metadata) {
            Ok(leaders) => leaders,
            Err(ConsumeError::Topic { code, .. })
                if code == ResponseError::LeaderNotAvailable.code() =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        for (partition, state) in self.partitions.iter_mut() {
            if let Some(leader) = leaders.get(partition) {
                state.leader = *leader;
            }
        }
        self.metadata_stale = false;
        Ok(())
    }

    async fn fetch_metadata(&mut self) -> Result<MetadataResponse, ClientError> {
        if self.metadata_client.is_none() {
            let addresses = std::iter::once(self.bootstrap.clone())
                .chain(self.brokers.values().cloned())
                .collect::<Vec<_>>()
                .join(",");
            self.metadata_client =
                Some(KafkaClient::connect(&addresses, self.config.request_timeout).await?);
        }
        let Some(client) = self.metadata_client.as_mut() else {
            return Err(ClientError::Protocol("no metadata connection".into()));
        };
        let result = client.metadata(Some(vec![self.topic.clone()])).await;
        if result.is_err() {
            self.metadata_client = None;
        }
        result
    }

    /// Records brokers and the topic id; returns each partition's leader.
    fn apply_metadata(
        &mut self,
        metadata: &MetadataResponse,
    ) -> Result<BTreeMap<i32, i32>, ConsumeError> {
        self.brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, broker_address(&b.host, b.port)))
            .collect();
        let topic = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == self.topic))
            .ok_or_else(|| ConsumeError::Topic {
                topic: self.topic.clone(),
                code: ResponseError::UnknownTopicOrPartition.code(),
            })?;
        if topic.error_code != 0 {
            return Err(ConsumeError::Topic {
                topic: self.topic.clone(),
                code: topic.error_code,
            });
        }
        self.topic_id = topic.topic_id;
        Ok(topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect())
    }
}

/// Where a poll puts what it fetched.
enum Sink<'a> {
    Records(&'a mut Vec<ConsumedRecord>),
    Batches(&'a mut Vec<FetchedBatches>),
}

impl Sink<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Sink::Records(r) => r.is_empty(),
            Sink::Batches(b) => b.is_empty(),
        }
    }
}

/// Records of a Fetch answer's bytes, and the offset after the last
/// complete batch (`None` when no batch is complete).
#[derive(Debug, Default)]
pub struct DecodedRecords {
    pub records: Vec<ConsumedRecord>,
    pub next_offset: Option<i64>,
}

/// One RecordBatch v2 of fetched bytes whose declared sizes were checked
/// against the bytes it has.
struct CheckedBatch {
    base_offset: i64,
    /// One past its last offset.
    next_offset: i64,
    compressed: bool,
    control: bool,
    record_count: usize,
    bytes: Bytes,
}

/// Takes the next whole batch off the front of `bytes`; `None` when what
/// is left is not a whole batch (the size limits cut it short: fetched again).
fn next_batch(bytes: &mut Bytes) -> Result<Option<CheckedBatch>, String> {
    if bytes.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let base_offset = i64::from_be_bytes(array_at(bytes, 0));
    let length = i32::from_be_bytes(array_at(bytes, 8));
    let length = usize::try_from(length)
        .ok()
        .filter(|l| *l >= BATCH_HEADER_AFTER_LENGTH)
        .ok_or_else(|| format!("batch length {length} at offset {base_offset}"))?;
    let Some(total) = LOG_OVERHEAD.checked_add(length) else {
        return Err(format!("batch length {length} at offset {base_offset}"));
    };
    if bytes.len() < total {
        return Ok(None);
    }
    let batch = bytes.split_to(total);
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(format!(
            "message format v{magic} at offset {base_offset}; only v2 batches are read"
        ));
    }
    let attributes = i16::from_be_bytes(array_at(&batch, 21));
    let last_offset_delta = i32::from_be_bytes(array_at(&batch, 23));
    let record_count = i32::from_be_bytes(array_at(&batch, 57));
    let compressed = attributes & 0x7 != Compression::None as i16;
    let room = if compressed {
        MAX_RECORDS_PER_COMPRESSED_BATCH
    } else {
        (length - BATCH_HEADER_AFTER_LENGTH) / MIN_RECORD_BYTES
    };
    let record_count = usize::try_from(record_count)
        .ok()
        .filter(|c| *c <= room)
        .ok_or_else(|| {
            format!(
                "batch at offset {base_offset} declares {record_count} records, room for {room}"
            )
        })?;
    Ok(Some(CheckedBatch {
        base_offset,
        next_offset: base_offset.saturating_add(i64::from(last_offset_delta)) + 1,
        compressed,
        control: attributes & (1 << 5) != 0,
        record_count,
        bytes: batch,
    }))
}

/// The whole batches at the front of `bytes` (a slice of them, not a
/// copy), and the offset after the last one.
fn whole_batches(bytes: Bytes) -> Result<(Bytes, Option<i64>), String> {
    let mut rest = bytes.clone();
    let mut next_offset = None;
    while let Some(batch) = next_batch(&mut rest)? {
        next_offset = Some(batch.next_offset);
    }
    let whole = bytes.len() - rest.len();
    Ok((bytes.slice(..whole), next_offset))
}

/// Splits `bytes` into RecordBatch v2 batches, checks each one's declared
/// sizes against the bytes it has, and decodes it (any codec). Records
/// below `fetch_offset` (the broker answers whole batches) and control
/// records (transaction markers) are dropped; a cut-short last batch ends
/// the walk.
pub fn decode_batches(
    mut bytes: Bytes,
    partition: i32,
    fetch_offset: i64,
) -> Result<DecodedRecords, String> {
    let mut out = DecodedRecords::default();
    while let Some(batch) = next_batch(&mut bytes)? {
        out.next_offset = Some(batch.next_offset);
        if batch.control || batch.record_count == 0 {
            continue;
        }
        let base_offset = batch.base_offset;
        let mut one = batch.bytes;
        let set = RecordBatchDecoder::decode(&mut one)
            .map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
        out.records.extend(
            set.records
                .into_iter()
                .filter(|r| r.offset >= fetch_offset)
                .map(|r| ConsumedRecord {
                    partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    timestamp_type: r.timestamp_type,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                }),
        );
    }
    Ok(out)
}

/// Whole record batches of one partition as fetched (see
/// [`Consumer::poll_batches`]).
#[derive(Debug, Clone)]
pub struct FetchedBatches {
    pub partition: i32,
    /// The offset asked for: the first batch may start before it.
    pub fetch_offset: i64,
    pub bytes: Bytes,
}

/// A record seen in place in its batch.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub partition: i32,
    pub offset: i64,
    /// CreateTime, or the broker's LogAppendTime for such topics.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl FetchedBatches {
    /// Calls `visit` with each record at or past the fetch offset, in
    /// order, skipping control batches, and returns how many it saw.
    /// Uncompressed batches are read where they lie, after a CRC check;
    /// compressed ones go through the decoder. A record that does not fit
    /// its batch or its declared length is an error, not a panic.
    pub fn for_each_record(&self, mut visit: impl FnMut(RecordView<'_>)) -> Result<usize, String> {
        let mut rest = self.bytes.clone();
        let mut seen = 0;
        while let Some(batch) = next_batch(&mut rest)? {
            if batch.control || batch.record_count == 0 {
                continue;
            }
            if batch.compressed {
                let base_offset = batch.base_offset;
                let mut one = batch.bytes;
                let set = RecordBatchDecoder::decode(&mut one)
                    .map_err(|e| format!("batch at offset {base_offset}: {e}"))?;
                for r in set.records.iter().filter(|r| r.offset >= self.fetch_offset) {
                    seen += 1;
                    visit(RecordView {
                        partition: self.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                    });
                }
                continue;
            }
            seen += walk_plain_batch(&batch, self.partition, self.fetch_offset, &mut visit)?;
        }
        Ok(seen)
    }
}

/// Byte offsets in a RecordBatch v2.
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const RECORDS_AT: usize = 61;

fn walk_plain_batch(
    batch: &CheckedBatch,
    partition: i32,
    fetch_offset: i64,
    visit: &mut impl FnMut(RecordView<'_>),
) -> Result<usize, String> {
    let bytes = &batch.bytes[..];
    let at = batch.base_offset;
    let crc = u32::from_be_bytes(array_at(&batch.bytes, CRC_AT));
    if crc32c::crc32c(&bytes[ATTRIBUTES_AT..]) != crc {
        return Err(format!("batch at offset {at}: CRC mismatch"));
    }
    let attributes = i16::from_be_bytes(array_at(&batch.bytes, ATTRIBUTES_AT));
    let log_append_time = attributes & 0x8 != 0;
    let base_timestamp = i64::from_be_bytes(array_at(&batch.bytes, BASE_TIMESTAMP_AT));
    let max_timestamp = i64::from_be_bytes(array_at(&batch.bytes, MAX_TIMESTAMP_AT));
    let mut reader = &bytes[RECORDS_AT..];
    let mut seen = 0;
    let bad = |what: &str| format!("batch at offset {at}: {what}");
    for _ in 0..batch.record_count {
        let length = read_varint(&mut reader).ok_or_else(|| bad("record length"))?;
        let length = usize::try_from(length)
            .ok()
            .filter(|l| *l <= reader.len())
            .ok_or_else(|| bad("record longer than its batch"))?;
        let (mut record, after) = reader.split_at(length);
        reader = after;
        let _attributes = take(&mut record, 1).ok_or_else(|| bad("record attributes"))?;
        let timestamp_delta = read_varlong(&mut record).ok_or_else(|| bad("timestamp delta"))?;
        let offset_delta = read_varint(&mut record).ok_or_else(|| bad("offset delta"))?;
        let key = read_bytes(&mut record).ok_or_else(|| bad("record key"))?;
        let value = read_bytes(&mut record).ok_or_else(|| bad("record value"))?;
        let offset = at.saturating_add(i64::from(offset_delta));
        if offset < fetch_offset {
            continue;
        }
        seen += 1;
        visit(RecordView {
            partition,
            offset,
            timestamp: if log_append_time {
                max_timestamp
            } else {
                base_timestamp.wrapping_add(timestamp_delta)
            },
            key,
            value,
        });
    }
    Ok(seen)
}

fn take<'a>(reader: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if reader.len() < n {
        return None;
    }
    let (head, tail) = reader.split_at(n);
    *reader = tail;
    Some(head)
}

/// A length-prefixed byte string: `Some(None)` for length -1 (null).
fn read_bytes<'a>(reader: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    match read_varint(reader)? {
        -1 => Some(None),
        n => take(reader, usize::try_from(n).ok()?).map(Some),
    }
}

fn read_unsigned_varint(reader: &mut &[u8], max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let (&byte, rest) = reader.split_first()?;
        *reader = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn read_varint(reader: &mut &[u8]) -> Option<i32> {
    let v = u32::try_from(read_unsigned_varint(reader, 5)?).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

fn read_varlong(reader: &mut &[u8]) -> Option<i64> {
    let v = read_unsigned_varint(reader, 10)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn array_at<const N: usize>(bytes: &Bytes, at: usize) -> [u8; N] {
    let mut out = [0; N];
    let mut slice = &bytes[at..at + N];
    slice.copy_to_slice(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::producer::{encode_records, to_records, ProducerRecord};
    use bytes::{BufMut, BytesMut};

    fn sample(n: usize) -> Vec<ProducerRecord> {
        (0..n)
            .map(|i| ProducerRecord {
                topic: "orders".into(),
                partition: None,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 5 != 4).then(|| Bytes::from(format!("value {i} ").repeat(i + 1))),
                headers: vec![
                    ("trace".into(), Some(Bytes::from(format!("t{i}")))),
                    ("empty".into(), None),
                ],
                timestamp: Some(1_700_000_000_000 + i as i64),
            })
            .collect()
    }

    /// The broker stores the batch as produced with its base offset set.
    fn at_base_offset(batch: Bytes, base_offset: i64) -> Bytes {
        let mut out = BytesMut::from(&batch[..]);
        out[..8].copy_from_slice(&base_offset.to_be_bytes());
        out.freeze()
    }

    #[test]
    fn every_codec_round_trips_keys_values_headers_and_timestamps() {
        let records = sample(20);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let encoded = encode_records(&to_records(&records, 0), codec).unwrap();
            assert_eq!(encoded[22] & 0x7, codec as u8, "{codec:?} attribute");
            let decoded = decode_batches(at_base_offset(encoded, 100), 3, 100).unwrap();
            assert_eq!(decoded.next_offset, Some(120), "{codec:?}");
            assert_eq!(decoded.records.len(), records.len(), "{codec:?}");
            for (i, (sent, got)) in records.iter().zip(&decoded.records).enumerate() {
                assert_eq!(got.offset, 100 + i as i64);
                assert_eq!(got.partition, 3);
                assert_eq!(got.key, sent.key, "{codec:?} key {i}");
                assert_eq!(got.value, sent.value, "{codec:?} value {i}");
                assert_eq!(got.headers, sent.headers, "{codec:?} headers {i}");
                assert_eq!(Some(got.timestamp), sent.timestamp);
            }
        }
    }

    /// Offset, timestamp, key and value of a record.
    type Seen = (i64, i64, Option<Bytes>, Option<Bytes>);

    fn views(fetched: &FetchedBatches) -> Result<Vec<Seen>, String> {
        let mut out = Vec::new();
        let seen = fetched.for_each_record(|r| {
            out.push((
                r.offset,
                r.timestamp,
                r.key.map(Bytes::copy_from_slice),
                r.value.map(Bytes::copy_from_slice),
            ))
        })?;
        assert_eq!(seen, out.len());
        Ok(out)
    }

    #[test]
    fn records_walked_in_place_match_the_decoder_for_every_codec() {
        let records = sample(20);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut joined = BytesMut::new();
            let first = encode_records(&to_records(&records, 0), codec).unwrap();
            joined.put_slice(&at_base_offset(first, 100));
            let second = encode_records(&to_records(&records[..5], 0), codec).unwrap();
            joined.put_slice(&at_base_offset(second, 120));
            let bytes = joined.freeze();
            for fetch_offset in [100, 113, 121] {
                let decoded = decode_batches(bytes.clone(), 3, fetch_offset).unwrap();
                let (whole, next) = whole_batches(bytes.clone()).unwrap();
                assert_eq!(next, Some(125), "{codec:?}");
                let fetched = FetchedBatches {
                    partition: 3,
                    fetch_offset,
                    bytes: whole,
                };
                let expected: Vec<_> = decoded
                    .records
                    .into_iter()
                    .map(|r| (r.offset, r.timestamp, r.key, r.value))
                    .collect();
                assert_eq!(
                    views(&fetched).unwrap(),
                    expected,
                    "{codec:?} from {fetch_offset}"
                );
            }
        }
    }

    #[test]
    fn whole_batches_stop_before_a_cut_short_one() {
        let first = at_base_offset(
            encode_records(&to_records(&sample(3), 0), Compression::None).unwrap(),
            0,
        );
        let mut joined = BytesMut::new();
        joined.put_slice(&first);
        joined.put_slice(&first[..first.len() - 5]);
        let (whole, next) = whole_batches(joined.freeze()).unwrap();
        assert_eq!(whole, first);
        assert_eq!(next, Some(3));
        let (whole, next) = whole_batches(first.slice(..10)).unwrap();
        assert!(whole.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn walking_a_corrupt_or_lying_batch_is_an_error() {
        let batch = at_base_offset(
            encode_records(&to_records(&sample(4), 0), Compression::None).unwrap(),
            0,
        );
        let fetched = |bytes: Bytes| FetchedBatches {
            partition: 0,
            fetch_offset: 0,
            bytes,
        };
        let mut corrupt = BytesMut::from(&batch[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let e = views(&fetched(corrupt.freeze())).unwrap_err();
        assert!(e.contains("CRC"), "{e}");
        // A record length past the batch's end, with a CRC that matches.
        let mut lying = BytesMut::from(&batch[..]);
        lying[RECORDS_AT] = 0xfe; // zigzag varint 127 ...
        lying[RECORDS_AT + 1] = 0x7f; // ... continued: 8191 bytes
        let crc = crc32c::crc32c(&lying[ATTRIBUTES_AT..]);
        lying[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let e = views(&fetched(lying.freeze())).unwrap_err();
        assert!(e.contains("longer than its batch"), "{e}");
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let encoded = encode_records(&to_records(&sample(10), 0), Compression::Lz4).unwrap();
        let decoded = decode_batches(at_base_offset(encoded, 50), 0, 57).unwrap();
        let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![57, 58, 59]);
        assert_eq!(decoded.next_offset, Some(60));
    }

    #[test]
    fn a_cut_short_last_batch_ends_the_walk() {
        let first = at_base_offset(
            encode_records(&to_records(&sample(3), 0), Compression::None).unwrap(),
            0,
        );
        let second = at_base_offset(
            encode_records(&to_records(&sample(4), 0), Compression::Gzip).unwrap(),
            3,
        );
        let mut joined = BytesMut::new();
        joined.put_slice(&first);
        joined.put_slice(&second[..second.len() - 5]);
        let decoded = decode_batches(joined.freeze(), 0, 0).unwrap();
        assert_eq!(decoded.records.len(), 3);
        assert_eq!(decoded.next_offset, Some(3));
        // Not even a whole header: nothing, and no position change.
        let decoded = decode_batches(first.slice(..10), 0, 0).unwrap();
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, None);
    }

    #[test]
    fn impossible_sizes_are_refused_before_decoding() {
        let batch = at_base_offset(
            encode_records(&to_records(&sample(2), 0), Compression::None).unwrap(),
            0,
        );
        // A record count the batch's bytes cannot hold.
        let mut huge = BytesMut::from(&batch[..]);
        huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let e = decode_batches(huge.freeze(), 0, 0).unwrap_err();
        assert!(e.contains("declares 2147483647 records"), "{e}");
        // A negative and a too-small batch length.
        for length in [-1i32, 10] {
            let mut bad = BytesMut::from(&batch[..]);
            bad[8..12].copy_from_slice(&length.to_be_bytes());
            let e = decode_batches(bad.freeze(), 0, 0).unwrap_err();
            assert!(e.contains("batch length"), "{e}");
        }
        // A flipped byte fails the CRC.
        let mut corrupt = BytesMut::from(&batch[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(decode_batches(corrupt.freeze(), 0, 0).is_err());
    }
}
