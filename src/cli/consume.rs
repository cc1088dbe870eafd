//! `fjord consume TOPIC`: prints records as Kafka's
//! `kafka-console-consumer.sh` does, one per line, value last, optional
//! fields before it in its order (partition, offset, headers, key) and
//! tab-separated; `--json` prints one object per line instead. Starts at
//! the end of each partition unless told otherwise, and runs until
//! `--max-messages`, `--timeout-ms` of silence, or Ctrl-C.
//!
//! With `--group` it reads as a member of that consumer group: the group
//! hands it partitions, it starts at the group's committed offsets (else
//! at the end, or the beginning with `--from-beginning`, as
//! `auto.offset.reset`), commits after each printed batch and on the way
//! out, and leaves the group on exit and Ctrl-C so its partitions move on
//! at once.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::json;

use crate::client::consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset, StartOffset};
use crate::client::group::{GroupConfig, GroupConsumer};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    pub offset: Option<i64>,
    /// Read as a member of this consumer group (partitions from the group,
    /// committed offsets); --from-beginning then applies to partitions the
    /// group has no offset for.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// Exit after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit (status 0) after this long without a new record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub print_key: bool,
    #[arg(long)]
    pub print_offset: bool,
    #[arg(long)]
    pub print_partition: bool,
    #[arg(long)]
    pub print_headers: bool,
    /// One JSON object per record (every field).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ConsumeArgs) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    let topic = args.topic.clone();
    if args.group.is_some() {
        // Not cancelled from outside: Ctrl-C ends the loop, which then
        // commits and leaves the group.
        return finish(&topic, rt.block_on(consume_group(args)));
    }
    let result = rt.block_on(async {
        tokio::select! {
            result = consume(args) => result,
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    finish(&topic, result)
}

fn finish(topic: &str, result: Result<Option<u64>, String>) -> i32 {
    match result {
        Ok(Some(count)) => {
            eprintln!("Processed a total of {count} messages");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("fjord: consume {topic}: {e}");
            1
        }
    }
}

fn consumer_config(args: &ConsumeArgs) -> ConsumerConfig {
    ConsumerConfig {
        reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..ConsumerConfig::default()
    }
}

/// `consume` as a group member; see the module docs.
async fn consume_group(args: ConsumeArgs) -> Result<Option<u64>, String> {
    let group = args.group.clone().unwrap_or_default();
    let about = |e: &dyn std::fmt::Display| format!("group '{group}': {e}");
    let mut consumer = GroupConsumer::subscribe(
        &args.bootstrap_server,
        &args.topic,
        GroupConfig::new(&group),
        consumer_config(&args),
    )
    .await
    .map_err(|e| about(&e))?;
    let outcome = tokio::select! {
        outcome = print_group(&args, &mut consumer) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(None),
    };
    // What was printed is committed even if reading failed; a failed
    // commit or leave is reported, but a reading error comes first.
    let closed = consumer.close().await.map_err(|e| about(&e));
    let count = outcome.map_err(|e| about(&e))?;
    closed?;
    Ok(count)
}

/// The print loop of [`consume_group`]: returns the count when a limit
/// ends it, `None` when stdout closed. Cancel-safe between records: every
/// printed record is marked consumed before the next await.
async fn print_group(
    args: &ConsumeArgs,
    consumer: &mut GroupConsumer,
) -> Result<Option<u64>, crate::client::consumer::ConsumeError> {
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|max| count >= max) {
            return Ok(Some(count));
        }
        let records = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_record.elapsed());
                match tokio::time::timeout(left, consumer.poll()).await {
                    Ok(records) => records?,
                    Err(_) => return Ok(Some(count)),
                }
            }
            None => consumer.poll().await?,
        };
        if records.is_empty() {
            if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
                return Ok(Some(count));
            }
            continue;
        }
        last_record = Instant::now();
        {
            let mut out = stdout.lock();
            for record in &records {
                if args.max_messages.is_some_and(|max| count >= max) {
                    break;
                }
                let line = format_record(args, consumer.topic(), record);
                if writeln!(out, "{line}").is_err() {
                    return Ok(None);
                }
                consumer.mark_consumed(record);
                count += 1;
            }
            if out.flush().is_err() {
                return Ok(None);
            }
        }
        if let Err(e) = consumer.commit().await {
            // The group moved on: the next poll rejoins; what this commit
            // covered may be read again by the partition's new owner.
            if !consumer.member().rebalance_needed() {
                return Err(e);
            }
        }
    }
}

async fn consume(args: ConsumeArgs) -> Result<Option<u64>, String> {
    let start = match (args.offset, args.from_beginning) {
        (Some(offset), _) => StartOffset::At(offset),
        (None, true) => StartOffset::Earliest,
        (None, false) => StartOffset::Latest,
    };
    let config = consumer_config(&args);
    let partitions = args.partition.map(|p| vec![p]);
    let mut consumer = Consumer::assign(
        &args.bootstrap_server,
        &args.topic,
        partitions,
        start,
        config,
    )
    .await
    .map_err(|e| e.to_string())?;
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut count = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|max| count >= max) {
            return Ok(Some(count));
        }
        let poll = consumer.poll();
        let records = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_record.elapsed());
                match tokio::time::timeout(left, poll).await {
                    Ok(records) => records,
                    Err(_) => return Ok(Some(count)),
                }
            }
            None => poll.await,
        }
        .map_err(|e| e.to_string())?;
        if records.is_empty() {
            if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
                return Ok(Some(count));
            }
            continue;
        }
        last_record = Instant::now();
        let mut out = stdout.lock();
        for record in &records {
            if args.max_messages.is_some_and(|max| count >= max) {
                break;
            }
            let line = format_record(&args, consumer.topic(), record);
            // A closed pipe (`| head`) ends the run quietly.
            if writeln!(out, "{line}").is_err() {
                return Ok(None);
            }
            count += 1;
        }
        if out.flush().is_err() {
            return Ok(None);
        }
    }
}

fn text(bytes: &Option<Bytes>) -> String {
    match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

fn format_record(args: &ConsumeArgs, topic: &str, record: &ConsumedRecord) -> String {
    if args.json {
        let headers: serde_json::Map<String, serde_json::Value> = record
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
                (k.clone(), json!(v))
            })
            .collect();
        let bytes = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        return json!({
            "topic": topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": bytes(&record.key),
            "value": bytes(&record.value),
            "headers": headers,
        })
        .to_string();
    }
    let mut fields = Vec::new();
    if args.print_partition {
        fields.push(format!("Partition:{}", record.partition));
    }
    if args.print_offset {
        fields.push(format!("Offset:{}", record.offset));
    }
    if args.print_headers {
        if record.headers.is_empty() {
            fields.push("NO_HEADERS".into());
        } else {
            let headers: Vec<String> = record
                .headers
                .iter()
                .map(|(k, v)| format!("{k}:{}", text(v)))
                .collect();
            fields.push(headers.join(","));
        }
    }
    if args.print_key {
        fields.push(text(&record.key));
    }
    fields.push(text(&record.value));
    fields.join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kafka_protocol::records::TimestampType;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("consume").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_000,
            timestamp_type: TimestampType::Creation,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![("trace".into(), Some(Bytes::from_static(b"abc")))],
        }
    }

    #[test]
    fn lines_follow_the_console_consumer_order() {
        let args = parse(&["t"]).unwrap();
        assert_eq!(format_record(&args, "t", &record()), "hello");
        let args = parse(&[
            "t",
            "--print-key",
            "--print-offset",
            "--print-partition",
            "--print-headers",
        ])
        .unwrap();
        assert_eq!(
            format_record(&args, "t", &record()),
            "Partition:2\tOffset:41\ttrace:abc\tuser-1\thello"
        );
        let mut keyless = record();
        keyless.key = None;
        keyless.headers.clear();
        assert_eq!(
            format_record(&args, "t", &keyless),
            "Partition:2\tOffset:41\tNO_HEADERS\tnull\thello"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let args = parse(&["t", "--json"]).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(&format_record(&args, "orders", &record())).unwrap();
        assert_eq!(line["topic"], "orders");
        assert_eq!(line["partition"], 2);
        assert_eq!(line["offset"], 41);
        assert_eq!(line["key"], "user-1");
        assert_eq!(line["value"], "hello");
        assert_eq!(line["headers"]["trace"], "abc");
    }

    #[test]
    fn an_offset_needs_a_partition() {
        assert!(parse(&["t", "--offset", "5"]).is_err());
        assert!(parse(&["t", "--offset", "5", "--partition", "0"]).is_ok());
        assert!(parse(&["t", "--offset", "5", "--partition", "0", "--from-beginning"]).is_err());
    }
}
