//! `fjord group list|describe|delete|reset-offsets`: Kafka's
//! `kafka-consumer-groups.sh`, over the Kafka protocol. Group requests go
//! to the group's coordinator (FindCoordinator first), ListGroups to every
//! broker (each knows only the groups it coordinates), ListOffsets to each
//! partition's leader.
//!
//! Exit status as `fjord topic`: 0 on success; 2 when the cluster refused
//! what was asked (unknown group, a group that is not empty, bad
//! arguments); 1 when the cluster could not be asked.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde::Serialize;

use super::topic::Connection;
use crate::client::group::{kafka_error, Assignment, GroupDescription, ListedGroup};
use crate::client::{broker_address, ClientError, KafkaClient};

/// ListOffsets' special timestamps.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups of every broker.
    List {
        #[command(flatten)]
        connection: Connection,
        /// One JSON array of {group_id, protocol_type, state}.
        #[arg(long)]
        json: bool,
    },
    /// State, members and their partitions, and per partition the
    /// committed offset, log end offset and lag.
    Describe {
        group: String,
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Delete an empty group and its committed offsets.
    Delete {
        group: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move an empty group's committed offsets on a topic; prints the plan
    /// and changes nothing without --execute.
    ResetOffsets {
        group: String,
        /// The topic whose offsets to reset (every partition).
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        to: ResetTo,
        /// Commit the new offsets (otherwise only print them).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// Each partition's log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// Each partition's log end offset.
    #[arg(long)]
    to_latest: bool,
    /// This offset, moved into each partition's [log start, log end].
    #[arg(long)]
    to_offset: Option<i64>,
}

/// A failure as the user sees it: one line and the exit status.
struct Failure {
    message: String,
    status: i32,
}

impl Failure {
    /// Naming the group; a refusal by the cluster exits 2, anything else 1.
    fn about(group: &str, e: ClientError) -> Self {
        let status = match kafka_error(&e) {
            Some(k) if !k.is_retriable() => 2,
            Some(ResponseError::UnknownTopicOrPartition) => 2,
            _ => 1,
        };
        Failure {
            message: format!("group '{group}': {e}"),
            status,
        }
    }

    fn refused(message: String) -> Self {
        Failure { message, status: 2 }
    }
}

pub fn run(command: GroupCommand) -> i32 {
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

fn timeout(c: &Connection) -> Duration {
    Duration::from_secs(c.timeout)
}

async fn connect(c: &Connection) -> Result<KafkaClient, Failure> {
    KafkaClient::connect(&c.bootstrap_server, timeout(c))
        .await
        .map_err(|e| Failure {
            message: format!("cannot reach {}: {e}", c.bootstrap_server),
            status: 1,
        })
}

/// A connection to `group`'s coordinator, waiting out a coordinator that
/// is still being placed or loaded.
async fn coordinator(c: &Connection, group: &str) -> Result<KafkaClient, Failure> {
    let mut client = connect(c).await?;
    let deadline = Instant::now() + timeout(c);
    let address = loop {
        match client.find_coordinator(group).await {
            Ok((_, address)) => break address,
            Err(e)
                if matches!(
                    kafka_error(&e),
                    Some(
                        ResponseError::CoordinatorNotAvailable
                            | ResponseError::CoordinatorLoadInProgress
                    )
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(Failure::about(group, e)),
        }
    };
    KafkaClient::connect(&address, timeout(c))
        .await
        .map_err(|e| Failure {
            message: format!("group '{group}': cannot reach its coordinator {address}: {e}"),
            status: 1,
        })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure {
        message: format!("cannot encode JSON: {e}"),
        status: 1,
    })
}

async fn execute(command: GroupCommand) -> Result<String, Failure> {
    match command {
        GroupCommand::List { connection, json } => {
            let groups = list(&connection).await?;
            if json {
                return to_json(&groups);
            }
            Ok(groups
                .iter()
                .map(|g| g.group_id.as_str())
                .collect::<Vec<_>>()
                .join("\n"))
        }
        GroupCommand::Describe {
            group,
            connection,
            json,
        } => {
            let described = describe(&connection, &group).await?;
            if json {
                to_json(&described)
            } else {
                Ok(describe_text(&described))
            }
        }
        GroupCommand::Delete { group, connection } => {
            let mut client = coordinator(&connection, &group).await?;
            client
                .delete_group(&group)
                .await
                .map_err(|e| Failure::about(&group, e))?;
            Ok(format!("Deleted group {group}"))
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            execute,
            connection,
        } => reset_offsets(&connection, &group, &topic, &to, execute).await,
    }
}

/// ListGroups on every broker. A broker that cannot be asked is reported
/// on stderr; the groups of the others are still listed.
async fn list(c: &Connection) -> Result<Vec<ListedGroup>, Failure> {
    let mut client = connect(c).await?;
    let md = client
        .metadata(Some(Vec::new()))
        .await
        .map_err(|e| Failure {
            message: format!("listing brokers: {e}"),
            status: 1,
        })?;
    let mut groups = BTreeMap::new();
    for b in &md.brokers {
        let address = broker_address(&b.host, b.port);
        let listed = match KafkaClient::connect(&address, timeout(c)).await {
            Ok(mut broker) => broker.list_groups().await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(listed) => groups.extend(listed.into_iter().map(|g| (g.group_id.clone(), g))),
            Err(e) => eprintln!(
                "fjord: broker {} at {address}: cannot list its groups: {e}",
                b.node_id.0
            ),
        }
    }
    Ok(groups.into_values().collect())
}

#[derive(Serialize, Debug)]
struct DescribedGroup {
    #[serde(flatten)]
    group: GroupDescription,
    offsets: Vec<PartitionOffsets>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct PartitionOffsets {
    topic: String,
    partition: i32,
    /// `None` when the group has committed nothing for it.
    committed_offset: Option<i64>,
    /// `None` when the leader could not say.
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    /// The member it is assigned to, if any.
    member_id: Option<String>,
}

async fn describe(c: &Connection, group: &str) -> Result<DescribedGroup, Failure> {
    let mut client = coordinator(c, group).await?;
    let description = match client.describe_group(group).await {
        Ok(d) => Some(d),
        Err(e) if kafka_error(&e) == Some(ResponseError::GroupIdNotFound) => None,
        Err(e) => return Err(Failure::about(group, e)),
    };
    let committed = client
        .offset_fetch(group, None)
        .await
        .map_err(|e| Failure::about(group, e))?;
    // A classic coordinator describes an unknown group as Dead; newer ones
    // refuse it. Either way, with no offsets there is nothing to show.
    let description = match description {
        Some(d) if d.state != "Dead" || !committed.is_empty() => d,
        _ if !committed.is_empty() => GroupDescription {
            group_id: group.to_string(),
            state: "Empty".into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        },
        _ => {
            let e = ClientError::Broker {
                api: "DescribeGroups",
                code: ResponseError::GroupIdNotFound.code(),
                message: String::new(),
            };
            return Err(Failure::about(group, e));
        }
    };
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &description.members {
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                owners.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let keys: BTreeSet<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    let mut wanted = Assignment::new();
    for (topic, partition) in &keys {
        wanted.entry(topic.clone()).or_default().push(*partition);
    }
    let ends = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        let md = client
            .metadata(Some(wanted.keys().cloned().collect()))
            .await
            .map_err(|e| Failure::about(group, e))?;
        list_offsets(&md, &wanted, LATEST_TIMESTAMP, timeout(c)).await
    };
    let offsets = keys
        .into_iter()
        .map(|key| {
            let committed_offset = committed.get(&key).copied();
            let log_end_offset = ends.get(&key).copied();
            PartitionOffsets {
                lag: committed_offset
                    .zip(log_end_offset)
                    .map(|(c, e)| (e - c).max(0)),
                member_id: owners.get(&key).cloned(),
                topic: key.0,
                partition: key.1,
                committed_offset,
                log_end_offset,
            }
        })
        .collect();
    Ok(DescribedGroup {
        group: description,
        offsets,
    })
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn assignment_text(a: &Assignment) -> String {
    if a.is_empty() {
        return "-".into();
    }
    a.iter()
        .map(|(topic, partitions)| {
            let ids: Vec<String> = partitions.iter().map(i32::to_string).collect();
            format!("{topic}:{}", ids.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_text(d: &DescribedGroup) -> String {
    let g = &d.group;
    let protocol = match (g.protocol_type.as_str(), g.protocol.as_str()) {
        ("", _) => "-".to_string(),
        (t, "") => t.to_string(),
        (t, p) => format!("{t}/{p}"),
    };
    let mut out = format!(
        "Group: {}\tState: {}\tProtocol: {protocol}\tMembers: {}\n",
        g.group_id,
        g.state,
        g.members.len()
    );
    if !g.members.is_empty() {
        out.push_str("MEMBER-ID\tCLIENT-ID\tHOST\tASSIGNMENT\n");
        for m in &g.members {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                m.member_id,
                m.client_id,
                m.client_host,
                assignment_text(&m.assignment)
            ));
        }
    }
    if !d.offsets.is_empty() {
        out.push_str("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tMEMBER-ID\n");
        for o in &d.offsets {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                o.topic,
                o.partition,
                or_dash(o.committed_offset),
                or_dash(o.log_end_offset),
                or_dash(o.lag),
                or_dash(o.member_id.as_ref())
            ));
        }
    }
    out.trim_end().to_string()
}

/// Offsets at `timestamp` (-2 earliest, -1 latest) of `wanted`'s
/// partitions, one request per leader. What a leader cannot say (down, not
/// the leader any more) is left out.
async fn list_offsets(
    md: &MetadataResponse,
    wanted: &Assignment,
    timestamp: i64,
    timeout: Duration,
) -> BTreeMap<(String, i32), i64> {
    let mut by_leader: BTreeMap<i32, Assignment> = BTreeMap::new();
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
            continue;
        };
        let Some(partitions) = wanted.get(&name) else {
            continue;
        };
        for p in t
            .partitions
            .iter()
            .filter(|p| partitions.contains(&p.partition_index) && p.leader_id.0 >= 0)
        {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .entry(name.clone())
                .or_default()
                .push(p.partition_index);
        }
    }
    let mut out = BTreeMap::new();
    for (leader, topics) in by_leader {
        let Some(b) = md.brokers.iter().find(|b| b.node_id.0 == leader) else {
            continue;
        };
        let address = broker_address(&b.host, b.port);
        let Ok(mut client) = KafkaClient::connect(&address, timeout).await else {
            continue;
        };
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone())))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let Ok(response) = client.request(request).await else {
            continue;
        };
        for t in &response.topics {
            for p in t.partitions.iter().filter(|p| p.error_code == 0) {
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    out
}

/// Kafka's `--to-offset`: an offset outside the log moves to its nearer end.
fn clamp(offset: i64, earliest: i64, latest: i64) -> i64 {
    offset.max(earliest).min(latest)
}

async fn reset_offsets(
    c: &Connection,
    group: &str,
    topic: &str,
    to: &ResetTo,
    execute: bool,
) -> Result<String, Failure> {
    let mut client = coordinator(c, group).await?;
    match client.describe_group(group).await {
        Ok(d) if d.state == "Empty" || d.state == "Dead" => {}
        Ok(d) => {
            return Err(Failure::refused(format!(
                "group '{group}' is {} with {} member(s); offsets can only be reset while it is empty (stop its consumers)",
                d.state,
                d.members.len()
            )))
        }
        Err(e) if kafka_error(&e) == Some(ResponseError::GroupIdNotFound) => {}
        Err(e) => return Err(Failure::about(group, e)),
    }
    let md = client
        .metadata(Some(vec![topic.to_string()]))
        .await
        .map_err(|e| Failure::about(group, e))?;
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| {
            Failure::refused(format!("topic '{topic}': Metadata answered without it"))
        })?;
    if t.error_code != 0 {
        let e = ClientError::Broker {
            api: "Metadata",
            code: t.error_code,
            message: String::new(),
        };
        return Err(Failure {
            message: format!("topic '{topic}': {e}"),
            status: 2,
        });
    }
    let mut partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    partitions.sort_unstable();
    let mut wanted = Assignment::new();
    wanted.insert(topic.to_string(), partitions.clone());
    let earliest = list_offsets(&md, &wanted, EARLIEST_TIMESTAMP, timeout(c)).await;
    let latest = list_offsets(&md, &wanted, LATEST_TIMESTAMP, timeout(c)).await;
    let current = client
        .offset_fetch(group, Some(&wanted))
        .await
        .map_err(|e| Failure::about(group, e))?;
    let mut plan = BTreeMap::new();
    let mut text = String::from("GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tNEW-OFFSET\n");
    for p in partitions {
        let key = (topic.to_string(), p);
        let (Some(&low), Some(&high)) = (earliest.get(&key), latest.get(&key)) else {
            return Err(Failure {
                message: format!(
                    "group '{group}': the leader of {topic}-{p} did not give its offsets; nothing was reset"
                ),
                status: 1,
            });
        };
        let new = match (to.to_earliest, to.to_latest, to.to_offset) {
            (true, _, _) => low,
            (_, true, _) => high,
            (_, _, Some(n)) => clamp(n, low, high),
            _ => {
                return Err(Failure::refused(
                    "give --to-earliest, --to-latest or --to-offset".into(),
                ))
            }
        };
        text.push_str(&format!(
            "{group}\t{topic}\t{p}\t{}\t{new}\n",
            or_dash(current.get(&key))
        ));
        plan.insert(key, new);
    }
    if execute {
        client
            .offset_commit(group, -1, "", &plan)
            .await
            .map_err(|e| Failure::about(group, e))?;
    } else {
        eprintln!("fjord: nothing was changed (a dry run); add --execute to commit these offsets");
    }
    Ok(text.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::group::GroupMemberDescription;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: GroupCommand,
    }

    fn parse(argv: &[&str]) -> Result<GroupCommand, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("group").chain(argv.iter().copied()))
            .map(|w| w.command)
    }

    #[test]
    fn reset_offsets_needs_exactly_one_target() {
        assert!(parse(&["reset-offsets", "g", "--topic", "t"]).is_err());
        assert!(parse(&[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest"
        ])
        .is_err());
        let ok = parse(&[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-offset",
            "5",
            "--execute",
        ])
        .unwrap();
        match ok {
            GroupCommand::ResetOffsets { to, execute, .. } => {
                assert_eq!(to.to_offset, Some(5));
                assert!(execute);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn to_offset_moves_into_the_log() {
        assert_eq!(clamp(5, 10, 20), 10);
        assert_eq!(clamp(15, 10, 20), 15);
        assert_eq!(clamp(99, 10, 20), 20);
    }

    #[test]
    fn refusals_exit_2_and_transient_failures_1() {
        let broker = |e: ResponseError| ClientError::Broker {
            api: "DeleteGroups",
            code: e.code(),
            message: String::new(),
        };
        assert_eq!(
            Failure::about("g", broker(ResponseError::NonEmptyGroup)).status,
            2
        );
        assert_eq!(
            Failure::about("g", broker(ResponseError::GroupIdNotFound)).status,
            2
        );
        assert_eq!(
            Failure::about("g", broker(ResponseError::CoordinatorNotAvailable)).status,
            1
        );
        let f = Failure::about("g", broker(ResponseError::NonEmptyGroup));
        assert_eq!(
            f.message,
            "group 'g': DeleteGroups failed: NonEmptyGroup (error 68)"
        );
    }

    #[test]
    fn describe_text_shows_members_assignments_and_lag() {
        let mut assignment = Assignment::new();
        assignment.insert("orders".into(), vec![0, 1]);
        let d = DescribedGroup {
            group: GroupDescription {
                group_id: "g".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                members: vec![GroupMemberDescription {
                    member_id: "m-1".into(),
                    group_instance_id: None,
                    client_id: "fjord".into(),
                    client_host: "/127.0.0.1".into(),
                    assignment,
                }],
            },
            offsets: vec![
                PartitionOffsets {
                    topic: "orders".into(),
                    partition: 0,
                    committed_offset: Some(7),
                    log_end_offset: Some(10),
                    lag: Some(3),
                    member_id: Some("m-1".into()),
                },
                PartitionOffsets {
                    topic: "orders".into(),
                    partition: 1,
                    committed_offset: None,
                    log_end_offset: Some(4),
                    lag: None,
                    member_id: Some("m-1".into()),
                },
            ],
        };
        let text = describe_text(&d);
        assert!(
            text.starts_with("Group: g\tState: Stable\tProtocol: consumer/range\tMembers: 1"),
            "{text}"
        );
        assert!(
            text.contains("m-1\tfjord\t/127.0.0.1\torders:0,1"),
            "{text}"
        );
        assert!(text.contains("orders\t0\t7\t10\t3\tm-1"), "{text}");
        assert!(text.contains("orders\t1\t-\t4\t-\tm-1"), "{text}");
    }
}
