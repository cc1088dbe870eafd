//! InitProducerId: a fresh producer id at epoch 0 for an idempotent
//! producer (Kafka's answer when no transactional id is given; the id and
//! epoch a KIP-360 client sends back are not reused, a new id is as good).
//! Transactions are not served yet, so a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::RequestShape;
use crate::kafka::array_guard::{Shape, NO_ARRAYS};
use crate::kafka::BrokerContext;

impl RequestShape for InitProducerIdRequest {
    fn shape(_version: i16) -> Shape {
        NO_ARRAYS
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let refused = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.is_empty())
    {
        return refused(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let broker_epoch = ctx
        .image
        .borrow()
        .cluster
        .brokers
        .get(&ctx.node_id)
        .map_or(-1, |b| b.broker_epoch);
    match ctx
        .controller
        .generate_producer_id(ctx.node_id, broker_epoch)
        .await
    {
        Ok(id) => {
            metrics::counter!("fjord_producer_ids_issued_total").increment(1);
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)
        }
        Err(e) => {
            tracing::warn!("InitProducerId: {e}");
            // Retriable for every client: it asks again.
            refused(ResponseError::CoordinatorNotAvailable)
        }
    }
}
