//! LeaveGroup v0-v5; v3+ removes a batch of members (KIP-345), each
//! answered on its own.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{str_bytes, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for LeaveGroupRequest {
    /// v0-2 `group_id, member_id`; v3+ `group_id, members: [member_id,
    /// group_instance_id, reason (v5+)]`.
    fn shape(version: i16) -> Shape {
        use Field::{Array, Str};
        match version {
            0..=2 => &[Str, Str],
            3..=4 => &[Str, Array(&[Str, Str])],
            _ => &[Str, Array(&[Str, Str, Str])],
        }
    }
}

pub fn handle(ctx: &BrokerContext, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let (error, errors) = ctx.group.leave(&request.group_id.0, members.clone());
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(if error != 0 {
            error
        } else {
            errors.first().copied().unwrap_or(0)
        });
    }
    LeaveGroupResponse::default()
        .with_error_code(error)
        .with_members(if error != 0 {
            Vec::new()
        } else {
            members
                .into_iter()
                .zip(errors)
                .map(|((id, instance), e)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(e)
                })
                .collect()
        })
}

#[cfg(test)]
pub fn request(version: i16) -> LeaveGroupRequest {
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    let r = LeaveGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(str_bytes("g")));
    if version >= 3 {
        r.with_members(vec![
            MemberIdentity::default().with_member_id(str_bytes("m"));
            2
        ])
    } else {
        r.with_member_id(str_bytes("m"))
    }
}
