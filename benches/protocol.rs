//! Micro-benchmarks of the Kafka codec as the server runs it: a request
//! frame's header and body decoded (`codec::decode_request_header`, then
//! `ServedRequest::decode`, which runs the array guard first), and a
//! response encoded into one frame (`codec::encode_response`).
//!
//! The large messages are a librdkafka Produce v9 (one topic, 6 partitions,
//! a 64 KiB batch each) and a Fetch response (6 partitions, 1 MiB of record
//! batches each, `max.partition.fetch.bytes`); ApiVersions and Metadata show
//! the fixed cost of a small request.
//!
//! Run: `cargo bench --bench protocol` (or `--profile test` to reuse the
//! test build); filters follow `--`, e.g. `cargo bench --bench protocol -- fetch`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord::client::producer::RecordBatchWriter;
use fjord::kafka::codec;
use fjord::kafka::handlers::{api_versions, ServedRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use uuid::Uuid;

const PARTITIONS: i32 = 6;
const TOPIC: &str = "bench";
const PRODUCE_VERSION: i16 = 9;
/// librdkafka 2.x's Fetch; v13+ name topics by id.
const FETCH_VERSIONS: [i16; 2] = [12, 16];
const METADATA_VERSION: i16 = 12;
const API_VERSIONS_VERSION: i16 = 3;

/// A batch of `records` 1 KiB records built by fjord's client encoder.
fn batch(records: usize) -> Bytes {
    let mut writer = RecordBatchWriter::new();
    let value: Vec<u8> = (0..1024u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    for i in 0..records {
        let key = format!("key-{i}");
        writer.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(&[&value]),
            &[],
        );
    }
    writer
        .finish(Compression::None)
        .expect("an uncompressed batch")
}

/// `n` batches back to back, as a fetch returns them from a segment.
fn record_set(batch: &Bytes, bytes: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(bytes + batch.len());
    while out.len() + batch.len() <= bytes {
        out.extend_from_slice(batch);
    }
    out.freeze()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A whole request frame without its size prefix, as `codec::parse_frame`
/// hands it to the connection.
fn request_frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(str_bytes("rdkafka")));
    let frame = codec::encode_request(&header, api, body).expect("encoding a request");
    frame.slice(codec::SIZE_PREFIX_BYTES..)
}

/// What the connection does with a frame before the handler runs.
fn decode(frame: &Bytes) -> ServedRequest {
    let mut frame = frame.clone();
    let (api, header) = codec::decode_request_header(&mut frame).expect("a request header");
    ServedRequest::decode(api, header.request_api_version, frame).expect("a request body")
}

fn produce_request() -> ProduceRequest {
    let records = batch(62); // 62 x ~1 KiB: a 64 KiB batch.size
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(str_bytes(TOPIC)))
            .with_partition_data(
                (0..PARTITIONS)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )])
}

fn produce_response() -> ProduceResponse {
    ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(TopicName(str_bytes(TOPIC)))
        .with_partition_responses(
            (0..PARTITIONS)
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p)
                        .with_base_offset(1_000_000)
                        .with_log_append_time_ms(-1)
                })
                .collect(),
        )])
}

fn fetch_request(version: i16) -> FetchRequest {
    let topic = FetchTopic::default().with_partitions(
        (0..PARTITIONS)
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_current_leader_epoch(3)
                    .with_fetch_offset(1_000_000)
                    .with_last_fetched_epoch(3)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect(),
    );
    let topic = if version >= 13 {
        topic.with_topic_id(Uuid::from_u128(0xbe7c))
    } else {
        topic.with_topic(TopicName(str_bytes(TOPIC)))
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![topic])
}

fn fetch_response(version: i16, records: &Bytes) -> FetchResponse {
    let topic = FetchableTopicResponse::default().with_partitions(
        (0..PARTITIONS)
            .map(|p| {
                PartitionData::default()
                    .with_partition_index(p)
                    .with_high_watermark(2_000_000)
                    .with_last_stable_offset(2_000_000)
                    .with_log_start_offset(0)
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(records.clone()))
            })
            .collect(),
    );
    let topic = if version >= 13 {
        topic.with_topic_id(Uuid::from_u128(0xbe7c))
    } else {
        topic.with_topic(TopicName(str_bytes(TOPIC)))
    };
    FetchResponse::default().with_responses(vec![topic])
}

fn metadata_response() -> MetadataResponse {
    let brokers = (1..=3)
        .map(|id| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes("127.0.0.1"))
                .with_port(9091 + id)
        })
        .collect();
    let partitions = (0..PARTITIONS)
        .map(|p| {
            let replicas: Vec<BrokerId> = (0..3).map(|r| BrokerId(1 + (p + r) % 3)).collect();
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(replicas[0])
                .with_leader_epoch(3)
                .with_isr_nodes(replicas.clone())
                .with_replica_nodes(replicas)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes("fjord-bench-cluster")))
        .with_controller_id(BrokerId(1))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(TOPIC))))
            .with_topic_id(Uuid::from_u128(0xbe7c))
            .with_partitions(partitions)])
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// Produce v9, 6 x 64 KiB: the request decoded (records stay slices of
/// the frame), and its small response encoded.
fn produce(c: &mut Criterion) {
    let frame = request_frame(ApiKey::Produce, PRODUCE_VERSION, &produce_request());
    let response = produce_response();
    let mut group = c.benchmark_group("produce");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("decode_request/v9/6x64KiB", |b| b.iter(|| decode(&frame)));
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_response/v9/6", |b| {
        b.iter(|| codec::encode_response(7, ApiKey::Produce, PRODUCE_VERSION, &response))
    });
    group.finish();
}

/// Fetch: the consumer's request decoded, and the 6 MiB response encoded
/// into one frame (every record byte is copied into it).
fn fetch(c: &mut Criterion) {
    let records = record_set(&batch(62), 1 << 20);
    let mut group = c.benchmark_group("fetch");
    for version in FETCH_VERSIONS {
        let frame = request_frame(ApiKey::Fetch, version, &fetch_request(version));
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("decode_request/v{version}/6"), |b| {
            b.iter(|| decode(&frame))
        });
        let response = fetch_response(version, &records);
        let size = codec::encode_response(7, ApiKey::Fetch, version, &response)
            .expect("encoding a fetch response")
            .len();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode_response/v{version}/6x1MiB"), |b| {
            b.iter(|| codec::encode_response(7, ApiKey::Fetch, version, &response))
        });
        // What the broker does: the record sets are referenced, not copied.
        let shared = vec![records.clone()];
        group.bench_function(format!("encode_response_frame/v{version}/6x1MiB"), |b| {
            b.iter(|| {
                codec::encode_response_frame(
                    7,
                    ApiKey::Fetch,
                    version,
                    &response,
                    &shared,
                    Vec::new(),
                )
            })
        });
    }
    group.finish();
}

/// The fixed cost of a small request: decode, answer, encode.
fn small(c: &mut Criterion) {
    let mut group = c.benchmark_group("small");
    group.throughput(Throughput::Elements(1));

    let request = ApiVersionsRequest::default()
        .with_client_software_name(str_bytes("librdkafka"))
        .with_client_software_version(str_bytes("2.6.1"));
    let frame = request_frame(ApiKey::ApiVersions, API_VERSIONS_VERSION, &request);
    group.bench_function("api_versions/v3/roundtrip", |b| {
        b.iter(|| {
            let ServedRequest::ApiVersions(request) = decode(&frame) else {
                unreachable!("an ApiVersions frame decodes as ApiVersions")
            };
            let response = api_versions::handle(request, API_VERSIONS_VERSION);
            codec::encode_response(7, ApiKey::ApiVersions, API_VERSIONS_VERSION, &response)
        })
    });

    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(TOPIC)))),
    ]));
    let frame = request_frame(ApiKey::Metadata, METADATA_VERSION, &request);
    group.bench_function("metadata/v12/decode_request", |b| b.iter(|| decode(&frame)));
    let response = metadata_response();
    group.bench_function("metadata/v12/encode_response/3_brokers_6_partitions", |b| {
        b.iter(|| codec::encode_response(7, ApiKey::Metadata, METADATA_VERSION, &response))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = produce, fetch, small
}
criterion_main!(benches);
