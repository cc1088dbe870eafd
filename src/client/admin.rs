//! Topic administration on [`KafkaClient`]: the calls `fjord topic` and the
//! tests make (Kafka's `Admin` for topics and topic configs). Each call is
//! about one topic, and a refusal is a [`ClientError::Broker`] carrying the
//! Kafka error and the broker's message, so callers print one line.

use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use uuid::Uuid;

use super::{check, ClientError, KafkaClient};
use crate::controller::topic_control::AlterConfigOp;
use crate::topic_config::ConfigSource;

/// Kafka's `ConfigResource.Type` for a topic.
const RESOURCE_TOPIC: i8 = 2;

/// A topic to create; -1 partitions or replication factor takes the broker's default.
#[derive(Debug, Clone)]
pub struct NewTopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// One config of a topic as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's name for where the value comes from (`DEFAULT_CONFIG`, ...).
    pub source: String,
    pub read_only: bool,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl KafkaClient {
    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// The request timeout this client uses.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Creates one topic (or only validates it). The answer carries the
    /// topic id and, from CreateTopics v5, the partitions, replication
    /// factor and configs it got.
    pub async fn create_topic(
        &mut self,
        spec: &NewTopicSpec,
        validate_only: bool,
    ) -> Result<CreatableTopicResult, ClientError> {
        let topic = CreatableTopic::default()
            .with_name(name(&spec.name))
            .with_num_partitions(spec.num_partitions)
            .with_replication_factor(spec.replication_factor)
            .with_configs(
                spec.configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response = self.request(request).await?;
        let result = response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("CreateTopics answered no topic".into()))?;
        check(
            "CreateTopics",
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(result)
    }

    /// Deletes a topic by name; returns its id (v6 brokers report it).
    pub async fn delete_topic(&mut self, topic: &str) -> Result<Uuid, ClientError> {
        let version = self.negotiated_version::<DeleteTopicsRequest>()?;
        let request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        let request = if version >= 6 {
            request.with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(topic)))
            ])
        } else {
            request.with_topic_names(vec![name(topic)])
        };
        let response = self.send(request, version).await?;
        let result = response
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("DeleteTopics answered no topic".into()))?;
        check(
            "DeleteTopics",
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(result.topic_id)
    }

    /// Deletes a topic by id (DeleteTopics v6, KIP-516); returns its name.
    pub async fn delete_topic_by_id(&mut self, topic_id: Uuid) -> Result<String, ClientError> {
        let version = self.negotiated_version::<DeleteTopicsRequest>()?;
        if version < 6 {
            return Err(ClientError::Protocol(format!(
                "{} cannot delete topics by id (DeleteTopics v{version})",
                self.broker()
            )));
        }
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(topic_id)]);
        let response = self.send(request, version).await?;
        let result = response
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("DeleteTopics answered no topic".into()))?;
        check(
            "DeleteTopics",
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(result.name.map(|n| n.0.to_string()).unwrap_or_default())
    }

    /// Grows a topic to `count` partitions, placed by the controller.
    pub async fn create_partitions(
        &mut self,
        topic: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response = self.request(request).await?;
        let result =
            response.results.into_iter().next().ok_or_else(|| {
                ClientError::Protocol("CreatePartitions answered no topic".into())
            })?;
        check(
            "CreatePartitions",
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// Every config of a topic with its value and source.
    pub async fn describe_topic_configs(
        &mut self,
        topic: &str,
    ) -> Result<Vec<TopicConfigEntry>, ClientError> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configuration_keys(None),
        ]);
        let response = self.request(request).await?;
        let result =
            response.results.into_iter().next().ok_or_else(|| {
                ClientError::Protocol("DescribeConfigs answered no resource".into())
            })?;
        check(
            "DescribeConfigs",
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(result
            .configs
            .into_iter()
            .map(|c| TopicConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: ConfigSource::from_kafka_id(c.config_source).map_or_else(
                    || format!("UNKNOWN({})", c.config_source),
                    |s| s.name().to_string(),
                ),
                read_only: c.read_only,
            })
            .collect())
    }

    /// Applies config changes to a topic (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &mut self,
        topic: &str,
        changes: &[(String, AlterConfigOp, Option<String>)],
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let configs = changes
            .iter()
            .map(|(key, op, value)| {
                AlterableConfig::default()
                    .with_name(str_bytes(key))
                    .with_config_operation(match op {
                        AlterConfigOp::Set => 0,
                        AlterConfigOp::Delete => 1,
                        AlterConfigOp::Append => 2,
                        AlterConfigOp::Subtract => 3,
                    })
                    .with_value(value.as_deref().map(str_bytes))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configs(configs)])
            .with_validate_only(validate_only);
        let response = self.request(request).await?;
        let result = response.responses.into_iter().next().ok_or_else(|| {
            ClientError::Protocol("IncrementalAlterConfigs answered no resource".into())
        })?;
        check(
            "IncrementalAlterConfigs",
            result.error_code,
            result.error_message.as_ref(),
        )
    }
}
