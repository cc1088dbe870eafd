//! Metadata-quorum failover time with real processes: kill -9 the active
//! controller of a 3-node quorum and time until a survivor's /metrics shows
//! a new leader and a commit index past the old high watermark (a new
//! leader's first write is the entry it commits on election). Metrics are
//! polled every 10 ms, so the figure is not quantised by request timeouts.
//!
//! Run: `cargo bench --bench failover` (prints each round; asserts nothing).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
const ROUNDS: usize = 5;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(kafka_port: u16) -> Option<serde_json::Value> {
    let out = Command::new(FJORD)
        .args([
            "cluster",
            "status",
            "--json",
            "--timeout",
            "2",
            "--bootstrap-server",
        ])
        .arg(format!("127.0.0.1:{kafka_port}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// (leader id, commit index) from a node's /metrics.
fn raft_gauges(metrics_port: u16) -> Option<(i64, i64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let gauge = |name: &str| -> Option<i64> {
        let line = body
            .lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))?;
        line.rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()
            .map(|v| v as i64)
    };
    Some((
        gauge("fjord_raft_leader_id")?,
        gauge("fjord_raft_commit_index")?,
    ))
}

fn spawn(i: usize, ports: &[(u16, u16, u16)], root: &std::path::Path) -> Child {
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(j, (_, c, _))| format!("{}@127.0.0.1:{c}", j + 1))
        .collect();
    let (k, c, m) = ports[i];
    Command::new(FJORD)
        .args(["node", "--node-id", &(i + 1).to_string(), "--data-dir"])
        .arg(root.join(format!("node-{}", i + 1)))
        .args([
            "-o",
            &format!("listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}"),
        ])
        .args([
            "-o",
            &format!("controller.quorum.voters={}", voters.join(",")),
        ])
        .args(["-o", &format!("fjord.metrics.listen=127.0.0.1:{m}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let mut nodes: Vec<Child> = (0..3).map(|i| spawn(i, &ports, root.path())).collect();
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let before = loop {
            if let Some(s) = status(ports[0].0).or_else(|| status(ports[1].0)) {
                let all_caught_up = s["voters"]
                    .as_array()
                    .is_some_and(|v| v.iter().all(|v| v["lag"] == 0));
                if all_caught_up && s["leader_id"].as_i64().is_some() {
                    break s;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let leader = before["leader_id"].as_i64().unwrap() as usize - 1;
        let hw = before["high_watermark"].as_i64().unwrap();
        let survivor = (leader + 1) % 3;
        nodes[leader].kill().unwrap();
        let killed = Instant::now();
        nodes[leader].wait().unwrap();
        loop {
            if let Some((new_leader, commit)) = raft_gauges(ports[survivor].2) {
                // The high watermark is exclusive: index hw is the first new entry.
                if new_leader > 0 && new_leader != leader as i64 + 1 && commit >= hw {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = killed.elapsed();
        println!(
            "round {round}: kill -9 of leader {} -> new leader committing after {:.0} ms",
            leader + 1,
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
        nodes[leader] = spawn(leader, &ports, root.path());
    }
    times.sort();
    println!(
        "failover over {ROUNDS} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms (election timeout 1000-2000 ms)",
        times[0].as_secs_f64() * 1000.0,
        times[ROUNDS / 2].as_secs_f64() * 1000.0,
        times[ROUNDS - 1].as_secs_f64() * 1000.0
    );
    for mut n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}
