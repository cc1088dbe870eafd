//! The controller role: the Raft-replicated metadata log and the managers
//! that turn requests (broker registration, heartbeats, later topic changes)
//! into metadata records. Only the active controller (the Raft leader)
//! decides; other nodes forward to it.

pub mod broker_lifecycle;
mod cluster_control;
pub use cluster_control::random_cluster_id;
mod producer_ids;
pub mod raft;
pub mod replication_control;
mod server;
pub mod topic_control;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::sync::{watch, Mutex};

use crate::metadata::{MetadataBatch, MetadataImage, MetadataRecord};
use cluster_control::ClusterControl;
use raft::log_store::{open_db, LogStore};
use raft::network::{now_ms, Network, PeerContacts};
use raft::rpc::{
    AlterPartitionReply, AlterPartitionRequest, BrokerHeartbeatReply, BrokerHeartbeatRequest,
    BrokerRegistrationRequest, ControlledShutdownReply, ControllerRequest, ControllerResponse,
    PeerClient,
};
use raft::state_machine::StateMachine;
use raft::MetadataRaft;
use topic_control::{
    AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicsReply, CreateTopicsRequest,
    DeleteTopicsReply, NamedResults, TopicControl, TopicRef,
};

/// The metadata quorum as the active controller sees it (Kafka's DescribeQuorum).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumInfo {
    pub leader_id: i32,
    /// The Raft term of the current leader (Kafka's leader epoch of `__cluster_metadata`).
    pub leader_epoch: i32,
    /// The commit index of the metadata log.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaState>,
    pub observers: Vec<ReplicaState>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaState {
    pub replica_id: i32,
    pub log_end_offset: i64,
    /// Unix milliseconds of the last successful contact with the leader; -1 if never.
    pub last_fetch_timestamp_ms: i64,
    /// Unix milliseconds when it last had everything the leader had; -1 if never.
    pub last_caught_up_timestamp_ms: i64,
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ControllerError {
    #[error("no active controller is known yet")]
    NoLeader,
    #[error("controller request timed out")]
    Timeout,
    #[error("controller unreachable: {0}")]
    Unavailable(String),
    #[error("this node is no longer the active controller")]
    NotController,
    #[error("stale broker epoch: {0}")]
    StaleBrokerEpoch(String),
    /// AlterPartition from a leader whose leader epoch is not the current one.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(String),
    /// AlterPartition based on a stale partition epoch (KIP-497).
    #[error("invalid update version: {0}")]
    InvalidUpdateVersion(String),
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// AlterPartition from a broker that does not lead the partition.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// A proposed ISR names a fenced, unregistered or shutting-down broker or
    /// a non-replica, or leaves out the leader (KIP-841).
    #[error("ineligible replica: {0}")]
    IneligibleReplica(String),
    #[error("controller: {0}")]
    Internal(String),
}

/// What the controller needs from the node's configuration.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub node_id: i32,
    /// Every voter's controller listener, `host:port`.
    pub voters: BTreeMap<i32, String>,
    /// Where the Raft log, vote and snapshots live.
    pub metadata_dir: PathBuf,
    pub election_timeout_ms: u64,
    pub raft_heartbeat_interval_ms: u64,
    pub snapshot_interval_entries: u64,
    pub log_keep_entries: u64,
    pub broker_session_timeout_ms: u64,
    /// Proposed as the cluster id if the log has none yet.
    pub cluster_id: Option<String>,
    /// `auto.leader.rebalance.enable`: return leadership to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in milliseconds: how often
    /// the active controller runs its partition pass.
    pub leader_imbalance_check_interval_ms: u64,
    /// `unclean.leader.election.enable`: with no live ISR member, elect a live
    /// replica outside the ISR (losing what only the ISR had).
    pub unclean_leader_election_enable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metadata store {path}: {source}")]
    Store {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("metadata store: {0}")]
    Raft(String),
}

/// Handle to this node's controller role.
pub struct Controller {
    node_id: i32,
    options: ControllerOptions,
    raft: MetadataRaft,
    image: watch::Receiver<Arc<MetadataImage>>,
    contacts: PeerContacts,
    cluster_control: ClusterControl,
    topic_control: TopicControl,
    producer_ids: producer_ids::ProducerIds,
    /// Connections to other voters for requests forwarded to the leader.
    peers: std::sync::Mutex<HashMap<u64, Arc<Mutex<PeerClient>>>>,
    shutdown: watch::Sender<bool>,
}

/// How long a forwarded request keeps retrying while leadership settles.
const FORWARD_DEADLINE: Duration = Duration::from_secs(10);
const FORWARD_RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounds a leadership check, so a leader cut off from its quorum answers
/// (retriably) within a forwarded call's timeout.
const LEADERSHIP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Controller {
    /// Opens the metadata store, starts Raft and serves the controller
    /// listener on `listener`.
    pub async fn start(
        options: ControllerOptions,
        listener: tokio::net::TcpListener,
    ) -> Result<Arc<Controller>, StartError> {
        let db_dir = options.metadata_dir.clone();
        std::fs::create_dir_all(&db_dir)
            .map_err(|e| StartError::Raft(format!("{}: {e}", db_dir.display())))?;
        let db = open_db(&db_dir).map_err(|source| StartError::Store {
            path: db_dir.clone(),
            source,
        })?;
        let log_store = LogStore::new(db.clone());
        let (state_machine, image) =
            StateMachine::open(db).map_err(|e| StartError::Raft(e.to_string()))?;
        let contacts = PeerContacts::default();
        let network = Network {
            contacts: contacts.clone(),
        };
        let config = openraft::Config {
            cluster_name: "fjord".into(),
            heartbeat_interval: options.raft_heartbeat_interval_ms,
            election_timeout_min: options.election_timeout_ms,
            election_timeout_max: options.election_timeout_ms * 2,
            install_snapshot_timeout: (options.election_timeout_ms * 2).max(1000),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                options.snapshot_interval_entries,
            ),
            max_in_snapshot_log_to_keep: options.log_keep_entries,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = MetadataRaft::new(
            options.node_id as u64,
            Arc::new(config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let members: BTreeMap<u64, BasicNode> = options
            .voters
            .iter()
            .map(|(id, addr)| (*id as u64, BasicNode::new(addr)))
            .collect();
        // Every voter initializes with the same membership; openraft makes
        // this idempotent, and a node that already has a log refuses it.
        match raft.initialize(members).await {
            Ok(()) => tracing::info!("metadata log initialized"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Raft(e.to_string())),
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let controller = Arc::new(Controller {
            node_id: options.node_id,
            cluster_control: ClusterControl::new(Duration::from_millis(
                options.broker_session_timeout_ms,
            )),
            topic_control: TopicControl::new(),
            producer_ids: Default::default(),
            options,
            raft,
            image,
            contacts,
            peers: Default::default(),
            shutdown,
        });
        tokio::spawn(server::serve(
            listener,
            controller.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(cluster_control::run_leader_duties(
            controller.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(replication_control::run_partition_duties(
            controller.clone(),
            Duration::from_millis(
                controller
                    .options
                    .leader_imbalance_check_interval_ms
                    .max(100),
            ),
            shutdown_rx.clone(),
        ));
        tokio::spawn(export_raft_metrics(controller.clone(), shutdown_rx));
        Ok(controller)
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The latest published metadata image.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    pub fn raft(&self) -> &MetadataRaft {
        &self.raft
    }

    /// The active controller, if one is known.
    pub fn leader_id(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as i32)
    }

    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.node_id)
    }

    /// Every voter's controller listener: (node id, host, port).
    pub fn voter_endpoints(&self) -> Vec<(i32, String, u16)> {
        self.options
            .voters
            .iter()
            .filter_map(|(id, addr)| {
                let (host, port) = addr.rsplit_once(':')?;
                Some((*id, host.to_string(), port.parse().ok()?))
            })
            .collect()
    }

    /// Appends `records` to the metadata log as one entry and waits until it
    /// is committed and applied here or on the leader. Returns its log index.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        match self
            .route(ControllerRequest::Propose(MetadataBatch { records }))
            .await?
        {
            ControllerResponse::Propose(r) => r,
            _ => Err(unexpected("Propose")),
        }
    }

    /// Registers this node's broker role; returns the broker epoch.
    pub async fn register_broker(
        &self,
        req: BrokerRegistrationRequest,
    ) -> Result<i64, ControllerError> {
        match self.route(ControllerRequest::RegisterBroker(req)).await? {
            ControllerResponse::RegisterBroker(r) => r,
            _ => Err(unexpected("RegisterBroker")),
        }
    }

    pub async fn broker_heartbeat(
        &self,
        req: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatReply, ControllerError> {
        match self.route(ControllerRequest::BrokerHeartbeat(req)).await? {
            ControllerResponse::BrokerHeartbeat(r) => r,
            _ => Err(unexpected("BrokerHeartbeat")),
        }
    }

    /// The quorum as the active controller sees it; forwarded to the leader
    /// when this node is not it.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, ControllerError> {
        match self.route(ControllerRequest::DescribeQuorum).await? {
            ControllerResponse::DescribeQuorum(r) => r,
            _ => Err(unexpected("DescribeQuorum")),
        }
    }

    /// Creates topics on the active controller (Kafka's CreateTopics); each
    /// topic succeeds or fails on its own, the successes in one entry.
    pub async fn create_topics(
        &self,
        req: CreateTopicsRequest,
    ) -> Result<CreateTopicsReply, ControllerError> {
        match self.route(ControllerRequest::CreateTopics(req)).await? {
            ControllerResponse::CreateTopics(r) => r,
            _ => Err(unexpected("CreateTopics")),
        }
    }

    pub async fn delete_topics(
        &self,
        topics: Vec<TopicRef>,
    ) -> Result<DeleteTopicsReply, ControllerError> {
        match self.route(ControllerRequest::DeleteTopics(topics)).await? {
            ControllerResponse::DeleteTopics(r) => r,
            _ => Err(unexpected("DeleteTopics")),
        }
    }

    pub async fn create_partitions(
        &self,
        req: CreatePartitionsRequest,
    ) -> Result<NamedResults, ControllerError> {
        match self.route(ControllerRequest::CreatePartitions(req)).await? {
            ControllerResponse::CreatePartitions(r) => r,
            _ => Err(unexpected("CreatePartitions")),
        }
    }

    /// Sets, deletes, appends to or subtracts from topic config overrides.
    pub async fn alter_topic_configs(
        &self,
        req: AlterTopicConfigsRequest,
    ) -> Result<NamedResults, ControllerError> {
        match self
            .route(ControllerRequest::AlterTopicConfigs(req))
            .await?
        {
            ControllerResponse::AlterTopicConfigs(r) => r,
            _ => Err(unexpected("AlterTopicConfigs")),
        }
    }

    /// A partition leader's ISR change (Kafka's AlterPartition): refused
    /// unless the broker epoch, leader epoch and partition epoch are the
    /// current ones and every new ISR member is eligible. Returns the
    /// partition's state after the change.
    pub async fn alter_partition(
        &self,
        req: AlterPartitionRequest,
    ) -> Result<AlterPartitionReply, ControllerError> {
        match self.route(ControllerRequest::AlterPartition(req)).await? {
            ControllerResponse::AlterPartition(r) => r,
            _ => Err(unexpected("AlterPartition")),
        }
    }

    /// Asks the active controller to move `broker_id`'s leaderships to other
    /// ISR members and take it out of ISRs (Kafka's controlled shutdown).
    pub async fn controlled_shutdown(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<ControlledShutdownReply, ControllerError> {
        let req = ControllerRequest::ControlledShutdown {
            broker_id,
            broker_epoch,
        };
        match self.route(req).await? {
            ControllerResponse::ControlledShutdown(r) => r,
            _ => Err(unexpected("ControlledShutdown")),
        }
    }

    /// A block of producer ids `start..end` from the active controller.
    async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<(i64, i64), ControllerError> {
        let req = ControllerRequest::AllocateProducerIds {
            broker_id,
            broker_epoch,
        };
        match self.route(req).await? {
            ControllerResponse::AllocateProducerIds(r) => r,
            _ => Err(unexpected("AllocateProducerIds")),
        }
    }

    /// Waits until this node's image holds metadata offset `offset` (a
    /// change the active controller reported), up to `timeout`. Returns the
    /// image either way; the caller checks what it needs.
    pub async fn wait_for_offset(&self, offset: u64, timeout: Duration) -> Arc<MetadataImage> {
        let mut image = self.image();
        let waited = tokio::time::timeout(timeout, image.wait_for(|i| i.offset >= offset)).await;
        match waited {
            Ok(Ok(i)) => i.clone(),
            _ => self.image.borrow().clone(),
        }
    }

    /// Stops Raft and the controller listener.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }

    /// Runs `req` on the active controller: here if this node leads, else
    /// forwarded. Retries while there is no leader or leadership moves, up to
    /// a deadline.
    async fn route(&self, req: ControllerRequest) -> Result<ControllerResponse, ControllerError> {
        let deadline = Instant::now() + FORWARD_DEADLINE;
        loop {
            let attempt = match self.leader_id() {
                None => Err(ControllerError::NoLeader),
                Some(id) if id == self.node_id => Ok(self.handle(req.clone()).await),
                Some(id) => self.forward(id, &req).await,
            };
            let retry = match &attempt {
                Err(e) => is_retriable(e),
                Ok(resp) => response_error(resp).is_some_and(is_retriable),
            };
            if !retry || Instant::now() >= deadline {
                return attempt;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn forward(
        &self,
        leader: i32,
        req: &ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        let Some(addr) = self.options.voters.get(&leader) else {
            return Err(ControllerError::Unavailable(format!(
                "leader {leader} is not a known voter"
            )));
        };
        let client = {
            let mut peers = self.peers.lock().map_err(|_| unexpected("lock"))?;
            peers
                .entry(leader as u64)
                .or_insert_with(|| Arc::new(Mutex::new(PeerClient::new(addr.clone()))))
                .clone()
        };
        let mut client = client.lock().await;
        client
            .call(req, FORWARD_RPC_TIMEOUT)
            .await
            .map_err(|e| ControllerError::Unavailable(format!("{}: {e}", client.addr())))
    }

    /// Serves one request on this node (the RPC server's entry point too).
    /// Takes the request by value so replicated entries are not copied.
    pub(crate) async fn handle(&self, req: ControllerRequest) -> ControllerResponse {
        match req {
            ControllerRequest::AppendEntries(rpc) => {
                ControllerResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            ControllerRequest::Vote(rpc) => ControllerResponse::Vote(self.raft.vote(rpc).await),
            ControllerRequest::InstallSnapshot(rpc) => {
                ControllerResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            ControllerRequest::Propose(batch) => {
                ControllerResponse::Propose(self.write(batch.records).await)
            }
            ControllerRequest::RegisterBroker(r) => {
                ControllerResponse::RegisterBroker(self.cluster_control.register(self, &r).await)
            }
            ControllerRequest::BrokerHeartbeat(r) => {
                ControllerResponse::BrokerHeartbeat(self.cluster_control.heartbeat(self, &r).await)
            }
            ControllerRequest::DescribeQuorum => {
                ControllerResponse::DescribeQuorum(self.local_quorum())
            }
            ControllerRequest::CreateTopics(r) => {
                ControllerResponse::CreateTopics(self.topic_control.create_topics(self, r).await)
            }
            ControllerRequest::DeleteTopics(r) => {
                ControllerResponse::DeleteTopics(self.topic_control.delete_topics(self, r).await)
            }
            ControllerRequest::CreatePartitions(r) => ControllerResponse::CreatePartitions(
                self.topic_control.create_partitions(self, r).await,
            ),
            ControllerRequest::AlterTopicConfigs(r) => ControllerResponse::AlterTopicConfigs(
                self.topic_control.alter_topic_configs(self, r).await,
            ),
            ControllerRequest::AlterPartition(r) => ControllerResponse::AlterPartition(
                replication_control::alter_partition(self, r).await,
            ),
            ControllerRequest::ControlledShutdown {
                broker_id,
                broker_epoch,
            } => ControllerResponse::ControlledShutdown(
                replication_control::controlled_shutdown(self, broker_id, broker_epoch).await,
            ),
            ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => ControllerResponse::AllocateProducerIds(
                producer_ids::allocate_block(self, broker_id, broker_epoch).await,
            ),
        }
    }

    /// The image the active controller judges by: leadership confirmed
    /// with a quorum just now (a paused or partitioned former leader learns
    /// here that it is not one) and every committed entry applied, so no
    /// election is computed from an ISR a newer committed change replaced.
    async fn linearizable_image(&self) -> Result<Arc<MetadataImage>, ControllerError> {
        if !self.is_leader() {
            return Err(ControllerError::NotController);
        }
        let confirm = self.raft.ensure_linearizable();
        match tokio::time::timeout(LEADERSHIP_CHECK_TIMEOUT, confirm).await {
            Ok(Ok(_)) => Ok(self.image.borrow().clone()),
            Ok(Err(RaftError::Fatal(e))) => Err(ControllerError::Internal(e.to_string())),
            Ok(Err(_)) => Err(ControllerError::NotController),
            Err(_) => Err(ControllerError::Unavailable(
                "leadership not confirmed by a quorum in time".into(),
            )),
        }
    }

    /// Appends to the local Raft, which must be the leader.
    async fn write(&self, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        let start = Instant::now();
        let result = self.raft.client_write(MetadataBatch { records }).await;
        metrics::histogram!("fjord_raft_append_to_commit_seconds")
            .record(start.elapsed().as_secs_f64());
        match result {
            Ok(resp) => Ok(resp.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ControllerError::NotController)
            }
            Err(e) => Err(ControllerError::Internal(e.to_string())),
        }
    }

    fn local_quorum(&self) -> Result<QuorumInfo, ControllerError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(ControllerError::NotController);
        }
        let leader_end = m.last_log_index.map_or(0, |i| i as i64 + 1);
        let now = now_ms();
        let voter_ids: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let mut voters = Vec::new();
        for id in &voter_ids {
            let state = if *id == m.id {
                ReplicaState {
                    replica_id: *id as i32,
                    log_end_offset: leader_end,
                    last_fetch_timestamp_ms: now,
                    last_caught_up_timestamp_ms: now,
                }
            } else {
                let matched = replication.get(id).copied().flatten();
                let contact = self.contacts.get(*id).unwrap_or_default();
                let end = matched.map_or(0, |l| l.index as i64 + 1);
                ReplicaState {
                    replica_id: *id as i32,
                    log_end_offset: end,
                    last_fetch_timestamp_ms: if contact.last_fetch_ms > 0 {
                        contact.last_fetch_ms
                    } else {
                        -1
                    },
                    last_caught_up_timestamp_ms: if end == leader_end && contact.last_fetch_ms > 0 {
                        contact.last_fetch_ms
                    } else if contact.last_caught_up_ms > 0 {
                        contact.last_caught_up_ms
                    } else {
                        -1
                    },
                }
            };
            voters.push(state);
        }
        Ok(QuorumInfo {
            leader_id: m.id as i32,
            leader_epoch: m.current_term as i32,
            high_watermark: quorum_end_offset(&voters),
            voters,
            observers: Vec::new(),
        })
    }
}

/// `fjord_raft_voter_lag_entries{voter}`: on the active controller, how
/// many metadata log entries each voter's matched log is behind the
/// leader's last entry (the leader itself 0). Only the leader knows what
/// its followers matched, so elsewhere the voters it once reported read 0,
/// as Kafka's controller metrics do on an inactive controller.
fn export_voter_lag(m: &openraft::RaftMetrics<u64, BasicNode>, exported: &mut BTreeSet<u64>) {
    let lag = |voter: u64, entries: u64| {
        metrics::gauge!("fjord_raft_voter_lag_entries", "voter" => voter.to_string())
            .set(entries as f64);
    };
    if m.state != ServerState::Leader {
        for voter in std::mem::take(exported) {
            lag(voter, 0);
        }
        return;
    }
    // In log end offsets (one past the last entry), as `fjord cluster
    // status` counts lag: an empty log and "nothing matched yet" are 0.
    let leader_end = m.last_log_index.map_or(0, |i| i + 1);
    let replication = m.replication.as_ref();
    let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
    for voter in exported.difference(&voters) {
        lag(*voter, 0);
    }
    for voter in &voters {
        let end = if *voter == m.id {
            leader_end
        } else {
            replication
                .and_then(|r| r.get(voter).copied().flatten())
                .map_or(0, |id| id.index + 1)
        };
        lag(*voter, leader_end.saturating_sub(end));
    }
    *exported = voters;
}

/// The highest log end offset a majority of voters have reached: the
/// exclusive end of the committed log (Kafka's high watermark).
fn quorum_end_offset(voters: &[ReplicaState]) -> i64 {
    let mut ends: Vec<i64> = voters.iter().map(|v| v.log_end_offset).collect();
    ends.sort_unstable_by(|a, b| b.cmp(a));
    ends.get(ends.len() / 2).copied().unwrap_or(0)
}

fn unexpected(what: &str) -> ControllerError {
    ControllerError::Internal(format!("unexpected answer to {what}"))
}

fn is_retriable(e: &ControllerError) -> bool {
    matches!(
        e,
        ControllerError::NoLeader
            | ControllerError::NotController
            | ControllerError::Unavailable(_)
    )
}

fn response_error(resp: &ControllerResponse) -> Option<&ControllerError> {
    match resp {
        ControllerResponse::Propose(Err(e)) => Some(e),
        ControllerResponse::RegisterBroker(Err(e)) => Some(e),
        ControllerResponse::BrokerHeartbeat(Err(e)) => Some(e),
        ControllerResponse::DescribeQuorum(Err(e)) => Some(e),
        ControllerResponse::CreateTopics(Err(e)) => Some(e),
        ControllerResponse::DeleteTopics(Err(e)) => Some(e),
        ControllerResponse::CreatePartitions(Err(e)) => Some(e),
        ControllerResponse::AlterTopicConfigs(Err(e)) => Some(e),
        ControllerResponse::AlterPartition(Err(e)) => Some(e),
        ControllerResponse::ControlledShutdown(Err(e)) => Some(e),
        ControllerResponse::AllocateProducerIds(Err(e)) => Some(e),
        _ => None,
    }
}

/// Mirrors openraft's metrics and the image's broker counts into Prometheus.
async fn export_raft_metrics(controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
    let mut raft_metrics = controller.raft.metrics();
    let mut image = controller.image();
    let mut last_leader = None;
    let mut lag_voters = BTreeSet::new();
    loop {
        {
            let m = raft_metrics.borrow_and_update();
            metrics::gauge!("fjord_raft_term").set(m.current_term as f64);
            metrics::gauge!("fjord_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("fjord_raft_is_leader").set(if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("fjord_raft_leader_id")
                .set(m.current_leader.map_or(-1.0, |l| l as f64));
            if let Some(id) = m.snapshot {
                metrics::gauge!("fjord_raft_snapshot_index").set(id.index as f64);
            }
            if m.current_leader.is_some() && m.current_leader != last_leader {
                metrics::counter!("fjord_raft_leader_changes_total").increment(1);
                tracing::info!(leader = ?m.current_leader, term = m.current_term, "metadata quorum leader");
            }
            last_leader = m.current_leader;
            export_voter_lag(&m, &mut lag_voters);
        }
        {
            let img = image.borrow_and_update();
            let fenced = img.cluster.brokers.values().filter(|b| b.fenced).count();
            metrics::gauge!("fjord_controller_brokers_registered")
                .set(img.cluster.brokers.len() as f64);
            metrics::gauge!("fjord_controller_brokers_fenced").set(fenced as f64);
            // As Kafka's controller metrics: only the active controller reports.
            let counts = if controller.is_leader() {
                replication_control::partition_counts(&img)
            } else {
                Default::default()
            };
            metrics::gauge!("fjord_controller_offline_partitions").set(counts.offline as f64);
            metrics::gauge!("fjord_controller_under_replicated_partitions")
                .set(counts.under_replicated as f64);
        }
        tokio::select! {
            r = raft_metrics.changed() => if r.is_err() { return },
            r = image.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
