//! The metadata log's vocabulary: every change to cluster state is one of
//! these records, replayed in log order into the [`MetadataImage`].
//!
//! Records are encoded as MessagePack maps (field names, not positions) and
//! tagged by a `type` string, so the log stays readable as it evolves: a new
//! field must carry `#[serde(default)]`, and a record type this build does not
//! know decodes as [`MetadataRecord::Unknown`] and is skipped on replay.
//!
//! [`MetadataImage`]: super::MetadataImage

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One listener a broker advertises to clients (Kafka's `BrokerEndpoint`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 = PLAINTEXT).
    #[serde(default)]
    pub security_protocol: i16,
}

/// Which kind of thing a config record belongs to, with Kafka's resource type ids.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResourceType {
    Topic,
    Broker,
}

impl ConfigResourceType {
    /// Kafka's `ConfigResource.Type` id on the wire.
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigResourceType::Topic => 2,
            ConfigResourceType::Broker => 4,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The cluster's id, written once by the first active controller.
    ClusterId {
        cluster_id: String,
    },
    /// A broker (re-)registers; its broker epoch is the log offset of this record.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        endpoints: Vec<Endpoint>,
        #[serde(default)]
        rack: Option<String>,
        fenced: bool,
    },
    UnregisterBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    FenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    UnfenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// The broker asked to shut down; it stays registered and unfenced until
    /// its session ends, but leads nothing it can hand over (Kafka's
    /// `BrokerRegistrationChangeRecord` with `inControlledShutdown`).
    BrokerInControlledShutdown {
        broker_id: i32,
        broker_epoch: i64,
    },
    Topic {
        name: String,
        topic_id: Uuid,
    },
    Partition {
        topic_id: Uuid,
        partition_id: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A change of leader, ISR or replicas. A new leader bumps the leader
    /// epoch; every change bumps the partition epoch (KIP-497).
    PartitionChange {
        topic_id: Uuid,
        partition_id: i32,
        #[serde(default)]
        leader: Option<i32>,
        #[serde(default)]
        isr: Option<Vec<i32>>,
        #[serde(default)]
        replicas: Option<Vec<i32>>,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    /// Set (`value: Some`) or delete (`None`) one config key.
    Config {
        resource_type: ConfigResourceType,
        resource_name: String,
        name: String,
        value: Option<String>,
    },
    /// A block of producer ids handed to a broker: ids below `next_producer_id` are taken.
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
    /// A consumer group's committed offset; `offset: -1` deletes it.
    OffsetCommit {
        group_id: String,
        topic: String,
        partition: i32,
        offset: i64,
        #[serde(default)]
        leader_epoch: i32,
        #[serde(default)]
        metadata: Option<String>,
        commit_timestamp_ms: i64,
    },
    /// A record type written by a newer fjord; skipped on replay.
    #[serde(other)]
    Unknown,
}

/// The payload of one metadata log entry: records applied atomically together.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode metadata: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decode metadata: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encodes anything in the metadata store's evolvable form (MessagePack maps).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let batch = MetadataBatch {
            records: vec![
                MetadataRecord::RegisterBroker {
                    broker_id: 2,
                    incarnation_id: Uuid::new_v4(),
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: "localhost".into(),
                        port: 29092,
                        security_protocol: 0,
                    }],
                    rack: None,
                    fenced: true,
                },
                MetadataRecord::PartitionChange {
                    topic_id: Uuid::new_v4(),
                    partition_id: 3,
                    leader: Some(1),
                    isr: None,
                    replicas: None,
                },
                MetadataRecord::Config {
                    resource_type: ConfigResourceType::Topic,
                    resource_name: "t".into(),
                    name: "retention.ms".into(),
                    value: Some("1000".into()),
                },
            ],
        };
        let bytes = encode(&batch).unwrap();
        assert_eq!(decode::<MetadataBatch>(&bytes).unwrap(), batch);
    }

    /// A log written by a newer build: an unknown record type and an unknown
    /// field must not stop this build from reading it.
    #[test]
    fn newer_records_and_fields_are_tolerated() {
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum Future {
            FenceBroker {
                broker_id: i32,
                broker_epoch: i64,
                reason: String,
            },
            ShinyNewThing {
                x: u32,
            },
        }
        #[derive(Serialize)]
        struct FutureBatch {
            records: Vec<Future>,
        }
        let bytes = encode(&FutureBatch {
            records: vec![
                Future::FenceBroker {
                    broker_id: 1,
                    broker_epoch: 7,
                    reason: "timeout".into(),
                },
                Future::ShinyNewThing { x: 1 },
            ],
        })
        .unwrap();
        let batch: MetadataBatch = decode(&bytes).unwrap();
        assert_eq!(
            batch.records,
            vec![
                MetadataRecord::FenceBroker {
                    broker_id: 1,
                    broker_epoch: 7
                },
                MetadataRecord::Unknown
            ]
        );
    }

    /// A log written before a field existed reads with the field's default.
    #[test]
    fn older_records_read_with_defaults() {
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum Old {
            OffsetCommit {
                group_id: String,
                topic: String,
                partition: i32,
                offset: i64,
                commit_timestamp_ms: i64,
            },
        }
        let bytes = encode(&Old::OffsetCommit {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset: 5,
            commit_timestamp_ms: 1,
        })
        .unwrap();
        match decode::<MetadataRecord>(&bytes).unwrap() {
            MetadataRecord::OffsetCommit {
                offset,
                leader_epoch,
                metadata,
                ..
            } => {
                assert_eq!((offset, leader_epoch, metadata), (5, 0, None));
            }
            other => panic!("decoded as {other:?}"),
        }
    }
}
