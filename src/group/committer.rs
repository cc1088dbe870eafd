//! Folds concurrent offset commits into one metadata log entry.
//!
//! A commit is answered only after the quorum has it, and every propose is a
//! Raft round-trip. One task proposes at a time; whatever commits arrive
//! while a propose is in flight are taken together for the next one, so a
//! thousand committing consumers cost a handful of round-trips, and a lone
//! commit waits for nothing but its own.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::controller::Controller;
use crate::metadata::MetadataRecord;

/// Upper bound of records in one log entry.
const MAX_RECORDS_PER_ENTRY: usize = 10_000;
/// How long to wait for this broker's image to show a committed entry.
const APPLY_WAIT: Duration = Duration::from_secs(5);

pub struct PendingCommit {
    pub records: Vec<MetadataRecord>,
    /// The Kafka error code for every partition of the commit.
    pub done: oneshot::Sender<i16>,
}

pub async fn run(
    controller: Arc<Controller>,
    mut commits: mpsc::UnboundedReceiver<PendingCommit>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            c = commits.recv() => match c {
                Some(c) => c,
                None => return,
            },
            () = super::stopped(&mut shutdown) => return,
        };
        let mut batch = vec![first];
        let mut count = batch[0].records.len();
        while count < MAX_RECORDS_PER_ENTRY {
            match commits.try_recv() {
                Ok(c) => {
                    count += c.records.len();
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        let records: Vec<MetadataRecord> = batch
            .iter()
            .flat_map(|c| c.records.iter().cloned())
            .collect();
        metrics::histogram!("fjord_group_commit_batch_records").record(records.len() as f64);
        let write = async {
            match controller.propose(records).await {
                Ok(index) => {
                    // OffsetFetch reads this broker's image: answer once it
                    // shows the commit, so a client reads its own writes.
                    controller.wait_for_offset(index, APPLY_WAIT).await;
                    0
                }
                Err(e) => {
                    tracing::warn!("offset commit not written: {e}");
                    ResponseError::CoordinatorNotAvailable.code()
                }
            }
        };
        let (code, stopping) = tokio::select! {
            code = write => (code, false),
            // The node is stopping: the client retries elsewhere.
            () = super::stopped(&mut shutdown) => (ResponseError::CoordinatorNotAvailable.code(), true),
        };
        for c in batch {
            let _ = c.done.send(code);
        }
        if stopping {
            return;
        }
    }
}
