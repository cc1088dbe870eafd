//! DescribeConfigs: a topic's configs with their values and where each
//! comes from (override, broker config file, Kafka default), read from this
//! broker's image and config; and this broker's own topic-related static
//! configs. fjord keeps no dynamic broker configs, so those are read-only.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestShape};
use crate::config::Config;
use crate::kafka::array_guard::{Field, Shape};
use crate::metadata::records::ConfigResourceType;
use crate::metadata::MetadataImage;
use crate::topic_config::{self, ConfigSource, ConfigType};

impl RequestShape for DescribeConfigsRequest {
    /// `resources: [resource_type, resource_name, configuration_keys: [string] (nullable)]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Fixed(1),
            Field::Str,
            Field::ValueArray(&[Field::Str]),
        ])]
    }
}

/// Kafka's `ConfigResource.Type` ids.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One config ready for the wire.
struct Entry {
    name: String,
    value: Option<String>,
    source: ConfigSource,
    read_only: bool,
    config_type: Option<ConfigType>,
    doc: Option<&'static str>,
    synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

pub fn handle(
    config: &Config,
    image: &MetadataImage,
    request: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let described = match resource.resource_type {
                RESOURCE_TOPIC => topic_entries(config, image, &name),
                RESOURCE_BROKER => broker_entries(config, &name),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("fjord describes topic (2) and broker (4) configs, not resource type {other}"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match described {
                Ok(entries) => {
                    let keys = resource.configuration_keys.map(|keys| {
                        keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()
                    });
                    let configs = entries
                        .into_iter()
                        .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                        .map(|e| wire_entry(e, request.include_synonyms, request.include_documentation))
                        .collect();
                    result.with_configs(configs)
                }
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn wire_entry(e: Entry, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
    let synonyms = if synonyms {
        e.synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(&name))
                    .with_value(value.as_deref().map(str_bytes))
                    .with_source(source.kafka_id())
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&e.name))
        .with_value(e.value.as_deref().map(str_bytes))
        .with_read_only(e.read_only)
        .with_config_source(e.source.kafka_id())
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(e.config_type.map_or(0, |t| t.kafka_id()))
        .with_documentation(if documentation {
            e.doc.map(str_bytes)
        } else {
            None
        })
}

fn topic_entries(
    config: &Config,
    image: &MetadataImage,
    topic: &str,
) -> Result<Vec<Entry>, (ResponseError, String)> {
    if image.topics.get(topic).is_none() {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("The topic '{topic}' does not exist."),
        ));
    }
    let overrides = image.configs.get(ConfigResourceType::Topic, topic);
    Ok(topic_config::describe(config, overrides)
        .into_iter()
        .map(|c| Entry {
            name: c.name.to_string(),
            value: Some(c.value),
            source: c.source,
            read_only: false,
            config_type: Some(c.config_type),
            doc: Some(c.doc),
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| (s.name, Some(s.value), s.source))
                .collect(),
        })
        .collect())
}

/// This broker's static configs that shape topics, each with the keys that
/// set it (the first one set wins, as in Kafka).
fn broker_entries(config: &Config, name: &str) -> Result<Vec<Entry>, (ResponseError, String)> {
    if name.is_empty() {
        // The cluster-wide dynamic default: fjord has none.
        return Ok(Vec::new());
    }
    if name.parse::<i32>().ok() != Some(config.node_id) {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "broker {} can only describe its own configs, not broker '{name}'",
                config.node_id
            ),
        ));
    }
    let c = config;
    let entries: Vec<(&str, &[&str], Option<String>, ConfigType)> = vec![
        (
            "num.partitions",
            &["num.partitions"],
            Some(c.num_partitions.to_string()),
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            &["default.replication.factor"],
            Some(c.default_replication_factor.to_string()),
            ConfigType::Int,
        ),
        (
            "min.insync.replicas",
            &["min.insync.replicas"],
            Some(c.min_insync_replicas.to_string()),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            &["auto.create.topics.enable"],
            Some(c.auto_create_topics_enable.to_string()),
            ConfigType::String,
        ),
        (
            "log.segment.bytes",
            &["log.segment.bytes"],
            Some(c.log_segment_bytes.to_string()),
            ConfigType::Int,
        ),
        (
            "log.roll.ms",
            &["log.roll.ms", "log.roll.hours"],
            Some(c.log_roll_ms.to_string()),
            ConfigType::Long,
        ),
        (
            "log.retention.ms",
            &[
                "log.retention.ms",
                "log.retention.minutes",
                "log.retention.hours",
            ],
            Some(c.log_retention_ms.to_string()),
            ConfigType::Long,
        ),
        (
            "log.retention.bytes",
            &["log.retention.bytes"],
            Some(c.log_retention_bytes.to_string()),
            ConfigType::Long,
        ),
        (
            "log.flush.interval.messages",
            &["log.flush.interval.messages"],
            Some(c.log_flush_interval_messages.to_string()),
            ConfigType::Long,
        ),
        (
            "log.flush.interval.ms",
            &["log.flush.interval.ms"],
            c.log_flush_interval_ms.map(|v| v.to_string()),
            ConfigType::Long,
        ),
        (
            "message.max.bytes",
            &["message.max.bytes"],
            Some(c.message_max_bytes.to_string()),
            ConfigType::Int,
        ),
        (
            "log.message.timestamp.type",
            &["log.message.timestamp.type"],
            Some(c.log_message_timestamp_type.clone()),
            ConfigType::String,
        ),
        (
            "socket.request.max.bytes",
            &["socket.request.max.bytes"],
            Some(c.socket_request_max_bytes.to_string()),
            ConfigType::Int,
        ),
    ];
    Ok(entries
        .into_iter()
        .map(|(name, keys, value, config_type)| {
            let set = keys.iter().any(|k| c.explicit_keys.contains(k));
            let source = if set {
                ConfigSource::StaticBrokerConfig
            } else {
                ConfigSource::DefaultConfig
            };
            Entry {
                name: name.to_string(),
                value: value.clone(),
                source,
                read_only: true,
                config_type: Some(config_type),
                doc: None,
                synonyms: vec![(name.to_string(), value, source)],
            }
        })
        .collect())
}

#[cfg(test)]
pub fn request() -> DescribeConfigsRequest {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes("t"))
            .with_configuration_keys(Some(vec![str_bytes("retention.ms")])),
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(str_bytes("1"))
            .with_configuration_keys(None),
    ])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::kafka::handlers::tests::image;

    #[test]
    fn topic_configs_with_sources_and_synonyms() {
        let mut image = image();
        Arc::make_mut(&mut image.configs).resources.insert(
            ConfigResourceType::Topic,
            BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            )]),
        );
        let config = Config::from_properties("log.segment.bytes=4096\n", &[])
            .unwrap()
            .0;
        let mut req = request();
        req.resources[0].resource_name = str_bytes("orders");
        req.resources[0].configuration_keys = None;
        req.include_synonyms = true;
        let response = handle(&config, &image, req, 4);
        let topic = &response.results[0];
        assert_eq!(topic.error_code, 0);
        let get = |name: &str| {
            topic
                .configs
                .iter()
                .find(|c| c.name.as_str() == name)
                .unwrap()
        };
        let retention = get("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(
            retention.config_source,
            ConfigSource::DynamicTopicConfig.kafka_id()
        );
        assert_eq!(retention.synonyms.len(), 2);
        assert_eq!(
            get("segment.bytes").config_source,
            ConfigSource::StaticBrokerConfig.kafka_id()
        );
        assert_eq!(
            get("cleanup.policy").config_source,
            ConfigSource::DefaultConfig.kafka_id()
        );
        // Broker 1 is the node describing itself.
        let broker = &response.results[1];
        assert_eq!(broker.error_code, 0);
        assert!(broker.configs.iter().all(|c| c.read_only));
    }

    #[test]
    fn unknown_topics_and_other_brokers_are_errors() {
        let config = Config::default();
        let mut req = request();
        req.resources[1].resource_name = str_bytes("7");
        let response = handle(&config, &image(), req, 1);
        assert_eq!(
            response.results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            response.results[1].error_code,
            ResponseError::InvalidRequest.code()
        );
    }
}
