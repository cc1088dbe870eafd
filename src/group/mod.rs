//! The group coordinator: Kafka's classic consumer-group protocol.
//!
//! Why it looks like this:
//! - **Placement.** Kafka places a group on the leader of a
//!   `__consumer_offsets` partition. fjord keeps committed offsets in the
//!   metadata log instead (DESIGN.md), so a group is placed directly on a
//!   live broker: Kafka's `abs(hash(group id)) % n` over the sorted ids of
//!   the unfenced brokers in the image. Every broker computes the same
//!   answer from the same image; when the coordinator dies its broker is
//!   fenced, the mapping moves, and the new coordinator already has every
//!   committed offset in its image. Membership is not persisted (as in
//!   Kafka, members simply rejoin the new coordinator).
//! - **Membership in RAM**, with Kafka's states (Empty, PreparingRebalance,
//!   CompletingRebalance, Stable, Dead). JoinGroup and SyncGroup are long
//!   polls: the request holds a oneshot until the rebalance completes. One
//!   ticker task drives every timer (sessions, rebalance deadlines, the
//!   initial rebalance delay), so no timer outlives its group.
//! - **Assignments are opaque.** The leader's bytes are relayed unchanged, so
//!   every client-side assignor works.
//! - **Commits are metadata records.** Validated here, then handed to the
//!   [`committer`], which folds every commit that arrives while the previous
//!   propose is in flight into one log entry.

pub mod committer;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::controller::Controller;
use crate::metadata::{MetadataImage, MetadataRecord};
use crate::replication::ReplicaManager;

pub use state::{Group, GroupState, JoinOutcome, JoinRequest, SyncOutcome};

/// How often the ticker checks sessions and deadlines.
const TICK: Duration = Duration::from_millis(100);
/// How often expired offsets and lag are looked at.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// Group settings from the broker config.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub initial_rebalance_delay: Duration,
    pub max_size: usize,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention: Duration,
}

impl GroupSettings {
    pub fn from_config(config: &Config) -> Self {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            max_size: usize::try_from(config.group_max_size).unwrap_or(usize::MAX),
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention: Duration::from_secs(
                config.offsets_retention_minutes.saturating_mul(60),
            ),
        }
    }
}

/// The broker that coordinates `group_id` in `image`: Kafka's
/// `abs(groupId.hashCode) % n`, over the sorted ids of the live brokers.
pub fn coordinator_for(image: &MetadataImage, group_id: &str) -> Option<i32> {
    let live = live_brokers(image);
    if live.is_empty() {
        return None;
    }
    let index = (java_string_hash(group_id) & 0x7fff_ffff) as usize % live.len();
    live.get(index).copied()
}

/// The brokers groups are placed on, in id order.
fn live_brokers(image: &MetadataImage) -> Vec<i32> {
    image
        .cluster
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.in_controlled_shutdown)
        .map(|b| b.broker_id)
        .collect()
}

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka hashes group ids.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// One partition's commit as the OffsetCommit handler passes it on.
#[derive(Clone, Debug)]
pub struct OffsetCommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Who is committing: a member of a generation, or a simple commit
/// (generation -1, empty member id) for a group without members.
#[derive(Clone, Debug)]
pub struct CommitIdentity {
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

pub struct GroupCoordinator {
    node_id: i32,
    controller: Arc<Controller>,
    /// The live brokers the last load barrier was taken for. Groups can move
    /// here whenever that set changes; until a barrier shows every earlier
    /// commit in this broker's image, group requests get
    /// COORDINATOR_LOAD_IN_PROGRESS (Kafka answers so while it loads
    /// `__consumer_offsets`), so a new coordinator never serves offsets
    /// older than what its predecessor acknowledged.
    loaded_for: Mutex<Option<Vec<i32>>>,
    loading: std::sync::atomic::AtomicBool,
    /// Every task the coordinator spawns ends with this, so none of them
    /// keeps the controller or the logs alive after the node stops.
    shutdown: watch::Receiver<bool>,
    settings: GroupSettings,
    image: watch::Receiver<Arc<MetadataImage>>,
    groups: Mutex<HashMap<String, Group>>,
    commits: mpsc::UnboundedSender<committer::PendingCommit>,
    replicas: Option<Arc<ReplicaManager>>,
}

impl GroupCoordinator {
    /// Starts the coordinator's ticker and committer; both stop with `shutdown`.
    pub fn start(
        node_id: i32,
        settings: GroupSettings,
        controller: Arc<Controller>,
        replicas: Option<Arc<ReplicaManager>>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let coordinator = Arc::new(GroupCoordinator {
            node_id,
            controller: controller.clone(),
            loaded_for: Mutex::new(None),
            loading: std::sync::atomic::AtomicBool::new(false),
            shutdown: shutdown.clone(),
            settings,
            image: controller.image(),
            groups: Mutex::new(HashMap::new()),
            commits: tx,
            replicas,
        });
        tokio::spawn(committer::run(controller, rx, shutdown.clone()));
        tokio::spawn(coordinator.clone().tick_loop(shutdown));
        coordinator
    }

    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// NONE if this broker coordinates `group_id`; NOT_COORDINATOR if
    /// another broker does; COORDINATOR_NOT_AVAILABLE if no broker can;
    /// COORDINATOR_LOAD_IN_PROGRESS before the image knows any broker.
    pub fn check_coordinator(&self, group_id: &str) -> i16 {
        let image = self.image();
        if image.cluster.brokers.is_empty() {
            return ResponseError::CoordinatorLoadInProgress.code();
        }
        match coordinator_for(&image, group_id) {
            Some(id) if id == self.node_id => {
                let loaded = self.loaded_for.lock().unwrap_or_else(|e| e.into_inner());
                if loaded.as_ref() == Some(&live_brokers(&image)) {
                    0
                } else {
                    ResponseError::CoordinatorLoadInProgress.code()
                }
            }
            Some(_) => ResponseError::NotCoordinator.code(),
            None => ResponseError::CoordinatorNotAvailable.code(),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        // A panic while the lock was held cannot leave a group half-changed
        // in a way later requests cannot cope with; keep serving.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn join(&self, request: JoinRequest) -> JoinOutcome {
        let error = self.check_coordinator(&request.group_id);
        if error != 0 {
            return JoinOutcome::error(error, &request.member_id);
        }
        if request.session_timeout_ms < self.settings.min_session_timeout_ms
            || request.session_timeout_ms > self.settings.max_session_timeout_ms
        {
            return JoinOutcome::error(
                ResponseError::InvalidSessionTimeout.code(),
                &request.member_id,
            );
        }
        let wait = Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
            + self.settings.initial_rebalance_delay
            + Duration::from_secs(5);
        let member_id = request.member_id.clone();
        let receiver = {
            let mut groups = self.groups();
            let group = groups
                .entry(request.group_id.clone())
                .or_insert_with(|| Group::new(&request.group_id));
            group.join(request, &self.settings, Instant::now())
        };
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => JoinOutcome::error(ResponseError::UnknownMemberId.code(), &member_id),
            Err(_) => JoinOutcome::error(ResponseError::RebalanceInProgress.code(), &member_id),
        }
    }

    pub async fn sync(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let error = self.check_coordinator(group_id);
        if error != 0 {
            return SyncOutcome::error(error);
        }
        let receiver = {
            let mut groups = self.groups();
            let Some(group) = groups.get_mut(group_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId.code());
            };
            match group.sync(generation_id, member_id, group_instance_id, assignments) {
                Ok(rx) => rx,
                Err(outcome) => return outcome,
            }
        };
        match tokio::time::timeout(Duration::from_secs(600), receiver).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => SyncOutcome::error(ResponseError::RebalanceInProgress.code()),
            Err(_) => SyncOutcome::error(ResponseError::RebalanceInProgress.code()),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> i16 {
        let error = self.check_coordinator(group_id);
        if error != 0 {
            return error;
        }
        let mut groups = self.groups();
        match groups.get_mut(group_id) {
            Some(group) => {
                group.heartbeat(generation_id, member_id, group_instance_id, Instant::now())
            }
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// Removes members; returns the group-level error and one per member.
    pub fn leave(&self, group_id: &str, members: Vec<(String, Option<String>)>) -> (i16, Vec<i16>) {
        let error = self.check_coordinator(group_id);
        if error != 0 {
            return (error, vec![error; members.len()]);
        }
        let mut groups = self.groups();
        let Some(group) = groups.get_mut(group_id) else {
            let e = ResponseError::UnknownMemberId.code();
            return (0, vec![e; members.len()]);
        };
        let errors = members
            .iter()
            .map(|(id, instance)| group.leave(id, instance.as_deref(), &self.settings))
            .collect();
        (0, errors)
    }

    /// Checks a commit against the group's membership (Kafka's
    /// `validateOffsetCommit`); NONE lets it through.
    pub fn validate_commit(&self, group_id: &str, who: &CommitIdentity) -> i16 {
        let error = self.check_coordinator(group_id);
        if error != 0 {
            return error;
        }
        let mut groups = self.groups();
        match groups.get_mut(group_id) {
            Some(group) => group.validate_commit(who, Instant::now()),
            None if who.generation_id < 0 && who.member_id.is_empty() => 0,
            None => ResponseError::IllegalGeneration.code(),
        }
    }

    /// Writes offsets through the metadata log; resolves once the quorum has
    /// them and this broker's image shows them.
    pub async fn commit(&self, group_id: &str, entries: Vec<OffsetCommitEntry>) -> i16 {
        if entries.is_empty() {
            return 0;
        }
        let now_ms = now_ms();
        let records = entries
            .into_iter()
            .map(|e| MetadataRecord::OffsetCommit {
                group_id: group_id.to_string(),
                topic: e.topic,
                partition: e.partition,
                offset: e.offset,
                leader_epoch: e.leader_epoch,
                metadata: e.metadata,
                commit_timestamp_ms: now_ms,
            })
            .collect();
        self.write(records).await
    }

    async fn write(&self, records: Vec<MetadataRecord>) -> i16 {
        let started = Instant::now();
        let (done, rx) = oneshot::channel();
        if self
            .commits
            .send(committer::PendingCommit { records, done })
            .is_err()
        {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        let code = rx
            .await
            .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
        metrics::histogram!("fjord_group_commit_seconds").record(started.elapsed().as_secs_f64());
        if code == 0 {
            metrics::counter!("fjord_group_commits_total").increment(1);
        }
        code
    }

    /// Group state and member count for ListGroups/DescribeGroups: groups
    /// in memory, and groups known only by committed offsets (Empty).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let image = self.image();
        let groups = self.groups();
        let mut out: Vec<(String, GroupState, String)> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.group_id.clone(),
                    g.state,
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect();
        for group_id in image.offsets.groups.keys() {
            if !groups.contains_key(group_id)
                && coordinator_for(&image, group_id) == Some(self.node_id)
            {
                out.push((group_id.clone(), GroupState::Empty, String::new()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A snapshot of one group for DescribeGroups; None if unknown here.
    pub fn describe(&self, group_id: &str) -> Option<state::GroupSummary> {
        let groups = self.groups();
        if let Some(group) = groups.get(group_id) {
            return Some(group.summary());
        }
        let image = self.image();
        image
            .offsets
            .groups
            .contains_key(group_id)
            .then(|| Group::new(group_id).summary())
    }

    /// DeleteGroups for one group: NON_EMPTY_GROUP while it has members,
    /// GROUP_ID_NOT_FOUND if neither members nor offsets exist.
    pub async fn delete_group(&self, group_id: &str) -> i16 {
        let error = self.check_coordinator(group_id);
        if error != 0 {
            return error;
        }
        let image = self.image();
        let has_offsets = image.offsets.groups.contains_key(group_id);
        {
            let mut groups = self.groups();
            match groups.get(group_id) {
                Some(g) if !g.members.is_empty() => return ResponseError::NonEmptyGroup.code(),
                Some(_) => {
                    groups.remove(group_id);
                }
                None if !has_offsets => return ResponseError::GroupIdNotFound.code(),
                None => {}
            }
        }
        let records = deletions(&image, group_id, |_, _| true);
        if records.is_empty() {
            return 0;
        }
        self.write(records).await
    }

    /// Topics the group's members subscribe to, if the group has members
    /// (consumer protocol), for OffsetDelete; None if the group is empty.
    pub fn subscribed_topics(&self, group_id: &str) -> Option<Vec<String>> {
        let groups = self.groups();
        let group = groups.get(group_id)?;
        if group.members.is_empty() {
            return None;
        }
        Some(group.subscribed_topics())
    }

    /// Deletes the given committed offsets (OffsetDelete).
    pub async fn delete_offsets(&self, group_id: &str, partitions: &[(String, i32)]) -> i16 {
        let image = self.image();
        let records = deletions(&image, group_id, |t, p| {
            partitions.iter().any(|(pt, pp)| pt == t && *pp == p)
        });
        if records.is_empty() {
            return 0;
        }
        self.write(records).await
    }

    async fn tick_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_housekeeping = Instant::now();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopped(&mut shutdown) => {
                    // Members waiting in JoinGroup/SyncGroup look for the
                    // next coordinator instead of waiting out the shutdown.
                    for group in self.groups().values_mut() {
                        group.abandon(ResponseError::NotCoordinator.code());
                    }
                    self.groups().clear();
                    return;
                }
            }
            self.tick(Instant::now());
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                last_housekeeping = Instant::now();
                self.export_lag();
                self.expire_offsets().await;
            }
        }
    }

    /// Drives every group's timers; hands groups this broker no longer
    /// coordinates back (their waiting members get NOT_COORDINATOR).
    fn tick(self: &Arc<Self>, now: Instant) {
        let image = self.image();
        self.maybe_load(&image);
        let mut groups = self.groups();
        let node_id = self.node_id;
        groups.retain(|id, group| {
            if !image.cluster.brokers.is_empty() && coordinator_for(&image, id) != Some(node_id) {
                group.abandon(ResponseError::NotCoordinator.code());
                return false;
            }
            group.tick(now, &self.settings);
            // Empty groups are forgotten (their offsets stay in the image;
            // Kafka likewise drops an Empty group's metadata).
            !group.is_idle()
        });
        let mut counts: HashMap<GroupState, usize> = HashMap::new();
        for group in groups.values() {
            *counts.entry(group.state).or_default() += 1;
        }
        for state in GroupState::ALL {
            metrics::gauge!("fjord_groups", "state" => state.name())
                .set(counts.get(&state).copied().unwrap_or(0) as f64);
        }
    }

    /// Takes a load barrier when the live brokers changed: an empty entry
    /// through the quorum, then waits until this broker's image has applied
    /// it, and with it every commit acknowledged before.
    fn maybe_load(self: &Arc<Self>, image: &MetadataImage) {
        use std::sync::atomic::Ordering;
        let live = live_brokers(image);
        if live.is_empty() {
            return;
        }
        let current = self
            .loaded_for
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if current.as_ref() == Some(&live) || self.loading.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut shutdown = this.shutdown.clone();
            let barrier = async {
                match this.controller.propose(Vec::new()).await {
                    Ok(index) => {
                        let image = this
                            .controller
                            .wait_for_offset(index, Duration::from_secs(10))
                            .await;
                        if image.offset >= index {
                            *this.loaded_for.lock().unwrap_or_else(|e| e.into_inner()) = Some(live);
                        }
                    }
                    Err(e) => tracing::debug!("group load barrier: {e}"),
                }
            };
            tokio::select! {
                () = barrier => {}
                () = stopped(&mut shutdown) => {}
            }
            this.loading.store(false, Ordering::SeqCst);
        });
    }

    /// `offsets.retention.minutes`: offsets of groups without members that
    /// nobody committed within the retention are deleted.
    async fn expire_offsets(&self) {
        let image = self.image();
        let cutoff = now_ms() - self.settings.offsets_retention.as_millis() as i64;
        let mut records = Vec::new();
        for group_id in image.offsets.groups.keys() {
            if coordinator_for(&image, group_id) != Some(self.node_id) {
                continue;
            }
            let empty = self
                .groups()
                .get(group_id)
                .is_none_or(|g| g.members.is_empty());
            if empty {
                records.extend(expired_offsets(&image, group_id, cutoff));
            }
        }
        if !records.is_empty() {
            tracing::info!(offsets = records.len(), "expiring committed offsets");
            let _ = self.write(records).await;
        }
    }

    /// `fjord_group_lag`: high watermark minus committed offset, for the
    /// partitions this broker leads, of the groups it coordinates.
    fn export_lag(&self) {
        let Some(replicas) = &self.replicas else {
            return;
        };
        let image = self.image();
        for (group_id, topics) in &image.offsets.groups {
            if coordinator_for(&image, group_id) != Some(self.node_id) {
                continue;
            }
            for (topic, partitions) in topics {
                let Some(topic_id) = image.topics.ids_by_name.get(topic) else {
                    continue;
                };
                for (partition, committed) in partitions {
                    let Some(p) = replicas.partition(*topic_id, *partition) else {
                        continue;
                    };
                    let leads = image
                        .topics
                        .by_id
                        .get(topic_id)
                        .and_then(|t| t.partitions.get(partition))
                        .is_some_and(|r| r.leader == self.node_id);
                    if !leads {
                        continue;
                    }
                    let lag = (p.log.high_watermark() - committed.offset).max(0);
                    metrics::gauge!("fjord_group_lag", "group" => group_id.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(lag as f64);
                }
            }
        }
    }
}

/// `offset: -1` records deleting `group_id`'s offsets that `pick` selects.
fn deletions(
    image: &MetadataImage,
    group_id: &str,
    pick: impl Fn(&str, i32) -> bool,
) -> Vec<MetadataRecord> {
    let Some(topics) = image.offsets.groups.get(group_id) else {
        return Vec::new();
    };
    let now = now_ms();
    topics
        .iter()
        .flat_map(|(topic, partitions)| partitions.keys().map(move |p| (topic, *p)))
        .filter(|(t, p)| pick(t, *p))
        .map(|(topic, partition)| MetadataRecord::OffsetCommit {
            group_id: group_id.to_string(),
            topic: topic.clone(),
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: now,
        })
        .collect()
}

/// Deletions for `group_id`'s offsets committed before `cutoff_ms`.
pub fn expired_offsets(
    image: &MetadataImage,
    group_id: &str,
    cutoff_ms: i64,
) -> Vec<MetadataRecord> {
    let Some(topics) = image.offsets.groups.get(group_id) else {
        return Vec::new();
    };
    let old: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(t, ps)| {
            ps.iter()
                .filter(|(_, c)| c.commit_timestamp_ms < cutoff_ms)
                .map(move |(p, _)| (t.clone(), *p))
        })
        .collect();
    deletions(image, group_id, |t, p| {
        old.iter().any(|(ot, op)| ot == t && *op == p)
    })
}

/// Resolves once `shutdown` is true or its sender is gone.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::image::{ClusterImage, CommittedOffset, OffsetsImage};

    fn image_with(brokers: &[(i32, bool)]) -> MetadataImage {
        let brokers = brokers
            .iter()
            .map(|(id, fenced)| (*id, crate::kafka::handlers::tests::broker(*id, *fenced)))
            .collect();
        MetadataImage {
            cluster: Arc::new(ClusterImage { brokers }),
            ..Default::default()
        }
    }

    #[test]
    fn hash_matches_java() {
        // "hello".hashCode() == 99162322 in Java; "" is 0.
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash(""), 0);
    }

    #[test]
    fn placement_is_deterministic_and_skips_fenced_brokers() {
        let all = image_with(&[(1, false), (2, false), (3, false)]);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..50 {
            let g = format!("group-{i}");
            let c = coordinator_for(&all, &g);
            assert_eq!(c, coordinator_for(&all, &g));
            seen.extend(c);
        }
        // Fifty groups spread over all three brokers.
        assert_eq!(seen.len(), 3);
        let one_fenced = image_with(&[(1, false), (2, true), (3, false)]);
        for i in 0..50 {
            let c = coordinator_for(&one_fenced, &format!("group-{i}"));
            assert!(matches!(c, Some(1) | Some(3)), "{c:?}");
        }
        assert_eq!(coordinator_for(&image_with(&[(1, true)]), "g"), None);
    }

    #[test]
    fn only_old_offsets_expire() {
        let committed = |ts| CommittedOffset {
            offset: 5,
            leader_epoch: 0,
            metadata: None,
            commit_timestamp_ms: ts,
        };
        let offsets = OffsetsImage {
            groups: BTreeMap::from([(
                "g".to_string(),
                BTreeMap::from([(
                    "t".to_string(),
                    BTreeMap::from([(0, committed(100)), (1, committed(900))]),
                )]),
            )]),
        };
        let image = MetadataImage {
            offsets: Arc::new(offsets),
            ..Default::default()
        };
        let expired = expired_offsets(&image, "g", 500);
        assert_eq!(expired.len(), 1);
        assert!(matches!(
            &expired[0],
            MetadataRecord::OffsetCommit {
                partition: 0,
                offset: -1,
                ..
            }
        ));
        assert!(expired_offsets(&image, "other", 500).is_empty());
    }
}
