//! One partition's log: segment files of record batches, named by base
//! offset as Kafka names them, with their entries in the node's RocksDB
//! [`Index`].
//!
//! Durability: a batch is written to its segment (the OS page cache) before
//! its append returns, so a killed process loses nothing it acknowledged.
//! Data reaches the disk itself when the flush policy says so
//! (`flush.messages`, `flush.ms`; Kafka's defaults leave it to the OS, and
//! replication covers machine loss), when a segment rolls, and on clean
//! shutdown. The recovery point is the offset below which everything is
//! flushed and indexed; start-up re-reads the segments from the one holding
//! it, checks every batch's CRC, cuts a torn tail, and rewrites their index
//! entries, so the segment files are always the truth.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::batch::{self, BatchError, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use super::index::{BatchEntry, Checkpoint, Index, IndexWrite, PartitionKey};
use super::log_config::{LogConfig, TimestampType};
use super::producer_state::{ProducerStates, SequenceCheck, SequenceError};

/// Kafka's file beside the segments naming the topic id (KIP-516), so a
/// directory left from a deleted topic is never taken for a new one of the
/// same name.
pub const PARTITION_METADATA: &str = "partition.metadata";
const SEGMENT_SUFFIX: &str = ".log";
/// Largest batch accepted while reading a segment back; anything larger is
/// a torn or corrupt length.
const MAX_STORED_BATCH: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "offset {offset} is out of range (log start {log_start_offset}, log end {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("partition index: {0}")]
    Index(#[from] rocksdb::Error),
    #[error("the partition was deleted")]
    Deleted,
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("{0}")]
    Corrupt(String),
}

/// `len` bytes of `file` from `position`, read straight into a fresh
/// buffer: no zero-filling first, which cost as much as the read itself in
/// profiles of consumers fetching megabytes at a time.
fn read_exact_at(file: &File, len: usize, position: u64) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = bytes::BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let at = position + filled as u64;
        let spare = buf.spare_capacity_mut();
        let want = (len - filled).min(spare.len());
        // SAFETY: `spare` is writable memory of at least `want` bytes owned
        // by `buf`; pread writes at most `want` bytes into it.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                at as libc::off_t,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => {
                // SAFETY: pread initialised the first `n` (<= want) bytes
                // of the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) }
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf.freeze())
}

/// Each time an append crosses a multiple of this in the active segment,
/// the kernel is asked to start writing the segment back from the previous
/// multiple (RocksDB's `bytes_per_sync`): dirty pages then leave at the
/// pace they arrive instead of piling up until the kernel's dirty
/// threshold, where it throttles every writer at once for a while.
const WRITEBACK_BYTES: u64 = 1 << 20;

/// Writeback an append asks for, started once the partition's lock is
/// released (the call can wait while the device's queue is full).
struct Writeback {
    file: Arc<File>,
    from: u64,
}

impl Writeback {
    /// Starts writeback of the file from `from` to its end without waiting
    /// for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); durability still
    /// comes from the flush policy's fdatasync. Best effort: an error only
    /// means the kernel writes the pages back on its own schedule.
    fn start(self) {
        use std::os::fd::AsRawFd;
        let Ok(offset) = libc::off64_t::try_from(self.from) else {
            return;
        };
        // SAFETY: a valid descriptor for the call's duration; no memory is passed.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

/// Writes `parts` back to back at `position`, with as few `pwritev` calls
/// as the kernel allows.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], position: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Linux's IOV_MAX.
    const MAX_IOVECS: usize = 1024;
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    let mut at = position;
    while first < parts.len() {
        let iovecs: Vec<libc::iovec> = parts[first..]
            .iter()
            .take(MAX_IOVECS)
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts`, which
        // pwritev only reads.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
                at as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut written = n as usize;
        at += written as u64;
        while written > 0 {
            let part = parts[first];
            if written >= part.len() {
                written -= part.len();
                first += 1;
            } else {
                parts[first] = &part[written..];
                written = 0;
            }
        }
    }
    Ok(())
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a produced batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped on LogAppendTime batches, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub record_count: i64,
    pub bytes: usize,
    /// An idempotent producer's retry: already in the log at these offsets.
    pub duplicate: bool,
}

/// Stored batches as read, and the offsets a fetch answer reports.
#[derive(Debug, Clone, Default)]
pub struct ReadInfo {
    pub records: Bytes,
    /// Instead of `records`, where they lie in the segment file
    /// ([`PartitionLog::read_region`] only).
    pub region: Option<FileRegion>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Whole batches as they lie in a segment file. The file stays readable
/// while this lives, even if retention deletes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    /// The segment's base offset (for error messages).
    pub segment: i64,
    pub position: u64,
    pub len: usize,
    /// Offsets the batches span: their record count, outside compaction.
    pub offset_count: i64,
}

impl FileRegion {
    /// The bytes, read into a fresh buffer.
    pub fn read(&self) -> io::Result<Bytes> {
        read_exact_at(&self.file, self.len, self.position)
    }
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// Consumers see only what is committed.
    HighWatermark,
    /// Followers (next issue) read everything.
    LogEnd,
}

struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written.
    size: u64,
    /// When the segment started, for `segment.ms`.
    created_ms: i64,
    /// The partition's running max timestamp at the segment's end (retention).
    max_timestamp: i64,
}

struct LogState {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    recovery_point: i64,
    running_max_timestamp: i64,
    /// Base offset of the batch that holds `running_max_timestamp`.
    max_timestamp_batch: i64,
    unflushed_messages: u64,
    oldest_unflushed: Option<Instant>,
    /// Segments rolled but not yet synced: (the finished segment's base
    /// offset and file, the base offset of the segment after it). Synced by
    /// [`PartitionLog::sync_rolled`] off the append path.
    rolled: Vec<(i64, Arc<File>, i64)>,
    deleted: bool,
    /// The leader-epoch cache: (epoch, first offset written in it), epochs rising.
    epochs: Vec<(i32, i64)>,
    producers: ProducerStates,
}

impl LogState {
    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
            high_watermark: self.high_watermark,
        }
    }
}

pub struct PartitionLog {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    dir: PathBuf,
    pk: PartitionKey,
    index: Arc<Index>,
    config: RwLock<LogConfig>,
    state: Mutex<LogState>,
    /// The high watermark, for fetches waiting for more data.
    high_watermark_tx: watch::Sender<i64>,
    /// The log end offset, for followers' fetches waiting for more data.
    log_end_tx: watch::Sender<i64>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Checks produced batches against the producers' state. All duplicates:
/// their original offsets (nothing is written). Some: the request mixes a
/// retry with new data, which no Kafka client sends.
fn check_sequences(
    producers: &ProducerStates,
    headers: &[BatchHeader],
) -> Result<Option<AppendInfo>, LogError> {
    let mut duplicates = Vec::new();
    for h in headers {
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = producers.check(h)?
        {
            duplicates.push((base_offset, last_offset, h.record_count));
        }
    }
    if duplicates.is_empty() {
        return Ok(None);
    }
    if duplicates.len() != headers.len() {
        return Err(SequenceError::OutOfOrder(
            "a request mixes retried and new batches of one producer".into(),
        )
        .into());
    }
    let base_offset = duplicates.iter().map(|d| d.0).min().unwrap_or(-1);
    let last_offset = duplicates.iter().map(|d| d.1).max().unwrap_or(-1);
    metrics::counter!("fjord_produce_duplicates_total").increment(duplicates.len() as u64);
    Ok(Some(AppendInfo {
        base_offset,
        last_offset,
        log_append_time: -1,
        log_start_offset: -1,
        record_count: duplicates.iter().map(|d| i64::from(d.2)).sum(),
        bytes: 0,
        duplicate: true,
    }))
}

/// Kafka's `LeaderEpochFileCache.endOffsetFor` over `epochs` (rising).
pub fn end_offset_for(epochs: &[(i32, i64)], requested: i32, log_end_offset: i64) -> (i32, i64) {
    if requested < 0 {
        return (-1, -1);
    }
    match epochs.last() {
        Some((latest, _)) if *latest == requested => return (requested, log_end_offset),
        None => return (-1, -1),
        _ => {}
    }
    let Some(higher) = epochs.iter().find(|(e, _)| *e > requested) else {
        // Newer than anything here.
        return (-1, -1);
    };
    match epochs.iter().rev().find(|(e, _)| *e <= requested) {
        Some((floor, _)) => (*floor, higher.1),
        None => (requested, higher.1),
    }
}

fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

fn open_segment_file(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))
}

/// Writes `partition.metadata` (Kafka's format) naming the topic id.
pub fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> Result<(), LogError> {
    let path = dir.join(PARTITION_METADATA);
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    let topic = kafka_uuid(topic_id);
    fs::write(&tmp, format!("version: 0\ntopic_id: {topic}\n")).map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))
}

/// Reads the topic id from `partition.metadata`, if the file is there and sane.
pub fn read_partition_metadata(dir: &Path) -> Option<Uuid> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id:"))?
        .trim();
    parse_kafka_uuid(id)
}

/// Kafka prints topic ids as url-safe base64 without padding.
pub fn kafka_uuid(id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn parse_kafka_uuid(s: &str) -> Option<Uuid> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    Uuid::from_slice(&bytes).ok()
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it from its last
    /// checkpoint: see the module docs.
    pub fn open(
        dir: PathBuf,
        topic: String,
        topic_id: Uuid,
        partition: i32,
        index: Arc<Index>,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        if read_partition_metadata(&dir) != Some(topic_id) {
            write_partition_metadata(&dir, topic_id)?;
        }
        let pk = PartitionKey::new(topic_id, partition);
        let checkpoint = index.checkpoint(&pk)?.unwrap_or_default();
        let mut state = recover(&dir, &pk, &index, checkpoint)?;
        state.high_watermark = checkpoint
            .high_watermark
            .clamp(state.log_start_offset, state.log_end_offset);
        // Epochs that start past the end name data that is gone.
        let leo = state.log_end_offset;
        state.epochs = index.epochs(&pk)?;
        if let Some(first_gone) = state.epochs.iter().find(|(_, start)| *start > leo) {
            let mut write = IndexWrite::default();
            write.delete_epochs_from(&pk, first_gone.0);
            index.write(write)?;
            state.epochs.retain(|(_, start)| *start <= leo);
        }
        let (high_watermark_tx, _) = watch::channel(state.high_watermark);
        let (log_end_tx, _) = watch::channel(state.log_end_offset);
        let log = PartitionLog {
            topic,
            topic_id,
            partition,
            dir,
            pk,
            index,
            config: RwLock::new(config),
            state: Mutex::new(state),
            high_watermark_tx,
            log_end_tx,
        };
        {
            let mut st = log.lock();
            st.producers = log.rebuild_producer_states(&st)?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn set_config(&self, config: LogConfig) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves offsets consistent (they
        // move only after the write and the index succeed), so go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    /// Size of all segments in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Woken whenever the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark_tx.subscribe()
    }

    /// Woken whenever the log end moves (followers wait on it).
    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.log_end_tx.subscribe()
    }

    /// Moves the high watermark (never past the log end, never back).
    pub fn set_high_watermark(&self, high_watermark: i64) {
        let mut st = self.lock();
        let hw = high_watermark.min(st.log_end_offset);
        if hw > st.high_watermark {
            st.high_watermark = hw;
            drop(st);
            self.high_watermark_tx.send_replace(hw);
        }
    }

    /// Validates a produced `records` field and appends it as the leader:
    /// each batch gets the next offsets and `leader_epoch`, and on
    /// LogAppendTime topics the broker's time.
    pub fn append_as_leader(
        &self,
        records: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let records: Bytes = records.into();
        let config = self.config();
        let max = usize::try_from(config.max_message_bytes).unwrap_or(0);
        let headers = batch::validate_produced(&records, max)?;
        let now = now_ms();
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;

        let mut st = self.lock();
        if st.deleted {
            return Err(LogError::Deleted);
        }
        if let Some(duplicate) = check_sequences(&st.producers, &headers)? {
            return Ok(AppendInfo {
                log_start_offset: st.log_start_offset,
                ..duplicate
            });
        }
        self.maybe_roll(&mut st, &config, records.len() as u64, now)?;
        let base_offset = st.log_end_offset;
        self.assign_epoch(&mut st, leader_epoch, base_offset)?;
        let mut offset = base_offset;
        let mut pos = 0;
        let mut record_count = 0;
        let segment_base;
        let start_position;
        {
            let active = st.active();
            segment_base = active.base_offset;
            start_position = active.size;
        }
        let mut entries = Vec::with_capacity(headers.len());
        // Only the headers change (offset, epoch, LogAppendTime and the CRC
        // that covers it); the records are written from the request's own
        // buffer, never copied.
        let mut patched = Vec::with_capacity(headers.len());
        for header in &headers {
            let size = header.size();
            let mut head = [0u8; HEADER_BYTES];
            head.copy_from_slice(&records[pos..pos + HEADER_BYTES]);
            batch::assign_offset_and_epoch(&mut head, offset, leader_epoch);
            let body = &records[pos + HEADER_BYTES..pos + size];
            let max_timestamp = if log_append_time {
                batch::stamp_log_append_time_in_header(&mut head, body, now);
                now
            } else {
                header.max_timestamp
            };
            patched.push(head);
            entries.push(BatchEntry {
                base_offset: offset,
                last_offset: offset + header.offset_count() - 1,
                segment: segment_base,
                position: start_position + pos as u64,
                size: size as u32,
                max_timestamp,
                running_max_timestamp: 0,
            });
            offset += header.offset_count();
            record_count += i64::from(header.record_count);
            pos += size;
        }
        let mut parts = Vec::with_capacity(2 * headers.len());
        let mut pos = 0;
        for (header, head) in headers.iter().zip(&patched) {
            parts.push(&head[..]);
            parts.push(&records[pos + HEADER_BYTES..pos + header.size()]);
            pos += header.size();
        }
        let writeback = self.write_batches(&mut st, &parts, &mut entries)?;
        for (header, entry) in headers.iter().zip(&entries) {
            st.producers.record(header, entry.base_offset);
        }
        let log_start_offset = self.finish_append(st, record_count, &config, writeback)?;
        Ok(AppendInfo {
            duplicate: false,
            base_offset,
            last_offset: offset - 1,
            log_append_time: if log_append_time { now } else { -1 },
            log_start_offset,
            record_count,
            bytes: records.len(),
        })
    }

    /// Writes already-offset batches to the active segment and indexes them.
    fn write_batches(
        &self,
        st: &mut LogState,
        records: &[&[u8]],
        entries: &mut [BatchEntry],
    ) -> Result<Option<Writeback>, LogError> {
        let len: usize = records.iter().map(|r| r.len()).sum();
        let mut write = IndexWrite::default();
        let mut running = st.running_max_timestamp;
        let mut running_batch = st.max_timestamp_batch;
        for entry in entries.iter_mut() {
            if entry.max_timestamp > running {
                running = entry.max_timestamp;
                running_batch = entry.base_offset;
                write.put_time(&self.pk, running, entry.base_offset);
            }
            entry.running_max_timestamp = running;
            write.put_batch(&self.pk, entry);
        }
        let active = st.active();
        let position = active.size;
        if let Err(source) = write_all_vectored_at(&active.file, records, position) {
            // Leave no partial batch behind for a later append to follow.
            let _ = active.file.set_len(position);
            return Err(LogError::Io {
                path: active.path.clone(),
                source,
            });
        }
        if let Err(e) = self.index.write(write) {
            let _ = active.file.set_len(position);
            return Err(e.into());
        }
        active.size += len as u64;
        active.max_timestamp = running;
        // Everything below the previous multiple went with the last call.
        let writeback =
            (position / WRITEBACK_BYTES != active.size / WRITEBACK_BYTES).then(|| Writeback {
                file: active.file.clone(),
                from: position / WRITEBACK_BYTES * WRITEBACK_BYTES,
            });
        if let Some(last) = entries.last() {
            st.log_end_offset = last.last_offset + 1;
        }
        st.running_max_timestamp = running;
        st.max_timestamp_batch = running_batch;
        self.log_end_tx.send_replace(st.log_end_offset);
        Ok(writeback)
    }

    /// The end of an append, leader's or follower's: counts its records
    /// toward the flush policy (syncing if that is due), then releases the
    /// lock and starts the writeback the write asked for. Returns the log
    /// start offset for the answer.
    fn finish_append(
        &self,
        mut st: MutexGuard<'_, LogState>,
        record_count: i64,
        config: &LogConfig,
        writeback: Option<Writeback>,
    ) -> Result<i64, LogError> {
        st.unflushed_messages = st.unflushed_messages.saturating_add(record_count as u64);
        st.oldest_unflushed.get_or_insert_with(Instant::now);
        if st.unflushed_messages >= config.flush_messages {
            self.flush_locked(&mut st)?;
        }
        let log_start_offset = st.log_start_offset;
        drop(st);
        if let Some(w) = writeback {
            w.start();
        }
        Ok(log_start_offset)
    }

    /// Starts a new segment when the active one is full or old enough.
    fn maybe_roll(
        &self,
        st: &mut LogState,
        config: &LogConfig,
        incoming: u64,
        now: i64,
    ) -> Result<(), LogError> {
        let leo = st.log_end_offset;
        let active = st.active();
        let full = active.size > 0 && active.size + incoming > config.segment_bytes;
        let old = active.size > 0 && now - active.created_ms >= config.segment_ms as i64;
        if !(full || old) || active.base_offset == leo {
            return Ok(());
        }
        // The finished segment goes to disk soon, so that recovery never has
        // to read it again; not here, under the partition's lock, where the
        // fsync of up to a segment of dirty pages would stall every append.
        let finished = (active.base_offset, active.file.clone(), leo);
        let max_timestamp = active.max_timestamp;
        let path = segment_path(&self.dir, leo);
        let file = open_segment_file(&path)?;
        st.rolled.push(finished);
        st.segments.insert(
            leo,
            Segment {
                base_offset: leo,
                path,
                file: Arc::new(file),
                size: 0,
                created_ms: now,
                max_timestamp,
            },
        );
        metrics::counter!("fjord_log_segments_rolled_total").increment(1);
        Ok(())
    }

    /// Appends batches fetched from the leader, offsets and epochs as they
    /// are. The first must start at this log's end.
    pub fn append_as_follower(&self, records: &[u8]) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let mut headers = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let header = batch::check_batch(&records[pos..])?;
            pos += header.size();
            headers.push(header);
        }
        let mut st = self.lock();
        if st.deleted {
            return Err(LogError::Deleted);
        }
        let Some(first) = headers.first() else {
            return Ok(AppendInfo {
                duplicate: false,
                base_offset: st.log_end_offset,
                last_offset: st.log_end_offset - 1,
                log_append_time: -1,
                log_start_offset: st.log_start_offset,
                record_count: 0,
                bytes: 0,
            });
        };
        if first.base_offset != st.log_end_offset {
            return Err(LogError::Corrupt(format!(
                "fetched batch at offset {} does not follow the log end {}",
                first.base_offset, st.log_end_offset
            )));
        }
        self.maybe_roll(&mut st, &config, records.len() as u64, now_ms())?;
        let (segment_base, start_position) = {
            let active = st.active();
            (active.base_offset, active.size)
        };
        let mut entries = Vec::with_capacity(headers.len());
        let mut pos = 0u64;
        let mut record_count = 0i64;
        let mut expected = first.base_offset;
        for header in &headers {
            if header.base_offset != expected {
                return Err(LogError::Corrupt(format!(
                    "fetched batch at offset {} where {expected} was expected",
                    header.base_offset
                )));
            }
            self.assign_epoch(&mut st, header.partition_leader_epoch, header.base_offset)?;
            entries.push(BatchEntry {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                segment: segment_base,
                position: start_position + pos,
                size: header.size() as u32,
                max_timestamp: header.max_timestamp,
                running_max_timestamp: 0,
            });
            expected = header.last_offset() + 1;
            record_count += i64::from(header.record_count);
            pos += header.size() as u64;
        }
        let writeback = self.write_batches(&mut st, &[records], &mut entries)?;
        for header in &headers {
            st.producers.record(header, header.base_offset);
        }
        let log_start_offset = self.finish_append(st, record_count, &config, writeback)?;
        Ok(AppendInfo {
            duplicate: false,
            base_offset: first.base_offset,
            last_offset: expected - 1,
            log_append_time: -1,
            log_start_offset,
            record_count,
            bytes: records.len(),
        })
    }

    /// Idempotent producers' state from the batch headers in the log (one
    /// header read per batch, from the log start).
    fn rebuild_producer_states(&self, st: &LogState) -> Result<ProducerStates, LogError> {
        let mut states = ProducerStates::default();
        let mut entries = Vec::new();
        self.index
            .batches_from(&self.pk, st.log_start_offset, |e| {
                entries.push(*e);
                true
            })?;
        let mut header = [0u8; HEADER_BYTES];
        for e in entries {
            let Some(segment) = st.segments.get(&e.segment) else {
                continue;
            };
            if segment.file.read_exact_at(&mut header, e.position).is_err() {
                continue;
            }
            if let Ok(h) = BatchHeader::parse(&header) {
                states.record(&h, h.base_offset);
            }
        }
        Ok(states)
    }

    /// Starts leader epoch `epoch` at `start_offset` if it is newer than the
    /// latest cached one.
    fn assign_epoch(
        &self,
        st: &mut LogState,
        epoch: i32,
        start_offset: i64,
    ) -> Result<(), LogError> {
        if epoch < 0 || st.epochs.last().is_some_and(|(e, _)| *e >= epoch) {
            return Ok(());
        }
        let mut write = IndexWrite::default();
        write.put_epoch(&self.pk, epoch, start_offset);
        self.index.write(write)?;
        st.epochs.push((epoch, start_offset));
        Ok(())
    }

    /// A new leader starts its epoch at its log end (Kafka's `makeLeader`),
    /// so divergence checks know where the previous epoch ended.
    pub fn start_leader_epoch(&self, epoch: i32) -> Result<(), LogError> {
        let mut st = self.lock();
        let leo = st.log_end_offset;
        self.assign_epoch(&mut st, epoch, leo)
    }

    /// The latest leader epoch in the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.lock().epochs.last().map(|(e, _)| *e)
    }

    /// Kafka's `endOffsetFor` (KIP-279): the largest epoch at or below
    /// `epoch`, and the offset where it ended (the log end for the latest);
    /// `(-1, -1)` when the log knows no such epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let st = self.lock();
        end_offset_for(&st.epochs, epoch, st.log_end_offset)
    }

    /// Removes everything at and after `offset` (a follower whose log
    /// diverged from its leader's). The high watermark follows it down.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.lock();
        if st.deleted {
            return Ok(());
        }
        if offset >= st.log_end_offset {
            // Nothing to cut, but an epoch this replica started as leader
            // without writing to it must go (Kafka's `truncateTo` does the
            // same): followers send their latest epoch, and a leader that
            // never had it would answer with a divergence forever.
            let leo = st.log_end_offset;
            if let Some((first_gone, _)) = st.epochs.iter().find(|(_, start)| *start >= leo) {
                let mut write = IndexWrite::default();
                write.delete_epochs_from(&self.pk, *first_gone);
                self.index.write(write)?;
                st.epochs.retain(|(_, start)| *start < leo);
            }
            return Ok(());
        }
        let offset = offset.max(st.log_start_offset);
        // Cut at the start of the batch holding `offset`.
        let entry = self.index.batch_at_or_after(&self.pk, offset)?;
        let (cut_segment, cut_position, new_end) = match entry {
            Some(e) => (e.segment, e.position, e.base_offset),
            None => return Ok(()),
        };
        let doomed: Vec<i64> = st
            .segments
            .keys()
            .copied()
            .filter(|base| *base > cut_segment)
            .collect();
        for base in doomed {
            if let Some(segment) = st.segments.remove(&base) {
                fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            }
        }
        let running = self
            .index
            .batch_before(&self.pk, new_end)?
            .map_or(i64::MIN, |e| e.running_max_timestamp);
        let mut write = IndexWrite::default();
        write.delete_offsets(&self.pk, new_end, i64::MAX);
        write.delete_times_from(&self.pk, running.saturating_add(1));
        if let Some((first_gone, _)) = st.epochs.iter().find(|(_, start)| *start >= new_end) {
            write.delete_epochs_from(&self.pk, *first_gone);
        }
        self.index.write(write)?;
        st.epochs.retain(|(_, start)| *start < new_end);
        if let Some(segment) = st.segments.get_mut(&cut_segment) {
            segment
                .file
                .set_len(cut_position)
                .map_err(io_error(&segment.path))?;
            segment.size = cut_position;
            segment.max_timestamp = running;
        }
        st.log_end_offset = new_end;
        st.high_watermark = st.high_watermark.min(new_end);
        st.recovery_point = st.recovery_point.min(new_end);
        st.running_max_timestamp = running;
        st.max_timestamp_batch = if running > i64::MIN {
            self.index
                .time_at_or_after(&self.pk, running)?
                .map_or(-1, |(_, offset)| offset)
        } else {
            -1
        };
        self.write_checkpoint(&st)?;
        st.producers = self.rebuild_producer_states(&st)?;
        metrics::counter!("fjord_log_truncations_total").increment(1);
        tracing::info!(topic = %self.topic, partition = self.partition, offset = new_end, "log truncated");
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (a follower that fell
    /// behind its leader's log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.lock();
        if st.deleted {
            return Err(LogError::Deleted);
        }
        for segment in std::mem::take(&mut st.segments).into_values() {
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        let mut write = IndexWrite::default();
        write.delete_partition(&self.pk);
        self.index.write(write)?;
        let path = segment_path(&self.dir, offset);
        let file = open_segment_file(&path)?;
        st.segments.insert(
            offset,
            Segment {
                base_offset: offset,
                path,
                file: Arc::new(file),
                size: 0,
                created_ms: now_ms(),
                max_timestamp: i64::MIN,
            },
        );
        st.log_start_offset = offset;
        st.log_end_offset = offset;
        st.high_watermark = offset;
        st.recovery_point = offset;
        st.running_max_timestamp = i64::MIN;
        st.max_timestamp_batch = -1;
        st.epochs.clear();
        st.producers.clear();
        self.write_checkpoint(&st)?;
        self.log_end_tx.send_replace(offset);
        tracing::info!(topic = %self.topic, partition = self.partition, offset, "log emptied to restart at the leader's log start");
        Ok(())
    }

    /// Reads whole batches from `offset` on: at most `max_bytes` unless the
    /// first batch alone is larger and `min_one` is set (KIP-74), and never
    /// past one segment or the limit.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
        min_one: bool,
    ) -> Result<ReadInfo, LogError> {
        let mut info = self.read_region(offset, max_bytes, limit, min_one)?;
        if let Some(region) = info.region.take() {
            info.records = region
                .read()
                .map_err(io_error(&segment_path(&self.dir, region.segment)))?;
        }
        Ok(info)
    }

    /// [`read`](Self::read) without reading: `region` says where the
    /// batches lie in their segment file (`None` when there are none), for
    /// a caller that sends them from the file itself. `records` is empty.
    pub fn read_region(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
        min_one: bool,
    ) -> Result<ReadInfo, LogError> {
        let (log_start_offset, log_end_offset, high_watermark) = {
            let st = self.lock();
            if st.deleted {
                return Err(LogError::Deleted);
            }
            (st.log_start_offset, st.log_end_offset, st.high_watermark)
        };
        let mut info = ReadInfo {
            records: Bytes::new(),
            region: None,
            high_watermark,
            log_start_offset,
            log_end_offset,
        };
        if offset < log_start_offset || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let upper = match limit {
            ReadLimit::HighWatermark => high_watermark,
            ReadLimit::LogEnd => log_end_offset,
        };
        let mut first: Option<BatchEntry> = None;
        let mut end_position = 0;
        let mut last_offset = 0;
        self.index.batches_from(&self.pk, offset, |e| {
            if e.last_offset >= upper {
                return false;
            }
            match first {
                None => {
                    if e.size as usize > max_bytes && !min_one {
                        return false;
                    }
                    first = Some(*e);
                    end_position = e.end_position();
                    last_offset = e.last_offset;
                    true
                }
                Some(f) => {
                    let total = e.end_position().saturating_sub(f.position) as usize;
                    if e.segment != f.segment || e.position != end_position || total > max_bytes {
                        return false;
                    }
                    end_position = e.end_position();
                    last_offset = e.last_offset;
                    true
                }
            }
        })?;
        let Some(first) = first else {
            return Ok(info);
        };
        let file = {
            let st = self.lock();
            match st.segments.get(&first.segment) {
                Some(s) => s.file.clone(),
                // Retention removed it after the lookup: the offset is gone.
                None => {
                    return Err(LogError::OffsetOutOfRange {
                        offset,
                        log_start_offset: st.log_start_offset,
                        log_end_offset: st.log_end_offset,
                    })
                }
            }
        };
        info.region = Some(FileRegion {
            file,
            segment: first.segment,
            position: first.position,
            len: (end_position - first.position) as usize,
            offset_count: last_offset - first.base_offset + 1,
        });
        Ok(info)
    }

    /// The stored batch holding `offset`, if any.
    fn read_batch(&self, offset: i64) -> Result<Option<Bytes>, LogError> {
        let info = self.read(offset, 1, ReadLimit::LogEnd, true);
        match info {
            Ok(info) if !info.records.is_empty() => Ok(Some(info.records)),
            Ok(_) | Err(LogError::OffsetOutOfRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Kafka's ListOffsets by timestamp: the first offset whose record
    /// timestamp is at or after `timestamp`, with that timestamp. Only
    /// committed records (below the high watermark) count.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (start, hw) = {
            let st = self.lock();
            (st.log_start_offset, st.high_watermark)
        };
        let Some((_, batch_offset)) = self.index.time_at_or_after(&self.pk, timestamp)? else {
            return Ok(None);
        };
        let from = batch_offset.max(start);
        let mut found = None;
        // Batches before the one named never reach `timestamp` (the time
        // index only grows), so the answer is in it or, when the log start
        // cut into it, in a later batch.
        let mut at = from;
        while found.is_none() && at < hw {
            let Some(bytes) = self.read_batch(at)? else {
                break;
            };
            let mut buf = bytes;
            let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| LogError::Corrupt(format!("batch at offset {at}: {e}")))?;
            let mut next = at + 1;
            for record in &decoded.records {
                next = next.max(record.offset + 1);
                if record.offset >= from && record.offset < hw && record.timestamp >= timestamp {
                    found = Some((record.offset, record.timestamp));
                    break;
                }
            }
            at = next;
        }
        Ok(found)
    }

    /// ListOffsets MAX_TIMESTAMP (KIP-734): the offset of the record with
    /// the largest timestamp, with it.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let (batch_offset, max_timestamp, hw) = {
            let st = self.lock();
            (
                st.max_timestamp_batch,
                st.running_max_timestamp,
                st.high_watermark,
            )
        };
        if batch_offset < 0 || batch_offset >= hw {
            return Ok(None);
        }
        let Some(mut bytes) = self.read_batch(batch_offset)? else {
            return Ok(None);
        };
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
            .map_err(|e| LogError::Corrupt(format!("batch at offset {batch_offset}: {e}")))?;
        Ok(decoded
            .records
            .iter()
            .find(|r| r.timestamp == max_timestamp)
            .map(|r| (r.offset, r.timestamp)))
    }

    /// Kafka's DeleteRecords: records below `offset` are no longer served.
    /// Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut st = self.lock();
        if st.deleted {
            return Err(LogError::Deleted);
        }
        if offset > st.high_watermark || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.high_watermark,
            });
        }
        if offset > st.log_start_offset {
            st.log_start_offset = offset;
            self.delete_segments_below(&mut st, |_, next_base, _| next_base <= offset)?;
            self.write_checkpoint(&st)?;
        }
        Ok(st.log_start_offset)
    }

    /// Deletes old segments by `retention.ms` and `retention.bytes`; returns
    /// how many went.
    pub fn apply_retention(&self, now: i64) -> Result<usize, LogError> {
        let config = self.config();
        if !config.delete_retention {
            return Ok(0);
        }
        let mut st = self.lock();
        if st.deleted {
            return Ok(0);
        }
        let mut excess = if config.retention_bytes >= 0 {
            st.segments.values().map(|s| s.size as i64).sum::<i64>() - config.retention_bytes
        } else {
            0
        };
        let hw = st.high_watermark;
        let deleted = self.delete_segments_below(&mut st, |segment, next_base, _| {
            // Only what every consumer could have read goes.
            if next_base > hw {
                return false;
            }
            let by_time =
                config.retention_ms >= 0 && now - segment.max_timestamp > config.retention_ms;
            let by_size = excess > 0 && excess >= segment.size as i64;
            if by_size || by_time {
                excess -= segment.size as i64;
                return true;
            }
            false
        })?;
        if deleted > 0 {
            self.write_checkpoint(&st)?;
        }
        Ok(deleted)
    }

    /// Deletes segments from the oldest while `doomed(segment, next_base)`
    /// holds, never the active one, moving the log start past them.
    fn delete_segments_below(
        &self,
        st: &mut LogState,
        mut doomed: impl FnMut(&Segment, i64, i64) -> bool,
    ) -> Result<usize, LogError> {
        let mut deleted = 0;
        loop {
            let mut bases = st.segments.keys();
            let (Some(&base), Some(&next_base)) = (bases.next(), bases.next()) else {
                break;
            };
            let segment = &st.segments[&base];
            if !doomed(segment, next_base, base) {
                break;
            }
            let Some(segment) = st.segments.remove(&base) else {
                break;
            };
            let mut write = IndexWrite::default();
            write.delete_offsets(&self.pk, base, next_base);
            write.delete_times_through(&self.pk, i64::MIN, segment.max_timestamp);
            self.index.write(write)?;
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            st.log_start_offset = st.log_start_offset.max(next_base);
            st.recovery_point = st.recovery_point.max(next_base);
            deleted += 1;
            metrics::counter!("fjord_log_segments_deleted_total").increment(1);
        }
        Ok(deleted)
    }

    /// Flushes everything appended to disk and moves the recovery point.
    pub fn flush(&self) -> Result<(), LogError> {
        let mut st = self.lock();
        if st.deleted {
            return Ok(());
        }
        self.flush_locked(&mut st)
    }

    /// Syncs the segments rolled since the last call, without holding the
    /// partition's lock while the disk works, and moves the recovery point
    /// past them. A segment truncated or deleted meanwhile is skipped: the
    /// recovery point then waits for the next flush.
    pub fn sync_rolled(&self) -> Result<(), LogError> {
        let rolled = std::mem::take(&mut self.lock().rolled);
        let Some(&(_, _, last_end)) = rolled.last() else {
            return Ok(());
        };
        let start = Instant::now();
        for (base, file, _) in &rolled {
            file.sync_data()
                .map_err(io_error(&segment_path(&self.dir, *base)))?;
        }
        sync_dir(&self.dir)?;
        let mut st = self.lock();
        // Intact means: every finished segment is still the same file, and
        // the segment after the last one still starts where it did.
        let intact = rolled.iter().all(|(base, file, _)| {
            st.segments
                .get(base)
                .is_some_and(|s| Arc::ptr_eq(&s.file, file))
        }) && st.segments.contains_key(&last_end);
        if st.deleted || !intact || st.recovery_point >= last_end {
            return Ok(());
        }
        st.recovery_point = last_end;
        self.write_checkpoint(&st)?;
        metrics::histogram!("fjord_log_flush_seconds").record(start.elapsed().as_secs_f64());
        Ok(())
    }

    /// Flushes if data has waited longer than `flush.ms`.
    pub fn flush_if_due(&self) -> Result<(), LogError> {
        let Some(flush_ms) = self.config().flush_ms else {
            return Ok(());
        };
        let mut st = self.lock();
        let due = st
            .oldest_unflushed
            .is_some_and(|t| t.elapsed().as_millis() as u64 >= flush_ms);
        if due && !st.deleted {
            self.flush_locked(&mut st)?;
        }
        Ok(())
    }

    fn flush_locked(&self, st: &mut LogState) -> Result<(), LogError> {
        let start = Instant::now();
        let recovery_point = st.recovery_point;
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        for (i, segment) in st.segments.values().enumerate() {
            // Segments wholly below the recovery point were flushed already.
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            if segment.size > 0 && next_base > recovery_point {
                segment.file.sync_data().map_err(io_error(&segment.path))?;
            }
        }
        st.recovery_point = st.log_end_offset;
        st.unflushed_messages = 0;
        st.oldest_unflushed = None;
        st.rolled.clear();
        self.write_checkpoint(st)?;
        metrics::histogram!("fjord_log_flush_seconds").record(start.elapsed().as_secs_f64());
        Ok(())
    }

    /// Saves the log start, recovery point and high watermark.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let st = self.lock();
        if st.deleted {
            return Ok(());
        }
        self.write_checkpoint(&st)
    }

    fn write_checkpoint(&self, st: &LogState) -> Result<(), LogError> {
        let mut write = IndexWrite::default();
        write.put_checkpoint(&self.pk, &st.checkpoint());
        self.index.write(write)?;
        Ok(())
    }

    /// Removes the partition: its directory and its index entries. Appends
    /// and reads after this fail with [`LogError::Deleted`].
    pub fn delete(&self) -> Result<(), LogError> {
        let mut st = self.lock();
        st.deleted = true;
        st.segments.clear();
        let mut write = IndexWrite::default();
        write.delete_partition(&self.pk);
        self.index.write(write)?;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LogError::Io {
                path: self.dir.clone(),
                source,
            }),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Lists segment files by base offset.
fn list_segments(dir: &Path) -> Result<BTreeMap<i64, PathBuf>, LogError> {
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if let Ok(base) = stem.parse::<i64>() {
            segments.insert(base, entry.path());
        }
    }
    Ok(segments)
}

/// Rebuilds the in-memory state from the segment files and the index; see
/// the module docs.
fn recover(
    dir: &Path,
    pk: &PartitionKey,
    index: &Index,
    checkpoint: Checkpoint,
) -> Result<LogState, LogError> {
    let files = list_segments(dir)?;
    let now = now_ms();
    let mut state = LogState {
        segments: BTreeMap::new(),
        log_start_offset: checkpoint.log_start_offset.max(0),
        log_end_offset: 0,
        high_watermark: 0,
        recovery_point: checkpoint.recovery_point,
        running_max_timestamp: i64::MIN,
        max_timestamp_batch: -1,
        unflushed_messages: 0,
        oldest_unflushed: None,
        rolled: Vec::new(),
        deleted: false,
        epochs: Vec::new(),
        producers: ProducerStates::default(),
    };
    if files.is_empty() {
        let base = state.log_start_offset;
        let path = segment_path(dir, base);
        let file = open_segment_file(&path)?;
        state.segments.insert(
            base,
            Segment {
                base_offset: base,
                path,
                file: Arc::new(file),
                size: 0,
                created_ms: now,
                max_timestamp: i64::MIN,
            },
        );
        state.log_end_offset = base;
        state.recovery_point = base;
        let mut write = IndexWrite::default();
        write.delete_partition(pk);
        write.put_checkpoint(pk, &state.checkpoint());
        index.write(write)?;
        return Ok(state);
    }
    let bases: Vec<i64> = files.keys().copied().collect();
    // The segment holding the recovery point, and everything after it, is
    // scanned; earlier ones are trusted if their index entries reach their
    // end.
    let scan_from = bases
        .iter()
        .rev()
        .find(|b| **b <= checkpoint.recovery_point)
        .copied()
        .unwrap_or(bases[0]);
    let mut scanning = false;
    let mut next_offset = bases[0];
    for (i, base) in bases.iter().copied().enumerate() {
        let path = files[&base].clone();
        let file = open_segment_file(&path)?;
        let size = file.metadata().map_err(io_error(&path))?.len();
        let next_base = bases.get(i + 1).copied();
        if !scanning && base < scan_from {
            let last = index.batch_before(pk, next_base.unwrap_or(i64::MAX))?;
            let trusted = last.filter(|e| e.segment == base && e.end_position() == size);
            if let Some(last) = trusted {
                let first = index.batch_at_or_after(pk, base)?;
                state.segments.insert(
                    base,
                    Segment {
                        base_offset: base,
                        path,
                        file: Arc::new(file),
                        size,
                        created_ms: first.map_or(now, |f| f.max_timestamp.min(now)),
                        max_timestamp: last.running_max_timestamp,
                    },
                );
                next_offset = last.last_offset + 1;
                state.running_max_timestamp = last.running_max_timestamp;
                continue;
            }
            tracing::warn!(segment = %path.display(), "index entries missing; rebuilding from the segment");
        }
        // In the segment holding the recovery point, the batches up to it
        // were synced and indexed: the scan resumes after the last of them
        // (after a clean shutdown that is the end of the file, and nothing
        // is read). Without that entry the whole segment is scanned.
        let resume = if scanning {
            None
        } else {
            index
                .batch_before(pk, checkpoint.recovery_point)?
                .filter(|e| {
                    e.segment == base
                        && e.last_offset + 1 == checkpoint.recovery_point
                        && e.end_position() <= size
                })
        };
        scanning = true;
        // Entries from here on are rewritten from the file.
        let running_before = match resume {
            Some(e) => e.running_max_timestamp,
            None => index
                .batch_before(pk, base)?
                .map_or(i64::MIN, |e| e.running_max_timestamp),
        };
        let rewrite_from = resume.map_or(base, |e| e.last_offset + 1);
        clear_index_from(index, pk, rewrite_from, running_before)?;
        state.running_max_timestamp = running_before;
        let scan = scan_segment(&path, &file, base, pk, index, running_before, resume)?;
        if scan.valid_bytes < size {
            tracing::warn!(
                segment = %path.display(),
                kept = scan.valid_bytes,
                dropped = size - scan.valid_bytes,
                reason = %scan.stop_reason,
                "truncating a torn or corrupt tail"
            );
            file.set_len(scan.valid_bytes).map_err(io_error(&path))?;
            metrics::counter!("fjord_log_recovery_truncations_total").increment(1);
        }
        let first_ts = scan.first_timestamp;
        state.running_max_timestamp = scan.running_max_timestamp;
        if scan.max_timestamp_batch >= 0 {
            state.max_timestamp_batch = scan.max_timestamp_batch;
        }
        state.segments.insert(
            base,
            Segment {
                base_offset: base,
                path,
                file: Arc::new(file),
                size: scan.valid_bytes,
                created_ms: first_ts.map_or(now, |t| t.min(now)),
                max_timestamp: scan.running_max_timestamp,
            },
        );
        next_offset = scan.next_offset.max(base);
        let torn = scan.valid_bytes < size;
        if torn {
            // Nothing after a torn batch can be trusted to follow on.
            for later in bases.iter().skip(i + 1) {
                let p = &files[later];
                tracing::warn!(segment = %p.display(), "removing a segment after a torn tail");
                fs::remove_file(p).map_err(io_error(p))?;
            }
            break;
        }
    }
    // Only index entries and times of batches that exist remain.
    clear_index_from(index, pk, next_offset, state.running_max_timestamp)?;
    if state.max_timestamp_batch < 0 && state.running_max_timestamp > i64::MIN {
        state.max_timestamp_batch = index
            .time_at_or_after(pk, state.running_max_timestamp)?
            .map_or(-1, |(_, offset)| offset);
    }
    state.log_end_offset = next_offset;
    let first_base = state.segments.keys().next().copied().unwrap_or(0);
    state.log_start_offset = state.log_start_offset.max(first_base).min(next_offset);
    // What was just read back and indexed is made durable, so the next
    // start-up does not read it again.
    for segment in state.segments.values() {
        if segment.base_offset >= scan_from {
            segment.file.sync_data().map_err(io_error(&segment.path))?;
        }
    }
    state.recovery_point = next_offset;
    let mut write = IndexWrite::default();
    write.put_checkpoint(pk, &state.checkpoint());
    index.write(write)?;
    Ok(state)
}

/// Deletes the index entries of batches from offset `from` on and the time
/// entries above `running_max_timestamp`, where there are any: a range
/// deletion each partition writes on every start-up would otherwise pile up
/// as tombstones that every later index seek has to step over.
fn clear_index_from(
    index: &Index,
    pk: &PartitionKey,
    from: i64,
    running_max_timestamp: i64,
) -> Result<(), LogError> {
    let above = running_max_timestamp.saturating_add(1);
    let mut write = IndexWrite::default();
    if index.batch_at_or_after(pk, from)?.is_some() {
        write.delete_offsets(pk, from, i64::MAX);
    }
    if index.time_at_or_after(pk, above)?.is_some() {
        write.delete_times_from(pk, above);
    }
    if !write.is_empty() {
        index.write(write)?;
    }
    Ok(())
}

struct Scan {
    valid_bytes: u64,
    next_offset: i64,
    running_max_timestamp: i64,
    max_timestamp_batch: i64,
    first_timestamp: Option<i64>,
    stop_reason: String,
}

/// Reads a segment batch by batch, checking each CRC and that offsets
/// follow on, and indexes what is valid. Stops at the first bad batch.
/// With `resume`, the segment is trusted up to the end of that batch and
/// read from there.
fn scan_segment(
    path: &Path,
    file: &File,
    base: i64,
    pk: &PartitionKey,
    index: &Index,
    running_before: i64,
    resume: Option<BatchEntry>,
) -> Result<Scan, LogError> {
    let mut reader = BufReader::with_capacity(1 << 20, file.try_clone().map_err(io_error(path))?);
    let mut scan = Scan {
        valid_bytes: 0,
        next_offset: base,
        running_max_timestamp: running_before,
        max_timestamp_batch: -1,
        first_timestamp: None,
        stop_reason: String::new(),
    };
    if let Some(last) = resume {
        use std::io::Seek;
        reader
            .seek(io::SeekFrom::Start(last.end_position()))
            .map_err(io_error(path))?;
        scan.valid_bytes = last.end_position();
        scan.next_offset = last.last_offset + 1;
        scan.first_timestamp = index
            .batch_at_or_after(pk, base)?
            .filter(|e| e.segment == base)
            .map(|e| e.max_timestamp);
    }
    let mut write = IndexWrite::default();
    let mut pending = 0;
    let mut buf = Vec::new();
    loop {
        let mut head = [0u8; LOG_OVERHEAD];
        match read_full(&mut reader, &mut head).map_err(io_error(path))? {
            0 => break,
            n if n < LOG_OVERHEAD => {
                scan.stop_reason = format!("{n} bytes of a batch header");
                break;
            }
            _ => {}
        }
        let length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let size = LOG_OVERHEAD as i64 + i64::from(length);
        if length < (HEADER_BYTES - LOG_OVERHEAD) as i32 || size as usize > MAX_STORED_BATCH {
            scan.stop_reason = format!("impossible batch length {length}");
            break;
        }
        buf.clear();
        buf.extend_from_slice(&head);
        buf.resize(size as usize, 0);
        let got = read_full(&mut reader, &mut buf[LOG_OVERHEAD..]).map_err(io_error(path))?;
        if got < length as usize {
            scan.stop_reason = format!("batch of {size} bytes cut at {}", LOG_OVERHEAD + got);
            break;
        }
        let header: BatchHeader = match batch::check_batch(&buf) {
            Ok(h) => h,
            Err(e) => {
                scan.stop_reason = e.to_string();
                break;
            }
        };
        if header.base_offset != scan.next_offset {
            scan.stop_reason = format!(
                "batch at offset {} where {} was expected",
                header.base_offset, scan.next_offset
            );
            break;
        }
        let max_timestamp = header.max_timestamp;
        scan.first_timestamp.get_or_insert(max_timestamp);
        if max_timestamp > scan.running_max_timestamp {
            scan.running_max_timestamp = max_timestamp;
            scan.max_timestamp_batch = header.base_offset;
            write.put_time(pk, max_timestamp, header.base_offset);
        }
        write.put_batch(
            pk,
            &BatchEntry {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                segment: base,
                position: scan.valid_bytes,
                size: size as u32,
                max_timestamp,
                running_max_timestamp: scan.running_max_timestamp,
            },
        );
        pending += 1;
        if pending >= 4096 {
            index.write(std::mem::take(&mut write))?;
            pending = 0;
        }
        scan.valid_bytes += size as u64;
        scan.next_offset = header.last_offset() + 1;
    }
    if !write.is_empty() {
        index.write(write)?;
    }
    Ok(scan)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::batch;
    use kafka_protocol::records::Compression;

    struct Fixture {
        dir: tempfile::TempDir,
        index: Arc<Index>,
        topic_id: Uuid,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let index = Arc::new(Index::open(&dir.path().join("index")).unwrap());
            Fixture {
                dir,
                index,
                topic_id: Uuid::from_u128(7),
            }
        }

        fn open(&self, config: LogConfig) -> PartitionLog {
            PartitionLog::open(
                self.dir.path().join("t-0"),
                "t".into(),
                self.topic_id,
                0,
                self.index.clone(),
                config,
            )
            .unwrap()
        }

        fn segment_files(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path().join("t-0"))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".log"))
                .collect();
            names.sort();
            names
        }
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        }
    }

    /// Appends `n` batches of 3 records with timestamps 1000, 2000, ...
    fn append(log: &PartitionLog, n: usize) -> Vec<AppendInfo> {
        (0..n)
            .map(|i| {
                let info = log
                    .append_as_leader(batch(3, 1000 * (i as i64 + 1), Compression::None), 4)
                    .unwrap();
                log.set_high_watermark(info.last_offset + 1);
                info
            })
            .collect()
    }

    fn offsets_read(log: &PartitionLog, from: i64) -> Vec<i64> {
        let mut offsets = Vec::new();
        let mut at = from;
        loop {
            let info = log
                .read(at, 1 << 20, ReadLimit::HighWatermark, true)
                .unwrap();
            if info.records.is_empty() {
                return offsets;
            }
            let mut bytes = info.records.clone();
            for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap()
            {
                for r in set.records {
                    if r.offset >= at {
                        offsets.push(r.offset);
                    }
                }
            }
            at = *offsets.last().unwrap() + 1;
        }
    }

    #[test]
    fn offsets_are_assigned_and_segments_roll_by_size() {
        let f = Fixture::new();
        let log = f.open(small_segments());
        let infos = append(&log, 10);
        let bases: Vec<i64> = infos.iter().map(|i| i.base_offset).collect();
        assert_eq!(bases, (0..10).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(log.log_end_offset(), 30);
        // Each batch is ~ 400 bytes: two fit in a 1000-byte segment.
        assert_eq!(log.segment_count(), 5);
        assert_eq!(f.segment_files()[1], "00000000000000000006.log");
        assert_eq!(offsets_read(&log, 0), (0..30).collect::<Vec<_>>());
        // A read from the middle of a batch starts at that batch.
        let info = log
            .read(7, 1 << 20, ReadLimit::HighWatermark, true)
            .unwrap();
        let h = BatchHeader::parse(&info.records).unwrap();
        assert_eq!(h.base_offset, 6);
        // Reads never cross a segment: two batches at most here.
        assert_eq!(
            batch::validate_produced(&info.records, 1 << 20)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn rolled_segments_are_synced_off_the_append_path_then_pass_the_recovery_point() {
        let f = Fixture::new();
        let log = f.open(small_segments());
        append(&log, 10);
        assert_eq!(log.segment_count(), 5);
        let recovery_point = |log: &PartitionLog| log.lock().recovery_point;
        assert_eq!(recovery_point(&log), 0, "appends do not sync");
        log.sync_rolled().unwrap();
        // The active segment starts at 24; everything before it is synced.
        assert_eq!(recovery_point(&log), 24);
        assert!(log.lock().rolled.is_empty());
        // A truncation below a rolled segment leaves the recovery point to
        // the next flush.
        append(&log, 2);
        assert!(!log.lock().rolled.is_empty());
        log.truncate_to(20).unwrap();
        let end = log.log_end_offset();
        assert!(end < 24);
        log.sync_rolled().unwrap();
        assert_eq!(recovery_point(&log), end);
    }

    #[test]
    fn reads_respect_the_high_watermark_limits_and_range() {
        let f = Fixture::new();
        let log = f.open(LogConfig::default());
        append(&log, 3);
        log.append_as_leader(batch(3, 9, Compression::None), 4)
            .unwrap();
        assert_eq!((log.log_end_offset(), log.high_watermark()), (12, 9));
        assert_eq!(
            offsets_read(&log, 0).len(),
            9,
            "the uncommitted batch is not served"
        );
        let info = log.read(9, 1 << 20, ReadLimit::LogEnd, true).unwrap();
        assert!(!info.records.is_empty());
        // max_bytes smaller than a batch: nothing, unless it is the first.
        let one = log.read(0, 10, ReadLimit::HighWatermark, true).unwrap();
        assert_eq!(
            batch::validate_produced(&one.records, 1 << 20)
                .unwrap()
                .len(),
            1
        );
        assert!(log
            .read(0, 10, ReadLimit::HighWatermark, false)
            .unwrap()
            .records
            .is_empty());
        assert!(matches!(
            log.read(13, 100, ReadLimit::HighWatermark, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log
            .read(12, 100, ReadLimit::LogEnd, true)
            .unwrap()
            .records
            .is_empty());
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_survives_a_restart() {
        let f = Fixture::new();
        let path;
        {
            let log = f.open(LogConfig::default());
            append(&log, 5);
            path = log.dir().join("00000000000000000000.log");
            // No flush: the recovery point is still 0, as after kill -9.
        }
        let len = fs::metadata(&path).unwrap().len();
        // Half of the last batch reached the disk.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 50).unwrap();
        let log = f.open(LogConfig::default());
        assert_eq!(log.log_end_offset(), 12);
        log.set_high_watermark(12);
        assert_eq!(offsets_read(&log, 0), (0..12).collect::<Vec<_>>());
        // The next append takes the offsets the torn batch had.
        let info = log
            .append_as_leader(batch(1, 1, Compression::None), 5)
            .unwrap();
        assert_eq!(info.base_offset, 12);
    }

    #[test]
    fn a_restart_reads_only_what_follows_the_recovery_point() {
        let f = Fixture::new();
        let path;
        {
            let log = f.open(LogConfig::default());
            append(&log, 4);
            log.flush().unwrap();
            append(&log, 2);
            path = log.dir().join("00000000000000000000.log");
        }
        // A byte of the first batch flips, below the recovery point (12),
        // and the last batch, after it, is torn.
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        bytes.truncate(bytes.len() - 50);
        fs::write(&path, &bytes).unwrap();
        let log = f.open(LogConfig::default());
        // The synced part is trusted, not read again (a full scan would cut
        // the log at offset 0); after it every batch is checked and the
        // torn one cut.
        assert_eq!(log.log_end_offset(), 15);
        log.set_high_watermark(15);
        assert_eq!(offsets_read(&log, 3), (3..15).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_batch_ends_the_log_and_lost_index_entries_are_rebuilt() {
        let f = Fixture::new();
        {
            let log = f.open(small_segments());
            append(&log, 6);
            log.flush().unwrap();
            append(&log, 2);
        }
        // Flip a byte in the last segment's first batch.
        let last = f.segment_files().pop().unwrap();
        let path = f.dir.path().join("t-0").join(&last);
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        // And lose every index entry, as if RocksDB had lost its WAL.
        let pk = PartitionKey::new(f.topic_id, 0);
        let mut w = IndexWrite::default();
        w.delete_offsets(&pk, 0, i64::MAX);
        f.index.write(w).unwrap();

        let log = f.open(small_segments());
        assert_eq!(
            log.log_end_offset(),
            18,
            "six good batches before the corrupt one"
        );
        log.set_high_watermark(18);
        assert_eq!(offsets_read(&log, 0), (0..18).collect::<Vec<_>>());
    }

    #[test]
    fn a_clean_restart_keeps_offsets_start_and_timestamps() {
        let f = Fixture::new();
        {
            let log = f.open(small_segments());
            append(&log, 6);
            assert_eq!(log.delete_records_before(7).unwrap(), 7);
            log.flush().unwrap();
        }
        let log = f.open(small_segments());
        assert_eq!(log.log_end_offset(), 18);
        assert_eq!(log.log_start_offset(), 7);
        log.set_high_watermark(18);
        // Batch i holds offsets 3i.. with timestamps 1000(i+1)..; the log
        // now starts inside the third batch.
        assert_eq!(log.offset_for_timestamp(3500).unwrap(), Some((9, 4000)));
        assert_eq!(log.offset_for_timestamp(4001).unwrap(), Some((10, 4001)));
        assert_eq!(log.offset_for_timestamp(2500).unwrap(), Some((7, 3001)));
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((7, 3001)));
        assert_eq!(log.offset_for_timestamp(7000).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((17, 6002)));
        assert!(matches!(
            log.read(6, 100, ReadLimit::HighWatermark, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn retention_deletes_whole_old_segments_by_size_and_time() {
        let f = Fixture::new();
        let log = f.open(LogConfig {
            retention_bytes: 2000,
            retention_ms: -1,
            ..small_segments()
        });
        append(&log, 10);
        let before = log.segment_count();
        let deleted = log.apply_retention(now_ms()).unwrap();
        assert!(deleted >= 1, "{before} segments");
        assert!(log.size_bytes() <= 2000 + 1000);
        let start = log.log_start_offset();
        assert_eq!(start % 6, 0, "starts at a segment boundary");
        assert_eq!(offsets_read(&log, start), (start..30).collect::<Vec<_>>());

        // By time: every batch has timestamps in 1970, all but the active go.
        log.set_config(LogConfig {
            retention_ms: 1000,
            ..small_segments()
        });
        log.apply_retention(now_ms()).unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), 24);
        assert_eq!(f.segment_files(), vec!["00000000000000000024.log"]);
        // The time index forgot the deleted batches.
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((24, 9000)));
    }

    #[test]
    fn log_append_time_topics_stamp_batches() {
        let f = Fixture::new();
        let log = f.open(LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        });
        let before = now_ms();
        let info = log
            .append_as_leader(batch(2, 5, Compression::Zstd), 0)
            .unwrap();
        assert!(info.log_append_time >= before);
        log.set_high_watermark(2);
        let read = log
            .read(0, 1 << 20, ReadLimit::HighWatermark, true)
            .unwrap();
        let h = batch::check_batch(&read.records).unwrap();
        assert_eq!(h.max_timestamp, info.log_append_time);
        assert!(h.is_log_append_time());
    }

    #[test]
    fn deleting_removes_files_and_index_entries() {
        let f = Fixture::new();
        let log = f.open(LogConfig::default());
        append(&log, 2);
        log.delete().unwrap();
        assert!(!f.dir.path().join("t-0").exists());
        assert!(matches!(
            log.append_as_leader(batch(1, 1, Compression::None), 0),
            Err(LogError::Deleted)
        ));
        let pk = PartitionKey::new(f.topic_id, 0);
        assert_eq!(f.index.batch_at_or_after(&pk, 0).unwrap(), None);
        // A new log of the same name starts empty.
        let again = f.open(LogConfig::default());
        assert_eq!(again.log_end_offset(), 0);
    }

    #[test]
    fn end_offsets_for_epochs_follow_kafka() {
        let epochs = [(1, 0), (3, 10), (4, 25)];
        assert_eq!(end_offset_for(&epochs, 4, 40), (4, 40));
        assert_eq!(end_offset_for(&epochs, 3, 40), (3, 25));
        assert_eq!(end_offset_for(&epochs, 2, 40), (1, 10));
        assert_eq!(end_offset_for(&epochs, 0, 40), (0, 0));
        assert_eq!(end_offset_for(&epochs, 5, 40), (-1, -1));
        assert_eq!(end_offset_for(&[], 1, 40), (-1, -1));
        assert_eq!(end_offset_for(&epochs, -1, 40), (-1, -1));
    }

    #[test]
    fn a_follower_copies_the_leader_and_truncates_where_they_diverge() {
        let leader_dir = Fixture::new();
        let leader = leader_dir.open(small_segments());
        // Epoch 4 for 6 batches (18 records).
        append(&leader, 6);
        leader.start_leader_epoch(6).unwrap();
        leader
            .append_as_leader(batch(3, 9, Compression::None), 6)
            .unwrap();
        assert_eq!(leader.end_offset_for_epoch(4), (4, 18));
        assert_eq!(leader.end_offset_for_epoch(5), (4, 18));
        assert_eq!(leader.end_offset_for_epoch(6), (6, 21));

        let f = Fixture::new();
        let follower = f.open(small_segments());
        while follower.log_end_offset() < leader.log_end_offset() {
            let read = leader
                .read(follower.log_end_offset(), 1 << 20, ReadLimit::LogEnd, true)
                .unwrap();
            follower.append_as_follower(&read.records).unwrap();
        }
        assert_eq!(follower.log_end_offset(), 21);
        assert_eq!(follower.end_offset_for_epoch(4), (4, 18));
        assert_eq!(follower.latest_epoch(), Some(6));
        let all = |log: &PartitionLog| {
            log.read(0, 1 << 20, ReadLimit::LogEnd, true)
                .unwrap()
                .records
        };
        assert_eq!(all(&follower), all(&leader), "same bytes, same offsets");
        // A batch that does not follow on is refused.
        let stale = leader.read(3, 1 << 20, ReadLimit::LogEnd, true).unwrap();
        assert!(follower.append_as_follower(&stale.records).is_err());

        // The follower wrote epoch 6 data the new leader never had: cut it.
        follower.set_high_watermark(21);
        follower.truncate_to(18).unwrap();
        assert_eq!(
            (follower.log_end_offset(), follower.high_watermark()),
            (18, 18)
        );
        assert_eq!(follower.latest_epoch(), Some(4));
        follower.start_leader_epoch(7).unwrap();
        let info = follower
            .append_as_leader(batch(2, 5, Compression::None), 7)
            .unwrap();
        assert_eq!(info.base_offset, 18);
        drop(follower);
        let reopened = f.open(small_segments());
        assert_eq!(reopened.log_end_offset(), 20);
        assert_eq!(reopened.end_offset_for_epoch(4), (4, 18));
        assert_eq!(reopened.end_offset_for_epoch(6), (4, 18));
        assert_eq!(reopened.end_offset_for_epoch(7), (7, 20));
        reopened.set_high_watermark(20);
        assert_eq!(offsets_read(&reopened, 0), (0..20).collect::<Vec<_>>());

        // An epoch started as leader but never written to goes on a
        // truncation at the log end; otherwise its fetches would name an
        // epoch the new leader never had, and diverge forever.
        reopened.start_leader_epoch(9).unwrap();
        assert_eq!(reopened.latest_epoch(), Some(9));
        reopened.truncate_to(20).unwrap();
        assert_eq!(reopened.latest_epoch(), Some(7));
        assert_eq!(reopened.log_end_offset(), 20);

        // Behind the leader's log start: start over there.
        reopened.truncate_fully_and_start_at(100).unwrap();
        assert_eq!(
            (reopened.log_start_offset(), reopened.log_end_offset()),
            (100, 100)
        );
        let read = leader.read(0, 1 << 20, ReadLimit::LogEnd, true).unwrap();
        assert!(reopened.append_as_follower(&read.records).is_err());
    }
}
