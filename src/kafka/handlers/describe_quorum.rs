//! DescribeQuorum (KIP-595, KIP-836, KIP-853): the metadata quorum as the
//! active controller sees it, reported as partition 0 of
//! `__cluster_metadata`, which is what Kafka's `kafka-metadata-quorum.sh`
//! and the admin client's `describeMetadataQuorum` ask for.

use kafka_protocol::messages::describe_quorum_request::{self, PartitionData as RequestPartition};
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState as ReplicaStateData, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{controller_error_code, str_bytes, RequestShape};
use crate::controller::{Controller, ControllerError, QuorumInfo, ReplicaState};
use crate::kafka::array_guard::{Field, Shape};

impl RequestShape for DescribeQuorumRequest {
    /// `topics: [topic_name, partitions: [partition_index]]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Str,
            Field::Array(&[Field::Fixed(4)]),
        ])]
    }
}

/// The Raft log's name as a Kafka topic partition (partition 0).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The listener name the quorum's endpoints are reported under (v2 `nodes`).
pub const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub async fn handle(
    controller: &Controller,
    request: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    if !asks_for_metadata_partition(&request) {
        return unknown_partitions(request);
    }
    let quorum = controller.describe_quorum().await;
    answer(quorum, &controller.voter_endpoints(), version)
}

/// The request every client sends: partition 0 of `__cluster_metadata`.
pub fn request() -> DescribeQuorumRequest {
    let partition = RequestPartition::default().with_partition_index(0);
    let topic = describe_quorum_request::TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition]);
    DescribeQuorumRequest::default().with_topics(vec![topic])
}

fn asks_for_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match &request.topics[..] {
        [topic] => {
            topic.topic_name.0.as_str() == METADATA_TOPIC
                && matches!(&topic.partitions[..], [p] if p.partition_index == 0)
        }
        _ => false,
    }
}

/// As Kafka: any other topic or partition is UNKNOWN_TOPIC_OR_PARTITION,
/// reported on each partition asked for.
fn unknown_partitions(request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let code = ResponseError::UnknownTopicOrPartition.code();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| no_partition(p.partition_index, code, None))
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}

/// The response for the metadata partition, given what the controller said.
/// A controller failure is reported both on the partition and at the top
/// level, with the reason as the message (v2 carries messages).
pub fn answer(
    quorum: Result<QuorumInfo, ControllerError>,
    voters: &[(i32, String, u16)],
    version: i16,
) -> DescribeQuorumResponse {
    let response = DescribeQuorumResponse::default().with_error_message(None);
    let (response, partition) = match quorum {
        Ok(quorum) => {
            let nodes = if version >= 2 {
                voter_nodes(voters)
            } else {
                Vec::new()
            };
            (response.with_nodes(nodes), quorum_partition(quorum))
        }
        Err(error) => {
            let code = controller_error_code(&error).code();
            let message = Some(str_bytes(&error.to_string()));
            let response = response
                .with_error_code(code)
                .with_error_message(message.clone());
            (response, no_partition(0, code, message))
        }
    };
    let topic = TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition]);
    response.with_topics(vec![topic])
}

fn quorum_partition(quorum: QuorumInfo) -> PartitionData {
    PartitionData::default()
        .with_partition_index(0)
        .with_error_message(None)
        .with_leader_id(BrokerId(quorum.leader_id))
        .with_leader_epoch(quorum.leader_epoch)
        .with_high_watermark(quorum.high_watermark)
        .with_current_voters(quorum.voters.iter().map(replica_state).collect())
        .with_observers(quorum.observers.iter().map(replica_state).collect())
}

fn no_partition(index: i32, code: i16, message: Option<StrBytes>) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_error_message(message)
        .with_leader_id(BrokerId(-1))
        .with_leader_epoch(-1)
        .with_high_watermark(-1)
}

fn replica_state(replica: &ReplicaState) -> ReplicaStateData {
    ReplicaStateData::default()
        .with_replica_id(BrokerId(replica.replica_id))
        .with_log_end_offset(replica.log_end_offset)
        .with_last_fetch_timestamp(replica.last_fetch_timestamp_ms)
        .with_last_caught_up_timestamp(replica.last_caught_up_timestamp_ms)
}

fn voter_nodes(voters: &[(i32, String, u16)]) -> Vec<Node> {
    voters
        .iter()
        .map(|(id, host, port)| {
            let listener = Listener::default()
                .with_name(StrBytes::from_static_str(CONTROLLER_LISTENER))
                .with_host(str_bytes(host))
                .with_port(*port);
            Node::default()
                .with_node_id(BrokerId(*id))
                .with_listeners(vec![listener])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    fn quorum() -> QuorumInfo {
        let replica = |id, leo| ReplicaState {
            replica_id: id,
            log_end_offset: leo,
            last_fetch_timestamp_ms: 1_000,
            last_caught_up_timestamp_ms: 900,
        };
        QuorumInfo {
            leader_id: 1,
            leader_epoch: 4,
            high_watermark: 120,
            voters: vec![replica(1, 125), replica(2, 120), replica(3, 80)],
            observers: vec![],
        }
    }

    fn voters() -> Vec<(i32, String, u16)> {
        (1..=3)
            .map(|id| (id, "127.0.0.1".to_string(), 9093))
            .collect()
    }

    fn encodes(response: &DescribeQuorumResponse, version: i16) {
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).unwrap();
    }

    #[test]
    fn the_quorum_is_partition_zero_of_the_metadata_topic() {
        for version in 0..=2 {
            let response = answer(Ok(quorum()), &voters(), version);
            encodes(&response, version);
            let partition = &response.topics[0].partitions[0];
            assert_eq!(response.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
            assert_eq!((partition.leader_id.0, partition.leader_epoch), (1, 4));
            assert_eq!(partition.high_watermark, 120);
            assert_eq!(partition.current_voters[2].log_end_offset, 80);
            assert_eq!(partition.current_voters[2].last_caught_up_timestamp, 900);
            assert_eq!(response.nodes.len(), if version >= 2 { 3 } else { 0 });
        }
        let nodes = answer(Ok(quorum()), &voters(), 2).nodes;
        assert_eq!(nodes[0].listeners[0].name.as_str(), CONTROLLER_LISTENER);
        assert_eq!(nodes[0].listeners[0].port, 9093);
    }

    #[test]
    fn a_controller_failure_is_not_leader_or_follower() {
        for version in 0..=1 {
            encodes(
                &answer(Err(ControllerError::Timeout), &voters(), version),
                version,
            );
        }
        let response = answer(Err(ControllerError::NoLeader), &voters(), 2);
        encodes(&response, 2);
        let partition = &response.topics[0].partitions[0];
        assert_eq!(response.error_code, 6);
        assert_eq!(partition.error_code, 6);
        assert!(partition
            .error_message
            .as_deref()
            .is_some_and(|m| !m.is_empty()));
    }

    #[test]
    fn other_partitions_are_unknown() {
        assert!(asks_for_metadata_partition(&request()));
        let mut other = request();
        other.topics[0].partitions[0].partition_index = 1;
        assert!(!asks_for_metadata_partition(&other));
        let response = unknown_partitions(other);
        assert_eq!(response.topics[0].partitions[0].error_code, 3);
        assert_eq!(response.topics[0].partitions[0].partition_index, 1);
    }
}
