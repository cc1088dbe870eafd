//! The node's partition logs in one log directory: finding them at
//! start-up, creating and deleting them, and the periodic work (flush by
//! `flush.ms`, checkpoints, retention) done for all of them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use super::index::Index;
use super::log::{io_error, now_ms, read_partition_metadata, LogError, PartitionLog};
use super::log_config::LogConfig;

/// Suffix of a partition directory being removed; finished at start-up if a
/// crash interrupted it.
const DELETE_SUFFIX: &str = "-delete";

pub struct LogManager {
    dir: PathBuf,
    index: Arc<Index>,
    logs: RwLock<HashMap<(Uuid, i32), Arc<PartitionLog>>>,
}

/// `<topic>-<partition>`, as Kafka names partition directories.
fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (!topic.is_empty() && partition >= 0).then(|| (topic.to_string(), partition))
}

impl LogManager {
    /// Opens the index under `dir/index` and recovers every partition
    /// directory found in `dir`.
    pub fn open(dir: &Path) -> Result<LogManager, LogError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let index = Arc::new(Index::open(&dir.join("index"))?);
        let mut logs = HashMap::new();
        let start = Instant::now();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.ends_with(DELETE_SUFFIX) {
                fs::remove_dir_all(&path).map_err(io_error(&path))?;
                continue;
            }
            let Some((topic, partition)) = parse_partition_dir(&name) else {
                continue;
            };
            let Some(topic_id) = read_partition_metadata(&path) else {
                continue;
            };
            let log = PartitionLog::open(
                path,
                topic,
                topic_id,
                partition,
                index.clone(),
                LogConfig::default(),
            )?;
            logs.insert((topic_id, partition), Arc::new(log));
        }
        if !logs.is_empty() {
            tracing::info!(
                partitions = logs.len(),
                elapsed_ms = start.elapsed().as_millis() as u64,
                "partition logs recovered"
            );
        }
        Ok(LogManager {
            dir: dir.to_path_buf(),
            index,
            logs: RwLock::new(logs),
        })
    }

    pub fn get(&self, topic_id: Uuid, partition: i32) -> Option<Arc<PartitionLog>> {
        self.logs
            .read()
            .ok()
            .and_then(|l| l.get(&(topic_id, partition)).cloned())
    }

    pub fn logs(&self) -> Vec<Arc<PartitionLog>> {
        self.logs
            .read()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The partition's log, created empty if this node has none. A directory
    /// of the same name left by a deleted topic is removed first.
    pub fn get_or_create(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<PartitionLog>, LogError> {
        if let Some(log) = self.get(topic_id, partition) {
            return Ok(log);
        }
        let mut logs = self.logs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(&(topic_id, partition)) {
            return Ok(log.clone());
        }
        let dir = self.dir.join(format!("{topic}-{partition}"));
        let stale = logs
            .iter()
            .find(|(_, log)| log.dir() == dir)
            .map(|(key, _)| *key);
        if let Some(key) = stale {
            if let Some(old) = logs.remove(&key) {
                old.delete()?;
            }
        } else if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let log = Arc::new(PartitionLog::open(
            dir,
            topic.to_string(),
            topic_id,
            partition,
            self.index.clone(),
            config,
        )?);
        logs.insert((topic_id, partition), log.clone());
        Ok(log)
    }

    /// Deletes the partition's data from disk and the index.
    pub fn remove(&self, topic_id: Uuid, partition: i32) -> Result<(), LogError> {
        let removed = self
            .logs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(topic_id, partition));
        if let Some(log) = removed {
            log.delete()?;
            export_size(&log);
            tracing::info!(topic = %log.topic, partition, "partition log deleted");
        }
        Ok(())
    }

    /// Flushes and checkpoints every log (clean shutdown).
    pub fn flush_all(&self) {
        for log in self.logs() {
            if let Err(e) = log.flush() {
                tracing::warn!(topic = %log.topic, partition = log.partition, "flush: {e}");
            }
        }
    }

    /// Periodic work until `shutdown`: flushes by `flush.ms`, checkpoints
    /// every few seconds, applies retention every `retention_check_interval`.
    pub async fn run_maintenance(
        self: Arc<Self>,
        retention_check_interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tick = Duration::from_millis(200);
        let checkpoint_every = Duration::from_secs(5);
        let mut last_checkpoint = Instant::now();
        let mut last_retention = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            let checkpoint = last_checkpoint.elapsed() >= checkpoint_every;
            let retention = last_retention.elapsed() >= retention_check_interval;
            if checkpoint {
                last_checkpoint = Instant::now();
            }
            if retention {
                last_retention = Instant::now();
            }
            let manager = self.clone();
            let work = tokio::task::spawn_blocking(move || {
                manager.maintain(checkpoint, retention);
            });
            let _ = work.await;
        }
    }

    fn maintain(&self, checkpoint: bool, retention: bool) {
        let now = now_ms();
        for log in self.logs() {
            let who = |what: &str, e: LogError| {
                tracing::warn!(topic = %log.topic, partition = log.partition, "{what}: {e}");
            };
            if let Err(e) = log.sync_rolled() {
                who("sync rolled segments", e);
            }
            if let Err(e) = log.flush_if_due() {
                who("flush", e);
            }
            if checkpoint {
                if let Err(e) = log.checkpoint() {
                    who("checkpoint", e);
                }
                export_size(&log);
            }
            if retention {
                match log.apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic = %log.topic,
                        partition = log.partition,
                        segments = n,
                        log_start_offset = log.log_start_offset(),
                        "retention deleted segments"
                    ),
                    Err(e) => who("retention", e),
                }
            }
        }
    }
}

/// `fjord_log_size_bytes{topic,partition}`: the partition's segment bytes.
/// A deleted partition reads 0: the `metrics` facade cannot drop a series.
fn export_size(log: &PartitionLog) {
    metrics::gauge!("fjord_log_size_bytes", "topic" => log.topic.clone(), "partition" => log.partition.to_string())
        .set(log.size_bytes() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directory_names_parse_like_kafka() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(
            parse_partition_dir("my-topic-12"),
            Some(("my-topic".into(), 12))
        );
        assert_eq!(parse_partition_dir("index"), None);
        assert_eq!(parse_partition_dir("-1"), None);
    }
}
