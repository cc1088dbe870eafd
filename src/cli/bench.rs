//! `fjord bench produce|consume`: throughput and produce latency against a
//! running cluster, through the same client the CLI uses, in the shape of
//! Kafka's `kafka-producer-perf-test.sh` / `kafka-consumer-perf-test.sh`.
//!
//! Produce latency is per record, from the moment it is handed to the
//! producer to the moment its acknowledgement is seen, so it includes
//! batching (`--linger-ms`) and queueing behind other requests, as the Java
//! perf test's does. Values are random printable bytes, so compression
//! figures are not flattered by zeros. Results are measured and printed,
//! never judged: a benchmark has no pass mark. Progress goes to a terminal
//! only; in a pipe the output is the summary alone.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;

use crate::client::consumer::{Consumer, ConsumerConfig, OffsetReset, StartOffset};
use crate::client::producer::{
    parse_compression, Acks, ProduceError, Producer, ProducerConfig, ProducerRecord,
};
use crate::client::KafkaClient;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Write records as fast as the cluster takes them.
    Produce(ProduceBenchArgs),
    /// Read a topic from the beginning as fast as possible.
    Consume(ConsumeBenchArgs),
}

#[derive(Args, Debug)]
pub struct ProduceBenchArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    #[arg(long, default_value = "1", value_parser = |s: &str| s.parse::<Acks>())]
    pub acks: Acks,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor of the topic created with `--partitions` (default:
    /// the broker's `default.replication.factor`).
    #[arg(long, requires = "partitions", value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Produce requests pipelined per broker connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeBenchArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// Stop after this many records (default: everything up to the end
    /// offsets seen at the start).
    #[arg(long)]
    pub records: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct ProduceReport {
    pub records: u64,
    pub failed: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// Mebibytes (2^20 bytes) of values per second.
    pub mib_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

#[derive(Serialize, Debug)]
pub struct ConsumeReport {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mib_per_sec: f64,
}

pub fn run(command: BenchCommand) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    let (json, result) = match command {
        BenchCommand::Produce(args) => {
            let json = args.json;
            (json, rt.block_on(bench_produce(args)).map(Report::Produce))
        }
        BenchCommand::Consume(args) => {
            let json = args.json;
            (json, rt.block_on(bench_consume(args)).map(Report::Consume))
        }
    };
    match result {
        Ok(report) => {
            report.print(json);
            0
        }
        Err(e) => {
            eprintln!("fjord: bench: {e}");
            1
        }
    }
}

enum Report {
    Produce(ProduceReport),
    Consume(ConsumeReport),
}

impl Report {
    fn print(&self, json: bool) {
        let line = match (self, json) {
            (Report::Produce(r), true) => serde_json::to_string(r).unwrap_or_default(),
            (Report::Consume(r), true) => serde_json::to_string(r).unwrap_or_default(),
            (Report::Produce(r), false) => format!(
                "{} records sent ({} failed) in {:.2} s: {:.0} records/s, {:.2} MiB/s, \
                 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.records,
                r.failed,
                r.seconds,
                r.records_per_sec,
                r.mib_per_sec,
                r.latency_ms_p50,
                r.latency_ms_p99,
                r.latency_ms_max
            ),
            (Report::Consume(r), false) => format!(
                "{} records read in {:.2} s: {:.0} records/s, {:.2} MiB/s",
                r.records, r.seconds, r.records_per_sec, r.mib_per_sec
            ),
        };
        println!("{line}");
    }
}

/// Prints `\r`-refreshed progress on a terminal, at most once a second.
struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, what: impl FnOnce() -> String) {
        if self.enabled && self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprint!("\r{}   ", what());
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

async fn bench_produce(args: ProduceBenchArgs) -> Result<ProduceReport, String> {
    if let Some(partitions) = args.partitions {
        ensure_topic(
            &args.bootstrap_server,
            &args.topic,
            partitions,
            args.replication_factor.unwrap_or(-1),
        )
        .await?;
    }
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        batch_size: args.batch_size.max(1),
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.in_flight.max(1),
        max_request_size: (args.batch_size * 4).max(1024 * 1024),
        buffer_memory: (args.batch_size * 64).max(32 * 1024 * 1024),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&args.bootstrap_server, config)
        .await
        .map_err(|e| format!("{}: {e}", args.bootstrap_server))?;
    let value: Bytes = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(args.record_size)
        .collect::<Vec<u8>>()
        .into();
    // Microseconds, up to an hour, three significant digits.
    let histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let stats = Arc::new(Mutex::new(Stats {
        histogram,
        acked: 0,
        failed: 0,
        first_error: None,
    }));
    let mut progress = Progress::new();
    let start = Instant::now();
    for _ in 0..args.records {
        let record = ProducerRecord {
            topic: args.topic.clone(),
            value: Some(value.clone()),
            ..ProducerRecord::default()
        };
        let enqueued = Instant::now();
        let shared = stats.clone();
        let callback = Box::new(move |result: Result<_, ProduceError>| {
            let micros = u64::try_from(enqueued.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut s) = shared.lock() {
                match result {
                    Ok(_) => {
                        s.acked += 1;
                        let _ = s.histogram.record(micros.max(1));
                    }
                    Err(e) => {
                        s.failed += 1;
                        s.first_error.get_or_insert(e);
                    }
                }
            }
        });
        producer
            .send_with(record, callback)
            .await
            .map_err(|e| e.to_string())?;
        progress.update(|| {
            let acked = stats.lock().map_or(0, |s| s.acked);
            format!("{acked} of {} records acknowledged", args.records)
        });
    }
    producer.close().await.map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();
    let stats = stats.lock().map_err(|_| "statistics lost".to_string())?;
    if stats.acked == 0 {
        if let Some(e) = &stats.first_error {
            return Err(format!("no record was acknowledged: {e}"));
        }
    }
    let bytes = stats.acked * args.record_size as u64;
    let ms = |q: f64| stats.histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(ProduceReport {
        records: stats.acked,
        failed: stats.failed,
        bytes,
        seconds,
        records_per_sec: stats.acked as f64 / seconds,
        mib_per_sec: bytes as f64 / seconds / (1024.0 * 1024.0),
        latency_ms_p50: ms(0.50),
        latency_ms_p99: ms(0.99),
        latency_ms_max: stats.histogram.max() as f64 / 1000.0,
    })
}

struct Stats {
    histogram: Histogram<u64>,
    acked: u64,
    failed: u64,
    first_error: Option<ProduceError>,
}

/// Creates `topic` with `partitions` partitions and `replication_factor`
/// replicas (-1: the broker's default) unless it exists.
async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), String> {
    let mut client = KafkaClient::connect(bootstrap, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{bootstrap}: {e}"))?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)]);
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("CreateTopics {topic}: {e}"))?;
    for result in &response.topics {
        match ResponseError::try_from_code(result.error_code) {
            None | Some(ResponseError::TopicAlreadyExists) => {}
            Some(e) => {
                let message = result
                    .error_message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                return Err(format!("CreateTopics {topic}: {e:?}{message}"));
            }
        }
    }
    Ok(())
}

async fn bench_consume(args: ConsumeBenchArgs) -> Result<ConsumeReport, String> {
    let config = ConsumerConfig {
        reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::assign(
        &args.bootstrap_server,
        &args.topic,
        None,
        StartOffset::Earliest,
        config,
    )
    .await
    .map_err(|e| e.to_string())?;
    let end = consumer
        .list_offsets(StartOffset::Latest)
        .await
        .map_err(|e| e.to_string())?;
    let available: u64 = {
        let begin = consumer
            .list_offsets(StartOffset::Earliest)
            .await
            .map_err(|e| e.to_string())?;
        end.iter()
            .map(|(p, e)| (e - begin.get(p).copied().unwrap_or(0)).max(0) as u64)
            .sum()
    };
    let target = args.records.unwrap_or(available);
    let mut progress = Progress::new();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut last_record = Instant::now();
    while records < target {
        let batch = consumer.poll().await.map_err(|e| e.to_string())?;
        if batch.is_empty() {
            let at_end = consumer
                .positions()
                .iter()
                .all(|(p, o)| end.get(p).is_none_or(|e| o >= e));
            // Without --records there is nothing more to wait for.
            if (args.records.is_none() && at_end) || last_record.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for record in &batch {
            records += 1;
            bytes += record.value.as_ref().map_or(0, |v| v.len() as u64)
                + record.key.as_ref().map_or(0, |k| k.len() as u64);
        }
        progress.update(|| format!("{records} of {target} records read"));
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();
    Ok(ConsumeReport {
        records,
        bytes,
        seconds,
        records_per_sec: records as f64 / seconds,
        mib_per_sec: bytes as f64 / seconds / (1024.0 * 1024.0),
    })
}
