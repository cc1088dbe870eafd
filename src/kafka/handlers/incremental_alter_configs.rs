//! IncrementalAlterConfigs (KIP-339) and the legacy AlterConfigs it
//! replaced, for topic configs. Both become one request to the active
//! controller, which applies SET/DELETE/APPEND/SUBTRACT to the topic's
//! current overrides, validates the result and writes only what changed.
//! Legacy AlterConfigs replaces the whole override set (keys it does not
//! list go back to their defaults), as Kafka does.
//!
//! fjord has no dynamic broker configs: a BROKER resource is refused with
//! a message that says so.

use std::collections::HashMap;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::create_topics::{failure, outcome, LOCAL_IMAGE_WAIT};
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, RequestShape};
use crate::controller::topic_control::{
    AlterConfigOp, AlterTopicConfigsRequest, ConfigChange, TopicConfigChanges,
};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for IncrementalAlterConfigsRequest {
    /// `resources: [resource_type, resource_name, configs: [name, config_operation, value]]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Fixed(1),
            Field::Str,
            Field::Array(&[Field::Str, Field::Fixed(1), Field::Str]),
        ])]
    }
}

impl RequestShape for AlterConfigsRequest {
    /// `resources: [resource_type, resource_name, configs: [name, value]]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Fixed(1),
            Field::Str,
            Field::Array(&[Field::Str, Field::Str]),
        ])]
    }
}

/// One resource of either request, in the controller's terms.
struct Resource {
    resource_type: i8,
    name: StrBytes,
    /// The changes, or why the resource is refused before the controller sees it.
    changes: Result<Vec<ConfigChange>, (ResponseError, String)>,
}

/// (error code, message) per resource, in request order.
async fn alter(
    ctx: &BrokerContext,
    resources: &[Resource],
    validate_only: bool,
    replace_all: bool,
) -> Vec<(i16, Option<String>)> {
    let mut seen: HashMap<(i8, &str), usize> = HashMap::new();
    for r in resources {
        *seen.entry((r.resource_type, r.name.as_str())).or_default() += 1;
    }
    let verdicts: Vec<Result<(), (ResponseError, String)>> = resources
        .iter()
        .map(|r| {
            if seen[&(r.resource_type, r.name.as_str())] > 1 {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Duplicate resource in the request: {}", r.name),
                ));
            }
            match r.resource_type {
                RESOURCE_TOPIC => r.changes.as_ref().map(|_| ()).map_err(Clone::clone),
                RESOURCE_BROKER => Err((
                    ResponseError::InvalidRequest,
                    "fjord has no dynamic broker configs; set broker keys in the node's config file"
                        .into(),
                )),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("fjord alters topic (2) configs, not resource type {other}"),
                )),
            }
        })
        .collect();
    let to_controller: Vec<TopicConfigChanges> = resources
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .filter_map(|(r, _)| {
            Some(TopicConfigChanges {
                topic: r.name.to_string(),
                changes: r.changes.clone().ok()?,
                replace_all,
            })
        })
        .collect();
    let reply = if to_controller.is_empty() {
        None
    } else {
        let asked = AlterTopicConfigsRequest {
            resources: to_controller,
            validate_only,
        };
        let reply = ctx.controller.alter_topic_configs(asked).await;
        if let (Ok(r), false) = (&reply, validate_only) {
            ctx.controller
                .wait_for_offset(r.metadata_offset, LOCAL_IMAGE_WAIT)
                .await;
        }
        Some(reply)
    };
    let mut answered = match &reply {
        Some(Ok(r)) => r.results.clone().into_iter(),
        _ => Vec::new().into_iter(),
    };
    verdicts
        .into_iter()
        .map(|v| match (v, &reply) {
            (Err((e, message)), _) => (e.code(), Some(message)),
            (Ok(()), Some(Err(e))) => failure(e),
            (Ok(()), _) => answered.next().map_or_else(
                || (ResponseError::UnknownServerError.code(), None),
                |(_, r)| outcome(&r),
            ),
        })
        .collect()
}

pub async fn handle(
    ctx: &BrokerContext,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let resources: Vec<Resource> = request
        .resources
        .into_iter()
        .map(|r| Resource {
            resource_type: r.resource_type,
            name: r.resource_name,
            changes: r
                .configs
                .into_iter()
                .map(|c| {
                    let op = AlterConfigOp::from_kafka_id(c.config_operation).ok_or_else(|| {
                        (
                            ResponseError::InvalidRequest,
                            format!(
                                "Unknown config operation {} for {}",
                                c.config_operation, c.name
                            ),
                        )
                    })?;
                    Ok(ConfigChange {
                        name: c.name.to_string(),
                        op,
                        value: c.value.map(|v| v.to_string()),
                    })
                })
                .collect(),
        })
        .collect();
    let outcomes = alter(ctx, &resources, request.validate_only, false).await;
    let responses = resources
        .into_iter()
        .zip(outcomes)
        .map(|(r, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.name)
                .with_error_code(code)
                .with_error_message(message.as_deref().map(str_bytes))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Legacy AlterConfigs (key 33): every listed key is SET, every other
/// override of the topic is removed.
pub async fn handle_legacy(
    ctx: &BrokerContext,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let resources: Vec<Resource> = request
        .resources
        .into_iter()
        .map(|r| Resource {
            resource_type: r.resource_type,
            name: r.resource_name,
            changes: Ok(r
                .configs
                .into_iter()
                .map(|c| ConfigChange {
                    name: c.name.to_string(),
                    op: AlterConfigOp::Set,
                    value: c.value.map(|v| v.to_string()),
                })
                .collect()),
        })
        .collect();
    let outcomes = alter(ctx, &resources, request.validate_only, true).await;
    let responses = resources
        .into_iter()
        .zip(outcomes)
        .map(|(r, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.name)
                .with_error_code(code)
                .with_error_message(message.as_deref().map(str_bytes))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
pub fn request() -> IncrementalAlterConfigsRequest {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes("t"))
        .with_configs(vec![
            AlterableConfig::default()
                .with_name(str_bytes("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(str_bytes("1"))),
            AlterableConfig::default()
                .with_name(str_bytes("segment.ms"))
                .with_config_operation(1)
                .with_value(None),
        ])])
}

#[cfg(test)]
pub fn legacy_request() -> AlterConfigsRequest {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes("t"))
        .with_configs(vec![AlterableConfig::default()
            .with_name(str_bytes("retention.ms"))
            .with_value(Some(str_bytes("1")))])])
}
