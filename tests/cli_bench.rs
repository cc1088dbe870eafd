//! `fjord bench` as a user runs it: the real binary against a real node
//! process. What is checked is what the figures mean (counts, bytes, the
//! order of percentiles, the pace of fixed-rate mode, commits of a group
//! read), never how fast anything is.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::bin::{cluster_status, FJORD};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A single-node cluster in its own process; killed when dropped.
struct Node {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts a node and waits until its broker is active (topics can be placed).
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kafka, controller, metrics) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let child = Command::new(FJORD)
            .arg("node")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "-o",
                &format!(
                    "listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}"
                ),
            ])
            .args([
                "-o",
                &format!("controller.quorum.voters=1@127.0.0.1:{controller}"),
            ])
            .args(["-o", &format!("fjord.metrics.listen=127.0.0.1:{metrics}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start fjord node");
        let node = Node {
            child,
            bootstrap: format!("127.0.0.1:{kafka}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let active = cluster_status(&node.bootstrap).is_some_and(|s| {
                s["brokers"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["state"] == "active"))
            });
            if active {
                return node;
            }
            assert!(Instant::now() < deadline, "the node did not become active");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fjord(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--bootstrap-server", &self.bootstrap]);
        Command::new(FJORD).args(&full).output().expect("run fjord")
    }

    /// Runs a bench that must succeed and returns its JSON summary.
    fn bench(&self, args: &[&str]) -> serde_json::Value {
        let out = self.fjord(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn number(summary: &serde_json::Value, field: &str) -> f64 {
    summary[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {summary}"))
}

/// Counts, bytes and latencies that can be true of a run of `records`
/// records of `size` bytes.
fn assert_plausible(summary: &serde_json::Value, records: u64, size: u64) {
    assert_eq!(summary["records"], records, "{summary}");
    assert_eq!(summary["bytes"], records * size, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let seconds = number(summary, "seconds");
    assert!(seconds > 0.0, "{summary}");
    let rate = number(summary, "records_per_sec");
    assert!((rate * seconds - records as f64).abs() < 1.0, "{summary}");
    let mb = number(summary, "mb_per_sec");
    assert!(
        (mb * seconds * 1e6 - (records * size) as f64).abs() < 1e3,
        "{summary}"
    );
    let latencies: Vec<f64> = ["p50", "p95", "p99", "p999", "max"]
        .iter()
        .map(|p| number(summary, &format!("latency_ms_{p}")))
        .collect();
    assert!(latencies[0] > 0.0, "{summary}");
    assert!(
        latencies.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {summary}"
    );
    let avg = number(summary, "latency_ms_avg");
    assert!(avg > 0.0 && avg <= latencies[4], "{summary}");
}

#[test]
fn produce_then_consume_reads_exactly_what_was_written() {
    let node = Node::start();
    let produced = node.bench(&[
        "bench",
        "produce",
        "--topic",
        "load",
        "--partitions",
        "3",
        "--records",
        "3000",
        "--record-size",
        "100",
        "--producers",
        "2",
        "--batch-size",
        "4096",
        "--json",
    ]);
    assert_plausible(&produced, 3000, 100);

    let read = node.bench(&[
        "bench",
        "consume",
        "--topic",
        "load",
        "--records",
        "3000",
        "--json",
    ]);
    assert_eq!(read["records"], 3000, "{read}");
    assert_eq!(read["bytes"], 300_000, "{read}");
    assert!(read["latency_ms_p99"].is_null(), "{read}");
    // Without --records: everything up to the end offsets.
    let all = node.bench(&["bench", "consume", "--topic", "load", "--json"]);
    assert_eq!(all["records"], 3000, "{all}");
    // Asking for more than there is ends, after the idle timeout, in failure.
    let out = node.fjord(&[
        "bench",
        "consume",
        "--topic",
        "load",
        "--records",
        "3001",
        "--timeout-ms",
        "1000",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only 3000 of 3001"), "{stderr}");
}

#[test]
fn fixed_rate_keeps_the_pace_it_was_given() {
    let node = Node::start();
    // 300 records at 200 records/s: the last is due 1.495 s after the first.
    let started = Instant::now();
    let summary = node.bench(&[
        "bench",
        "produce",
        "--topic",
        "paced",
        "--partitions",
        "2",
        "--records",
        "300",
        "--record-size",
        "64",
        "--throughput",
        "200",
        "--acks",
        "all",
        "--json",
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    assert_plausible(&summary, 300, 64);
    assert!(number(&summary, "seconds") >= 1.49, "{summary}");
    assert!(elapsed >= 1.49, "the run took {elapsed} s");
}

#[test]
fn e2e_reads_every_record_it_produces() {
    let node = Node::start();
    let summary = node.bench(&[
        "bench",
        "e2e",
        "--topic",
        "round-trip",
        "--partitions",
        "2",
        "--records",
        "2000",
        "--record-size",
        "64",
        "--json",
    ]);
    assert_plausible(&summary, 2000, 64);
    assert_plausible(&summary["produce"], 2000, 64);
    // A record cannot arrive before its acknowledgement's earliest moment.
    assert!(
        number(&summary, "latency_ms_max") >= number(&summary["produce"], "latency_ms_p50") / 2.0,
        "{summary}"
    );
}

/// The sum of the group's committed offsets on `topic`.
fn committed(node: &Node, group: &str) -> i64 {
    let out = node.fjord(&["group", "describe", group, "--json"]);
    assert!(
        out.status.success(),
        "describe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).expect("describe JSON");
    described["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .filter_map(|o| o["committed_offset"].as_i64())
        .sum()
}

#[test]
fn a_group_read_commits_what_it_counted_and_the_next_goes_on_from_there() {
    let node = Node::start();
    node.bench(&[
        "bench",
        "produce",
        "--topic",
        "grouped",
        "--partitions",
        "3",
        "--records",
        "500",
        "--record-size",
        "32",
        "--json",
    ]);
    let first = node.bench(&[
        "bench",
        "consume",
        "--topic",
        "grouped",
        "--group",
        "readers",
        "--records",
        "300",
        "--json",
    ]);
    assert_eq!(first["records"], 300, "{first}");
    assert_eq!(committed(&node, "readers"), 300);
    let rest = node.bench(&[
        "bench",
        "consume",
        "--topic",
        "grouped",
        "--group",
        "readers",
        "--records",
        "200",
        "--json",
    ]);
    assert_eq!(rest["records"], 200, "{rest}");
    assert_eq!(committed(&node, "readers"), 500);
}

#[test]
fn mistakes_end_with_one_line_that_names_them() {
    let node = Node::start();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["bench", "produce", "--topic", "missing", "--records", "10"],
            2,
            "missing",
        ),
        (&["bench", "consume", "--topic", "missing"], 2, "missing"),
        (
            &["bench", "produce", "--topic", "t", "--acks", "2"],
            2,
            "--acks",
        ),
        (
            &["bench", "produce", "--topic", "t", "--throughput", "0"],
            2,
            "--throughput",
        ),
        (
            &["bench", "produce", "--topic", "t", "--producers", "0"],
            2,
            "--producers",
        ),
        (
            &[
                "bench",
                "produce",
                "--topic",
                "t",
                "--compression",
                "brotli",
            ],
            2,
            "--compression",
        ),
        (
            &[
                "bench",
                "e2e",
                "--topic",
                "t",
                "--partitions",
                "1",
                "--record-size",
                "8",
            ],
            2,
            "--record-size",
        ),
        (
            &["bench", "consume", "--topic", "t", "--group", "g"],
            2,
            "--records",
        ),
        // One broker cannot hold three replicas: the broker's refusal, named.
        (
            &[
                "bench",
                "produce",
                "--topic",
                "t3",
                "--partitions",
                "1",
                "--replication-factor",
                "3",
            ],
            1,
            "InvalidReplicationFactor",
        ),
    ];
    for (args, code, needle) in cases {
        let out = node.fjord(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?} should name {needle}: {stderr}"
        );
        if *code == 1 || args.contains(&"missing") || args.contains(&"--record-size") {
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{args:?}: one line: {stderr}"
            );
        }
    }
}
