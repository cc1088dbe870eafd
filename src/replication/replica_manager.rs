use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Config;
use crate::metadata::records::ConfigResourceType;
use crate::metadata::MetadataImage;
use crate::storage::{AppendInfo, LogError, LogManager, PartitionLog, ReadInfo, ReadLimit};

/// Why a partition cannot serve a request, before Kafka error codes.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("this broker is not the leader (leader is {leader})")]
    NotLeader { leader: i32 },
    /// The client knows a newer leader epoch than this broker (KIP-320).
    #[error("leader epoch {requested} is newer than this broker's {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    /// The client's leader epoch is older than the current one.
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Who leads a partition, as of the last image applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A partition this node hosts a replica of.
pub struct Partition {
    pub log: Arc<PartitionLog>,
    state: RwLock<LeaderState>,
}

impl Partition {
    pub fn state(&self) -> LeaderState {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Leader checks for a request naming `leader_epoch` (-1: none given).
    fn check_leader(&self, node_id: i32, leader_epoch: i32) -> Result<LeaderState, PartitionError> {
        let state = self.state();
        if leader_epoch >= 0 && leader_epoch > state.leader_epoch {
            return Err(PartitionError::UnknownLeaderEpoch {
                requested: leader_epoch,
                current: state.leader_epoch,
            });
        }
        if leader_epoch >= 0 && leader_epoch < state.leader_epoch {
            return Err(PartitionError::FencedLeaderEpoch {
                requested: leader_epoch,
                current: state.leader_epoch,
            });
        }
        if state.leader != node_id {
            return Err(PartitionError::NotLeader {
                leader: state.leader,
            });
        }
        Ok(state)
    }
}

pub struct ReplicaManager {
    node_id: i32,
    /// This process's broker incarnation: once the image holds our own
    /// registration, it has replayed everything committed before we started.
    incarnation_id: Uuid,
    config: Arc<Config>,
    logs: Arc<LogManager>,
    partitions: RwLock<HashMap<(Uuid, i32), Arc<Partition>>>,
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        incarnation_id: Uuid,
        config: Arc<Config>,
        logs: Arc<LogManager>,
    ) -> ReplicaManager {
        ReplicaManager {
            node_id,
            incarnation_id,
            config,
            logs,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .ok()
            .and_then(|p| p.get(&(topic_id, partition)).cloned())
    }

    /// Appends a produced `records` field as the leader. With the ISR being
    /// only this replica, the high watermark follows the log end at once.
    pub fn append_records(
        &self,
        topic_id: Uuid,
        partition: i32,
        records: Vec<u8>,
    ) -> Result<AppendInfo, PartitionError> {
        let p = self.hosted(topic_id, partition)?;
        let state = p.check_leader(self.node_id, -1)?;
        let start = Instant::now();
        let info = p.log.append_as_leader(records, state.leader_epoch)?;
        metrics::histogram!("fjord_log_append_seconds").record(start.elapsed().as_secs_f64());
        metrics::counter!("fjord_log_appended_records_total").increment(info.record_count as u64);
        metrics::counter!("fjord_log_appended_bytes_total").increment(info.bytes as u64);
        if state.isr == [self.node_id] {
            p.log.set_high_watermark(info.last_offset + 1);
        }
        Ok(info)
    }

    /// Reads for a consumer: committed batches from `offset`.
    pub fn read(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        leader_epoch: i32,
        min_one: bool,
    ) -> Result<ReadInfo, PartitionError> {
        let p = self.leader_partition(topic_id, partition, leader_epoch)?;
        Ok(p.log
            .read(offset, max_bytes, ReadLimit::HighWatermark, min_one)?)
    }

    /// The partition if this node leads it at `leader_epoch` (-1: any).
    pub fn leader_partition(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let p = self.hosted(topic_id, partition)?;
        p.check_leader(self.node_id, leader_epoch)?;
        Ok(p)
    }

    /// Handlers only come here for partitions the image has, so a missing
    /// one is a replica this broker has not opened yet (or has just
    /// dropped): retriable, like a leader that has not taken over yet.
    fn hosted(&self, topic_id: Uuid, partition: i32) -> Result<Arc<Partition>, PartitionError> {
        self.partition(topic_id, partition)
            .ok_or(PartitionError::NotLeader { leader: -1 })
    }

    /// Follows the image: opens logs for partitions this node now hosts,
    /// updates leaders and configs, deletes logs the image dropped.
    pub fn apply_image(&self, image: &MetadataImage) {
        let caught_up = image
            .cluster
            .brokers
            .get(&self.node_id)
            .is_some_and(|b| b.incarnation_id == self.incarnation_id);
        if !caught_up {
            // Until the image has replayed past our own registration it may
            // be stale: acting on it could open a deleted topic's log or
            // delete a live one. Nothing is served before then anyway.
            return;
        }
        let mut hosted = HashMap::new();
        for topic in image.topics.by_id.values() {
            let overrides = image.configs.get(ConfigResourceType::Topic, &topic.name);
            let log_config = crate::topic_config::log_config(&self.config, overrides);
            for (&partition, registration) in &topic.partitions {
                if !registration.replicas.contains(&self.node_id) {
                    continue;
                }
                let state = LeaderState {
                    leader: registration.leader,
                    leader_epoch: registration.leader_epoch,
                    replicas: registration.replicas.clone(),
                    isr: registration.isr.clone(),
                };
                let key = (topic.topic_id, partition);
                if let Some(existing) = self.partition(topic.topic_id, partition) {
                    if existing.log.config() != log_config {
                        existing.log.set_config(log_config.clone());
                    }
                    if let Ok(mut s) = existing.state.write() {
                        *s = state.clone();
                    }
                    self.became(&existing, &state);
                    hosted.insert(key, existing);
                    continue;
                }
                match self.logs.get_or_create(
                    &topic.name,
                    topic.topic_id,
                    partition,
                    log_config.clone(),
                ) {
                    Ok(log) => {
                        log.set_config(log_config.clone());
                        let p = Arc::new(Partition {
                            log,
                            state: RwLock::new(state.clone()),
                        });
                        self.became(&p, &state);
                        hosted.insert(key, p);
                    }
                    Err(e) => tracing::error!(
                        topic = %topic.name,
                        partition,
                        "cannot open the partition log: {e}"
                    ),
                }
            }
        }
        let gone: Vec<(Uuid, i32)> = self
            .logs
            .logs()
            .iter()
            .map(|l| (l.topic_id, l.partition))
            .filter(|key| !hosted.contains_key(key))
            .collect();
        let leaders = hosted
            .values()
            .filter(|p| p.state().leader == self.node_id)
            .count();
        if let Ok(mut partitions) = self.partitions.write() {
            *partitions = hosted;
        }
        for (topic_id, partition) in gone {
            if let Err(e) = self.logs.remove(topic_id, partition) {
                tracing::error!(%topic_id, partition, "cannot delete the partition log: {e}");
            }
        }
        metrics::gauge!("fjord_partition_leader_count").set(leaders as f64);
        metrics::gauge!("fjord_partition_replica_count").set(self.logs.logs().len() as f64);
    }

    /// A leader whose ISR is only itself has everything committed.
    fn became(&self, p: &Partition, state: &LeaderState) {
        if state.leader == self.node_id && state.isr == [self.node_id] {
            p.log.set_high_watermark(p.log.log_end_offset());
        }
    }

    /// Applies every new image until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut image: watch::Receiver<Arc<MetadataImage>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last: Option<Arc<MetadataImage>> = None;
        loop {
            let current = image.borrow_and_update().clone();
            let changed = last.as_ref().is_none_or(|l| {
                !Arc::ptr_eq(&l.topics, &current.topics)
                    || !Arc::ptr_eq(&l.configs, &current.configs)
                    || !Arc::ptr_eq(&l.cluster, &current.cluster)
            });
            if changed {
                let manager = self.clone();
                let applied = current.clone();
                let _ = tokio::task::spawn_blocking(move || manager.apply_image(&applied)).await;
                last = Some(current);
            }
            tokio::select! {
                r = image.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}
