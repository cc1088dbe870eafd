//! DeleteRecords: moves a partition's log start offset forward; whole
//! segments below it are deleted at once, and fetches below it get
//! OFFSET_OUT_OF_RANGE. An offset of -1 means the high watermark.

use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use uuid::Uuid;

use super::{partition_error_code, RequestShape};
use crate::kafka::array_guard::{Field, Shape};
use crate::kafka::BrokerContext;
use crate::replication::PartitionError;

impl RequestShape for DeleteRecordsRequest {
    /// `topics: [name, partitions: [partition_index, offset]]`.
    fn shape(_version: i16) -> Shape {
        &[Field::Array(&[
            Field::Str,
            Field::Array(&[Field::Fixed(4), Field::Fixed(8)]),
        ])]
    }
}

pub fn handle(
    ctx: &BrokerContext,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let image = ctx.image.borrow().clone();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let topic_id = image.topics.get(topic.name.as_str()).map(|t| t.topic_id);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = match topic_id {
                        Some(id) => delete_before(ctx, id, p),
                        None => Err(PartitionError::UnknownTopicOrPartition),
                    };
                    let answer = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match result {
                        Ok(low_watermark) => answer.with_low_watermark(low_watermark),
                        Err(e) => answer
                            .with_low_watermark(-1)
                            .with_error_code(partition_error_code(&e).code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

fn delete_before(
    ctx: &BrokerContext,
    topic_id: Uuid,
    p: &DeleteRecordsPartition,
) -> Result<i64, PartitionError> {
    let partition = ctx
        .replicas
        .leader_partition(topic_id, p.partition_index, -1)?;
    let offset = match p.offset {
        -1 => partition.log.high_watermark(),
        offset => offset,
    };
    let low_watermark = partition.log.delete_records_before(offset)?;
    tracing::info!(
        topic = %partition.log.topic,
        partition = p.partition_index,
        low_watermark,
        "records deleted"
    );
    Ok(low_watermark)
}
