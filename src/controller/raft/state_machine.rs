//! The Raft state machine: replays committed metadata batches into the
//! [`MetadataImage`] and publishes each new image on a watch channel.
//!
//! The image is held in memory; a snapshot is the image itself, encoded and
//! kept in the metadata store. Start-up loads the last snapshot and openraft
//! replays the committed log tail after it, through the same `apply` path as
//! steady state.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::{synced, CF_SNAPSHOT};
use super::{any, Applied, Entry, LogId, StorageError, TypeConfig};
use crate::metadata::records::{decode, encode};
use crate::metadata::{MetadataDelta, MetadataImage};

const KEY_CURRENT: &[u8] = b"current";

type Membership = StoredMembership<u64, openraft::BasicNode>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// The bytes a snapshot carries between nodes: the encoded image.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    image: MetadataImage,
}

pub struct StateMachine {
    db: Arc<DB>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: Membership,
    publisher: watch::Sender<Arc<MetadataImage>>,
}

impl StateMachine {
    /// Restores the last snapshot from `db`, if any, and publishes its image.
    pub fn open(db: Arc<DB>) -> Result<(Self, watch::Receiver<Arc<MetadataImage>>), StorageError> {
        let mut image = MetadataImage::default();
        let mut last_applied = None;
        let mut last_membership = Membership::default();
        if let Some(stored) = load_snapshot(&db)? {
            image = decode_payload(&stored.data)?.image;
            last_applied = stored.meta.last_log_id;
            last_membership = stored.meta.last_membership;
        }
        let (publisher, rx) = watch::channel(Arc::new(image));
        let image = publisher.borrow().clone();
        Ok((
            StateMachine {
                db,
                image,
                last_applied,
                last_membership,
                publisher,
            },
            rx,
        ))
    }

    fn install(&mut self, meta: &Meta, image: MetadataImage) {
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publish(Arc::new(image));
    }

    fn publish(&mut self, image: Arc<MetadataImage>) {
        if let Some(id) = self.last_applied {
            metrics::gauge!("fjord_raft_applied_index").set(id.index as f64);
        }
        self.image = image.clone();
        self.publisher.send_replace(image);
    }
}

fn load_snapshot(db: &DB) -> Result<Option<StoredSnapshot>, StorageError> {
    let cf = db
        .cf_handle(CF_SNAPSHOT)
        .expect("column family created by open_db");
    match db
        .get_cf(cf, KEY_CURRENT)
        .map_err(|e| StorageIOError::read_snapshot(None, any(e)))?
    {
        None => Ok(None),
        Some(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|e| StorageIOError::read_snapshot(None, any(e)).into()),
    }
}

fn save_snapshot(db: &DB, stored: &StoredSnapshot) -> Result<(), StorageError> {
    let cf = db
        .cf_handle(CF_SNAPSHOT)
        .expect("column family created by open_db");
    let bytes = encode(stored).map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
    db.put_cf_opt(cf, KEY_CURRENT, bytes, &synced())
        .map_err(|e| StorageIOError::write_snapshot(None, any(e)).into())
}

fn decode_payload(bytes: &[u8]) -> Result<SnapshotPayload, StorageError> {
    decode(bytes).map_err(|e| StorageIOError::read_snapshot(None, any(e)).into())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut delta = MetadataDelta::new(&self.image);
        let mut replies = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => delta.advance(index),
                EntryPayload::Normal(batch) => {
                    delta.advance(index);
                    for record in &batch.records {
                        delta.replay(index, record);
                    }
                }
                EntryPayload::Membership(m) => {
                    delta.advance(index);
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            self.last_applied = Some(entry.log_id);
            replies.push(Applied);
        }
        self.publish(Arc::new(delta.apply()));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            image: self.image.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let payload = decode_payload(&data)?;
        save_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        metrics::counter!("fjord_raft_snapshots_installed_total").increment(1);
        self.install(meta, payload.image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(load_snapshot(&self.db)?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Builds a snapshot from the image as of `get_snapshot_builder`.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = encode(&SnapshotPayload {
            image: (*self.image).clone(),
        })
        .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term,
                id.index,
                rand::random::<u32>()
            ),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        save_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        metrics::counter!("fjord_raft_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
