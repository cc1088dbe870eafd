//! Fetch: stored batch bytes straight from the segment files, without
//! re-encoding, below each partition's high watermark.
//!
//! Long poll: when less than `min_bytes` is ready the request waits, up to
//! `max_wait_ms`, for any of its partitions' high watermarks to move, and
//! reads again. Limits follow KIP-74: `max_bytes` for the response and
//! `partition_max_bytes` per partition, except that the first batch of the
//! first non-empty partition is returned whole so a consumer never stalls
//! on a batch larger than its limits.
//!
//! Fetch sessions (KIP-227): fjord creates none. Answering a request with
//! session id 0 tells the client its session was not created, and Kafka's
//! clients then keep sending full fetches, which this handler serves.

use std::pin::Pin;
use std::time::Duration;

use futures::future::select_all;
use futures::Future;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{partition_error_code, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::metadata::MetadataImage;
use crate::replication::{FetchOutcome, PartitionError};
use crate::storage::{FileRegion, ReadInfo};

impl RequestShape for FetchRequest {
    /// Fields up to `forgotten_topics_data`, which changed shape often:
    /// `replica_id` (<v15), `max_wait_ms, min_bytes, max_bytes, isolation_level,
    /// session_id, session_epoch` (v7+), `topics: [topic | topic_id (v13+),
    /// partitions: [partition, current_leader_epoch (v9+), fetch_offset,
    /// last_fetched_epoch (v12+), log_start_offset, partition_max_bytes]]`,
    /// `forgotten_topics_data: [topic | topic_id, partitions: [i32]]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Fixed, Str};
        const F4: Field = Fixed(4);
        const F8: Field = Fixed(8);
        const ID: Field = Fixed(16);
        const INTS: Field = Field::ValueArray(&[F4]);
        match version {
            ..=4 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                Array(&[Str, Array(&[F4, F8, F4])]),
            ],
            5..=6 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                Array(&[Str, Array(&[F4, F8, F8, F4])]),
            ],
            7..=8 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                F4,
                F4,
                Array(&[Str, Array(&[F4, F8, F8, F4])]),
                Array(&[Str, INTS]),
            ],
            9..=11 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                F4,
                F4,
                Array(&[Str, Array(&[F4, F4, F8, F8, F4])]),
                Array(&[Str, INTS]),
            ],
            12 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                F4,
                F4,
                Array(&[Str, Array(&[F4, F4, F8, F4, F8, F4])]),
                Array(&[Str, INTS]),
            ],
            13..=14 => &[
                F4,
                F4,
                F4,
                F4,
                Fixed(1),
                F4,
                F4,
                Array(&[ID, Array(&[F4, F4, F8, F4, F8, F4])]),
                Array(&[ID, INTS]),
            ],
            _ => &[
                F4,
                F4,
                F4,
                Fixed(1),
                F4,
                F4,
                Array(&[ID, Array(&[F4, F4, F8, F4, F8, F4])]),
                Array(&[ID, INTS]),
            ],
        }
    }
}

/// Who fetches: consumers see committed records; followers (a replica id)
/// read to the log end, and their fetch offset is their progress.
#[derive(Clone, Copy)]
enum Reader {
    Consumer { read_committed: bool },
    Follower(i32),
}

/// KIP-227's epoch for a request that wants no session.
const FINAL_EPOCH: i32 = -1;

/// The response, and the file regions its record-set placeholders stand
/// for, in order (see `crate::kafka::frame`).
pub async fn handle(
    ctx: &BrokerContext,
    request: FetchRequest,
    version: i16,
) -> (FetchResponse, Vec<FileRegion>) {
    if let Some(code) = session_error(&request) {
        let response = FetchResponse::default()
            .with_error_code(code.code())
            .with_session_id(0);
        return (response, Vec::new());
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        i32::MAX as usize
    };
    let read_committed = request.isolation_level == 1;
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let reader = if replica_id >= 0 {
        Reader::Follower(replica_id)
    } else {
        Reader::Consumer { read_committed }
    };
    let image = ctx.image.borrow().clone();
    // Subscribed before the first read, so an append between the read and
    // the wait is not missed.
    let mut watches = subscribe(ctx, &image, &request.topics, version, reader);
    loop {
        let Read {
            responses,
            bytes,
            errors,
            regions,
        } = read_all(ctx, &image, &request.topics, version, max_bytes, reader);
        let now = Instant::now();
        if bytes >= min_bytes || errors || now >= deadline || watches.is_empty() {
            metrics::counter!("fjord_fetch_bytes_total").increment(bytes as u64);
            let response = FetchResponse::default()
                .with_session_id(0)
                .with_responses(responses);
            return (response, regions);
        }
        wait_for_any(&mut watches, deadline).await;
    }
}

/// The record sets a response carries, for a zero-copy encoding.
pub fn record_sets(response: &FetchResponse) -> Vec<bytes::Bytes> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| !r.is_empty())
        .collect()
}

/// Session handling for a broker that creates no sessions.
fn session_error(request: &FetchRequest) -> Option<ResponseError> {
    match (request.session_id, request.session_epoch) {
        // Sessionless, or asking to create one: served as a full fetch.
        (0, FINAL_EPOCH | 0) => None,
        // An incremental fetch in a session we never created.
        (0, _) => Some(ResponseError::InvalidFetchSessionEpoch),
        (_, _) => Some(ResponseError::FetchSessionIdNotFound),
    }
}

fn topic_of<'a>(
    image: &'a MetadataImage,
    topic: &FetchTopic,
    version: i16,
) -> Option<&'a crate::metadata::image::TopicImage> {
    if version >= 13 {
        image.topics.by_id.get(&topic.topic_id)
    } else {
        image.topics.get(topic.topic.as_str())
    }
}

fn subscribe(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topics: &[FetchTopic],
    version: i16,
    reader: Reader,
) -> Vec<watch::Receiver<i64>> {
    let mut watches = Vec::new();
    for topic in topics {
        let Some(t) = topic_of(image, topic, version) else {
            continue;
        };
        for p in &topic.partitions {
            if let Some(partition) = ctx.replicas.partition(t.topic_id, p.partition) {
                let mut rx = match reader {
                    Reader::Consumer { .. } => partition.log.subscribe(),
                    Reader::Follower(_) => partition.log.subscribe_log_end(),
                };
                rx.borrow_and_update();
                watches.push(rx);
            }
        }
    }
    watches
}

/// Waits until any partition's high watermark moves, or the deadline. A
/// partition deleted meanwhile stops being waited on.
async fn wait_for_any(watches: &mut Vec<watch::Receiver<i64>>, deadline: Instant) {
    let closed = {
        let changes: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = watches
            .iter_mut()
            .map(|rx| Box::pin(rx.changed()) as Pin<Box<dyn Future<Output = _> + Send>>)
            .collect();
        match tokio::time::timeout_at(deadline, select_all(changes)).await {
            Ok((Err(_), index, _)) => Some(index),
            _ => None,
        }
    };
    if let Some(index) = closed {
        watches.swap_remove(index);
    }
}

/// One pass over every requested partition.
struct Read {
    responses: Vec<FetchableTopicResponse>,
    /// Bytes of records the responses carry.
    bytes: usize,
    /// Whether any partition failed (which answers at once).
    errors: bool,
    /// What the responses' placeholders stand for, in order.
    regions: Vec<FileRegion>,
}

fn read_all(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topics: &[FetchTopic],
    version: i16,
    max_bytes: usize,
    reader: Reader,
) -> Read {
    let mut total = 0usize;
    let mut errors = false;
    let mut regions = Vec::new();
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let found = topic_of(image, topic, version);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let data = match found {
                None => {
                    let code = if version >= 13 {
                        ResponseError::UnknownTopicId
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    error_partition(p.partition, code)
                }
                Some(t) => {
                    let room = max_bytes.saturating_sub(total);
                    let (data, records_out) =
                        read_partition(ctx, t.topic_id, p, room, total == 0, reader, &mut regions);
                    let bytes = data.records.as_ref().map_or(0, |r| r.len());
                    total += bytes;
                    if matches!(reader, Reader::Consumer { .. }) && bytes > 0 {
                        count_out(&t.name, bytes, records_out);
                    }
                    if data.error_code != 0 {
                        let leader = t.partitions.get(&p.partition);
                        if let Some(r) = leader {
                            errors = true;
                            partitions.push(
                                data.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(r.leader))
                                        .with_leader_epoch(r.leader_epoch),
                                ),
                            );
                            continue;
                        }
                    }
                    data
                }
            };
            errors |= data.error_code != 0;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    Read {
        responses,
        bytes: total,
        errors,
        regions,
    }
}

/// Per-topic traffic to consumers (followers' fetches are replication,
/// counted by the fetcher).
fn count_out(topic: &str, bytes: usize, records: u64) {
    let labels = [("topic", topic.to_string())];
    metrics::counter!("fjord_topic_bytes_out_total", &labels).increment(bytes as u64);
    metrics::counter!("fjord_topic_records_out_total", &labels).increment(records);
}

/// The partition's data and the records it carries. A consumer's records
/// stay in their file: a placeholder takes their place and their region
/// joins `regions`.
fn read_partition(
    ctx: &BrokerContext,
    topic_id: Uuid,
    p: &FetchPartition,
    room: usize,
    first: bool,
    reader: Reader,
    regions: &mut Vec<FileRegion>,
) -> (PartitionData, u64) {
    let max = room.min(p.partition_max_bytes.max(0) as usize);
    let outcome = match reader {
        Reader::Consumer { .. } => ctx.replicas.read(
            topic_id,
            p.partition,
            p.fetch_offset,
            max,
            p.current_leader_epoch,
            p.last_fetched_epoch,
            first,
        ),
        Reader::Follower(replica_id) => ctx.replicas.follower_fetch(
            topic_id,
            p.partition,
            replica_id,
            p.fetch_offset,
            p.current_leader_epoch,
            p.last_fetched_epoch,
            max,
            first,
        ),
    };
    let read_committed = matches!(
        reader,
        Reader::Consumer {
            read_committed: true
        }
    );
    let outcome = outcome.and_then(|outcome| match outcome {
        FetchOutcome::Records(mut info) => {
            // In memory: a follower's read (not counted as traffic out), or
            // nothing to read. A consumer's read is a region.
            let Some(region) = info.region.take() else {
                return Ok((FetchOutcome::Records(info), 0));
            };
            let records = region.offset_count.max(0) as u64;
            match crate::kafka::frame::placeholder(region.len) {
                Some(placeholder) => {
                    info.records = placeholder;
                    regions.push(region);
                }
                None => {
                    info.records = region.read().map_err(|source| {
                        PartitionError::Log(crate::storage::LogError::Io {
                            path: format!("segment {}", region.segment).into(),
                            source,
                        })
                    })?;
                }
            }
            Ok((FetchOutcome::Records(info), records))
        }
        diverging => Ok((diverging, 0)),
    });
    let data = match outcome {
        Ok((FetchOutcome::Records(info), records)) => {
            let data =
                partition_data(p.partition, &info, read_committed).with_records(Some(info.records));
            return (data, records);
        }
        Ok((
            FetchOutcome::Diverging {
                epoch,
                end_offset,
                info,
            },
            _,
        )) => partition_data(p.partition, &info, read_committed)
            .with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset),
            )
            .with_records(Some(bytes::Bytes::new())),
        Err(e) => {
            let mut data = error_partition(p.partition, partition_error_code(&e));
            if let PartitionError::Log(crate::storage::LogError::OffsetOutOfRange {
                log_start_offset,
                ..
            }) = &e
            {
                if let Some(partition) = ctx.replicas.partition(topic_id, p.partition) {
                    data = data
                        .with_high_watermark(partition.log.high_watermark())
                        .with_log_start_offset(*log_start_offset);
                }
            }
            data
        }
    };
    (data, 0)
}

fn partition_data(partition: i32, info: &ReadInfo, read_committed: bool) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_high_watermark(info.high_watermark)
        // No transactions yet: everything committed is stable.
        .with_last_stable_offset(info.high_watermark)
        .with_log_start_offset(info.log_start_offset)
        .with_aborted_transactions(read_committed.then(Vec::new))
        .with_preferred_read_replica(BrokerId(-1))
}

fn error_partition(partition: i32, code: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        // Kafka sends empty records with an error; librdkafka cannot parse null.
        .with_records(Some(bytes::Bytes::new()))
}
