//! The node's partition index: one RocksDB for all partitions of a log
//! directory. The segment files are the truth; everything here can be
//! rebuilt from them (see `log::PartitionLog::open`), so writes go to
//! RocksDB's WAL without syncing it.
//!
//! Keys are a one-byte kind, the partition's key (topic id + partition) and
//! a big-endian position so that one partition's entries sort together:
//! - `o` + partition + last offset of a batch -> where the batch is
//!   ([`BatchEntry`]). One entry per stored batch: a fetch seeks to the
//!   first batch whose last offset is at or past the fetch offset.
//! - `t` + partition + timestamp -> base offset of the first batch whose max
//!   timestamp reached it. Entries are only written when a batch raises the
//!   partition's running max timestamp, so timestamps and offsets rise
//!   together and a seek finds the first batch that can hold a record at or
//!   after a time (Kafka's time index, KIP-33).
//! - `c` + partition -> the partition's [`Checkpoint`].
//! - `e` + partition + leader epoch -> the first offset written in that
//!   epoch (Kafka's leader-epoch cache, KIP-101/279).

use std::path::Path;

use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use uuid::Uuid;

const OFFSET: u8 = b'o';
const TIME: u8 = b't';
const CHECKPOINT: u8 = b'c';
const EPOCH: u8 = b'e';

/// Identifies a partition's entries: topic id and partition number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey([u8; 20]);

impl PartitionKey {
    pub fn new(topic_id: Uuid, partition: i32) -> Self {
        let mut k = [0u8; 20];
        k[..16].copy_from_slice(topic_id.as_bytes());
        k[16..].copy_from_slice(&partition.to_be_bytes());
        PartitionKey(k)
    }

    fn key(&self, kind: u8, position: u64) -> [u8; 29] {
        let mut k = [0u8; 29];
        k[0] = kind;
        k[1..21].copy_from_slice(&self.0);
        k[21..].copy_from_slice(&position.to_be_bytes());
        k
    }

    fn prefix(&self, kind: u8) -> [u8; 21] {
        let mut k = [0u8; 21];
        k[0] = kind;
        k[1..].copy_from_slice(&self.0);
        k
    }
}

/// Where one stored batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Base offset of the segment holding it.
    pub segment: i64,
    /// Byte position of the batch in the segment file.
    pub position: u64,
    pub size: u32,
    pub max_timestamp: i64,
    /// The largest timestamp in the partition up to and including this batch.
    pub running_max_timestamp: i64,
}

impl BatchEntry {
    fn encode(&self) -> [u8; 44] {
        let mut v = [0u8; 44];
        v[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        v[8..16].copy_from_slice(&self.segment.to_be_bytes());
        v[16..24].copy_from_slice(&self.position.to_be_bytes());
        v[24..28].copy_from_slice(&self.size.to_be_bytes());
        v[28..36].copy_from_slice(&self.max_timestamp.to_be_bytes());
        v[36..44].copy_from_slice(&self.running_max_timestamp.to_be_bytes());
        v
    }

    fn decode(last_offset: i64, v: &[u8]) -> Option<Self> {
        if v.len() != 44 {
            return None;
        }
        Some(BatchEntry {
            base_offset: i64_at(v, 0),
            last_offset,
            segment: i64_at(v, 8),
            position: i64_at(v, 16) as u64,
            size: u32::from_be_bytes([v[24], v[25], v[26], v[27]]),
            max_timestamp: i64_at(v, 28),
            running_max_timestamp: i64_at(v, 36),
        })
    }

    /// The byte just past the batch.
    pub fn end_position(&self) -> u64 {
        self.position + u64::from(self.size)
    }
}

/// What a partition remembers across restarts besides its segment files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub log_start_offset: i64,
    /// Offsets below this are known to be flushed to disk, with their index
    /// entries; recovery scans only from the segment that holds it.
    pub recovery_point: i64,
    pub high_watermark: i64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[0..8].copy_from_slice(&self.log_start_offset.to_be_bytes());
        v[8..16].copy_from_slice(&self.recovery_point.to_be_bytes());
        v[16..24].copy_from_slice(&self.high_watermark.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        (v.len() == 24).then(|| Checkpoint {
            log_start_offset: i64_at(v, 0),
            recovery_point: i64_at(v, 8),
            high_watermark: i64_at(v, 16),
        })
    }
}

pub struct Index {
    db: DB,
    write_options: WriteOptions,
}

/// Changes applied to the index together.
#[derive(Default)]
pub struct IndexWrite {
    batch: WriteBatch,
}

impl IndexWrite {
    pub fn put_batch(&mut self, pk: &PartitionKey, entry: &BatchEntry) {
        self.batch
            .put(pk.key(OFFSET, entry.last_offset as u64), entry.encode());
    }

    /// Records that `base_offset` is the first batch reaching `timestamp`.
    pub fn put_time(&mut self, pk: &PartitionKey, timestamp: i64, base_offset: i64) {
        self.batch.put(
            pk.key(TIME, time_position(timestamp)),
            base_offset.to_be_bytes(),
        );
    }

    pub fn put_checkpoint(&mut self, pk: &PartitionKey, checkpoint: &Checkpoint) {
        self.batch.put(pk.prefix(CHECKPOINT), checkpoint.encode());
    }

    /// Records that leader epoch `epoch` starts at `start_offset`.
    pub fn put_epoch(&mut self, pk: &PartitionKey, epoch: i32, start_offset: i64) {
        self.batch.put(
            pk.key(EPOCH, epoch.max(0) as u64),
            start_offset.to_be_bytes(),
        );
    }

    /// Removes the cached epochs at or above `from`.
    pub fn delete_epochs_from(&mut self, pk: &PartitionKey, from: i32) {
        self.batch
            .delete_range(pk.key(EPOCH, from.max(0) as u64), pk.key(EPOCH, u64::MAX));
    }

    /// Removes the entries of batches whose last offset is in `from..to`.
    pub fn delete_offsets(&mut self, pk: &PartitionKey, from: i64, to: i64) {
        self.batch.delete_range(
            pk.key(OFFSET, from.max(0) as u64),
            pk.key(OFFSET, to.max(0) as u64),
        );
    }

    /// Removes time entries with timestamps in `from..=to`.
    pub fn delete_times_through(&mut self, pk: &PartitionKey, from: i64, to: i64) {
        let end = time_position(to).saturating_add(1);
        self.batch
            .delete_range(pk.key(TIME, time_position(from)), pk.key(TIME, end));
    }

    /// Removes time entries at or after `from`.
    pub fn delete_times_from(&mut self, pk: &PartitionKey, from: i64) {
        self.delete_times_through(pk, from, i64::MAX);
        self.batch.delete(pk.key(TIME, u64::MAX));
    }

    /// Removes everything the partition has in the index.
    pub fn delete_partition(&mut self, pk: &PartitionKey) {
        for kind in [OFFSET, TIME, EPOCH] {
            self.batch
                .delete_range(pk.key(kind, 0), pk.key(kind, u64::MAX));
            self.batch.delete(pk.key(kind, u64::MAX));
        }
        self.batch.delete(pk.prefix(CHECKPOINT));
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// Timestamps sort as unsigned big-endian once the sign bit is flipped.
fn time_position(timestamp: i64) -> u64 {
    (timestamp as u64) ^ (1 << 63)
}

fn from_time_position(position: u64) -> i64 {
    (position ^ (1 << 63)) as i64
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index, rocksdb::Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        let db = DB::open(&opts, dir)?;
        let mut write_options = WriteOptions::default();
        // The segment files are the truth and recovery rebuilds what the
        // index lost, so the index is never synced on its own.
        write_options.set_sync(false);
        Ok(Index { db, write_options })
    }

    pub fn write(&self, write: IndexWrite) -> Result<(), rocksdb::Error> {
        self.db.write_opt(write.batch, &self.write_options)
    }

    pub fn checkpoint(&self, pk: &PartitionKey) -> Result<Option<Checkpoint>, rocksdb::Error> {
        Ok(self
            .db
            .get_pinned(pk.prefix(CHECKPOINT))?
            .and_then(|v| Checkpoint::decode(&v)))
    }

    /// The leader-epoch cache: (epoch, start offset) in epoch order.
    pub fn epochs(&self, pk: &PartitionKey) -> Result<Vec<(i32, i64)>, rocksdb::Error> {
        let prefix = pk.prefix(EPOCH);
        let mut it = self.db.raw_iterator();
        it.seek(prefix);
        let mut epochs = Vec::new();
        while it.valid() {
            let (Some(key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            if !key.starts_with(&prefix) || key.len() != 29 || value.len() != 8 {
                break;
            }
            let epoch = i64_at(key, 21);
            epochs.push((i32::try_from(epoch).unwrap_or(i32::MAX), i64_at(value, 0)));
            it.next();
        }
        it.status().map(|()| epochs)
    }

    /// The first batch whose last offset is at or after `offset`.
    pub fn batch_at_or_after(
        &self,
        pk: &PartitionKey,
        offset: i64,
    ) -> Result<Option<BatchEntry>, rocksdb::Error> {
        let mut found = None;
        self.batches_from(pk, offset, |e| {
            found = Some(*e);
            false
        })?;
        Ok(found)
    }

    /// Calls `visit` on batches in offset order from the one holding
    /// `offset`, while it returns true.
    pub fn batches_from(
        &self,
        pk: &PartitionKey,
        offset: i64,
        mut visit: impl FnMut(&BatchEntry) -> bool,
    ) -> Result<(), rocksdb::Error> {
        let prefix = pk.prefix(OFFSET);
        let mut it = self.db.raw_iterator();
        it.seek(pk.key(OFFSET, offset.max(0) as u64));
        while it.valid() {
            let (Some(key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            if !key.starts_with(&prefix) || key.len() != 29 {
                break;
            }
            let last_offset = i64_at(key, 21);
            let Some(entry) = BatchEntry::decode(last_offset, value) else {
                break;
            };
            if !visit(&entry) {
                break;
            }
            it.next();
        }
        it.status()
    }

    /// The last batch whose last offset is below `offset`.
    pub fn batch_before(
        &self,
        pk: &PartitionKey,
        offset: i64,
    ) -> Result<Option<BatchEntry>, rocksdb::Error> {
        if offset <= 0 {
            return Ok(None);
        }
        let prefix = pk.prefix(OFFSET);
        let mut it = self.db.raw_iterator();
        it.seek_for_prev(pk.key(OFFSET, (offset - 1) as u64));
        if it.valid() {
            if let (Some(key), Some(value)) = (it.key(), it.value()) {
                if key.starts_with(&prefix) && key.len() == 29 {
                    return Ok(BatchEntry::decode(i64_at(key, 21), value));
                }
            }
        }
        it.status().map(|()| None)
    }

    /// The first time entry at or after `timestamp`: (timestamp, base offset).
    pub fn time_at_or_after(
        &self,
        pk: &PartitionKey,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, rocksdb::Error> {
        let prefix = pk.prefix(TIME);
        let mut it = self.db.raw_iterator();
        it.seek(pk.key(TIME, time_position(timestamp)));
        if it.valid() {
            if let (Some(key), Some(value)) = (it.key(), it.value()) {
                if key.starts_with(&prefix) && key.len() == 29 && value.len() == 8 {
                    let ts = from_time_position(i64_at(key, 21) as u64);
                    return Ok(Some((ts, i64_at(value, 0))));
                }
            }
        }
        it.status().map(|()| None)
    }
}

fn i64_at(v: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[at..at + 8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: i64, last: i64, segment: i64, position: u64) -> BatchEntry {
        BatchEntry {
            base_offset: base,
            last_offset: last,
            segment,
            position,
            size: 100,
            max_timestamp: base * 10,
            running_max_timestamp: base * 10,
        }
    }

    #[test]
    fn lookups_at_every_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let pk = PartitionKey::new(Uuid::from_u128(1), 0);
        let other = PartitionKey::new(Uuid::from_u128(1), 1);
        let mut w = IndexWrite::default();
        // Batches [0..=4] [5..=9] in segment 0, [10..=10] in segment 10.
        w.put_batch(&pk, &entry(0, 4, 0, 0));
        w.put_batch(&pk, &entry(5, 9, 0, 100));
        w.put_batch(&pk, &entry(10, 10, 10, 0));
        w.put_batch(&other, &entry(0, 100, 0, 0));
        w.put_time(&pk, -5, 0);
        w.put_time(&pk, 50, 5);
        index.write(w).unwrap();

        let at = |o| {
            index
                .batch_at_or_after(&pk, o)
                .unwrap()
                .map(|e| e.base_offset)
        };
        assert_eq!(at(0), Some(0));
        assert_eq!(at(4), Some(0));
        assert_eq!(at(5), Some(5));
        assert_eq!(at(9), Some(5));
        assert_eq!(at(10), Some(10));
        assert_eq!(at(11), None, "past the end, and not partition 1's entry");
        let before = |o| index.batch_before(&pk, o).unwrap().map(|e| e.base_offset);
        assert_eq!(before(0), None);
        assert_eq!(before(5), Some(0));
        assert_eq!(before(10), Some(5));
        assert_eq!(before(1000), Some(10));
        assert_eq!(index.batch_before(&other, 1).unwrap(), None);

        let mut seen = Vec::new();
        index
            .batches_from(&pk, 3, |e| {
                seen.push(e.base_offset);
                true
            })
            .unwrap();
        assert_eq!(seen, vec![0, 5, 10]);

        let t = |ts| index.time_at_or_after(&pk, ts).unwrap();
        assert_eq!(t(i64::MIN), Some((-5, 0)));
        assert_eq!(t(-5), Some((-5, 0)));
        assert_eq!(t(0), Some((50, 5)));
        assert_eq!(t(51), None);

        let mut w = IndexWrite::default();
        w.delete_offsets(&pk, 0, 10);
        w.delete_times_through(&pk, i64::MIN, -5);
        index.write(w).unwrap();
        assert_eq!(at(0), Some(10));
        assert_eq!(t(i64::MIN), Some((50, 5)));

        let mut w = IndexWrite::default();
        w.put_checkpoint(
            &pk,
            &Checkpoint {
                log_start_offset: 10,
                recovery_point: 11,
                high_watermark: 11,
            },
        );
        index.write(w).unwrap();
        assert_eq!(index.checkpoint(&pk).unwrap().unwrap().recovery_point, 11);

        let mut w = IndexWrite::default();
        w.delete_partition(&pk);
        index.write(w).unwrap();
        assert_eq!(at(0), None);
        assert_eq!(t(i64::MIN), None);
        assert_eq!(index.checkpoint(&pk).unwrap(), None);
        assert!(index.batch_at_or_after(&other, 0).unwrap().is_some());
    }
}
