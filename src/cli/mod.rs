//! Subcommands, one file each. Each returns a process exit status: 0 on
//! success, 2 for something the user must fix in their input, 1 otherwise,
//! after printing one line that says why.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod dev_cluster;
pub mod group;
pub mod node;
pub mod produce;
pub mod topic;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fjord",
    version,
    about = "A Kafka-compatible message broker in KRaft mode"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node (controller and broker roles). With no arguments: a
    /// single-node cluster in ./fjord-data on ports 9092, 9093 and 9308.
    Node(node::NodeArgs),
    /// Start a local N-node quorum as child processes; Ctrl-C stops them all.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Inspect the cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Send each line of standard input as a record.
    Produce(produce::ProduceArgs),
    /// Print a topic's records.
    Consume(consume::ConsumeArgs),
    /// Create, list, describe, delete and alter topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// List, describe, delete consumer groups and reset their offsets.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Measure produce or consume throughput and latency.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Node(args) => node::run(args),
        Command::DevCluster(args) => dev_cluster::run(args),
        Command::Cluster { command } => cluster::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Bench { command } => bench::run(command),
        Command::Topic { command } => topic::run(command),
        Command::Group { command } => group::run(command),
    }
}

/// Parses `key=value` for `--override`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

/// A multi-threaded runtime for commands that talk to the network.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
