//! The data path on a 3-node quorum in one process: partitions placed on
//! every broker, records produced to each leader and read back in order
//! with the same bytes, the same again after every node restarts, and a
//! deleted topic's files gone from every node's disk.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{wait_for, TestCluster};
use fjord::client::consumer::{Consumer, ConsumerConfig, StartOffset};
use fjord::client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use fjord::client::KafkaClient;
use kafka_protocol::records::Compression;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 6;
const RECORDS: usize = 3_000;

/// (offset, key, value) of each record, by partition.
type Consumed = BTreeMap<i32, Vec<(i64, Option<Bytes>, Option<Bytes>)>>;

/// Partition directories of `topic` under a node's data dir.
fn partition_dirs(dir: &Path, topic: &str) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("{topic}-")))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

async fn consumer_first(consumer: &mut Consumer) -> Option<i64> {
    Some(consumer.poll().await.ok()?.first()?.offset)
}

/// Every record of every partition, from the beginning, by partition.
async fn consume_all(bootstrap: &str, expected: usize) -> Consumed {
    let mut consumer = Consumer::assign(
        bootstrap,
        TOPIC,
        None,
        StartOffset::Earliest,
        ConsumerConfig::default(),
    )
    .await
    .expect("assign every partition");
    let mut by_partition: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed {seen} of {expected} records before the deadline"
        );
        for r in consumer.poll().await.expect("poll") {
            by_partition
                .entry(r.partition)
                .or_default()
                .push((r.offset, r.key, r.value));
            seen += 1;
        }
    }
    by_partition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_survive_restarts_and_deleted_topics_leave_no_files() {
    let mut cluster = TestCluster::start(3, "").await;
    cluster.wait_for_active_brokers(3).await;
    let bootstrap = cluster.bootstrap(&[0, 1, 2]);

    cluster
        .create_topic(TOPIC, PARTITIONS, 1, &[("segment.bytes", "20000")])
        .await;

    // Leaders are spread over the three brokers, and each broker holds the
    // directories of exactly the partitions it leads.
    let image = cluster.wait_for_equal_images().await;
    let topic = image.topics.get(TOPIC).expect("topic in the image");
    let mut leaders: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, registration) in &topic.partitions {
        leaders.entry(registration.leader).or_default().push(*p);
    }
    assert_eq!(leaders.len(), 3, "leaders on every broker: {leaders:?}");
    assert!(leaders.values().all(|ps| ps.len() == 2), "{leaders:?}");

    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            acks: Acks::Leader,
            // Uncompressed, so that the repetitive values fill segments.
            compression: Compression::None,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let record = ProducerRecord {
            topic: TOPIC.into(),
            key: Some(Bytes::from(format!("key-{}", i % 97))),
            value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(i % 300)))),
            ..ProducerRecord::default()
        };
        deliveries.push(producer.send(record).await.expect("send"));
    }
    let mut acked: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let meta = d.wait().await.expect("acknowledged");
        acked
            .entry(meta.partition)
            .or_default()
            .push((meta.offset, i));
    }
    producer.close().await.expect("close");
    assert_eq!(
        acked.len(),
        PARTITIONS as usize,
        "keys reach every partition"
    );

    let check = |consumed: &Consumed| {
        for (p, records) in &acked {
            let got = &consumed[p];
            assert_eq!(got.len(), records.len(), "partition {p}");
            for ((offset, i), (got_offset, key, value)) in records.iter().zip(got) {
                assert_eq!(offset, got_offset, "partition {p}");
                assert_eq!(key.as_deref(), Some(format!("key-{}", i % 97).as_bytes()));
                let want = format!("value-{i}-{}", "x".repeat(i % 300));
                assert_eq!(value.as_deref(), Some(want.as_bytes()));
            }
        }
    };
    check(&consume_all(&bootstrap, RECORDS).await);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let dirs = partition_dirs(&node.dir, TOPIC);
        let led = &leaders[&node.id];
        assert_eq!(dirs.len(), led.len(), "node {i}: {dirs:?}");
        // 20 kB segments: each partition rolled at least once.
        let segments = std::fs::read_dir(node.dir.join(&dirs[0])).unwrap().count();
        assert!(segments > 2, "node {i} {}: {segments} files", dirs[0]);
    }

    // Every node stops (flushing) and starts again: the same records.
    cluster.stop_all().await;
    for i in 0..3 {
        cluster.start_node(i).await;
    }
    cluster.wait_for_leader().await;
    check(&consume_all(&bootstrap, RECORDS).await);

    let mut admin = KafkaClient::connect(&bootstrap, Duration::from_secs(10))
        .await
        .expect("connect");
    admin.delete_topic(TOPIC).await.expect("delete topic");
    let dirs: Vec<_> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
    wait_for(
        "the topic's directories to leave every node",
        Duration::from_secs(30),
        || async {
            dirs.iter()
                .all(|d| partition_dirs(d, TOPIC).is_empty())
                .then_some(())
        },
    )
    .await;
    cluster.stop_all().await;
}

/// Retention runs on its own: a topic limited to a few kilobytes drops its
/// oldest segments, and consumers see the log start move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_moves_the_log_start_without_being_asked() {
    let mut cluster = TestCluster::start(1, "log.retention.check.interval.ms=100").await;
    cluster.wait_for_active_brokers(1).await;
    let bootstrap = cluster.bootstrap(&[0]);
    cluster
        .create_topic(
            TOPIC,
            1,
            1,
            &[("segment.bytes", "2048"), ("retention.bytes", "8192")],
        )
        .await;
    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            acks: Acks::Leader,
            // One small batch per record, so segments fill and roll.
            batch_size: 1,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    for i in 0..200 {
        let record = ProducerRecord {
            topic: TOPIC.into(),
            partition: Some(0),
            value: Some(Bytes::from(format!("{i:0>200}"))),
            ..ProducerRecord::default()
        };
        producer
            .send(record)
            .await
            .expect("send")
            .wait()
            .await
            .expect("acked");
    }
    producer.close().await.expect("close");

    let node = cluster.node(0);
    let topic_id = cluster.image(0).topics.get(TOPIC).expect("topic").topic_id;
    let log = node
        .replicas
        .partition(topic_id, 0)
        .expect("hosted")
        .log
        .clone();
    // Retention may have run while records were still arriving: wait for
    // a pass that sees them all.
    let start = wait_for(
        "retention to bring the log within retention.bytes",
        Duration::from_secs(30),
        || async {
            let start = log.log_start_offset();
            (start > 0 && log.size_bytes() <= 8192 + 2048).then_some(start)
        },
    )
    .await;
    assert!(start < 200, "the active segment is kept: start {start}");
    // Consumers from the earliest offset start there.
    let mut consumer = Consumer::assign(
        &bootstrap,
        TOPIC,
        Some(vec![0]),
        StartOffset::Earliest,
        ConsumerConfig::default(),
    )
    .await
    .expect("assign");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(first) = consumer_first(&mut consumer).await {
            break first;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record read");
    };
    assert_eq!(first, start);
    cluster.stop_all().await;
}
