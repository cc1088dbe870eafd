//! Heartbeat v0-v4: keeps a member's session alive and tells it when the
//! group rebalances.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestShape;
use crate::kafka::array_guard::{Shape, NO_ARRAYS};
use crate::kafka::BrokerContext;

impl RequestShape for HeartbeatRequest {
    fn shape(_version: i16) -> Shape {
        NO_ARRAYS
    }
}

pub fn handle(ctx: &BrokerContext, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let error = ctx.group.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    HeartbeatResponse::default().with_error_code(error)
}
