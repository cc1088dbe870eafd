//! The process collector every Prometheus client library ships
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), so
//! that a node's CPU and memory sit on the same dashboard as its Kafka
//! metrics, under the names Grafana dashboards and alerts already use.
//!
//! `metrics-exporter-prometheus` has no such collector, and a crate for
//! it would be a dependency for a few lines of `/proc` parsing. Linux
//! only: elsewhere `/proc/self` is missing and nothing is exported.
//! Nothing here may fail the node: an unreadable or odd file only leaves
//! the affected metrics where they were.
//!
//! The `metrics` facade's counters are integers, so
//! `process_cpu_seconds_total` advances in whole seconds of CPU time;
//! `rate()` over a minute or more reads it well enough for a dashboard.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

/// How often `/proc/self` is read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// What one reading of `/proc/self` found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
}

/// Fields of `/proc/<pid>/stat` (proc(5)), counted from 1 as the manual does.
const STAT_UTIME: usize = 14;
const STAT_STIME: usize = 15;
const STAT_STARTTIME: usize = 22;
const STAT_VSIZE: usize = 23;
const STAT_RSS: usize = 24;

/// Parses `/proc/self/stat`. `boot_time` is `btime` of `/proc/stat` (Unix
/// seconds); times in the file are in clock ticks, the resident set in
/// pages.
pub fn parse_stat(
    stat: &str,
    ticks_per_second: u64,
    page_size: u64,
    boot_time: u64,
) -> Option<ProcessStats> {
    if ticks_per_second == 0 {
        return None;
    }
    // Field 2 is the command name in parentheses, and may itself hold
    // spaces and parentheses: the fields after it start past the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    let ticks = ticks_per_second as f64;
    let cpu_ticks = field(STAT_UTIME)?.checked_add(field(STAT_STIME)?)?;
    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / ticks,
        resident_memory_bytes: field(STAT_RSS)?.checked_mul(page_size)?,
        virtual_memory_bytes: field(STAT_VSIZE)?,
        start_time_seconds: boot_time as f64 + field(STAT_STARTTIME)? as f64 / ticks,
    })
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files from `/proc/self/limits`; `None` when
/// unlimited or unreadable.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Entries in `/proc/self/fd`, less the one `read_dir` itself holds open.
fn open_fds(fd_dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(fd_dir).ok()?;
    let count = entries.filter(|e| e.is_ok()).count() as u64;
    Some(count.saturating_sub(1))
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf(3) reads a system constant; it has no memory effects.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Reads this process's figures, or `None` where `/proc` is missing.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    parse_stat(
        &stat,
        sysconf(libc::_SC_CLK_TCK)?,
        sysconf(libc::_SC_PAGESIZE)?,
        boot_time,
    )
}

/// Sets the process metrics from one reading of `/proc/self`.
pub fn export_once() {
    if let Some(stats) = read() {
        metrics::counter!("process_cpu_seconds_total").absolute(stats.cpu_seconds as u64);
        metrics::gauge!("process_resident_memory_bytes").set(stats.resident_memory_bytes as f64);
        metrics::gauge!("process_virtual_memory_bytes").set(stats.virtual_memory_bytes as f64);
        metrics::gauge!("process_start_time_seconds").set(stats.start_time_seconds);
    }
    if let Some(fds) = open_fds(Path::new("/proc/self/fd")) {
        metrics::gauge!("process_open_fds").set(fds as f64);
    }
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    if let Some(max) = limits.as_deref().and_then(parse_max_open_files) {
        metrics::gauge!("process_max_fds").set(max as f64);
    }
}

/// Refreshes the process metrics every [`REFRESH_INTERVAL`] until `shutdown`.
pub async fn run(mut shutdown: watch::Receiver<bool>) {
    loop {
        // A few small file reads; off the async workers all the same.
        let _ = tokio::task::spawn_blocking(export_once).await;
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from Linux 6.x, with a command name that has spaces and
    // a parenthesis in it.
    const STAT: &str = "4242 (fjord (x) y) S 1 4242 4242 0 -1 4194560 2600 0 0 0 \
        350 120 0 0 20 0 9 0 2104650 1363148800 12800 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17664 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_past_the_command_name() {
        let s = parse_stat(STAT, 100, 4096, 1_700_000_000).expect("parses");
        assert_eq!(s.cpu_seconds, 4.7);
        assert_eq!(s.resident_memory_bytes, 12800 * 4096);
        assert_eq!(s.virtual_memory_bytes, 1_363_148_800);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 21046.5);
    }

    #[test]
    fn truncated_or_garbled_stat_is_refused_not_panicked_on() {
        assert_eq!(parse_stat("", 100, 4096, 0), None);
        assert_eq!(parse_stat("4242 (fjord", 100, 4096, 0), None);
        assert_eq!(parse_stat("4242 (fjord) S 1 2 3", 100, 4096, 0), None);
        let garbled = STAT.replace(" 350 ", " x ");
        assert_eq!(parse_stat(&garbled, 100, 4096, 0), None);
        assert_eq!(parse_stat(STAT, 0, 4096, 0), None);
        assert_eq!(parse_stat(STAT, 100, u64::MAX, 0), None);
    }

    #[test]
    fn boot_time_and_open_file_limit() {
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1795608983\nprocesses 9\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_795_608_983));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited = limits.replace("1024   ", "unlimited");
        assert_eq!(parse_max_open_files(&unlimited), None);
    }

    #[test]
    fn this_process_reads_back_plausibly() {
        let Some(s) = read() else {
            // Not Linux: nothing to read, nothing exported.
            return;
        };
        assert!(s.resident_memory_bytes > 0);
        assert!(s.virtual_memory_bytes >= s.resident_memory_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(s.start_time_seconds > 0.0 && s.start_time_seconds <= now + 1.0);
        assert!(open_fds(Path::new("/proc/self/fd")).is_some_and(|n| n >= 3));
    }
}
