//! The produce side of `bench produce` and `bench e2e`: P producers, each
//! with its own connections, share the record count; each builds whole
//! RecordBatches itself and hands them to the client's
//! [`Producer::send_batch`], which pipelines, retries and times them out.
//!
//! Why batches and not `send` per record: on this machine the load
//! generator shares two cores with the broker, so every cycle it spends is
//! taken from what it measures. Per record the loop only stamps 16 bytes
//! and copies the value into a reused batch buffer (a
//! [`RecordBatchWriter`]); allocation, locking and channel traffic happen
//! once per batch.
//!
//! Latency is per record. Without `--throughput` it runs from the moment a
//! record enters its batch (the hand-off, as Kafka's perf test measures
//! from `send()`) to its batch's acknowledgement. With `--throughput R`
//! record `i` has an intended send time, `start + i/R`, and latency runs
//! from that time: when the producer stalls (back-pressure, a slow broker,
//! a pause) every record that should have gone out during the stall is
//! charged the whole wait, so the percentiles do not hide it (no
//! coordinated omission). The timer has millisecond granularity, which
//! shows up as up to a millisecond at low percentiles of fixed-rate runs.
//!
//! Partitions are taken in turn, a whole batch each (the sticky
//! partitioner of KIP-480, made even). A batch is sealed when it reaches
//! `--batch-size`, or, in fixed-rate mode, when it has waited `--linger-ms`
//! for the next record: with 0, as soon as nothing is due for a timer tick
//! (1 ms), or once it has been open a tick while records keep coming.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::records::Compression;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::task::JoinSet;

use crate::client::producer::{
    Acks, BatchMetadata, EncodedBatch, ProduceError, Producer, ProducerConfig, RecordBatchWriter,
};

use super::report::{micros, SharedStats};

/// A value that starts with these 8 bytes carries its send time in the
/// next 8 (nanoseconds since the Unix epoch, big-endian), so a consumer on
/// the same machine can tell end-to-end latency to the nanosecond.
pub const STAMP_MAGIC: [u8; 8] = *b"fjordts1";
pub const STAMP_BYTES: usize = 16;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub bootstrap: String,
    pub topic: String,
    pub records: u64,
    pub record_size: usize,
    /// Records per second over all producers; `None`: as fast as possible.
    pub throughput: Option<f64>,
    pub acks: Acks,
    pub producers: usize,
    pub batch_size: usize,
    pub linger: Duration,
    pub compression: Compression,
    pub in_flight: usize,
    pub delivery_timeout: Duration,
}

/// One clock for the whole run: instants for latencies, and the wall-clock
/// nanoseconds they correspond to for stamps and record timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    wall_start_nanos: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock {
            start: Instant::now(),
            wall_start_nanos: wall,
        }
    }

    /// The same clock with its start moved to now.
    pub fn restarted(&self) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            wall_start_nanos: self.wall_nanos(start),
        }
    }

    /// Wall-clock nanoseconds at `at` (not before the run's start).
    pub fn wall_nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        self.wall_start_nanos
            .saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The instant of wall-clock `nanos`, if it is not before the start.
    pub fn instant_of(&self, nanos: u64) -> Option<Instant> {
        let since = nanos.checked_sub(self.wall_start_nanos)?;
        self.start.checked_add(Duration::from_nanos(since))
    }
}

/// tokio's timer wheel wakes sleepers at this granularity.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The stamped send time of a value written by this bench, if it has one.
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    if value.len() < STAMP_BYTES || value[..8] != STAMP_MAGIC {
        return None;
    }
    let mut nanos = [0; 8];
    nanos.copy_from_slice(&value[8..16]);
    Some(u64::from_be_bytes(nanos))
}

/// Runs the producers to the end; their outcomes are in `stats`. An error
/// is something that stopped a producer (it could not connect, say), not a
/// record the broker refused.
pub async fn run(
    config: &LoadConfig,
    partitions: i32,
    clock: Clock,
    stats: SharedStats,
) -> Result<(), String> {
    let config = Arc::new(config.clone());
    // Random printable bytes, so compression is not flattered by zeros.
    let payload: Arc<[u8]> = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(config.record_size)
        .collect::<Vec<u8>>()
        .into();
    let mut producers = JoinSet::new();
    for index in 0..config.producers {
        let producer = OneProducer {
            index: index as u64,
            config: config.clone(),
            partitions: partitions.max(1),
            clock,
            stats: stats.clone(),
            payload: payload.clone(),
        };
        producers.spawn(producer.run());
    }
    let mut first_error = None;
    while let Some(joined) = producers.join_next().await {
        let result = joined.map_err(|e| format!("a producer task failed: {e}"))?;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

struct OneProducer {
    index: u64,
    config: Arc<LoadConfig>,
    partitions: i32,
    clock: Clock,
    stats: SharedStats,
    payload: Arc<[u8]>,
}

/// The batch being filled and what its records' latencies run from.
struct OpenBatch {
    writer: RecordBatchWriter,
    /// Per record: its intended send time, or when it was handed over.
    origins: Vec<Instant>,
    opened: Option<Instant>,
    partition: i32,
}

impl OneProducer {
    async fn run(self) -> Result<(), String> {
        let config = &self.config;
        let producer_config = ProducerConfig {
            acks: config.acks,
            compression: config.compression,
            batch_size: config.batch_size,
            linger: config.linger,
            max_in_flight: config.in_flight,
            delivery_timeout: config.delivery_timeout,
            max_request_size: (config.batch_size * 4).max(1024 * 1024),
            buffer_memory: (config.batch_size * 64).max(32 * 1024 * 1024),
            ..ProducerConfig::default()
        };
        let producer = Producer::connect(&config.bootstrap, producer_config)
            .await
            .map_err(|e| format!("{}: {e}", config.bootstrap))?;
        let per_batch = (config.batch_size / (config.record_size + 8).max(1)).clamp(1, 1 << 16);
        let mut open = OpenBatch {
            // A little over a batch: the record that crosses the size
            // still fits, so each batch is one allocation.
            writer: RecordBatchWriter::with_capacity(config.batch_size + config.record_size + 64),
            origins: Vec::with_capacity(per_batch),
            opened: None,
            partition: (self.index % self.partitions as u64) as i32,
        };
        let step = config.producers as u64;
        let mut stamp = [0u8; STAMP_BYTES];
        stamp[..8].copy_from_slice(&STAMP_MAGIC);
        let stamped = config.record_size >= STAMP_BYTES;
        let mut i = self.index;
        while i < config.records {
            let origin = match config.throughput {
                Some(rate) => {
                    let intended = self.clock.start + Duration::from_secs_f64(i as f64 / rate);
                    self.wait_until(intended, &producer, &mut open).await?;
                    intended
                }
                None => Instant::now(),
            };
            let nanos = self.clock.wall_nanos(origin);
            let timestamp_ms = i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
            if stamped {
                stamp[8..].copy_from_slice(&nanos.to_be_bytes());
                open.writer.append(
                    timestamp_ms,
                    None,
                    Some(&[&stamp, &self.payload[STAMP_BYTES..]]),
                    &[],
                );
            } else {
                open.writer
                    .append(timestamp_ms, None, Some(&[&self.payload]), &[]);
            }
            open.origins.push(origin);
            open.opened.get_or_insert_with(Instant::now);
            if open.writer.size_in_bytes() >= config.batch_size {
                self.seal(&producer, &mut open).await?;
            }
            i += step;
        }
        self.seal(&producer, &mut open).await?;
        producer.close().await.map_err(|e| e.to_string())
    }

    /// Fixed-rate mode: waits for `intended`, sealing the open batch when
    /// its linger runs out first.
    async fn wait_until(
        &self,
        intended: Instant,
        producer: &Producer,
        open: &mut OpenBatch,
    ) -> Result<(), String> {
        loop {
            let now = Instant::now();
            if intended <= now {
                return Ok(());
            }
            // A batch whose linger has run out is sealed when the loop is
            // about to sleep, or once it has been open a timer tick. When
            // the next record is due sooner than a tick, sealing right away
            // would send batches of one or two records (sealing one takes
            // longer than the gap at a few hundred thousand records/s) and
            // flood the broker with tiny requests; the sleep is a tick
            // anyway.
            let sleeps = intended - now >= TIMER_TICK;
            match open.opened.map(|at| (at, at + self.config.linger)) {
                Some((at, due)) if due <= now && (sleeps || now - at >= TIMER_TICK) => {
                    self.seal(producer, open).await?
                }
                Some((_, due)) if now < due && due < intended => {
                    tokio::time::sleep_until(due.into()).await;
                }
                _ => tokio::time::sleep_until(intended.into()).await,
            }
        }
    }

    /// Encodes the open batch, hands it to the producer (waiting while its
    /// buffer is full) and moves on to the next partition.
    async fn seal(&self, producer: &Producer, open: &mut OpenBatch) -> Result<(), String> {
        if open.writer.is_empty() {
            return Ok(());
        }
        let record_count = open.writer.record_count();
        let encoded = open
            .writer
            .finish(self.config.compression)
            .map_err(|e| format!("cannot encode a batch: {e}"))?;
        let origins = std::mem::replace(&mut open.origins, Vec::with_capacity(record_count));
        let bytes = (record_count * self.config.record_size) as u64;
        let stats = self.stats.clone();
        let callback = Box::new(move |result: Result<BatchMetadata, ProduceError>| {
            let acknowledged = Instant::now();
            let Ok(mut stats) = stats.lock() else { return };
            match result {
                Ok(_) => stats.acknowledged(
                    origins
                        .iter()
                        .map(|o| micros(acknowledged.saturating_duration_since(*o))),
                    bytes,
                ),
                Err(e) => stats.failed(origins.len() as u64, e.to_string()),
            }
        });
        let batch = EncodedBatch {
            topic: self.config.topic.clone(),
            partition: open.partition,
            encoded,
            record_count,
        };
        producer
            .send_batch(batch, callback)
            .await
            .map_err(|e| e.to_string())?;
        open.opened = None;
        open.partition = (open.partition + 1) % self.partitions;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_values_have_none() {
        let clock = Clock::now();
        let at = clock.start + Duration::from_millis(1500);
        let nanos = clock.wall_nanos(at);
        let mut value = vec![b'x'; 64];
        value[..8].copy_from_slice(&STAMP_MAGIC);
        value[8..16].copy_from_slice(&nanos.to_be_bytes());
        assert_eq!(stamp_of(&value), Some(nanos));
        assert_eq!(clock.instant_of(nanos), Some(at));
        assert_eq!(stamp_of(&value[..15]), None);
        assert_eq!(stamp_of(b"fjordts0 and then some"), None);
    }
}
