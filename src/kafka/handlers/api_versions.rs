//! ApiVersions: the first request of every client, answered from
//! [`codec::SUPPORTED_APIS`] so that what is advertised is what is served.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::RequestShape;
use crate::kafka::array_guard::{Shape, NO_ARRAYS};
use crate::kafka::codec;

impl RequestShape for ApiVersionsRequest {
    fn shape(_version: i16) -> Shape {
        NO_ARRAYS
    }
}

/// The client's software name and version (v3+) are not checked: they only
/// label the connection.
pub fn handle(_request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    advertised()
}

/// The answer to an ApiVersions version fjord does not know, sent as v0.
pub fn unsupported_version() -> ApiVersionsResponse {
    advertised().with_error_code(ResponseError::UnsupportedVersion.code())
}

/// No features are finalized yet (KIP-584), so none are listed.
fn advertised() -> ApiVersionsResponse {
    let api_keys = codec::SUPPORTED_APIS
        .iter()
        .map(|(api, range)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_api_keys(api_keys)
        .with_throttle_time_ms(0)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;

    #[test]
    fn every_served_api_is_advertised() {
        let response = handle(ApiVersionsRequest::default(), 3);
        assert_eq!(response.error_code, 0);
        let metadata = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Metadata as i16)
            .expect("Metadata advertised");
        assert_eq!((metadata.min_version, metadata.max_version), (0, 13));
        assert_eq!(response.api_keys.len(), codec::SUPPORTED_APIS.len());
        assert!(response.finalized_features.is_empty());
    }

    #[test]
    fn an_unknown_version_gets_the_list_and_unsupported_version() {
        let response = unsupported_version();
        assert_eq!(response.error_code, 35);
        assert_eq!(response.api_keys.len(), codec::SUPPORTED_APIS.len());
    }
}
