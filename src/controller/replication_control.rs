//! The active controller's rules for partition leaders and ISRs (Kafka's
//! `ReplicationControlManager` and `PartitionChangeBuilder`, KRaft
//! semantics): who leads when a broker is fenced, unfenced, re-registers or
//! shuts down; preferred leaders; and ISR changes proposed by leaders
//! (AlterPartition, KIP-497).
//!
//! The rules are pure functions from an image to `PartitionChange` records,
//! so they are tested without a cluster; the async half takes the topic
//! lock, judges against the leader's image and writes the records in the
//! same entry as the broker change that caused them (a fence and the
//! elections it forces commit together or not at all). Replay bumps the
//! leader epoch on every leader change and the partition epoch on every
//! change.
//!
//! The rules, with `unclean.leader.election.enable=false`:
//! - a leader is always an ISR member; a new one is the first ISR member in
//!   replica order that is active (unfenced, not shutting down), else one
//!   that is unfenced but shutting down;
//! - with none, the leader is -1 (offline) rather than a replica that may
//!   lack acknowledged records;
//! - fenced and shutting-down brokers leave every ISR, except the last
//!   member, which stays so that it can lead again when it returns, and a
//!   shutting-down broker that keeps leadership for want of a successor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::raft::rpc::{AlterPartitionReply, AlterPartitionRequest, ControlledShutdownReply};
use super::{Controller, ControllerError};
use crate::metadata::image::PartitionRegistration;
use crate::metadata::{MetadataImage, MetadataRecord};

/// How the controller sees one broker for a leadership decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerState {
    /// Fenced or not registered: leads nothing, leaves ISRs.
    Gone,
    /// Unfenced but in controlled shutdown: leads only for want of another.
    ShuttingDown,
    /// May lead and be in ISRs.
    Active,
}

/// Broker states from an image, with the broker being acted upon seen in
/// the state its pending record puts it in.
pub struct BrokerStates<'a> {
    image: &'a MetadataImage,
    overrides: BTreeMap<i32, BrokerState>,
}

impl<'a> BrokerStates<'a> {
    pub fn of(image: &'a MetadataImage) -> Self {
        BrokerStates {
            image,
            overrides: BTreeMap::new(),
        }
    }

    pub fn with(mut self, broker_id: i32, state: BrokerState) -> Self {
        self.overrides.insert(broker_id, state);
        self
    }

    pub fn state(&self, broker_id: i32) -> BrokerState {
        if let Some(s) = self.overrides.get(&broker_id) {
            return *s;
        }
        match self.image.cluster.brokers.get(&broker_id) {
            None => BrokerState::Gone,
            Some(b) if b.fenced => BrokerState::Gone,
            Some(b) if b.in_controlled_shutdown => BrokerState::ShuttingDown,
            Some(_) => BrokerState::Active,
        }
    }
}

/// A new leader and/or ISR for one partition; `None` fields stay as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionChange {
    pub leader: Option<i32>,
    pub isr: Option<Vec<i32>>,
}

/// What one partition needs so that its leader and ISR obey the rules in
/// the module docs, given `states`; `None` if it already does.
pub fn partition_change(
    p: &PartitionRegistration,
    states: &BrokerStates,
    unclean: bool,
) -> Option<PartitionChange> {
    let in_isr = |r: i32| p.isr.contains(&r);
    let first_in_isr = |want: BrokerState| {
        p.replicas
            .iter()
            .copied()
            .find(|r| in_isr(*r) && states.state(*r) == want)
    };
    let current = (p.leader >= 0 && in_isr(p.leader)).then(|| states.state(p.leader));
    let mut unclean_isr = None;
    let leader = if current == Some(BrokerState::Active) {
        p.leader
    } else if let Some(r) = first_in_isr(BrokerState::Active) {
        r
    } else if current == Some(BrokerState::ShuttingDown) {
        p.leader
    } else if let Some(r) = first_in_isr(BrokerState::ShuttingDown) {
        r
    } else if let Some(r) = p
        .replicas
        .iter()
        .copied()
        .find(|r| unclean && states.state(*r) == BrokerState::Active)
    {
        // Unclean: a replica outside the ISR may lack acknowledged records;
        // it starts a new ISR of its own.
        unclean_isr = Some(vec![r]);
        r
    } else {
        -1
    };
    let isr = unclean_isr.unwrap_or_else(|| {
        let kept: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| *r == leader || states.state(*r) == BrokerState::Active)
            .collect();
        // Never an empty ISR: its last member is the only replica known to
        // hold every acknowledged record.
        if kept.is_empty() {
            p.isr.clone()
        } else {
            kept
        }
    });
    let change = PartitionChange {
        leader: (leader != p.leader).then_some(leader),
        isr: (isr != p.isr).then_some(isr),
    };
    (change.leader.is_some() || change.isr.is_some()).then_some(change)
}

fn change_record(topic_id: Uuid, partition_id: i32, change: PartitionChange) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition_id,
        leader: change.leader,
        isr: change.isr,
        replicas: None,
    }
}

/// Every partition change the rules call for under `states`, in topic and
/// partition order.
pub fn leader_and_isr_changes(
    image: &MetadataImage,
    states: &BrokerStates,
    unclean: bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.by_id.values() {
        for (&partition_id, p) in &topic.partitions {
            if let Some(change) = partition_change(p, states, unclean) {
                records.push(change_record(topic.topic_id, partition_id, change));
            }
        }
    }
    records
}

/// Preferred leader election: leadership goes back to the first replica
/// wherever it is active and in the ISR (Kafka's rule for moving
/// leadership away from a live broker: the new leader is in the ISR).
pub fn preferred_leader_changes(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.by_id.values() {
        for (&partition_id, p) in &topic.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != preferred
                && p.isr.contains(&preferred)
                && image.cluster.is_active(preferred)
            {
                let change = PartitionChange {
                    leader: Some(preferred),
                    isr: None,
                };
                records.push(change_record(topic.topic_id, partition_id, change));
            }
        }
    }
    records
}

/// Partitions `broker_id` leads that another ISR member could take over
/// (what a controlled shutdown waits to see at zero).
pub fn leaderships_to_hand_over(image: &MetadataImage, broker_id: i32) -> usize {
    let states = BrokerStates::of(image).with(broker_id, BrokerState::ShuttingDown);
    image
        .topics
        .by_id
        .values()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.leader == broker_id)
        .filter(|p| partition_change(p, &states, false).is_some_and(|c| c.leader.is_some()))
        .count()
}

/// Partitions a controlled shutdown of `broker_id` would still change: it
/// leads one another ISR member could take, or it is in an ISR it could
/// leave. Zero means the broker can stop without anyone waiting for it.
pub fn controlled_shutdown_pending(image: &MetadataImage, broker_id: i32) -> usize {
    let states = BrokerStates::of(image).with(broker_id, BrokerState::ShuttingDown);
    image
        .topics
        .by_id
        .values()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.leader == broker_id || p.isr.contains(&broker_id))
        .filter(|p| partition_change(p, &states, false).is_some())
        .count()
}

/// Partition health from the image, for metrics and `fjord cluster status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionCounts {
    pub partitions: usize,
    /// ISR smaller than the replica set.
    pub under_replicated: usize,
    /// No leader (-1).
    pub offline: usize,
}

pub fn partition_counts(image: &MetadataImage) -> PartitionCounts {
    let mut counts = PartitionCounts::default();
    for p in image
        .topics
        .by_id
        .values()
        .flat_map(|t| t.partitions.values())
    {
        counts.partitions += 1;
        if p.isr.len() < p.replicas.len() {
            counts.under_replicated += 1;
        }
        if p.leader < 0 {
            counts.offline += 1;
        }
    }
    counts
}

/// Judges an AlterPartition as Kafka's controller does; `Ok(None)` when the
/// ISR is already the one proposed.
pub fn check_alter_partition(
    image: &MetadataImage,
    req: &AlterPartitionRequest,
) -> Result<Option<MetadataRecord>, ControllerError> {
    let registered = image
        .cluster
        .brokers
        .get(&req.broker_id)
        .is_some_and(|b| b.broker_epoch == req.broker_epoch);
    if !registered {
        return Err(ControllerError::StaleBrokerEpoch(format!(
            "broker {} epoch {} is not registered",
            req.broker_id, req.broker_epoch
        )));
    }
    let p = image
        .topics
        .by_id
        .get(&req.topic_id)
        .and_then(|t| t.partitions.get(&req.partition))
        .ok_or(ControllerError::UnknownTopicOrPartition)?;
    let at = || format!("{}-{}", req.topic_id, req.partition);
    // Epochs newer than the image's mean this controller has not applied
    // everything yet (it just took over): retriable, as Kafka's NOT_CONTROLLER.
    if req.leader_epoch > p.leader_epoch || req.partition_epoch > p.partition_epoch {
        return Err(ControllerError::NotController);
    }
    if req.leader_epoch < p.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch(format!(
            "{}: leader epoch {} is older than the current {}",
            at(),
            req.leader_epoch,
            p.leader_epoch
        )));
    }
    if p.leader != req.broker_id {
        return Err(ControllerError::NotLeader(format!(
            "{}: broker {} is not the leader ({})",
            at(),
            req.broker_id,
            p.leader
        )));
    }
    if req.partition_epoch < p.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "{}: partition epoch {} is older than the current {}",
            at(),
            req.partition_epoch,
            p.partition_epoch
        )));
    }
    let ineligible = |why: String| {
        Err(ControllerError::IneligibleReplica(format!(
            "{}: {why}",
            at()
        )))
    };
    if !req.new_isr.contains(&req.broker_id) {
        return ineligible(format!("the leader {} must stay in the ISR", req.broker_id));
    }
    for (i, r) in req.new_isr.iter().enumerate() {
        if req.new_isr[..i].contains(r) {
            return ineligible(format!("broker {r} is in the ISR twice"));
        }
        if !p.replicas.contains(r) {
            return ineligible(format!("broker {r} is not a replica"));
        }
        if *r == req.broker_id {
            continue;
        }
        // KIP-841: fenced brokers never join or stay; a broker shutting down
        // may stay but not join.
        match image.cluster.brokers.get(r) {
            None => return ineligible(format!("broker {r} is not registered")),
            Some(b) if b.fenced => return ineligible(format!("broker {r} is fenced")),
            Some(b) if b.in_controlled_shutdown && !p.isr.contains(r) => {
                return ineligible(format!("broker {r} is shutting down"))
            }
            Some(_) => {}
        }
    }
    if req.new_isr == p.isr {
        return Ok(None);
    }
    Ok(Some(change_record(
        req.topic_id,
        req.partition,
        PartitionChange {
            leader: None,
            isr: Some(req.new_isr.clone()),
        },
    )))
}

/// Counts what `records` change, once they are committed.
fn count_changes(records: &[MetadataRecord]) {
    for r in records {
        if let MetadataRecord::PartitionChange { leader, isr, .. } = r {
            if leader.is_some() {
                metrics::counter!("fjord_controller_leader_elections_total").increment(1);
            }
            if isr.is_some() {
                metrics::counter!("fjord_controller_isr_changes_total").increment(1);
            }
        }
    }
}

/// Writes `records` on the leader and counts the partition changes among them.
pub(super) async fn write_counted(
    controller: &Controller,
    records: Vec<MetadataRecord>,
) -> Result<u64, ControllerError> {
    let counted = records.clone();
    let offset = controller.write(records).await?;
    count_changes(&counted);
    Ok(offset)
}

pub(super) async fn alter_partition(
    controller: &Controller,
    req: AlterPartitionRequest,
) -> Result<AlterPartitionReply, ControllerError> {
    let _guard = controller.topic_control.lock.lock().await;
    let image = controller.linearizable_image().await?;
    if let Some(record) = check_alter_partition(&image, &req)? {
        write_counted(controller, vec![record]).await?;
        tracing::info!(topic_id = %req.topic_id, partition = req.partition, isr = ?req.new_isr, leader = req.broker_id, "ISR changed");
    }
    // `write` returns once the entry is applied here, so this is the state after it.
    let image = controller.image.borrow().clone();
    let p = image
        .topics
        .by_id
        .get(&req.topic_id)
        .and_then(|t| t.partitions.get(&req.partition))
        .ok_or(ControllerError::UnknownTopicOrPartition)?;
    Ok(AlterPartitionReply {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: p.isr.clone(),
    })
}

pub(super) async fn controlled_shutdown(
    controller: &Controller,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<ControlledShutdownReply, ControllerError> {
    let _guard = controller.topic_control.lock.lock().await;
    let image = controller.linearizable_image().await?;
    let Some(b) = image
        .cluster
        .brokers
        .get(&broker_id)
        .filter(|b| b.broker_epoch == broker_epoch)
    else {
        return Err(ControllerError::StaleBrokerEpoch(format!(
            "broker {broker_id} epoch {broker_epoch} is not registered"
        )));
    };
    let mut records = Vec::new();
    if !b.fenced && !b.in_controlled_shutdown {
        records.push(MetadataRecord::BrokerInControlledShutdown {
            broker_id,
            broker_epoch,
        });
    }
    // A fenced broker has already handed over what it could.
    if !b.fenced {
        let states = BrokerStates::of(&image).with(broker_id, BrokerState::ShuttingDown);
        records.extend(leader_and_isr_changes(
            &image,
            &states,
            controller.options.unclean_leader_election_enable,
        ));
    }
    let metadata_offset = if records.is_empty() {
        image.offset
    } else {
        let moved = records.len();
        let offset = write_counted(controller, records).await?;
        tracing::info!(
            broker = broker_id,
            changes = moved,
            "controlled shutdown: leaderships and ISRs moved"
        );
        offset
    };
    let after = controller.image.borrow().clone();
    Ok(ControlledShutdownReply {
        metadata_offset,
        leaderships_left: leaderships_to_hand_over(&after, broker_id),
        partitions_left: controlled_shutdown_pending(&after, broker_id),
    })
}

/// The records that change the leaders and ISRs when `broker_id` enters
/// `state` (fenced, re-registered or unfenced), to be written in the same
/// entry as the broker record itself.
pub(super) fn changes_for_broker(
    controller: &Controller,
    image: &MetadataImage,
    broker_id: i32,
    state: BrokerState,
) -> Vec<MetadataRecord> {
    let states = BrokerStates::of(image).with(broker_id, state);
    leader_and_isr_changes(
        image,
        &states,
        controller.options.unclean_leader_election_enable,
    )
}

/// The active controller's periodic partition pass: repairs any partition
/// whose leader or ISR breaks the rules (a safety net; broker changes
/// already carry their elections) and, with `auto.leader.rebalance.enable`,
/// returns leadership to preferred replicas, every
/// `leader.imbalance.check.interval.seconds`.
pub(super) async fn run_partition_duties(
    controller: Arc<Controller>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !controller.is_leader() {
            continue;
        }
        if let Err(e) = partition_pass(&controller).await {
            tracing::debug!("partition leadership pass: {e}");
        }
    }
}

async fn partition_pass(controller: &Controller) -> Result<(), ControllerError> {
    let _guard = controller.topic_control.lock.lock().await;
    let image = controller.linearizable_image().await?;
    let repairs = leader_and_isr_changes(
        &image,
        &BrokerStates::of(&image),
        controller.options.unclean_leader_election_enable,
    );
    if !repairs.is_empty() {
        tracing::info!(
            changes = repairs.len(),
            "repairing partition leaders and ISRs"
        );
        write_counted(controller, repairs).await?;
    }
    if controller.options.auto_leader_rebalance_enable {
        let image = controller.linearizable_image().await?;
        let preferred = preferred_leader_changes(&image);
        if !preferred.is_empty() {
            tracing::info!(partitions = preferred.len(), "preferred leader election");
            write_counted(controller, preferred).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::{ClusterImage, TopicImage, TopicsImage};
    use crate::metadata::BrokerRegistration;

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn broker(id: i32, fenced: bool, shutting_down: bool) -> (i32, BrokerRegistration) {
        (
            id,
            BrokerRegistration {
                broker_id: id,
                incarnation_id: Uuid::nil(),
                broker_epoch: 10 + id as i64,
                endpoints: vec![],
                rack: None,
                fenced,
                in_controlled_shutdown: shutting_down,
            },
        )
    }

    fn partition(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRegistration {
        PartitionRegistration {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
        }
    }

    /// Brokers 1-3 active unless listed as fenced (`f`) or shutting down (`s`).
    fn image(
        fenced: &[i32],
        shutting_down: &[i32],
        partitions: Vec<PartitionRegistration>,
    ) -> MetadataImage {
        let brokers = (1..=3)
            .map(|id| broker(id, fenced.contains(&id), shutting_down.contains(&id)))
            .collect();
        let topic = TopicImage {
            name: "t".into(),
            topic_id: TOPIC,
            partitions: partitions
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i as i32, p))
                .collect(),
        };
        MetadataImage {
            cluster: Arc::new(ClusterImage { brokers }),
            topics: Arc::new(TopicsImage {
                ids_by_name: BTreeMap::from([("t".to_string(), TOPIC)]),
                by_id: BTreeMap::from([(TOPIC, topic)]),
            }),
            ..Default::default()
        }
    }

    /// The partitions after replaying `records` over `image`.
    fn replayed(image: &MetadataImage, records: &[MetadataRecord]) -> Vec<PartitionRegistration> {
        let mut delta = crate::metadata::MetadataDelta::new(image);
        for (i, r) in records.iter().enumerate() {
            delta.replay(image.offset + 1 + i as u64, r);
        }
        delta.apply().topics.by_id[&TOPIC]
            .partitions
            .values()
            .cloned()
            .collect()
    }

    fn fence(image: &MetadataImage, broker_id: i32) -> Vec<PartitionRegistration> {
        let states = BrokerStates::of(image).with(broker_id, BrokerState::Gone);
        replayed(image, &leader_and_isr_changes(image, &states, false))
    }

    #[test]
    fn fencing_a_leader_elects_the_next_live_isr_member_in_replica_order() {
        let img = image(&[], &[], vec![partition(&[1, 2, 3], &[3, 1, 2], 1)]);
        let p = &fence(&img, 1)[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 4, 6));
        assert_eq!(p.isr, [3, 2]);
    }

    #[test]
    fn fencing_skips_isr_members_that_are_not_alive() {
        // 2 is fenced but still listed (it was the last member once); 3 is live.
        let img = image(&[2], &[], vec![partition(&[1, 2, 3], &[1, 2, 3], 1)]);
        let p = &fence(&img, 1)[0];
        assert_eq!(p.leader, 3);
        assert_eq!(p.isr, [3]);
    }

    #[test]
    fn fencing_a_follower_only_shrinks_the_isr() {
        let img = image(&[], &[], vec![partition(&[1, 2, 3], &[1, 2, 3], 1)]);
        let p = &fence(&img, 3)[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 3, 6));
        assert_eq!(p.isr, [1, 2]);
        // A broker outside every ISR changes nothing.
        let img = image(&[], &[], vec![partition(&[1, 2, 3], &[1, 2], 1)]);
        let states = BrokerStates::of(&img).with(3, BrokerState::Gone);
        assert!(leader_and_isr_changes(&img, &states, false).is_empty());
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_goes_offline() {
        // Replicas 2 and 3 are out of the ISR: electing them would lose
        // records only 1 has.
        let img = image(&[], &[], vec![partition(&[1, 2, 3], &[1], 1)]);
        let p = &fence(&img, 1)[0];
        assert_eq!((p.leader, p.leader_epoch), (-1, 4));
        assert_eq!(p.isr, [1]);
        // Unclean election, when enabled, takes a live replica outside the ISR.
        let states = BrokerStates::of(&img).with(1, BrokerState::Gone);
        let p = &replayed(&img, &leader_and_isr_changes(&img, &states, true))[0];
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn unfencing_an_isr_member_brings_an_offline_partition_back() {
        let img = image(
            &[1, 2],
            &[],
            vec![
                partition(&[1, 2, 3], &[1], -1),
                partition(&[2, 1, 3], &[2], -1),
            ],
        );
        let states = BrokerStates::of(&img).with(1, BrokerState::Active);
        let after = replayed(&img, &leader_and_isr_changes(&img, &states, false));
        assert_eq!((after[0].leader, after[0].leader_epoch), (1, 4));
        assert_eq!(after[0].isr, [1]);
        // 1 is a replica but not in the ISR of the other: it stays offline.
        assert_eq!(after[1].leader, -1);
    }

    #[test]
    fn controlled_shutdown_hands_over_and_keeps_what_it_cannot() {
        let img = image(
            &[],
            &[],
            vec![
                partition(&[1, 2, 3], &[1, 2, 3], 1),
                partition(&[1, 2], &[1], 1),
                partition(&[2, 1, 3], &[2, 1, 3], 2),
            ],
        );
        assert_eq!(leaderships_to_hand_over(&img, 1), 1);
        // It also leaves the ISR led by 2; partition 1 cannot change.
        assert_eq!(controlled_shutdown_pending(&img, 1), 2);
        let states = BrokerStates::of(&img).with(1, BrokerState::ShuttingDown);
        let records = leader_and_isr_changes(&img, &states, false);
        let after = replayed(&img, &records);
        // Handed over to the next ISR member, and 1 left the ISR.
        assert_eq!((after[0].leader, after[0].leader_epoch), (2, 4));
        assert_eq!(after[0].isr, [2, 3]);
        // No one else in the ISR: 1 keeps leading until it is gone.
        assert_eq!((after[1].leader, after[1].isr.clone()), (1, vec![1]));
        assert_eq!(after[1].partition_epoch, 5, "untouched");
        // A follower in shutdown leaves the ISR; the leader stays.
        assert_eq!((after[2].leader, after[2].isr.clone()), (2, vec![2, 3]));
        let mut done = img.clone();
        let topic = Arc::make_mut(&mut done.topics)
            .by_id
            .get_mut(&TOPIC)
            .unwrap();
        topic.partitions = after
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i as i32, p))
            .collect();
        assert_eq!(controlled_shutdown_pending(&done, 1), 0);
    }

    #[test]
    fn a_shutting_down_broker_is_a_last_resort_leader() {
        // 1 is fenced; 2 is shutting down but alive; 3 is out of the ISR.
        let img = image(&[], &[2], vec![partition(&[1, 2, 3], &[1, 2], 1)]);
        let p = &fence(&img, 1)[0];
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn preferred_leaders_return_when_active_and_in_sync() {
        let img = image(
            &[],
            &[],
            vec![
                partition(&[1, 2, 3], &[2, 3, 1], 2),
                partition(&[1, 2, 3], &[2, 3], 2),
                partition(&[2, 1, 3], &[1, 2, 3], 2),
            ],
        );
        let after = replayed(&img, &preferred_leader_changes(&img));
        assert_eq!((after[0].leader, after[0].leader_epoch), (1, 4));
        // Not in the ISR yet: stays where it is.
        assert_eq!((after[1].leader, after[1].leader_epoch), (2, 3));
        assert_eq!((after[2].leader, after[2].leader_epoch), (2, 3));
        // Not while the preferred replica is shutting down or fenced.
        for (fenced, down) in [(&[1][..], &[][..]), (&[], &[1])] {
            let img = image(fenced, down, vec![partition(&[1, 2, 3], &[2, 3, 1], 2)]);
            assert!(preferred_leader_changes(&img).is_empty());
        }
    }

    #[test]
    fn healthy_partitions_need_no_change() {
        let img = image(
            &[],
            &[],
            vec![
                partition(&[1, 2, 3], &[1, 2, 3], 1),
                partition(&[3], &[3], 3),
            ],
        );
        assert!(leader_and_isr_changes(&img, &BrokerStates::of(&img), false).is_empty());
        let counts = partition_counts(&img);
        assert_eq!(
            counts,
            PartitionCounts {
                partitions: 2,
                under_replicated: 0,
                offline: 0
            }
        );
        let img = image(
            &[1],
            &[],
            vec![partition(&[1, 2], &[1], -1), partition(&[2, 3], &[2], 2)],
        );
        assert_eq!(
            partition_counts(&img),
            PartitionCounts {
                partitions: 2,
                under_replicated: 2,
                offline: 1
            }
        );
    }

    fn alter(new_isr: &[i32]) -> AlterPartitionRequest {
        AlterPartitionRequest {
            broker_id: 1,
            broker_epoch: 11,
            topic_id: TOPIC,
            partition: 0,
            leader_epoch: 3,
            partition_epoch: 5,
            new_isr: new_isr.to_vec(),
        }
    }

    #[test]
    fn alter_partition_checks_epochs_leader_and_eligibility() {
        let img = image(&[], &[], vec![partition(&[1, 2, 3], &[1, 3], 1)]);
        let record = check_alter_partition(&img, &alter(&[1, 2]))
            .unwrap()
            .unwrap();
        let p = &replayed(&img, &[record])[0];
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1, 2], 3, 6)
        );
        assert_eq!(check_alter_partition(&img, &alter(&[1, 3])).unwrap(), None);

        let err = |req: AlterPartitionRequest| check_alter_partition(&img, &req).unwrap_err();
        assert!(matches!(
            err(AlterPartitionRequest {
                partition_epoch: 4,
                ..alter(&[1])
            }),
            ControllerError::InvalidUpdateVersion(_)
        ));
        assert!(matches!(
            err(AlterPartitionRequest {
                leader_epoch: 2,
                ..alter(&[1])
            }),
            ControllerError::FencedLeaderEpoch(_)
        ));
        assert!(matches!(
            err(AlterPartitionRequest {
                leader_epoch: 4,
                ..alter(&[1])
            }),
            ControllerError::NotController
        ));
        assert!(matches!(
            err(AlterPartitionRequest {
                broker_epoch: 1,
                ..alter(&[1])
            }),
            ControllerError::StaleBrokerEpoch(_)
        ));
        assert!(matches!(
            err(AlterPartitionRequest {
                partition: 9,
                ..alter(&[1])
            }),
            ControllerError::UnknownTopicOrPartition
        ));
        assert!(matches!(
            err(AlterPartitionRequest {
                broker_id: 2,
                broker_epoch: 12,
                ..alter(&[2])
            }),
            ControllerError::NotLeader(_)
        ));
        // The leader left out, a repeat, a non-replica.
        for bad in [&[2][..], &[1, 1], &[1, 9]] {
            assert!(
                matches!(err(alter(bad)), ControllerError::IneligibleReplica(_)),
                "{bad:?}"
            );
        }
        // 3 is fenced: it may not rejoin even though listed before.
        let img = image(&[3], &[], vec![partition(&[1, 2, 3], &[1, 2], 1)]);
        assert!(matches!(
            check_alter_partition(&img, &alter(&[1, 2, 3])),
            Err(ControllerError::IneligibleReplica(_))
        ));
        // A broker shutting down may not join.
        let img = image(&[], &[2], vec![partition(&[1, 2, 3], &[1], 1)]);
        assert!(matches!(
            check_alter_partition(&img, &alter(&[1, 2])),
            Err(ControllerError::IneligibleReplica(_))
        ));
    }
}
