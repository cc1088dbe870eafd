//! Metadata: the brokers clients can reach and where each partition's
//! leader is, straight from the metadata image.
//!
//! A topic asked for by name that does not exist is created when the
//! request allows it (always below v4, `allow_auto_topic_creation` from v4)
//! and `auto.create.topics.enable` is on, with `num.partitions` and
//! `default.replication.factor`. Kafka answers LEADER_NOT_AVAILABLE for a
//! topic it has only started creating; fjord waits (bounded) for its own
//! image to hold the topic and answers with the real partitions, so a
//! producer's first Metadata request is usually its last.

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use std::collections::BTreeMap;

use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::create_topics::LOCAL_IMAGE_WAIT;
use super::{str_bytes, BrokerView, RequestShape};
use crate::controller::topic_control::{self, validate_topic_name, NewTopic, TopicErrorKind};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::metadata::image::{PartitionRegistration, TopicImage};

impl RequestShape for MetadataRequest {
    /// `topics: [topic_id (v10+), name]`.
    fn shape(version: i16) -> Shape {
        if version >= 10 {
            &[Field::Array(&[Field::Fixed(16), Field::Str])]
        } else {
            &[Field::Array(&[Field::Str])]
        }
    }
}

/// Kafka's internal topics; fjord keeps offsets and transactions in the
/// metadata log instead, but a topic by these names is still internal.
const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Answers Metadata on a running broker: auto-creates what the request
/// allows, then answers from this node's image.
pub async fn respond(
    ctx: &BrokerContext,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let allowed = version < 4 || request.allow_auto_topic_creation;
    let mut not_ready = BTreeMap::new();
    if allowed && ctx.config.auto_create_topics_enable {
        let image = ctx.image.borrow().clone();
        let missing: Vec<String> = request
            .topics
            .iter()
            .flatten()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| image.topics.get(n).is_none())
            .collect();
        if !missing.is_empty() {
            not_ready = auto_create_topics(ctx, missing).await;
        }
    }
    let image = ctx.image.borrow().clone();
    let mut response = handle(&BrokerView::of(ctx, &image), request, version);
    for topic in &mut response.topics {
        let error = topic
            .name
            .as_ref()
            .and_then(|n| not_ready.get(n.0.as_str()));
        if let Some(error) = error {
            topic.error_code = error.code();
        }
    }
    response
}

/// Creates `names` as auto-created topics and waits for this node's image
/// to hold them. Returns the error to report for each that is not there
/// yet: LEADER_NOT_AVAILABLE (retriable) unless the creation can never
/// succeed as asked. Internal names are never auto-created.
pub async fn auto_create_topics(
    ctx: &BrokerContext,
    names: Vec<String>,
) -> BTreeMap<String, ResponseError> {
    let mut errors = BTreeMap::new();
    let mut topics = Vec::new();
    for name in names {
        if validate_topic_name(&name).is_err() {
            errors.insert(name, ResponseError::InvalidTopicException);
        } else if INTERNAL_TOPICS.contains(&name.as_str()) {
            errors.insert(name, ResponseError::UnknownTopicOrPartition);
        } else {
            topics.push(NewTopic {
                name,
                num_partitions: ctx.config.num_partitions,
                replication_factor: ctx.config.default_replication_factor,
                assignments: Vec::new(),
                configs: Vec::new(),
            });
        }
    }
    if topics.is_empty() {
        return errors;
    }
    let request = topic_control::CreateTopicsRequest {
        topics,
        validate_only: false,
    };
    let reply = match ctx.controller.create_topics(request).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!("auto-creating topics: {e}");
            return errors;
        }
    };
    let image = ctx
        .controller
        .wait_for_offset(reply.metadata_offset, LOCAL_IMAGE_WAIT)
        .await;
    for created in reply.topics {
        if image.topics.get(&created.name).is_some() {
            continue;
        }
        let error = match created.result {
            Err(e) if e.kind == TopicErrorKind::InvalidReplicationFactor => {
                tracing::warn!(topic = %created.name, "auto-create refused: {e}");
                ResponseError::InvalidReplicationFactor
            }
            Err(e) if e.kind == TopicErrorKind::InvalidTopic => {
                ResponseError::InvalidTopicException
            }
            _ => ResponseError::LeaderNotAvailable,
        };
        errors.insert(created.name, error);
    }
    errors
}

pub fn handle(view: &BrokerView, request: MetadataRequest, version: i16) -> MetadataResponse {
    let topics = match requested_topics(request.topics, version) {
        None => view
            .image
            .topics
            .by_id
            .values()
            .map(|topic| topic_metadata(view, topic, version))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|wanted| lookup(view, wanted, version))
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(view.brokers(false).map(|(b, e)| broker(b, e)).collect())
        .with_cluster_id(view.image.cluster_id.as_deref().map(str_bytes))
        .with_controller_id(BrokerId(view.controller_id()))
        .with_topics(topics)
}

/// `None` means every topic: a null list from v1, an empty one in v0.
fn requested_topics(
    topics: Option<Vec<MetadataRequestTopic>>,
    version: i16,
) -> Option<Vec<MetadataRequestTopic>> {
    topics.filter(|t| version >= 1 || !t.is_empty())
}

fn broker(
    registration: &crate::metadata::BrokerRegistration,
    endpoint: &crate::metadata::Endpoint,
) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(registration.broker_id))
        .with_host(str_bytes(&endpoint.host))
        .with_port(i32::from(endpoint.port))
        .with_rack(registration.rack.as_deref().map(str_bytes))
}

/// A topic asked for by name, or by id (v10+, name null).
fn lookup(view: &BrokerView, wanted: MetadataRequestTopic, version: i16) -> MetadataResponseTopic {
    let topics = &view.image.topics;
    let found = match &wanted.name {
        Some(name) => topics.get(name),
        None => topics.by_id.get(&wanted.topic_id),
    };
    if let Some(topic) = found {
        return topic_metadata(view, topic, version);
    }
    let error = match wanted.name {
        Some(_) => ResponseError::UnknownTopicOrPartition,
        None => ResponseError::UnknownTopicId,
    };
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(wanted.name)
        .with_topic_id(wanted.topic_id)
}

fn topic_metadata(view: &BrokerView, topic: &TopicImage, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|(index, partition)| partition_metadata(view, *index, partition, version))
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(INTERNAL_TOPICS.contains(&topic.name.as_str()))
        .with_partitions(partitions)
}

/// As Kafka's KRaft metadata cache: a leader that is not registered (or -1)
/// is LEADER_NOT_AVAILABLE; one registered without this listener is
/// LISTENER_NOT_FOUND from v6 on (older clients do not know that code).
/// Replicas on fenced or unknown brokers are offline.
fn partition_metadata(
    view: &BrokerView,
    index: i32,
    partition: &PartitionRegistration,
    version: i16,
) -> MetadataResponsePartition {
    let brokers = &view.image.cluster.brokers;
    let leader_error = match brokers.get(&partition.leader) {
        None => Some(ResponseError::LeaderNotAvailable),
        Some(b) if b.endpoint(view.listener_name).is_some() => None,
        Some(_) if version >= 6 => Some(ResponseError::ListenerNotFound),
        Some(_) => Some(ResponseError::LeaderNotAvailable),
    };
    let offline = partition
        .replicas
        .iter()
        .filter(|id| brokers.get(id).is_none_or(|b| b.fenced));
    MetadataResponsePartition::default()
        .with_error_code(leader_error.map_or(0, |e| e.code()))
        .with_partition_index(index)
        .with_leader_id(BrokerId(if leader_error.is_some() {
            -1
        } else {
            partition.leader
        }))
        .with_leader_epoch(partition.leader_epoch)
        .with_replica_nodes(broker_ids(&partition.replicas))
        .with_isr_nodes(broker_ids(&partition.isr))
        .with_offline_replicas(offline.copied().map(BrokerId).collect())
}

fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::kafka::handlers::tests::{image, view};

    fn by_name(name: &'static str) -> MetadataRequestTopic {
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
    }

    fn by_id(id: Uuid) -> MetadataRequestTopic {
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(id)
    }

    #[test]
    fn brokers_are_the_unfenced_ones_with_their_listener() {
        let image = image();
        let response = handle(&view(&image), MetadataRequest::default(), 12);
        let ids: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(response.brokers[0].host.as_str(), "host-1");
        assert_eq!(response.cluster_id.as_deref(), Some("fjord-test"));
        assert_eq!(response.controller_id.0, 2);
        assert!(
            response.topics.is_empty(),
            "an empty list asks for no topics"
        );
    }

    #[test]
    fn all_topics_with_leaders_and_offline_replicas() {
        let image = image();
        let response = handle(
            &view(&image),
            MetadataRequest::default().with_topics(None),
            12,
        );
        let [topic] = &response.topics[..] else {
            panic!("one topic expected: {response:?}");
        };
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.topic_id, Uuid::from_u128(42));
        let led = &topic.partitions[0];
        assert_eq!(
            (led.error_code, led.leader_id.0, led.leader_epoch),
            (0, 1, 7)
        );
        assert_eq!(led.offline_replicas, [BrokerId(3), BrokerId(4)]);
        let leaderless = &topic.partitions[1];
        assert_eq!(
            leaderless.error_code,
            ResponseError::LeaderNotAvailable.code()
        );
        assert_eq!(leaderless.leader_id.0, -1);
    }

    #[test]
    fn every_version_encodes() {
        let image = image();
        for version in 0..=13 {
            let request = MetadataRequest::default().with_topics(None);
            let response = handle(&view(&image), request, version);
            let mut buf = bytes::BytesMut::new();
            kafka_protocol::protocol::Encodable::encode(&response, &mut buf, version).unwrap();
        }
    }

    #[test]
    fn v0_asks_for_every_topic_with_an_empty_list() {
        let image = image();
        let response = handle(&view(&image), MetadataRequest::default(), 0);
        assert_eq!(response.topics.len(), 1);
    }

    #[test]
    fn unknown_topics_are_reported_by_name_or_id() {
        let image = image();
        let request = MetadataRequest::default().with_topics(Some(vec![
            by_name("orders"),
            by_name("missing"),
            by_id(Uuid::from_u128(7)),
            by_id(Uuid::from_u128(42)),
        ]));
        let codes: Vec<i16> = handle(&view(&image), request, 12)
            .topics
            .iter()
            .map(|t| t.error_code)
            .collect();
        assert_eq!(codes, [0, 3, 100, 0]);
    }
}
