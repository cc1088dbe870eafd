//! CreateTopics: turns the request into the active controller's terms
//! (defaults for -1 filled in from this broker's config, as Kafka's
//! KIP-464 does), lets the controller judge and write it, then waits for
//! this node's image to hold the new topics so that the client's next
//! Metadata request here sees them.
//!
//! Also home of what every topic-admin handler shares: how controller
//! outcomes become Kafka error codes, and the bounded wait for the local
//! image.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestShape};
use crate::config::Config;
use crate::controller::topic_control::{
    self, NewTopic, ReplicaAssignment, TopicError, TopicErrorKind,
};
use crate::controller::ControllerError;
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::topic_config;

impl RequestShape for CreateTopicsRequest {
    /// `topics: [name, num_partitions, replication_factor,
    /// assignments: [partition_index, broker_ids: [int32]], configs: [name, value]]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Str,
            Field::Fixed(4),
            Field::Fixed(2),
            Field::Array(&[Field::Fixed(4), Field::ValueArray(&[Field::Fixed(4)])]),
            Field::Array(&[Field::Str, Field::Str]),
        ])]
    }
}

/// How long an admin handler waits for this node's image to show a change
/// the controller committed. Followers apply within a heartbeat or two.
pub(crate) const LOCAL_IMAGE_WAIT: Duration = Duration::from_secs(5);

/// The Kafka error for a topic the controller refused.
pub(crate) fn topic_error_code(kind: TopicErrorKind) -> ResponseError {
    match kind {
        TopicErrorKind::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        TopicErrorKind::InvalidTopic => ResponseError::InvalidTopicException,
        TopicErrorKind::InvalidPartitions => ResponseError::InvalidPartitions,
        TopicErrorKind::InvalidReplicationFactor => ResponseError::InvalidReplicationFactor,
        TopicErrorKind::InvalidReplicaAssignment => ResponseError::InvalidReplicaAssignment,
        TopicErrorKind::InvalidConfig => ResponseError::InvalidConfig,
        TopicErrorKind::InvalidRequest => ResponseError::InvalidRequest,
        TopicErrorKind::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        TopicErrorKind::UnknownTopicId => ResponseError::UnknownTopicId,
    }
}

/// The Kafka error for a request the controller could not serve at all.
/// Admin clients retry NOT_CONTROLLER (refreshing metadata first), which
/// is what a missing or moving quorum leader calls for.
pub(crate) fn admin_error_code(error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::NoLeader
        | ControllerError::NotController
        | ControllerError::Unavailable(_) => ResponseError::NotController,
        ControllerError::Timeout => ResponseError::RequestTimedOut,
        ControllerError::StaleBrokerEpoch(_) | ControllerError::Internal(_) => {
            ResponseError::UnknownServerError
        }
        // Partition-change refusals; admin requests never get them.
        other => super::controller_error_code(other),
    }
}

/// Error code and message of one topic's outcome.
pub(crate) fn outcome(result: &Result<(), TopicError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (topic_error_code(e.kind).code(), Some(e.message.clone())),
    }
}

/// The controller's failure as (code, message).
pub(crate) fn failure(error: &ControllerError) -> (i16, Option<String>) {
    (admin_error_code(error).code(), Some(error.to_string()))
}

/// A CreateTopics topic with -1 replaced by this broker's defaults.
pub fn new_topic(
    config: &Config,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> NewTopic {
    let manual = !topic.assignments.is_empty();
    let default = |asked: i32, default: i32| {
        if asked == -1 && !manual {
            default
        } else {
            asked
        }
    };
    NewTopic {
        name: topic.name.0.to_string(),
        num_partitions: default(topic.num_partitions, config.num_partitions),
        replication_factor: default(
            i32::from(topic.replication_factor),
            i32::from(config.default_replication_factor),
        ) as i16,
        assignments: topic
            .assignments
            .iter()
            .map(|a| ReplicaAssignment {
                partition_index: a.partition_index,
                broker_ids: a.broker_ids.iter().map(|b| b.0).collect(),
            })
            .collect(),
        configs: topic
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect(),
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let topics: Vec<NewTopic> = request
        .topics
        .iter()
        .map(|t| new_topic(&ctx.config, t))
        .collect();
    let asked = topic_control::CreateTopicsRequest {
        topics: topics.clone(),
        validate_only: request.validate_only,
    };
    let results = match ctx.controller.create_topics(asked).await {
        Ok(reply) => {
            if !request.validate_only {
                ctx.controller
                    .wait_for_offset(reply.metadata_offset, LOCAL_IMAGE_WAIT)
                    .await;
            }
            topics
                .iter()
                .zip(reply.topics)
                .map(|(asked, created)| {
                    let (code, message) = outcome(&created.result);
                    let mut result = CreatableTopicResult::default()
                        .with_name(TopicName(str_bytes(&created.name)))
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(str_bytes))
                        .with_num_partitions(created.num_partitions)
                        .with_replication_factor(created.replication_factor);
                    if !request.validate_only {
                        result = result.with_topic_id(created.topic_id);
                    }
                    if created.result.is_ok() && version >= 5 {
                        result = result.with_configs(Some(configs_of(&ctx.config, asked)));
                    }
                    result
                })
                .collect()
        }
        Err(e) => {
            let (code, message) = failure(&e);
            topics
                .iter()
                .map(|t| {
                    CreatableTopicResult::default()
                        .with_name(TopicName(str_bytes(&t.name)))
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(str_bytes))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect()
        }
    };
    CreateTopicsResponse::default().with_topics(results)
}

/// The new topic's configs as CreateTopics v5+ reports them (KIP-525).
fn configs_of(config: &Config, topic: &NewTopic) -> Vec<CreatableTopicConfigs> {
    let overrides: BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_ref()?.trim().to_string())))
        .collect();
    topic_config::describe(config, Some(&overrides))
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(c.name))
                .with_value(Some(str_bytes(&c.value)))
                .with_read_only(false)
                .with_config_source(c.source.kafka_id())
                .with_is_sensitive(false)
        })
        .collect()
}

/// A request for tests and the admin client.
#[cfg(test)]
pub fn request() -> CreateTopicsRequest {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::BrokerId;
    CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(str_bytes("t")))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)])])
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(str_bytes("retention.ms"))
            .with_value(Some(str_bytes("1")))])])
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;

    use super::*;

    #[test]
    fn minus_one_takes_the_broker_defaults_unless_assigned() {
        let config =
            Config::from_properties("num.partitions=6\ndefault.replication.factor=1\n", &[])
                .unwrap()
                .0;
        let topic = CreatableTopic::default()
            .with_name(TopicName(str_bytes("t")))
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let t = new_topic(&config, &topic);
        assert_eq!((t.num_partitions, t.replication_factor), (6, 1));
        let t = new_topic(&config, &request().topics[0]);
        assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        assert_eq!(t.assignments[0].broker_ids, [1]);
        assert_eq!(
            t.configs,
            [("retention.ms".to_string(), Some("1".to_string()))]
        );
    }

    #[test]
    fn controller_failures_are_retriable() {
        assert!(admin_error_code(&ControllerError::NoLeader).is_retriable());
        assert_eq!(
            topic_error_code(TopicErrorKind::InvalidTopic),
            ResponseError::InvalidTopicException
        );
    }
}
