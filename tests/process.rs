//! The real `fjord` binary as a user runs it: configuration errors, a
//! 3-process quorum that fences a paused broker and survives kill -9 of its
//! leader, and `fjord dev-cluster`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::bin::{cluster_status, signal, FJORD};

fn fjord(args: &[&str], cwd: &Path) -> Output {
    Command::new(FJORD)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run fjord")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["node", "-o", "node.id=abc"], "node.id"),
        (
            &[
                "node",
                "-o",
                "broker.session.timeout.ms=10",
                "-o",
                "broker.heartbeat.interval.ms=100",
            ],
            "broker.session.timeout.ms",
        ),
        (
            &["node", "-o", "controller.quorum.voters=2@localhost:1"],
            "controller.quorum.voters",
        ),
        (&["node", "-o", "process.roles=broker"], "process.roles"),
        (
            &["node", "--config", "does-not-exist.properties"],
            "does-not-exist.properties",
        ),
    ];
    for (args, key) in cases {
        let out = fjord(args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_line(&out)
        );
        let err = stderr_line(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{args:?} should name {key}: {err}");
    }
}

/// A node running in the background; killed when dropped.
struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ProcessCluster {
    root: tempfile::TempDir,
    ports: Vec<(u16, u16)>,
    metrics_ports: Vec<u16>,
    extra: Vec<String>,
    nodes: Vec<Option<NodeProcess>>,
}

impl ProcessCluster {
    fn start(n: usize, extra: &[&str]) -> ProcessCluster {
        let mut c = ProcessCluster {
            root: tempfile::tempdir().unwrap(),
            ports: (0..n).map(|_| (free_port(), free_port())).collect(),
            metrics_ports: (0..n).map(|_| free_port()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nodes: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let voters: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(j, (_, c))| format!("{}@127.0.0.1:{c}", j + 1))
            .collect();
        let (kafka, controller) = self.ports[i];
        let log = self.root.path().join(format!("node-{}.log", i + 1));
        let mut args = vec![
            "node".to_string(),
            "--node-id".into(),
            (i + 1).to_string(),
            "--data-dir".into(),
            self.root
                .path()
                .join(format!("node-{}", i + 1))
                .display()
                .to_string(),
        ];
        let mut overrides = vec![
            format!("listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}"),
            format!("advertised.listeners=PLAINTEXT://127.0.0.1:{kafka}"),
            format!("controller.quorum.voters={}", voters.join(",")),
            format!("fjord.metrics.listen=127.0.0.1:{}", self.metrics_ports[i]),
        ];
        overrides.extend(self.extra.iter().cloned());
        for o in overrides {
            args.push("-o".into());
            args.push(o);
        }
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(FJORD)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        self.nodes[i] = Some(NodeProcess { child, log });
    }

    /// The body of `GET /metrics` on node `i`.
    fn scrape(&self, i: usize) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_ports[i])).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.starts_with("HTTP/1.").then_some(body)
    }

    fn node(&self, i: usize) -> &NodeProcess {
        self.nodes[i].as_ref().expect("node running")
    }

    /// `fjord cluster status --json` through node `i`.
    fn status(&self, i: usize) -> Option<serde_json::Value> {
        cluster_status(&format!("127.0.0.1:{}", self.ports[i].0))
    }

    fn broker_state(status: &serde_json::Value, id: i64) -> Option<String> {
        status["brokers"]
            .as_array()?
            .iter()
            .find(|b| b["id"].as_i64() == Some(id))
            .and_then(|b| b["state"].as_str().map(str::to_string))
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .flatten()
            .map(|n| {
                format!(
                    "--- {}\n{}",
                    n.log.display(),
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

fn all_active(c: &ProcessCluster, via: usize, n: usize) -> Option<serde_json::Value> {
    let s = c.status(via)?;
    let active = s["brokers"]
        .as_array()?
        .iter()
        .filter(|b| b["state"] == "active")
        .count();
    (active == n).then_some(s)
}

#[test]
fn a_paused_broker_is_fenced_and_unfenced_and_the_quorum_survives_kill_9() {
    let session_ms = 3000;
    let heartbeat_ms = 300;
    let mut c = ProcessCluster::start(
        3,
        &[
            &format!("broker.heartbeat.interval.ms={heartbeat_ms}"),
            &format!("broker.session.timeout.ms={session_ms}"),
            "controller.quorum.election.timeout.ms=500",
        ],
    );
    let status = wait_for("3 active brokers", Duration::from_secs(60), || {
        all_active(&c, 0, 3)
    });
    let leader = status["leader_id"].as_i64().unwrap();
    assert_eq!(status["voters"].as_array().unwrap().len(), 3, "{status}");
    // A live broker implies a named cluster: the id is written first.
    assert!(
        status["cluster_id"]
            .as_str()
            .is_some_and(|id| id.len() == 22),
        "{status}"
    );
    for field in ["cluster_id", "leader_epoch", "high_watermark"] {
        assert!(!status[field].is_null(), "status has {field}: {status}");
    }

    // The active controller exports the quorum's health; node 1, which
    // answered the status requests, the Kafka requests it served.
    let leader_idx = (leader - 1) as usize;
    let leader_metrics = wait_for("the leader's metrics", Duration::from_secs(30), || {
        c.scrape(leader_idx)
    });
    for name in [
        "fjord_raft_term ",
        "fjord_raft_commit_index ",
        "fjord_raft_applied_index ",
        "fjord_raft_is_leader 1",
        "fjord_raft_leader_changes_total ",
        "fjord_raft_append_to_commit_seconds_bucket",
        "fjord_controller_brokers_registered 3",
        "fjord_controller_brokers_fenced 0",
    ] {
        assert!(
            leader_metrics.contains(name),
            "metrics lack {name}:\n{leader_metrics}"
        );
    }
    let node1_metrics = wait_for("node 1's metrics", Duration::from_secs(30), || c.scrape(0));
    for name in [
        "fjord_kafka_requests_total{api=\"DescribeQuorum\"}",
        "fjord_kafka_request_duration_seconds_bucket{api=\"DescribeCluster\"",
    ] {
        assert!(
            node1_metrics.contains(name),
            "metrics lack {name}:\n{node1_metrics}"
        );
    }

    // Pause a follower: the active controller fences it after its session
    // expires, and unfences it when its heartbeats resume.
    let paused = (0..3).find(|i| *i as i64 + 1 != leader).unwrap();
    let paused_id = paused as i64 + 1;
    let watcher = (0..3).find(|i| *i != paused).unwrap();
    signal(&c.node(paused).child, libc::SIGSTOP);
    let stopped_at = Instant::now();
    wait_for(
        "the paused broker to be fenced",
        Duration::from_millis(session_ms + 15_000),
        || {
            let s = c.status(watcher)?;
            (ProcessCluster::broker_state(&s, paused_id)? == "fenced").then_some(())
        },
    );
    // Its last heartbeat may have gone out up to one interval before the
    // pause; the session is counted from that heartbeat.
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(session_ms - heartbeat_ms),
        "fenced {:?} after the pause, before its session could expire",
        stopped_at.elapsed()
    );
    signal(&c.node(paused).child, libc::SIGCONT);
    wait_for(
        "the resumed broker to be unfenced",
        Duration::from_secs(30),
        || all_active(&c, watcher, 3),
    );

    // kill -9 the active controller: the others elect a new one, which
    // accepts writes (here: fencing the dead broker) and answers status.
    let mut dead = c.nodes[leader_idx].take().unwrap();
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let survivor = (0..3).find(|i| *i != leader_idx).unwrap();
    let after = wait_for(
        "a new leader that fenced the killed one",
        Duration::from_secs(60),
        || {
            let s = c.status(survivor)?;
            (s["leader_id"].as_i64()? != leader
                && ProcessCluster::broker_state(&s, leader)? == "fenced")
                .then_some(s)
        },
    );
    assert!(
        after["leader_epoch"].as_i64() > status["leader_epoch"].as_i64(),
        "{after}"
    );

    // The killed node restarts from its store and rejoins.
    drop(dead);
    c.start_node(leader_idx);
    let rejoined = wait_for("the killed node to rejoin", Duration::from_secs(60), || {
        let s = all_active(&c, leader_idx, 3)?;
        let voters = s["voters"].as_array()?;
        voters
            .iter()
            .all(|v| v["lag"].as_i64() == Some(0))
            .then_some(s)
    });
    assert_eq!(rejoined["cluster_id"], status["cluster_id"], "{}", c.logs());
}

#[test]
fn a_data_dir_from_another_cluster_is_refused() {
    let mut c = ProcessCluster::start(1, &[]);
    let status = wait_for("the node to start", Duration::from_secs(60), || {
        all_active(&c, 0, 1)
    });
    let cluster_id = status["cluster_id"].as_str().unwrap().to_string();
    let mut node = c.nodes[0].take().unwrap();
    signal(&node.child, libc::SIGTERM);
    let exit = node.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0");
    drop(node);

    let data = c.root.path().join("node-1");
    let meta = std::fs::read_to_string(data.join("meta.properties")).unwrap();
    assert!(meta.contains(&format!("cluster.id={cluster_id}")), "{meta}");

    // Same directory, another node id.
    let out = fjord(
        &[
            "node",
            "--node-id",
            "7",
            "-o",
            "controller.quorum.voters=7@localhost:1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        c.root.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_line(&out));
    assert!(
        stderr_line(&out).contains("node.id 1"),
        "{}",
        stderr_line(&out)
    );
    // Same node id, another cluster.
    let out = fjord(
        &[
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "-o",
            "fjord.cluster.id=someotherclusterid",
        ],
        c.root.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_line(&out));
    assert!(
        stderr_line(&out).contains(&cluster_id),
        "{}",
        stderr_line(&out)
    );
}
