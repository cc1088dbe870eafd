//! OffsetFetch v1-v9 (v8+ asks for several groups): read from this
//! broker's metadata image; -1 where nothing is committed.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{str_bytes, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::metadata::MetadataImage;

impl RequestShape for OffsetFetchRequest {
    /// v1-7 `group_id, topics: [name, partition_indexes: [int32]]`; v8
    /// `groups: [group_id, topics: [...]]`; v9 adds member_id and
    /// member_epoch to each group.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Fixed, FixedArray, Str};
        match version {
            ..=7 => &[Str, Array(&[Str, FixedArray(4)])],
            8 => &[Array(&[Str, Array(&[Str, FixedArray(4)])])],
            _ => &[Array(&[Str, Str, Fixed(4), Array(&[Str, FixedArray(4)])])],
        }
    }
}

/// (offset, leader epoch, metadata) per requested partition; `None` asks
/// for everything the group committed.
type Fetched = Vec<(String, Vec<(i32, i64, i32, Option<String>)>)>;

fn fetch(
    image: &MetadataImage,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Fetched {
    let committed = image.offsets.groups.get(group_id);
    let wanted = wanted.unwrap_or_else(|| {
        committed
            .map(|topics| {
                topics
                    .iter()
                    .map(|(t, ps)| (t.clone(), ps.keys().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    });
    wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let found = committed.and_then(|c| c.get(&topic));
            let partitions = partitions
                .into_iter()
                .map(|p| match found.and_then(|f| f.get(&p)) {
                    Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone()),
                    None => (p, -1, -1, Some(String::new())),
                })
                .collect();
            (topic, partitions)
        })
        .collect()
}

pub fn handle(
    ctx: &BrokerContext,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let image = ctx.image.borrow().clone();
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let group_id = g.group_id.0.to_string();
                let error = ctx.group.check_coordinator(&group_id);
                let response = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
                if error != 0 {
                    return response.with_error_code(error);
                }
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = fetch(&image, &group_id, wanted)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(&topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, offset, epoch, metadata)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(metadata.as_deref().map(str_bytes))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                response.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = request.group_id.0.to_string();
    let error = ctx.group.check_coordinator(&group_id);
    if error != 0 {
        let response = OffsetFetchResponse::default().with_error_code(error);
        if version >= 2 {
            return response;
        }
        // v1 has no top-level error: report it on every partition.
        let topics = request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(-1)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
                    .with_name(t.name)
            })
            .collect();
        return response.with_topics(topics);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = fetch(&image, &group_id, wanted)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, offset, epoch, metadata)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(metadata.as_deref().map(str_bytes))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

#[cfg(test)]
pub fn request(version: i16) -> OffsetFetchRequest {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::GroupId;
    if version >= 8 {
        return OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(str_bytes("t")))
                        .with_partition_indexes(vec![0, 1])
                ]));
            2
        ]);
    }
    OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(str_bytes("t")))
            .with_partition_indexes(vec![0, 1])]))
}
