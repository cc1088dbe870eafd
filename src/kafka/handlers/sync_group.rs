//! SyncGroup v0-v5: followers wait for the leader's assignment, which is
//! relayed as opaque bytes.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{str_bytes, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for SyncGroupRequest {
    /// `group_id, generation_id, member_id, group_instance_id (v3+),
    /// protocol_type and protocol_name (v5+), assignments: [member_id, assignment]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Bytes, Fixed, Str};
        match version {
            0..=2 => &[Str, Fixed(4), Str, Array(&[Str, Bytes])],
            3..=4 => &[Str, Fixed(4), Str, Str, Array(&[Str, Bytes])],
            _ => &[Str, Fixed(4), Str, Str, Str, Str, Array(&[Str, Bytes])],
        }
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let outcome = ctx
        .group
        .sync(
            &request.group_id.0,
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            assignments,
        )
        .await;
    let response = SyncGroupResponse::default()
        .with_error_code(outcome.error)
        .with_assignment(outcome.assignment);
    if version >= 5 {
        response
            .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(outcome.protocol_name.as_deref().map(str_bytes))
    } else {
        response
    }
}

#[cfg(test)]
pub fn request() -> SyncGroupRequest {
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    SyncGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(str_bytes("g")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(str_bytes("m"))
            .with_assignment(bytes::Bytes::from_static(b"a"))])
}
