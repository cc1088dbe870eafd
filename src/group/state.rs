//! One group's membership and Kafka's classic state machine, without I/O:
//! time comes in as `now`, long polls go out as oneshot senders, so the
//! transitions are tested without sockets or sleeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::{CommitIdentity, GroupSettings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    /// Kafka's name, as ListGroups and DescribeGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// v4+: a new member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: the leader may be told to skip the assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

#[derive(Clone, Debug, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// (member id, instance id, metadata); only the leader gets them.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub fn error(error: i16, member_id: &str) -> Self {
        JoinOutcome {
            error,
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(error: i16) -> Self {
        SyncOutcome {
            error,
            ..Default::default()
        }
    }
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
    supports_skip_assignment: bool,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// What DescribeGroups shows.
pub struct GroupSummary {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<MemberSummary>,
}

pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id -> current member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they expire.
    pending_members: HashMap<String, Instant>,
    /// When PreparingRebalance gives up on members that have not rejoined,
    /// or CompletingRebalance on a leader that has not synced.
    deadline: Option<Instant>,
    /// The initial rebalance delay: joins wait until `deadline` even if
    /// every member is in.
    delayed_initial_join: bool,
    next_member: u64,
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A long poll that is already answered.
fn answered<T>(outcome: T) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(outcome);
    rx
}

impl Group {
    pub fn new(group_id: &str) -> Self {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            deadline: None,
            delayed_initial_join: false,
            next_member: 0,
        }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// Handles a JoinGroup: an immediate answer (Err) or a receiver that
    /// resolves when the rebalance completes (Ok).
    pub fn join(
        &mut self,
        req: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let member_id = req.member_id.clone();
        let fail = |e: ResponseError| answered(JoinOutcome::error(code(e), &member_id));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() && !self.supports_protocols(&req) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(req, old_id, now);
                }
            }
            if self.members.len() >= settings.max_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let new_id = self.new_member_id(&req.client_id);
            if req.require_known_member_id && req.group_instance_id.is_none() {
                let expires = now + Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                self.pending_members.insert(new_id.clone(), expires);
                return answered(JoinOutcome::error(
                    code(ResponseError::MemberIdRequired),
                    &new_id,
                ));
            }
            return self.add_member(new_id, req, settings, now);
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            if self.members.len() >= settings.max_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let id = req.member_id.clone();
            return self.add_member(id, req, settings, now);
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if let Some(instance) = &req.group_instance_id {
            if self.static_members.get(instance) != Some(&req.member_id) {
                return fail(ResponseError::FencedInstanceId);
            }
        }
        let same_protocols = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.update_member(req, settings, now),
            GroupState::CompletingRebalance if same_protocols => {
                // A retried join: answer with the current generation.
                answered(self.join_outcome(&req.member_id, false))
            }
            GroupState::Stable if same_protocols && !is_leader => {
                answered(self.join_outcome(&req.member_id, false))
            }
            _ => {
                let rx = self.update_member(req, settings, now);
                self.prepare_rebalance(settings, now);
                // A lone member rejoining with new protocols completes at once.
                self.maybe_complete_join(now);
                rx
            }
        }
    }

    /// KIP-345: a static member restarted with a new member id. In a Stable
    /// group with unchanged protocols it takes over the old member's
    /// assignment without a rebalance.
    fn rejoin_static(
        &mut self,
        req: JoinRequest,
        old_id: String,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let Some(mut member) = self.members.remove(&old_id) else {
            return answered(JoinOutcome::error(
                code(ResponseError::UnknownMemberId),
                &req.member_id,
            ));
        };
        // The old incarnation's waiting requests are fenced.
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinOutcome::error(
                code(ResponseError::FencedInstanceId),
                &old_id,
            ));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncOutcome::error(code(ResponseError::FencedInstanceId)));
        }
        let new_id = self.new_member_id(&req.client_id);
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        member.member_id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        member.last_heartbeat = now;
        member.supports_skip_assignment = req.supports_skip_assignment;
        // Kafka keeps the group as it is when the protocol it selected still
        // wins with the new metadata (a restarted consumer's subscription
        // bytes differ at least in the partitions it owns).
        member.protocols = req.protocols.clone();
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        let quiet = self.state == GroupState::Stable
            && self.select_protocol() == self.protocol_name
            && (!was_leader || req.supports_skip_assignment);
        if quiet {
            // A returning leader gets the members but skips the assignment
            // (KIP-814), so it does not overwrite everyone's partitions.
            return answered(self.join_outcome(&new_id, was_leader));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.awaiting_join = Some(tx);
        }
        let settings_like = GroupSettings {
            initial_rebalance_delay: Duration::ZERO,
            max_size: usize::MAX,
            min_session_timeout_ms: 0,
            max_session_timeout_ms: i32::MAX,
            offsets_retention: Duration::ZERO,
        };
        self.prepare_rebalance(&settings_like, now);
        self.maybe_complete_join(now);
        rx
    }

    fn supports_protocols(&self, req: &JoinRequest) -> bool {
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != req.protocol_type)
        {
            return false;
        }
        // Some protocol every other member supports must be offered.
        req.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.member_id != req.member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn add_member(
        &mut self,
        member_id: String,
        req: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                awaiting_join: Some(tx),
                awaiting_sync: None,
                supports_skip_assignment: req.supports_skip_assignment,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(settings, now);
        }
        self.maybe_complete_join(now);
        rx
    }

    fn update_member(
        &mut self,
        req: JoinRequest,
        _settings: &GroupSettings,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&req.member_id) {
            member.protocols = req.protocols;
            member.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
            member.rebalance_timeout =
                Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            member.last_heartbeat = now;
            member.supports_skip_assignment = req.supports_skip_assignment;
            if let Some(old) = member.awaiting_join.replace(tx) {
                let _ = old.send(JoinOutcome::error(
                    code(ResponseError::RebalanceInProgress),
                    &req.member_id,
                ));
            }
        }
        self.maybe_complete_join(now);
        rx
    }

    /// Enters PreparingRebalance: members must rejoin within the largest
    /// rebalance timeout. A group leaving Empty first waits the initial
    /// rebalance delay so that a starting fleet lands in one generation.
    pub fn prepare_rebalance(&mut self, settings: &GroupSettings, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncOutcome::error(code(ResponseError::RebalanceInProgress)));
                }
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let from_empty = self.state == GroupState::Empty;
        if from_empty && !settings.initial_rebalance_delay.is_zero() {
            self.delayed_initial_join = true;
            self.deadline = Some(now + settings.initial_rebalance_delay.min(rebalance_timeout));
        } else {
            self.delayed_initial_join = false;
            self.deadline = Some(now + rebalance_timeout);
        }
        self.state = GroupState::PreparingRebalance;
        metrics::counter!("fjord_group_rebalances_total").increment(1);
    }

    /// Completes the join phase once every member has rejoined (and no
    /// handed-out member id is still expected), or the deadline has passed.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let past_deadline = self.deadline.is_some_and(|d| now >= d);
        let all_in = !self.delayed_initial_join
            && self.pending_members.is_empty()
            && self.members.values().all(|m| m.awaiting_join.is_some());
        if past_deadline || all_in {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.delayed_initial_join = false;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            self.deadline = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let sync_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.deadline = Some(now + sync_timeout);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.join_outcome(&id, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                m.assignment = Bytes::new();
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(outcome);
                }
            }
        }
    }

    /// Kafka's vote: among the protocols every member supports, each member
    /// votes for the first it lists; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| &p == n))
            })
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| (*c).clone())
    }

    fn join_outcome(&self, member_id: &str, skip_assignment: bool) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: 0,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            skip_assignment,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let mut member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinOutcome::error(
                code(ResponseError::UnknownMemberId),
                member_id,
            ));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncOutcome::error(code(ResponseError::UnknownMemberId)));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(member)
    }

    fn check_member(
        &self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), i16> {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                Some(id) if id != member_id => return Err(code(ResponseError::FencedInstanceId)),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(code(ResponseError::UnknownMemberId));
        }
        if generation_id != self.generation_id {
            return Err(code(ResponseError::IllegalGeneration));
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<oneshot::Receiver<SyncOutcome>, SyncOutcome> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(SyncOutcome::error(code(ResponseError::UnknownMemberId)));
        }
        self.check_member(generation_id, member_id, group_instance_id)
            .map_err(SyncOutcome::error)?;
        match self.state {
            GroupState::PreparingRebalance => {
                Err(SyncOutcome::error(code(ResponseError::RebalanceInProgress)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = Some(tx);
                    m.last_heartbeat = Instant::now();
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.deadline = None;
                    let (pt, pn) = (self.protocol_type.clone(), self.protocol_name.clone());
                    for m in self.members.values_mut() {
                        if let Some(tx) = m.awaiting_sync.take() {
                            let _ = tx.send(SyncOutcome {
                                error: 0,
                                protocol_type: pt.clone(),
                                protocol_name: pn.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Ok(rx)
            }
            _ => {
                // Stable: the member's assignment is already known.
                let (tx, rx) = oneshot::channel();
                let assignment = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = tx.send(SyncOutcome {
                    error: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment,
                });
                Ok(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return code(ResponseError::UnknownMemberId);
        }
        if let Err(e) = self.check_member(generation_id, member_id, group_instance_id) {
            return e;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            _ => 0,
        }
    }

    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        settings: &GroupSettings,
    ) -> i16 {
        let now = Instant::now();
        let id = match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return code(ResponseError::FencedInstanceId),
                None => return code(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if self.pending_members.remove(&id).is_some() {
            return 0;
        }
        if self.remove_member(&id).is_none() {
            return code(ResponseError::UnknownMemberId);
        }
        self.after_removal(settings, now);
        0
    }

    /// After members left or expired: rebalance the rest, or finish a join
    /// phase that was only waiting for them.
    fn after_removal(&mut self, settings: &GroupSettings, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = GroupState::Empty;
                    self.generation_id += 1;
                    self.leader = None;
                    self.protocol_name = None;
                    self.protocol_type = None;
                    self.deadline = None;
                } else {
                    self.prepare_rebalance(settings, now);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            _ => {}
        }
    }

    pub fn validate_commit(&mut self, who: &CommitIdentity, now: Instant) -> i16 {
        if who.generation_id < 0 && who.member_id.is_empty() {
            // A simple commit (no group management) is fine for a group
            // without members.
            return if self.members.is_empty() {
                0
            } else {
                code(ResponseError::UnknownMemberId)
            };
        }
        if let Err(e) = self.check_member(
            who.generation_id,
            &who.member_id,
            who.group_instance_id.as_deref(),
        ) {
            return e;
        }
        if self.state == GroupState::CompletingRebalance {
            return code(ResponseError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(&who.member_id) {
            m.last_heartbeat = now;
        }
        0
    }

    /// Expires sessions, pending member ids and deadlines.
    pub fn tick(&mut self, now: Instant, settings: &GroupSettings) {
        self.pending_members.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.last_heartbeat + m.session_timeout <= now)
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.group_id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.after_removal(settings, now);
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::CompletingRebalance if self.deadline.is_some_and(|d| now >= d) => {
                // The leader never sent its assignment: members that did not
                // sync are dropped and the rest rebalance.
                let unsynced: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in unsynced {
                    self.remove_member(&id);
                }
                if self.members.is_empty() {
                    self.after_removal(settings, now);
                    self.state = GroupState::Empty;
                } else {
                    self.prepare_rebalance(settings, now);
                }
            }
            _ => {}
        }
    }

    /// Nothing in memory worth keeping: no members, none expected.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    /// Answers everyone waiting with `error` (the group moved away).
    pub fn abandon(&mut self, error: i16) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinOutcome::error(error, &m.member_id));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncOutcome::error(error));
            }
        }
    }

    pub fn summary(&self) -> GroupSummary {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupSummary {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: self
                .members
                .values()
                .map(|m| MemberSummary {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Topics in the members' consumer-protocol subscriptions.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let Some(protocol) = &self.protocol_name else {
            return Vec::new();
        };
        let mut topics = HashSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(m.metadata(protocol)).unwrap_or_default());
        }
        topics.into_iter().collect()
    }
}

/// The topics of a ConsumerProtocolSubscription: version, then
/// `[topic: string]` (every version starts this way).
pub fn subscription_topics(mut metadata: Bytes) -> Option<Vec<String>> {
    if metadata.remaining() < 6 {
        return None;
    }
    let _version = metadata.get_i16();
    let count = metadata.get_i32();
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        if metadata.remaining() < 2 {
            return None;
        }
        let len = usize::try_from(metadata.get_i16()).ok()?;
        if metadata.remaining() < len {
            return None;
        }
        topics.push(String::from_utf8_lossy(&metadata.split_to(len)).into_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(delay_ms: u64) -> GroupSettings {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            max_size: 3,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention: Duration::from_secs(60),
        }
    }

    fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn ready(rx: &mut oneshot::Receiver<JoinOutcome>) -> Option<JoinOutcome> {
        rx.try_recv().ok()
    }

    /// Joins a member the v4+ way: MEMBER_ID_REQUIRED, then the real join.
    fn join_new(
        g: &mut Group,
        s: &GroupSettings,
        now: Instant,
    ) -> (String, oneshot::Receiver<JoinOutcome>) {
        let first = ready(&mut g.join(join_req("", None), s, now)).unwrap();
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        let rx = g.join(join_req(&first.member_id, None), s, now);
        (first.member_id, rx)
    }

    /// Two members join, the leader syncs, both get their bytes.
    fn stable_pair(g: &mut Group, s: &GroupSettings, now: Instant) -> (String, String) {
        let (a, mut ra) = join_new(g, s, now);
        // With no delay, a lone member completes the join at once.
        let oa = ready(&mut ra).expect("a's join completes");
        assert_eq!(oa.generation_id, 1);
        let mut sa = g
            .sync(1, &a, None, vec![(a.clone(), Bytes::from_static(b"A"))])
            .unwrap();
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(g.state, GroupState::Stable);
        let (b, mut rb) = join_new(g, s, now);
        assert!(ready(&mut rb).is_none(), "b waits for a to rejoin");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(1, &a, None, now),
            ResponseError::RebalanceInProgress.code()
        );
        let mut ra = g.join(join_req(&a, None), s, now);
        let oa = ready(&mut ra).unwrap();
        let ob = ready(&mut rb).unwrap();
        assert_eq!((oa.generation_id, ob.generation_id), (2, 2));
        assert_eq!(oa.leader, a);
        assert_eq!(oa.members.len(), 2, "the leader gets every member");
        assert!(ob.members.is_empty());
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let mut sb = g.sync(2, &b, None, vec![]).unwrap();
        assert!(sb.try_recv().is_err(), "b waits for the leader's sync");
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A2")),
            (b.clone(), Bytes::from_static(b"B2")),
        ];
        let mut sa = g.sync(2, &a, None, assignments).unwrap();
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A2"));
        assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B2"));
        assert_eq!(g.state, GroupState::Stable);
        (a, b)
    }

    #[test]
    fn members_join_sync_and_get_the_leaders_bytes() {
        let s = settings(0);
        let mut g = Group::new("g");
        let (a, b) = stable_pair(&mut g, &s, Instant::now());
        assert_eq!(g.heartbeat(2, &a, None, Instant::now()), 0);
        assert_eq!(
            g.heartbeat(1, &b, None, Instant::now()),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.heartbeat(2, "nobody", None, Instant::now()),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn an_expired_session_rebalances_the_rest() {
        let s = settings(0);
        let mut g = Group::new("g");
        let now = Instant::now();
        let (a, b) = stable_pair(&mut g, &s, now);
        let later = now + Duration::from_millis(4000);
        assert_eq!(g.heartbeat(2, &a, None, later), 0);
        g.tick(now + Duration::from_millis(6500), &s);
        assert!(!g.members.contains_key(&b), "b's session expired");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let mut ra = g.join(join_req(&a, None), &s, later);
        let oa = ready(&mut ra).unwrap();
        assert_eq!(oa.generation_id, 3);
        assert_eq!(oa.members.len(), 1);
    }

    #[test]
    fn leaving_empties_the_group_and_commits_are_checked() {
        let s = settings(0);
        let mut g = Group::new("g");
        let now = Instant::now();
        let (a, b) = stable_pair(&mut g, &s, now);
        let who = |gen: i32, id: &str| CommitIdentity {
            generation_id: gen,
            member_id: id.into(),
            group_instance_id: None,
        };
        assert_eq!(g.validate_commit(&who(2, &a), now), 0);
        assert_eq!(
            g.validate_commit(&who(1, &a), now),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.validate_commit(&who(-1, ""), now),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(g.leave(&b, None, &s), 0);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.leave(&b, None, &s), ResponseError::UnknownMemberId.code());
        assert_eq!(g.leave(&a, None, &s), 0);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.validate_commit(&who(-1, ""), now), 0);
    }

    #[test]
    fn the_initial_delay_holds_the_first_join() {
        let s = settings(3000);
        let mut g = Group::new("g");
        let now = Instant::now();
        let (_, mut ra) = join_new(&mut g, &s, now);
        assert!(ready(&mut ra).is_none());
        let (_, mut rb) = join_new(&mut g, &s, now + Duration::from_millis(100));
        g.tick(now + Duration::from_millis(2000), &s);
        assert!(ready(&mut ra).is_none());
        g.tick(now + Duration::from_millis(3001), &s);
        let (oa, ob) = (ready(&mut ra).unwrap(), ready(&mut rb).unwrap());
        assert_eq!((oa.generation_id, ob.generation_id), (1, 1));
        assert_eq!(oa.leader, ob.leader);
    }

    #[test]
    fn group_max_size_is_enforced() {
        let mut s = settings(0);
        s.max_size = 1;
        let mut g = Group::new("g");
        let now = Instant::now();
        join_new(&mut g, &s, now);
        let refused = ready(&mut g.join(join_req("", None), &s, now)).unwrap();
        assert_eq!(refused.error, ResponseError::GroupMaxSizeReached.code());
    }

    #[test]
    fn a_restarted_static_member_gets_its_assignment_without_rebalance() {
        let s = settings(0);
        let mut g = Group::new("g");
        let now = Instant::now();
        let mut r1 = g.join(join_req("", Some("i1")), &s, now);
        let o1 = ready(&mut r1).unwrap();
        let mut r2 = g.join(join_req("", Some("i2")), &s, now);
        let mut r1 = g.join(join_req(&o1.member_id, Some("i1")), &s, now);
        let (o1, o2) = (ready(&mut r1).unwrap(), ready(&mut r2).unwrap());
        let leader = o1.leader.clone();
        let (lead, follow) = if leader == o1.member_id {
            (&o1, &o2)
        } else {
            (&o2, &o1)
        };
        let mut sf = g
            .sync(o1.generation_id, &follow.member_id, None, vec![])
            .unwrap();
        g.sync(
            o1.generation_id,
            &lead.member_id,
            None,
            vec![(follow.member_id.clone(), Bytes::from_static(b"F"))],
        )
        .unwrap();
        assert_eq!(sf.try_recv().unwrap().assignment, Bytes::from_static(b"F"));
        let generation = g.generation_id;
        // The follower restarts with the same instance id and no member id.
        let instance = if follow.member_id == o1.member_id {
            "i1"
        } else {
            "i2"
        };
        let mut rr = g.join(join_req("", Some(instance)), &s, now);
        let back = ready(&mut rr).unwrap();
        assert_eq!(back.error, 0);
        assert_eq!(back.generation_id, generation, "no rebalance");
        assert_eq!(g.state, GroupState::Stable);
        let mut sr = g
            .sync(generation, &back.member_id, Some(instance), vec![])
            .unwrap();
        assert_eq!(sr.try_recv().unwrap().assignment, Bytes::from_static(b"F"));
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat(generation, &follow.member_id, Some(instance), now),
            ResponseError::FencedInstanceId.code()
        );
    }

    #[test]
    fn subscription_topics_parse() {
        let mut b = bytes::BytesMut::new();
        use bytes::BufMut;
        b.put_i16(1);
        b.put_i32(2);
        for t in ["a", "bb"] {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
        }
        b.put_i32(-1);
        assert_eq!(
            subscription_topics(b.freeze()),
            Some(vec!["a".into(), "bb".into()])
        );
        // A count far beyond the bytes is malformed, not a panic.
        assert_eq!(
            subscription_topics(Bytes::from_static(&[0, 1, 0x7f, 0, 0, 0])),
            None
        );
    }
}
