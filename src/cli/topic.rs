//! `fjord topic create|list|describe|delete|alter`: Kafka's `kafka-topics.sh`
//! and `kafka-configs.sh` for topics, over the Kafka protocol, so they work
//! against any node (admin requests are forwarded to the active controller).
//!
//! Exit status: 0 on success; 2 when the cluster refused what was asked
//! (bad name, config or count, topic exists or is unknown) or the arguments
//! are wrong; 1 when the cluster could not be asked.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::client::admin::{NewTopicSpec, TopicConfigEntry};
use crate::client::{broker_address, ClientError, KafkaClient};
use crate::controller::topic_control::AlterConfigOp;

#[derive(Args, Debug, Clone)]
pub struct Connection {
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions [the broker's num.partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition [the broker's default.replication.factor].
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config override, key=value; repeatable.
        #[arg(long = "config", value_parser = super::parse_key_value)]
        configs: Vec<(String, String)>,
        /// Only ask the cluster whether it would create the topic.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        json: bool,
    },
    /// List topic names.
    List {
        #[command(flatten)]
        connection: Connection,
        /// One JSON array of {name, topic_id, partitions}.
        #[arg(long)]
        json: bool,
    },
    /// Partitions (leader, replicas, ISR, log start and end offsets) and configs.
    Describe {
        name: String,
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change topic configs or grow the partition count.
    Alter {
        name: String,
        /// Set a config override, key=value; repeatable.
        #[arg(long = "config", value_parser = super::parse_key_value)]
        configs: Vec<(String, String)>,
        /// Remove a config override (back to the default); repeatable.
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// Grow the topic to this many partitions.
        #[arg(long)]
        partitions: Option<i32>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// A failure as the user sees it: one line and the exit status.
struct Failure {
    message: String,
    status: i32,
}

impl Failure {
    fn usage(message: String) -> Self {
        Failure { message, status: 2 }
    }

    /// Naming the topic; a refusal by the cluster exits 2, anything else 1.
    fn about(topic: &str, e: ClientError) -> Self {
        let status = match &e {
            ClientError::Broker { code, .. } => refused_status(*code),
            _ => 1,
        };
        Failure {
            message: format!("topic '{topic}': {e}"),
            status,
        }
    }
}

fn refused_status(code: i16) -> i32 {
    let retriable = ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable());
    if !retriable || code == ResponseError::UnknownTopicOrPartition.code() {
        2
    } else {
        1
    }
}

pub fn run(command: TopicCommand) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(execute(command)) {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            0
        }
        Err(f) => {
            eprintln!("fjord: {}", f.message);
            f.status
        }
    }
}

async fn connect(c: &Connection) -> Result<KafkaClient, Failure> {
    KafkaClient::connect(&c.bootstrap_server, Duration::from_secs(c.timeout))
        .await
        .map_err(|e| Failure {
            message: format!("cannot reach {}: {e}", c.bootstrap_server),
            status: 1,
        })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure {
        message: format!("cannot encode JSON: {e}"),
        status: 1,
    })
}

#[derive(Serialize)]
struct Created {
    name: String,
    topic_id: String,
    partitions: i32,
    replication_factor: i16,
    validate_only: bool,
}

async fn execute(command: TopicCommand) -> Result<String, Failure> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
            connection,
            json,
        } => {
            let mut client = connect(&connection).await?;
            let spec = NewTopicSpec {
                name: name.clone(),
                num_partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
            };
            let r = client
                .create_topic(&spec, validate_only)
                .await
                .map_err(|e| Failure::about(&name, e))?;
            let created = Created {
                name,
                topic_id: r.topic_id.to_string(),
                partitions: r.num_partitions,
                replication_factor: r.replication_factor,
                validate_only,
            };
            if json {
                return to_json(&created);
            }
            let verb = if validate_only {
                "Would create"
            } else {
                "Created"
            };
            Ok(format!(
                "{verb} topic {} ({} partitions, replication factor {}{})",
                created.name,
                created.partitions,
                created.replication_factor,
                if validate_only {
                    String::new()
                } else {
                    format!(", id {}", created.topic_id)
                }
            ))
        }
        TopicCommand::List { connection, json } => {
            let mut client = connect(&connection).await?;
            let md = client.metadata(None).await.map_err(|e| Failure {
                message: format!("listing topics: {e}"),
                status: 1,
            })?;
            let mut topics: Vec<ListedTopic> = md
                .topics
                .iter()
                .filter_map(|t| {
                    Some(ListedTopic {
                        name: t.name.as_ref()?.0.to_string(),
                        topic_id: t.topic_id.to_string(),
                        partitions: t.partitions.len(),
                    })
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                return to_json(&topics);
            }
            Ok(topics
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join("\n"))
        }
        TopicCommand::Describe {
            name,
            connection,
            json,
        } => {
            let mut client = connect(&connection).await?;
            let described = describe(&mut client, &name).await?;
            if json {
                to_json(&described)
            } else {
                Ok(describe_text(&described))
            }
        }
        TopicCommand::Delete { name, connection } => {
            let mut client = connect(&connection).await?;
            let id = client
                .delete_topic(&name)
                .await
                .map_err(|e| Failure::about(&name, e))?;
            Ok(format!("Deleted topic {name} (id {id})"))
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
            partitions,
            connection,
        } => {
            if configs.is_empty() && delete_configs.is_empty() && partitions.is_none() {
                return Err(Failure::usage(format!(
                    "topic '{name}': nothing to alter; give --config, --delete-config or --partitions"
                )));
            }
            let mut client = connect(&connection).await?;
            let mut done = Vec::new();
            if let Some(count) = partitions {
                client
                    .create_partitions(&name, count, false)
                    .await
                    .map_err(|e| Failure::about(&name, e))?;
                done.push(format!("{count} partitions"));
            }
            let changes: Vec<(String, AlterConfigOp, Option<String>)> = configs
                .into_iter()
                .map(|(k, v)| (k, AlterConfigOp::Set, Some(v)))
                .chain(
                    delete_configs
                        .into_iter()
                        .map(|k| (k, AlterConfigOp::Delete, None)),
                )
                .collect();
            if !changes.is_empty() {
                client
                    .alter_topic_configs(&name, &changes, false)
                    .await
                    .map_err(|e| Failure::about(&name, e))?;
                done.push(format!("{} config change(s)", changes.len()));
            }
            Ok(format!("Altered topic {name}: {}", done.join(", ")))
        }
    }
}

#[derive(Serialize)]
struct ListedTopic {
    name: String,
    topic_id: String,
    partitions: usize,
}

#[derive(Serialize, Debug)]
pub struct DescribedTopic {
    pub name: String,
    pub topic_id: String,
    pub partitions: Vec<DescribedPartition>,
    pub configs: Vec<TopicConfigEntry>,
}

#[derive(Serialize, Debug)]
pub struct DescribedPartition {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None` when the leader could not say (unreachable, or no ListOffsets).
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    /// Fewer replicas in sync than assigned.
    pub under_replicated: bool,
    /// No leader (-1): no live in-sync replica, so nothing is served.
    pub offline: bool,
}

impl DescribedPartition {
    fn status(&self) -> &'static str {
        if self.offline {
            "offline"
        } else if self.under_replicated {
            "under-replicated"
        } else {
            "ok"
        }
    }
}

async fn describe(client: &mut KafkaClient, topic: &str) -> Result<DescribedTopic, Failure> {
    let md = client
        .metadata(Some(vec![topic.to_string()]))
        .await
        .map_err(|e| Failure::about(topic, e))?;
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| {
            Failure::about(
                topic,
                ClientError::Protocol("Metadata answered without it".into()),
            )
        })?;
    if t.error_code != 0 {
        let e = ClientError::Broker {
            api: "Metadata",
            code: t.error_code,
            message: String::new(),
        };
        return Err(Failure::about(topic, e));
    }
    let mut partitions: Vec<DescribedPartition> = t
        .partitions
        .iter()
        .map(|p| DescribedPartition {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            log_start_offset: None,
            log_end_offset: None,
            under_replicated: p.isr_nodes.len() < p.replica_nodes.len(),
            offline: p.leader_id.0 < 0,
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    let offsets = log_offsets(&md, topic, &partitions, client.timeout()).await;
    for p in &mut partitions {
        if let Some((start, end)) = offsets.get(&p.partition) {
            p.log_start_offset = *start;
            p.log_end_offset = *end;
        }
    }
    let configs = client
        .describe_topic_configs(topic)
        .await
        .map_err(|e| Failure::about(topic, e))?;
    Ok(DescribedTopic {
        name: topic.to_string(),
        topic_id: t.topic_id.to_string(),
        partitions,
        configs,
    })
}

/// Log start (earliest, -2) and end (latest, -1) offsets of each
/// partition, asked of its leader. A leader that cannot be reached or does
/// not serve ListOffsets leaves its partitions' offsets unknown.
async fn log_offsets(
    md: &MetadataResponse,
    topic: &str,
    partitions: &[DescribedPartition],
    timeout: Duration,
) -> BTreeMap<i32, (Option<i64>, Option<i64>)> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions.iter().filter(|p| p.leader >= 0) {
        by_leader.entry(p.leader).or_default().push(p.partition);
    }
    let mut out = BTreeMap::new();
    for (leader, ids) in by_leader {
        let Some(b) = md.brokers.iter().find(|b| b.node_id.0 == leader) else {
            continue;
        };
        let address = broker_address(b.host.as_str(), b.port);
        let Ok(mut client) = KafkaClient::connect(&address, timeout).await else {
            continue;
        };
        let start = list_offsets(&mut client, topic, &ids, -2).await;
        let end = list_offsets(&mut client, topic, &ids, -1).await;
        for id in ids {
            out.insert(id, (start.get(&id).copied(), end.get(&id).copied()));
        }
    }
    out
}

/// Offsets at `timestamp` (-2 earliest, -1 latest) for `partitions`; the
/// ones the broker answered without error.
async fn list_offsets(
    client: &mut KafkaClient,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> BTreeMap<i32, i64> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let Ok(response) = client.request(request).await else {
        return BTreeMap::new();
    };
    response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.error_code == 0)
        .map(|p| (p.partition_index, p.offset))
        .collect()
}

fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn offset(o: Option<i64>) -> String {
    o.map_or_else(|| "-".to_string(), |o| o.to_string())
}

fn describe_text(t: &DescribedTopic) -> String {
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    let mut out = format!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {rf}\n",
        t.name,
        t.topic_id,
        t.partitions.len()
    );
    out.push_str("Partition\tLeader\tReplicas\tIsr\tLogStartOffset\tLogEndOffset\tStatus\n");
    for p in &t.partitions {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            p.partition,
            p.leader,
            ids(&p.replicas),
            ids(&p.isr),
            offset(p.log_start_offset),
            offset(p.log_end_offset),
            p.status()
        ));
    }
    out.push_str("Configs:\n");
    for c in &t.configs {
        out.push_str(&format!(
            "  {}={}\t({})\n",
            c.name,
            c.value.as_deref().unwrap_or(""),
            c.source
        ));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_exit_2_and_transient_failures_1() {
        assert_eq!(refused_status(ResponseError::TopicAlreadyExists.code()), 2);
        assert_eq!(refused_status(ResponseError::InvalidConfig.code()), 2);
        assert_eq!(
            refused_status(ResponseError::UnknownTopicOrPartition.code()),
            2
        );
        assert_eq!(refused_status(ResponseError::NotController.code()), 1);
    }

    #[test]
    fn describe_text_shows_unknown_offsets_as_dashes() {
        let t = DescribedTopic {
            name: "orders".into(),
            topic_id: "id".into(),
            partitions: vec![DescribedPartition {
                partition: 0,
                leader: 2,
                leader_epoch: 0,
                replicas: vec![2],
                isr: vec![2],
                log_start_offset: Some(0),
                log_end_offset: None,
                under_replicated: false,
                offline: false,
            }],
            configs: vec![TopicConfigEntry {
                name: "retention.ms".into(),
                value: Some("1000".into()),
                source: "DYNAMIC_TOPIC_CONFIG".into(),
                read_only: false,
            }],
        };
        let text = describe_text(&t);
        assert!(text.contains("0\t2\t2\t2\t0\t-\tok"), "{text}");
        assert!(
            text.contains("retention.ms=1000\t(DYNAMIC_TOPIC_CONFIG)"),
            "{text}"
        );
    }

    #[test]
    fn describe_marks_under_replicated_and_offline_partitions() {
        let partition = |index: i32, leader: i32, isr: Vec<i32>| DescribedPartition {
            partition: index,
            leader,
            leader_epoch: 1,
            replicas: vec![1, 2, 3],
            under_replicated: isr.len() < 3,
            offline: leader < 0,
            isr,
            log_start_offset: None,
            log_end_offset: None,
        };
        let t = DescribedTopic {
            name: "orders".into(),
            topic_id: "id".into(),
            partitions: vec![
                partition(0, 1, vec![1, 2, 3]),
                partition(1, 2, vec![2, 3]),
                partition(2, -1, vec![1]),
            ],
            configs: vec![],
        };
        let text = describe_text(&t);
        assert!(text.contains("0\t1\t1,2,3\t1,2,3\t-\t-\tok"), "{text}");
        assert!(
            text.contains("1\t2\t1,2,3\t2,3\t-\t-\tunder-replicated"),
            "{text}"
        );
        assert!(text.contains("2\t-1\t1,2,3\t1\t-\t-\toffline"), "{text}");
    }
}
