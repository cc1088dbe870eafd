//! What a bench counts and how it is told: one [`Stats`] shared by the
//! producers (locked once per acknowledged batch, never per record), the
//! live progress line, and the final [`Summary`] whose JSON field names are
//! a stable interface for scripts.
//!
//! Latencies go into an HDR histogram in microseconds (up to an hour,
//! three significant digits), so percentiles are exact to 0.1% whatever the
//! spread, and recording one is a few array operations.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How often the progress line is printed on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

pub fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What the producers of one run have had answered.
pub struct Stats {
    pub latency: Histogram<u64>,
    /// Since the last progress line.
    interval: Histogram<u64>,
    pub records: u64,
    pub bytes: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

pub type SharedStats = Arc<Mutex<Stats>>;

impl Stats {
    pub fn shared() -> SharedStats {
        Arc::new(Mutex::new(Stats {
            latency: new_histogram(),
            interval: new_histogram(),
            records: 0,
            bytes: 0,
            failed: 0,
            first_error: None,
        }))
    }

    /// One acknowledged batch: each record's latency in microseconds.
    pub fn acknowledged(&mut self, latencies: impl Iterator<Item = u64>, bytes: u64) {
        for micros in latencies {
            // Values above the hour saturate rather than being lost.
            self.latency.saturating_record(micros);
            self.interval.saturating_record(micros);
            self.records += 1;
        }
        self.bytes += bytes;
    }

    pub fn failed(&mut self, records: u64, error: String) {
        self.failed += records;
        self.first_error.get_or_insert(error);
    }
}

/// A count the consumer side of `e2e` and `consume` move without a lock.
#[derive(Default)]
pub struct Counter {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counter {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The final figures. Field names are part of the interface (scripts read
/// them): MB are 10^6 bytes of record values; latencies are `null` where
/// the mode measures none (plain `consume`).
#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_ms_avg: Option<f64>,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub latency_ms_p999: Option<f64>,
    pub latency_ms_max: Option<f64>,
    pub failed: u64,
}

impl Summary {
    pub fn new(
        records: u64,
        bytes: u64,
        seconds: f64,
        failed: u64,
        latency: Option<&Histogram<u64>>,
    ) -> Summary {
        let seconds = seconds.max(1e-9);
        let latency = latency.filter(|h| !h.is_empty());
        let ms = |q: f64| latency.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        Summary {
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
            latency_ms_avg: latency.map(|h| h.mean() / 1000.0),
            latency_ms_p50: ms(0.50),
            latency_ms_p95: ms(0.95),
            latency_ms_p99: ms(0.99),
            latency_ms_p999: ms(0.999),
            latency_ms_max: latency.map(|h| h.max() as f64 / 1000.0),
            failed,
        }
    }

    /// One line, in the words of Kafka's perf tools.
    pub fn human(&self, verb: &str) -> String {
        let mut line = format!(
            "{} records {verb} in {:.2} s: {:.1} records/s ({:.2} MB/s)",
            self.records, self.seconds, self.records_per_sec, self.mb_per_sec
        );
        if let (Some(avg), Some(p50), Some(p95), Some(p99), Some(p999), Some(max)) = (
            self.latency_ms_avg,
            self.latency_ms_p50,
            self.latency_ms_p95,
            self.latency_ms_p99,
            self.latency_ms_p999,
            self.latency_ms_max,
        ) {
            line.push_str(&format!(
                ", latency avg {avg:.2} ms, p50 {p50:.2} ms, p95 {p95:.2} ms, \
                 p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms"
            ));
        }
        if self.failed > 0 {
            line.push_str(&format!(", {} failed", self.failed));
        }
        line
    }
}

/// Prints a progress line every few seconds while it lives, on a
/// terminal only: in a pipe the output is the summary alone.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Where the progress line reads its figures.
#[derive(Clone)]
pub enum Source {
    Produce(SharedStats),
    Consume(Arc<Counter>),
    /// `e2e`: produced, and consumed so far.
    Both(SharedStats, Arc<Counter>),
}

impl Progress {
    pub fn start(source: Source, total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (0u64, 0u64, Instant::now());
            let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let now = Instant::now();
                let (line, records, bytes) = progress_line(&source, total);
                let seconds = now.duration_since(last.2).as_secs_f64().max(1e-9);
                eprintln!(
                    "{:7.1} s  {line}  {:.0} records/s  {:.1} MB/s",
                    start.elapsed().as_secs_f64(),
                    (records - last.0.min(records)) as f64 / seconds,
                    (bytes - last.1.min(bytes)) as f64 / seconds / 1e6,
                );
                last = (records, bytes, now);
            }
        });
        Progress { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The line's text and the running record and byte totals its rates use.
fn progress_line(source: &Source, total: u64) -> (String, u64, u64) {
    let produced = |stats: &SharedStats| {
        let Ok(mut s) = stats.lock() else {
            return (String::new(), 0, 0);
        };
        let latency = if s.interval.is_empty() {
            String::new()
        } else {
            format!(
                ", latency avg {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                s.interval.mean() / 1000.0,
                s.interval.value_at_quantile(0.99) as f64 / 1000.0,
                s.interval.max() as f64 / 1000.0
            )
        };
        s.interval.reset();
        let failed = match s.failed {
            0 => String::new(),
            n => format!(", {n} failed"),
        };
        (
            format!("{} of {total} acknowledged{failed}{latency}", s.records),
            s.records,
            s.bytes,
        )
    };
    match source {
        Source::Produce(stats) => produced(stats),
        Source::Consume(counter) => {
            let (records, bytes) = counter.get();
            (format!("{records} of {total} read"), records, bytes)
        }
        Source::Both(stats, counter) => {
            let (line, _, _) = produced(stats);
            let (records, bytes) = counter.get();
            (format!("{line}; {records} consumed"), records, bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_orders_its_percentiles_and_counts_megabytes_as_10_6() {
        let mut h = new_histogram();
        for micros in 1..=10_000u64 {
            h.record(micros).unwrap();
        }
        let s = Summary::new(2_000_000, 2_000_000_000, 2.0, 3, Some(&h));
        assert_eq!(s.records_per_sec, 1_000_000.0);
        assert_eq!(s.mb_per_sec, 1000.0);
        let p = [
            s.latency_ms_p50.unwrap(),
            s.latency_ms_p95.unwrap(),
            s.latency_ms_p99.unwrap(),
            s.latency_ms_p999.unwrap(),
            s.latency_ms_max.unwrap(),
        ];
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        assert!((p[0] - 5.0).abs() < 0.01, "{p:?}");
        assert!((p[4] - 10.0).abs() < 0.01, "{p:?}");
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "records",
            "bytes",
            "seconds",
            "records_per_sec",
            "mb_per_sec",
            "latency_ms_avg",
            "latency_ms_p50",
            "latency_ms_p95",
            "latency_ms_p99",
            "latency_ms_p999",
            "latency_ms_max",
            "failed",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert!(s.human("sent").contains("3 failed"));
    }

    #[test]
    fn without_latencies_the_fields_are_null() {
        let s = Summary::new(10, 100, 1.0, 0, None);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["latency_ms_p99"].is_null());
        assert!(!s.human("read").contains("latency"));
    }
}
