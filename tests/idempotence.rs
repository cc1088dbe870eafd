//! The idempotent producer, at the wire level: InitProducerId hands out
//! ids that are never reused (not across a restart either); a retried batch
//! gets its original offset back instead of being written twice, on the
//! leader that wrote it, after a restart (state rebuilt from the log) and on
//! a new leader after failover (state copied by its follower); gaps and old
//! epochs are refused with Kafka's errors.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{wait_for, TestCluster};
use fjord::client::admin::NewTopicSpec;
use fjord::client::KafkaClient;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

const TOPIC: &str = "idempotent";

/// A batch of `count` records from producer `pid` at `epoch`, sequences
/// from `first_seq`, as an idempotent Kafka producer sends it.
fn batch(pid: i64, epoch: i16, first_seq: i32, count: i32) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: first_seq + i,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("seq-{}", first_seq + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// Produces `records` with acks=all to partition 0: (error code, base offset).
async fn produce(client: &mut KafkaClient, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response = client.request(request).await.expect("produce");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn init_producer_id(client: &mut KafkaClient) -> (i64, i16) {
    let response = client
        .request(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))
        .await
        .expect("InitProducerId");
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// A client connected to the current leader of partition 0.
async fn leader_client(cluster: &TestCluster, alive: &[usize]) -> KafkaClient {
    let leader = wait_for(
        &format!("a leader with an ISR of nodes {alive:?}"),
        Duration::from_secs(30),
        || async {
            let image = cluster.image(alive[0]);
            let p = image.topics.get(TOPIC)?.partitions.get(&0)?.clone();
            let leader = cluster.nodes.iter().position(|n| n.id == p.leader)?;
            (alive.contains(&leader) && p.isr.len() >= alive.len()).then_some(leader)
        },
    )
    .await;
    KafkaClient::connect(&cluster.bootstrap(&[leader]), Duration::from_secs(10))
        .await
        .expect("connect to the leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_are_written_once_across_restarts_and_failover() {
    let mut cluster = TestCluster::start(
        3,
        "broker.heartbeat.interval.ms=200\nbroker.session.timeout.ms=2000",
    )
    .await;
    cluster.wait_for_active_brokers(3).await;
    let all = cluster.bootstrap(&[0, 1, 2]);
    let mut admin = KafkaClient::connect(&all, Duration::from_secs(10))
        .await
        .expect("connect");
    admin
        .create_topic(
            &NewTopicSpec {
                name: TOPIC.into(),
                num_partitions: 1,
                replication_factor: 3,
                configs: vec![],
            },
            false,
        )
        .await
        .expect("create");

    let (pid, epoch) = init_producer_id(&mut admin).await;
    let (other, _) = init_producer_id(&mut admin).await;
    assert_ne!(pid, other, "ids are never handed out twice");

    let mut leader = leader_client(&cluster, &[0, 1, 2]).await;
    assert_eq!(produce(&mut leader, batch(pid, epoch, 0, 5)).await, (0, 0));
    assert_eq!(produce(&mut leader, batch(pid, epoch, 5, 3)).await, (0, 5));
    // A retry of either batch: its original offset, nothing written.
    assert_eq!(produce(&mut leader, batch(pid, epoch, 0, 5)).await, (0, 0));
    assert_eq!(produce(&mut leader, batch(pid, epoch, 5, 3)).await, (0, 5));
    // A gap, and an epoch older than the producer's.
    assert_eq!(
        produce(&mut leader, batch(pid, epoch, 10, 1)).await.0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    assert_eq!(
        produce(&mut leader, batch(pid, epoch + 1, 0, 2)).await,
        (0, 8)
    );
    assert_eq!(
        produce(&mut leader, batch(pid, epoch, 10, 1)).await.0,
        ResponseError::InvalidProducerEpoch.code()
    );

    // Every node restarts: the state comes back from the log.
    cluster.stop_all().await;
    for i in 0..3 {
        cluster.start_node(i).await;
    }
    cluster.wait_for_leader().await;
    let mut leader = leader_client(&cluster, &[0, 1, 2]).await;
    assert_eq!(
        produce(&mut leader, batch(pid, epoch + 1, 0, 2)).await,
        (0, 8)
    );
    assert_eq!(
        produce(&mut leader, batch(pid, epoch + 1, 2, 1)).await,
        (0, 10)
    );

    // The leader goes: its follower, now leader, dedupes the same retry.
    let old = cluster
        .nodes
        .iter()
        .position(|n| cluster.image(0).topics.get(TOPIC).unwrap().partitions[&0].leader == n.id)
        .unwrap();
    cluster.stop_node(old).await;
    let alive: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut leader = leader_client(&cluster, &alive).await;
    assert_eq!(
        produce(&mut leader, batch(pid, epoch + 1, 2, 1)).await,
        (0, 10)
    );
    assert_eq!(
        produce(&mut leader, batch(pid, epoch + 1, 3, 1)).await,
        (0, 11)
    );

    // Ids are not reused after the restart either.
    let mut admin = KafkaClient::connect(&cluster.bootstrap(&alive), Duration::from_secs(10))
        .await
        .expect("connect");
    let (after, _) = init_producer_id(&mut admin).await;
    assert!(after > pid && after > other, "{after} after {pid}, {other}");
    cluster.stop_all().await;
}
