//! Producer ids for idempotent producers (Kafka's `ProducerIdControlManager`
//! on the controller and `ProducerIdManager` on each broker). The active
//! controller hands out blocks of ids as `ProducerIds` records, so an id is
//! never handed out twice, across restarts and controller changes; each
//! broker takes ids from its current block and asks for the next when it
//! runs out.

use tokio::sync::Mutex;

use super::{Controller, ControllerError};
use crate::metadata::MetadataRecord;

/// Ids per block (Kafka's `PRODUCER_ID_BLOCK_SIZE`).
pub const BLOCK_SIZE: i64 = 1000;

/// The active controller's side: one block per request, serialized so two
/// brokers never get the same one.
pub(super) async fn allocate_block(
    controller: &Controller,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<(i64, i64), ControllerError> {
    let _guard = controller.producer_ids.allocation.lock().await;
    let start = controller.image.borrow().next_producer_id;
    let next = start
        .checked_add(BLOCK_SIZE)
        .ok_or_else(|| ControllerError::Internal("producer ids exhausted".into()))?;
    controller
        .write(vec![MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_producer_id: next,
        }])
        .await?;
    Ok((start, next))
}

/// This broker's current block: ids `next..end`.
#[derive(Default)]
pub(super) struct ProducerIds {
    allocation: Mutex<()>,
    block: Mutex<(i64, i64)>,
}

impl Controller {
    /// A producer id never handed out before (InitProducerId).
    pub async fn generate_producer_id(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<i64, ControllerError> {
        let mut block = self.producer_ids.block.lock().await;
        if block.0 >= block.1 {
            *block = self.allocate_producer_ids(broker_id, broker_epoch).await?;
            metrics::counter!("fjord_producer_id_blocks_total").increment(1);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
