//! Consumer groups from the client side, in Kafka's classic protocol: the
//! member (`fjord consume --group`) and the admin calls `fjord group` makes.
//!
//! A member finds its group's coordinator (FindCoordinator, key type 0),
//! joins (JoinGroup, protocol type `consumer`, one protocol `range` whose
//! metadata is a `ConsumerProtocolSubscription`), and, if the coordinator
//! picked it as leader, computes everyone's partitions with Kafka's
//! `RangeAssignor` and hands them over in SyncGroup as
//! `ConsumerProtocolAssignment` bytes. The coordinator relays those bytes
//! as they are, so the encoding is Kafka's own (an i16 version, then the
//! message at that version), and Java, librdkafka and fjord members can
//! share one group.
//!
//! Heartbeats run on their own task and connection, as the Java client's
//! heartbeat thread does, so a slow poll loop does not look like a dead
//! member. The task only raises flags (rejoin, coordinator lost); the
//! owner acts on them between polls, which keeps every state change of the
//! member on one task. Offsets are committed with the member's generation,
//! so a member that missed a rebalance cannot overwrite the new owner's
//! progress (the coordinator answers ILLEGAL_GENERATION or
//! UNKNOWN_MEMBER_ID, and the member rejoins).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use kafka_protocol::ResponseError;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::consumer::{
    ConsumeError, ConsumedRecord, Consumer, ConsumerConfig, OffsetReset, StartOffset,
};
use super::{broker_address, check, ClientError, KafkaClient};

/// The protocol type every Kafka consumer joins with.
pub const PROTOCOL_TYPE: &str = "consumer";
/// The one assignor this client offers (Kafka's `RangeAssignor.RANGE_ASSIGNOR_NAME`).
pub const RANGE: &str = "range";
/// FindCoordinator's key type for a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// The versions of the embedded consumer protocol messages we write. v0
/// is what every member can read; a newer reader ignores nothing it needs.
const SUBSCRIPTION_VERSION: i16 = 0;
const ASSIGNMENT_VERSION: i16 = 0;
/// Pause before retrying a retriable coordinator error.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Partitions by topic.
pub type Assignment = BTreeMap<String, Vec<i32>>;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

fn protocol_error(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!("{what}: {e}"))
}

/// The Kafka error a [`ClientError`] carries, if the broker answered with one.
pub fn kafka_error(e: &ClientError) -> Option<ResponseError> {
    match e {
        ClientError::Broker { code, .. } => ResponseError::try_from_code(*code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The consumer protocol's embedded messages (Kafka's `ConsumerProtocol`).

/// A message as Kafka's `ConsumerProtocol` writes it: its version as an
/// i16, then the message at that version.
fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message
        .encode(&mut out, version)
        .map_err(|e| protocol_error("encoding consumer protocol message", e))?;
    Ok(out.freeze())
}

/// Reads what [`encode_versioned`] writes. A newer version than we know is
/// read as our newest, as Kafka does: later versions only append fields.
fn decode_versioned<M: Decodable + Message>(
    mut bytes: &[u8],
    what: &str,
) -> Result<M, ClientError> {
    if bytes.remaining() < 2 {
        return Err(ClientError::Protocol(format!("{what}: no version")));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(ClientError::Protocol(format!("{what}: version {version}")));
    }
    let version = version.min(M::VERSIONS.max);
    M::decode(&mut bytes, version).map_err(|e| protocol_error(what, e))
}

/// A member's JoinGroup metadata: the topics it subscribes to.
pub fn encode_subscription(topics: &[String]) -> Result<Bytes, ClientError> {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| str_bytes(t)).collect());
    encode_versioned(&subscription, SUBSCRIPTION_VERSION)
}

/// The topics of a member's subscription.
pub fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>, ClientError> {
    let s: ConsumerProtocolSubscription = decode_versioned(bytes, "consumer subscription")?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

/// A member's SyncGroup assignment.
pub fn encode_assignment(assignment: &Assignment) -> Result<Bytes, ClientError> {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assignment
            .iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions.clone())
            })
            .collect(),
    );
    encode_versioned(&assignment, ASSIGNMENT_VERSION)
}

/// The partitions an assignment gives. Empty bytes (a member the leader
/// left out, or a group that is not a consumer group yet) give nothing.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, ClientError> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let a: ConsumerProtocolAssignment = decode_versioned(bytes, "consumer assignment")?;
    let mut out = Assignment::new();
    for topic in a.assigned_partitions {
        let partitions = out.entry(topic.topic.0.to_string()).or_default();
        partitions.extend(topic.partitions);
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(out)
}

/// Kafka's `RangeAssignor`: per topic, its partitions in order are cut into
/// ranges for the members subscribed to it, sorted by member id; the first
/// `partitions % members` members get one extra. Every member gets an
/// entry, empty if it got nothing. Topics without a known partition count
/// are assigned to nobody.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut members_by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, topics) in subscriptions {
        for topic in topics.iter().collect::<BTreeSet<_>>() {
            members_by_topic.entry(topic).or_default().push(member);
        }
    }
    for (topic, members) in members_by_topic {
        let Some(&count) = partitions_per_topic.get(topic) else {
            continue;
        };
        let count = usize::try_from(count).unwrap_or(0);
        let per_member = count / members.len();
        let with_extra = count % members.len();
        for (i, member) in members.iter().enumerate() {
            let start = per_member * i + i.min(with_extra);
            let length = per_member + usize::from(i < with_extra);
            if length == 0 {
                continue;
            }
            let partitions = (start..start + length)
                .filter_map(|p| i32::try_from(p).ok())
                .collect();
            if let Some(assignment) = out.get_mut(*member) {
                assignment.insert(topic.to_string(), partitions);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Admin calls: what `fjord group` asks.

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker is too old to say (ListGroups before v4).
    pub state: String,
}

/// A group as DescribeGroups reports it, consumer assignments decoded.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor (`range`, ...), empty unless Stable or completing.
    pub protocol: String,
    pub members: Vec<GroupMemberDescription>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupMemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded for consumer groups; empty for others or undecodable bytes.
    pub assignment: Assignment,
}

impl KafkaClient {
    /// The coordinator of `group`: node id and `host:port`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<(i32, String), ClientError> {
        let version = self.negotiated_version::<FindCoordinatorRequest>()?;
        // v4 (KIP-699) batches keys and answers per key.
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(KEY_TYPE_GROUP)
                .with_coordinator_keys(vec![str_bytes(group)])
        } else {
            FindCoordinatorRequest::default()
                .with_key(str_bytes(group))
                .with_key_type(KEY_TYPE_GROUP)
        };
        let response = self.send(request, version).await?;
        if version >= 4 {
            let c = response
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| {
                    ClientError::Protocol("FindCoordinator answered without the group".into())
                })?;
            check("FindCoordinator", c.error_code, c.error_message.as_ref())?;
            Ok((c.node_id.0, broker_address(&c.host, c.port)))
        } else {
            check(
                "FindCoordinator",
                response.error_code,
                response.error_message.as_ref(),
            )?;
            Ok((
                response.node_id.0,
                broker_address(&response.host, response.port),
            ))
        }
    }

    /// The groups this broker coordinates.
    pub async fn list_groups(&mut self) -> Result<Vec<ListedGroup>, ClientError> {
        let response = self.request(ListGroupsRequest::default()).await?;
        check("ListGroups", response.error_code, None)?;
        Ok(response
            .groups
            .iter()
            .map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect())
    }

    /// `group` as its coordinator describes it (ask the coordinator).
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response = self.request(request).await?;
        let g = response
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| {
                ClientError::Protocol("DescribeGroups answered without the group".into())
            })?;
        check("DescribeGroups", g.error_code, g.error_message.as_ref())?;
        let consumer = g.protocol_type.as_str() == PROTOCOL_TYPE;
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .iter()
                .map(|m| GroupMemberDescription {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Assignment::new()
                    },
                })
                .collect(),
        })
    }

    /// Deletes an empty group and its committed offsets (ask the coordinator).
    pub async fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response = self.request(request).await?;
        let result = response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .ok_or_else(|| {
                ClientError::Protocol("DeleteGroups answered without the group".into())
            })?;
        check("DeleteGroups", result.error_code, None)
    }

    /// The committed offsets of `group` (ask the coordinator): of `topics`'
    /// partitions, or of every partition it has committed when `None`.
    /// Partitions without a committed offset are left out.
    pub async fn offset_fetch(
        &mut self,
        group: &str,
        topics: Option<&Assignment>,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let version = self.negotiated_version::<OffsetFetchRequest>()?;
        let mut out = BTreeMap::new();
        let mut keep = |topic: &TopicName, partition: i32, offset: i64, code: i16| {
            check("OffsetFetch", code, None)?;
            if offset >= 0 {
                out.insert((topic.0.to_string(), partition), offset);
            }
            Ok::<(), ClientError>(())
        };
        // v8 (KIP-709) asks for several groups at once, in its own layout.
        if version >= 8 {
            let topics = topics.map(|t| {
                t.iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopics::default()
                            .with_name(topic_name(name))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            });
            let request =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(group))
                    .with_topics(topics)]);
            let response = self.send(request, version).await?;
            let g = response
                .groups
                .iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| {
                    ClientError::Protocol("OffsetFetch answered without the group".into())
                })?;
            check("OffsetFetch", g.error_code, None)?;
            for t in &g.topics {
                for p in &t.partitions {
                    keep(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
                }
            }
        } else {
            let topics = topics.map(|t| {
                t.iter()
                    .map(|(name, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name(name))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            });
            let request = OffsetFetchRequest::default()
                .with_group_id(group_id(group))
                .with_topics(topics);
            let response = self.send(request, version).await?;
            if version >= 2 {
                check("OffsetFetch", response.error_code, None)?;
            }
            for t in &response.topics {
                for p in &t.partitions {
                    keep(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` for `group` as member `member_id` of
    /// `generation_id` (ask the coordinator). Generation -1 with an empty
    /// member id commits for a group with no active members, as Kafka's
    /// admin tools do. The first partition error fails the call.
    pub async fn offset_commit(
        &mut self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            by_topic.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(str_bytes(member_id))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self.request(request).await?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Broker {
                        api: "OffsetCommit",
                        code: p.error_code,
                        message: format!("{}-{}", t.name.0, p.partition_index),
                    });
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The group member.

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group_id: String,
    /// `session.timeout.ms`: silent this long, the coordinator drops the member.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`: how long the coordinator waits for members to rejoin.
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    pub request_timeout: Duration,
}

impl GroupConfig {
    pub fn new(group_id: &str) -> GroupConfig {
        GroupConfig {
            group_id: group_id.to_string(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// What the member and its heartbeat task share.
#[derive(Debug, Default)]
struct Membership {
    member_id: String,
    generation_id: i32,
    /// `host:port` of the coordinator, once found.
    coordinator: Option<String>,
    /// Heartbeats are sent only between a completed SyncGroup and the next
    /// JoinGroup, as the Java client does.
    active: bool,
}

#[derive(Debug, Default)]
struct Flags {
    rejoin: AtomicBool,
    coordinator_lost: AtomicBool,
}

pub struct GroupMember {
    bootstrap: String,
    /// Brokers of the cluster as last seen, for finding the coordinator.
    brokers: Vec<String>,
    config: GroupConfig,
    topics: Vec<String>,
    coordinator: Option<KafkaClient>,
    membership: Arc<Mutex<Membership>>,
    flags: Arc<Flags>,
    heartbeat: JoinHandle<()>,
    assignment: Assignment,
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl GroupMember {
    /// Joins `config.group_id` subscribed to `topics`; returns once the
    /// member has its first assignment.
    pub async fn join(
        bootstrap: &str,
        config: GroupConfig,
        topics: Vec<String>,
    ) -> Result<GroupMember, ClientError> {
        let membership = Arc::new(Mutex::new(Membership {
            generation_id: -1,
            ..Membership::default()
        }));
        let flags = Arc::new(Flags::default());
        let heartbeat = tokio::spawn(heartbeat_loop(
            config.clone(),
            membership.clone(),
            flags.clone(),
        ));
        let mut member = GroupMember {
            bootstrap: bootstrap.to_string(),
            brokers: Vec::new(),
            config,
            topics,
            coordinator: None,
            membership,
            flags,
            heartbeat,
            assignment: Assignment::new(),
        };
        member.rejoin().await?;
        Ok(member)
    }

    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    pub fn member_id(&self) -> String {
        self.lock().member_id.clone()
    }

    pub fn generation_id(&self) -> i32 {
        self.lock().generation_id
    }

    /// True when the coordinator asked for a rebalance (or forgot the
    /// member): the owner should commit what it can and [`Self::rejoin`].
    pub fn rebalance_needed(&self) -> bool {
        self.flags.rejoin.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Membership> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The coordinator connection, found (again, if it was lost) and
    /// connected if need be, taken out of the member for one exchange: a
    /// caller cancelled mid-request drops it with its unread answer, so no
    /// later request can read a stale one.
    async fn take_coordinator(&mut self) -> Result<KafkaClient, ClientError> {
        if self.flags.coordinator_lost.swap(false, Ordering::AcqRel) {
            self.coordinator = None;
        }
        if let Some(client) = self.coordinator.take() {
            return Ok(client);
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let address = loop {
            match self.discover().await {
                Ok(address) => break address,
                Err(e) if retriable_coordinator_error(&e) && Instant::now() < deadline => {
                    tracing::debug!("group {}: {e}; retrying", self.config.group_id);
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(e) => return Err(e),
            }
        };
        // JoinGroup is held until every member rejoined, up to the rebalance timeout.
        let timeout = self.config.request_timeout + self.config.rebalance_timeout;
        let client = KafkaClient::connect(&address, timeout).await?;
        self.lock().coordinator = Some(address);
        Ok(client)
    }

    /// FindCoordinator through the bootstrap servers or any broker seen
    /// since, so a coordinator's death is survived even when it was the
    /// bootstrap server.
    async fn discover(&mut self) -> Result<String, ClientError> {
        let addresses = std::iter::once(self.bootstrap.clone())
            .chain(self.brokers.iter().cloned())
            .collect::<Vec<_>>()
            .join(",");
        let mut client = KafkaClient::connect(&addresses, self.config.request_timeout).await?;
        let (_, address) = client.find_coordinator(&self.config.group_id).await?;
        if let Ok(metadata) = client.metadata(Some(Vec::new())).await {
            self.brokers = metadata
                .brokers
                .iter()
                .map(|b| broker_address(&b.host, b.port))
                .collect();
        }
        Ok(address)
    }

    /// Finds the coordinator again if the heartbeat task lost it, so that
    /// heartbeats resume (or the new coordinator says to rejoin) even when
    /// the owner has nothing to commit.
    pub async fn ensure_coordinator(&mut self) -> Result<(), ClientError> {
        if self.flags.coordinator_lost.load(Ordering::Acquire) {
            self.exchange(async |_| Ok(())).await?;
        }
        Ok(())
    }

    /// One exchange with the coordinator. The connection is kept for the
    /// next one unless it failed or the answer says the coordinator moved.
    async fn exchange<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut KafkaClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut client = self.take_coordinator().await?;
        let result = f(&mut client).await;
        let keep = match &result {
            Ok(_) => true,
            Err(e @ ClientError::Broker { .. }) => !matches!(
                kafka_error(e),
                Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)
            ),
            Err(_) => false,
        };
        if keep {
            self.coordinator = Some(client);
        }
        result
    }

    /// (Re)joins the group: JoinGroup, the leader's assignment, SyncGroup.
    /// Retries what Kafka says to retry until the rebalance timeout (plus
    /// a request timeout) passes.
    pub async fn rejoin(&mut self) -> Result<&Assignment, ClientError> {
        self.lock().active = false;
        self.flags.rejoin.store(false, Ordering::Release);
        let deadline = Instant::now() + self.config.rebalance_timeout + self.config.request_timeout;
        loop {
            match self.join_and_sync().await {
                Ok(assignment) => {
                    self.assignment = assignment;
                    self.lock().active = true;
                    return Ok(&self.assignment);
                }
                Err(e) => {
                    let again = match kafka_error(&e) {
                        Some(ResponseError::UnknownMemberId) => {
                            self.lock().member_id.clear();
                            true
                        }
                        Some(
                            ResponseError::RebalanceInProgress
                            | ResponseError::IllegalGeneration
                            | ResponseError::MemberIdRequired,
                        ) => true,
                        _ => retriable_coordinator_error(&e),
                    };
                    if !again || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!("group {}: {e}; rejoining", self.config.group_id);
                    if kafka_error(&e) != Some(ResponseError::MemberIdRequired) {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
            }
        }
    }

    async fn join_and_sync(&mut self) -> Result<Assignment, ClientError> {
        let metadata = encode_subscription(&self.topics)?;
        let group = self.config.group_id.clone();
        let member_id = self.member_id();
        let request = JoinGroupRequest::default()
            .with_group_id(group_id(&group))
            .with_session_timeout_ms(millis(self.config.session_timeout))
            .with_rebalance_timeout_ms(millis(self.config.rebalance_timeout))
            .with_member_id(str_bytes(&member_id))
            .with_protocol_type(str_bytes(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(str_bytes(RANGE))
                .with_metadata(metadata)]);
        let joined = self.exchange(async |c| c.request(request).await).await?;
        if joined.error_code == ResponseError::MemberIdRequired.code() {
            // KIP-394: the coordinator names us; join again with that id.
            self.lock().member_id = joined.member_id.to_string();
        }
        check("JoinGroup", joined.error_code, None)?;
        let member_id = joined.member_id.to_string();
        {
            let mut m = self.lock();
            m.member_id = member_id.clone();
            m.generation_id = joined.generation_id;
        }
        let protocol = joined
            .protocol_name
            .as_ref()
            .map_or_else(|| RANGE.to_string(), |p| p.to_string());
        // KIP-814: a static leader rejoining without change skips the assignment.
        let assignments = if joined.leader.as_str() == member_id && !joined.skip_assignment {
            self.assign(&joined.members).await?
        } else {
            Vec::new()
        };
        let synced = self
            .exchange(async |c| {
                let version = c.negotiated_version::<SyncGroupRequest>()?;
                let mut request = SyncGroupRequest::default()
                    .with_group_id(group_id(&group))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(str_bytes(&member_id))
                    .with_assignments(assignments);
                // v5 (KIP-559) names the protocol, which the coordinator checks.
                if version >= 5 {
                    request = request
                        .with_protocol_type(Some(str_bytes(PROTOCOL_TYPE)))
                        .with_protocol_name(Some(str_bytes(&protocol)));
                }
                c.send(request, version).await
            })
            .await?;
        check("SyncGroup", synced.error_code, None)?;
        decode_assignment(&synced.assignment)
    }

    /// The leader's work: everyone's subscription, the partition counts,
    /// Kafka's range assignment.
    async fn assign(
        &mut self,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let mut subscriptions = BTreeMap::new();
        for m in members {
            let topics = decode_subscription(&m.metadata).unwrap_or_else(|e| {
                tracing::warn!(
                    "group {}: member {}: {e}; it gets nothing",
                    self.config.group_id,
                    m.member_id
                );
                Vec::new()
            });
            subscriptions.insert(m.member_id.to_string(), topics);
        }
        let topics: BTreeSet<String> = subscriptions.values().flatten().cloned().collect();
        let topics: Vec<String> = topics.into_iter().collect();
        let metadata = self
            .exchange(async |c| c.metadata(Some(topics)).await)
            .await?;
        let partitions_per_topic: BTreeMap<String, i32> = metadata
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                let count = i32::try_from(t.partitions.len()).ok()?;
                Some((t.name.as_ref()?.0.to_string(), count))
            })
            .collect();
        range_assign(&subscriptions, &partitions_per_topic)
            .into_iter()
            .map(|(member, assignment)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(str_bytes(&member))
                    .with_assignment(encode_assignment(&assignment)?))
            })
            .collect()
    }

    /// The group's committed offsets for `partitions`.
    pub async fn committed(
        &mut self,
        partitions: &Assignment,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let group = self.config.group_id.clone();
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let result = self
                .exchange(async |c| c.offset_fetch(&group, Some(partitions)).await)
                .await;
            match result {
                Err(e)
                    if (retriable_coordinator_error(&e)
                        || kafka_error(&e) == Some(ResponseError::UnstableOffsetCommit))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// Commits `offsets` (the next offset to read, per partition) as this
    /// generation's member. A commit the coordinator refuses because the
    /// group moved on marks the member for a rejoin and fails.
    pub async fn commit(
        &mut self,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), ClientError> {
        let group = self.config.group_id.clone();
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let (generation_id, member_id) = {
                let m = self.lock();
                (m.generation_id, m.member_id.clone())
            };
            let result = self
                .exchange(async |c| {
                    c.offset_commit(&group, generation_id, &member_id, offsets)
                        .await
                })
                .await;
            let Err(e) = result else {
                return Ok(());
            };
            match kafka_error(&e) {
                Some(ResponseError::UnknownMemberId) => {
                    self.lock().member_id.clear();
                    self.flags.rejoin.store(true, Ordering::Release);
                    return Err(e);
                }
                Some(ResponseError::IllegalGeneration | ResponseError::RebalanceInProgress) => {
                    self.flags.rejoin.store(true, Ordering::Release);
                    return Err(e);
                }
                _ if retriable_coordinator_error(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                _ => return Err(e),
            }
        }
    }

    /// Leaves the group, so its partitions move at once rather than after
    /// the session timeout.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.heartbeat.abort();
        let group = self.config.group_id.clone();
        let member_id = {
            let mut m = self.lock();
            m.active = false;
            m.member_id.clone()
        };
        if member_id.is_empty() {
            return Ok(());
        }
        let response = self
            .exchange(async |c| {
                let version = c.negotiated_version::<LeaveGroupRequest>()?;
                // v3 (KIP-345) leaves in batches of member identities.
                let request = if version >= 3 {
                    LeaveGroupRequest::default()
                        .with_group_id(group_id(&group))
                        .with_members(vec![MemberIdentity::default()
                            .with_member_id(str_bytes(&member_id))
                            .with_reason(
                                (version >= 5).then(|| str_bytes("the consumer is closing")),
                            )])
                } else {
                    LeaveGroupRequest::default()
                        .with_group_id(group_id(&group))
                        .with_member_id(str_bytes(&member_id))
                };
                c.send(request, version).await
            })
            .await?;
        // A member the coordinator already dropped has nothing to leave.
        let gone = ResponseError::UnknownMemberId.code();
        let codes = std::iter::once(response.error_code)
            .chain(response.members.iter().map(|m| m.error_code));
        for code in codes.filter(|c| *c != gone) {
            check("LeaveGroup", code, None)?;
        }
        Ok(())
    }
}

/// Errors after which asking again (after finding the coordinator again)
/// can succeed.
fn retriable_coordinator_error(e: &ClientError) -> bool {
    match e {
        ClientError::Broker { code, .. } => matches!(
            ResponseError::try_from_code(*code),
            Some(
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
            )
        ),
        ClientError::Io(_) | ClientError::Timeout(_) => true,
        ClientError::Protocol(_) => false,
    }
}

/// Heartbeats every `heartbeat_interval` while the member is active; what
/// the coordinator answers becomes a flag for the owner.
async fn heartbeat_loop(
    config: GroupConfig,
    membership: Arc<Mutex<Membership>>,
    flags: Arc<Flags>,
) {
    let mut connection: Option<(String, KafkaClient)> = None;
    let mut ticks = tokio::time::interval(config.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (member_id, generation_id, coordinator, active) = {
            let m = membership
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (
                m.member_id.clone(),
                m.generation_id,
                m.coordinator.clone(),
                m.active,
            )
        };
        let Some(address) = coordinator else {
            continue;
        };
        if !active || flags.rejoin.load(Ordering::Acquire) {
            continue;
        }
        if connection.as_ref().is_none_or(|(a, _)| *a != address) {
            match KafkaClient::connect(&address, config.request_timeout).await {
                Ok(client) => connection = Some((address, client)),
                Err(e) => {
                    tracing::debug!("group {}: heartbeat connection: {e}", config.group_id);
                    flags.coordinator_lost.store(true, Ordering::Release);
                    continue;
                }
            }
        }
        let Some((_, client)) = connection.as_mut() else {
            continue;
        };
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(&config.group_id))
            .with_generation_id(generation_id)
            .with_member_id(str_bytes(&member_id));
        let code = match client.request(request).await {
            Ok(response) => response.error_code,
            Err(e) => {
                tracing::debug!("group {}: heartbeat: {e}", config.group_id);
                connection = None;
                flags.coordinator_lost.store(true, Ordering::Release);
                continue;
            }
        };
        match ResponseError::try_from_code(code) {
            None | Some(ResponseError::CoordinatorLoadInProgress) => {}
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                flags.rejoin.store(true, Ordering::Release);
            }
            Some(ResponseError::UnknownMemberId | ResponseError::FencedInstanceId) => {
                membership
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .member_id
                    .clear();
                flags.rejoin.store(true, Ordering::Release);
            }
            Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
                connection = None;
                flags.coordinator_lost.store(true, Ordering::Release);
            }
            Some(e) => tracing::warn!("group {}: heartbeat: {e:?}", config.group_id),
        }
    }
}

// ---------------------------------------------------------------------------
// A consumer of one topic as a group member.

/// A [`Consumer`] whose partitions come from the group: it starts each at
/// the group's committed offset (else by the reset policy), commits what
/// its owner marked consumed, and follows rebalances.
pub struct GroupConsumer {
    bootstrap: String,
    topic: String,
    config: ConsumerConfig,
    member: GroupMember,
    consumer: Consumer,
    /// The next offset to commit per partition: one past the last record
    /// the owner marked consumed, or where the partition started.
    consumed: BTreeMap<i32, i64>,
    /// What the group last accepted, so an unchanged position is not sent again.
    committed: BTreeMap<i32, i64>,
}

impl GroupConsumer {
    pub async fn subscribe(
        bootstrap: &str,
        topic: &str,
        group: GroupConfig,
        config: ConsumerConfig,
    ) -> Result<GroupConsumer, ConsumeError> {
        let mut member = GroupMember::join(bootstrap, group, vec![topic.to_string()]).await?;
        let started = start_consumer(&mut member, bootstrap, topic, &config).await?;
        Ok(GroupConsumer {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            config,
            member,
            consumer: started.consumer,
            consumed: started.consumed,
            committed: started.committed,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn member(&self) -> &GroupMember {
        &self.member
    }

    /// This member's partitions of the topic.
    pub fn partitions(&self) -> Vec<i32> {
        self.member
            .assignment()
            .get(&self.topic)
            .cloned()
            .unwrap_or_default()
    }

    /// A new consumer for the member's current partitions.
    async fn take_assignment(&mut self) -> Result<(), ConsumeError> {
        let started =
            start_consumer(&mut self.member, &self.bootstrap, &self.topic, &self.config).await?;
        self.consumer = started.consumer;
        self.consumed = started.consumed;
        self.committed = started.committed;
        Ok(())
    }

    /// Records from the member's partitions; follows a rebalance first if
    /// the coordinator asked for one (committing what was consumed).
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ConsumeError> {
        if let Err(e) = self.member.ensure_coordinator().await {
            // The next exchange tries again; the fetches go on meanwhile.
            tracing::debug!("group {}: {e}", self.member.group_id());
        }
        if self.member.rebalance_needed() {
            if let Err(e) = self.commit().await {
                tracing::debug!("commit before rebalance: {e}");
            }
            // Positions of the old assignment are not ours to commit any more.
            self.consumed.clear();
            self.committed.clear();
            self.member.rejoin().await?;
            self.take_assignment().await?;
        }
        if self.partitions().is_empty() {
            // Nothing to fetch: wait as a long poll would.
            tokio::time::sleep(self.config.max_wait).await;
            return Ok(Vec::new());
        }
        let records = self.consumer.poll().await?;
        for (p, offset) in self.consumer.positions() {
            // A partition whose start only this poll found, with nothing
            // read yet: it starts there.
            if !self.consumed.contains_key(&p) && !records.iter().any(|r| r.partition == p) {
                self.consumed.insert(p, offset);
            }
        }
        Ok(records)
    }

    /// Marks `record` as processed: the next commit covers it.
    pub fn mark_consumed(&mut self, record: &ConsumedRecord) {
        let next = record.offset + 1;
        let entry = self.consumed.entry(record.partition).or_insert(next);
        *entry = (*entry).max(next);
    }

    /// Commits every partition's consumed position that changed.
    pub async fn commit(&mut self) -> Result<(), ConsumeError> {
        let owned: BTreeSet<i32> = self.partitions().into_iter().collect();
        let offsets: BTreeMap<(String, i32), i64> = self
            .consumed
            .iter()
            .filter(|(p, o)| owned.contains(p) && self.committed.get(p) != Some(o))
            .map(|(p, o)| ((self.topic.clone(), *p), *o))
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.member.commit(&offsets).await?;
        for ((_, p), o) in offsets {
            self.committed.insert(p, o);
        }
        Ok(())
    }

    /// Commits and leaves the group.
    pub async fn close(mut self) -> Result<(), ConsumeError> {
        let committed = self.commit().await;
        let left = self.member.leave().await;
        committed?;
        left.map_err(ConsumeError::from)
    }
}

/// A consumer for a member's partitions and where each starts.
struct Started {
    consumer: Consumer,
    /// Each partition's start: the committed offset, or the reset policy's.
    consumed: BTreeMap<i32, i64>,
    committed: BTreeMap<i32, i64>,
}

/// A consumer for `member`'s partitions of `topic`, each at the group's
/// committed offset or, without one, where the reset policy says.
async fn start_consumer(
    member: &mut GroupMember,
    bootstrap: &str,
    topic: &str,
    config: &ConsumerConfig,
) -> Result<Started, ConsumeError> {
    let partitions = member.assignment().get(topic).cloned().unwrap_or_default();
    let start = match config.reset {
        OffsetReset::Earliest => StartOffset::Earliest,
        _ => StartOffset::Latest,
    };
    let mut consumer = Consumer::assign(
        bootstrap,
        topic,
        Some(partitions.clone()),
        start,
        config.clone(),
    )
    .await?;
    let mut wanted = Assignment::new();
    wanted.insert(topic.to_string(), partitions.clone());
    let committed: BTreeMap<i32, i64> = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        member
            .committed(&wanted)
            .await?
            .into_iter()
            .map(|((_, p), o)| (p, o))
            .collect()
    };
    let uncommitted: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| !committed.contains_key(p))
        .collect();
    let reset = if uncommitted.is_empty() {
        BTreeMap::new()
    } else {
        consumer.list_offsets(start).await?
    };
    let mut consumed = committed.clone();
    for (partition, offset) in &committed {
        consumer.seek(*partition, *offset);
    }
    // A partition whose leader did not answer is left to the first poll.
    for p in uncommitted {
        if let Some(offset) = reset.get(&p) {
            consumer.seek(p, *offset);
            consumed.insert(p, *offset);
        }
    }
    Ok(Started {
        consumer,
        consumed,
        committed,
    })
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter()
            .map(|(m, topics)| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn assignment(list: &[(&str, &[i32])]) -> Assignment {
        list.iter()
            .map(|(t, ps)| (t.to_string(), ps.to_vec()))
            .collect()
    }

    /// The example in Kafka's `RangeAssignor` javadoc: two consumers, two
    /// topics of three partitions each.
    #[test]
    fn range_matches_the_kafka_javadoc_example() {
        let got = range_assign(
            &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(got["C0"], assignment(&[("t0", &[0, 1]), ("t1", &[0, 1])]));
        assert_eq!(got["C1"], assignment(&[("t0", &[2]), ("t1", &[2])]));
    }

    /// `RangeAssignorTest.testOneConsumerMultipleTopics`,
    /// `testTwoConsumersOneTopicOnePartition`, `testMultipleConsumersMixedTopics`.
    #[test]
    fn range_matches_kafka_unit_tests() {
        let got = range_assign(
            &subs(&[("consumer", &["t1", "t2"])]),
            &counts(&[("t1", 1), ("t2", 2)]),
        );
        assert_eq!(
            got["consumer"],
            assignment(&[("t1", &[0]), ("t2", &[0, 1])])
        );

        let got = range_assign(
            &subs(&[("consumer1", &["t"]), ("consumer2", &["t"])]),
            &counts(&[("t", 1)]),
        );
        assert_eq!(got["consumer1"], assignment(&[("t", &[0])]));
        assert_eq!(got["consumer2"], Assignment::new());

        // consumer1 and consumer3 take t1; all three take t2.
        let got = range_assign(
            &subs(&[
                ("consumer1", &["t1"]),
                ("consumer2", &["t1", "t2"]),
                ("consumer3", &["t1"]),
            ]),
            &counts(&[("t1", 3), ("t2", 2)]),
        );
        assert_eq!(got["consumer1"], assignment(&[("t1", &[0])]));
        assert_eq!(
            got["consumer2"],
            assignment(&[("t1", &[1]), ("t2", &[0, 1])])
        );
        assert_eq!(got["consumer3"], assignment(&[("t1", &[2])]));
    }

    #[test]
    fn range_orders_members_by_id_and_covers_every_partition_once() {
        // Inserted out of order: the map sorts, as Kafka sorts member ids.
        let got = range_assign(
            &subs(&[("m-b", &["t"]), ("m-a", &["t"]), ("m-c", &["t"])]),
            &counts(&[("t", 7), ("unsubscribed", 4)]),
        );
        assert_eq!(got["m-a"], assignment(&[("t", &[0, 1, 2])]));
        assert_eq!(got["m-b"], assignment(&[("t", &[3, 4])]));
        assert_eq!(got["m-c"], assignment(&[("t", &[5, 6])]));
        // A topic without a partition count goes to nobody.
        let got = range_assign(&subs(&[("m", &["gone"])]), &counts(&[]));
        assert_eq!(got["m"], Assignment::new());
    }

    #[test]
    fn subscription_bytes_are_kafkas_and_round_trip() {
        let bytes = encode_subscription(&["orders".into(), "payments".into()]).unwrap();
        // Version 0, then an array of two strings, then null user data.
        let mut expected = vec![0, 0, 0, 0, 0, 2, 0, 6];
        expected.extend_from_slice(b"orders");
        expected.extend_from_slice(&[0, 8]);
        expected.extend_from_slice(b"payments");
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(
            decode_subscription(&bytes).unwrap(),
            vec!["orders".to_string(), "payments".to_string()]
        );
    }

    #[test]
    fn newer_subscriptions_are_read_for_their_topics() {
        // A v3 subscription as a newer Java client writes it.
        let s = ConsumerProtocolSubscription::default()
            .with_topics(vec![str_bytes("orders")])
            .with_generation_id(7)
            .with_rack_id(Some(str_bytes("rack-a")));
        let bytes = encode_versioned(&s, 3).unwrap();
        assert_eq!(
            decode_subscription(&bytes).unwrap(),
            vec!["orders".to_string()]
        );
        assert!(decode_subscription(&[0]).is_err());
        assert!(decode_subscription(&[0xff, 0xff, 0, 0]).is_err());
        assert!(decode_subscription(&[0, 0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn assignment_bytes_round_trip() {
        let a = assignment(&[("orders", &[0, 2]), ("payments", &[1])]);
        let bytes = encode_assignment(&a).unwrap();
        assert_eq!(&bytes[..2], &[0, 0], "version 0 prefix");
        assert_eq!(decode_assignment(&bytes).unwrap(), a);
        assert_eq!(decode_assignment(&[]).unwrap(), Assignment::new());
        assert!(decode_assignment(&bytes[..bytes.len() - 3]).is_err());
    }
}
