//! OffsetForLeaderEpoch (KIP-101/279): where a leader epoch ended in the
//! leader's log, from its leader-epoch cache. Consumers (librdkafka among
//! them) ask it after a leader change to check that the offset they hold
//! was not truncated away; fjord's own followers get the same answer in
//! Fetch's diverging epoch instead.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::{partition_error_code, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for OffsetForLeaderEpochRequest {
    /// `replica_id (v3+), topics: [topic, partitions: [partition,
    /// current_leader_epoch, leader_epoch]]`.
    fn shape(version: i16) -> Shape {
        const TOPICS: Field = Field::Array(&[
            Field::Str,
            Field::Array(&[Field::Fixed(4), Field::Fixed(4), Field::Fixed(4)]),
        ]);
        if version >= 3 {
            &[Field::Fixed(4), TOPICS]
        } else {
            &[TOPICS]
        }
    }
}

pub fn handle(
    ctx: &BrokerContext,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let image = ctx.image.borrow().clone();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let topic_id = image.topics.get(topic.topic.as_str()).map(|t| t.topic_id);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    let Some(topic_id) = topic_id else {
                        return failed(answer, ResponseError::UnknownTopicOrPartition);
                    };
                    match ctx.replicas.leader_partition(
                        topic_id,
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(partition) => {
                            let (epoch, end_offset) =
                                partition.log.end_offset_for_epoch(p.leader_epoch);
                            answer.with_leader_epoch(epoch).with_end_offset(end_offset)
                        }
                        Err(e) => failed(answer, partition_error_code(&e)),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn failed(answer: EpochEndOffset, code: ResponseError) -> EpochEndOffset {
    answer
        .with_error_code(code.code())
        .with_leader_epoch(-1)
        .with_end_offset(-1)
}
