//! Metadata writes on a 3-node loopback quorum (in process): commit latency
//! of one write at a time, and throughput with many writes in flight.
//!
//! Run: `cargo bench --bench metadata_quorum` (prints a table; asserts nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::config::Config;
use fjord::metadata::records::ConfigResourceType;
use fjord::metadata::MetadataRecord;
use fjord::node::{start_with_listeners, RunningNode};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;

fn write(i: u64) -> MetadataRecord {
    MetadataRecord::Config {
        resource_type: ConfigResourceType::Broker,
        resource_name: String::new(),
        name: format!("bench.{}", i % 1000),
        value: Some(i.to_string()),
    }
}

async fn start_cluster(root: &std::path::Path) -> Vec<RunningNode> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let k = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.push((k, c));
    }
    let voters: Vec<String> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{}", i + 1, c.local_addr().unwrap().port()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (k, c)) in listeners.into_iter().enumerate() {
        let text = format!(
            "node.id={}\nlisteners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}\n\
             controller.quorum.voters={}\nlog.dirs={}\n",
            i + 1,
            k.local_addr().unwrap().port(),
            c.local_addr().unwrap().port(),
            voters.join(","),
            root.join(format!("node-{}", i + 1)).display()
        );
        let config = Config::from_properties(&text, &[]).unwrap().0;
        nodes.push(start_with_listeners(config, k, c).await.unwrap());
    }
    nodes
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start_cluster(root.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.controller.is_leader()) {
            break n.controller.clone();
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Warm up.
    for i in 0..100 {
        leader.propose(vec![write(i)]).await.unwrap();
    }

    let n = 2000u64;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        leader.propose(vec![write(i)]).await.unwrap();
        hist.record(t.elapsed().as_micros() as u64).unwrap();
    }
    let serial = start.elapsed();
    println!(
        "sequential: {n} writes in {:.2}s = {:.0} writes/s; commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        serial.as_secs_f64(),
        n as f64 / serial.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );

    for in_flight in [16u64, 64] {
        let n = 10_000u64;
        let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..in_flight {
            let leader = leader.clone();
            let hist = hist.clone();
            tasks.spawn(async move {
                let mut i = w;
                while i < n {
                    let t = Instant::now();
                    leader.propose(vec![write(i)]).await.unwrap();
                    hist.lock()
                        .unwrap()
                        .record(t.elapsed().as_micros() as u64)
                        .unwrap();
                    i += in_flight;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let took = start.elapsed();
        let h = hist.lock().unwrap();
        println!(
            "{in_flight} in flight: {n} writes in {:.2}s = {:.0} writes/s; commit latency p50 {:.2} ms, p99 {:.2} ms",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}
