//! ListGroups v0-v5: the groups this broker coordinates (admin clients ask
//! every broker, as with Kafka). v4 filters by state, v5 by type; every
//! group here is a "classic" group.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, RequestShape};
use crate::kafka::array_guard::{Field, Shape, NO_ARRAYS};
use crate::kafka::BrokerContext;

impl RequestShape for ListGroupsRequest {
    /// v4 `states_filter: [string]`; v5 adds `types_filter: [string]`.
    fn shape(version: i16) -> Shape {
        use Field::{Str, ValueArray};
        match version {
            ..=3 => NO_ARRAYS,
            4 => &[ValueArray(&[Str])],
            _ => &[ValueArray(&[Str]), ValueArray(&[Str])],
        }
    }
}

pub fn handle(
    ctx: &BrokerContext,
    request: ListGroupsRequest,
    _version: i16,
) -> ListGroupsResponse {
    let wants_classic = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let groups = ctx
        .group
        .list()
        .into_iter()
        .filter(|_| wants_classic)
        .filter(|(_, state, _)| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state.name()))
        })
        .map(|(id, state, protocol_type)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(state.name()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
pub fn request(version: i16) -> ListGroupsRequest {
    let r = ListGroupsRequest::default();
    let r = if version >= 4 {
        r.with_states_filter(vec![str_bytes("Stable")])
    } else {
        r
    };
    if version >= 5 {
        r.with_types_filter(vec![str_bytes("classic")])
    } else {
        r
    }
}
