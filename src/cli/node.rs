//! `fjord node`: run one node until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::node;

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// A Java-properties file with Kafka's key names (see config/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides node.id.
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Overrides log.dirs (the metadata store lives under it unless metadata.log.dir is set).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overrides any config key, as Kafka's `--override key=value`; repeatable.
    #[arg(long = "override", short = 'o', value_parser = super::parse_key_value)]
    pub overrides: Vec<(String, String)>,
}

impl NodeArgs {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        if let Some(id) = self.node_id {
            all.push(("node.id".to_string(), id.to_string()));
        }
        if let Some(dir) = &self.data_dir {
            all.push(("log.dirs".to_string(), dir.display().to_string()));
        }
        all.extend(self.overrides.iter().cloned());
        all
    }
}

pub fn run(args: NodeArgs) -> i32 {
    super::init_logging();
    keep_large_buffers_mapped();
    let (config, warnings) = match Config::load(args.config.as_deref(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fjord: {e}");
            return 2;
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> i32 {
    if let Err(e) = crate::metrics::install(config.metrics_listen) {
        eprintln!("fjord: fjord.metrics.listen: {e}");
        return 1;
    }
    let running = match node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fjord: {e}");
            return e.exit_code();
        }
    };
    let mut fatal = running.fatal.clone();
    let code = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{signal}: shutting down");
            0
        }
        why = wait_fatal(&mut fatal) => {
            eprintln!("fjord: {why}");
            2
        }
    };
    running.shutdown().await;
    code
}

/// Resolves when the node reports a reason it must stop.
async fn wait_fatal(fatal: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    match fatal.wait_for(|f| f.is_some()).await {
        Ok(why) => why.clone().unwrap_or_default(),
        // The node dropped its sender: nothing fatal can come any more.
        Err(_) => std::future::pending().await,
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT), naming which.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Serving a fetch allocates a buffer per partition read (up to
/// `max.partition.fetch.bytes`, 1 MiB by default) and frees it once the
/// response is written; a produce request's frame is as large. glibc maps
/// such sizes fresh from the kernel on every allocation and unmaps them on
/// free, so each byte served paid a page fault and a page clear: a third of
/// a consuming broker's time in profiles. Serving buffers up to 16 MiB from
/// the heap, and keeping freed heap memory up to 64 MiB instead of trimming
/// it, makes them reusable. Only the long-running node does this.
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tunables; called before the
    // runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
