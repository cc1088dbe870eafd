//! Micro-benchmarks of the storage hot paths, one call at a time, without
//! the network: a produced batch's validation (header, CRC, every record's
//! framing, decompression), a leader append, an index lookup, and a
//! consumer's 1 MiB read of a partition. They say where a produce or fetch
//! spends its time inside the broker, which end-to-end `fjord bench` cannot.
//!
//! Data is what librdkafka sends: 1 KiB records of text-like JSON (so lz4
//! and zstd compress it about as they would real events) in batches of 16,
//! 64 and 256 records (~16-256 KiB). Logs live in a temporary directory
//! under `TMPDIR`, so reads come from the page cache as a consumer's
//! recent reads do.
//!
//! Run: `cargo bench --bench storage` (or `--profile test` to reuse the
//! test build); criterion's filters and options follow `--`, e.g.
//! `cargo bench --bench storage -- validate --measurement-time 5`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fjord::client::producer::RecordBatchWriter;
use fjord::storage::batch::{self, BatchHeader};
use fjord::storage::index::{Index, PartitionKey};
use fjord::storage::{LogConfig, PartitionLog, ReadLimit};
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const RECORD_BYTES: usize = 1024;
const LEADER_EPOCH: i32 = 1;
/// A consumer's `max.partition.fetch.bytes` (Kafka's default).
const FETCH_BYTES: usize = 1 << 20;
/// Appends per timed chunk: the records are copied before a chunk starts,
/// as the produce handler has them, and a full log is replaced between chunks.
const APPEND_CHUNK: usize = 64;
/// A log is replaced by an empty one past this size, so that no append
/// pays for a segment roll (a 1 GiB fsync) and the disk use stays bounded.
const APPEND_LOG_LIMIT: u64 = 512 << 20;

/// A record value like an application event: JSON with words from a small
/// vocabulary, compressible about 2-4x as real payloads are.
fn record_value(rng: &mut StdRng, id: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "user",
        "session",
        "click",
        "view",
        "cart",
        "checkout",
        "search",
        "page",
        "item",
        "price",
        "region",
        "eu-west",
        "us-east",
        "mobile",
        "desktop",
        "android",
        "ios",
        "chrome",
        "firefox",
        "referrer",
        "campaign",
        "newsletter",
        "banner",
        "footer",
        "header",
        "login",
        "logout",
        "error",
        "timeout",
        "retry",
        "latency",
        "status",
    ];
    let mut v = format!(
        "{{\"id\":{id},\"ts\":{},\"user\":\"u{:08}\",\"amount\":{}.{:02},\"text\":\"",
        1_700_000_000_000u64 + id,
        rng.gen_range(0..10_000_000),
        rng.gen_range(0..10_000),
        rng.gen_range(0..100)
    )
    .into_bytes();
    while v.len() < RECORD_BYTES - 2 {
        let word = WORDS[rng.gen_range(0..WORDS.len())];
        v.extend_from_slice(word.as_bytes());
        v.push(if rng.gen_range(0..8) == 0 { b'/' } else { b' ' });
    }
    v.truncate(RECORD_BYTES - 2);
    v.extend_from_slice(b"\"}");
    v
}

/// One batch of `records` 1 KiB records as a producer sends it (offsets
/// from 0, no producer id), built by fjord's client encoder.
fn batch(rng: &mut StdRng, records: usize, compression: Compression) -> Vec<u8> {
    let mut writer = RecordBatchWriter::new();
    for i in 0..records {
        let key = format!("key-{}", rng.gen_range(0..100_000));
        let value = record_value(rng, i as u64);
        writer.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(&[&value]),
            &[],
        );
    }
    writer
        .finish(compression)
        .expect("the client encoder compresses a batch")
        .to_vec()
}

fn codec_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// A partition log of its own under `root`, with its own index, as a
/// broker's `LogManager` opens one.
struct BenchLog {
    index: Arc<Index>,
    log: PartitionLog,
    pk: PartitionKey,
}

fn open_log(root: &Path, partition: i32, index: Option<Arc<Index>>) -> BenchLog {
    let index = index.unwrap_or_else(|| {
        Arc::new(Index::open(&root.join("index")).expect("the index opens in a temp dir"))
    });
    let topic_id = Uuid::from_u128(0xbe7c);
    let log = PartitionLog::open(
        root.join(format!("bench-{partition}")),
        "bench".into(),
        topic_id,
        partition,
        index.clone(),
        LogConfig::default(),
    )
    .expect("the log opens in a temp dir");
    BenchLog {
        index,
        log,
        pk: PartitionKey::new(topic_id, partition),
    }
}

/// Fills `log` with copies of `batch` up to `bytes` and commits it all.
fn fill(log: &PartitionLog, batch: &[u8], bytes: u64) {
    while log.size_bytes() < bytes {
        log.append_as_leader(batch.to_vec(), LEADER_EPOCH)
            .expect("appending a valid batch");
    }
    log.set_high_watermark(log.log_end_offset());
}

fn headers_of(records: &[u8]) -> Vec<BatchHeader> {
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..]).expect("a stored batch header");
        pos += header.size();
        headers.push(header);
    }
    headers
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// `validate_produced` as the leader runs it on every produced batch:
/// header and CRC, then every record's framing (decompressing lz4/zstd).
/// Throughput is in bytes as they arrive (compressed). `crc` is the header
/// and CRC alone, to split the two costs.
fn validate(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(6);
    let max = LogConfig::default().max_message_bytes as usize;
    let mut group = c.benchmark_group("validate");
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        for records in [16, 64, 256] {
            let b = batch(&mut rng, records, compression);
            group.throughput(Throughput::Bytes(b.len() as u64));
            let id = BenchmarkId::new(codec_name(compression), format!("{records}x1KiB"));
            group.bench_with_input(id, &b, |bench, b| {
                bench.iter(|| batch::validate_produced(b, max).expect("a valid batch"))
            });
        }
    }
    for records in [16, 64, 256] {
        let b = batch(&mut rng, records, Compression::None);
        group.throughput(Throughput::Bytes(b.len() as u64));
        let id = BenchmarkId::new("crc", format!("{records}x1KiB"));
        group.bench_with_input(id, &b, |bench, b| {
            bench.iter(|| batch::check_batch(b).expect("a valid batch"))
        });
    }
    group.finish();
}

/// `append_as_leader` of one produced batch: validation, offsets and
/// epoch written into it, the segment write (page cache, no fsync: Kafka's
/// default flush policy) and the RocksDB index entry. The copy the produce
/// handler makes of the request's bytes is made before the timing.
fn append(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let root = tempfile::tempdir().expect("a temp dir");
    let mut group = c.benchmark_group("append");
    // Every log gets a partition of its own: a deleted one is not reused.
    let mut partitions = 0..;
    let index = Arc::new(Index::open(&root.path().join("index")).expect("the index opens"));
    for (compression, records) in [
        (Compression::None, 16),
        (Compression::None, 64),
        (Compression::None, 256),
        (Compression::Lz4, 64),
        (Compression::Zstd, 64),
    ] {
        let b = batch(&mut rng, records, compression);
        group.throughput(Throughput::Bytes(b.len() as u64));
        let id = BenchmarkId::new(codec_name(compression), format!("{records}x1KiB"));
        let mut next_log = || {
            let partition = partitions.next().expect("partition numbers left");
            open_log(root.path(), partition, Some(index.clone()))
        };
        let mut current = next_log();
        group.bench_with_input(id, &b, |bench, b| {
            bench.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    if current.log.size_bytes() > APPEND_LOG_LIMIT {
                        current.log.delete().expect("deleting a bench log");
                        current = next_log();
                    }
                    let n = left.min(APPEND_CHUNK);
                    let copies: Vec<Vec<u8>> = (0..n).map(|_| b.clone()).collect();
                    let start = Instant::now();
                    for records in copies {
                        current
                            .log
                            .append_as_leader(records, LEADER_EPOCH)
                            .expect("appending a valid batch");
                    }
                    elapsed += start.elapsed();
                    left -= n;
                }
                elapsed
            })
        });
        current.log.delete().expect("deleting a bench log");
    }
    group.finish();
}

/// The index seek a fetch starts with: the first batch whose last offset
/// is at or after a random offset, in a log of 100,000 batches. `memtable`
/// is right after the appends (recent data); `sst` after a restart, when
/// RocksDB has flushed its recovered memtable to a table file. Logs are
/// built only for the benchmarks that a filter selects.
fn index_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_lookup");
    group.throughput(Throughput::Elements(1));
    for reopen in [false, true] {
        let name = if reopen { "sst" } else { "memtable" };
        let mut fixture = None;
        let mut i = 0;
        group.bench_function(format!("batch_at_or_after/{name}"), |b| {
            let (_root, bench, offsets) = fixture.get_or_insert_with(|| lookup_fixture(reopen));
            b.iter(|| {
                i = (i + 1) % offsets.len();
                bench
                    .index
                    .batch_at_or_after(&bench.pk, offsets[i])
                    .expect("an index lookup")
                    .expect("every offset below the end has a batch")
            })
        });
    }
    group.finish();
}

/// A log of 100,000 one-record batches, and random offsets in it.
fn lookup_fixture(reopen: bool) -> (tempfile::TempDir, BenchLog, Vec<i64>) {
    const BATCHES: usize = 100_000;
    let mut rng = StdRng::seed_from_u64(8);
    let root = tempfile::tempdir().expect("a temp dir");
    let one = batch(&mut rng, 1, Compression::None);
    let mut bench = open_log(root.path(), 0, None);
    for _ in 0..BATCHES {
        bench
            .log
            .append_as_leader(one.clone(), LEADER_EPOCH)
            .expect("appending a valid batch");
    }
    bench.log.set_high_watermark(bench.log.log_end_offset());
    // Flushed, so that a reopen does not re-index the segment (recovery
    // rewrites every entry after the recovery point into the memtable).
    bench.log.flush().expect("flushing the bench log");
    let end = bench.log.log_end_offset();
    if reopen {
        drop(bench);
        bench = open_log(root.path(), 0, None);
        assert_eq!(
            bench.log.log_end_offset(),
            end,
            "the reopened log has every batch"
        );
    }
    let offsets = (0..4096).map(|_| rng.gen_range(0..end)).collect();
    (root, bench, offsets)
}

/// A consumer's fetch of one partition: `read` of up to 1 MiB below the
/// high watermark (index walk, then one pread of the contiguous batches),
/// from consecutive positions as a consumer reads, in a 256 MiB log of
/// 16 KiB or 64 KiB batches that is in the page cache. Throughput counts
/// the bytes a read returns: the whole batches that fit in 1 MiB.
fn read(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(9);
    let mut group = c.benchmark_group("read");
    for records in [16, 64] {
        let b = batch(&mut rng, records, Compression::None);
        group.throughput(Throughput::Bytes((FETCH_BYTES / b.len() * b.len()) as u64));
        let mut fixture = None;
        let mut i = 0;
        group.bench_function(format!("1MiB/{records}x1KiB"), |bencher| {
            let (_root, bench, starts) = fixture.get_or_insert_with(|| read_fixture(&b));
            bencher.iter(|| {
                i = (i + 1) % starts.len();
                bench
                    .log
                    .read(starts[i], FETCH_BYTES, ReadLimit::HighWatermark, true)
                    .expect("reading the bench log")
            })
        });
    }
    group.finish();
}

/// A 256 MiB log of copies of `batch`, and the offsets a consumer reading
/// it through fetches from.
fn read_fixture(batch: &[u8]) -> (tempfile::TempDir, BenchLog, Vec<i64>) {
    let root = tempfile::tempdir().expect("a temp dir");
    let bench = open_log(root.path(), 0, None);
    fill(&bench.log, batch, 256 << 20);
    let mut starts = Vec::new();
    let mut offset = 0;
    while offset < bench.log.high_watermark() {
        let info = bench
            .log
            .read(offset, FETCH_BYTES, ReadLimit::HighWatermark, true)
            .expect("reading the bench log");
        let Some(last) = headers_of(&info.records).pop() else {
            break;
        };
        starts.push(offset);
        offset = last.last_offset() + 1;
    }
    (root, bench, starts)
}

criterion_group! {
    name = benches;
    config = config();
    targets = validate, append, index_lookup, read
}
criterion_main!(benches);
