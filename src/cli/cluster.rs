//! `fjord cluster status`: the metadata quorum and the brokers, asked over
//! the Kafka protocol (DescribeQuorum and DescribeCluster), as Kafka's
//! `kafka-metadata-quorum.sh` does.

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use kafka_protocol::messages::MetadataResponse;

use crate::client::{ClientError, KafkaClient};
use crate::controller::raft::network::now_ms;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Quorum leader, epoch, commit index, voters with lag, and brokers.
    Status {
        #[arg(long, default_value = "localhost:9092")]
        bootstrap_server: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<VoterStatus>,
    pub brokers: Vec<BrokerStatus>,
    pub partitions: PartitionSummary,
}

/// Partition health as the brokers' metadata image reports it.
#[derive(Serialize, Debug, PartialEq, Default)]
pub struct PartitionSummary {
    pub total: usize,
    /// ISR smaller than the replica set.
    pub under_replicated: usize,
    /// No leader: no live in-sync replica.
    pub offline: usize,
}

/// Counts a Metadata answer's partitions (a topic-level error has none).
pub fn summarize(metadata: &MetadataResponse) -> PartitionSummary {
    let mut summary = PartitionSummary::default();
    for p in metadata.topics.iter().flat_map(|t| &t.partitions) {
        summary.total += 1;
        if p.isr_nodes.len() < p.replica_nodes.len() {
            summary.under_replicated += 1;
        }
        if p.leader_id.0 < 0 {
            summary.offline += 1;
        }
    }
    summary
}

#[derive(Serialize, Debug, PartialEq)]
pub struct VoterStatus {
    pub id: i32,
    pub log_end_offset: i64,
    pub lag: i64,
    /// Milliseconds since the leader last heard from it; -1 if never.
    pub last_contact_ms: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct BrokerStatus {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub state: &'static str,
}

pub fn run(command: ClusterCommand) -> i32 {
    let ClusterCommand::Status {
        bootstrap_server,
        json,
        timeout,
    } = command;
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(status(&bootstrap_server, Duration::from_secs(timeout))) {
        Ok(s) if json => match serde_json::to_string(&s) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(e) => {
                eprintln!("fjord: cluster status: cannot encode JSON: {e}");
                1
            }
        },
        Ok(s) => {
            print_text(&s);
            0
        }
        Err(e) => {
            eprintln!("fjord: cluster status via {bootstrap_server}: {e}");
            1
        }
    }
}

pub async fn status(bootstrap: &str, timeout: Duration) -> Result<ClusterStatus, ClientError> {
    let mut client = KafkaClient::connect(bootstrap, timeout).await?;
    let quorum = client.describe_quorum().await?;
    let cluster = client.describe_cluster().await?;
    let partitions = summarize(&client.metadata(None).await?);
    let partition = quorum
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| ClientError::Protocol("DescribeQuorum answered no partition".into()))?;
    if partition.error_code != 0 {
        return Err(ClientError::Broker {
            api: "DescribeQuorum",
            code: partition.error_code,
            message: partition
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        });
    }
    let now = now_ms();
    let leader_end = partition
        .current_voters
        .iter()
        .find(|v| v.replica_id == partition.leader_id)
        .map_or(partition.high_watermark, |v| v.log_end_offset);
    let voters = partition
        .current_voters
        .iter()
        .map(|v| VoterStatus {
            id: v.replica_id.0,
            log_end_offset: v.log_end_offset,
            lag: (leader_end - v.log_end_offset).max(0),
            last_contact_ms: if v.last_fetch_timestamp < 0 {
                -1
            } else {
                (now - v.last_fetch_timestamp).max(0)
            },
        })
        .collect();
    let brokers = cluster
        .brokers
        .iter()
        .map(|b| BrokerStatus {
            id: b.broker_id.0,
            host: b.host.to_string(),
            port: b.port,
            state: if b.is_fenced { "fenced" } else { "active" },
        })
        .collect();
    Ok(ClusterStatus {
        cluster_id: cluster.cluster_id.to_string(),
        leader_id: partition.leader_id.0,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters,
        brokers,
        partitions,
    })
}

fn print_text(s: &ClusterStatus) {
    println!("cluster id:        {}", s.cluster_id);
    println!(
        "active controller: {} (epoch {})",
        s.leader_id, s.leader_epoch
    );
    println!("high watermark:    {}", s.high_watermark);
    println!("voters:");
    println!(
        "  {:>4}  {:>14}  {:>8}  {:>16}",
        "id", "log end offset", "lag", "last contact ms"
    );
    for v in &s.voters {
        let role = if v.id == s.leader_id { " (leader)" } else { "" };
        println!(
            "  {:>4}  {:>14}  {:>8}  {:>16}{role}",
            v.id, v.log_end_offset, v.lag, v.last_contact_ms
        );
    }
    println!("brokers:");
    for b in &s.brokers {
        println!("  {:>4}  {}:{}  {}", b.id, b.host, b.port, b.state);
    }
    let p = &s.partitions;
    println!(
        "partitions:        {} ({} under-replicated, {} offline)",
        p.total, p.under_replicated, p.offline
    );
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::BrokerId;

    use super::*;

    #[test]
    fn partitions_are_counted_as_under_replicated_and_offline() {
        let partition = |leader: i32, isr: &[i32]| {
            MetadataResponsePartition::default()
                .with_leader_id(BrokerId(leader))
                .with_replica_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
                .with_isr_nodes(isr.iter().copied().map(BrokerId).collect())
        };
        let metadata = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default().with_partitions(vec![
                partition(1, &[1, 2, 3]),
                partition(2, &[2, 3]),
                partition(-1, &[1]),
            ]),
            MetadataResponseTopic::default(),
        ]);
        assert_eq!(
            summarize(&metadata),
            PartitionSummary {
                total: 3,
                under_replicated: 2,
                offline: 1
            }
        );
    }
}
