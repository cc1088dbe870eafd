//! FindCoordinator v0-v4: which broker coordinates a group. v4 batches keys.
//! Groups are placed by [`crate::group::coordinator_for`]; transactions are
//! not coordinated yet, so key type 1 gets COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestShape};
use crate::group::coordinator_for;
use crate::kafka::array_guard::{Field, Shape, NO_ARRAYS};
use crate::kafka::BrokerContext;
use crate::metadata::MetadataImage;

impl RequestShape for FindCoordinatorRequest {
    /// v4: `key_type, coordinator_keys: [string]`.
    fn shape(version: i16) -> Shape {
        if version >= 4 {
            &[Field::Fixed(1), Field::ValueArray(&[Field::Str])]
        } else {
            NO_ARRAYS
        }
    }
}

const GROUP: i8 = 0;

fn find(ctx: &BrokerContext, image: &MetadataImage, key_type: i8, key: &str) -> Coordinator {
    let answer = Coordinator::default()
        .with_key(str_bytes(key))
        .with_node_id((-1).into());
    let fail = |e: ResponseError| {
        answer
            .clone()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(&format!("{e}"))))
    };
    if key_type != GROUP {
        return fail(ResponseError::CoordinatorNotAvailable);
    }
    if image.cluster.brokers.is_empty() {
        return fail(ResponseError::CoordinatorLoadInProgress);
    }
    let Some(node) = coordinator_for(image, key) else {
        return fail(ResponseError::CoordinatorNotAvailable);
    };
    let endpoint = image
        .cluster
        .brokers
        .get(&node)
        .and_then(|b| b.endpoint(&ctx.listener_name));
    match endpoint {
        Some(e) => answer
            .with_node_id(node.into())
            .with_host(str_bytes(&e.host))
            .with_port(i32::from(e.port)),
        None => fail(ResponseError::CoordinatorNotAvailable),
    }
}

pub fn handle(
    ctx: &BrokerContext,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let image = ctx.image.borrow().clone();
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|k| find(ctx, &image, request.key_type, k))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = find(ctx, &image, request.key_type, &request.key);
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(if version >= 1 { c.error_message } else { None })
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

#[cfg(test)]
pub fn request(version: i16) -> FindCoordinatorRequest {
    let r = FindCoordinatorRequest::default();
    if version >= 4 {
        r.with_coordinator_keys(vec![str_bytes("g1"), str_bytes("g2")])
    } else {
        r.with_key(str_bytes("g1"))
    }
}
