//! `fjord produce TOPIC`: each line of standard input becomes one record,
//! as with Kafka's `kafka-console-producer.sh`. With `--key-separator`
//! the text before the first separator is the key (`parse.key=true`); a
//! line without it is an error, as it is there. Silent on success; the
//! first failed record ends the run with one line naming its partition and
//! the Kafka error, after the records already sent have been accounted for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::producer::{
    parse_compression, Acks, ProduceError, Producer, ProducerConfig, ProducerRecord,
};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic to write to.
    pub topic: String,
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = |s: &str| s.parse::<Acks>())]
    pub acks: Acks,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: kafka_protocol::records::Compression,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// A header on every record, `key=value`; repeat for more.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Seconds a record may take, retries included.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

pub fn run(args: ProduceArgs) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(produce(args)) {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("fjord: produce: {e}");
            2
        }
        Err(Failure::Other(e)) => {
            eprintln!("fjord: produce: {e}");
            1
        }
    }
}

enum Failure {
    Usage(String),
    Other(String),
}

async fn produce(args: ProduceArgs) -> Result<(), Failure> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        request_timeout: timeout,
        delivery_timeout: timeout,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&args.bootstrap_server, config)
        .await
        .map_err(|e| Failure::Other(format!("{}: {e}", args.bootstrap_server)))?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
        .collect();
    // The first failure wins; later ones are usually the same cause.
    let first_error: Arc<Mutex<Option<ProduceError>>> = Arc::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut line_number = 0u64;
    let mut input_error = None;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                input_error = Some(Failure::Other(format!("reading standard input: {e}")));
                break;
            }
        };
        line_number += 1;
        if first_error.lock().map_or(true, |e| e.is_some()) {
            break;
        }
        let (key, value) = match split_key(&line, &args) {
            Ok(kv) => kv,
            Err(e) => {
                input_error = Some(Failure::Usage(format!("line {line_number}: {e}")));
                break;
            }
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: None,
        };
        let errors = first_error.clone();
        let callback = Box::new(move |result: Result<_, ProduceError>| {
            if let Err(e) = result {
                if let Ok(mut first) = errors.lock() {
                    first.get_or_insert(e);
                }
            }
        });
        if let Err(e) = producer.send_with(record, callback).await {
            input_error = Some(Failure::Other(e.to_string()));
            break;
        }
    }
    let closed = producer.close().await;
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(Failure::Other(e.to_string()));
    }
    if let Some(e) = input_error {
        return Err(e);
    }
    closed.map_err(|e| Failure::Other(e.to_string()))
}

fn split_key(line: &str, args: &ProduceArgs) -> Result<(Option<Bytes>, Bytes), String> {
    if let Some(separator) = args.key_separator.as_deref().filter(|s| !s.is_empty()) {
        return match line.split_once(separator) {
            Some((key, value)) => Ok((
                Some(Bytes::copy_from_slice(key.as_bytes())),
                Bytes::copy_from_slice(value.as_bytes()),
            )),
            None => Err(format!("no key separator '{separator}' in the line")),
        };
    }
    let key = args.key.as_ref().map(|k| Bytes::from(k.clone()));
    Ok((key, Bytes::copy_from_slice(line.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn parse(argv: &[&str]) -> ProduceArgs {
        Wrapper::try_parse_from(std::iter::once("produce").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn keys_come_from_the_separator_or_the_flag() {
        let args = parse(&["t", "--key-separator", ":"]);
        let (key, value) = split_key("user-1:hello: world", &args).unwrap();
        assert_eq!(key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(&value[..], b"hello: world");
        assert!(split_key("no separator here", &args)
            .unwrap_err()
            .contains("no key separator"));

        let args = parse(&["t", "--key", "k"]);
        let (key, value) = split_key("a:b", &args).unwrap();
        assert_eq!(key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&value[..], b"a:b");

        let (key, _) = split_key("x", &parse(&["t"])).unwrap();
        assert_eq!(key, None);
    }

    #[test]
    fn flags_parse_as_documented() {
        let args = parse(&[
            "t",
            "--acks",
            "0",
            "--compression",
            "zstd",
            "--header",
            "a=1",
            "--header",
            "b=x=y",
        ]);
        assert_eq!(args.acks, Acks::None);
        assert_eq!(args.compression, kafka_protocol::records::Compression::Zstd);
        assert_eq!(
            args.headers,
            vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
        let bad = Wrapper::try_parse_from(["produce", "t", "--acks", "2"]);
        assert!(bad.is_err());
        let both = Wrapper::try_parse_from(["produce", "t", "--key", "k", "--key-separator", ":"]);
        assert!(both.is_err());
    }
}
