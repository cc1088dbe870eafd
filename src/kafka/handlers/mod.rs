//! One file per API family. Each declares where its request's arrays sit
//! ([`RequestShape`]) and turns a decoded request into a response; this
//! module decodes, dispatches and encodes, so no handler touches bytes.
//!
//! Handlers that only read cluster state take a [`BrokerView`] (the image
//! plus who this broker is) rather than the whole context, so they are plain
//! functions a test can call with a hand-built image.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_quorum;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
// The group coordinator's APIs.
pub mod delete_groups;
pub mod describe_groups;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;

use std::future::Future;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::array_guard::{self, Shape};
use super::codec::{self, CodecError};
use super::frame::Frame;
use super::BrokerContext;
use crate::controller::ControllerError;
use crate::metadata::{BrokerRegistration, Endpoint, MetadataImage};
use crate::replication::PartitionError;
use crate::storage::producer_state::SequenceError;
use crate::storage::LogError;

/// Where a request's arrays sit, checked before the body is decoded (see
/// [`array_guard`]). Implemented beside each handler; a request type without
/// it cannot be decoded, so a new handler cannot skip the check.
pub trait RequestShape {
    fn shape(version: i16) -> Shape;
}

/// A request fjord serves, decoded.
#[derive(Debug)]
pub enum ServedRequest {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    DescribeCluster(DescribeClusterRequest),
    DescribeQuorum(DescribeQuorumRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DeleteRecords(DeleteRecordsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    OffsetDelete(OffsetDeleteRequest),
}

impl ServedRequest {
    /// Decodes the body of a request; `api` and `version` come from its header.
    pub fn decode(api: ApiKey, version: i16, body: Bytes) -> Result<Self, CodecError> {
        if !codec::is_supported(api, version) {
            return Err(CodecError::UnsupportedVersion { api, version });
        }
        match api {
            ApiKey::ApiVersions => decode_body(api, version, body).map(Self::ApiVersions),
            ApiKey::Metadata => decode_body(api, version, body).map(Self::Metadata),
            ApiKey::DescribeCluster => decode_body(api, version, body).map(Self::DescribeCluster),
            ApiKey::DescribeQuorum => decode_body(api, version, body).map(Self::DescribeQuorum),
            ApiKey::Produce => decode_body(api, version, body).map(Self::Produce),
            ApiKey::Fetch => decode_body(api, version, body).map(Self::Fetch),
            ApiKey::ListOffsets => decode_body(api, version, body).map(Self::ListOffsets),
            ApiKey::InitProducerId => decode_body(api, version, body).map(Self::InitProducerId),
            ApiKey::OffsetForLeaderEpoch => {
                decode_body(api, version, body).map(Self::OffsetForLeaderEpoch)
            }
            ApiKey::DeleteRecords => decode_body(api, version, body).map(Self::DeleteRecords),
            ApiKey::CreateTopics => decode_body(api, version, body).map(Self::CreateTopics),
            ApiKey::DeleteTopics => decode_body(api, version, body).map(Self::DeleteTopics),
            ApiKey::CreatePartitions => decode_body(api, version, body).map(Self::CreatePartitions),
            ApiKey::DescribeConfigs => decode_body(api, version, body).map(Self::DescribeConfigs),
            ApiKey::IncrementalAlterConfigs => {
                decode_body(api, version, body).map(Self::IncrementalAlterConfigs)
            }
            ApiKey::AlterConfigs => decode_body(api, version, body).map(Self::AlterConfigs),
            ApiKey::FindCoordinator => decode_body(api, version, body).map(Self::FindCoordinator),
            ApiKey::JoinGroup => decode_body(api, version, body).map(Self::JoinGroup),
            ApiKey::SyncGroup => decode_body(api, version, body).map(Self::SyncGroup),
            ApiKey::Heartbeat => decode_body(api, version, body).map(Self::Heartbeat),
            ApiKey::LeaveGroup => decode_body(api, version, body).map(Self::LeaveGroup),
            ApiKey::OffsetCommit => decode_body(api, version, body).map(Self::OffsetCommit),
            ApiKey::OffsetFetch => decode_body(api, version, body).map(Self::OffsetFetch),
            ApiKey::ListGroups => decode_body(api, version, body).map(Self::ListGroups),
            ApiKey::DescribeGroups => decode_body(api, version, body).map(Self::DescribeGroups),
            ApiKey::DeleteGroups => decode_body(api, version, body).map(Self::DeleteGroups),
            ApiKey::OffsetDelete => decode_body(api, version, body).map(Self::OffsetDelete),
            _ => Err(CodecError::UnsupportedVersion { api, version }),
        }
    }
}

fn decode_body<R: Decodable + RequestShape>(
    api: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<R, CodecError> {
    let malformed = |reason| CodecError::Body {
        api,
        version,
        reason,
    };
    // Flexible versions (KIP-482) are exactly those with request header v2.
    let flexible = api.request_header_version(version) >= 2;
    array_guard::check(R::shape(version), flexible, &body).map_err(malformed)?;
    R::decode(&mut body, version).map_err(|e| malformed(e.to_string()))
}

/// A whole response frame and the response's top-level error code. An
/// empty frame means no response is sent (Produce with `acks=0`).
#[derive(Debug)]
pub struct Reply {
    pub frame: Frame,
    pub error_code: i16,
}

/// Answers one request: decodes its body, runs its handler and encodes the
/// response frame. An error means the connection should be closed, which is
/// what Kafka does for malformed requests and for unsupported versions of
/// anything but ApiVersions.
pub async fn respond(
    ctx: &BrokerContext,
    api: ApiKey,
    header: &RequestHeader,
    body: Bytes,
) -> Result<Reply, CodecError> {
    let version = header.request_api_version;
    if api == ApiKey::ApiVersions && !codec::is_supported(api, version) {
        // KIP-511: answer in v0, which every client can read, with the list
        // of versions so that the client can retry with one of them.
        return reply(header, api, 0, &api_versions::unsupported_version());
    }
    let request = ServedRequest::decode(api, version, body)?;
    dispatch(ctx, header, request).await
}

/// Decodes a Produce request and appends it now; the future answers it
/// once its acknowledgements are in. The connection pipelines produce
/// requests with this (see `server`), so appends stay in request order.
pub fn begin_produce(
    ctx: &BrokerContext,
    header: &RequestHeader,
    body: Bytes,
) -> Result<impl Future<Output = Result<Reply, CodecError>> + Send + 'static, CodecError> {
    let version = header.request_api_version;
    let ServedRequest::Produce(request) = ServedRequest::decode(ApiKey::Produce, version, body)?
    else {
        return Err(CodecError::UnsupportedVersion {
            api: ApiKey::Produce,
            version,
        });
    };
    let appended = produce::append(ctx, request, version);
    let replicas = ctx.replicas.clone();
    let correlation_id = header.correlation_id;
    Ok(async move {
        match appended.answer(&replicas).await {
            Some(response) => encode_reply(correlation_id, ApiKey::Produce, version, &response),
            // acks=0: Kafka answers nothing at all.
            None => Ok(Reply {
                frame: Frame::empty(),
                error_code: 0,
            }),
        }
    })
}

async fn dispatch(
    ctx: &BrokerContext,
    header: &RequestHeader,
    request: ServedRequest,
) -> Result<Reply, CodecError> {
    let version = header.request_api_version;
    match request {
        ServedRequest::ApiVersions(req) => reply(
            header,
            ApiKey::ApiVersions,
            version,
            &api_versions::handle(req, version),
        ),
        ServedRequest::Metadata(req) => {
            let response = metadata::respond(ctx, req, version).await;
            reply(header, ApiKey::Metadata, version, &response)
        }
        ServedRequest::DescribeCluster(req) => {
            let image = ctx.image.borrow().clone();
            let response = describe_cluster::handle(&BrokerView::of(ctx, &image), req, version);
            reply(header, ApiKey::DescribeCluster, version, &response)
        }
        ServedRequest::DescribeQuorum(req) => {
            let response = describe_quorum::handle(&ctx.controller, req, version).await;
            reply(header, ApiKey::DescribeQuorum, version, &response)
        }
        ServedRequest::Produce(req) => match produce::handle(ctx, req, version).await {
            Some(response) => reply(header, ApiKey::Produce, version, &response),
            // acks=0: Kafka answers nothing at all.
            None => Ok(Reply {
                frame: Frame::empty(),
                error_code: 0,
            }),
        },
        ServedRequest::Fetch(req) => {
            let (response, regions) = fetch::handle(ctx, req, version).await;
            // The record sets go to the socket from their files or by
            // reference, never copied into the response.
            let records = fetch::record_sets(&response);
            Ok(Reply {
                frame: codec::encode_response_frame(
                    header.correlation_id,
                    ApiKey::Fetch,
                    version,
                    &response,
                    &records,
                    regions,
                )?,
                error_code: response.top_level_error(),
            })
        }
        ServedRequest::OffsetForLeaderEpoch(req) => {
            let response = offset_for_leader_epoch::handle(ctx, req, version);
            reply(header, ApiKey::OffsetForLeaderEpoch, version, &response)
        }
        ServedRequest::InitProducerId(req) => {
            let response = init_producer_id::handle(ctx, req, version).await;
            reply(header, ApiKey::InitProducerId, version, &response)
        }
        ServedRequest::ListOffsets(req) => {
            let response = list_offsets::handle(ctx, req, version);
            reply(header, ApiKey::ListOffsets, version, &response)
        }
        ServedRequest::DeleteRecords(req) => {
            let response = delete_records::handle(ctx, req, version);
            reply(header, ApiKey::DeleteRecords, version, &response)
        }
        ServedRequest::CreateTopics(req) => {
            let response = create_topics::handle(ctx, req, version).await;
            reply(header, ApiKey::CreateTopics, version, &response)
        }
        ServedRequest::DeleteTopics(req) => {
            let response = delete_topics::handle(ctx, req, version).await;
            reply(header, ApiKey::DeleteTopics, version, &response)
        }
        ServedRequest::CreatePartitions(req) => {
            let response = create_partitions::handle(ctx, req, version).await;
            reply(header, ApiKey::CreatePartitions, version, &response)
        }
        ServedRequest::DescribeConfigs(req) => {
            let image = ctx.image.borrow().clone();
            let response = describe_configs::handle(&ctx.config, &image, req, version);
            reply(header, ApiKey::DescribeConfigs, version, &response)
        }
        ServedRequest::IncrementalAlterConfigs(req) => {
            let response = incremental_alter_configs::handle(ctx, req, version).await;
            reply(header, ApiKey::IncrementalAlterConfigs, version, &response)
        }
        ServedRequest::AlterConfigs(req) => {
            let response = incremental_alter_configs::handle_legacy(ctx, req, version).await;
            reply(header, ApiKey::AlterConfigs, version, &response)
        }
        ServedRequest::FindCoordinator(req) => {
            let response = find_coordinator::handle(ctx, req, version);
            reply(header, ApiKey::FindCoordinator, version, &response)
        }
        ServedRequest::JoinGroup(req) => {
            let response = join_group::handle(ctx, header, req, version).await;
            reply(header, ApiKey::JoinGroup, version, &response)
        }
        ServedRequest::SyncGroup(req) => {
            let response = sync_group::handle(ctx, req, version).await;
            reply(header, ApiKey::SyncGroup, version, &response)
        }
        ServedRequest::Heartbeat(req) => {
            let response = heartbeat::handle(ctx, req, version);
            reply(header, ApiKey::Heartbeat, version, &response)
        }
        ServedRequest::LeaveGroup(req) => {
            let response = leave_group::handle(ctx, req, version);
            reply(header, ApiKey::LeaveGroup, version, &response)
        }
        ServedRequest::OffsetCommit(req) => {
            let response = offset_commit::handle(ctx, req, version).await;
            reply(header, ApiKey::OffsetCommit, version, &response)
        }
        ServedRequest::OffsetFetch(req) => {
            let response = offset_fetch::handle(ctx, req, version);
            reply(header, ApiKey::OffsetFetch, version, &response)
        }
        ServedRequest::ListGroups(req) => {
            let response = list_groups::handle(ctx, req, version);
            reply(header, ApiKey::ListGroups, version, &response)
        }
        ServedRequest::DescribeGroups(req) => {
            let response = describe_groups::handle(ctx, req, version);
            reply(header, ApiKey::DescribeGroups, version, &response)
        }
        ServedRequest::DeleteGroups(req) => {
            let response = delete_groups::handle(ctx, req, version).await;
            reply(header, ApiKey::DeleteGroups, version, &response)
        }
        ServedRequest::OffsetDelete(req) => {
            let response = offset_delete::handle(ctx, req, version).await;
            reply(header, ApiKey::OffsetDelete, version, &response)
        }
    }
}

fn reply<R: Encodable + TopLevelError>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    response: &R,
) -> Result<Reply, CodecError> {
    encode_reply(header.correlation_id, api, version, response)
}

fn encode_reply<R: Encodable + TopLevelError>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    response: &R,
) -> Result<Reply, CodecError> {
    Ok(Reply {
        frame: codec::encode_response_frame(
            correlation_id,
            api,
            version,
            response,
            &[],
            Vec::new(),
        )?,
        error_code: response.top_level_error(),
    })
}

/// The error a response reports for the request as a whole, for metrics.
pub trait TopLevelError {
    fn top_level_error(&self) -> i16;
}

macro_rules! top_level_error_code_field {
    ($($response:ty),* $(,)?) => {
        $(impl TopLevelError for $response {
            fn top_level_error(&self) -> i16 {
                self.error_code
            }
        })*
    };
}

top_level_error_code_field!(
    ApiVersionsResponse,
    MetadataResponse,
    DescribeClusterResponse,
    DescribeQuorumResponse,
    FetchResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    ListGroupsResponse,
    OffsetDeleteResponse,
    InitProducerIdResponse,
);

macro_rules! no_top_level_error_code {
    ($($response:ty),* $(,)?) => {
        $(impl TopLevelError for $response {
            fn top_level_error(&self) -> i16 {
                0
            }
        })*
    };
}

// Errors in these are per partition.
no_top_level_error_code!(
    ProduceResponse,
    ListOffsetsResponse,
    DeleteRecordsResponse,
    OffsetForLeaderEpochResponse,
);
no_top_level_error_code!(
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    DescribeConfigsResponse,
    IncrementalAlterConfigsResponse,
    AlterConfigsResponse,
);
// Errors in these are per partition or per group.
no_top_level_error_code!(
    OffsetCommitResponse,
    OffsetFetchResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
);

/// The Kafka error a partition-level failure is reported as.
pub fn partition_error_code(error: &PartitionError) -> ResponseError {
    use crate::storage::batch::BatchError;
    match error {
        PartitionError::UnknownTopicOrPartition | PartitionError::Log(LogError::Deleted) => {
            ResponseError::UnknownTopicOrPartition
        }
        PartitionError::NotLeader { .. } | PartitionError::SessionLapsed => {
            ResponseError::NotLeaderOrFollower
        }
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::InvalidRequest(_) => ResponseError::InvalidRequest,
        PartitionError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        PartitionError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        PartitionError::Timeout(_) => ResponseError::RequestTimedOut,
        PartitionError::Log(LogError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
        PartitionError::Log(LogError::Batch(batch)) => match batch {
            BatchError::Truncated(_) | BatchError::BadLength(_) | BatchError::BadCrc { .. } => {
                ResponseError::CorruptMessage
            }
            BatchError::BadMagic(_) | BatchError::Invalid(_) => ResponseError::InvalidRecord,
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        },
        PartitionError::Log(LogError::Sequence(SequenceError::OutOfOrder(_))) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        PartitionError::Log(LogError::Sequence(SequenceError::InvalidEpoch(_))) => {
            ResponseError::InvalidProducerEpoch
        }
        PartitionError::Log(LogError::Corrupt(_))
        | PartitionError::Log(LogError::Io { .. })
        | PartitionError::Log(LogError::Index(_)) => ResponseError::KafkaStorageError,
    }
}

/// The Kafka error a controller failure is reported as. Not-leader-style
/// failures are retriable, so clients retry until a leader is elected.
pub fn controller_error_code(error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::NoLeader
        | ControllerError::NotController
        | ControllerError::Unavailable(_)
        | ControllerError::Timeout => ResponseError::NotLeaderOrFollower,
        ControllerError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
        ControllerError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        ControllerError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        ControllerError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        ControllerError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        ControllerError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        ControllerError::Internal(_) => ResponseError::UnknownServerError,
    }
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Cluster state as this broker answers with it.
pub struct BrokerView<'a> {
    pub node_id: i32,
    /// The listener whose endpoints clients are given.
    pub listener_name: &'a str,
    pub image: &'a MetadataImage,
    /// The Raft leader, if known.
    pub active_controller: Option<i32>,
}

impl<'a> BrokerView<'a> {
    pub fn of(ctx: &'a BrokerContext, image: &'a MetadataImage) -> Self {
        BrokerView {
            node_id: ctx.node_id,
            listener_name: &ctx.listener_name,
            image,
            active_controller: ctx.controller.leader_id(),
        }
    }

    /// Brokers with an endpoint on this listener, in id order; fenced ones
    /// only when asked for.
    pub fn brokers(
        &self,
        include_fenced: bool,
    ) -> impl Iterator<Item = (&'a BrokerRegistration, &'a Endpoint)> + '_ {
        self.image
            .cluster
            .brokers
            .values()
            .filter(move |b| include_fenced || !b.fenced)
            .filter_map(|b| Some((b, b.endpoint(self.listener_name)?)))
    }

    /// The broker reported as "controller" in Metadata and DescribeCluster.
    /// In KRaft mode a Kafka broker reports a live broker there, not the
    /// quorum leader, because every broker forwards admin requests to the
    /// active controller (KIP-590); admin clients only need a reachable
    /// node. fjord prefers the active controller when it is itself a live
    /// broker here (it saves the forwarding hop), then this broker, then any.
    pub fn controller_id(&self) -> i32 {
        let live = |id: i32| self.brokers(false).any(|(b, _)| b.broker_id == id);
        self.active_controller
            .filter(|id| live(*id))
            .or_else(|| Some(self.node_id).filter(|id| live(*id)))
            .or_else(|| self.brokers(false).map(|(b, _)| b.broker_id).next())
            .unwrap_or(-1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::{ApiVersionsRequest, DescribeClusterRequest};
    use kafka_protocol::protocol::Request;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    use super::*;
    use crate::metadata::image::{ClusterImage, PartitionRegistration, TopicImage, TopicsImage};

    pub fn broker(id: i32, fenced: bool) -> BrokerRegistration {
        BrokerRegistration {
            broker_id: id,
            incarnation_id: Uuid::nil(),
            broker_epoch: 1,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: format!("host-{id}"),
                port: 9092,
                security_protocol: 0,
            }],
            rack: None,
            fenced,
            in_controlled_shutdown: false,
        }
    }

    /// Brokers 1 and 2 live, 3 fenced; topic "orders" with partition 0 led
    /// by 1 (replicas 1, 3, 4) and partition 1 led by 4, which is unknown.
    pub fn image() -> MetadataImage {
        let brokers = BTreeMap::from([
            (1, broker(1, false)),
            (2, broker(2, false)),
            (3, broker(3, true)),
        ]);
        let partition = |leader: i32| PartitionRegistration {
            replicas: vec![1, 3, 4],
            isr: vec![1],
            leader,
            leader_epoch: 7,
            partition_epoch: 9,
        };
        let topic = TopicImage {
            name: "orders".into(),
            topic_id: Uuid::from_u128(42),
            partitions: BTreeMap::from([(0, partition(1)), (1, partition(4))]),
        };
        let topics = TopicsImage {
            ids_by_name: BTreeMap::from([(topic.name.clone(), topic.topic_id)]),
            by_id: BTreeMap::from([(topic.topic_id, topic)]),
        };
        MetadataImage {
            cluster_id: Some("fjord-test".into()),
            cluster: Arc::new(ClusterImage { brokers }),
            topics: Arc::new(topics),
            ..Default::default()
        }
    }

    pub fn view(image: &MetadataImage) -> BrokerView<'_> {
        BrokerView {
            node_id: 2,
            listener_name: "PLAINTEXT",
            image,
            active_controller: Some(3),
        }
    }

    #[test]
    fn the_reported_controller_is_a_live_broker() {
        let image = image();
        // 3 leads the quorum but is fenced, so this broker (2) is reported.
        assert_eq!(view(&image).controller_id(), 2);
        let leader_live = BrokerView {
            active_controller: Some(1),
            ..view(&image)
        };
        assert_eq!(leader_live.controller_id(), 1);
        let empty = MetadataImage::default();
        assert_eq!(view(&empty).controller_id(), -1);
    }

    #[test]
    fn controller_failures_are_retriable_kafka_errors() {
        assert!(controller_error_code(&ControllerError::NoLeader).is_retriable());
        assert_eq!(
            controller_error_code(&ControllerError::Timeout).code(),
            ResponseError::NotLeaderOrFollower.code()
        );
    }

    fn encoded<R: Encodable>(request: &R, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        request.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn every_advertised_version_decodes() {
        for (api, range) in codec::SUPPORTED_APIS {
            for version in range.min..=range.max {
                let body = match api {
                    ApiKey::ApiVersions => encoded(&ApiVersionsRequest::default(), version),
                    ApiKey::Metadata => encoded(&MetadataRequest::default(), version),
                    ApiKey::DescribeCluster => encoded(&DescribeClusterRequest::default(), version),
                    ApiKey::DescribeQuorum => encoded(&describe_quorum::request(), version),
                    ApiKey::Produce => encoded(&sample_produce(version), version),
                    ApiKey::Fetch => encoded(&sample_fetch(version), version),
                    ApiKey::ListOffsets => encoded(&sample_list_offsets(), version),
                    ApiKey::InitProducerId => encoded(&InitProducerIdRequest::default(), version),
                    ApiKey::OffsetForLeaderEpoch => {
                        encoded(&sample_offset_for_leader_epoch(), version)
                    }
                    ApiKey::DeleteRecords => encoded(&sample_delete_records(), version),
                    ApiKey::CreateTopics => encoded(&create_topics::request(), version),
                    ApiKey::DeleteTopics => encoded(&delete_topics::request(version), version),
                    ApiKey::CreatePartitions => encoded(&create_partitions::request(), version),
                    ApiKey::DescribeConfigs => encoded(&describe_configs::request(), version),
                    ApiKey::IncrementalAlterConfigs => {
                        encoded(&incremental_alter_configs::request(), version)
                    }
                    ApiKey::AlterConfigs => {
                        encoded(&incremental_alter_configs::legacy_request(), version)
                    }
                    ApiKey::FindCoordinator => {
                        encoded(&find_coordinator::request(version), version)
                    }
                    ApiKey::JoinGroup => encoded(&join_group::request(), version),
                    ApiKey::SyncGroup => encoded(&sync_group::request(), version),
                    ApiKey::Heartbeat => encoded(&HeartbeatRequest::default(), version),
                    ApiKey::LeaveGroup => encoded(&leave_group::request(version), version),
                    ApiKey::OffsetCommit => encoded(&offset_commit::request(), version),
                    ApiKey::OffsetFetch => encoded(&offset_fetch::request(version), version),
                    ApiKey::ListGroups => encoded(&list_groups::request(version), version),
                    ApiKey::DescribeGroups => encoded(&describe_groups::request(), version),
                    ApiKey::DeleteGroups => encoded(&delete_groups::request(), version),
                    ApiKey::OffsetDelete => encoded(&offset_delete::request(), version),
                    other => panic!("{other:?} is advertised but has no test request"),
                };
                let decoded = ServedRequest::decode(*api, version, body);
                assert!(decoded.is_ok(), "{api:?} v{version}: {decoded:?}");
            }
        }
    }

    fn sample_produce(version: i16) -> ProduceRequest {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let batch =
            crate::storage::batch::tests::batch(2, 0, kafka_protocol::records::Compression::None);
        let topic = if version >= 13 {
            TopicProduceData::default().with_topic_id(uuid::Uuid::from_u128(5))
        } else {
            TopicProduceData::default()
                .with_name(kafka_protocol::messages::TopicName(str_bytes("t")))
        };
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![topic.with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch))),
                PartitionProduceData::default()
                    .with_index(1)
                    .with_records(None),
            ])])
    }

    fn sample_fetch(version: i16) -> FetchRequest {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
        let topic = if version >= 13 {
            FetchTopic::default().with_topic_id(uuid::Uuid::from_u128(5))
        } else {
            FetchTopic::default().with_topic(kafka_protocol::messages::TopicName(str_bytes("t")))
        };
        let partition = |p: i32| {
            let fp = FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(9);
            if version >= 9 {
                fp.with_current_leader_epoch(3)
            } else {
                fp
            }
        };
        let request = FetchRequest::default()
            .with_topics(vec![topic.with_partitions(vec![partition(0), partition(1)])]);
        if version < 7 {
            return request;
        }
        let forgotten = if version >= 13 {
            ForgottenTopic::default().with_topic_id(uuid::Uuid::from_u128(6))
        } else {
            ForgottenTopic::default()
                .with_topic(kafka_protocol::messages::TopicName(str_bytes("f")))
        };
        request.with_forgotten_topics_data(vec![forgotten.with_partitions(vec![1, 2])])
    }

    fn sample_list_offsets() -> ListOffsetsRequest {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(kafka_protocol::messages::TopicName(str_bytes("t")))
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2); 2])])
    }

    fn sample_offset_for_leader_epoch() -> OffsetForLeaderEpochRequest {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(kafka_protocol::messages::TopicName(str_bytes("t")))
            .with_partitions(vec![
                OffsetForLeaderPartition::default().with_leader_epoch(3);
                2
            ])])
    }

    fn sample_delete_records() -> DeleteRecordsRequest {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(kafka_protocol::messages::TopicName(str_bytes("t")))
            .with_partitions(vec![DeleteRecordsPartition::default().with_offset(5); 3])])
    }

    #[test]
    fn a_huge_declared_array_is_refused_without_allocating() {
        // Metadata v0 declaring 2^31-1 topics in a 5-byte body.
        let body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0]);
        let decoded = ServedRequest::decode(ApiKey::Metadata, 0, body);
        assert!(matches!(decoded, Err(CodecError::Body { .. })));
    }

    /// The decode path of every frame: header, version check, array guard,
    /// body. Random bytes must come back as errors, never as a panic or an
    /// abort.
    fn decode_frame(mut frame: Bytes) -> Result<ServedRequest, CodecError> {
        let (api, header) = codec::decode_request_header(&mut frame)?;
        ServedRequest::decode(api, header.request_api_version, frame)
    }

    #[test]
    fn random_frames_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x5eed_f10d);
        let served: Vec<i16> = codec::SUPPORTED_APIS
            .iter()
            .map(|(k, _)| *k as i16)
            .collect();
        for i in 0..10_000 {
            let len = if i % 10 == 0 {
                rng.gen_range(0..2048)
            } else {
                rng.gen_range(0..64)
            };
            let mut frame = BytesMut::with_capacity(len + 4);
            if i % 2 == 0 {
                // Half the inputs get a served key and a plausible version so
                // that bodies, not just headers, are exercised.
                frame.put_i16(served[rng.gen_range(0..served.len())]);
                frame.put_i16(rng.gen_range(-1..15));
            }
            frame.extend((0..len).map(|_| rng.gen::<u8>()));
            let _ = decode_frame(frame.freeze());
        }
        // A well-formed frame still decodes.
        let header = RequestHeader::default()
            .with_request_api_key(MetadataRequest::KEY)
            .with_request_api_version(12)
            .with_correlation_id(7);
        let mut buf = BytesMut::from(
            &codec::encode_request(&header, ApiKey::Metadata, &MetadataRequest::default()).unwrap()
                [..],
        );
        let frame = codec::parse_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(matches!(
            decode_frame(frame),
            Ok(ServedRequest::Metadata(_))
        ));
    }
}
