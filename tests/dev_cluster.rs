//! `fjord dev-cluster` as a user runs it. Its own test binary, so that no
//! other test's connections hold a port in its fixed range (39092 and up are
//! inside Linux's ephemeral port range) while it starts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::bin::{cluster_status, signal, FJORD};

fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > deadline {
            eprintln!("timed out after {deadline:?} waiting for {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_logs(dir: &std::path::Path) -> String {
    (1..=3)
        .map(|n| {
            let path = dir.join(format!("node-{n}.log"));
            format!(
                "--- {}\n{}",
                path.display(),
                std::fs::read_to_string(&path).unwrap_or_default()
            )
        })
        .collect()
}

/// Whether a listener like a node's (SO_REUSEADDR, so TIME_WAIT is no
/// obstacle) could bind `port` now.
fn port_bindable(port: u16) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return false;
        };
        socket.set_reuseaddr(true).is_ok()
            && socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .is_ok()
    })
}

#[test]
fn dev_cluster_starts_three_nodes_and_stops_them_on_sigterm() {
    // dev-cluster uses fixed ports (N9092...). 39092 and up are in Linux's
    // ephemeral range: a connection an earlier test binary left closing
    // (FIN_WAIT, up to a minute after its process exits) can hold one. Wait
    // until a node could bind them all; if one stays taken, the test fails
    // and prints the node's own error from its log.
    let free = wait_for(
        "dev-cluster's ports to be free",
        Duration::from_secs(90),
        || {
            let all_free = (1..=3u16).all(|n| {
                [9092, 9093, 9308]
                    .iter()
                    .all(|p| port_bindable(n * 10000 + p))
            });
            all_free.then_some(())
        },
    );
    assert!(free.is_some(), "dev-cluster's ports stayed taken");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(FJORD)
        .args(["dev-cluster", "--nodes", "3", "--dir"])
        .arg(dir.path())
        .args(["-o", "broker.heartbeat.interval.ms=300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(
        "the dev cluster's 3 brokers",
        Duration::from_secs(90),
        || {
            let s = cluster_status("localhost:29092")?;
            let active = s["brokers"]
                .as_array()?
                .iter()
                .filter(|b| b["state"] == "active")
                .count();
            (active == 3).then_some(s)
        },
    );
    let Some(status) = status else {
        let _ = child.kill();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
        panic!(
            "dev cluster never had 3 active brokers\n{stderr}\n{}",
            node_logs(dir.path())
        );
    };
    let ports: Vec<i64> = status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, vec![19092, 29092, 39092]);
    signal(&child, libc::SIGTERM);
    let exit = wait_for("dev-cluster to exit", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    })
    .expect("dev-cluster exits after SIGTERM");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(exit.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("bootstrap servers: localhost:19092,localhost:29092,localhost:39092"),
        "{stdout}"
    );
    assert!(
        stdout.contains("http://localhost:19308/metrics"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("stopped (exit status: 0)").count(),
        3,
        "{stdout}"
    );
}
