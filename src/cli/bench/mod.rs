//! `fjord bench produce|consume|e2e`: what Kafka's
//! `kafka-producer-perf-test.sh` and `kafka-consumer-perf-test.sh` measure,
//! with latency that does not hide stalls.
//!
//! - `produce`: P producers write N records of B bytes; throughput and
//!   per-record latency, measured from the hand-off or, with
//!   `--throughput`, from each record's intended send time (`load`).
//! - `consume`: reads N records (or up to the end offsets), optionally as
//!   a group member that commits (`read`).
//! - `e2e`: both at once; latency from the send time stamped in each value
//!   to the moment the consumer holds the record.
//!
//! A progress line every few seconds on a terminal, the summary at the end
//! (`--json`: one object, stable field names, see `report::Summary`).
//! Results are measured and printed, never judged: a benchmark has no pass
//! mark. Exit status: 2 for arguments to fix, 1 when the run failed (no
//! connection, a broker error, records refused or missing).

mod load;
mod read;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::client::producer::{parse_compression, Acks};
use crate::client::KafkaClient;

use load::{Clock, LoadConfig, STAMP_BYTES};
use read::{ReadConfig, ReadOutcome};
use report::{Counter, Progress, Source, Stats, Summary};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Write records as fast as the cluster takes them, or at a fixed rate.
    Produce(ProduceBenchArgs),
    /// Read records from the beginning as fast as possible.
    Consume(ConsumeBenchArgs),
    /// Produce and consume at once: end-to-end latency.
    E2e(E2eBenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ProduceBenchArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Value size of each record, in bytes. From 16 bytes up the first 16
    /// carry the send time (see `bench e2e`).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per second over all producers (fixed-rate mode: latency
    /// from each record's intended send time). Default: as fast as possible.
    #[arg(long, value_parser = parse_throughput)]
    pub throughput: Option<f64>,
    #[arg(long, default_value = "1", value_parser = |s: &str| s.parse::<Acks>())]
    pub acks: Acks,
    /// Independent producers, each with its own connections, sharing the records.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub producers: u16,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// Replication factor of the topic created with `--partitions` (default:
    /// the broker's `default.replication.factor`).
    #[arg(long, requires = "partitions", value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    /// Seal a batch once it holds this many bytes.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// In fixed-rate mode, how long a batch waits for more records (0: it
    /// goes as soon as nothing else is due).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Produce requests pipelined per broker connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub in_flight: u16,
    /// A record not acknowledged within this long counts as failed.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub delivery_timeout_ms: u64,
    /// Print the summary as one JSON object.
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
    /// offsets seen at the start; with `--group`, required).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: Option<u64>,
    /// Consume as a member of this group, from its committed offsets, and
    /// commit what was read.
    #[arg(long, requires = "records")]
    pub group: Option<String>,
    /// Give up after this long without a record.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct E2eBenchArgs {
    #[command(flatten)]
    pub produce: ProduceBenchArgs,
    /// Give up after this long without a record reaching the consumer.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

fn parse_throughput(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("expected records per second above 0, got '{s}'")),
    }
}

/// Why a run stopped: the exit status and the line that says so.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn usage(message: String) -> Failure {
        Failure { code: 2, message }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { code: 1, message }
    }
}

/// What `e2e` prints: the end-to-end figures, and the produce side's own.
#[derive(Serialize)]
struct E2eSummary {
    #[serde(flatten)]
    end_to_end: Summary,
    produce: Summary,
}

pub fn run(command: BenchCommand) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    let (name, result) = match command {
        BenchCommand::Produce(args) => ("produce", rt.block_on(bench_produce(args))),
        BenchCommand::Consume(args) => ("consume", rt.block_on(bench_consume(args))),
        BenchCommand::E2e(args) => ("e2e", rt.block_on(bench_e2e(args))),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("fjord: bench {name}: {}", failure.message);
            failure.code
        }
    }
}

fn print<T: Serialize>(json: bool, summary: &T, human: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string(summary) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("fjord: bench: cannot write JSON: {e}"),
        }
    } else {
        println!("{}", human());
    }
}

fn load_config(args: &ProduceBenchArgs) -> LoadConfig {
    LoadConfig {
        bootstrap: args.bootstrap_server.clone(),
        topic: args.topic.clone(),
        records: args.records,
        record_size: args.record_size,
        throughput: args.throughput,
        acks: args.acks,
        producers: usize::from(args.producers),
        batch_size: args.batch_size as usize,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression,
        in_flight: usize::from(args.in_flight),
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
    }
}

/// The run's produce figures; an error when nothing at all was acknowledged.
fn produce_summary(stats: &Stats, seconds: f64) -> Result<Summary, Failure> {
    if stats.records == 0 {
        if let Some(e) = &stats.first_error {
            return Err(format!("no record was acknowledged: {e}").into());
        }
    }
    if let Some(e) = &stats.first_error {
        eprintln!(
            "fjord: bench: {} records failed, the first with: {e}",
            stats.failed
        );
    }
    Ok(Summary::new(
        stats.records,
        stats.bytes,
        seconds,
        stats.failed,
        Some(&stats.latency),
    ))
}

async fn bench_produce(args: ProduceBenchArgs) -> Result<(), Failure> {
    let partitions = prepare_topic(&args).await?;
    let config = load_config(&args);
    let stats = Stats::shared();
    let progress = Progress::start(Source::Produce(stats.clone()), args.records);
    let clock = Clock::now();
    load::run(&config, partitions, clock, stats.clone()).await?;
    let seconds = clock.start.elapsed().as_secs_f64();
    drop(progress);
    let stats = stats.lock().map_err(|_| "statistics lost".to_string())?;
    let summary = produce_summary(&stats, seconds)?;
    print(args.json, &summary, || summary.human("sent"));
    if summary.failed > 0 {
        return Err(format!("{} of {} records failed", summary.failed, args.records).into());
    }
    Ok(())
}

async fn bench_consume(args: ConsumeBenchArgs) -> Result<(), Failure> {
    topic_partitions(&args.bootstrap_server, &args.topic).await?;
    let counter = Arc::new(Counter::default());
    let progress = Progress::start(Source::Consume(counter.clone()), args.records.unwrap_or(0));
    let config = ReadConfig {
        bootstrap: args.bootstrap_server.clone(),
        topic: args.topic.clone(),
        records: args.records,
        group: args.group.clone(),
        idle_timeout: Duration::from_millis(args.timeout_ms),
        consumer: read::consumer_config(false),
    };
    let outcome = read::read(config, None, counter, None).await?;
    drop(progress);
    let summary = Summary::new(outcome.records, outcome.bytes, outcome.seconds, 0, None);
    print(args.json, &summary, || summary.human("read"));
    missing(&outcome, args.records, args.timeout_ms)
}

/// An error when fewer records came than asked for.
fn missing(outcome: &ReadOutcome, wanted: Option<u64>, timeout_ms: u64) -> Result<(), Failure> {
    match wanted {
        Some(n) if outcome.records < n => Err(format!(
            "only {} of {n} records arrived (none for {timeout_ms} ms)",
            outcome.records
        )
        .into()),
        _ => Ok(()),
    }
}

async fn bench_e2e(args: E2eBenchArgs) -> Result<(), Failure> {
    let produce = &args.produce;
    if produce.record_size < STAMP_BYTES {
        return Err(Failure::usage(format!(
            "--record-size must be at least {STAMP_BYTES} for e2e: the send time rides in the value"
        )));
    }
    let partitions = prepare_topic(produce).await?;
    let stats = Stats::shared();
    let counter = Arc::new(Counter::default());
    let progress = Progress::start(
        Source::Both(stats.clone(), counter.clone()),
        produce.records,
    );
    let clock = Clock::now();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(read::read(
        ReadConfig {
            bootstrap: produce.bootstrap_server.clone(),
            topic: produce.topic.clone(),
            records: Some(produce.records),
            group: None,
            idle_timeout: Duration::from_millis(args.timeout_ms),
            consumer: read::consumer_config(true),
        },
        Some(clock),
        counter,
        Some(ready_tx),
    ));
    // Produce only once the consumer's positions are fixed at the end.
    if ready_rx.await.is_err() {
        let outcome = reader.await.map_err(|e| e.to_string())?;
        return Err(outcome
            .err()
            .unwrap_or_else(|| "the consumer stopped".into())
            .into());
    }
    // Fixed-rate send times count from here, on the reader's clock.
    let clock = clock.restarted();
    let produced = load::run(&load_config(produce), partitions, clock, stats.clone()).await;
    let produce_seconds = clock.start.elapsed().as_secs_f64();
    if let Err(e) = produced {
        reader.abort();
        return Err(e.into());
    }
    let outcome = reader.await.map_err(|e| e.to_string())??;
    drop(progress);
    let stats = stats.lock().map_err(|_| "statistics lost".to_string())?;
    let summary = E2eSummary {
        end_to_end: Summary::new(
            outcome.records,
            outcome.bytes,
            outcome
                .last_record
                .saturating_duration_since(clock.start)
                .as_secs_f64(),
            stats.failed,
            outcome.latency.as_ref(),
        ),
        produce: produce_summary(&stats, produce_seconds)?,
    };
    print(produce.json, &summary, || {
        format!(
            "{}\nproduce: {}",
            summary.end_to_end.human("end to end"),
            summary.produce.human("sent")
        )
    });
    if stats.failed > 0 {
        return Err(format!("{} of {} records failed", stats.failed, produce.records).into());
    }
    missing(
        &outcome,
        Some(produce.records - stats.failed),
        args.timeout_ms,
    )
}

/// The topic's partition count once every partition has a leader; creates
/// it first when `--partitions` says so and it is missing.
async fn prepare_topic(args: &ProduceBenchArgs) -> Result<i32, Failure> {
    if let Some(partitions) = args.partitions {
        create_topic(
            &args.bootstrap_server,
            &args.topic,
            partitions,
            args.replication_factor.unwrap_or(-1),
        )
        .await?;
    }
    topic_partitions(&args.bootstrap_server, &args.topic).await
}

/// How long a new topic may take to get a leader for every partition.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// The partition count of `topic` once every partition has a leader.
async fn topic_partitions(bootstrap: &str, topic: &str) -> Result<i32, Failure> {
    let mut client = KafkaClient::connect(bootstrap, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{bootstrap}: {e}"))?;
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let metadata = client
            .metadata(Some(vec![topic.to_string()]))
            .await
            .map_err(|e| format!("Metadata: {e}"))?;
        let found = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
        let last = match found {
            None => ResponseError::UnknownTopicOrPartition.code(),
            Some(t) if t.error_code != 0 => t.error_code,
            Some(t) if t.partitions.is_empty() => ResponseError::LeaderNotAvailable.code(),
            Some(t) => match t.partitions.iter().find(|p| p.leader_id.0 < 0) {
                None => return Ok(t.partitions.len() as i32),
                Some(_) => ResponseError::LeaderNotAvailable.code(),
            },
        };
        if last == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Failure::usage(format!(
                "topic '{topic}' does not exist: create it (fjord topic create), or pass --partitions N"
            )));
        }
        if Instant::now() >= deadline {
            let name = ResponseError::try_from_code(last)
                .map_or_else(|| format!("error {last}"), |e| format!("{e:?}"));
            return Err(format!("topic '{topic}': {name} after {LEADER_WAIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `topic` unless it exists; `replication_factor` -1 is the
/// broker's default.
async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), Failure> {
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
                return Err(format!("CreateTopics {topic}: {e:?}{message}").into());
            }
        }
    }
    Ok(())
}
