//! The consume side of `bench consume` and `bench e2e`.
//!
//! Outside a group the consumer fetches whole batches and walks their
//! records where they lie ([`Consumer::poll_batches`]): counting a record
//! costs a few varint reads, not a decoded copy. As a group member it goes
//! through [`GroupConsumer`], which decodes records, marks each one
//! consumed and commits every few seconds and at the end, as a real
//! application would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::consumer::{
    ConsumeError, Consumer, ConsumerConfig, OffsetReset, RecordView, StartOffset,
};
use crate::client::group::{GroupConfig, GroupConsumer};

use super::load::{stamp_of, Clock};
use super::report::{micros, new_histogram, Counter};

/// How often a group member commits while it reads (`auto.commit.interval.ms`).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// What a read ended with.
pub struct ReadOutcome {
    pub records: u64,
    pub bytes: u64,
    /// From the reader's start to its last record.
    pub seconds: f64,
    pub last_record: Instant,
    /// End-to-end latency of stamped records, when asked for.
    pub latency: Option<Histogram<u64>>,
}

pub struct ReadConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Stop after this many; `None`: everything up to the end offsets seen
    /// at the start.
    pub records: Option<u64>,
    pub group: Option<String>,
    /// Give up after this long without a record.
    pub idle_timeout: Duration,
    pub consumer: ConsumerConfig,
}

/// What the read loop does with each record, for both kinds of consumer.
struct Tally {
    target: u64,
    records: u64,
    bytes: u64,
    /// `e2e`: the run's clock, to tell latency from the stamp in the value.
    clock: Option<Clock>,
    latency: Histogram<u64>,
    counter: Arc<Counter>,
}

impl Tally {
    fn done(&self) -> bool {
        self.records >= self.target
    }

    /// Counts `record` unless the target is reached; false once it is.
    fn take(&mut self, record: RecordView<'_>, now: Instant) -> bool {
        if self.done() {
            return false;
        }
        let size = record.value.map_or(0, |v| v.len() as u64);
        self.records += 1;
        self.bytes += size;
        self.counter.add(1, size);
        if let Some(clock) = &self.clock {
            // The value's nanosecond stamp, else the record's CreateTime.
            let sent = record
                .value
                .and_then(stamp_of)
                .or_else(|| {
                    u64::try_from(record.timestamp)
                        .ok()
                        .map(|ms| ms * 1_000_000)
                })
                .and_then(|nanos| clock.instant_of(nanos));
            if let Some(sent) = sent {
                self.latency
                    .saturating_record(micros(now.saturating_duration_since(sent)));
            }
        }
        true
    }
}

/// Reads until `config.records` records (or the end offsets) are read, or
/// nothing has come for the idle timeout. `ready` is told once the start
/// positions are fixed, so a producer started after it is read in full.
pub async fn read(
    config: ReadConfig,
    clock: Option<Clock>,
    counter: Arc<Counter>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<ReadOutcome, String> {
    let mut tally = Tally {
        target: config.records.unwrap_or(u64::MAX),
        records: 0,
        bytes: 0,
        clock,
        latency: new_histogram(),
        counter,
    };
    let start = Instant::now();
    let mut last_record = start;
    match &config.group {
        Some(group) => {
            let mut consumer = GroupConsumer::subscribe(
                &config.bootstrap,
                &config.topic,
                GroupConfig::new(group),
                config.consumer.clone(),
            )
            .await
            .map_err(|e| format!("group {group}: {e}"))?;
            if let Some(ready) = ready {
                let _ = ready.send(());
            }
            let read = read_group(&config, &mut consumer, &mut tally, &mut last_record).await;
            // What was counted is committed even when reading failed.
            let closed = consumer.close().await;
            read.map_err(|e| format!("group {group}: {e}"))?;
            closed.map_err(|e| format!("group {group}: commit and leave: {e}"))?;
        }
        None => {
            let mut consumer = Consumer::assign(
                &config.bootstrap,
                &config.topic,
                None,
                StartOffset::Earliest,
                config.consumer.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let end = fix_positions(&mut consumer, clock.is_some())
                .await
                .map_err(|e| e.to_string())?;
            if let Some(ready) = ready {
                let _ = ready.send(());
            }
            if config.records.is_none() {
                let begin = consumer.positions();
                tally.target = end
                    .iter()
                    .map(|(p, e)| (e - begin.get(p).copied().unwrap_or(*e)).max(0) as u64)
                    .sum();
            }
            while !tally.done() && last_record.elapsed() < config.idle_timeout {
                let fetched = consumer.poll_batches().await.map_err(|e| e.to_string())?;
                let now = Instant::now();
                for batches in &fetched {
                    batches.for_each_record(|r| {
                        tally.take(r, now);
                    })?;
                }
                if !fetched.is_empty() {
                    last_record = now;
                }
            }
        }
    }
    let seconds = last_record.duration_since(start).as_secs_f64();
    Ok(ReadOutcome {
        records: tally.records,
        bytes: tally.bytes,
        seconds,
        last_record,
        latency: tally.clock.is_some().then_some(tally.latency),
    })
}

/// Fixes every partition's start now (the end for `e2e`, the beginning
/// otherwise) and returns the end offsets.
async fn fix_positions(
    consumer: &mut Consumer,
    at_end: bool,
) -> Result<std::collections::BTreeMap<i32, i64>, ConsumeError> {
    let end = consumer.list_offsets(StartOffset::Latest).await?;
    let start = if at_end {
        end.clone()
    } else {
        consumer.list_offsets(StartOffset::Earliest).await?
    };
    for (partition, offset) in start {
        consumer.seek(partition, offset);
    }
    Ok(end)
}

async fn read_group(
    config: &ReadConfig,
    consumer: &mut GroupConsumer,
    tally: &mut Tally,
    last_record: &mut Instant,
) -> Result<(), ConsumeError> {
    let mut last_commit = Instant::now();
    while !tally.done() && last_record.elapsed() < config.idle_timeout {
        let records = consumer.poll().await?;
        let now = Instant::now();
        for record in &records {
            let view = RecordView {
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
            };
            if !tally.take(view, now) {
                break;
            }
            consumer.mark_consumed(record);
        }
        if !records.is_empty() {
            *last_record = now;
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            consumer.commit().await?;
            last_commit = Instant::now();
        }
    }
    Ok(())
}

/// The consumer settings of a bench read: from the beginning when the
/// group has no committed offset; `e2e` asks for shorter long polls, since
/// one poll waits for every leader's answer.
pub fn consumer_config(e2e: bool) -> ConsumerConfig {
    ConsumerConfig {
        reset: if e2e {
            OffsetReset::Latest
        } else {
            OffsetReset::Earliest
        },
        max_wait: Duration::from_millis(if e2e { 100 } else { 500 }),
        ..ConsumerConfig::default()
    }
}
