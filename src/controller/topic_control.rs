//! The active controller's topic manager (Kafka's `ReplicationControlManager`
//! and `ConfigurationControlManager`): validates topic changes against the
//! leader's image and *generates* the metadata records that make them, one
//! entry per request so that a request's changes apply together or not at
//! all. Nothing here mutates state; replay does.
//!
//! Validation and proposal happen under one lock, so two creates of the
//! same name, or a create racing a delete, are judged one after the other
//! against an image that already holds the first one's records
//! (`Controller::write` returns once the entry is applied on the leader).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{Controller, ControllerError};
use crate::metadata::image::TopicImage;
use crate::metadata::records::ConfigResourceType;
use crate::metadata::{MetadataImage, MetadataRecord};
use crate::topic_config;

/// Kafka's limit on topic name length (`Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// Kafka's own metadata topic; it cannot be created as a user topic.
const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Why one topic's change was refused; the Kafka handlers map each kind to
/// its error code.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicErrorKind {
    TopicAlreadyExists,
    InvalidTopic,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidReplicaAssignment,
    InvalidConfig,
    InvalidRequest,
    UnknownTopic,
    UnknownTopicId,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TopicError {
    pub kind: TopicErrorKind,
    pub message: String,
}

fn refuse<T>(kind: TopicErrorKind, message: impl Into<String>) -> Result<T, TopicError> {
    Err(TopicError {
        kind,
        message: message.into(),
    })
}

/// Manual placement of one partition (CreateTopics' `assignments`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAssignment {
    pub partition_index: i32,
    pub broker_ids: Vec<i32>,
}

/// One topic to create. The Kafka handler has already replaced -1 with the
/// broker defaults, unless `assignments` decide the layout.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub assignments: Vec<ReplicaAssignment>,
    /// Config overrides; a `None` value is refused, as Kafka does.
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CreateTopicsRequest {
    pub topics: Vec<NewTopic>,
    pub validate_only: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub name: String,
    /// Nil when refused.
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub result: Result<(), TopicError>,
}

/// Every answer carries the metadata offset that holds the change (or, if
/// nothing was written, the offset it was judged at), so a broker can wait
/// for its own image to catch up before it reports the new state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsReply {
    pub topics: Vec<CreatedTopic>,
    pub metadata_offset: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeletedTopic {
    pub name: Option<String>,
    pub topic_id: Uuid,
    pub result: Result<(), TopicError>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsReply {
    pub topics: Vec<DeletedTopic>,
    pub metadata_offset: u64,
}

/// Grow a topic to `count` partitions.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PartitionIncrease {
    pub name: String,
    pub count: i32,
    /// Replicas of each new partition, in order; `None` lets the controller place them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CreatePartitionsRequest {
    pub topics: Vec<PartitionIncrease>,
    pub validate_only: bool,
}

/// Per-name results of CreatePartitions and of config changes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NamedResults {
    pub results: Vec<(String, Result<(), TopicError>)>,
    pub metadata_offset: u64,
}

/// Kafka's `AlterConfigOp.OpType`, with its wire ids.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl AlterConfigOp {
    pub fn from_kafka_id(id: i8) -> Option<AlterConfigOp> {
        match id {
            0 => Some(AlterConfigOp::Set),
            1 => Some(AlterConfigOp::Delete),
            2 => Some(AlterConfigOp::Append),
            3 => Some(AlterConfigOp::Subtract),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub name: String,
    pub op: AlterConfigOp,
    pub value: Option<String>,
}

/// Config changes to one topic.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TopicConfigChanges {
    pub topic: String,
    pub changes: Vec<ConfigChange>,
    /// Legacy AlterConfigs: the listed keys become the whole override set,
    /// every other override is removed.
    pub replace_all: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AlterTopicConfigsRequest {
    pub resources: Vec<TopicConfigChanges>,
    pub validate_only: bool,
}

/// Kafka's `Topic.validate`: the rules a topic name must follow.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Kafka's collision rule: metric names replace '.' with '_', so two topics
/// whose names differ only there cannot both exist.
pub fn unify_collision_chars(name: &str) -> String {
    name.replace('.', "_")
}

/// Chooses replicas for `count` new partitions over `brokers` (active, in id
/// order): each leader is the broker that leads fewest partitions so far,
/// counting those it already leads, ties to the lowest id; the other
/// replicas follow it round the ring. `leaders` is updated as it goes, so
/// successive topics of one request spread too.
pub fn place_partitions(
    count: i32,
    replication_factor: i16,
    brokers: &[i32],
    leaders: &mut BTreeMap<i32, usize>,
) -> Vec<Vec<i32>> {
    let rf = usize::try_from(replication_factor)
        .unwrap_or(0)
        .min(brokers.len());
    (0..count)
        .filter_map(|_| {
            let (pos, leader) = brokers
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| (leaders.get(b).copied().unwrap_or(0), **b))?;
            *leaders.entry(*leader).or_default() += 1;
            Some(
                (0..rf)
                    .map(|i| brokers[(pos + i) % brokers.len()])
                    .collect(),
            )
        })
        .collect()
}

/// Partitions each broker leads in `image`.
fn leader_counts(image: &MetadataImage) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for topic in image.topics.by_id.values() {
        for p in topic.partitions.values() {
            *counts.entry(p.leader).or_default() += 1;
        }
    }
    counts
}

fn active_brokers(image: &MetadataImage) -> Vec<i32> {
    image
        .cluster
        .active_brokers()
        .map(|b| b.broker_id)
        .collect()
}

/// New partitions: the first replica leads, and the ISR is the replicas
/// that are active now (Kafka's rule), so a fenced broker named in a manual
/// assignment joins only once it has caught up.
fn partition_records(
    image: &MetadataImage,
    topic_id: Uuid,
    first: i32,
    replicas: Vec<Vec<i32>>,
) -> Vec<MetadataRecord> {
    replicas
        .into_iter()
        .zip(first..)
        .map(|(replicas, partition_id)| {
            let leader = replicas.first().copied().unwrap_or(-1);
            let isr = replicas
                .iter()
                .copied()
                .filter(|r| *r == leader || image.cluster.is_active(*r))
                .collect();
            MetadataRecord::Partition {
                topic_id,
                partition_id,
                isr,
                leader,
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }
        })
        .collect()
}

fn check_replication_factor(rf: i16, active: usize) -> Result<(), TopicError> {
    if rf < 1 {
        return refuse(
            TopicErrorKind::InvalidReplicationFactor,
            format!("Replication factor must be larger than 0, got {rf}."),
        );
    }
    if usize::try_from(rf).unwrap_or(usize::MAX) > active {
        return refuse(
            TopicErrorKind::InvalidReplicationFactor,
            format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {active} broker(s) are registered and unfenced."),
        );
    }
    Ok(())
}

/// Checks manual replica lists: registered brokers, no repeats, one
/// replication factor, at least one live replica to lead.
fn check_assignment(
    image: &MetadataImage,
    partition: i32,
    replicas: &[i32],
    expected_rf: Option<usize>,
) -> Result<(), TopicError> {
    let invalid = |m: String| refuse(TopicErrorKind::InvalidReplicaAssignment, m);
    if replicas.is_empty() {
        return invalid(format!(
            "The manual partition assignment for partition {partition} is empty."
        ));
    }
    if let Some(rf) = expected_rf.filter(|rf| *rf != replicas.len()) {
        return invalid(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
            replicas.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for id in replicas {
        if !seen.insert(id) {
            return invalid(format!(
                "The manual partition assignment for partition {partition} includes broker {id} more than once."
            ));
        }
        if !image.cluster.brokers.contains_key(id) {
            return invalid(format!(
                "The manual partition assignment for partition {partition} includes broker {id}, which is not registered."
            ));
        }
    }
    if !replicas
        .iter()
        .any(|id| image.cluster.brokers.get(id).is_some_and(|b| !b.fenced))
    {
        return invalid(format!(
            "All brokers specified in the partition assignment for partition {partition} are fenced."
        ));
    }
    Ok(())
}

/// Live replicas lead: the first active one goes first.
fn with_live_leader(image: &MetadataImage, replicas: Vec<i32>) -> Vec<i32> {
    let live = |id: &i32| image.cluster.is_active(*id);
    let mut ordered: Vec<i32> = replicas.iter().copied().filter(live).collect();
    ordered.extend(replicas.iter().copied().filter(|id| !live(id)));
    ordered
}

/// Validated override values of a new topic.
fn check_new_configs(
    configs: &[(String, Option<String>)],
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut out = BTreeMap::new();
    for (name, value) in configs {
        let Some(value) = value else {
            return refuse(
                TopicErrorKind::InvalidConfig,
                format!("Null value not supported for topic configs: {name}"),
            );
        };
        topic_config::validate(name, value).map_err(|e| TopicError {
            kind: TopicErrorKind::InvalidConfig,
            message: e.message,
        })?;
        if out.insert(name.clone(), value.trim().to_string()).is_some() {
            return refuse(
                TopicErrorKind::InvalidRequest,
                format!("Duplicate config key {name}"),
            );
        }
    }
    Ok(out)
}

fn config_records(topic: &str, configs: &BTreeMap<String, Option<String>>) -> Vec<MetadataRecord> {
    configs
        .iter()
        .map(|(name, value)| MetadataRecord::Config {
            resource_type: ConfigResourceType::Topic,
            resource_name: topic.to_string(),
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub(super) struct TopicControl {
    /// Held across validate + propose; see the module docs. Partition
    /// leadership and ISR changes (`replication_control`) and broker
    /// fencing take it too, so every partition change is judged against an
    /// image that holds the previous one.
    pub(super) lock: Mutex<()>,
}

impl TopicControl {
    pub(super) fn new() -> Self {
        TopicControl {
            lock: Mutex::new(()),
        }
    }

    /// The leader's image, or NotController so the request is routed again.
    fn image(controller: &Controller) -> Result<std::sync::Arc<MetadataImage>, ControllerError> {
        if !controller.is_leader() {
            return Err(ControllerError::NotController);
        }
        Ok(controller.image.borrow().clone())
    }

    /// Writes `records` (if any and not `validate_only`) and returns the
    /// offset that holds them, else the offset they were judged at.
    async fn commit(
        controller: &Controller,
        image: &MetadataImage,
        records: Vec<MetadataRecord>,
        validate_only: bool,
    ) -> Result<u64, ControllerError> {
        if records.is_empty() || validate_only {
            return Ok(image.offset);
        }
        controller.write(records).await
    }

    pub(super) async fn create_topics(
        &self,
        controller: &Controller,
        req: CreateTopicsRequest,
    ) -> Result<CreateTopicsReply, ControllerError> {
        let _guard = self.lock.lock().await;
        let image = Self::image(controller)?;
        let brokers = active_brokers(&image);
        let mut leaders = leader_counts(&image);
        let mut names_in_request: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &req.topics {
            *names_in_request.entry(t.name.as_str()).or_default() += 1;
        }
        // Collision keys of existing topics and of those accepted so far.
        let mut taken: BTreeMap<String, String> = image
            .topics
            .ids_by_name
            .keys()
            .map(|n| (unify_collision_chars(n), n.clone()))
            .collect();
        let mut records = Vec::new();
        let mut topics = Vec::new();
        for t in &req.topics {
            let duplicate = names_in_request.get(t.name.as_str()).copied().unwrap_or(0) > 1;
            let outcome = if duplicate {
                refuse(
                    TopicErrorKind::InvalidRequest,
                    format!("Duplicate topic name: {}", t.name),
                )
            } else {
                self.plan_topic(&image, t, &brokers, &mut leaders, &taken)
            };
            match outcome {
                Ok((topic_id, replicas, configs)) => {
                    taken.insert(unify_collision_chars(&t.name), t.name.clone());
                    let rf = replicas.first().map_or(0, |r| r.len() as i16);
                    let count = replicas.len() as i32;
                    records.push(MetadataRecord::Topic {
                        name: t.name.clone(),
                        topic_id,
                    });
                    records.extend(partition_records(&image, topic_id, 0, replicas));
                    let configs = configs.into_iter().map(|(k, v)| (k, Some(v))).collect();
                    records.extend(config_records(&t.name, &configs));
                    topics.push(CreatedTopic {
                        name: t.name.clone(),
                        topic_id,
                        num_partitions: count,
                        replication_factor: rf,
                        result: Ok(()),
                    });
                }
                Err(e) => topics.push(CreatedTopic {
                    name: t.name.clone(),
                    topic_id: Uuid::nil(),
                    num_partitions: -1,
                    replication_factor: -1,
                    result: Err(e),
                }),
            }
        }
        let metadata_offset = Self::commit(controller, &image, records, req.validate_only).await?;
        if !req.validate_only {
            for t in topics.iter().filter(|t| t.result.is_ok()) {
                tracing::info!(topic = %t.name, id = %t.topic_id, partitions = t.num_partitions, "topic created");
            }
        }
        Ok(CreateTopicsReply {
            topics,
            metadata_offset,
        })
    }

    /// The id, replica lists and overrides of one new topic, or why not.
    #[allow(clippy::type_complexity)]
    fn plan_topic(
        &self,
        image: &MetadataImage,
        t: &NewTopic,
        brokers: &[i32],
        leaders: &mut BTreeMap<i32, usize>,
        taken: &BTreeMap<String, String>,
    ) -> Result<(Uuid, Vec<Vec<i32>>, BTreeMap<String, String>), TopicError> {
        validate_topic_name(&t.name).or_else(|m| refuse(TopicErrorKind::InvalidTopic, m))?;
        if t.name == CLUSTER_METADATA_TOPIC {
            return refuse(
                TopicErrorKind::InvalidRequest,
                format!("Creation of internal topic {CLUSTER_METADATA_TOPIC} is prohibited."),
            );
        }
        if image.topics.ids_by_name.contains_key(&t.name) {
            return refuse(
                TopicErrorKind::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            );
        }
        if let Some(existing) = taken.get(&unify_collision_chars(&t.name)) {
            return refuse(
                TopicErrorKind::InvalidTopic,
                format!(
                    "Topic '{}' collides with existing topic: {existing}",
                    t.name
                ),
            );
        }
        // Checked after the layout (Kafka's order), before anything is
        // placed, so a refused topic does not skew the spread of the rest.
        let configs;
        let replicas = if t.assignments.is_empty() {
            if t.num_partitions < 1 {
                return refuse(
                    TopicErrorKind::InvalidPartitions,
                    format!(
                        "Number of partitions was set to an invalid non-positive value: {}.",
                        t.num_partitions
                    ),
                );
            }
            check_replication_factor(t.replication_factor, brokers.len())?;
            configs = check_new_configs(&t.configs)?;
            place_partitions(t.num_partitions, t.replication_factor, brokers, leaders)
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return refuse(
                    TopicErrorKind::InvalidRequest,
                    "A manual partition assignment was specified, but numPartitions or replicationFactor was not set to -1.",
                );
            }
            let mut by_index = BTreeMap::new();
            for a in &t.assignments {
                if by_index
                    .insert(a.partition_index, a.broker_ids.clone())
                    .is_some()
                {
                    return refuse(
                        TopicErrorKind::InvalidReplicaAssignment,
                        format!(
                            "Partition {} appears more than once in the assignment.",
                            a.partition_index
                        ),
                    );
                }
            }
            let expected: Vec<i32> = (0..by_index.len() as i32).collect();
            if by_index.keys().copied().collect::<Vec<_>>() != expected {
                return refuse(
                    TopicErrorKind::InvalidReplicaAssignment,
                    "Partitions should be numbered 0 to the number of partitions - 1 in the manual assignment.",
                );
            }
            let mut rf = None;
            for (index, replicas) in &by_index {
                check_assignment(image, *index, replicas, rf)?;
                rf = Some(replicas.len());
            }
            configs = check_new_configs(&t.configs)?;
            let replicas: Vec<Vec<i32>> = by_index
                .into_values()
                .map(|r| with_live_leader(image, r))
                .collect();
            for r in &replicas {
                if let Some(l) = r.first() {
                    *leaders.entry(*l).or_default() += 1;
                }
            }
            replicas
        };
        Ok((Uuid::new_v4(), replicas, configs))
    }

    pub(super) async fn delete_topics(
        &self,
        controller: &Controller,
        topics: Vec<TopicRef>,
    ) -> Result<DeleteTopicsReply, ControllerError> {
        let _guard = self.lock.lock().await;
        let image = Self::image(controller)?;
        let mut seen = HashSet::new();
        let duplicates: HashSet<&TopicRef> = topics.iter().filter(|t| !seen.insert(*t)).collect();
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut removed = HashSet::new();
        for t in &topics {
            let found: Option<&TopicImage> = match t {
                TopicRef::Name(name) => image.topics.get(name),
                TopicRef::Id(id) => image.topics.by_id.get(id),
            };
            let (name, topic_id) = match t {
                TopicRef::Name(n) => (Some(n.clone()), found.map_or(Uuid::nil(), |f| f.topic_id)),
                TopicRef::Id(id) => (found.map(|f| f.name.clone()), *id),
            };
            let result = if duplicates.contains(t) {
                refuse(
                    TopicErrorKind::InvalidRequest,
                    "Duplicate topic name or id in the request.",
                )
            } else {
                match (found, t) {
                    (Some(topic), _) => {
                        if removed.insert(topic.topic_id) {
                            records.push(MetadataRecord::RemoveTopic {
                                topic_id: topic.topic_id,
                            });
                        }
                        Ok(())
                    }
                    (None, TopicRef::Name(n)) => refuse(
                        TopicErrorKind::UnknownTopic,
                        format!("This server does not host this topic: {n}"),
                    ),
                    (None, TopicRef::Id(id)) => refuse(
                        TopicErrorKind::UnknownTopicId,
                        format!("This server does not host this topic ID: {id}"),
                    ),
                }
            };
            results.push(DeletedTopic {
                name,
                topic_id,
                result,
            });
        }
        let metadata_offset = Self::commit(controller, &image, records, false).await?;
        for t in results.iter().filter(|t| t.result.is_ok()) {
            tracing::info!(topic = ?t.name, id = %t.topic_id, "topic deleted");
        }
        Ok(DeleteTopicsReply {
            topics: results,
            metadata_offset,
        })
    }

    pub(super) async fn create_partitions(
        &self,
        controller: &Controller,
        req: CreatePartitionsRequest,
    ) -> Result<NamedResults, ControllerError> {
        let _guard = self.lock.lock().await;
        let image = Self::image(controller)?;
        let brokers = active_brokers(&image);
        let mut leaders = leader_counts(&image);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.as_str()).or_default() += 1;
        }
        let mut records = Vec::new();
        let mut results = Vec::new();
        for t in &req.topics {
            let outcome = if counts.get(t.name.as_str()).copied().unwrap_or(0) > 1 {
                refuse(
                    TopicErrorKind::InvalidRequest,
                    format!("Duplicate topic name: {}", t.name),
                )
            } else {
                Self::plan_increase(&image, t, &brokers, &mut leaders)
            };
            match outcome {
                Ok(new_records) => {
                    records.extend(new_records);
                    results.push((t.name.clone(), Ok(())));
                }
                Err(e) => results.push((t.name.clone(), Err(e))),
            }
        }
        let metadata_offset = Self::commit(controller, &image, records, req.validate_only).await?;
        Ok(NamedResults {
            results,
            metadata_offset,
        })
    }

    fn plan_increase(
        image: &MetadataImage,
        t: &PartitionIncrease,
        brokers: &[i32],
        leaders: &mut BTreeMap<i32, usize>,
    ) -> Result<Vec<MetadataRecord>, TopicError> {
        let Some(topic) = image.topics.get(&t.name) else {
            return refuse(
                TopicErrorKind::UnknownTopic,
                format!("This server does not host this topic: {}", t.name),
            );
        };
        let current = topic.partitions.len() as i32;
        if t.count < current {
            return refuse(
                TopicErrorKind::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than the requested {}.", t.count),
            );
        }
        if t.count == current {
            return refuse(
                TopicErrorKind::InvalidPartitions,
                format!("Topic already has {current} partitions."),
            );
        }
        let rf = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len());
        let added = t.count - current;
        let replicas = match &t.assignments {
            None => {
                check_replication_factor(rf as i16, brokers.len())?;
                place_partitions(added, rf as i16, brokers, leaders)
            }
            Some(assignments) => {
                if assignments.len() as i32 != added {
                    return refuse(
                        TopicErrorKind::InvalidReplicaAssignment,
                        format!("Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.", assignments.len()),
                    );
                }
                for (i, replicas) in assignments.iter().enumerate() {
                    check_assignment(image, current + i as i32, replicas, Some(rf))?;
                }
                let replicas: Vec<Vec<i32>> = assignments
                    .iter()
                    .map(|r| with_live_leader(image, r.clone()))
                    .collect();
                for r in &replicas {
                    if let Some(l) = r.first() {
                        *leaders.entry(*l).or_default() += 1;
                    }
                }
                replicas
            }
        };
        Ok(partition_records(image, topic.topic_id, current, replicas))
    }

    pub(super) async fn alter_topic_configs(
        &self,
        controller: &Controller,
        req: AlterTopicConfigsRequest,
    ) -> Result<NamedResults, ControllerError> {
        let _guard = self.lock.lock().await;
        let image = Self::image(controller)?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        for r in &req.resources {
            match Self::plan_config_changes(&image, r) {
                Ok(changes) => {
                    records.extend(config_records(&r.topic, &changes));
                    results.push((r.topic.clone(), Ok(())));
                }
                Err(e) => results.push((r.topic.clone(), Err(e))),
            }
        }
        let metadata_offset = Self::commit(controller, &image, records, req.validate_only).await?;
        Ok(NamedResults {
            results,
            metadata_offset,
        })
    }

    /// The keys to set (`Some`) or remove (`None`) for one topic.
    fn plan_config_changes(
        image: &MetadataImage,
        r: &TopicConfigChanges,
    ) -> Result<BTreeMap<String, Option<String>>, TopicError> {
        if !image.topics.ids_by_name.contains_key(&r.topic) {
            return refuse(
                TopicErrorKind::UnknownTopic,
                format!("The topic '{}' does not exist.", r.topic),
            );
        }
        let current = image
            .configs
            .get(ConfigResourceType::Topic, &r.topic)
            .cloned()
            .unwrap_or_default();
        let mut seen = HashSet::new();
        let mut next = if r.replace_all {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for c in &r.changes {
            if !seen.insert(c.name.as_str()) {
                return refuse(
                    TopicErrorKind::InvalidRequest,
                    format!("Error due to duplicate config keys: {}", c.name),
                );
            }
            if topic_config::definition(&c.name).is_none() {
                return refuse(
                    TopicErrorKind::InvalidConfig,
                    format!("Unknown topic config name: {}", c.name),
                );
            }
            let value = c.value.as_deref().map(str::trim);
            match c.op {
                AlterConfigOp::Set => match value {
                    Some(v) => {
                        next.insert(c.name.clone(), v.to_string());
                    }
                    None => {
                        return refuse(
                            TopicErrorKind::InvalidRequest,
                            format!("Null value not supported for: {}", c.name),
                        )
                    }
                },
                AlterConfigOp::Delete => {
                    next.remove(&c.name);
                }
                AlterConfigOp::Append | AlterConfigOp::Subtract => {
                    if !topic_config::is_list(&c.name) {
                        return refuse(
                            TopicErrorKind::InvalidConfig,
                            format!(
                                "Config value append is not allowed for config key: {}",
                                c.name
                            ),
                        );
                    }
                    // Appending to an unset list starts from its default, as Kafka does.
                    let base = next.get(&c.name).cloned().unwrap_or_else(|| {
                        topic_config::list_default(&c.name)
                            .unwrap_or_default()
                            .to_string()
                    });
                    let mut items: Vec<String> = list_items(&base);
                    let given = list_items(value.unwrap_or(""));
                    if c.op == AlterConfigOp::Append {
                        for g in given {
                            if !items.contains(&g) {
                                items.push(g);
                            }
                        }
                    } else {
                        items.retain(|i| !given.contains(i));
                    }
                    next.insert(c.name.clone(), items.join(","));
                }
            }
        }
        for (name, value) in &next {
            if current.get(name) != Some(value) {
                topic_config::validate(name, value).map_err(|e| TopicError {
                    kind: TopicErrorKind::InvalidConfig,
                    message: e.message,
                })?;
            }
        }
        let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (name, value) in &next {
            if current.get(name) != Some(value) {
                changes.insert(name.clone(), Some(value.clone()));
            }
        }
        for name in current.keys().filter(|k| !next.contains_key(*k)) {
            changes.insert(name.clone(), None);
        }
        Ok(changes)
    }
}

fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metadata::image::{ClusterImage, PartitionRegistration, TopicsImage};
    use crate::metadata::BrokerRegistration;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for ok in ["orders", "a.b_c-D9", &"x".repeat(249), "..."] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            &"x".repeat(250),
            "with space",
            "ü",
            "a/b",
            "a:b",
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            unify_collision_chars("a.b_c"),
            unify_collision_chars("a_b.c")
        );
        assert_ne!(unify_collision_chars("a-b"), unify_collision_chars("a_b"));
    }

    #[test]
    fn leaders_spread_evenly_counting_existing_ones() {
        let brokers = [1, 2, 3];
        let mut leaders = BTreeMap::from([(1, 2), (2, 0), (3, 1)]);
        let placed = place_partitions(6, 1, &brokers, &mut leaders);
        let firsts: Vec<i32> = placed.iter().map(|r| r[0]).collect();
        // 2 catches up first, then all three take turns.
        assert_eq!(firsts, [2, 2, 3, 1, 2, 3]);
        assert_eq!(leaders, BTreeMap::from([(1, 3), (2, 3), (3, 3)]));
        // Replicas follow the leader round the ring, never repeating.
        let mut leaders = BTreeMap::new();
        let placed = place_partitions(3, 3, &brokers, &mut leaders);
        assert_eq!(placed, [vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        // Many single-partition topics still spread.
        let mut leaders = BTreeMap::new();
        for _ in 0..30 {
            place_partitions(1, 1, &brokers, &mut leaders);
        }
        assert!(leaders.values().all(|n| *n == 10), "{leaders:?}");
        assert!(place_partitions(2, 1, &[], &mut BTreeMap::new()).is_empty());
    }

    fn image_with(brokers: &[(i32, bool)]) -> MetadataImage {
        let brokers = brokers
            .iter()
            .map(|(id, fenced)| {
                (
                    *id,
                    BrokerRegistration {
                        broker_id: *id,
                        incarnation_id: Uuid::nil(),
                        broker_epoch: 1,
                        endpoints: vec![],
                        rack: None,
                        fenced: *fenced,
                        in_controlled_shutdown: false,
                    },
                )
            })
            .collect();
        let topic = TopicImage {
            name: "orders".into(),
            topic_id: Uuid::from_u128(1),
            partitions: BTreeMap::from([(
                0,
                PartitionRegistration {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            )]),
        };
        MetadataImage {
            cluster: Arc::new(ClusterImage { brokers }),
            topics: Arc::new(TopicsImage {
                ids_by_name: BTreeMap::from([("orders".to_string(), topic.topic_id)]),
                by_id: BTreeMap::from([(topic.topic_id, topic)]),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn replication_factor_checks() {
        assert_eq!(check_replication_factor(3, 3), Ok(()));
        let too_many = check_replication_factor(4, 3).unwrap_err();
        assert_eq!(too_many.kind, TopicErrorKind::InvalidReplicationFactor);
        assert!(too_many.message.contains("only 3 broker(s)"), "{too_many}");
        let none = check_replication_factor(1, 0).unwrap_err();
        assert!(none.message.contains("only 0 broker(s)"), "{none}");
        assert_eq!(
            check_replication_factor(0, 3).unwrap_err().kind,
            TopicErrorKind::InvalidReplicationFactor
        );
        assert_eq!(check_replication_factor(1, 1), Ok(()));
    }

    #[test]
    fn manual_assignments_need_registered_live_brokers() {
        let image = image_with(&[(1, false), (2, true)]);
        assert_eq!(check_assignment(&image, 0, &[1], None), Ok(()));
        for bad in [&[][..], &[9], &[2]] {
            let e = check_assignment(&image, 0, bad, None).unwrap_err();
            assert_eq!(
                e.kind,
                TopicErrorKind::InvalidReplicaAssignment,
                "{bad:?}: {e}"
            );
        }
        // A fenced replica may be named as long as a live one can lead.
        assert_eq!(check_assignment(&image, 0, &[2, 1], None), Ok(()));
        assert_eq!(with_live_leader(&image, vec![2, 1]), [1, 2]);
        // It leads only when live, and joins the ISR once it has caught up.
        let records = partition_records(&image, Uuid::nil(), 0, vec![vec![1, 2]]);
        match &records[0] {
            MetadataRecord::Partition { leader, isr, .. } => {
                assert_eq!((*leader, isr.clone()), (1, vec![1]));
            }
            other => panic!("{other:?}"),
        }
    }

    fn change(name: &str, op: AlterConfigOp, value: Option<&str>) -> ConfigChange {
        ConfigChange {
            name: name.into(),
            op,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn config_changes_set_delete_append_and_subtract() {
        let mut image = image_with(&[(1, false)]);
        Arc::make_mut(&mut image.configs).resources.insert(
            ConfigResourceType::Topic,
            BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            )]),
        );
        let plan = |changes: Vec<ConfigChange>, replace_all: bool| {
            TopicControl::plan_config_changes(
                &image,
                &TopicConfigChanges {
                    topic: "orders".into(),
                    changes,
                    replace_all,
                },
            )
        };
        let out = plan(
            vec![
                change("retention.ms", AlterConfigOp::Delete, None),
                change("cleanup.policy", AlterConfigOp::Append, Some("compact")),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            BTreeMap::from([
                (
                    "cleanup.policy".to_string(),
                    Some("delete,compact".to_string())
                ),
                ("retention.ms".to_string(), None),
            ])
        );
        let out = plan(
            vec![change(
                "cleanup.policy",
                AlterConfigOp::Subtract,
                Some("delete"),
            )],
            false,
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], Some(String::new()));
        // Legacy AlterConfigs drops what it does not list.
        let out = plan(
            vec![change("segment.ms", AlterConfigOp::Set, Some("60000"))],
            true,
        )
        .unwrap();
        assert_eq!(out["retention.ms"], None);
        assert_eq!(out["segment.ms"], Some("60000".to_string()));
        // Setting what is already set writes nothing.
        assert!(plan(
            vec![change("retention.ms", AlterConfigOp::Set, Some("1000"))],
            false
        )
        .unwrap()
        .is_empty());

        let kind = |changes| plan(changes, false).unwrap_err().kind;
        assert_eq!(
            kind(vec![change("retention.ms", AlterConfigOp::Set, Some("x"))]),
            TopicErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(vec![change("nope", AlterConfigOp::Set, Some("1"))]),
            TopicErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(vec![change(
                "retention.ms",
                AlterConfigOp::Append,
                Some("1")
            )]),
            TopicErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(vec![
                change("retention.ms", AlterConfigOp::Set, Some("1")),
                change("retention.ms", AlterConfigOp::Delete, None)
            ]),
            TopicErrorKind::InvalidRequest
        );
        let missing = TopicControl::plan_config_changes(
            &image,
            &TopicConfigChanges {
                topic: "nope".into(),
                changes: vec![],
                replace_all: false,
            },
        );
        assert_eq!(missing.unwrap_err().kind, TopicErrorKind::UnknownTopic);
    }

    #[test]
    fn new_topic_plans_refuse_what_kafka_refuses() {
        let image = image_with(&[(1, false), (2, false)]);
        let control = TopicControl::new();
        let taken = BTreeMap::from([("a_b".to_string(), "a.b".to_string())]);
        let plan =
            |name: &str, partitions: i32, rf: i16, configs: Vec<(String, Option<String>)>| {
                control
                    .plan_topic(
                        &image,
                        &NewTopic {
                            name: name.into(),
                            num_partitions: partitions,
                            replication_factor: rf,
                            assignments: vec![],
                            configs,
                        },
                        &[1, 2],
                        &mut BTreeMap::new(),
                        &taken,
                    )
                    .map(|(_, replicas, configs)| (replicas, configs))
            };
        let (replicas, configs) = plan(
            "fresh",
            2,
            1,
            vec![("retention.ms".into(), Some("5".into()))],
        )
        .unwrap();
        assert_eq!(replicas, [vec![1], vec![2]]);
        assert_eq!(configs["retention.ms"], "5");
        let kind = |r: Result<_, TopicError>| r.unwrap_err().kind;
        assert_eq!(
            kind(plan("orders", 1, 1, vec![])),
            TopicErrorKind::TopicAlreadyExists
        );
        assert_eq!(
            kind(plan("a_b", 1, 1, vec![])),
            TopicErrorKind::InvalidTopic
        );
        assert_eq!(
            kind(plan("bad name", 1, 1, vec![])),
            TopicErrorKind::InvalidTopic
        );
        assert_eq!(
            kind(plan("t", 0, 1, vec![])),
            TopicErrorKind::InvalidPartitions
        );
        assert_eq!(
            kind(plan("t", 1, 3, vec![])),
            TopicErrorKind::InvalidReplicationFactor
        );
        let (replicas, _) = plan("replicated", 2, 2, vec![]).unwrap();
        assert_eq!(replicas, [vec![1, 2], vec![2, 1]]);
        assert_eq!(
            kind(plan("t", 1, 1, vec![("x".into(), Some("1".into()))])),
            TopicErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(plan("t", 1, 1, vec![("retention.ms".into(), None)])),
            TopicErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(plan("__cluster_metadata", 1, 1, vec![])),
            TopicErrorKind::InvalidRequest
        );
    }
}
