//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734),
//! earliest local (-4, same as earliest: fjord has no tiered storage), and
//! by timestamp through the time index: the first offset whose record
//! timestamp is at or after the one asked for, or -1 when there is none.

use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{partition_error_code, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::replication::PartitionError;

impl RequestShape for ListOffsetsRequest {
    /// `replica_id, isolation_level (v2+), topics: [name, partitions:
    /// [partition_index, current_leader_epoch (v4+), timestamp]]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Fixed, Str};
        match version {
            ..=1 => &[Fixed(4), Array(&[Str, Array(&[Fixed(4), Fixed(8)])])],
            2..=3 => &[
                Fixed(4),
                Fixed(1),
                Array(&[Str, Array(&[Fixed(4), Fixed(8)])]),
            ],
            _ => &[
                Fixed(4),
                Fixed(1),
                Array(&[Str, Array(&[Fixed(4), Fixed(4), Fixed(8)])]),
            ],
        }
    }
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub fn handle(
    ctx: &BrokerContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let image = ctx.image.borrow().clone();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let topic_id = image.topics.get(topic.name.as_str()).map(|t| t.topic_id);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| match topic_id {
                    Some(id) => list_partition(ctx, id, p, version),
                    None => failed(p.partition_index, ResponseError::UnknownTopicOrPartition),
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn list_partition(
    ctx: &BrokerContext,
    topic_id: Uuid,
    p: &ListOffsetsPartition,
    version: i16,
) -> ListOffsetsPartitionResponse {
    match lookup(ctx, topic_id, p) {
        Ok((offset, timestamp, leader_epoch)) => ListOffsetsPartitionResponse::default()
            .with_partition_index(p.partition_index)
            .with_offset(offset)
            .with_timestamp(timestamp)
            // Leader epochs are in the answer from v4 (KIP-320).
            .with_leader_epoch(if version >= 4 { leader_epoch } else { -1 }),
        Err(e) => failed(p.partition_index, partition_error_code(&e)),
    }
}

/// (offset, timestamp, leader epoch) for one partition.
fn lookup(
    ctx: &BrokerContext,
    topic_id: Uuid,
    p: &ListOffsetsPartition,
) -> Result<(i64, i64, i32), PartitionError> {
    let partition =
        ctx.replicas
            .leader_partition(topic_id, p.partition_index, p.current_leader_epoch)?;
    let epoch = partition.state().leader_epoch;
    let log = &partition.log;
    let found = match p.timestamp {
        LATEST => Some((log.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1)),
        MAX_TIMESTAMP => log.max_timestamp_offset()?,
        ts if ts >= 0 => log.offset_for_timestamp(ts)?,
        other => {
            return Err(PartitionError::InvalidRequest(format!(
                "timestamp {other} is not a time nor a known special value"
            )))
        }
    };
    Ok(match found {
        Some((offset, timestamp)) => (offset, timestamp, epoch),
        None => (-1, -1, -1),
    })
}

fn failed(partition: i32, code: ResponseError) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(code.code())
        .with_offset(-1)
        .with_timestamp(-1)
        .with_leader_epoch(-1)
}
