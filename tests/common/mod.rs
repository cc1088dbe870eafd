//! In-process clusters for tests: each node on loopback ephemeral ports in
//! its own temp dir, and waits on conditions with deadlines.

#![allow(dead_code)]

pub mod bin;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::client::admin::NewTopicSpec;
use fjord::client::KafkaClient;
use fjord::config::Config;
use fjord::metadata::MetadataImage;
use fjord::node::{start_with_listeners, RunningNode};
use tokio::net::TcpListener;

/// Polls `check` until it returns `Some`, or panics naming `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct NodeSlot {
    pub id: i32,
    pub dir: PathBuf,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub running: Option<RunningNode>,
}

pub struct TestCluster {
    _root: tempfile::TempDir,
    pub nodes: Vec<NodeSlot>,
    voters: String,
    extra: String,
}

async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

async fn bind(port: u16) -> TcpListener {
    // A restarted node rebinds its old port; the previous socket may take a
    // moment to be released.
    wait_for(
        &format!("port {port} to be free"),
        Duration::from_secs(10),
        || async { TcpListener::bind(("127.0.0.1", port)).await.ok() },
    )
    .await
}

impl TestCluster {
    /// Starts `n` nodes; `extra` is appended to every node's properties.
    pub async fn start(n: i32, extra: &str) -> TestCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(NodeSlot {
                id,
                dir: root.path().join(format!("node-{id}")),
                kafka_port: free_port().await,
                controller_port: free_port().await,
                running: None,
            });
        }
        let voters = nodes
            .iter()
            .map(|s| format!("{}@127.0.0.1:{}", s.id, s.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            _root: root,
            nodes,
            voters,
            extra: extra.to_string(),
        };
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i).await;
        }
        cluster
    }

    pub fn config(&self, i: usize) -> Config {
        let s = &self.nodes[i];
        let text = format!(
            "node.id={}\nlisteners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{}\ncontroller.quorum.voters={}\n\
             log.dirs={}\nfjord.raft.heartbeat.interval.ms=50\ncontroller.quorum.election.timeout.ms=500\n{}",
            s.id,
            s.kafka_port,
            s.controller_port,
            s.kafka_port,
            self.voters,
            s.dir.display(),
            self.extra
        );
        Config::from_properties(&text, &[])
            .expect("valid test config")
            .0
    }

    pub async fn start_node(&mut self, i: usize) {
        let config = self.config(i);
        let kafka = bind(self.nodes[i].kafka_port).await;
        let controller = bind(self.nodes[i].controller_port).await;
        let running = start_with_listeners(config, kafka, controller)
            .await
            .expect("node starts");
        self.nodes[i].running = Some(running);
    }

    pub async fn stop_node(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].running.take() {
            node.shutdown().await;
        }
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }

    pub fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].running.as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &RunningNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.running.as_ref().map(|r| (i, r)))
    }

    pub fn image(&self, i: usize) -> Arc<MetadataImage> {
        self.node(i).controller.image().borrow().clone()
    }

    /// Waits until every running node agrees on one leader; returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        wait_for(
            "one leader agreed by every running node",
            Duration::from_secs(30),
            || async {
                let mut leaders = self.running().map(|(_, n)| n.controller.leader_id());
                let first = leaders.next()??;
                if !leaders.all(|l| l == Some(first)) {
                    return None;
                }
                let (i, n) = self.running().find(|(_, n)| n.config.node_id == first)?;
                n.controller.is_leader().then_some(i)
            },
        )
        .await
    }

    /// The Kafka listeners of nodes `nodes`, as a bootstrap list.
    pub fn bootstrap(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|i| format!("127.0.0.1:{}", self.nodes[*i].kafka_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Creates a topic through the running nodes' Kafka listeners.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) {
        let running: Vec<usize> = self.running().map(|(i, _)| i).collect();
        let mut admin = KafkaClient::connect(&self.bootstrap(&running), Duration::from_secs(10))
            .await
            .expect("connect to create a topic");
        let spec = NewTopicSpec {
            name: name.into(),
            num_partitions: partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        admin
            .create_topic(&spec, false)
            .await
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
    }

    /// Waits for a quorum leader and `n` active brokers: topics can be
    /// placed from then on.
    pub async fn wait_for_active_brokers(&self, n: usize) {
        self.wait_for_leader().await;
        wait_for(
            &format!("{n} active brokers"),
            Duration::from_secs(30),
            || async { (self.image(0).cluster.active_brokers().count() == n).then_some(()) },
        )
        .await;
    }

    /// Waits until every running node's image is equal to the leader's.
    pub async fn wait_for_equal_images(&self) -> Arc<MetadataImage> {
        wait_for(
            "every node to reach the same image",
            Duration::from_secs(30),
            || async {
                let images: Vec<_> = self.running().map(|(i, _)| self.image(i)).collect();
                let first = images.first()?.clone();
                images.iter().all(|im| **im == *first).then_some(first)
            },
        )
        .await
    }
}
