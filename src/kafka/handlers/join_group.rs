//! JoinGroup v0-v9: a long poll that returns when the group's join phase
//! completes (see [`crate::group`]).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};

use super::{str_bytes, RequestShape};
use crate::group::JoinRequest;
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for JoinGroupRequest {
    /// `group_id, session_timeout_ms, rebalance_timeout_ms (v1+), member_id,
    /// group_instance_id (v5+), protocol_type, protocols: [name, metadata]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Bytes, Fixed, Str};
        match version {
            0 => &[Str, Fixed(4), Str, Str, Array(&[Str, Bytes])],
            1..=4 => &[Str, Fixed(4), Fixed(4), Str, Str, Array(&[Str, Bytes])],
            _ => &[Str, Fixed(4), Fixed(4), Str, Str, Str, Array(&[Str, Bytes])],
        }
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    header: &RequestHeader,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: String::new(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let outcome = ctx.group.join(join).await;
    JoinGroupResponse::default()
        .with_error_code(outcome.error)
        .with_generation_id(outcome.generation_id)
        .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(Some(str_bytes(
            outcome.protocol_name.as_deref().unwrap_or_default(),
        )))
        .with_leader(str_bytes(&outcome.leader))
        .with_skip_assignment(outcome.skip_assignment && version >= 9)
        .with_member_id(str_bytes(&outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_group_instance_id(if version >= 5 {
                            instance.as_deref().map(str_bytes)
                        } else {
                            None
                        })
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

#[cfg(test)]
pub fn request() -> JoinGroupRequest {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    JoinGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(str_bytes("g")))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str_bytes("range"))
            .with_metadata(bytes::Bytes::from_static(b"meta"))])
}
