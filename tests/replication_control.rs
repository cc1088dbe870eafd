//! The controller's half of replication on a 3-node in-process cluster:
//! leaderships move with bumped leader epochs when a broker shuts down
//! (controlled) or goes silent (fenced by session expiry), a partition
//! whose only in-sync replica is gone goes offline rather than electing an
//! out-of-sync one, preferred leaders return, and AlterPartition refuses
//! stale epochs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_for, TestCluster};
use fjord::client::admin::NewTopicSpec;
use fjord::client::KafkaClient;
use fjord::controller::raft::rpc::AlterPartitionRequest;
use fjord::controller::replication_control::partition_counts;
use fjord::controller::topic_control::{CreateTopicsRequest, NewTopic, ReplicaAssignment};
use fjord::controller::ControllerError;
use fjord::metadata::image::PartitionRegistration;
use fjord::metadata::MetadataImage;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Fast sessions so a silent broker is fenced within seconds, and a
/// preferred-leader pass every second.
const EXTRA: &str = "broker.heartbeat.interval.ms=200\nbroker.session.timeout.ms=2000\n\
                     leader.imbalance.check.interval.seconds=1\n";

const PATIENCE: Duration = Duration::from_secs(60);

async fn started(extra: &str) -> TestCluster {
    let cluster = TestCluster::start(3, extra).await;
    let leader = cluster.wait_for_leader().await;
    wait_for("3 active brokers", PATIENCE, || async {
        (cluster.image(leader).cluster.active_brokers().count() == 3).then_some(())
    })
    .await;
    cluster
}

async fn create_replicated(cluster: &TestCluster, name: &str, partitions: i32) {
    let addr = cluster.node(0).kafka_addr.to_string();
    let mut admin = KafkaClient::connect(&addr, Duration::from_secs(15))
        .await
        .expect("connect");
    let spec = NewTopicSpec {
        name: name.to_string(),
        num_partitions: partitions,
        replication_factor: 3,
        configs: vec![],
    };
    let created = admin.create_topic(&spec, false).await.expect("create");
    assert_eq!(created.replication_factor, 3);
}

fn partitions(image: &MetadataImage, topic: &str) -> BTreeMap<i32, PartitionRegistration> {
    image
        .topics
        .get(topic)
        .map(|t| t.partitions.clone())
        .unwrap_or_default()
}

/// A running node's image once every running node agrees on it.
async fn settled(cluster: &TestCluster) -> std::sync::Arc<MetadataImage> {
    cluster.wait_for_leader().await;
    cluster.wait_for_equal_images().await
}

#[tokio::test(flavor = "multi_thread")]
async fn controlled_shutdown_hands_over_and_preferred_leaders_return() {
    let mut cluster = started(EXTRA).await;
    create_replicated(&cluster, "orders", 6).await;
    let before = wait_for("6 partitions with 3 in sync", PATIENCE, || async {
        let p = partitions(&cluster.image(0), "orders");
        (p.len() == 6 && p.values().all(|p| p.isr.len() == 3)).then_some(p)
    })
    .await;
    // Placement makes each broker the first replica, and so the leader, of two.
    for p in before.values() {
        assert_eq!(p.leader, p.replicas[0]);
    }
    let led_by_2: Vec<i32> = before
        .iter()
        .filter(|(_, p)| p.leader == 2)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(led_by_2.len(), 2, "{before:?}");

    cluster.stop_node(1).await;
    let image = wait_for("broker 2 fenced after its shutdown", PATIENCE, || async {
        let image = settled(&cluster).await;
        image.cluster.brokers[&2].fenced.then_some(image)
    })
    .await;
    // The controlled shutdown ran before the session ended.
    assert!(image.cluster.brokers[&2].in_controlled_shutdown);
    let after = partitions(&image, "orders");
    for i in &led_by_2 {
        let (old, new) = (&before[i], &after[i]);
        assert!(new.leader == 1 || new.leader == 3, "partition {i}: {new:?}");
        // One move: straight to an in-sync replica, never through "offline".
        assert_eq!(new.leader_epoch, old.leader_epoch + 1, "partition {i}");
    }
    for (i, p) in &after {
        assert!(
            !p.isr.contains(&2),
            "partition {i} keeps 2 in its ISR: {p:?}"
        );
        assert_eq!(p.isr.len(), 2, "partition {i}");
    }
    let counts = partition_counts(&image);
    assert_eq!((counts.offline, counts.under_replicated), (0, 6));

    // Back again: it catches up, rejoins every ISR and leads its own again.
    cluster.start_node(1).await;
    let image = wait_for(
        "preferred leaders back, every ISR full",
        PATIENCE,
        || async {
            let image = settled(&cluster).await;
            let p = partitions(&image, "orders");
            p.values()
                .all(|p| p.leader == p.replicas[0] && p.isr.len() == 3)
                .then_some(image)
        },
    )
    .await;
    for i in &led_by_2 {
        assert_eq!(partitions(&image, "orders")[i].leader, 2);
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_broker_is_fenced_and_its_partitions_move_or_go_offline() {
    let extra = format!("{EXTRA}controlled.shutdown.enable=false\n");
    let mut cluster = started(&extra).await;
    create_replicated(&cluster, "orders", 3).await;
    // One partition whose only replica is broker 2.
    let solo = NewTopic {
        name: "solo".into(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: vec![ReplicaAssignment {
            partition_index: 0,
            broker_ids: vec![2],
        }],
        configs: vec![],
    };
    let reply = cluster
        .node(0)
        .controller
        .create_topics(CreateTopicsRequest {
            topics: vec![solo],
            validate_only: false,
        })
        .await
        .expect("create solo");
    assert_eq!(reply.topics[0].result, Ok(()));
    let before = wait_for("3 partitions with 3 in sync", PATIENCE, || async {
        let p = partitions(&cluster.image(0), "orders");
        (p.len() == 3 && p.values().all(|p| p.isr.len() == 3)).then_some(p)
    })
    .await;

    stale_isr_changes_are_refused(&cluster).await;

    // Broker 2 stops without a word: its session runs out.
    cluster.stop_node(1).await;
    let image = wait_for("broker 2 fenced", PATIENCE, || async {
        let image = settled(&cluster).await;
        image.cluster.brokers[&2].fenced.then_some(image)
    })
    .await;
    assert!(!image.cluster.brokers[&2].in_controlled_shutdown);
    for (i, p) in partitions(&image, "orders") {
        assert_ne!(p.leader, 2, "partition {i}");
        assert!(!p.isr.contains(&2), "partition {i}: {p:?}");
        if before[&i].leader == 2 {
            assert!(p.isr.contains(&p.leader), "partition {i}: {p:?}");
            assert_eq!(p.leader_epoch, before[&i].leader_epoch + 1);
        }
    }
    // The last in-sync replica stays in the ISR; with it gone, no leader.
    let solo = &partitions(&image, "solo")[&0];
    assert_eq!((solo.leader, solo.isr.clone()), (-1, vec![2]));
    assert_eq!(partition_counts(&image).offline, 1);

    // Clients are told so: LEADER_NOT_AVAILABLE, no leader, 2 offline.
    let addr = cluster.node(0).kafka_addr.to_string();
    let mut client = KafkaClient::connect(&addr, Duration::from_secs(15))
        .await
        .expect("connect");
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("solo"))))]));
    let metadata = client.request(request).await.expect("Metadata");
    let p = &metadata.topics[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::LeaderNotAvailable.code());
    assert_eq!(p.leader_id.0, -1);
    assert_eq!(
        p.offline_replicas.iter().map(|b| b.0).collect::<Vec<_>>(),
        [2]
    );

    // When it returns, it leads its partition again.
    cluster.start_node(1).await;
    wait_for("the offline partition led by 2 again", PATIENCE, || async {
        let image = settled(&cluster).await;
        (partitions(&image, "solo")[&0].leader == 2).then_some(())
    })
    .await;
    cluster.stop_all().await;
}

/// AlterPartition as a leader would send it: accepted with the current
/// epochs, refused with stale ones or an ineligible ISR.
async fn stale_isr_changes_are_refused(cluster: &TestCluster) {
    let image = cluster.image(0);
    let topic = image.topics.get("orders").expect("orders");
    let (partition, p) = topic.partitions.iter().next().expect("a partition");
    let leader = p.leader;
    let epoch_of = |id: i32| image.cluster.brokers[&id].broker_epoch;
    let request = AlterPartitionRequest {
        broker_id: leader,
        broker_epoch: epoch_of(leader),
        topic_id: topic.topic_id,
        partition: *partition,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![leader],
    };
    let controller = &cluster.node(0).controller;
    let reply = controller
        .alter_partition(request.clone())
        .await
        .expect("a current shrink is accepted");
    assert_eq!(reply.isr, [leader]);
    assert_eq!(
        (reply.leader, reply.leader_epoch, reply.partition_epoch),
        (leader, p.leader_epoch, p.partition_epoch + 1)
    );
    // The same proposal again is based on a partition epoch now stale.
    match controller.alter_partition(request.clone()).await {
        Err(ControllerError::InvalidUpdateVersion(_)) => {}
        other => panic!("stale partition epoch: {other:?}"),
    }
    let current = AlterPartitionRequest {
        partition_epoch: reply.partition_epoch,
        ..request.clone()
    };
    match controller
        .alter_partition(AlterPartitionRequest {
            leader_epoch: p.leader_epoch - 1,
            ..current.clone()
        })
        .await
    {
        Err(ControllerError::FencedLeaderEpoch(_)) => {}
        other => panic!("old leader epoch: {other:?}"),
    }
    let follower = p.replicas.iter().copied().find(|r| *r != leader).unwrap();
    match controller
        .alter_partition(AlterPartitionRequest {
            broker_id: follower,
            broker_epoch: epoch_of(follower),
            ..current.clone()
        })
        .await
    {
        Err(ControllerError::NotLeader(_)) => {}
        other => panic!("not the leader: {other:?}"),
    }
    // The leader's own ISR changes may bump the partition epoch meanwhile:
    // judged stale first, then on the ISR itself.
    wait_for("an ISR without its leader refused", PATIENCE, || async {
        let image = cluster.image(0);
        let now = &partitions(&image, "orders")[partition];
        let without_leader = AlterPartitionRequest {
            partition_epoch: now.partition_epoch,
            new_isr: vec![follower],
            ..current.clone()
        };
        match controller.alter_partition(without_leader).await {
            Err(ControllerError::IneligibleReplica(_)) => Some(()),
            Err(ControllerError::InvalidUpdateVersion(_)) => None,
            other => panic!("leader left out: {other:?}"),
        }
    })
    .await;
    match controller
        .alter_partition(AlterPartitionRequest {
            broker_epoch: epoch_of(leader) - 1,
            ..current
        })
        .await
    {
        Err(ControllerError::StaleBrokerEpoch(_)) => {}
        other => panic!("stale broker epoch: {other:?}"),
    }
    // The leader's own follower tracking puts the others back.
    wait_for("the ISR full again", PATIENCE, || async {
        let image = cluster.image(0);
        (partitions(&image, "orders")[partition].isr.len() == 3).then_some(())
    })
    .await;
}
