//! DeleteGroups v0-v2: deletes groups without members and their committed
//! offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestShape;
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;

impl RequestShape for DeleteGroupsRequest {
    fn shape(_version: i16) -> Shape {
        &[Field::ValueArray(&[Field::Str])]
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in request.groups_names {
        let error = ctx.group.delete_group(&group_id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

#[cfg(test)]
pub fn request() -> DeleteGroupsRequest {
    use kafka_protocol::messages::GroupId;
    DeleteGroupsRequest::default().with_groups_names(vec![GroupId(super::str_bytes("g")); 2])
}
