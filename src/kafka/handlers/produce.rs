//! Produce: validate each partition's record batches and append them to
//! the partitions this broker leads. Partitions fail independently, each
//! with its own Kafka error; a bad batch never closes the connection.
//! With `acks=0` Kafka sends no response at all.

use std::time::Duration;

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
use crate::replication::{PartitionError, ReplicaManager};

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

/// The response, or `None` for `acks=0`. With `acks=all` every partition
/// is appended first, then the answer waits for all of them together.
pub async fn handle(
    ctx: &BrokerContext,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    append(ctx, request, version).answer(&ctx.replicas).await
}

/// A produce request whose partitions are appended (or failed), waiting
/// only for its acknowledgements.
pub struct Appended {
    acks: i16,
    timeout: Duration,
    responses: Vec<TopicProduceResponse>,
    /// `acks=all`: (topic index, partition index, topic id, partition, last offset).
    waits: Vec<(usize, usize, uuid::Uuid, i32, i64)>,
}

/// Appends every partition of `request` now. The connection calls this in
/// request order, so produce requests pipelined on one connection append
/// in the order they were sent even though their answers wait together.
pub fn append(ctx: &BrokerContext, request: ProduceRequest, version: i16) -> Appended {
    let image = ctx.image.borrow().clone();
    let acks = request.acks;
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut waits = Vec::new();
    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let found = if version >= 13 {
            image.topics.by_id.get(&topic.topic_id)
        } else {
            image.topics.get(topic.name.as_str())
        };
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for (i, data) in topic.partition_data.into_iter().enumerate() {
            let index = data.index;
            let (response, appended) = produce_partition(ctx, found, acks, data);
            if let (Some(last_offset), Some(topic), -1) = (appended, found, acks) {
                waits.push((t, i, topic.topic_id, index, last_offset));
            }
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    Appended {
        acks,
        timeout,
        responses,
        waits,
    }
}

impl Appended {
    /// The response once every `acks=all` partition has its ISR (or timed
    /// out); `None` for `acks=0`.
    pub async fn answer(self, replicas: &ReplicaManager) -> Option<ProduceResponse> {
        let Appended {
            acks,
            timeout,
            mut responses,
            waits,
        } = self;
        if acks == 0 {
            return None;
        }
        let results =
            futures::future::join_all(waits.iter().map(|(_, _, topic_id, index, last)| {
                replicas.wait_for_isr(*topic_id, *index, *last, timeout)
            }))
            .await;
        for ((t, i, ..), result) in waits.into_iter().zip(results) {
            if let Err(e) = result {
                let code = partition_error_code(&e);
                metrics::counter!("fjord_produce_partition_errors_total", "error" => format!("{code:?}"))
                    .increment(1);
                let r = &mut responses[t].partition_responses[i];
                r.error_code = code.code();
                r.error_message = Some(e.to_string().into());
                r.base_offset = -1;
            }
        }
        Some(ProduceResponse::default().with_responses(responses))
    }
}

/// The partition's response, and the last offset appended if it was.
fn produce_partition(
    ctx: &BrokerContext,
    topic: Option<&TopicImage>,
    acks: i16,
    data: PartitionProduceData,
) -> (PartitionProduceResponse, Option<i64>) {
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
        return (
            fail(
                ResponseError::UnknownTopicOrPartition,
                "this topic does not exist".into(),
            ),
            None,
        );
    };
    let Some(registration) = topic.partitions.get(&index) else {
        return (
            fail(
                ResponseError::UnknownTopicOrPartition,
                format!("{} has no partition {index}", topic.name),
            ),
            None,
        );
    };
    let leader = || {
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(registration.leader))
            .with_leader_epoch(registration.leader_epoch)
    };
    let Some(records) = data.records.filter(|r| !r.is_empty()) else {
        return (
            fail(ResponseError::InvalidRecord, "no records".into()),
            None,
        );
    };
    match ctx
        .replicas
        .append_records(topic.topic_id, index, records, acks)
    {
        Ok(info) => {
            if !info.duplicate {
                let labels = [("topic", topic.name.clone())];
                metrics::counter!("fjord_topic_bytes_in_total", &labels)
                    .increment(info.bytes as u64);
                metrics::counter!("fjord_topic_records_in_total", &labels)
                    .increment(info.record_count.max(0) as u64);
            }
            (
                response
                    .with_base_offset(info.base_offset)
                    .with_log_append_time_ms(info.log_append_time)
                    .with_log_start_offset(info.log_start_offset),
                Some(info.last_offset),
            )
        }
        Err(e) => {
            let code = partition_error_code(&e);
            let mut failed = fail(code, e.to_string());
            if matches!(e, PartitionError::NotLeader { .. }) {
                failed = failed.with_current_leader(leader());
            }
            (failed, None)
        }
    }
}
