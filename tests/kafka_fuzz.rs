//! The request decoder and the Kafka listener against hostile input.
//!
//! A broker decodes whatever reaches its port. Every byte string must become
//! a request or an error: never a panic, and never an allocation sized by a
//! length read off the wire (kafka-protocol 0.18 reserves array capacity
//! before it decodes an element; `src/kafka/array_guard.rs` stands in front
//! of it). A global allocator here refuses, while a fuzz input is being
//! decoded, any single allocation above [`ALLOCATION_LIMIT`] and prints the
//! input before the process aborts, so "unbounded" is caught even where the
//! operating system would have overcommitted.
//!
//! `the_decoder_survives_random_and_mutated_requests` runs for a bounded
//! time (`FJORD_FUZZ_SECS`, default 15) from a fixed seed (`FJORD_FUZZ_SEED`
//! to change it) over random bytes and over real requests of every API in
//! `SUPPORTED_APIS` at every advertised version, mutated the ways broken or
//! hostile peers mutate them. Each iteration has its own generator derived
//! from (seed, iteration); a failure prints both, and `FJORD_FUZZ_ONLY=N`
//! replays iteration N alone.
//!
//! The live tests prove the rest on a running node: bad frames close only
//! their connection and an oversized size prefix is refused before any body
//! is sent, while another connection keeps getting correct answers; bad
//! record batches get Kafka's error code in the produce response, are not
//! stored, and whatever mutated batch is stored reads back clean.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fjord::client::KafkaClient;
use fjord::kafka::codec::{self, decode_request_header, parse_frame, SUPPORTED_APIS};
use fjord::kafka::handlers::{describe_quorum, ServedRequest};
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as AlterConfigsResource2, AlterableConfig as AlterableConfig2,
};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    ProduceResponse, RequestHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::TestCluster;

// ---------------------------------------------------------------------------
// Allocation guard

/// Largest single allocation a fuzz input may cause. Inputs are at most a
/// few tens of KiB, so a decoder bounded by its input stays far below this.
const ALLOCATION_LIMIT: usize = 64 << 20;

thread_local! {
    /// Set on the fuzzing thread while it decodes an input; the input itself
    /// (pointer, length) for the report.
    static DECODING: Cell<Option<(*const u8, usize)>> = const { Cell::new(None) };
}

struct GuardedAllocator;

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

impl GuardedAllocator {
    /// Whether `size` is refused; reports the input that asked for it first.
    /// Runs inside the allocator, so it must not allocate: raw write(2).
    fn refuses(size: usize) -> bool {
        if size <= ALLOCATION_LIMIT {
            return false;
        }
        let Ok(Some((input, len))) = DECODING.try_with(Cell::get) else {
            return false;
        };
        write_stderr(b"\nkafka_fuzz: an allocation of ");
        write_decimal(size);
        write_stderr(b" bytes while decoding this input (hex), which aborts the test:\n");
        // SAFETY: the fuzz loop sets DECODING from a slice that outlives the decode.
        let input = unsafe { std::slice::from_raw_parts(input, len) };
        for chunk in input.chunks(64) {
            let mut hex = [0u8; 129];
            for (i, b) in chunk.iter().enumerate() {
                hex[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
                hex[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 0xf)];
            }
            hex[2 * chunk.len()] = b'\n';
            write_stderr(&hex[..=2 * chunk.len()]);
        }
        true
    }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
}

fn write_decimal(mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_stderr(&digits[at..]);
}

// SAFETY: delegates to the system allocator; refusing returns null, which
// the caller treats as allocation failure.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::refuses(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::refuses(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::refuses(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `decode` with the allocation guard armed for `input`.
fn guarded<T>(input: &[u8], decode: impl FnOnce() -> T) -> T {
    DECODING.with(|d| d.set(Some((input.as_ptr(), input.len()))));
    let result = decode();
    DECODING.with(|d| d.set(None));
    result
}

// ---------------------------------------------------------------------------
// Real requests of every API, with realistic content

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A RecordBatch v2 as a producer sends it: keys, values, a header.
fn record_batch(compression: Compression, count: i64, first_timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // kafka-protocol starts a new batch where offset - sequence
                // changes; base sequence -1 is "not idempotent".
                sequence: i as i32 - 1,
                timestamp: first_timestamp + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(
                    format!("value {i} ").repeat(1 + i as usize % 7),
                )),
                headers: Default::default(),
            };
            record
                .headers
                .insert(text("trace"), Some(Bytes::from(format!("t{i}"))));
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode a record batch");
    buf.freeze()
}

fn encoded<R: Encodable>(request: &R, version: i16) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    request
        .encode(&mut buf, version)
        .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

fn produce(version: i16) -> ProduceRequest {
    let topic = |name: &str, codecs: &[Compression]| {
        let mut data = TopicProduceData::default().with_partition_data(
            codecs
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    PartitionProduceData::default()
                        .with_index(p as i32)
                        .with_records(Some(record_batch(*c, 5, 1_700_000_000_000)))
                })
                .collect(),
        );
        if version >= 13 {
            data.topic_id = uuid::Uuid::from_u128(0xf00d);
        } else {
            data.name = topic_name(name);
        }
        data
    };
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            topic("orders", &[Compression::None, Compression::Gzip]),
            topic("events", &[Compression::Lz4, Compression::Zstd]),
            topic("audit", &[Compression::Snappy]),
        ])
}

fn fetch(version: i16) -> FetchRequest {
    let partition = |p: i32| {
        let mut fp = FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(1234 + i64::from(p))
            .with_partition_max_bytes(1 << 20);
        if version >= 9 {
            fp.current_leader_epoch = 3;
        }
        if version >= 12 {
            fp.last_fetched_epoch = 2;
        }
        if version >= 5 {
            fp.log_start_offset = 0;
        }
        fp
    };
    let topic = |name: &str, id: u128, partitions: i32| {
        let mut t = FetchTopic::default().with_partitions((0..partitions).map(partition).collect());
        if version >= 13 {
            t.topic_id = uuid::Uuid::from_u128(id);
        } else {
            t.topic = topic_name(name);
        }
        t
    };
    let mut request = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(1)
        .with_topics(vec![topic("orders", 1, 3), topic("events", 2, 2)]);
    if version >= 7 {
        request.session_id = 0;
        request.session_epoch = -1;
        let mut forgotten = ForgottenTopic::default().with_partitions(vec![4, 5]);
        if version >= 13 {
            forgotten.topic_id = uuid::Uuid::from_u128(3);
        } else {
            forgotten.topic = topic_name("old");
        }
        request.forgotten_topics_data = vec![forgotten];
    }
    if version >= 11 {
        request.rack_id = text("rack-a");
    }
    if version >= 12 {
        request.cluster_id = Some(text("fjord-cluster"));
    }
    if version >= 15 {
        request.replica_state = ReplicaState::default()
            .with_replica_id((-1).into())
            .with_replica_epoch(-1);
    }
    request
}

fn list_offsets(version: i16) -> ListOffsetsRequest {
    let partition = |p: i32, timestamp: i64| {
        let mut lp = ListOffsetsPartition::default()
            .with_partition_index(p)
            .with_timestamp(timestamp);
        if version >= 4 {
            lp.current_leader_epoch = 7;
        }
        lp
    };
    let mut request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![
                    partition(0, -2),
                    partition(1, -1),
                    partition(2, 1_700_000_000_000),
                ]),
            ListOffsetsTopic::default()
                .with_name(topic_name("events"))
                .with_partitions(vec![partition(0, if version >= 7 { -3 } else { -1 })]),
        ]);
    if version >= 2 {
        request.isolation_level = 1;
    }
    if version >= 10 {
        request.timeout_ms = 5_000;
    }
    request
}

fn delete_records() -> DeleteRecordsRequest {
    DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name("orders"))
            .with_partitions(vec![
                DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(40),
                DeleteRecordsPartition::default()
                    .with_partition_index(1)
                    .with_offset(-1),
            ])])
}

fn create_topics(version: i16) -> CreateTopicsRequest {
    let config = |k: &str, v: Option<&str>| {
        CreatableTopicConfig::default()
            .with_name(text(k))
            .with_value(v.map(text))
    };
    let mut request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name("orders"))
                .with_num_partitions(6)
                .with_replication_factor(1)
                .with_configs(vec![
                    config("retention.ms", Some("86400000")),
                    config("max.message.bytes", Some("1048588")),
                    config("cleanup.policy", None),
                ]),
            CreatableTopic::default()
                .with_name(topic_name("placed"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![
                    CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![1.into()]),
                    CreatableReplicaAssignment::default()
                        .with_partition_index(1)
                        .with_broker_ids(vec![2.into()]),
                ]),
        ]);
    if version >= 1 {
        request.validate_only = true;
    }
    request
}

fn delete_topics(version: i16) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        request.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name("orders"))),
            DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(9)),
        ])
    } else {
        request.with_topic_names(vec![topic_name("orders"), topic_name("events")])
    }
}

fn create_partitions() -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_validate_only(true)
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(topic_name("orders"))
                .with_count(8),
            CreatePartitionsTopic::default()
                .with_name(topic_name("events"))
                .with_count(3)
                .with_assignments(Some(vec![
                    CreatePartitionsAssignment::default().with_broker_ids(vec![1.into()])
                ])),
        ])
}

fn describe_configs(version: i16) -> DescribeConfigsRequest {
    let mut request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("orders"))
                .with_configuration_keys(Some(vec![text("retention.ms"), text("segment.bytes")])),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(text("1"))
                .with_configuration_keys(None),
        ]);
    if version >= 3 {
        request.include_documentation = true;
    }
    request
}

fn alter_configs() -> AlterConfigsRequest {
    AlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![AlterConfigsResource2::default()
            .with_resource_type(2)
            .with_resource_name(text("orders"))
            .with_configs(vec![
                AlterableConfig2::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("3600000"))),
                AlterableConfig2::default()
                    .with_name(text("cleanup.policy"))
                    .with_value(Some(text("delete"))),
            ])])
}

fn incremental_alter_configs() -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(text("orders"))
        .with_configs(vec![
            AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(text("3600000"))),
            AlterableConfig::default()
                .with_name(text("segment.bytes"))
                .with_config_operation(1)
                .with_value(None),
        ])])
}

fn offset_for_leader_epoch(version: i16) -> OffsetForLeaderEpochRequest {
    let mut request =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name("orders"))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(4)
                .with_leader_epoch(3)])]);
    if version >= 3 {
        request.replica_id = (-1).into();
    }
    request
}

fn metadata(version: i16) -> MetadataRequest {
    let topic = |name: &str| {
        let mut t = MetadataRequestTopic::default().with_name(Some(topic_name(name)));
        if version >= 10 {
            t.topic_id = uuid::Uuid::nil();
        }
        t
    };
    let mut request = MetadataRequest::default().with_topics(Some(vec![
        topic("orders"),
        topic("events"),
        topic("a.b-c_d"),
    ]));
    if version >= 8 {
        request.include_topic_authorized_operations = true;
    }
    request
}

fn api_versions(version: i16) -> ApiVersionsRequest {
    let request = ApiVersionsRequest::default();
    if version >= 3 {
        request
            .with_client_software_name(text("librdkafka"))
            .with_client_software_version(text("2.16.0"))
    } else {
        request
    }
}

fn find_coordinator(version: i16) -> FindCoordinatorRequest {
    if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![text("group-a"), text("b")])
    } else {
        FindCoordinatorRequest::default().with_key(text("group-a"))
    }
}

/// The body of a realistic `api` request at `version`, or `None` when this
/// test knows no request for `api` (it is then fuzzed with random bodies
/// only, and `every_advertised_api_has_a_sample` says so).
fn sample(api: ApiKey, version: i16) -> Option<Result<Bytes, String>> {
    Some(match api {
        ApiKey::Produce => encoded(&produce(version), version),
        ApiKey::Fetch => encoded(&fetch(version), version),
        ApiKey::ListOffsets => encoded(&list_offsets(version), version),
        ApiKey::Metadata => encoded(&metadata(version), version),
        ApiKey::ApiVersions => encoded(&api_versions(version), version),
        ApiKey::CreateTopics => encoded(&create_topics(version), version),
        ApiKey::DeleteTopics => encoded(&delete_topics(version), version),
        ApiKey::DeleteRecords => encoded(&delete_records(), version),
        ApiKey::CreatePartitions => encoded(&create_partitions(), version),
        ApiKey::DescribeConfigs => encoded(&describe_configs(version), version),
        ApiKey::AlterConfigs => encoded(&alter_configs(), version),
        ApiKey::IncrementalAlterConfigs => encoded(&incremental_alter_configs(), version),
        ApiKey::OffsetForLeaderEpoch => encoded(&offset_for_leader_epoch(version), version),
        ApiKey::DescribeQuorum => encoded(&describe_quorum::request(), version),
        ApiKey::DescribeCluster => encoded(&DescribeClusterRequest::default(), version),
        ApiKey::FindCoordinator => encoded(&find_coordinator(version), version),
        ApiKey::InitProducerId => encoded(&InitProducerIdRequest::default(), version),
        // Later issues' APIs: default structs until they are served.
        ApiKey::JoinGroup => encoded(&JoinGroupRequest::default(), version),
        ApiKey::SyncGroup => encoded(&SyncGroupRequest::default(), version),
        ApiKey::Heartbeat => encoded(&HeartbeatRequest::default(), version),
        ApiKey::LeaveGroup => encoded(&LeaveGroupRequest::default(), version),
        ApiKey::OffsetCommit => encoded(&OffsetCommitRequest::default(), version),
        ApiKey::OffsetFetch => encoded(&OffsetFetchRequest::default(), version),
        ApiKey::ListGroups => encoded(&ListGroupsRequest::default(), version),
        ApiKey::DescribeGroups => encoded(&DescribeGroupsRequest::default(), version),
        ApiKey::DeleteGroups => encoded(&DeleteGroupsRequest::default(), version),
        ApiKey::OffsetDelete => encoded(&OffsetDeleteRequest::default(), version),
        _ => return None,
    })
}

/// One fuzz seed input: a served (api, version) and its request frame
/// (size prefix, header, body).
struct Seed {
    api: ApiKey,
    version: i16,
    frame: Bytes,
    /// Where the body starts in `frame`.
    body_at: usize,
}

fn request_frame(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> (Bytes, usize) {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(text("fuzz-client")));
    let mut head = BytesMut::new();
    header
        .encode(&mut head, api.request_header_version(version))
        .expect("encode a request header");
    let mut frame = BytesMut::new();
    frame.put_i32((head.len() + body.len()) as i32);
    frame.put_slice(&head);
    let body_at = frame.len();
    frame.put_slice(body);
    (frame.freeze(), body_at)
}

fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (api, range) in SUPPORTED_APIS {
        for version in range.min..=range.max {
            let Some(Ok(body)) = sample(*api, version) else {
                continue;
            };
            let (frame, body_at) = request_frame(*api, version, 7, &body);
            seeds.push(Seed {
                api: *api,
                version,
                frame,
                body_at,
            });
        }
    }
    seeds
}

/// The whole server-side decode path of one frame.
fn decode_frame(mut frame: Bytes) -> Result<ServedRequest, codec::CodecError> {
    let (api, header) = decode_request_header(&mut frame)?;
    ServedRequest::decode(api, header.request_api_version, frame)
}

#[test]
fn every_advertised_api_has_a_sample_that_decodes() {
    let mut problems = Vec::new();
    for (api, range) in SUPPORTED_APIS {
        for version in range.min..=range.max {
            match sample(*api, version) {
                None => problems.push(format!("{api:?}: no sample request in this test")),
                Some(Err(e)) => problems.push(format!("{api:?} v{version}: cannot encode: {e}")),
                Some(Ok(body)) => {
                    let (frame, _) = request_frame(*api, version, 1, &body);
                    let decoded = decode_frame(frame.slice(codec::SIZE_PREFIX_BYTES..));
                    // A well-formed request refused: a guard shape or a
                    // decoder that does not match the wire format.
                    if let Err(e) = decoded {
                        problems.push(format!(
                            "{api:?} v{version}: a real request is refused: {e}"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Mutations

const HUGE_I32: &[i32] = &[i32::MAX, i32::MIN, -1, -2, 0x7fff_fff0, 1 << 24, 0x10000];
const HUGE_I16: &[i16] = &[i16::MAX, i16::MIN, -1, -2, 0x7ff0];
/// Unsigned varints for compact lengths: 2^32-1, 2^31, 2^28, and overlong.
const HUGE_VARINTS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0x80, 0x80, 0x80, 0x80, 0x01],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xff, 0xff, 0x03],
];

/// Positions that look like length or count fields: a big-endian i32 or
/// i16 no larger than the input, or a small byte (a compact length).
fn length_like_positions(input: &[u8]) -> Vec<(usize, u8)> {
    let len = input.len() as i64;
    let mut at = Vec::new();
    for i in 0..input.len() {
        if let Some(b) = input.get(i..i + 4) {
            let v = i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if v > 0 && v <= len {
                at.push((i, 4));
            }
        }
        if let Some(b) = input.get(i..i + 2) {
            let v = i64::from(i16::from_be_bytes([b[0], b[1]]));
            if v > 0 && v <= len {
                at.push((i, 2));
            }
        }
        if (2..64).contains(&input[i]) {
            at.push((i, 1));
        }
    }
    at
}

fn overwrite(input: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        match input.get_mut(at + i) {
            Some(slot) => *slot = *b,
            None => input.push(*b),
        }
    }
}

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, donors: &[Seed]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                for _ in 0..rng.gen_range(1..=8) {
                    let i = rng.gen_range(0..len);
                    input[i] ^= 1 << rng.gen_range(0..8);
                }
            }
            1 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            2 if len > 0 => {
                let at = rng.gen_range(0..len);
                let end = (at + rng.gen_range(1..=16)).min(len);
                input.drain(at..end);
            }
            3 => input.truncate(rng.gen_range(0..=len)),
            4 | 5 => {
                // Overwrite something that looks like a length with a huge
                // or negative one, in the width it seems to have.
                let candidates = length_like_positions(input);
                let (at, width) = if candidates.is_empty() || rng.gen_bool(0.2) {
                    (rng.gen_range(0..=len), [1, 2, 4][rng.gen_range(0..3)])
                } else {
                    candidates[rng.gen_range(0..candidates.len())]
                };
                match width {
                    4 => overwrite(
                        input,
                        at,
                        &HUGE_I32[rng.gen_range(0..HUGE_I32.len())].to_be_bytes(),
                    ),
                    2 => overwrite(
                        input,
                        at,
                        &HUGE_I16[rng.gen_range(0..HUGE_I16.len())].to_be_bytes(),
                    ),
                    _ => {
                        let varint = HUGE_VARINTS[rng.gen_range(0..HUGE_VARINTS.len())];
                        if rng.gen_bool(0.5) {
                            overwrite(input, at, varint);
                        } else {
                            let at = at.min(input.len());
                            input.splice(at..(at + 1).min(input.len()), varint.iter().copied());
                        }
                    }
                }
            }
            6 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.gen_range(0..5)];
            }
            7 if !donors.is_empty() => {
                // Splice in a piece of another request.
                let donor = &donors[rng.gen_range(0..donors.len())].frame;
                let from = rng.gen_range(0..donor.len());
                let to = (from + rng.gen_range(1..=64)).min(donor.len());
                let at = rng.gen_range(0..=len);
                input.splice(at..at, donor[from..to].iter().copied());
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The fuzz loop

/// How an input reaches the decoder.
enum Path {
    /// A frame without its size prefix: header, then body.
    Frame,
    /// A body decoded as the API and version it was built for.
    Body(ApiKey, i16),
    /// Bytes as a connection reads them, size prefixes included.
    Stream,
}

/// One iteration's input, kept whole for the crash report.
struct Case {
    what: String,
    path: Path,
    input: Vec<u8>,
}

fn iteration_rng(seed: u64, iteration: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The input of one iteration: a function of (seed, iteration) only.
fn build_case(seed: u64, iteration: u64, seeds: &[Seed], served: &[(i16, i16)]) -> Case {
    let mut rng = iteration_rng(seed, iteration);
    let mode = rng.gen_range(0..10);
    if mode < 3 || seeds.is_empty() {
        // Random bytes, half of them behind a served key and a nearby version.
        let len = if rng.gen_bool(0.1) {
            rng.gen_range(0..4096)
        } else {
            rng.gen_range(0..96)
        };
        let mut input = Vec::with_capacity(len + 4);
        if rng.gen_bool(0.5) && !served.is_empty() {
            let (key, max) = served[rng.gen_range(0..served.len())];
            input.extend_from_slice(&key.to_be_bytes());
            input.extend_from_slice(&rng.gen_range(-1..=max + 1).to_be_bytes());
        }
        input.extend((0..len).map(|_| rng.gen::<u8>()));
        return Case {
            what: "random bytes as a frame".into(),
            path: Path::Frame,
            input,
        };
    }
    let target = &seeds[rng.gen_range(0..seeds.len())];
    let name = codec::api_name(target.api);
    let (what, path, mut input) = match mode {
        3..=5 => (
            format!(
                "mutated {name} v{} request (header and body)",
                target.version
            ),
            Path::Frame,
            target.frame[codec::SIZE_PREFIX_BYTES..].to_vec(),
        ),
        6..=8 => (
            format!("mutated {name} v{} body", target.version),
            Path::Body(target.api, target.version),
            target.frame[target.body_at..].to_vec(),
        ),
        _ => {
            let mut stream = target.frame.to_vec();
            stream.extend_from_slice(&seeds[rng.gen_range(0..seeds.len())].frame);
            (
                format!("mutated stream starting with {name} v{}", target.version),
                Path::Stream,
                stream,
            )
        }
    };
    mutate(&mut rng, &mut input, seeds);
    Case { what, path, input }
}

/// Feeds a case to the decoder; errors are the expected outcome.
fn decode_case(case: &Case) {
    let input = Bytes::copy_from_slice(&case.input);
    match case.path {
        Path::Frame => {
            let _ = decode_frame(input);
        }
        Path::Body(api, version) => {
            let _ = ServedRequest::decode(api, version, input);
        }
        Path::Stream => {
            let mut stream = BytesMut::from(&case.input[..]);
            while let Ok(Some(frame)) = parse_frame(&mut stream, 1 << 20) {
                let _ = decode_frame(frame);
            }
        }
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{key}={v} is not a number"))
        }
        Err(_) => default,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_decoder_survives_random_and_mutated_requests() {
    let seed = env_u64("FJORD_FUZZ_SEED", 0x0f1d_2024);
    let budget = Duration::from_secs(env_u64("FJORD_FUZZ_SECS", 15));
    let only = std::env::var("FJORD_FUZZ_ONLY")
        .ok()
        .map(|_| env_u64("FJORD_FUZZ_ONLY", 0));
    let seeds = seeds();
    let served: Vec<(i16, i16)> = SUPPORTED_APIS
        .iter()
        .map(|(k, r)| (*k as i16, r.max))
        .collect();
    eprintln!(
        "kafka_fuzz: seed {seed:#x} (FJORD_FUZZ_SEED), budget {budget:?} (FJORD_FUZZ_SECS), \
         {} seed requests over {} APIs",
        seeds.len(),
        SUPPORTED_APIS.len()
    );

    let started = Instant::now();
    let mut crashes: Vec<String> = Vec::new();
    let mut iterations = 0u64;
    let range = match only {
        Some(n) => n..n + 1,
        None => 0..u64::MAX,
    };
    for iteration in range {
        if only.is_none() && started.elapsed() >= budget {
            break;
        }
        iterations += 1;
        let case = build_case(seed, iteration, &seeds, &served);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            guarded(&case.input, || decode_case(&case))
        }));
        DECODING.with(|d| d.set(None));
        if outcome.is_err() {
            crashes.push(format!(
                "iteration {iteration} (replay: FJORD_FUZZ_SEED={seed:#x} FJORD_FUZZ_ONLY={iteration}): {}: {}",
                case.what,
                hex(&case.input)
            ));
            if crashes.len() >= 10 {
                break;
            }
        }
    }
    eprintln!(
        "kafka_fuzz: {iterations} inputs in {:.1}s, {} panics",
        started.elapsed().as_secs_f64(),
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "the decoder panicked:\n{}",
        crashes.join("\n")
    );
}

/// Inputs crafted against the guard, kept as a regression corpus. Each
/// must be refused (or decoded) without a huge allocation.
#[test]
fn crafted_inputs_are_refused_without_allocating() {
    // DescribeConfigs v4. A guard that reads tagged fields after each plain
    // string of `configuration_keys` drifts by one byte per key; the second
    // resource's name is built so that the drifted walk sees a tagged field
    // spanning the real `configuration_keys` count of 2^32-2.
    let describe_configs: &[u8] = &[
        0x03, // two resources
        0x02, 0x02, b't', 0x02, 0x02, b'a', 0x00, // topic "t", keys ["a"], tags
        0x00, 0x06, 0x01, 0x01, 0x01, 0x00, 0x05, // type 0, a 5-byte name
        0xff, 0xff, 0xff, 0xff, 0x0f, // configuration_keys: 2^32-2 of them
        0x00, 0x00, 0x00, 0x00,
    ];
    // Metadata v0 declaring 2^31-1 topics, and v12 declaring 2^32-2.
    let metadata_v0: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 0x00];
    let metadata_v12: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00, 0x00];
    for (api, version, body) in [
        (ApiKey::DescribeConfigs, 4, describe_configs),
        (ApiKey::Metadata, 0, metadata_v0),
        (ApiKey::Metadata, 12, metadata_v12),
    ] {
        if !codec::is_supported(api, version) {
            continue;
        }
        let decoded = guarded(body, || {
            ServedRequest::decode(api, version, Bytes::copy_from_slice(body))
        });
        assert!(decoded.is_err(), "{api:?} v{version}: {decoded:?}");
    }
}

// ---------------------------------------------------------------------------
// A live broker

/// `socket.request.max.bytes` of the live node: small, so that a refused
/// prefix is clearly below what a client could stream in the test's time.
const MAX_REQUEST: i32 = 1 << 20;
const PATIENCE: Duration = Duration::from_secs(20);

const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_RECORD: i16 = 87;

/// Byte offsets in a RecordBatch v2 header.
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const RECORDS_COUNT_AT: usize = 57;
const RECORDS_AT: usize = 61;

/// CRC-32C (Castagnoli), as RecordBatch v2 uses; bitwise, for a few batches.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites the batch's CRC after a deliberate change, so that the broker's
/// deeper checks (not just the CRC) are what must refuse it.
fn with_valid_crc(mut batch: Vec<u8>) -> Bytes {
    let crc = crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

fn edited(batch: &Bytes, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    edit(&mut bytes);
    bytes
}

async fn negotiated<R: kafka_protocol::protocol::Request>(client: &KafkaClient) -> i16 {
    client
        .negotiated_version::<R>()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Produces one batch; returns the partition's error code and base offset.
async fn produce_batch(
    client: &mut KafkaClient,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> Result<(i16, i64), fjord::client::ClientError> {
    let version = negotiated::<ProduceRequest>(client).await;
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let response: ProduceResponse = client.send(request, version).await?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .expect("one partition answered");
    Ok((partition.error_code, partition.base_offset))
}

/// Fetches `topic`-0 from offset 0: the partition's error code and bytes.
async fn fetch_from_start(
    client: &mut KafkaClient,
    topic: &str,
    topic_id: uuid::Uuid,
) -> (i16, Bytes) {
    let version = negotiated::<FetchRequest>(client).await;
    let mut fetch_topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(MAX_REQUEST)]);
    if version >= 13 {
        fetch_topic.topic_id = topic_id;
    } else {
        fetch_topic.topic = topic_name(topic);
    }
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(MAX_REQUEST)
        .with_topics(vec![fetch_topic]);
    let response = client.send(request, version).await.expect("fetch");
    let partition = &response.responses[0].partitions[0];
    (
        partition.error_code,
        partition.records.clone().unwrap_or_default(),
    )
}

/// Every stored batch of `topic`-0 from offset 0, CRC-checked and decoded;
/// an error when a stored batch does not decode.
async fn fetch_all(
    client: &mut KafkaClient,
    topic: &str,
    topic_id: uuid::Uuid,
) -> Result<Vec<Record>, String> {
    let (error_code, mut records) = fetch_from_start(client, topic, topic_id).await;
    if error_code != NONE {
        return Err(format!("fetch error {error_code}"));
    }
    let sets = RecordBatchDecoder::decode_all(&mut records)
        .map_err(|e| format!("a stored batch does not decode: {e}"))?;
    Ok(sets.into_iter().flat_map(|s| s.records).collect())
}

/// Waits until the broker closes `stream` (EOF or reset) without sending
/// a byte; panics naming `what` otherwise.
async fn expect_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: the broker answered {n} bytes instead of closing"),
        Err(_) => panic!("{what}: the connection is still open after {PATIENCE:?}"),
    }
}

/// The well-behaved connection still gets right answers.
async fn still_serving(client: &mut KafkaClient, topic: &str, after: &str) {
    client
        .api_versions()
        .await
        .unwrap_or_else(|e| panic!("after {after}: ApiVersions failed: {e}"));
    let metadata = client
        .metadata(Some(vec![topic.to_string()]))
        .await
        .unwrap_or_else(|e| panic!("after {after}: Metadata failed: {e}"));
    assert_eq!(metadata.brokers.len(), 1, "after {after}");
    assert_eq!(metadata.topics[0].error_code, NONE, "after {after}");
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// A one-node cluster with small `socket.request.max.bytes`, a client on
/// it, and a way to make topics.
struct LiveBroker {
    _cluster: TestCluster,
    addr: String,
    client: KafkaClient,
}

impl LiveBroker {
    async fn start() -> LiveBroker {
        let cluster =
            TestCluster::start(1, &format!("socket.request.max.bytes={MAX_REQUEST}\n")).await;
        let addr = format!("127.0.0.1:{}", cluster.nodes[0].kafka_port);
        let client = KafkaClient::connect(&addr, PATIENCE)
            .await
            .expect("connect");
        LiveBroker {
            _cluster: cluster,
            addr,
            client,
        }
    }

    async fn connect(&self) -> KafkaClient {
        KafkaClient::connect(&self.addr, PATIENCE)
            .await
            .expect("connect")
    }

    /// Creates a one-partition topic and waits until this broker leads it;
    /// returns its id.
    async fn create_topic(&mut self, topic: &str) -> uuid::Uuid {
        let version = negotiated::<CreateTopicsRequest>(&self.client).await;
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        // Until the broker has registered, placement finds no broker (Kafka's
        // INVALID_REPLICATION_FACTOR); retry until then.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let created = self
                .client
                .send(create.clone(), version)
                .await
                .expect("CreateTopics");
            if created.topics[0].error_code == NONE {
                break;
            }
            assert!(Instant::now() < deadline, "CreateTopics: {created:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Metadata names the leader as soon as the image does; the broker
        // serves the partition once its replica manager has opened the log.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let md = self
                .client
                .metadata(Some(vec![topic.to_string()]))
                .await
                .expect("metadata");
            let t = &md.topics[0];
            if t.error_code == NONE && t.partitions.first().is_some_and(|p| p.leader_id.0 == 1) {
                let topic_id = t.topic_id;
                if fetch_from_start(&mut self.client, topic, topic_id).await.0 == NONE {
                    return topic_id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{topic} never got a serving leader: {md:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_own_connection() {
    let mut broker = LiveBroker::start().await;
    let topic = "frames";
    broker.create_topic(topic).await;
    let addr = broker.addr.clone();
    let good = &mut broker.client;

    let mut rng = StdRng::seed_from_u64(0xbad_f4a3e);
    for i in 0..20 {
        let mut garbage: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
        if i % 2 == 0 && garbage.len() >= 4 {
            // A served key and version in front of random bytes.
            garbage[..2].copy_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
            garbage[2..4].copy_from_slice(&12i16.to_be_bytes());
        }
        let mut stream = connect(&addr).await;
        let mut frame = (garbage.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&garbage);
        stream.write_all(&frame).await.expect("write");
        // Random bytes could decode as some request; only the broker's
        // survival matters here, checked below.
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    }
    still_serving(good, topic, "garbage frames").await;

    // Kafka closes the connection on an unknown key: there is no response
    // schema to put an error code in.
    let mut unknown_key = connect(&addr).await;
    let (frame, _) = request_frame(ApiKey::Metadata, 0, 5, &[0, 0, 0, 0]);
    let mut frame = frame.to_vec();
    frame[4..6].copy_from_slice(&0x7f00i16.to_be_bytes());
    unknown_key.write_all(&frame).await.expect("write");
    expect_closed(&mut unknown_key, "an unknown API key").await;
    still_serving(good, topic, "an unknown API key").await;

    let mut unsupported = connect(&addr).await;
    let (frame, _) = request_frame(ApiKey::Produce, 99, 5, &[0; 16]);
    unsupported.write_all(&frame).await.expect("write");
    expect_closed(&mut unsupported, "Produce v99").await;

    // A size prefix above socket.request.max.bytes (or negative): the broker
    // closes on the four bytes alone, without waiting for a body.
    for prefix in [MAX_REQUEST + 1, i32::MAX, -1, i32::MIN] {
        let mut oversized = connect(&addr).await;
        oversized
            .write_all(&prefix.to_be_bytes())
            .await
            .expect("write");
        expect_closed(&mut oversized, &format!("a size prefix of {prefix}")).await;
    }

    // A request cut off by its client mid-frame.
    let mut cut = connect(&addr).await;
    let (frame, _) = request_frame(ApiKey::Metadata, 12, 5, &[1, 0, 0]);
    cut.write_all(&frame[..frame.len() - 2])
        .await
        .expect("write");
    cut.shutdown().await.expect("shutdown");
    expect_closed(&mut cut, "a frame cut short").await;
    still_serving(good, topic, "bad frames").await;
}

/// Batches Kafka refuses by their header or CRC alone.
fn header_level_bad_batches(valid: &Bytes) -> Vec<(&'static str, Bytes)> {
    vec![
        (
            "a bad CRC",
            Bytes::from(edited(valid, |b| {
                let last = b.len() - 1;
                b[last] ^= 0x40;
            })),
        ),
        (
            "magic 1 in a v3+ produce",
            Bytes::from(edited(valid, |b| b[MAGIC_AT] = 1)),
        ),
        ("magic 7", Bytes::from(edited(valid, |b| b[MAGIC_AT] = 7))),
        ("a truncated batch", valid.slice(..valid.len() - 7)),
        (
            "a negative batch length",
            Bytes::from(edited(valid, |b| {
                b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes())
            })),
        ),
        (
            "a batch length past the end",
            Bytes::from(edited(valid, |b| {
                let len = valid.len() as i32 - 12 + 100;
                b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes())
            })),
        ),
        (
            "three records declared as five (CRC valid)",
            with_valid_crc(edited(valid, |b| {
                b[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes())
            })),
        ),
        ("an empty records field", Bytes::new()),
    ]
}

/// Batches whose header and CRC are right but whose records are not, which
/// Kafka's leader finds because it iterates (and decompresses) every record
/// it appends. Stored, they stop every consumer at their offset.
fn record_level_bad_batches(valid: &Bytes) -> Vec<(&'static str, Bytes)> {
    vec![
        (
            "a record with a negative length (CRC valid)",
            // A record's length is a zigzag varint: 0x01 is -1.
            with_valid_crc(edited(valid, |b| b[RECORDS_AT] = 0x01)),
        ),
        (
            "gzip attributes over plain records (CRC valid)",
            with_valid_crc(edited(valid, |b| b[ATTRIBUTES_AT + 1] |= 1)),
        ),
    ]
}

/// Sends each bad batch between valid ones on one connection: each must
/// get CORRUPT_MESSAGE or INVALID_RECORD, the connection must stay up, and
/// the log must hold exactly the valid batches, readable. Returns what went
/// wrong, one line per finding.
async fn check_bad_batches(
    broker: &mut LiveBroker,
    topic: &str,
    bad: Vec<(&'static str, Bytes)>,
) -> Vec<String> {
    let topic_id = broker.create_topic(topic).await;
    let mut producer = broker.connect().await;
    let valid = record_batch(Compression::None, 3, 1_700_000_000_000);
    assert_eq!(
        crc32c(&valid[ATTRIBUTES_AT..]).to_be_bytes(),
        valid[CRC_AT..CRC_AT + 4],
        "this test's CRC-32C agrees with the encoder"
    );
    let mut wrong = Vec::new();
    let mut next_offset = 0;
    for (what, batch) in bad {
        let (code, base) = produce_batch(&mut producer, topic, 0, valid.clone())
            .await
            .expect("produce a valid batch");
        if (code, base) != (NONE, next_offset) {
            wrong.push(format!(
                "before {what}: a valid batch got error {code}, base offset {base}; expected \
                 base offset {next_offset}"
            ));
        }
        next_offset = base + 3;
        match produce_batch(&mut producer, topic, 0, batch).await {
            Ok((CORRUPT_MESSAGE | INVALID_RECORD, _)) => {}
            Ok((code, base)) => wrong.push(format!(
                "{what}: error code {code} (base offset {base}), expected CORRUPT_MESSAGE (2) \
                 or INVALID_RECORD (87)"
            )),
            Err(e) => {
                wrong.push(format!("{what}: the connection failed: {e}"));
                producer = broker.connect().await;
            }
        }
    }
    match fetch_all(&mut broker.client, topic, topic_id).await {
        Ok(stored) => {
            let offsets: Vec<i64> = stored.iter().map(|r| r.offset).collect();
            if offsets != (0..next_offset).collect::<Vec<_>>() {
                wrong.push(format!(
                    "the log holds offsets {offsets:?}; expected only the valid batches, 0..{next_offset}"
                ));
            }
        }
        Err(e) => wrong.push(format!("after the bad batches, reading the log: {e}")),
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_errors_and_are_not_stored() {
    let mut broker = LiveBroker::start().await;
    let valid = record_batch(Compression::None, 3, 1_700_000_000_000);
    let mut wrong = check_bad_batches(&mut broker, "bad", header_level_bad_batches(&valid)).await;

    let mut producer = broker.connect().await;
    let (code, _) = produce_batch(&mut producer, "bad", 99, valid.clone())
        .await
        .expect("produce to partition 99");
    if code != UNKNOWN_TOPIC_OR_PARTITION {
        wrong.push(format!("partition 99: error code {code}, expected 3"));
    }
    still_serving(&mut broker.client, "bad", "bad record batches").await;

    // Mutated batches for a few seconds: each is answered, with a partition
    // error or by storing it, and whatever was stored reads back clean.
    let topic = "mutated";
    let topic_id = broker.create_topic(topic).await;
    let started = Instant::now();
    let (mut sent, mut accepted) = (0, 0);
    let mut rng = StdRng::seed_from_u64(env_u64("FJORD_FUZZ_SEED", 0x0f1d_2024));
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    while started.elapsed() < Duration::from_secs(3) && wrong.len() < 10 {
        let mut batch = record_batch(codecs[sent % codecs.len()], 4, 1_700_000_000_000).to_vec();
        mutate(&mut rng, &mut batch, &[]);
        sent += 1;
        match produce_batch(&mut producer, topic, 0, Bytes::from(batch.clone())).await {
            Ok((NONE, _)) => accepted += 1,
            Ok((CORRUPT_MESSAGE | INVALID_RECORD, _)) => {}
            Ok((code, _)) => wrong.push(format!(
                "a mutated batch got error code {code}: {}",
                hex(&batch)
            )),
            Err(e) => {
                wrong.push(format!(
                    "a mutated batch broke the connection ({e}): {}",
                    hex(&batch)
                ));
                producer = broker.connect().await;
            }
        }
    }
    match fetch_all(&mut broker.client, topic, topic_id).await {
        Ok(stored) => eprintln!(
            "kafka_fuzz: live broker: {sent} mutated batches, {accepted} stored ({} records), \
             all readable",
            stored.len()
        ),
        Err(e) => wrong.push(format!(
            "after {accepted} of {sent} mutated batches were stored: {e}"
        )),
    }
    still_serving(&mut broker.client, topic, "mutated batches").await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_level_corruption_is_refused_like_kafka() {
    let mut broker = LiveBroker::start().await;
    let valid = record_batch(Compression::None, 3, 1_700_000_000_000);
    let wrong = check_bad_batches(&mut broker, "records", record_level_bad_batches(&valid)).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
