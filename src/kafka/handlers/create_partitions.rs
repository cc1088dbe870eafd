//! CreatePartitions: grows topics. The active controller places the new
//! partitions (or checks the given assignment) and writes them as one
//! entry; existing partitions are never moved.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::create_topics::{failure, outcome, LOCAL_IMAGE_WAIT};
use super::{str_bytes, RequestShape};
use crate::controller::topic_control::{self, PartitionIncrease};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for CreatePartitionsRequest {
    /// `topics: [name, count, assignments: [broker_ids: [int32]] (nullable)]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Str,
            Field::Fixed(4),
            Field::Array(&[Field::ValueArray(&[Field::Fixed(4)])]),
        ])]
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let topics: Vec<PartitionIncrease> = request
        .topics
        .iter()
        .map(|t| PartitionIncrease {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|p| p.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let asked = topic_control::CreatePartitionsRequest {
        topics,
        validate_only: request.validate_only,
    };
    let outcomes: Vec<(i16, Option<String>)> = match ctx.controller.create_partitions(asked).await {
        Ok(reply) => {
            if !request.validate_only {
                ctx.controller
                    .wait_for_offset(reply.metadata_offset, LOCAL_IMAGE_WAIT)
                    .await;
            }
            reply.results.iter().map(|(_, r)| outcome(r)).collect()
        }
        Err(e) => names.iter().map(|_| failure(&e)).collect(),
    };
    let results = names
        .iter()
        .zip(outcomes)
        .map(|(name, (code, message))| {
            CreatePartitionsTopicResult::default()
                .with_name(kafka_protocol::messages::TopicName(str_bytes(name)))
                .with_error_code(code)
                .with_error_message(message.as_deref().map(str_bytes))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

#[cfg(test)]
pub fn request() -> CreatePartitionsRequest {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    CreatePartitionsRequest::default().with_topics(vec![
        CreatePartitionsTopic::default()
            .with_name(TopicName(str_bytes("t")))
            .with_count(3)
            .with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(2)]),
            ])),
        CreatePartitionsTopic::default()
            .with_name(TopicName(str_bytes("u")))
            .with_count(2)
            .with_assignments(None),
    ])
}
