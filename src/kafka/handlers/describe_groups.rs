//! DescribeGroups v0-v5: state, protocol, members and (when Stable) their
//! metadata and assignments. An unknown group is reported as Dead, as
//! Kafka does.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for DescribeGroupsRequest {
    /// `groups: [string]`, then include_authorized_operations (v3+).
    fn shape(_version: i16) -> Shape {
        &[Field::ValueArray(&[Field::Str])]
    }
}

pub fn handle(
    ctx: &BrokerContext,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_authorized_operations(i32::MIN);
            let error = ctx.group.check_coordinator(&group_id.0);
            if error != 0 {
                return described.with_error_code(error);
            }
            let Some(summary) = ctx.group.describe(&group_id.0) else {
                return described.with_group_state(str_bytes("Dead"));
            };
            described
                .with_group_state(str_bytes(summary.state.name()))
                .with_protocol_type(str_bytes(&summary.protocol_type))
                .with_protocol_data(str_bytes(&summary.protocol_name))
                .with_members(
                    summary
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.group_instance_id.as_deref().map(str_bytes)
                                } else {
                                    None
                                })
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
pub fn request() -> DescribeGroupsRequest {
    use kafka_protocol::messages::GroupId;
    DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes("g")); 2])
}
