//! The metadata image: cluster state as of one offset of the metadata log.
//!
//! An image is immutable once published. Changes go through a
//! [`MetadataDelta`]: it starts from an image, replays committed records, and
//! produces the next image. Sub-images sit behind `Arc`s so an untouched
//! concern (say, the topics while a broker heartbeat fences someone) is shared
//! with the previous image rather than copied. The same replay serves
//! start-up (snapshot + log tail) and steady state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{ConfigResourceType, Endpoint, MetadataRecord};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    /// The metadata offset of the registration record; a heartbeat or fence
    /// that names an older epoch is about a previous incarnation.
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub rack: Option<String>,
    pub fenced: bool,
    /// The broker asked to shut down (Kafka's `inControlledShutdown`): still
    /// serving, but no longer chosen to lead or to join an ISR.
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener)
    }

    /// Unfenced and not shutting down: may lead and join ISRs (Kafka's
    /// `ClusterControlManager.isActive`).
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterImage {
    pub brokers: BTreeMap<i32, BrokerRegistration>,
}

impl ClusterImage {
    /// Brokers that may lead and take new replicas: unfenced and not in
    /// controlled shutdown.
    pub fn active_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| b.is_active())
    }

    /// Brokers the controller still expects heartbeats from.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_active(&self, broker_id: i32) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| b.is_active())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionRegistration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicsImage {
    pub by_id: BTreeMap<Uuid, TopicImage>,
    pub ids_by_name: BTreeMap<String, Uuid>,
}

impl TopicsImage {
    pub fn get(&self, name: &str) -> Option<&TopicImage> {
        self.ids_by_name.get(name).and_then(|id| self.by_id.get(id))
    }
}

/// Explicitly set configs; defaults come from the node config, not from here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigsImage {
    pub resources: BTreeMap<ConfigResourceType, BTreeMap<String, BTreeMap<String, String>>>,
}

impl ConfigsImage {
    pub fn get(&self, kind: ConfigResourceType, name: &str) -> Option<&BTreeMap<String, String>> {
        self.resources.get(&kind).and_then(|m| m.get(name))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// Committed offsets: group -> topic -> partition -> offset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetsImage {
    pub groups: BTreeMap<String, BTreeMap<String, BTreeMap<i32, CommittedOffset>>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The log index of the last record replayed into this image.
    pub offset: u64,
    pub cluster_id: Option<String>,
    pub cluster: Arc<ClusterImage>,
    pub topics: Arc<TopicsImage>,
    pub configs: Arc<ConfigsImage>,
    pub offsets: Arc<OffsetsImage>,
    /// Producer ids below this are handed out.
    pub next_producer_id: i64,
}

/// The changes from one image to the next.
pub struct MetadataDelta {
    image: MetadataImage,
    /// Brokers whose registration or fencing changed.
    pub changed_brokers: Vec<i32>,
    /// Topics created, changed or removed.
    pub changed_topics: Vec<Uuid>,
}

impl MetadataDelta {
    pub fn new(base: &MetadataImage) -> Self {
        MetadataDelta {
            image: base.clone(),
            changed_brokers: Vec::new(),
            changed_topics: Vec::new(),
        }
    }

    /// Replays one committed record found at log index `offset`.
    pub fn replay(&mut self, offset: u64, record: &MetadataRecord) {
        let image = &mut self.image;
        image.offset = offset;
        match record {
            MetadataRecord::ClusterId { cluster_id } => {
                // The first id written wins: a later leader that raced to
                // propose one does not change the cluster's identity.
                if image.cluster_id.is_none() {
                    image.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
                fenced,
            } => {
                Arc::make_mut(&mut image.cluster).brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: offset as i64,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                        in_controlled_shutdown: false,
                    },
                );
                self.changed_brokers.push(*broker_id);
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                if self.broker_epoch_matches(*broker_id, *broker_epoch) {
                    Arc::make_mut(&mut self.image.cluster)
                        .brokers
                        .remove(broker_id);
                    self.changed_brokers.push(*broker_id);
                }
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.set_fenced(*broker_id, *broker_epoch, true),
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.set_fenced(*broker_id, *broker_epoch, false),
            MetadataRecord::BrokerInControlledShutdown {
                broker_id,
                broker_epoch,
            } => {
                if self.broker_epoch_matches(*broker_id, *broker_epoch) {
                    if let Some(b) = Arc::make_mut(&mut self.image.cluster)
                        .brokers
                        .get_mut(broker_id)
                    {
                        b.in_controlled_shutdown = true;
                        self.changed_brokers.push(*broker_id);
                    }
                }
            }
            MetadataRecord::Topic { name, topic_id } => {
                let topics = Arc::make_mut(&mut image.topics);
                topics.ids_by_name.insert(name.clone(), *topic_id);
                topics.by_id.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
                self.changed_topics.push(*topic_id);
            }
            MetadataRecord::Partition {
                topic_id,
                partition_id,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topics = Arc::make_mut(&mut image.topics);
                if let Some(topic) = topics.by_id.get_mut(topic_id) {
                    topic.partitions.insert(
                        *partition_id,
                        PartitionRegistration {
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
                        },
                    );
                    self.changed_topics.push(*topic_id);
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition_id,
                leader,
                isr,
                replicas,
            } => {
                let topics = Arc::make_mut(&mut image.topics);
                let partition = topics
                    .by_id
                    .get_mut(topic_id)
                    .and_then(|t| t.partitions.get_mut(partition_id));
                if let Some(p) = partition {
                    if let Some(leader) = leader {
                        if *leader != p.leader {
                            p.leader = *leader;
                            p.leader_epoch += 1;
                        }
                    }
                    if let Some(isr) = isr {
                        p.isr = isr.clone();
                    }
                    if let Some(replicas) = replicas {
                        p.replicas = replicas.clone();
                    }
                    p.partition_epoch += 1;
                    self.changed_topics.push(*topic_id);
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topics = Arc::make_mut(&mut image.topics);
                if let Some(topic) = topics.by_id.remove(topic_id) {
                    topics.ids_by_name.remove(&topic.name);
                    if let Some(by_name) = Arc::make_mut(&mut image.configs)
                        .resources
                        .get_mut(&ConfigResourceType::Topic)
                    {
                        by_name.remove(&topic.name);
                    }
                    self.changed_topics.push(*topic_id);
                }
            }
            MetadataRecord::Config {
                resource_type,
                resource_name,
                name,
                value,
            } => {
                let configs = Arc::make_mut(&mut image.configs);
                let resource = configs
                    .resources
                    .entry(*resource_type)
                    .or_default()
                    .entry(resource_name.clone())
                    .or_default();
                match value {
                    Some(v) => {
                        resource.insert(name.clone(), v.clone());
                    }
                    None => {
                        resource.remove(name);
                    }
                }
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                image.next_producer_id = image.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::OffsetCommit {
                group_id,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            } => {
                let offsets = Arc::make_mut(&mut image.offsets);
                if *offset < 0 {
                    if let Some(group) = offsets.groups.get_mut(group_id) {
                        if let Some(t) = group.get_mut(topic) {
                            t.remove(partition);
                            if t.is_empty() {
                                group.remove(topic);
                            }
                        }
                        if group.is_empty() {
                            offsets.groups.remove(group_id);
                        }
                    }
                } else {
                    offsets
                        .groups
                        .entry(group_id.clone())
                        .or_default()
                        .entry(topic.clone())
                        .or_default()
                        .insert(
                            *partition,
                            CommittedOffset {
                                offset: *offset,
                                leader_epoch: *leader_epoch,
                                metadata: metadata.clone(),
                                commit_timestamp_ms: *commit_timestamp_ms,
                            },
                        );
                }
            }
            MetadataRecord::Unknown => {
                tracing::warn!(
                    offset,
                    "skipping a metadata record type this build does not know"
                );
            }
        }
    }

    /// Advances the image offset past an entry that carried no records
    /// (Raft's own blank and membership entries).
    pub fn advance(&mut self, offset: u64) {
        self.image.offset = offset;
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn apply(self) -> MetadataImage {
        self.image
    }

    fn broker_epoch_matches(&self, broker_id: i32, broker_epoch: i64) -> bool {
        self.image
            .cluster
            .brokers
            .get(&broker_id)
            .is_some_and(|b| b.broker_epoch == broker_epoch)
    }

    fn set_fenced(&mut self, broker_id: i32, broker_epoch: i64, fenced: bool) {
        if !self.broker_epoch_matches(broker_id, broker_epoch) {
            return;
        }
        if let Some(b) = Arc::make_mut(&mut self.image.cluster)
            .brokers
            .get_mut(&broker_id)
        {
            b.fenced = fenced;
            self.changed_brokers.push(broker_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
            fenced: true,
        }
    }

    #[test]
    fn fencing_only_applies_to_the_current_incarnation() {
        let mut delta = MetadataDelta::new(&MetadataImage::default());
        delta.replay(5, &register(1));
        delta.replay(
            6,
            &MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 5,
            },
        );
        delta.replay(7, &register(1));
        // A fence aimed at epoch 5 arrives after the broker re-registered at 7.
        delta.replay(
            8,
            &MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 5,
            },
        );
        let image = delta.apply();
        let b = &image.cluster.brokers[&1];
        assert_eq!((b.broker_epoch, b.fenced, image.offset), (7, true, 8));
    }

    #[test]
    fn untouched_sub_images_are_shared() {
        let base = MetadataImage::default();
        let mut delta = MetadataDelta::new(&base);
        delta.replay(1, &register(1));
        let next = delta.apply();
        assert!(Arc::ptr_eq(&base.topics, &next.topics));
        assert!(!Arc::ptr_eq(&base.cluster, &next.cluster));
    }

    #[test]
    fn leader_change_bumps_epochs() {
        let id = Uuid::new_v4();
        let mut delta = MetadataDelta::new(&MetadataImage::default());
        delta.replay(
            1,
            &MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
        );
        delta.replay(
            2,
            &MetadataRecord::Partition {
                topic_id: id,
                partition_id: 0,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        );
        delta.replay(
            3,
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition_id: 0,
                leader: Some(2),
                isr: Some(vec![2]),
                replicas: None,
            },
        );
        delta.replay(
            4,
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition_id: 0,
                leader: None,
                isr: Some(vec![2, 1]),
                replicas: None,
            },
        );
        let image = delta.apply();
        let p = &image.topics.get("t").unwrap().partitions[&0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(p.isr, vec![2, 1]);
    }
}
