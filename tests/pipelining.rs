//! Produce requests pipelined on one connection (as librdkafka sends up to
//! five at once): fjord appends each as it is read and lets their acks=all
//! waits overlap, so this checks what must not change because of it. The
//! answers come back in request order, a request of another kind in the
//! middle is answered in its place, and the log holds the records in the
//! order the requests were sent.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{wait_for, TestCluster};
use fjord::client::producer::encode_records;
use fjord::kafka::codec;
use fjord::storage::ReadLimit;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, Record, TimestampType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "pipelined";
const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;

fn record(offset: i64, value: String) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value)),
        headers: Default::default(),
        delete_horizon: false,
    }
}

fn header(api: ApiKey, version: i16, correlation_id: i32) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("pipelining-test")))
}

/// One acks=all request holding `per_request` records named `r<i>`.
fn produce_frame(correlation_id: i32, first: usize, per_request: usize) -> Bytes {
    let records: Vec<Record> = (first..first + per_request)
        .map(|i| record((i - first) as i64, format!("r{i}")))
        .collect();
    let batch = encode_records(&records, Compression::None).expect("encode");
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(20_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    codec::encode_request(
        &header(ApiKey::Produce, PRODUCE_VERSION, correlation_id),
        ApiKey::Produce,
        &request,
    )
    .expect("encode produce")
}

async fn read_frame(stream: &mut TcpStream, buffer: &mut BytesMut) -> Bytes {
    loop {
        if let Some(frame) = codec::parse_frame(buffer, i32::MAX).expect("frame") {
            return frame;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(buffer))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        assert!(n > 0, "the broker closed the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_acks_all_produce_is_answered_and_stored_in_request_order() {
    let mut cluster = TestCluster::start(3, "").await;
    cluster.wait_for_active_brokers(3).await;
    cluster
        .create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")])
        .await;
    let leader = wait_for(
        "a leader with a full ISR",
        Duration::from_secs(30),
        || async {
            let p = cluster
                .image(0)
                .topics
                .get(TOPIC)?
                .partitions
                .get(&0)?
                .clone();
            (p.leader >= 0 && p.isr.len() == 3).then_some(p.leader)
        },
    )
    .await;
    let at = cluster
        .nodes
        .iter()
        .position(|n| n.id == leader)
        .expect("the leader is one of ours");
    wait_for("the leader to lead", Duration::from_secs(30), || async {
        let topic_id = cluster.image(at).topics.get(TOPIC)?.topic_id;
        cluster
            .node(at)
            .replicas
            .leader_partition(topic_id, 0, -1)
            .ok()
            .map(|_| ())
    })
    .await;

    // Twelve produce requests of five records each, with a Metadata request
    // after the sixth, all written before any answer is read.
    const REQUESTS: usize = 12;
    const PER_REQUEST: usize = 5;
    let mut pipelined = BytesMut::new();
    let mut kinds = Vec::new();
    let mut id = 0;
    for r in 0..REQUESTS {
        id += 1;
        pipelined.put_slice(&produce_frame(id, r * PER_REQUEST, PER_REQUEST));
        kinds.push((id, ApiKey::Produce));
        if r == REQUESTS / 2 - 1 {
            id += 1;
            let metadata = MetadataRequest::default().with_topics(None);
            let frame = codec::encode_request(
                &header(ApiKey::Metadata, METADATA_VERSION, id),
                ApiKey::Metadata,
                &metadata,
            )
            .expect("encode metadata");
            pipelined.put_slice(&frame);
            kinds.push((id, ApiKey::Metadata));
        }
    }
    let mut stream = TcpStream::connect(cluster.bootstrap(&[at]))
        .await
        .expect("connect to the leader");
    stream.write_all(&pipelined).await.expect("write");

    let mut buffer = BytesMut::new();
    let mut base_offsets = Vec::new();
    for (expected_id, api) in kinds {
        let mut frame = read_frame(&mut stream, &mut buffer).await;
        let version = match api {
            ApiKey::Produce => PRODUCE_VERSION,
            _ => METADATA_VERSION,
        };
        let response_header =
            codec::decode_response_header(&mut frame, api.response_header_version(version))
                .expect("response header");
        assert_eq!(
            response_header.correlation_id, expected_id,
            "answers come back in request order"
        );
        match api {
            ApiKey::Produce => {
                let response = ProduceResponse::decode(&mut frame, version).expect("produce");
                let p = &response.responses[0].partition_responses[0];
                assert_eq!(p.error_code, 0, "request {expected_id}: {p:?}");
                base_offsets.push(p.base_offset);
            }
            _ => {
                let response = MetadataResponse::decode(&mut frame, version).expect("metadata");
                assert!(response
                    .topics
                    .iter()
                    .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == TOPIC)));
            }
        }
    }
    let expected: Vec<i64> = (0..REQUESTS as i64)
        .map(|r| r * PER_REQUEST as i64)
        .collect();
    assert_eq!(base_offsets, expected, "appended in request order");

    // Acknowledged with acks=all: every replica holds the records in order.
    let topic_id = cluster.image(at).topics.get(TOPIC).expect("topic").topic_id;
    for i in 0..3 {
        let values = wait_for(
            "a replica to hold every record",
            Duration::from_secs(20),
            || async {
                let p = cluster.node(i).replicas.partition(topic_id, 0)?;
                let read = p.log.read(0, 64 << 20, ReadLimit::LogEnd, true).ok()?;
                let decoded = fjord::client::consumer::decode_batches(read.records, 0, 0).ok()?;
                let values: Vec<String> = decoded
                    .records
                    .iter()
                    .filter_map(|r| r.value.as_ref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                (values.len() == REQUESTS * PER_REQUEST).then_some(values)
            },
        )
        .await;
        let sent: Vec<String> = (0..REQUESTS * PER_REQUEST)
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(values, sent, "node {i} holds the records in request order");
    }
    cluster.stop_all().await;
}
