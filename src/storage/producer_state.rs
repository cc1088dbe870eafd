//! Idempotent producers' state per partition (Kafka's
//! `ProducerStateManager`): for each producer id its epoch and the sequence
//! numbers and offsets of its last five batches. A leader checks every
//! produced batch against it: a retry of one of those five batches gets its
//! original offsets back instead of being written twice; a gap in the
//! sequence is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is
//! INVALID_PRODUCER_EPOCH. Followers record the same batches as they copy
//! them, and start-up rebuilds it from the batch headers in the log, so
//! dedupe survives a restart and a failover.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchHeader;

/// Batches remembered per producer: Kafka's clients keep at most five in
/// flight, so a retry is always one of the last five.
pub const MAX_BATCHES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchMetadata {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Clone, Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("{0}")]
    OutOfOrder(String),
    #[error("{0}")]
    InvalidEpoch(String),
}

/// What to do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already in the log at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

/// The sequence of a batch's last record; sequences wrap after i32::MAX.
fn last_sequence(h: &BatchHeader) -> i32 {
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a batch a leader is about to append.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !is_idempotent(h) {
            return Ok(SequenceCheck::Append);
        }
        let first_seq = h.base_sequence;
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // An unknown producer (new, or its state expired): accepted at
            // any sequence, as Kafka does since KIP-360.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch(format!(
                "producer {} epoch {} is older than the current epoch {}",
                h.producer_id, h.producer_epoch, entry.epoch
            )));
        }
        if h.producer_epoch > entry.epoch {
            if first_seq != 0 {
                return Err(SequenceError::OutOfOrder(format!(
                    "producer {} starts epoch {} at sequence {first_seq}, not 0",
                    h.producer_id, h.producer_epoch
                )));
            }
            return Ok(SequenceCheck::Append);
        }
        let last_seq = last_sequence(h);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        match entry.batches.back() {
            Some(last) if first_seq != next_sequence(last.last_seq) => {
                Err(SequenceError::OutOfOrder(format!(
                    "producer {} sequence {first_seq} does not follow {}",
                    h.producer_id, last.last_seq
                )))
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a batch written at `base_offset` (leader, follower or
    /// recovery).
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        if !is_idempotent(h) {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch > entry.epoch || entry.batches.is_empty() {
            if h.producer_epoch != entry.epoch {
                entry.batches.clear();
            }
            entry.epoch = h.producer_epoch;
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            base_offset,
            last_offset: base_offset + i64::from(h.last_offset_delta),
        });
        while entry.batches.len() > MAX_BATCHES {
            entry.batches.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_out_of_order() {
        let mut s = ProducerStates::default();
        let b0 = header(7, 0, 0, 5);
        assert_eq!(s.check(&b0), Ok(SequenceCheck::Append));
        s.record(&b0, 100);
        let b1 = header(7, 0, 5, 3);
        assert_eq!(s.check(&b1), Ok(SequenceCheck::Append));
        s.record(&b1, 105);
        // A retry of either batch gets its original offsets.
        assert_eq!(
            s.check(&b0),
            Ok(SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 104
            })
        );
        assert_eq!(
            s.check(&b1),
            Ok(SequenceCheck::Duplicate {
                base_offset: 105,
                last_offset: 107
            })
        );
        // Skipping sequence 8 is a gap.
        assert!(matches!(
            s.check(&header(7, 0, 9, 1)),
            Err(SequenceError::OutOfOrder(_))
        ));
        assert_eq!(s.check(&header(7, 0, 8, 1)), Ok(SequenceCheck::Append));
        // Only the last five batches are remembered.
        for i in 0..6 {
            let b = header(7, 0, 8 + i, 1);
            s.record(&b, 200 + i64::from(i));
        }
        assert!(matches!(s.check(&b0), Err(SequenceError::OutOfOrder(_))));
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 1, 0, 2), 0);
        assert!(matches!(
            s.check(&header(7, 0, 2, 1)),
            Err(SequenceError::InvalidEpoch(_))
        ));
        assert!(matches!(
            s.check(&header(7, 2, 5, 1)),
            Err(SequenceError::OutOfOrder(_))
        ));
        assert_eq!(s.check(&header(7, 2, 0, 1)), Ok(SequenceCheck::Append));
        s.record(&header(7, 2, 0, 1), 2);
        assert_eq!(s.check(&header(7, 2, 1, 1)), Ok(SequenceCheck::Append));
        // Unknown producers and non-idempotent batches are not checked.
        assert_eq!(s.check(&header(8, 0, 42, 1)), Ok(SequenceCheck::Append));
        assert_eq!(s.check(&header(-1, -1, -1, 1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStates::default();
        let near_end = header(7, 0, i32::MAX - 1, 3);
        assert_eq!(last_sequence(&near_end), 0);
        s.record(&near_end, 0);
        assert_eq!(s.check(&header(7, 0, 1, 1)), Ok(SequenceCheck::Append));
    }
}
