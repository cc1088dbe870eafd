//! DescribeCluster: the cluster id and its brokers, as admin clients and
//! `fjord cluster status` see them. Fenced brokers are listed only when a
//! v2 request asks for them (KIP-1073).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, BrokerView, RequestShape};
use crate::kafka::array_guard::{Shape, NO_ARRAYS};

impl RequestShape for DescribeClusterRequest {
    fn shape(_version: i16) -> Shape {
        NO_ARRAYS
    }
}

/// KIP-919 endpoint type for brokers. The other one, controllers, is not
/// served: fjord's controller listener speaks Raft, not the Kafka protocol,
/// so there is no controller endpoint a client could use.
const BROKER_ENDPOINTS: i8 = 1;

pub fn handle(
    view: &BrokerView,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(
            view.image.cluster_id.as_deref().unwrap_or_default(),
        ))
        .with_controller_id(BrokerId(view.controller_id()));
    if request.endpoint_type != BROKER_ENDPOINTS {
        let message = format!("endpoint type {} is not served", request.endpoint_type);
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(&message)));
    }
    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers = view
        .brokers(include_fenced)
        .map(|(registration, endpoint)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(registration.broker_id))
                .with_host(str_bytes(&endpoint.host))
                .with_port(i32::from(endpoint.port))
                .with_rack(registration.rack.as_deref().map(str_bytes))
                .with_is_fenced(registration.fenced)
        })
        .collect();
    response.with_brokers(brokers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::tests::{image, view};

    fn broker_states(response: &DescribeClusterResponse) -> Vec<(i32, bool)> {
        response
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.is_fenced))
            .collect()
    }

    #[test]
    fn v2_lists_fenced_brokers_when_asked() {
        let image = image();
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
        let response = handle(&view(&image), request, 2);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.cluster_id.as_str(), "fjord-test");
        assert_eq!(response.controller_id.0, 2);
        assert_eq!(
            broker_states(&response),
            [(1, false), (2, false), (3, true)]
        );
    }

    #[test]
    fn older_versions_list_live_brokers_only() {
        let image = image();
        for version in 0..=1 {
            let response = handle(&view(&image), DescribeClusterRequest::default(), version);
            assert_eq!(broker_states(&response), [(1, false), (2, false)]);
            let mut buf = bytes::BytesMut::new();
            kafka_protocol::protocol::Encodable::encode(&response, &mut buf, version).unwrap();
        }
    }

    #[test]
    fn controller_endpoints_are_not_served() {
        let image = image();
        let request = DescribeClusterRequest::default().with_endpoint_type(2);
        let response = handle(&view(&image), request, 1);
        assert_eq!(
            response.error_code,
            ResponseError::UnsupportedEndpointType.code()
        );
    }
}
