"""Produce and consume through fjord with unmodified Kafka clients.

What a Kafka user checks before trusting a broker: records written with one
client library (keys, headers, timestamps, every compression codec) read back
byte for byte with the other, at the offsets the producer was told; the same
after every node restarts and after a kill -9 mid-produce; long-poll fetch,
ListOffsets, DeleteRecords and produce errors behaving as Kafka's do; kcat
working against it.

One 3-node quorum serves the whole module (starting one costs seconds on a
2-core machine); each test makes its own topics. The restart test relies on
the codec tests before it having recorded what they acknowledged. Record
counts: FJORD_CLIENT_RECORDS (default 100000 per codec).
"""
import os
import random
import subprocess
import threading
import time
from collections import defaultdict, namedtuple

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import OffsetOutOfRangeError

from conftest import Cluster, create_topic, topic_leaders, wait_until

RECORDS = int(os.environ.get("FJORD_CLIENT_RECORDS", "100000"))
PARTITIONS = 6
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# librdkafka and kafka-python name "no compression" differently.
KAFKA_PYTHON_CODEC = {"none": None, "gzip": "gzip", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"}

# What a consumer must read back: (partition, offset) -> Record, and the
# produce-order of records per partition.
Record = namedtuple("Record", "partition key value headers timestamp")
Read = namedtuple("Read", "offset key value headers timestamp timestamp_type")

# Topic -> {partition: [Read, ...]} acknowledged by the codec tests, for the
# restart test to read again.
ACKNOWLEDGED = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("quorum"), 3)
    try:
        yield c
    finally:
        c.stop()


def now_ms():
    return int(time.time() * 1000)


def make_records(tag, n, partitions, base_ts, null_header_values=True):
    """Deterministic records exercising null keys and values, binary and
    compressible values, no/empty/null headers; partition i % partitions."""
    rng = random.Random(tag)
    for i in range(n):
        key = None if i % 97 == 0 else f"{tag}-key-{i}".encode()
        if i % 101 == 0 and key is not None:
            value = None
        elif i % 3 == 0:
            value = rng.randbytes(rng.randrange(0, 300))
        else:
            value = (f"{tag} value {i} " * rng.randrange(1, 20)).encode()
        headers = [] if i % 17 == 0 else [("seq", str(i).encode()), ("tag", tag.encode())]
        if i % 13 == 0:
            headers.append(("empty", b""))
        if null_header_values and i % 19 == 0:
            headers.append(("null", None))
        yield Record(i % partitions, key, value, headers, base_ts + i)


def confluent_producer(bootstrap, **config):
    return Producer({
        "bootstrap.servers": bootstrap,
        "acks": "1",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1000000,
        "enable.idempotence": False,
        "message.timeout.ms": 60000,
        **config,
    })


def confluent_produce(producer, topic, records, deadline_s=120):
    """Produces `records` in order; returns (acks, errors): acks[i] is the
    delivery report's (partition, offset, timestamp) for records[i], errors[i]
    its KafkaError."""
    acks, errors = {}, {}

    def report(i):
        def on_delivery(err, msg):
            if err is not None:
                errors[i] = err
            else:
                acks[i] = (msg.partition(), msg.offset(), msg.timestamp())
        return on_delivery

    for i, r in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition,
                    timestamp=r.timestamp, on_delivery=report(i),
                )
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(deadline_s)
    assert left == 0, f"{left} records still undelivered after {deadline_s}s"
    return acks, errors


def expected_reads(records, acks):
    """{partition: [Read]} in offset order: each acknowledged record at the
    offset its delivery report gave, with its CreateTime timestamp."""
    by_partition = defaultdict(list)
    for i, r in enumerate(records):
        if i not in acks:
            continue
        partition, offset, _ = acks[i]
        by_partition[partition].append(Read(offset, r.key, r.value, r.headers, r.timestamp, 0))
    return {p: sorted(reads) for p, reads in by_partition.items()}


def kafka_python_read(bootstrap, topic, ends, start=None, deadline_s=120, **config):
    """Reads every partition in `ends` ({partition: end offset}) with
    kafka-python: explicit assignment, no group, from the beginning (or
    from `start[partition]`), until each end offset. CRCs are checked."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", check_crcs=True, max_poll_records=20000,
        max_partition_fetch_bytes=4 * 1024 * 1024, request_timeout_ms=30000, **config,
    )
    try:
        tps = {p: KpTopicPartition(topic, p) for p in ends}
        consumer.assign(list(tps.values()))
        if start is None:
            consumer.seek_to_beginning(*tps.values())
        else:
            for p, offset in start.items():
                consumer.seek(tps[p], offset)
        got = {p: [] for p in ends}
        next_offset = {p: (start or {}).get(p, 0) for p in ends}
        deadline = time.monotonic() + deadline_s
        while any(next_offset[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, (
                f"kafka-python read {topic} to {next_offset} of {ends} in {deadline_s}s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    got[tp.partition].append(Read(
                        r.offset, r.key, r.value, [(k, v) for k, v in r.headers], r.timestamp,
                        r.timestamp_type))
                    next_offset[tp.partition] = r.offset + 1
        return got
    finally:
        consumer.close()


def confluent_consumer(bootstrap, **config):
    # librdkafka insists on a group id; with assign() and no commits the
    # group is never joined (groups are not served yet).
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "fjord-tests-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        **config,
    })


def confluent_read(bootstrap, topic, ends, start=None, deadline_s=120):
    """Reads with confluent-kafka: assign with explicit offsets, no group."""
    consumer = confluent_consumer(bootstrap)
    try:
        start = start or {p: 0 for p in ends}
        consumer.assign([CkTopicPartition(topic, p, start[p]) for p in ends])
        got = {p: [] for p in ends}
        next_offset = dict(start)
        deadline = time.monotonic() + deadline_s
        while any(next_offset[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, (
                f"confluent-kafka read {topic} to {next_offset} of {ends} in {deadline_s}s")
            for m in consumer.consume(num_messages=10000, timeout=0.5):
                assert m.error() is None, f"consume error: {m.error()}"
                ts_type, ts = m.timestamp()
                got[m.partition()].append(Read(
                    m.offset(), m.key(), m.value(), list(m.headers() or []), ts, ts_type - 1))
                next_offset[m.partition()] = m.offset() + 1
        return got
    finally:
        consumer.close()


def assert_same_reads(expected, got, what):
    """Per partition: the same records at the same offsets, in order."""
    assert sorted(got) == sorted(expected), f"{what}: partitions {sorted(got)} != {sorted(expected)}"
    for p in sorted(expected):
        want, have = expected[p], got[p]
        for i, (w, h) in enumerate(zip(want, have)):
            assert w == h, f"{what}: partition {p}, read #{i}: expected {w}, got {h}"
        assert len(have) == len(want), (
            f"{what}: partition {p}: read {len(have)} records, expected {len(want)}; "
            f"first extra/missing offsets {[r.offset for r in (have[len(want):] or want[len(have):])][:5]}")


def end_offsets(expected):
    return {p: reads[-1].offset + 1 for p, reads in expected.items() if reads}


# -- librdkafka produces, kafka-python consumes, every codec ----------------

@pytest.mark.parametrize("codec", CODECS)
def test_confluent_produces_kafka_python_reads_back(cluster, codec):
    topic = f"codec-{codec}"
    create_topic(cluster.bootstrap, topic, PARTITIONS)
    records = list(make_records(topic, RECORDS, PARTITIONS, now_ms() - 3_600_000))
    producer = confluent_producer(cluster.bootstrap, **{"compression.type": codec})
    acks, errors = confluent_produce(producer, topic, records)
    assert not errors, f"{len(errors)} delivery errors, e.g. {list(errors.items())[:3]}"
    assert len(acks) == len(records)

    # Within a partition, later produce calls got later offsets, densely from 0.
    offsets = defaultdict(list)
    for i in range(len(records)):
        partition, offset, _ = acks[i]
        assert partition == records[i].partition
        offsets[partition].append(offset)
    for p, seen in offsets.items():
        assert seen == list(range(len(seen))), f"partition {p}: offsets not dense and in order"
    # CreateTime: the delivery reports carry the producer's own timestamps.
    wrong = [(i, acks[i][2]) for i, r in enumerate(records) if acks[i][2] != (1, r.timestamp)]
    assert not wrong, f"{len(wrong)} delivery reports with other timestamps, e.g. {wrong[:3]}"

    expected = expected_reads(records, acks)
    got = kafka_python_read(cluster.bootstrap, topic, end_offsets(expected))
    assert_same_reads(expected, got, f"{codec}: kafka-python")
    ACKNOWLEDGED[topic] = expected


def test_kafka_python_produces_confluent_reads_back(cluster):
    """Five kafka-python producers, one per codec, into one topic: each
    partition holds batches of mixed codecs. confluent-kafka reads from the
    start and from an explicit offset inside a compressed batch."""
    topic = "reverse"
    create_topic(cluster.bootstrap, topic, PARTITIONS)
    per_codec = max(RECORDS // 50, 200)
    expected = defaultdict(list)
    for codec in CODECS:
        producer = KafkaProducer(
            bootstrap_servers=cluster.bootstrap, acks=1, linger_ms=20,
            compression_type=KAFKA_PYTHON_CODEC[codec], request_timeout_ms=30000,
        )
        try:
            records = list(make_records(f"{topic}-{codec}", per_codec, PARTITIONS, now_ms() - 60_000,
                                        null_header_values=False))
            futures = [producer.send(topic, key=r.key, value=r.value, headers=r.headers,
                                     partition=r.partition, timestamp_ms=r.timestamp) for r in records]
            producer.flush(timeout=60)
            for r, f in zip(records, futures):
                md = f.get(timeout=30)
                assert md.partition == r.partition
                expected[md.partition].append(Read(md.offset, r.key, r.value, r.headers, r.timestamp, 0))
        finally:
            producer.close(timeout=10)
    expected = {p: sorted(reads) for p, reads in expected.items()}
    for p, reads in expected.items():
        assert [r.offset for r in reads] == list(range(len(reads))), f"partition {p}: offsets not dense"

    got = confluent_read(cluster.bootstrap, topic, end_offsets(expected))
    assert_same_reads(expected, got, "confluent-kafka from the beginning")

    # From an offset in the middle of the log (inside some batch).
    start = {p: len(reads) // 2 + 1 for p, reads in expected.items()}
    got = confluent_read(cluster.bootstrap, topic, end_offsets(expected), start=start)
    tail = {p: reads[start[p]:] for p, reads in expected.items()}
    assert_same_reads(tail, got, "confluent-kafka from explicit offsets")
    ACKNOWLEDGED[topic] = expected


def test_every_record_survives_a_restart_of_all_nodes(cluster):
    assert ACKNOWLEDGED, "no earlier test recorded acknowledged records"
    cluster.restart_all()
    for topic, expected in ACKNOWLEDGED.items():
        wait_until(f"{topic} to have leaders after the restart", 60,
                   lambda: topic_leaders(cluster.bootstrap, topic))
        # The other library than the one that first checked the topic, so both read every codec.
        if topic.startswith("codec-"):
            got = confluent_read(cluster.bootstrap, topic, end_offsets(expected))
        else:
            got = kafka_python_read(cluster.bootstrap, topic, end_offsets(expected))
        assert_same_reads(expected, got, f"{topic} after restart")
        consumer = confluent_consumer(cluster.bootstrap)
        try:
            for p, reads in expected.items():
                marks = consumer.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10, cached=False)
                assert marks == (0, len(reads)), f"{topic}-{p} watermarks after restart"
        finally:
            consumer.close()


# -- timestamps ------------------------------------------------------------

def test_create_time_is_kept_and_log_append_time_is_stamped(cluster):
    create_topic(cluster.bootstrap, "ts-create", 1)
    create_topic(cluster.bootstrap, "ts-append", 1, {"message.timestamp.type": "LogAppendTime"})
    old = now_ms() - 86_400_000
    records = [Record(0, f"k{i}".encode(), f"v{i}".encode(), [], old + i) for i in range(20)]
    producer = confluent_producer(cluster.bootstrap, **{"compression.type": "lz4"})

    acks, errors = confluent_produce(producer, "ts-create", records)
    assert not errors
    got = kafka_python_read(cluster.bootstrap, "ts-create", {0: 20})
    assert [(r.timestamp, r.timestamp_type) for r in got[0]] == [(old + i, 0) for i in range(20)]

    before = now_ms()
    acks, errors = confluent_produce(producer, "ts-append", records)
    after = now_ms()
    assert not errors
    got = kafka_python_read(cluster.bootstrap, "ts-append", {0: 20})
    assert [r.offset for r in got[0]] == list(range(20))
    for r in got[0]:
        assert r.timestamp_type == 1, f"offset {r.offset}: timestamp type {r.timestamp_type}, want LogAppendTime"
        assert before - 1 <= r.timestamp <= after + 1, f"offset {r.offset}: {r.timestamp} not in [{before}, {after}]"
    # The produce response carries the append time (Kafka's log_append_time_ms).
    for i, (_, _, (ts_type, ts)) in acks.items():
        assert ts_type == 2 and before - 1 <= ts <= after + 1, f"delivery report #{i}: {(ts_type, ts)}"


# -- kcat --------------------------------------------------------------------

def kcat(*args, stdin=None):
    out = subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kcat {' '.join(args)}: {out.stderr}"
    return out.stdout


def test_kcat_lists_brokers_and_topic_and_round_trips_keys(cluster):
    create_topic(cluster.bootstrap, "kcat", PARTITIONS)
    listing = kcat("-L", "-b", cluster.bootstrap, "-m", "10")
    assert "3 brokers:" in listing, listing
    for i, (kafka, _) in enumerate(cluster.ports):
        assert f"broker {i + 1} at 127.0.0.1:{kafka}" in listing, listing
    assert f'topic "kcat" with {PARTITIONS} partitions:' in listing, listing
    for p in range(PARTITIONS):
        assert f"partition {p}, leader " in listing, listing

    lines = ["alpha:one", "beta:two words", "gamma:", "delta:four:colons:kept"]
    kcat("-P", "-b", cluster.bootstrap, "-t", "kcat", "-p", "2", "-K:", stdin="\n".join(lines) + "\n")
    out = kcat("-C", "-b", cluster.bootstrap, "-t", "kcat", "-p", "2", "-e", "-o", "beginning",
               "-f", "%o|%k|%s\n", "-m", "10")
    assert out.splitlines() == [
        "0|alpha|one", "1|beta|two words", "2|gamma|", "3|delta|four:colons:kept"], out


# -- fetch long poll ------------------------------------------------------------

def test_a_waiting_consumer_gets_a_later_record_and_idle_fetches_are_empty(cluster):
    leaders = create_topic(cluster.bootstrap, "longpoll", 1)
    leader_index = leaders[0] - 1
    consumer = KafkaConsumer(
        bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=500, request_timeout_ms=30000,
    )
    tp = KpTopicPartition("longpoll", 0)
    try:
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        assert consumer.position(tp) == 0
        # Idle: polls come back empty, not as errors, and the broker holds each
        # fetch for its max wait instead of answering empty at once.
        fetches_before = cluster.metric(leader_index, "fjord_kafka_requests_total", api="Fetch")
        idle_started = time.monotonic()
        while time.monotonic() - idle_started < 3:
            assert consumer.poll(timeout_ms=500) == {}
        idle_s = time.monotonic() - idle_started
        fetches = cluster.metric(leader_index, "fjord_kafka_requests_total", api="Fetch") - fetches_before
        assert fetches <= idle_s / 0.5 * 2 + 5, f"{fetches:.0f} fetches in {idle_s:.1f}s idle with max wait 500ms"

        producer = confluent_producer(cluster.bootstrap)
        produced = threading.Event()

        def produce_later():
            producer.produce("longpoll", key=b"late", value=b"arrival", partition=0)
            producer.flush(30)
            produced.set()

        timer = threading.Timer(0.5, produce_later)
        timer.start()
        try:
            def arrived():
                for records in consumer.poll(timeout_ms=500).values():
                    return records
                return None
            records = wait_until("the later record to reach the waiting consumer", 30, arrived)
        finally:
            timer.join()
        assert produced.is_set()
        assert [(r.offset, r.key, r.value) for r in records] == [(0, b"late", b"arrival")]
    finally:
        consumer.close()


# -- ListOffsets ------------------------------------------------------------------

def test_list_offsets_earliest_latest_and_by_timestamp(cluster):
    topic = "listoffsets"
    create_topic(cluster.bootstrap, topic, 1)
    base = now_ms() - 600_000
    timestamps = [base + 1000 * i for i in range(20)]
    producer = confluent_producer(cluster.bootstrap, **{"compression.type": "zstd", "linger.ms": 50})
    # Ten single-record batches, then ten records in one batch: a lookup must
    # find records inside a batch, not just batch boundaries.
    for i in range(10):
        acks, errors = confluent_produce(producer, topic, [Record(0, b"k", b"v%d" % i, [], timestamps[i])])
        assert not errors and acks[0][1] == i
    acks, errors = confluent_produce(
        producer, topic, [Record(0, b"k", b"v%d" % i, [], timestamps[i]) for i in range(10, 20)])
    assert not errors and sorted(a[1] for a in acks.values()) == list(range(10, 20))

    def first_at_or_after(ts):
        return next((i for i, t in enumerate(timestamps) if t >= ts), None)

    targets = [base - 5, base, base + 3000, base + 3001, base + 14_500, timestamps[-1], timestamps[-1] + 1]

    consumer = confluent_consumer(cluster.bootstrap)
    try:
        tp = CkTopicPartition(topic, 0)
        assert consumer.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 20)
        for ts in targets:
            [found] = consumer.offsets_for_times([CkTopicPartition(topic, 0, ts)], timeout=10)
            want = first_at_or_after(ts)
            assert found.error is None
            assert found.offset == (want if want is not None else -1), f"confluent offsets_for_times({ts - base:+})"
    finally:
        consumer.close()

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "max_timestamp": OffsetSpec.max_timestamp(), "at base+3000": OffsetSpec.for_timestamp(base + 3000)}
    want = {"earliest": 0, "latest": 20, "max_timestamp": 19, "at base+3000": 3}
    for name, spec in specs.items():
        result = admin.list_offsets({CkTopicPartition(topic, 0): spec}, request_timeout=10)
        info = result[CkTopicPartition(topic, 0)].result(timeout=15)
        assert info.offset == want[name], f"AdminClient.list_offsets {name}: {info.offset}"
        if name == "max_timestamp":
            assert info.timestamp == timestamps[-1]

    kp = KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, request_timeout_ms=30000)
    try:
        ktp = KpTopicPartition(topic, 0)
        assert kp.beginning_offsets([ktp]) == {ktp: 0}
        assert kp.end_offsets([ktp]) == {ktp: 20}
        for ts in targets:
            found = kp.offsets_for_times({ktp: ts})[ktp]
            want = first_at_or_after(ts)
            if want is None:
                assert found is None, f"kafka-python offsets_for_times({ts - base:+}): {found}"
            else:
                assert found is not None and found.offset == want, f"kafka-python offsets_for_times({ts - base:+}): {found}"
                assert found.timestamp == timestamps[want]
    finally:
        kp.close()


# -- DeleteRecords --------------------------------------------------------------

def produce_and_delete_below(cluster, topic, low_watermark):
    """200 records over 2 partitions, then DeleteRecords on partition 0 up
    to `low_watermark`; returns the low watermark the admin client reports."""
    create_topic(cluster.bootstrap, topic, 2)
    records = [Record(i % 2, f"k{i}".encode(), f"v{i}".encode(), [], now_ms()) for i in range(200)]
    producer = confluent_producer(cluster.bootstrap, **{"compression.type": "snappy", "linger.ms": 5})
    acks, errors = confluent_produce(producer, topic, records)
    assert not errors
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futures = admin.delete_records([CkTopicPartition(topic, 0, low_watermark)], request_timeout=10)
    [(_, future)] = futures.items()
    return future.result(timeout=15).low_watermark


def test_delete_records_moves_the_low_watermark(cluster):
    topic = "deleterecords"
    assert produce_and_delete_below(cluster, topic, 40) == 40

    consumer = confluent_consumer(cluster.bootstrap)
    try:
        assert consumer.get_watermark_offsets(CkTopicPartition(topic, 0), timeout=10, cached=False) == (40, 100)
        assert consumer.get_watermark_offsets(CkTopicPartition(topic, 1), timeout=10, cached=False) == (0, 100)
    finally:
        consumer.close()

    # Below the low watermark: kafka-python's reset policy (earliest) lands on it.
    got = kafka_python_read(cluster.bootstrap, topic, {0: 100}, start={0: 10})
    assert [(r.offset, r.key) for r in got[0]] == [(o, f"k{2 * o}".encode()) for o in range(40, 100)]
    # No reset policy: kafka-python surfaces OFFSET_OUT_OF_RANGE.
    strict = KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                           auto_offset_reset="none", request_timeout_ms=30000)
    try:
        ktp = KpTopicPartition(topic, 0)
        strict.assign([ktp])
        strict.seek(ktp, 10)
        with pytest.raises(OffsetOutOfRangeError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                strict.poll(timeout_ms=500)
        assert strict.beginning_offsets([ktp]) == {ktp: 40}
    finally:
        strict.close()


def test_confluent_consumer_resets_below_the_low_watermark(cluster):
    topic = "deleterecords-confluent"
    assert produce_and_delete_below(cluster, topic, 40) == 40
    consumer = confluent_consumer(cluster.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        consumer.assign([CkTopicPartition(topic, 0, 10)])
        first = wait_until("a record after the offset reset", 15,
                           lambda: next(iter(consumer.consume(num_messages=1, timeout=0.5)), None))
        assert first.error() is None, first.error()
        assert (first.offset(), first.key()) == (40, b"k80")
    finally:
        consumer.close()


# -- produce errors ---------------------------------------------------------------

def test_produce_errors_fail_only_their_records(cluster):
    topic = "small-messages"
    create_topic(cluster.bootstrap, topic, 1, {"max.message.bytes": "4096"})
    producer = confluent_producer(cluster.bootstrap, **{"linger.ms": 0})

    big = Record(0, b"big", os.urandom(10_000), [], now_ms())
    acks, errors = confluent_produce(producer, topic, [big])
    assert not acks
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors[0]

    # The same producer (and connection) carries on; the refused batch took no offset.
    small = [Record(0, f"k{i}".encode(), b"small", [], now_ms()) for i in range(5)]
    acks, errors = confluent_produce(producer, topic, small)
    assert not errors, errors
    assert sorted(a[1] for a in acks.values()) == [0, 1, 2, 3, 4]

    # A partition the topic does not have: librdkafka knows the partition
    # count from Metadata and refuses it before sending.
    with pytest.raises(KafkaException) as refused:
        producer.produce(topic, key=b"k", value=b"v", partition=7)
    assert refused.value.args[0].code() == KafkaError._UNKNOWN_PARTITION
    acks, errors = confluent_produce(producer, topic, small[:1])
    assert not errors and acks[0][1] == 5

    got = kafka_python_read(cluster.bootstrap, topic, {0: 6})
    assert [(r.offset, r.key) for r in got[0]] == [(i, f"k{i}".encode()) for i in range(5)] + [(5, b"k0")]


def test_acks_0_records_are_stored(cluster):
    topic = "acks0"
    create_topic(cluster.bootstrap, topic, 1)
    producer = confluent_producer(cluster.bootstrap, acks="0")
    records = [Record(0, f"k{i}".encode(), f"v{i}".encode(), [], now_ms()) for i in range(50)]
    acks, errors = confluent_produce(producer, topic, records)
    assert not errors
    consumer = confluent_consumer(cluster.bootstrap)
    try:
        wait_until("50 acks=0 records to be stored", 30, lambda: consumer.get_watermark_offsets(
            CkTopicPartition(topic, 0), timeout=5, cached=False) == (0, 50))
    finally:
        consumer.close()
    got = kafka_python_read(cluster.bootstrap, topic, {0: 50})
    assert [(r.key, r.value) for r in got[0]] == [(r.key, r.value) for r in records]


# -- kill -9 during produce ---------------------------------------------------------

def test_kill_9_during_produce_keeps_every_acknowledged_record(single_node):
    topic = "crash"
    partitions = 3
    create_topic(single_node.bootstrap, topic, partitions)
    producer = confluent_producer(single_node.bootstrap, **{
        "linger.ms": 2, "batch.num.messages": 200, "compression.type": "lz4",
        "message.timeout.ms": 120000, "retry.backoff.ms": 200,
    })
    acks, errors = {}, {}
    records = []

    def report(i):
        def on_delivery(err, msg):
            if err is not None:
                errors[i] = err
            else:
                acks[i] = (msg.partition(), msg.offset())
        return on_delivery

    def produce(i):
        r = Record(i % partitions, f"k{i}".encode(), (f"v{i} " * (1 + i % 40)).encode(), [("i", str(i).encode())], now_ms())
        records.append(r)
        while True:
            try:
                producer.produce(topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition,
                                 on_delivery=report(i))
                return
            except BufferError:
                producer.poll(0.05)

    deadline = time.monotonic() + 60
    i = 0
    while len(acks) < 20_000:
        assert time.monotonic() < deadline, f"only {len(acks)} acks in 60s"
        produce(i)
        i += 1
        if i % 100 == 0:
            producer.poll(0)
    acked_at_kill = len(acks)
    single_node.kill9(0)
    # Keep producing into the dead broker: these are in flight or queued.
    for _ in range(5000):
        produce(i)
        i += 1
    producer.poll(0)
    single_node.start(0)
    single_node.wait_all_active()
    wait_until("the topic to have leaders after the restart", 60, lambda: topic_leaders(single_node.bootstrap, topic))
    assert producer.flush(120) == 0
    assert len(acks) >= acked_at_kill

    ends = {}
    consumer = confluent_consumer(single_node.bootstrap)
    try:
        for p in range(partitions):
            low, ends[p] = consumer.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10, cached=False)
            assert low == 0
    finally:
        consumer.close()
    got = kafka_python_read(single_node.bootstrap, topic, ends)
    print(f"kill -9 after {acked_at_kill} acks; {len(acks)} acked in all, {len(errors)} failed, "
          f"{sum(ends.values())} records in the log after restart")
    at = {(p, r.offset): r for p, reads in got.items() for r in reads}
    for p, reads in got.items():
        assert [r.offset for r in reads] == list(range(ends[p])), f"partition {p}: offsets not dense"
    missing = [(i, a) for i, a in acks.items() if a not in at]
    assert not missing, f"{len(missing)} acknowledged records missing after kill -9, e.g. {missing[:5]}"
    for i, (p, offset) in acks.items():
        r, want = at[(p, offset)], records[i]
        assert (r.key, r.value, r.headers) == (want.key, want.value, want.headers), f"record #{i} at {p}/{offset}"
