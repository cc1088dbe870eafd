//! OffsetCommit v2-v9: checked against the group's membership, written as
//! metadata records, answered once the quorum has them.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::RequestShape;
use crate::group::{CommitIdentity, OffsetCommitEntry, OFFSET_METADATA_MAX_BYTES};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for OffsetCommitRequest {
    /// `group_id, generation_id, member_id, group_instance_id (v7+),
    /// retention_time_ms (v2-4), topics: [name, partitions: [index, offset,
    /// leader_epoch (v6+), metadata]]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Fixed, Str};
        match version {
            ..=4 => &[
                Str,
                Fixed(4),
                Str,
                Fixed(8),
                Array(&[Str, Array(&[Fixed(4), Fixed(8), Str])]),
            ],
            5 => &[
                Str,
                Fixed(4),
                Str,
                Array(&[Str, Array(&[Fixed(4), Fixed(8), Str])]),
            ],
            6 => &[
                Str,
                Fixed(4),
                Str,
                Array(&[Str, Array(&[Fixed(4), Fixed(8), Fixed(4), Str])]),
            ],
            _ => &[
                Str,
                Fixed(4),
                Str,
                Str,
                Array(&[Str, Array(&[Fixed(4), Fixed(8), Fixed(4), Str])]),
            ],
        }
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: OffsetCommitRequest,
    _version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let who = CommitIdentity {
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
    };
    let group_error = ctx.group.validate_commit(&group_id, &who);
    let image = ctx.image.borrow().clone();
    // Per partition: an error now, or an entry to write.
    let mut answers: Vec<(usize, i32, Option<i16>)> = Vec::new();
    let mut entries = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.to_string();
        let known = image
            .topics
            .ids_by_name
            .get(&name)
            .and_then(|id| image.topics.by_id.get(id));
        for p in &topic.partitions {
            let error = if group_error != 0 {
                Some(group_error)
            } else if !known.is_some_and(|k| k.partitions.contains_key(&p.partition_index)) {
                Some(ResponseError::UnknownTopicOrPartition.code())
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
            {
                Some(ResponseError::OffsetMetadataTooLarge.code())
            } else {
                entries.push(OffsetCommitEntry {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
                None
            };
            answers.push((t, p.partition_index, error));
        }
    }
    let written = ctx.group.commit(&group_id, entries).await;
    let mut topics: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (t, partition, error) in answers {
        if let Some(topic) = topics.get_mut(t) {
            topic.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(partition)
                    .with_error_code(error.unwrap_or(written)),
            );
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

#[cfg(test)]
pub fn request() -> OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    OffsetCommitRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(super::str_bytes("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(kafka_protocol::messages::TopicName(super::str_bytes("t")))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default()
                    .with_committed_offset(5)
                    .with_committed_metadata(Some(
                        super::str_bytes("m")
                    ));
                2
            ])])
}
