//! One fjord node: wires the controller role (metadata quorum) and the broker
//! role (Kafka listener, registration and heartbeats) together, and owns
//! start-up and orderly shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Listener};
use crate::controller::broker_lifecycle::{self, BrokerLease, BrokerLifecycle};
use crate::controller::raft::rpc::AlterPartitionRequest;
use crate::controller::{Controller, ControllerOptions, StartError};
use crate::kafka::BrokerContext;
use crate::metadata::Endpoint;
use crate::replication::{IsrChannel, IsrUpdate, IsrUpdated, Liveness, ReplicaManager};
use crate::storage::meta_properties::{self, MetaPropertiesError};
use crate::storage::LogManager;
use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directories belong to another node or cluster: a
    /// configuration problem, reported like one.
    #[error("{0}")]
    MetaProperties(#[from] MetaPropertiesError),
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Controller(#[from] StartError),
    #[error("log directory: {0}")]
    Storage(#[from] crate::storage::LogError),
}

impl NodeError {
    /// 2 for what the operator must fix in config or directories, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            NodeError::MetaProperties(_) => 2,
            _ => 1,
        }
    }
}

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub config: Arc<Config>,
    pub controller: Arc<Controller>,
    pub kafka_addr: SocketAddr,
    pub controller_addr: SocketAddr,
    pub replicas: Arc<ReplicaManager>,
    /// This broker's standing with the controller: no leading without it.
    pub lease: Arc<BrokerLease>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    storage_shutdown: watch::Sender<bool>,
    storage_tasks: Vec<JoinHandle<()>>,
    /// Set when the node must stop on its own (its directories turned out to
    /// belong to another cluster).
    pub fatal: watch::Receiver<Option<String>>,
}

/// Binds a listener. A port in use is retried for a few seconds: ports like
/// 39092 lie in Linux's ephemeral range, so an outgoing connection (a peer
/// dialling a node that is not up yet) can hold one for a moment.
pub async fn bind(listener: &Listener) -> Result<TcpListener, NodeError> {
    let addr = listener.bind_address();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(&addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => {
                return Err(NodeError::Bind {
                    name: listener.name.clone(),
                    addr,
                    source,
                })
            }
        }
    }
}

/// Starts a node on listeners bound from its config.
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    let kafka = bind(config.kafka_listener()).await?;
    let controller = bind(config.controller_listener()).await?;
    start_with_listeners(config, kafka, controller).await
}

/// Starts a node on listeners the caller bound (tests bind port 0 first).
pub async fn start_with_listeners(
    config: Config,
    kafka: TcpListener,
    controller_listener: TcpListener,
) -> Result<RunningNode, NodeError> {
    let config = Arc::new(config);
    let dirs = all_dirs(&config);
    let known_cluster_id =
        meta_properties::check_dirs(&dirs, config.node_id, config.cluster_id.as_deref())?;
    meta_properties::stamp_dirs(&dirs, config.node_id, known_cluster_id.as_deref())?;

    let kafka_addr = kafka
        .local_addr()
        .map_err(|source| bind_error(config.kafka_listener(), source))?;
    let controller_addr = controller_listener
        .local_addr()
        .map_err(|source| bind_error(config.controller_listener(), source))?;

    let options = ControllerOptions {
        node_id: config.node_id,
        voters: config
            .controller_quorum_voters
            .iter()
            .map(|v| (v.id, format!("{}:{}", v.host, v.port)))
            .collect::<BTreeMap<_, _>>(),
        metadata_dir: config.metadata_dir().join("__cluster_metadata-0"),
        election_timeout_ms: config.controller_quorum_election_timeout_ms,
        raft_heartbeat_interval_ms: config.raft_heartbeat_interval_ms,
        snapshot_interval_entries: config.metadata_snapshot_interval_entries,
        log_keep_entries: config.metadata_log_keep_entries,
        broker_session_timeout_ms: config.broker_session_timeout_ms,
        cluster_id: known_cluster_id.clone(),
        auto_leader_rebalance_enable: config.auto_leader_rebalance_enable,
        leader_imbalance_check_interval_ms: config
            .leader_imbalance_check_interval_seconds
            .saturating_mul(1000),
        unclean_leader_election_enable: config.unclean_leader_election_enable,
    };
    // Partition logs recover before anything is served. Blocking: it reads
    // back every segment written since the last flush.
    let log_dir = config.log_dirs[0].clone();
    let logs = tokio::task::spawn_blocking(move || LogManager::open(&log_dir))
        .await
        .map_err(|e| NodeError::Storage(crate::storage::LogError::Corrupt(e.to_string())))??;
    let logs = Arc::new(logs);
    let controller = Controller::start(options, controller_listener).await?;
    let lease = Arc::new(BrokerLease::new(
        Duration::from_millis(config.broker_session_timeout_ms),
        controller.image(),
    ));

    let (shutdown, shutdown_rx) = watch::channel(false);
    let incarnation_id = uuid::Uuid::new_v4();
    let replicas = Arc::new(
        ReplicaManager::new(config.node_id, incarnation_id, config.clone(), logs.clone())
            .with_controller(Arc::new(ControllerIsr(controller.clone())), lease.clone()),
    );
    // Not in `tasks`: these stop after the listener, in `shutdown`.
    let (storage_shutdown, storage_shutdown_rx) = watch::channel(false);
    let storage_tasks = vec![
        tokio::spawn(
            replicas
                .clone()
                .run(controller.image(), storage_shutdown_rx.clone()),
        ),
        tokio::spawn(logs.clone().run_maintenance(
            Duration::from_millis(config.log_retention_check_interval_ms),
            storage_shutdown_rx,
        )),
    ];
    let (fatal_tx, fatal) = watch::channel(None);
    let mut tasks = Vec::new();

    let ctx = Arc::new(BrokerContext {
        node_id: config.node_id,
        listener_name: config.inter_broker_listener_name.clone(),
        socket_request_max_bytes: config.socket_request_max_bytes,
        image: controller.image(),
        controller: controller.clone(),
        config: config.clone(),
        replicas: replicas.clone(),
        group: crate::group::GroupCoordinator::start(
            config.node_id,
            crate::group::GroupSettings::from_config(&config),
            controller.clone(),
            Some(replicas.clone()),
            shutdown_rx.clone(),
        ),
    });
    tasks.push(tokio::spawn(crate::kafka::server::serve(
        kafka,
        ctx,
        shutdown_rx.clone(),
    )));

    let lifecycle = BrokerLifecycle {
        broker_id: config.node_id,
        incarnation_id,
        endpoints: advertised_endpoints(&config, kafka_addr.port()),
        rack: None,
        heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
        lease: lease.clone(),
    };
    tasks.push(tokio::spawn(
        lifecycle.run(controller.clone(), shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(crate::process_metrics::run(
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(stamp_cluster_id(
        controller.clone(),
        dirs,
        config.node_id,
        known_cluster_id,
        fatal_tx,
        shutdown_rx,
    )));

    tracing::info!(
        node_id = config.node_id,
        kafka = %kafka_addr,
        controller = %controller_addr,
        "fjord node started"
    );
    Ok(RunningNode {
        config,
        controller,
        kafka_addr,
        controller_addr,
        replicas,
        lease,
        shutdown,
        tasks,
        storage_shutdown,
        storage_tasks,
        fatal,
    })
}

impl RunningNode {
    /// Stops accepting, lets in-flight requests finish, stops Raft.
    pub async fn shutdown(self) {
        broker_lifecycle::controlled_shutdown(&self.controller, &self.lease, &self.config).await;
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = self.storage_shutdown.send(true);
        for task in self.storage_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // Everything acknowledged goes to disk, and the next start-up need
        // not read it back.
        let logs = self.replicas.logs().clone();
        let _ = tokio::task::spawn_blocking(move || logs.flush_all()).await;
        self.controller.shutdown().await;
        tracing::info!(node_id = self.config.node_id, "fjord node stopped");
    }
}

/// Leaders' ISR changes go to the active controller.
struct ControllerIsr(Arc<Controller>);

impl IsrChannel for ControllerIsr {
    fn alter_partition(&self, u: IsrUpdate) -> BoxFuture<'static, Result<IsrUpdated, String>> {
        let controller = self.0.clone();
        Box::pin(async move {
            let request = AlterPartitionRequest {
                broker_id: u.broker_id,
                broker_epoch: u.broker_epoch,
                topic_id: u.topic_id,
                partition: u.partition,
                leader_epoch: u.leader_epoch,
                partition_epoch: u.partition_epoch,
                new_isr: u.new_isr,
            };
            controller
                .alter_partition(request)
                .await
                .map(|r| IsrUpdated {
                    leader: r.leader,
                    leader_epoch: r.leader_epoch,
                    partition_epoch: r.partition_epoch,
                    isr: r.isr,
                })
                .map_err(|e| e.to_string())
        })
    }
}

/// A broker leads only while its controller session is alive.
impl Liveness for BrokerLease {
    fn is_active(&self) -> bool {
        BrokerLease::is_active(self)
    }
}

fn bind_error(listener: &Listener, source: std::io::Error) -> NodeError {
    NodeError::Bind {
        name: listener.name.clone(),
        addr: listener.bind_address(),
        source,
    }
}

fn all_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs = config.log_dirs.clone();
    let metadata = config.metadata_dir();
    if !dirs.contains(&metadata) {
        dirs.push(metadata);
    }
    dirs
}

/// The broker's advertised listeners; a port of 0 (bound to an ephemeral
/// port) is replaced by the port actually bound.
fn advertised_endpoints(config: &Config, bound_kafka_port: u16) -> Vec<Endpoint> {
    config
        .advertised_listeners
        .iter()
        .filter(|l| !config.controller_listener_names.contains(&l.name))
        .map(|l| Endpoint {
            name: l.name.clone(),
            host: l.host.clone(),
            port: if l.port == 0 {
                bound_kafka_port
            } else {
                l.port
            },
            security_protocol: 0,
        })
        .collect()
}

/// Once the metadata log names the cluster, records it in every directory's
/// `meta.properties`; a directory stamped for another cluster stops the node.
async fn stamp_cluster_id(
    controller: Arc<Controller>,
    dirs: Vec<PathBuf>,
    node_id: i32,
    known: Option<String>,
    fatal: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut image = controller.image();
    loop {
        let cluster_id = image.borrow_and_update().cluster_id.clone();
        if let Some(id) = cluster_id {
            match &known {
                Some(k) if *k != id => {
                    let msg = format!(
                        "data directories belong to cluster {k}, but the metadata quorum is cluster {id}"
                    );
                    tracing::error!("{msg}");
                    let _ = fatal.send(Some(msg));
                    return;
                }
                Some(_) => return,
                None => {
                    if let Err(e) = meta_properties::stamp_dirs(&dirs, node_id, Some(&id)) {
                        let _ = fatal.send(Some(e.to_string()));
                        return;
                    }
                    tracing::info!(cluster_id = %id, "cluster id recorded in meta.properties");
                    return;
                }
            }
        }
        tokio::select! {
            r = image.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
