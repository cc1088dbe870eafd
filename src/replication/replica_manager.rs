use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;
use uuid::Uuid;

use super::fetcher::{FetcherManager, FollowerAssignment};
use crate::config::Config;
use crate::metadata::records::ConfigResourceType;
use crate::metadata::MetadataImage;
use crate::storage::log::now_ms;
use crate::storage::{AppendInfo, LogError, LogManager, PartitionLog, ReadInfo, ReadLimit};

/// Why a partition cannot serve a request, before Kafka error codes.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("this broker is not the leader (leader is {leader})")]
    NotLeader { leader: i32 },
    /// This broker's controller session lapsed (no heartbeat answered
    /// within `broker.session.timeout.ms`, e.g. the controller quorum is
    /// lost): the controller may have fenced it and moved its leaderships,
    /// so it serves none until a heartbeat is answered again.
    #[error("this broker's controller session has lapsed: it leads nothing until a controller answers its heartbeat")]
    SessionLapsed,
    /// The client knows a newer leader epoch than this broker (KIP-320).
    #[error("leader epoch {requested} is newer than this broker's {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    /// The client's leader epoch is older than the current one.
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("{isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas { isr: usize, min: i32 },
    #[error(
        "the in-sync replicas shrank to {isr}, below min.insync.replicas {min}, after the append"
    )]
    NotEnoughReplicasAfterAppend { isr: usize, min: i32 },
    #[error("the in-sync replicas did not all acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Who leads a partition, as of the last image applied (or the last ISR
/// change the controller accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// What the leader knows of one follower (Kafka's `Replica` state).
#[derive(Clone, Copy, Debug)]
struct FollowerProgress {
    /// The follower's log end, from its last fetch offset; -1 until it fetches.
    log_end_offset: i64,
    /// Last time it had everything the leader had (KIP-16's caught-up time).
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end when that fetch arrived.
    leader_end_at_last_fetch: i64,
}

/// A partition this node hosts a replica of.
pub struct Partition {
    pub log: Arc<PartitionLog>,
    state: RwLock<LeaderState>,
    followers: Mutex<HashMap<i32, FollowerProgress>>,
    /// An ISR change is with the controller; one at a time.
    isr_change_pending: AtomicBool,
}

/// What a follower's fetch gets.
pub enum FetchOutcome {
    Records(ReadInfo),
    /// The fetcher's log diverged from the leader's (KIP-320/595): it must
    /// truncate to `end_offset` of `epoch` before fetching on.
    Diverging {
        epoch: i32,
        end_offset: i64,
        info: ReadInfo,
    },
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

    /// The divergence point for a fetcher whose last batch is in
    /// `last_fetched_epoch` and who fetches from `fetch_offset`.
    fn diverging(&self, last_fetched_epoch: i32, fetch_offset: i64) -> Option<(i32, i64)> {
        if last_fetched_epoch < 0 {
            return None;
        }
        let (epoch, end) = self.log.end_offset_for_epoch(last_fetched_epoch);
        if end < 0 {
            return None;
        }
        (epoch < last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
    }

    /// The ISR the leader would report, from its follower progress.
    fn high_watermark_candidate(&self, node_id: i32, isr: &[i32]) -> Option<i64> {
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        let mut hw = self.log.log_end_offset();
        for member in isr {
            if *member == node_id {
                continue;
            }
            let end = followers.get(member).map_or(-1, |f| f.log_end_offset);
            if end < 0 {
                return None;
            }
            hw = hw.min(end);
        }
        Some(hw)
    }
}

/// An ISR change a leader asks of the active controller (Kafka's
/// AlterPartition): refused when the leader or partition epoch is stale.
#[derive(Clone, Debug)]
pub struct IsrUpdate {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The partition as the controller left it after an accepted change.
#[derive(Clone, Debug)]
pub struct IsrUpdated {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// Where ISR changes go: the active controller, wired in `node.rs`.
pub trait IsrChannel: Send + Sync {
    fn alter_partition(&self, update: IsrUpdate) -> BoxFuture<'static, Result<IsrUpdated, String>>;
}

/// Whether this broker may act as a leader at all (its controller session
/// is alive). A broker paused past its session must not accept writes or
/// serve reads until it is back: the controller has moved its partitions.
pub trait Liveness: Send + Sync {
    fn is_active(&self) -> bool;
}

/// For brokers without a session (unit tests).
pub struct AlwaysActive;

impl Liveness for AlwaysActive {
    fn is_active(&self) -> bool {
        true
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
    isr_channel: Option<Arc<dyn IsrChannel>>,
    liveness: Arc<dyn Liveness>,
    fetchers: FetcherManager,
    /// The latest image applied (for broker endpoints and epochs).
    image: RwLock<Arc<MetadataImage>>,
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
            isr_channel: None,
            liveness: Arc::new(AlwaysActive),
            fetchers: FetcherManager::new(node_id),
            image: RwLock::new(Arc::new(MetadataImage::default())),
        }
    }

    /// Where ISR changes go, and the session that says whether this broker
    /// may lead.
    pub fn with_controller(
        mut self,
        isr_channel: Arc<dyn IsrChannel>,
        liveness: Arc<dyn Liveness>,
    ) -> Self {
        self.isr_channel = Some(isr_channel);
        self.liveness = liveness;
        self
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

    /// Appends a produced `records` field as the leader. `acks=all` needs
    /// `min.insync.replicas` in the ISR before the append.
    pub fn append_records(
        &self,
        topic_id: Uuid,
        partition: i32,
        records: bytes::Bytes,
        acks: i16,
    ) -> Result<AppendInfo, PartitionError> {
        let (p, state) = self.leading(topic_id, partition, -1)?;
        if acks == -1 {
            let min = p.log.config().min_insync_replicas;
            if (state.isr.len() as i32) < min {
                return Err(PartitionError::NotEnoughReplicas {
                    isr: state.isr.len(),
                    min,
                });
            }
        }
        let start = Instant::now();
        let info = p.log.append_as_leader(records, state.leader_epoch)?;
        metrics::histogram!("fjord_log_append_seconds").record(start.elapsed().as_secs_f64());
        metrics::counter!("fjord_log_appended_records_total").increment(info.record_count as u64);
        metrics::counter!("fjord_log_appended_bytes_total").increment(info.bytes as u64);
        self.maybe_advance_high_watermark(&p);
        Ok(info)
    }

    /// `acks=all`: waits until the high watermark passes `last_offset` (every
    /// ISR member has it), the leadership moves, or `timeout`.
    pub async fn wait_for_isr(
        &self,
        topic_id: Uuid,
        partition: i32,
        last_offset: i64,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        let (p, state) = self.leading(topic_id, partition, -1)?;
        let epoch = state.leader_epoch;
        let mut hw = p.log.subscribe();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        metrics::gauge!("fjord_produce_waiting_for_isr").increment(1.0);
        let result = loop {
            if p.log.high_watermark() > last_offset {
                let state = p.state();
                let min = p.log.config().min_insync_replicas;
                break if (state.isr.len() as i32) < min {
                    Err(PartitionError::NotEnoughReplicasAfterAppend {
                        isr: state.isr.len(),
                        min,
                    })
                } else {
                    Ok(())
                };
            }
            let state = p.state();
            if state.leader != self.node_id || state.leader_epoch != epoch {
                break Err(PartitionError::NotLeader {
                    leader: state.leader,
                });
            }
            // Woken by the high watermark, or every 100 ms to see a lost
            // leadership.
            let tick = tokio::time::Instant::now() + Duration::from_millis(100);
            match tokio::time::timeout_at(deadline.min(tick), hw.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break Err(PartitionError::Log(LogError::Deleted)),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    break Err(PartitionError::Timeout(timeout))
                }
                Err(_) => {}
            }
        };
        metrics::gauge!("fjord_produce_waiting_for_isr").decrement(1.0);
        metrics::histogram!("fjord_produce_isr_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Reads for a consumer: where the committed batches from `offset` lie
    /// (`info.region`), or the point where its log diverged if it says
    /// which epoch it fetched last.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        leader_epoch: i32,
        last_fetched_epoch: i32,
        min_one: bool,
    ) -> Result<FetchOutcome, PartitionError> {
        let p = self.leader_partition(topic_id, partition, leader_epoch)?;
        if let Some((epoch, end_offset)) = p.diverging(last_fetched_epoch, offset) {
            return Ok(FetchOutcome::Diverging {
                epoch,
                end_offset,
                info: offsets_only(&p.log),
            });
        }
        // Sent from the file by the connection (sendfile), never copied.
        Ok(FetchOutcome::Records(p.log.read_region(
            offset,
            max_bytes,
            ReadLimit::HighWatermark,
            min_one,
        )?))
    }

    /// A follower's fetch: records up to the log end, and the fetch offset
    /// taken as the follower's log end, which moves the high watermark and
    /// may bring it back into the ISR.
    #[allow(clippy::too_many_arguments)]
    pub fn follower_fetch(
        &self,
        topic_id: Uuid,
        partition: i32,
        replica_id: i32,
        fetch_offset: i64,
        leader_epoch: i32,
        last_fetched_epoch: i32,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<FetchOutcome, PartitionError> {
        let (p, state) = self.leading(topic_id, partition, leader_epoch)?;
        if !state.replicas.contains(&replica_id) {
            return Err(PartitionError::InvalidRequest(format!(
                "broker {replica_id} is not a replica of this partition"
            )));
        }
        if let Some((epoch, end_offset)) = p.diverging(last_fetched_epoch, fetch_offset) {
            return Ok(FetchOutcome::Diverging {
                epoch,
                end_offset,
                info: offsets_only(&p.log),
            });
        }
        let leader_end = p.log.log_end_offset();
        if fetch_offset <= leader_end {
            self.record_follower_fetch(&p, &state, replica_id, fetch_offset, leader_end);
        }
        Ok(FetchOutcome::Records(p.log.read(
            fetch_offset,
            max_bytes,
            ReadLimit::LogEnd,
            min_one,
        )?))
    }

    fn record_follower_fetch(
        &self,
        p: &Arc<Partition>,
        state: &LeaderState,
        replica_id: i32,
        fetch_offset: i64,
        leader_end: i64,
    ) {
        let now = now_ms();
        let progress = {
            let mut followers = p.followers.lock().unwrap_or_else(|e| e.into_inner());
            let f = followers.entry(replica_id).or_insert(FollowerProgress {
                log_end_offset: -1,
                last_caught_up_ms: now,
                last_fetch_ms: now,
                leader_end_at_last_fetch: leader_end,
            });
            // Kafka's rule: caught up now if it has everything; or as of its
            // previous fetch if it now has what the leader had then.
            if fetch_offset >= leader_end {
                f.last_caught_up_ms = now;
            } else if fetch_offset >= f.leader_end_at_last_fetch {
                f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
            }
            f.log_end_offset = fetch_offset;
            f.last_fetch_ms = now;
            f.leader_end_at_last_fetch = leader_end;
            *f
        };
        self.maybe_advance_high_watermark(p);
        // Back into the ISR once caught up to the high watermark and into
        // this leader's epoch.
        if !state.isr.contains(&replica_id) {
            let epoch_start = p.log.end_offset_for_epoch(state.leader_epoch - 1).1.max(0);
            if progress.log_end_offset >= p.log.high_watermark()
                && progress.log_end_offset >= epoch_start
            {
                let mut isr = state.isr.clone();
                isr.push(replica_id);
                isr.sort_unstable();
                self.propose_isr(p, state, isr, "expand");
            }
        }
    }

    fn maybe_advance_high_watermark(&self, p: &Partition) {
        let state = p.state();
        if state.leader != self.node_id {
            return;
        }
        if let Some(hw) = p.high_watermark_candidate(self.node_id, &state.isr) {
            p.log.set_high_watermark(hw);
        }
    }

    /// Sends an ISR change to the active controller (one at a time per
    /// partition); the accepted state takes effect here at once.
    fn propose_isr(
        &self,
        p: &Arc<Partition>,
        state: &LeaderState,
        new_isr: Vec<i32>,
        why: &'static str,
    ) {
        let Some(channel) = self.isr_channel.clone() else {
            return;
        };
        if p.isr_change_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let broker_epoch = self
            .image
            .read()
            .ok()
            .and_then(|i| i.cluster.brokers.get(&self.node_id).map(|b| b.broker_epoch))
            .unwrap_or(-1);
        let request = IsrUpdate {
            broker_id: self.node_id,
            broker_epoch,
            topic_id: p.log.topic_id,
            partition: p.log.partition,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr: new_isr.clone(),
        };
        let partition = p.clone();
        let node_id = self.node_id;
        tokio::spawn(async move {
            match channel.alter_partition(request).await {
                Ok(reply) => {
                    if let Ok(mut s) = partition.state.write() {
                        if reply.leader_epoch == s.leader_epoch
                            && reply.partition_epoch > s.partition_epoch
                        {
                            s.isr = reply.isr.clone();
                            s.partition_epoch = reply.partition_epoch;
                        }
                    }
                    metrics::counter!(if why == "expand" {
                        "fjord_partition_isr_expands_total"
                    } else {
                        "fjord_partition_isr_shrinks_total"
                    })
                    .increment(1);
                    tracing::info!(
                        topic = %partition.log.topic,
                        partition = partition.log.partition,
                        isr = ?reply.isr,
                        "ISR {why}"
                    );
                    // A smaller ISR may let the high watermark move.
                    let state = partition.state();
                    if state.leader == node_id {
                        if let Some(hw) = partition.high_watermark_candidate(node_id, &state.isr) {
                            partition.log.set_high_watermark(hw);
                        }
                    }
                }
                Err(e) => tracing::info!(
                    topic = %partition.log.topic,
                    partition = partition.log.partition,
                    "ISR {why} refused: {e}"
                ),
            }
            partition.isr_change_pending.store(false, Ordering::Release);
        });
    }

    /// Drops followers that have not caught up for `replica.lag.time.max.ms`
    /// from the ISR of every partition this broker leads, and exports the
    /// replication gauges.
    fn check_isr(&self) {
        let now = now_ms();
        let lag_max = self.config.replica_lag_time_max_ms as i64;
        let mut under_replicated = 0;
        let mut max_lag_records = 0i64;
        let mut max_lag_ms = 0i64;
        let partitions: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for p in partitions {
            let state = p.state();
            if state.leader != self.node_id {
                continue;
            }
            if state.isr.len() < state.replicas.len() {
                under_replicated += 1;
            }
            let leader_end = p.log.log_end_offset();
            let lagging: Vec<i32> = {
                let followers = p.followers.lock().unwrap_or_else(|e| e.into_inner());
                for (id, f) in followers.iter() {
                    if state.replicas.contains(id) {
                        max_lag_records = max_lag_records.max(leader_end - f.log_end_offset.max(0));
                        max_lag_ms = max_lag_ms.max(now - f.last_caught_up_ms);
                    }
                }
                state
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| *id != self.node_id)
                    .filter(|id| {
                        followers
                            .get(id)
                            .is_none_or(|f| now - f.last_caught_up_ms > lag_max)
                    })
                    .collect()
            };
            if !lagging.is_empty() {
                let isr: Vec<i32> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| !lagging.contains(id))
                    .collect();
                self.propose_isr(&p, &state, isr, "shrink");
            }
        }
        metrics::gauge!("fjord_partition_under_replicated").set(under_replicated as f64);
        metrics::gauge!("fjord_replica_lag_records").set(max_lag_records as f64);
        metrics::gauge!("fjord_replica_lag_seconds").set(max_lag_ms as f64 / 1000.0);
    }

    /// The partition if this node leads it at `leader_epoch` (-1: any) and
    /// its controller session is alive.
    pub fn leader_partition(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        self.leading(topic_id, partition, leader_epoch)
            .map(|(p, _)| p)
    }

    /// [`Self::leader_partition`] with the state the check was made on, so
    /// the produce and fetch paths do not copy it a second time.
    fn leading(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> Result<(Arc<Partition>, LeaderState), PartitionError> {
        let p = self.hosted(topic_id, partition)?;
        let state = p.check_leader(self.node_id, leader_epoch)?;
        if !self.liveness.is_active() {
            return Err(PartitionError::SessionLapsed);
        }
        Ok((p, state))
    }

    /// Handlers only come here for partitions the image has, so a missing
    /// one is a replica this broker has not opened yet (or has just
    /// dropped): retriable, like a leader that has not taken over yet.
    fn hosted(&self, topic_id: Uuid, partition: i32) -> Result<Arc<Partition>, PartitionError> {
        self.partition(topic_id, partition)
            .ok_or(PartitionError::NotLeader { leader: -1 })
    }

    /// Follows the image: opens logs for partitions this node now hosts,
    /// makes it leader or follower of each, updates configs, and deletes logs
    /// the image dropped.
    pub fn apply_image(&self, image: &Arc<MetadataImage>) {
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
        if let Ok(mut current) = self.image.write() {
            *current = image.clone();
        }
        let mut hosted = HashMap::new();
        let mut following = Vec::new();
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
                    partition_epoch: registration.partition_epoch,
                    replicas: registration.replicas.clone(),
                    isr: registration.isr.clone(),
                };
                let p = match self.partition(topic.topic_id, partition) {
                    Some(existing) => existing,
                    None => match self.logs.get_or_create(
                        &topic.name,
                        topic.topic_id,
                        partition,
                        log_config.clone(),
                    ) {
                        Ok(log) => Arc::new(Partition {
                            log,
                            state: RwLock::new(LeaderState {
                                leader: -1,
                                leader_epoch: -1,
                                partition_epoch: -1,
                                replicas: Vec::new(),
                                isr: Vec::new(),
                            }),
                            followers: Mutex::new(HashMap::new()),
                            isr_change_pending: AtomicBool::new(false),
                        }),
                        Err(e) => {
                            tracing::error!(
                                topic = %topic.name,
                                partition,
                                "cannot open the partition log: {e}"
                            );
                            continue;
                        }
                    },
                };
                if p.log.config() != log_config {
                    p.log.set_config(log_config.clone());
                }
                self.transition(&p, state.clone());
                if state.leader != self.node_id && state.leader >= 0 {
                    following.push(FollowerAssignment {
                        topic_id: topic.topic_id,
                        partition,
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        log: p.log.clone(),
                    });
                }
                hosted.insert((topic.topic_id, partition), p);
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
        let endpoints: HashMap<i32, String> = image
            .cluster
            .brokers
            .values()
            .filter_map(|b| {
                let e = b.endpoint(&self.config.inter_broker_listener_name)?;
                Some((b.broker_id, format!("{}:{}", e.host, e.port)))
            })
            .collect();
        self.fetchers.update(following, &endpoints);
        for (topic_id, partition) in gone {
            if let Err(e) = self.logs.remove(topic_id, partition) {
                tracing::error!(%topic_id, partition, "cannot delete the partition log: {e}");
            }
        }
        metrics::gauge!("fjord_partition_leaders").set(leaders as f64);
        metrics::gauge!("fjord_partition_replicas").set(self.logs.logs().len() as f64);
    }

    /// Moves a partition to its new state: a new leader starts its epoch at
    /// its log end and gives every follower a full lag period to fetch.
    fn transition(&self, p: &Partition, new: LeaderState) {
        let old = p.state();
        if let Ok(mut s) = p.state.write() {
            // An ISR change accepted by the controller may be newer than
            // this image; keep whichever partition epoch is higher.
            if new.leader_epoch > s.leader_epoch || new.partition_epoch >= s.partition_epoch {
                *s = new.clone();
            }
        }
        let became_leader = new.leader == self.node_id
            && (old.leader != self.node_id || old.leader_epoch != new.leader_epoch);
        if became_leader {
            if let Err(e) = p.log.start_leader_epoch(new.leader_epoch) {
                tracing::error!(topic = %p.log.topic, partition = p.log.partition, "cannot start leader epoch: {e}");
            }
            let now = now_ms();
            let end = p.log.log_end_offset();
            let mut followers = p.followers.lock().unwrap_or_else(|e| e.into_inner());
            followers.clear();
            for r in new.replicas.iter().filter(|r| **r != self.node_id) {
                followers.insert(
                    *r,
                    FollowerProgress {
                        log_end_offset: -1,
                        last_caught_up_ms: now,
                        last_fetch_ms: now,
                        leader_end_at_last_fetch: end,
                    },
                );
            }
            tracing::info!(
                topic = %p.log.topic,
                partition = p.log.partition,
                leader_epoch = new.leader_epoch,
                log_end_offset = end,
                "became leader"
            );
        }
        if new.leader == self.node_id {
            self.maybe_advance_high_watermark(p);
        }
    }

    /// Applies every new image until `shutdown`, and checks ISRs.
    pub async fn run(
        self: Arc<Self>,
        mut image: watch::Receiver<Arc<MetadataImage>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last: Option<Arc<MetadataImage>> = None;
        let check_every =
            Duration::from_millis((self.config.replica_lag_time_max_ms / 4).clamp(100, 5000));
        let mut tick = tokio::time::interval(check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                let runtime = tokio::runtime::Handle::current();
                let _ = tokio::task::spawn_blocking(move || {
                    let _guard = runtime.enter();
                    manager.apply_image(&applied)
                })
                .await;
                last = Some(current);
            }
            tokio::select! {
                r = image.changed() => if r.is_err() { break },
                _ = tick.tick() => self.check_isr(),
                _ = shutdown.changed() => break,
            }
        }
        self.fetchers.shutdown();
    }
}

/// A fetch answer without records: the partition's offsets.
fn offsets_only(log: &PartitionLog) -> ReadInfo {
    ReadInfo {
        records: bytes::Bytes::new(),
        region: None,
        high_watermark: log.high_watermark(),
        log_start_offset: log.log_start_offset(),
        log_end_offset: log.log_end_offset(),
    }
}
