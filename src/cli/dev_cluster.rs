//! `fjord dev-cluster`: an N-node quorum on loopback as child processes of
//! this one, with the same ports as `config/node-N.properties`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// Number of nodes (1 to 5); node N listens on N9092 (Kafka), N9093 (controller), N9308 (metrics).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub nodes: u16,
    /// Where each node keeps its data, config and log.
    #[arg(long, default_value = "./fjord-dev")]
    pub dir: PathBuf,
    /// Extra config for every node, `key=value`; repeatable.
    #[arg(long = "override", short = 'o', value_parser = super::parse_key_value)]
    pub overrides: Vec<(String, String)>,
}

/// The ports of node `n` in a dev cluster.
pub fn ports(n: u16) -> (u16, u16, u16) {
    (n * 10000 + 9092, n * 10000 + 9093, n * 10000 + 9308)
}

fn node_properties(n: u16, count: u16, dir: &Path, overrides: &[(String, String)]) -> String {
    let (kafka, controller, metrics) = ports(n);
    let voters: Vec<String> = (1..=count)
        .map(|i| format!("{i}@localhost:{}", ports(i).1))
        .collect();
    let mut text = format!(
        "# Written by `fjord dev-cluster`.\n\
         node.id={n}\n\
         process.roles=broker,controller\n\
         listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://localhost:{kafka}\n\
         controller.listener.names=CONTROLLER\n\
         controller.quorum.voters={}\n\
         log.dirs={}\n\
         fjord.metrics.listen=127.0.0.1:{metrics}\n",
        voters.join(","),
        dir.join(format!("node-{n}")).display(),
    );
    for (k, v) in overrides {
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

pub fn run(args: DevClusterArgs) -> i32 {
    match super::runtime() {
        Ok(rt) => rt.block_on(run_cluster(args)),
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            1
        }
    }
}

async fn run_cluster(args: DevClusterArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fjord: cannot find the fjord binary: {e}");
            return 1;
        }
    };
    if let Err(e) = fs::create_dir_all(&args.dir) {
        eprintln!("fjord: --dir {}: {e}", args.dir.display());
        return 2;
    }
    let dir = fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());
    let mut children: Vec<(u16, Child)> = Vec::new();
    for n in 1..=args.nodes {
        match spawn_node(&exe, &dir, n, args.nodes, &args.overrides) {
            Ok(child) => children.push((n, child)),
            Err(e) => {
                eprintln!("fjord: starting node {n}: {e}");
                stop_all(&mut children).await;
                return 1;
            }
        }
    }
    let bootstrap: Vec<String> = (1..=args.nodes)
        .map(|n| format!("localhost:{}", ports(n).0))
        .collect();
    println!(
        "fjord dev-cluster: {} nodes in {}",
        args.nodes,
        dir.display()
    );
    println!("  bootstrap servers: {}", bootstrap.join(","));
    for n in 1..=args.nodes {
        println!(
            "  node {n}: metrics http://localhost:{}/metrics, log {}",
            ports(n).2,
            dir.join(format!("node-{n}.log")).display()
        );
    }
    println!("Ctrl-C or SIGTERM stops all nodes.");

    let code = tokio::select! {
        signal = super::node::shutdown_signal() => {
            println!("{signal}: stopping all nodes");
            0
        }
        (n, status) = first_exit(&mut children) => {
            eprintln!("fjord: node {n} exited ({status}); stopping the others");
            1
        }
    };
    stop_all(&mut children).await;
    code
}

fn spawn_node(
    exe: &Path,
    dir: &Path,
    n: u16,
    count: u16,
    overrides: &[(String, String)],
) -> std::io::Result<Child> {
    let config = dir.join(format!("node-{n}.properties"));
    fs::write(&config, node_properties(n, count, dir, overrides))?;
    let log = fs::File::create(dir.join(format!("node-{n}.log")))?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// Waits until any child exits; returns its number and status.
async fn first_exit(children: &mut [(u16, Child)]) -> (u16, String) {
    loop {
        for (n, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (*n, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to each node, then up to 20 s for them to finish, then SIGKILL.
async fn stop_all(children: &mut [(u16, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (n, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) => println!("  node {n} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                eprintln!("  node {n} did not stop in time; killed");
            }
        }
    }
}
