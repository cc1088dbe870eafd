//! OffsetDelete v0: deletes committed offsets of an empty group, or of
//! topics the group's members do not subscribe to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::RequestShape;
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for OffsetDeleteRequest {
    /// `group_id, topics: [name, partitions: [partition_index]]`.
    fn shape(_version: i16) -> Shape {
        use Field::{Array, Fixed, Str};
        &[Str, Array(&[Str, Array(&[Fixed(4)])])]
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let error = ctx.group.check_coordinator(&group_id);
    if error != 0 {
        return OffsetDeleteResponse::default().with_error_code(error);
    }
    let image = ctx.image.borrow().clone();
    let known_group =
        image.offsets.groups.contains_key(&group_id) || ctx.group.describe(&group_id).is_some();
    if !known_group {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    let subscribed = ctx.group.subscribed_topics(&group_id).unwrap_or_default();
    let mut to_delete = Vec::new();
    let mut answers = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let is_subscribed = subscribed.contains(&name);
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            if is_subscribed {
                partitions.push((
                    p.partition_index,
                    Some(ResponseError::GroupSubscribedToTopic.code()),
                ));
            } else {
                to_delete.push((name.clone(), p.partition_index));
                partitions.push((p.partition_index, None));
            }
        }
        answers.push((topic.name.clone(), partitions));
    }
    let written = ctx.group.delete_offsets(&group_id, &to_delete).await;
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            OffsetDeleteResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, e)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(e.unwrap_or(written))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
pub fn request() -> OffsetDeleteRequest {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};
    OffsetDeleteRequest::default()
        .with_group_id(GroupId(super::str_bytes("g")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(super::str_bytes("t")))
            .with_partitions(vec![OffsetDeleteRequestPartition::default(); 2])])
}
