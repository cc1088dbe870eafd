//! The metadata quorum, in process: election, replication, failover,
//! catch-up through a snapshot, and restart of the whole quorum.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster};
use fjord::metadata::records::ConfigResourceType;
use fjord::metadata::MetadataRecord;

fn config_write(i: usize) -> MetadataRecord {
    MetadataRecord::Config {
        resource_type: ConfigResourceType::Broker,
        resource_name: String::new(),
        name: format!("test.key.{}", i % 97),
        value: Some(i.to_string()),
    }
}

/// Proposes `count` writes through `via`, `parallel` at a time.
async fn write_many(cluster: &TestCluster, via: usize, range: std::ops::Range<usize>) {
    let controller = cluster.node(via).controller.clone();
    let mut pending = tokio::task::JoinSet::new();
    for i in range {
        let c = controller.clone();
        pending.spawn(async move { c.propose(vec![config_write(i)]).await });
        if pending.len() >= 32 {
            pending
                .join_next()
                .await
                .expect("task")
                .expect("join")
                .expect("write accepted");
        }
    }
    while let Some(r) = pending.join_next().await {
        r.expect("join").expect("write accepted");
    }
}

fn broker_configs(
    image: &fjord::metadata::MetadataImage,
) -> std::collections::BTreeMap<String, String> {
    image
        .configs
        .get(ConfigResourceType::Broker, "")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_one_leader_and_agree_after_1000_writes() {
    let mut cluster = TestCluster::start(3, "").await;
    let leader = cluster.wait_for_leader().await;
    let leaders: Vec<_> = cluster
        .running()
        .filter(|(_, n)| n.controller.is_leader())
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one node thinks it leads");

    // Writes go through a follower too: they are forwarded to the leader.
    let follower = (leader + 1) % 3;
    write_many(&cluster, leader, 0..500).await;
    write_many(&cluster, follower, 500..1000).await;

    let image = cluster.wait_for_equal_images().await;
    let configs = broker_configs(&image);
    assert_eq!(configs.len(), 97);
    // The last write to each key wins, in log order.
    for key in 0..97usize {
        let last = (0..1000).filter(|i| i % 97 == key).max().unwrap();
        assert_eq!(configs[&format!("test.key.{key}")], last.to_string());
    }
    assert!(
        image.cluster_id.is_some(),
        "the first leader named the cluster"
    );
    assert!(image.offset >= 1000);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up_through_a_snapshot() {
    // Snapshot every 50 entries, keep 5 behind it: a node away for 200
    // writes finds its next entry purged and must take a snapshot.
    let mut cluster = TestCluster::start(
        3,
        "fjord.metadata.snapshot.interval.entries=50\nfjord.metadata.log.keep.entries=5\n",
    )
    .await;
    let old = cluster.wait_for_leader().await;
    write_many(&cluster, old, 0..20).await;
    let old_last_index = cluster
        .node(old)
        .controller
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap();

    cluster.stop_node(old).await;
    let new = cluster.wait_for_leader().await;
    assert_ne!(new, old);
    write_many(&cluster, new, 20..220).await;
    let purged = wait_for(
        "the leader to purge its log",
        Duration::from_secs(30),
        || async {
            let m = cluster
                .node(new)
                .controller
                .raft()
                .metrics()
                .borrow()
                .clone();
            m.purged.filter(|p| p.index > old_last_index + 1)
        },
    )
    .await;
    assert!(purged.index > old_last_index);

    cluster.start_node(old).await;
    let image = cluster.wait_for_equal_images().await;
    assert_eq!(broker_configs(&image).len(), 97);
    let restarted = cluster
        .node(old)
        .controller
        .raft()
        .metrics()
        .borrow()
        .clone();
    let snapshot = restarted
        .snapshot
        .expect("the restarted node holds a snapshot");
    assert!(
        snapshot.index > old_last_index,
        "snapshot at {} should cover entries the node never had (it left at {old_last_index})",
        snapshot.index
    );
    // And it takes part again: a write through it commits everywhere.
    cluster
        .node(old)
        .controller
        .propose(vec![config_write(5000)])
        .await
        .unwrap();
    let image = cluster.wait_for_equal_images().await;
    assert_eq!(
        broker_configs(&image)[&format!("test.key.{}", 5000 % 97)],
        "5000"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_node_keeps_the_image() {
    let mut cluster = TestCluster::start(3, "fjord.metadata.snapshot.interval.entries=100\n").await;
    let leader = cluster.wait_for_leader().await;
    write_many(&cluster, leader, 0..300).await;
    let before = cluster.wait_for_equal_images().await;

    cluster.stop_all().await;
    for i in 0..3 {
        cluster.start_node(i).await;
    }
    cluster.wait_for_leader().await;
    // Brokers re-register on restart, so compare what the writes built.
    let after = wait_for(
        "restarted nodes to replay the log",
        Duration::from_secs(30),
        || async {
            let images: Vec<_> = (0..3).map(|i| cluster.image(i)).collect();
            images
                .iter()
                .all(|im| im.offset >= before.offset && im.configs == before.configs)
                .then(|| images[0].clone())
        },
    )
    .await;
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!(after.configs, before.configs);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_broker_registers_and_is_unfenced() {
    let mut cluster = TestCluster::start(3, "broker.heartbeat.interval.ms=100\n").await;
    cluster.wait_for_leader().await;
    wait_for(
        "three active brokers in every image",
        Duration::from_secs(30),
        || async {
            (0..3)
                .all(|i| {
                    let im = cluster.image(i);
                    im.cluster.brokers.len() == 3 && im.cluster.active_brokers().count() == 3
                })
                .then_some(())
        },
    )
    .await;
    let image = cluster.image(0);
    assert!(
        image.cluster_id.is_some(),
        "brokers never join an unnamed cluster"
    );
    for (id, b) in &image.cluster.brokers {
        let port = cluster.nodes[(*id - 1) as usize].kafka_port;
        assert_eq!(b.endpoint("PLAINTEXT").map(|e| e.port), Some(port));
    }
    cluster.stop_all().await;
}
