//! Produce: validate each partition's record batches and append them to
//! the partitions this broker leads. Partitions fail independently, each
//! with its own Kafka error; a bad batch never closes the connection.
//! With `acks=0` Kafka sends no response at all.

use bytes::Bytes;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{partition_error_code, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::metadata::image::TopicImage;
use crate::replication::PartitionError;

impl RequestShape for ProduceRequest {
    /// `transactional_id, acks, timeout_ms, topic_data: [name | topic_id (v13+),
    /// partition_data: [index, records]]`.
    fn shape(version: i16) -> Shape {
        const PARTITIONS: Field = Field::Array(&[Field::Fixed(4), Field::Bytes]);
        if version >= 13 {
            &[
                Field::Str,
                Field::Fixed(2),
                Field::Fixed(4),
                Field::Array(&[Field::Fixed(16), PARTITIONS]),
            ]
        } else {
            &[
                Field::Str,
                Field::Fixed(2),
                Field::Fixed(4),
                Field::Array(&[Field::Str, PARTITIONS]),
            ]
        }
    }
}

/// The response, or `None` for `acks=0`.
pub fn handle(
    ctx: &BrokerContext,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let image = ctx.image.borrow().clone();
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let found = if version >= 13 {
            image.topics.by_id.get(&topic.topic_id)
        } else {
            image.topics.get(topic.name.as_str())
        };
        let partition_responses = topic
            .partition_data
            .into_iter()
            .map(|p| produce_partition(ctx, found, acks, p))
            .collect();
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn produce_partition(
    ctx: &BrokerContext,
    topic: Option<&TopicImage>,
    acks: i16,
    data: PartitionProduceData,
) -> PartitionProduceResponse {
    let index = data.index;
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    let fail = |code: ResponseError, message: String| {
        metrics::counter!("fjord_produce_partition_errors_total", "error" => format!("{code:?}"))
            .increment(1);
        response
            .clone()
            .with_error_code(code.code())
            .with_error_message(Some(message.into()))
    };
    let Some(topic) = topic else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            "this topic does not exist".into(),
        );
    };
    let Some(registration) = topic.partitions.get(&index) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("{} has no partition {index}", topic.name),
        );
    };
    let leader = || {
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(registration.leader))
            .with_leader_epoch(registration.leader_epoch)
    };
    let Some(records) = data.records.filter(|r| !r.is_empty()) else {
        return fail(ResponseError::InvalidRecord, "no records".into());
    };
    if acks == -1 {
        let min_isr = ctx
            .replicas
            .partition(topic.topic_id, index)
            .map_or(1, |p| p.log.config().min_insync_replicas);
        if (registration.isr.len() as i32) < min_isr {
            return fail(
                ResponseError::NotEnoughReplicas,
                format!(
                    "{} in-sync replicas, min.insync.replicas is {min_isr}",
                    registration.isr.len()
                ),
            );
        }
    }
    match ctx
        .replicas
        .append_records(topic.topic_id, index, to_vec(records))
    {
        Ok(info) => response
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(info.log_append_time)
            .with_log_start_offset(info.log_start_offset),
        Err(e) => {
            let code = partition_error_code(&e);
            let mut failed = fail(code, e.to_string());
            if matches!(e, PartitionError::NotLeader { .. }) {
                failed = failed.with_current_leader(leader());
            }
            failed
        }
    }
}

/// The batches are rewritten in place (offsets, epoch), so they need their own buffer.
fn to_vec(records: Bytes) -> Vec<u8> {
    records.to_vec()
}
