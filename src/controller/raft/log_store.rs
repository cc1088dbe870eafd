//! The metadata log in RocksDB: entries keyed by big-endian index in the
//! `logs` column family; vote, committed id and purge point in `meta`.
//!
//! Every write that Raft relies on for safety (vote, appended entries) is
//! synced to the RocksDB WAL before it is acknowledged, so a `kill -9` at any
//! moment leaves a store that opens and holds every acknowledged entry.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{any, Entry, LogId, StorageError, TypeConfig};
use crate::metadata::records::{decode, encode};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
/// Where the state machine keeps its last snapshot (read by `state_machine`).
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Opens (creating if needed) the metadata store at `dir`.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(2);
    let cfs = [CF_LOGS, CF_META, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

pub(crate) fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created by open_db")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| StorageIOError::read(any(e)))?;
        match raw {
            None => Ok(None),
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read(any(e)).into()),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| StorageIOError::write(any(e)))?;
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, &synced())
            .map_err(|e| StorageIOError::write(any(e)).into())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(StorageIOError::read_logs(any(e)).into()),
            Some(Ok((_, v))) => {
                let entry: Entry = decode(&v).map_err(|e| StorageIOError::read_logs(any(e)))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_LOGS), mode) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&v).map_err(|e| StorageIOError::read_logs(any(e)))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(id) = committed {
            metrics::gauge!("fjord_raft_commit_index").set(id.index as f64);
        }
        // Not synced: losing it only means re-learning the commit point from
        // the leader, never applying an uncommitted entry.
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(any(e)))?;
        self.db
            .put_cf(self.cf(CF_META), KEY_COMMITTED, bytes)
            .map_err(|e| StorageIOError::write(any(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(any(e)))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        let result = self.db.write_opt(batch, &synced());
        let io_result = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io_result);
        result.map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.cf(CF_LOGS);
        self.db
            .delete_range_cf_opt(cf, index_key(log_id.index), index_key(u64::MAX), &synced())
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two writes leaves
        // extra entries behind it, which readers skip, never a gap.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        let cf = self.cf(CF_LOGS);
        self.db
            .delete_range_cf(cf, index_key(0), index_key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }
}
