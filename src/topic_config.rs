//! The topic configs fjord honours, with Kafka's names, types, validation and
//! defaults.
//!
//! A topic's effective setting is its override in the metadata image if it
//! has one, else the broker's `log.*` default. Kafka reports where each value
//! came from (`DescribeConfigs`' config source), and admin tools show it, so
//! the source is worked out here once: `DYNAMIC_TOPIC_CONFIG` for an
//! override, `STATIC_BROKER_CONFIG` when the node's config file or command
//! line set the broker key, `DEFAULT_CONFIG` otherwise. The same table
//! validates overrides on the active controller and resolves the
//! [`LogConfig`] that storage runs with, so the three can never disagree.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::storage::{LogConfig, TimestampType};

/// Kafka's `ConfigDef.Type`, as DescribeConfigs v3+ reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    String,
    Int,
    Long,
    List,
}

impl ConfigType {
    /// The id on the wire (`DescribeConfigsResponse.config_type`).
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::List => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConfigType::String => "STRING",
            ConfigType::Int => "INT",
            ConfigType::Long => "LONG",
            ConfigType::List => "LIST",
        }
    }
}

/// Where a config value comes from (Kafka's `ConfigSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopicConfig,
    StaticBrokerConfig,
    DefaultConfig,
}

impl ConfigSource {
    /// The id on the wire (`DescribeConfigsResponse.config_source`).
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigSource::DynamicTopicConfig => 1,
            ConfigSource::StaticBrokerConfig => 4,
            ConfigSource::DefaultConfig => 5,
        }
    }

    /// Kafka's name, as admin tools print it.
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::DynamicTopicConfig => "DYNAMIC_TOPIC_CONFIG",
            ConfigSource::StaticBrokerConfig => "STATIC_BROKER_CONFIG",
            ConfigSource::DefaultConfig => "DEFAULT_CONFIG",
        }
    }

    /// The source for a Kafka id, if it is one fjord reports.
    pub fn from_kafka_id(id: i8) -> Option<ConfigSource> {
        [
            ConfigSource::DynamicTopicConfig,
            ConfigSource::StaticBrokerConfig,
            ConfigSource::DefaultConfig,
        ]
        .into_iter()
        .find(|s| s.kafka_id() == id)
    }
}

/// A broker key that sets a topic config's default; its value is the
/// topic value divided by `unit` (hours and minutes for the time keys).
struct BrokerKey {
    name: &'static str,
    unit: i64,
}

const fn key(name: &'static str) -> BrokerKey {
    BrokerKey { name, unit: 1 }
}

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;

/// One topic config key.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// The broker keys that set the default, most specific first (Kafka's
    /// synonyms; `log.retention.ms` wins over `.minutes` over `.hours`).
    broker_keys: &'static [BrokerKey],
    /// Kafka's own default, as the broker key that holds it spells it.
    kafka_default: (&'static str, &'static str),
    /// The broker's effective default, in the topic key's unit.
    broker_value: fn(&Config) -> String,
    check: fn(&str) -> Result<(), String>,
}

/// Every topic config fjord honours. Any other key is refused.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        doc: "delete: old segments are removed by retention; compact is accepted but not \
              implemented (such a topic keeps everything)",
        broker_keys: &[key("log.cleanup.policy")],
        kafka_default: ("log.cleanup.policy", "delete"),
        broker_value: |_| "delete".into(),
        check: check_cleanup_policy,
    },
    TopicConfigDef {
        name: "flush.messages",
        config_type: ConfigType::Long,
        doc: "fsync the log after this many records",
        broker_keys: &[key("log.flush.interval.messages")],
        kafka_default: ("log.flush.interval.messages", "9223372036854775807"),
        broker_value: |c| c.log_flush_interval_messages.to_string(),
        check: |v| long_at_least(v, 1),
    },
    TopicConfigDef {
        name: "flush.ms",
        config_type: ConfigType::Long,
        doc: "fsync the log when its oldest unsynced record is this old",
        broker_keys: &[key("log.flush.interval.ms")],
        kafka_default: ("log.flush.scheduler.interval.ms", "9223372036854775807"),
        broker_value: |c| {
            c.log_flush_interval_ms
                .map_or(i64::MAX.to_string(), |ms| ms.to_string())
        },
        check: |v| long_at_least(v, 0),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        doc: "the largest record batch the topic accepts",
        broker_keys: &[key("message.max.bytes")],
        kafka_default: ("message.max.bytes", "1048588"),
        broker_value: |c| c.message_max_bytes.to_string(),
        check: |v| int_at_least(v, 0),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches on append",
        broker_keys: &[key("log.message.timestamp.type")],
        kafka_default: ("log.message.timestamp.type", "CreateTime"),
        broker_value: |c| c.log_message_timestamp_type.clone(),
        check: |v| one_of(v, &["CreateTime", "LogAppendTime"]),
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        doc: "replicas that must have a record before an acks=all produce succeeds",
        broker_keys: &[key("min.insync.replicas")],
        kafka_default: ("min.insync.replicas", "1"),
        broker_value: |c| c.min_insync_replicas.to_string(),
        check: |v| int_at_least(v, 1),
    },
    TopicConfigDef {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        doc: "delete the oldest segments while a partition is larger; -1 keeps all",
        broker_keys: &[key("log.retention.bytes")],
        kafka_default: ("log.retention.bytes", "-1"),
        broker_value: |c| c.log_retention_bytes.to_string(),
        check: |v| long_at_least(v, i64::MIN),
    },
    TopicConfigDef {
        name: "retention.ms",
        config_type: ConfigType::Long,
        doc: "delete segments whose newest record is older; -1 keeps all",
        broker_keys: &[
            key("log.retention.ms"),
            BrokerKey {
                name: "log.retention.minutes",
                unit: MS_PER_MINUTE,
            },
            BrokerKey {
                name: "log.retention.hours",
                unit: MS_PER_HOUR,
            },
        ],
        kafka_default: ("log.retention.hours", "168"),
        broker_value: |c| c.log_retention_ms.to_string(),
        check: |v| long_at_least(v, -1),
    },
    TopicConfigDef {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        doc: "roll to a new segment before one grows past this",
        broker_keys: &[key("log.segment.bytes")],
        kafka_default: ("log.segment.bytes", "1073741824"),
        broker_value: |c| c.log_segment_bytes.to_string(),
        // fjord's floor for `log.segment.bytes` too; Kafka 3.x takes 14,
        // Kafka 4 1 MiB. Small segments keep retention tests quick.
        check: |v| int_at_least(v, 1024),
    },
    TopicConfigDef {
        name: "segment.ms",
        config_type: ConfigType::Long,
        doc: "roll a segment this old even if it is not full",
        broker_keys: &[
            key("log.roll.ms"),
            BrokerKey {
                name: "log.roll.hours",
                unit: MS_PER_HOUR,
            },
        ],
        kafka_default: ("log.roll.hours", "168"),
        broker_value: |c| c.log_roll_ms.to_string(),
        check: |v| long_at_least(v, 1),
    },
];

/// The definition of a topic config key, if fjord honours it.
pub fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A refused topic config, with a message that names the key (Kafka's
/// INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidConfig {
    pub key: String,
    pub message: String,
}

/// Checks one key and value as Kafka's `LogConfig.validate` would.
pub fn validate(name: &str, value: &str) -> Result<(), InvalidConfig> {
    let Some(def) = definition(name) else {
        return Err(InvalidConfig {
            key: name.to_string(),
            message: format!("Unknown topic config name: {name}"),
        });
    };
    (def.check)(value.trim()).map_err(|why| InvalidConfig {
        key: name.to_string(),
        message: format!("Invalid value {value} for configuration {name}: {why}"),
    })
}

/// Kafka's default of a list-typed config, which APPEND and SUBTRACT
/// start from when the topic has no override.
pub fn list_default(name: &str) -> Option<&'static str> {
    definition(name)
        .filter(|d| d.config_type == ConfigType::List)
        .map(|d| d.kafka_default.1)
}

/// Whether `name` is a list-typed config (APPEND and SUBTRACT apply only to those).
pub fn is_list(name: &str) -> bool {
    definition(name).is_some_and(|d| d.config_type == ConfigType::List)
}

/// One config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// Every place that sets it, the one in effect first (Kafka's synonyms).
    pub synonyms: Vec<ConfigSynonym>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

/// Every topic config, in name order, as a topic with `overrides` has it on
/// a broker configured as `broker`.
pub fn describe(broker: &Config, overrides: Option<&BTreeMap<String, String>>) -> Vec<ConfigValue> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| describe_one(def, broker, overrides))
        .collect()
}

fn describe_one(
    def: &'static TopicConfigDef,
    broker: &Config,
    overrides: Option<&BTreeMap<String, String>>,
) -> ConfigValue {
    let mut synonyms = Vec::new();
    if let Some(v) = overrides.and_then(|o| o.get(def.name)) {
        synonyms.push(ConfigSynonym {
            name: def.name.to_string(),
            value: v.clone(),
            source: ConfigSource::DynamicTopicConfig,
        });
    }
    let broker_value = (def.broker_value)(broker);
    // The first broker key that was set is the one in effect (precedence).
    if let Some(k) = def
        .broker_keys
        .iter()
        .find(|k| broker.explicit_keys.contains(k.name))
    {
        synonyms.push(ConfigSynonym {
            name: k.name.to_string(),
            value: in_unit(&broker_value, k.unit),
            source: ConfigSource::StaticBrokerConfig,
        });
    }
    synonyms.push(ConfigSynonym {
        name: def.kafka_default.0.to_string(),
        value: def.kafka_default.1.to_string(),
        source: ConfigSource::DefaultConfig,
    });
    // A static synonym carries the broker key's own unit; the value shown
    // is always in the topic key's.
    let (value, source) = match synonyms.first() {
        Some(s) if s.source == ConfigSource::DynamicTopicConfig => (s.value.clone(), s.source),
        Some(s) => (broker_value, s.source),
        None => (broker_value, ConfigSource::DefaultConfig),
    };
    ConfigValue {
        name: def.name,
        value,
        source,
        config_type: def.config_type,
        doc: def.doc,
        synonyms,
    }
}

/// A broker key's value from the topic value in milliseconds; -1 stays -1.
fn in_unit(value: &str, unit: i64) -> String {
    match value.parse::<i64>() {
        Ok(v) if unit > 1 && v >= 0 => (v / unit).to_string(),
        _ => value.to_string(),
    }
}

/// The settings a partition log of a topic with `overrides` runs with on a
/// broker configured as `broker`. Overrides were validated when they were
/// written; one that does not parse (a log written by another build) falls
/// back to the broker's default.
pub fn log_config(broker: &Config, overrides: Option<&BTreeMap<String, String>>) -> LogConfig {
    let get = |name: &str| -> Option<&str> {
        overrides
            .and_then(|o| o.get(name))
            .map(|v| v.trim())
            .filter(|v| validate(name, v).is_ok())
    };
    let long = |name: &str, default: i64| get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let int = |name: &str, default: i32| get(name).and_then(|v| v.parse().ok()).unwrap_or(default);

    let flush_messages = long("flush.messages", broker.log_flush_interval_messages);
    let flush_ms = match get("flush.ms").and_then(|v| v.parse::<i64>().ok()) {
        Some(ms) => u64::try_from(ms).ok(),
        None => broker
            .log_flush_interval_ms
            .map(|ms| ms as i64)
            .and_then(|ms| u64::try_from(ms).ok()),
    }
    .filter(|ms| *ms < i64::MAX as u64);
    let timestamp_type =
        match get("message.timestamp.type").unwrap_or(broker.log_message_timestamp_type.as_str()) {
            "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
    let delete_retention =
        get("cleanup.policy").is_none_or(|p| cleanup_policies(p).any(|p| p == "delete"));
    LogConfig {
        segment_bytes: get("segment.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.log_segment_bytes),
        segment_ms: get("segment.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.log_roll_ms),
        retention_ms: long("retention.ms", broker.log_retention_ms),
        retention_bytes: long("retention.bytes", broker.log_retention_bytes).max(-1),
        flush_messages: if flush_messages == i64::MAX {
            u64::MAX
        } else {
            u64::try_from(flush_messages).unwrap_or(1)
        },
        flush_ms,
        max_message_bytes: int("max.message.bytes", broker.message_max_bytes),
        timestamp_type,
        delete_retention,
        min_insync_replicas: int("min.insync.replicas", broker.min_insync_replicas),
    }
}

fn cleanup_policies(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn check_cleanup_policy(value: &str) -> Result<(), String> {
    match cleanup_policies(value).find(|p| *p != "delete" && *p != "compact") {
        Some(p) => Err(format!("String must be one of: delete, compact; got {p}")),
        None => Ok(()),
    }
}

fn long_at_least(value: &str, min: i64) -> Result<(), String> {
    let v: i64 = value
        .parse()
        .map_err(|_| "Not a number of type LONG".to_string())?;
    if v < min {
        return Err(format!("Value must be at least {min}"));
    }
    Ok(())
}

fn int_at_least(value: &str, min: i32) -> Result<(), String> {
    let v: i32 = value
        .parse()
        .map_err(|_| "Not a number of type INT".to_string())?;
    if v < min {
        return Err(format!("Value must be at least {min}"));
    }
    Ok(())
}

fn one_of(value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("String must be one of: {}", allowed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(text: &str) -> Config {
        Config::from_properties(text, &[]).unwrap().0
    }

    fn find<'a>(configs: &'a [ConfigValue], name: &str) -> &'a ConfigValue {
        configs.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
        let e = validate("retention.mss", "1").unwrap_err();
        assert_eq!(e.key, "retention.mss");
        assert!(e.message.contains("retention.mss"), "{e}");
        for (key, value) in [
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("segment.bytes", "100"),
            ("segment.bytes", "3000000000"),
            ("segment.ms", "0"),
            ("cleanup.policy", "delete,forever"),
            ("min.insync.replicas", "0"),
            ("max.message.bytes", "-1"),
            ("message.timestamp.type", "Now"),
            ("flush.messages", "0"),
            ("flush.ms", "-1"),
        ] {
            let e = validate(key, value).unwrap_err();
            assert!(e.message.contains(key) && e.message.contains(value), "{e}");
        }
        for (key, value) in [
            ("retention.ms", "-1"),
            ("retention.bytes", "1048576"),
            ("segment.bytes", "1024"),
            ("cleanup.policy", "compact,delete"),
            ("message.timestamp.type", "LogAppendTime"),
            ("flush.ms", "0"),
        ] {
            assert_eq!(validate(key, value), Ok(()), "{key}={value}");
        }
    }

    #[test]
    fn defaults_come_from_the_broker_with_their_source() {
        let configs = describe(&broker(""), None);
        assert_eq!(configs.len(), TOPIC_CONFIGS.len());
        let retention = find(&configs, "retention.ms");
        assert_eq!(retention.value, "604800000");
        assert_eq!(retention.source, ConfigSource::DefaultConfig);
        assert_eq!(retention.synonyms.len(), 1);
        assert_eq!(retention.synonyms[0].name, "log.retention.hours");

        let configs = describe(
            &broker("log.retention.hours=2\nlog.segment.bytes=2048\n"),
            None,
        );
        let retention = find(&configs, "retention.ms");
        assert_eq!(retention.value, (2 * MS_PER_HOUR).to_string());
        assert_eq!(retention.source, ConfigSource::StaticBrokerConfig);
        assert_eq!(
            (
                retention.synonyms[0].name.as_str(),
                retention.synonyms[0].value.as_str()
            ),
            ("log.retention.hours", "2")
        );
        let segment = find(&configs, "segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("2048", ConfigSource::StaticBrokerConfig)
        );
        // Set to Kafka's default value, but set: still static.
        let configs = describe(&broker("min.insync.replicas=1\n"), None);
        assert_eq!(
            find(&configs, "min.insync.replicas").source,
            ConfigSource::StaticBrokerConfig
        );
        assert_eq!(find(&configs, "flush.ms").value, i64::MAX.to_string());
    }

    #[test]
    fn an_override_wins_and_lists_what_it_hides() {
        let overrides = BTreeMap::from([("segment.bytes".to_string(), "4096".to_string())]);
        let configs = describe(&broker("log.segment.bytes=2048\n"), Some(&overrides));
        let segment = find(&configs, "segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("4096", ConfigSource::DynamicTopicConfig)
        );
        let sources: Vec<ConfigSource> = segment.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                ConfigSource::DynamicTopicConfig,
                ConfigSource::StaticBrokerConfig,
                ConfigSource::DefaultConfig
            ]
        );
    }

    #[test]
    fn log_config_applies_overrides_over_broker_defaults() {
        assert_eq!(log_config(&broker(""), None), LogConfig::default());
        let b = broker(
            "log.retention.ms=5000\nlog.flush.interval.ms=100\nlog.flush.interval.messages=10\n",
        );
        let overrides = BTreeMap::from([
            ("segment.bytes".to_string(), "4096".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            ),
            ("retention.bytes".to_string(), "-7".to_string()),
        ]);
        let c = log_config(&b, Some(&overrides));
        assert_eq!(c.segment_bytes, 4096);
        assert_eq!(c.retention_ms, 5000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.flush_ms, Some(100));
        assert_eq!(c.flush_messages, 10);
        assert!(!c.delete_retention);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        let bad = BTreeMap::from([("segment.bytes".to_string(), "tiny".to_string())]);
        assert_eq!(
            log_config(&b, Some(&bad)).segment_bytes,
            b.log_segment_bytes
        );
    }
}
