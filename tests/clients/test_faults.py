"""Fault injection: no acknowledged record is ever lost.

Kafka's promise with acks=all, replication factor 3 and min.insync.replicas=2
is that an acknowledged record survives the loss of any one broker, at its
offset, in order. This test holds fjord to it with real processes and a real
client, nothing mocked: a 3-node quorum of `fjord node` processes, a topic
with 6 partitions, and a librdkafka producer (acks=all, idempotence off,
a unique id in every value) producing from a background thread while, in turn:

1. the leader of a partition is killed (-9) and restarted a few seconds later;
2. the active controller (the Raft leader) is killed (-9) and restarted;
3. a broker is SIGSTOPped until the controller fences it, then SIGCONTed; a
   producer and a consumer that only know that broker keep talking to it, so
   a zombie that took writes or served unreplicated records would be caught;
4. all three are killed (-9) at once and restarted;
5. one node is stopped, its data directory wiped, and restarted: it must
   rebuild its replicas from the leaders.

Between steps the harness waits (with deadlines) until every broker is active
and every partition has a leader and a full ISR. Meanwhile consumers read the
topic live and sample the high watermarks (ListOffsets and Fetch answers).
At the end the topic is read twice, by librdkafka and by kafka-python, with a
leadership change between, and `fault_checker.check` gives the verdict: it
prints the counts (acknowledged, present, lost, duplicates) and the test fails
on any loss, any offset holding two records, any acknowledged record out of
order, or a high watermark that went backwards. Duplicates are reported only.

Every process the test starts is stopped, pass or fail (fixture finalizer).
Knobs: FJORD_FAULT_RF (default 3; 1 runs the same harness on unreplicated
partitions, a check of the harness itself: kills lose no page cache, and
step 5 then restarts the node without wiping it, there being no other copy),
FJORD_FAULT_RATE (records per second, default 400).
"""
import os
import shutil
import signal
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

import fault_checker
from conftest import Cluster, create_topic, wait_until

TOPIC = "faults"
PARTITIONS = 6
RF = int(os.environ.get("FJORD_FAULT_RF", "3"))
MIN_ISR = min(2, RF)
RATE = int(os.environ.get("FJORD_FAULT_RATE", "400"))
SESSION_TIMEOUT_MS = 3000
BROKER_CONFIG = {
    "broker.session.timeout.ms": SESSION_TIMEOUT_MS,
    "broker.heartbeat.interval.ms": 500,
    "replica.lag.time.max.ms": 5000,
    "min.insync.replicas": MIN_ISR,
    "default.replication.factor": RF,
}
# Zombie probe ids start here so they never meet the main producer's.
PROBE_IDS = 1_000_000_000
SETTLE_S = 90


def value_of(rid):
    return f"{rid}|".encode() + b"v" * 100


def id_of(value):
    return int(value.split(b"|", 1)[0])


class Step:
    """The fault under way, shared with the background threads' samples."""
    def __init__(self):
        self.name = "warm-up"
        self.t0 = time.monotonic()
        self.log = []

    def set(self, name):
        self.name = name
        self.log.append((round(time.monotonic() - self.t0, 1), name))
        print(f"[{time.monotonic() - self.t0:6.1f}s] {name}", flush=True)

    def elapsed(self):
        return round(time.monotonic() - self.t0, 2)


class AckingProducer(threading.Thread):
    """librdkafka with acks=all producing `rate` records/s round-robin over
    the partitions until stopped. `acked` holds every delivery report
    without error: id -> (partition, offset); `failed` the others."""

    def __init__(self, bootstrap, step, rate, idempotent=False):
        super().__init__(daemon=True, name="acking-producer")
        self.idempotent = idempotent
        self.bootstrap = bootstrap
        self.step = step
        self.rate = rate
        self.acked = {}
        self.failed = {}
        self.errors = defaultdict(int)
        self.produced = 0
        self.undelivered = None
        self.stopping = threading.Event()
        self.crashed = None

    def on_delivery(self, err, msg):
        rid = id_of(msg.value())
        if err is None:
            self.acked[rid] = (msg.partition(), msg.offset())
        else:
            self.failed[rid] = err
            self.errors[err.name()] += 1

    def run(self):
        try:
            producer = Producer({
                "bootstrap.servers": self.bootstrap,
                "acks": "all",
                "enable.idempotence": self.idempotent,
                "linger.ms": 5,
                # request.timeout.ms is only the broker's acks wait; the
                # client gives up on a silent (SIGSTOPped) broker after
                # socket.timeout.ms, 60 s by default.
                "request.timeout.ms": 5000,
                "socket.timeout.ms": 5000,
                "message.timeout.ms": 20000,
                "retry.backoff.ms": 100,
                "retry.backoff.max.ms": 500,
                "reconnect.backoff.max.ms": 500,
                "topic.metadata.refresh.fast.interval.ms": 100,
                "on_delivery": self.on_delivery,
            })
            last = time.monotonic()
            owed = 0.0
            while not self.stopping.is_set():
                now = time.monotonic()
                # No debt carried across an outage: at most 0.1 s worth at once.
                owed = min(owed + (now - last) * self.rate, self.rate / 10)
                last = now
                while owed >= 1:
                    rid = self.produced
                    try:
                        producer.produce(TOPIC, value=value_of(rid), partition=rid % PARTITIONS)
                    except BufferError:
                        break
                    self.produced += 1
                    owed -= 1
                producer.poll(0.01)
            self.undelivered = producer.flush(30)
        except Exception as e:  # surfaced by the test, never swallowed
            self.crashed = e


class LiveReader(threading.Thread):
    """Reads the topic from the beginning while the faults happen (assign,
    no group, auto.offset.reset=error so a truncation shows as an error) and
    records what every offset held and the high watermark of each Fetch
    answer. With `sample_list_offsets` it also asks ListOffsets for the high
    watermarks every quarter second."""

    def __init__(self, bootstrap, step, partitions, label, sample_list_offsets=False):
        super().__init__(daemon=True, name=f"reader-{label}")
        self.bootstrap = bootstrap
        self.step = step
        self.partitions = partitions
        self.label = label
        self.sample_list_offsets = sample_list_offsets
        self.seen = {}
        self.conflicts = []
        self.hw_samples = []
        self.errors = defaultdict(int)
        self.first_errors = []
        self.list_offsets_failures = 0
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.crashed = None

    def run(self):
        try:
            consumer = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": f"fault-reader-{self.label}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                "check.crcs": True,
                "fetch.wait.max.ms": 100,
                "socket.timeout.ms": 5000,
                "topic.metadata.refresh.interval.ms": 600000 if self.label == "zombie" else 5000,
            })
            tps = [CkTopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in self.partitions]
            consumer.assign(tps)
            last_sample = 0.0
            while not self.stopping.is_set():
                for m in consumer.consume(num_messages=1000, timeout=0.1):
                    if m.error() is not None:
                        self.errors[m.error().name()] += 1
                        if len(self.first_errors) < 10:
                            self.first_errors.append((self.step.name, str(m.error())))
                        continue
                    self.ready.set()
                    key, rid = (m.partition(), m.offset()), id_of(m.value())
                    old = self.seen.setdefault(key, rid)
                    if old != rid:
                        self.conflicts.append((key[0], key[1], {f"{self.label} first": old, f"{self.label} later": rid}))
                if time.monotonic() - last_sample >= 0.25:
                    last_sample = time.monotonic()
                    for p in self.partitions:
                        tp = CkTopicPartition(TOPIC, p)
                        try:
                            _, high = consumer.get_watermark_offsets(tp, cached=True) or (None, None)
                            if high is not None and high >= 0:
                                self.hw_samples.append((self.step.elapsed(), self.step.name, p, high, f"{self.label} fetch"))
                            if self.sample_list_offsets:
                                _, high = consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                                self.hw_samples.append((self.step.elapsed(), self.step.name, p, high, f"{self.label} list_offsets"))
                        except KafkaException:
                            self.list_offsets_failures += 1
            consumer.close()
        except Exception as e:
            self.crashed = e


def partition_metadata(bootstrap):
    """{partition: (leader, [isr])} from a fresh Metadata request."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=TOPIC, timeout=5)
    t = md.topics.get(TOPIC)
    if t is None or t.error is not None:
        raise RuntimeError(f"metadata for {TOPIC}: {t and t.error}")
    return {p: (pm.leader, list(pm.isrs), pm.error) for p, pm in t.partitions.items()}


def metadata_brokers(bootstrap):
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).brokers)


def bootstrap_of(cluster, indexes):
    return ",".join(f"127.0.0.1:{cluster.ports[i][0]}" for i in indexes)


def settle(cluster, step, what, deadline_s=SETTLE_S, full_isr=True):
    """Waits until every broker is active and every partition has a leader
    (and, with `full_isr`, all RF replicas in sync), as both the quorum and
    a Metadata answer of every node say. On timeout the error shows the
    last state seen."""
    live = bootstrap_of(cluster, range(cluster.n))
    last = {}

    def settled():
        s = cluster.status()
        last["brokers"] = {b["id"]: b["state"] for b in s["brokers"]}
        last["controller"] = s["leader_id"]
        if sum(1 for b in s["brokers"] if b["state"] == "active") != cluster.n:
            return None
        # Every node's view: each lists all brokers and a leader for every
        # partition (clients bootstrap from any of them).
        for i in range(cluster.n):
            listed = metadata_brokers(bootstrap_of(cluster, [i]))
            last[f"brokers in node {i + 1}'s metadata"] = sorted(listed)
            if listed != set(range(1, cluster.n + 1)):
                return None
        md = partition_metadata(live)
        last["partitions (leader, isr)"] = {p: (l, isr) for p, (l, isr, _) in sorted(md.items())}
        if len(md) != PARTITIONS:
            return None
        for leader, isr, err in md.values():
            if err is not None or leader < 0 or (full_isr and len(isr) != RF):
                return None
        return md

    started = time.monotonic()
    try:
        md = wait_until(f"the cluster to settle after {what}", deadline_s, settled)
    except AssertionError as e:
        raise AssertionError(f"{e}; last state seen: {last}") from None
    step.set(f"settled after {what} in {time.monotonic() - started:.1f}s: "
             f"leaders {sorted((p, l) for p, (l, _, _) in md.items())}")
    return md


def panics(cluster):
    """Each node's panics (the message line after each `panicked at`)."""
    found = []
    for i in range(cluster.n):
        lines = (cluster.tmp_path / f"node-{i + 1}.log").read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if "panicked at" in line:
                found.append(f"node {i + 1}: {line.strip()} {lines[n + 1].strip() if n + 1 < len(lines) else ''}")
    return found


def node_leading(md, partition):
    return md[partition][0] - 1


def wait_acks(producer, more, deadline_s, what):
    """Waits until every partition has `more` acknowledgements beyond now:
    each one is writable again with acks=all."""
    def per_partition():
        counts = defaultdict(int)
        for partition, _ in list(producer.acked.values()):
            counts[partition] += 1
        return counts

    start = per_partition()

    def each_grew():
        now = per_partition()
        return all(now[p] >= start[p] + more for p in range(PARTITIONS))

    wait_until(f"{more} more acknowledgements on every partition {what}", deadline_s, each_grew)


def read_all(reader, bootstrap, ends, deadline_s=120):
    """Reads each partition from its log start to `ends` ({partition: high
    watermark}) with librdkafka ("confluent") or kafka-python; {partition:
    [(offset, id)]} in the order returned."""
    got = {p: [] for p in ends}
    next_offset = {p: 0 for p in ends}
    deadline = time.monotonic() + deadline_s
    if reader == "confluent":
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "fault-final", "enable.auto.commit": False,
            "auto.offset.reset": "error", "check.crcs": True,
        })
        try:
            consumer.assign([CkTopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in ends])
            while any(next_offset[p] < ends[p] for p in ends):
                assert time.monotonic() < deadline, f"confluent read reached {next_offset} of {ends}"
                for m in consumer.consume(num_messages=10000, timeout=0.5):
                    assert m.error() is None, f"final read: {m.error()}"
                    if m.offset() < ends[m.partition()]:
                        got[m.partition()].append((m.offset(), id_of(m.value())))
                    next_offset[m.partition()] = m.offset() + 1
        finally:
            consumer.close()
    else:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", check_crcs=True, max_poll_records=20000,
            request_timeout_ms=30000,
        )
        try:
            tps = [KpTopicPartition(TOPIC, p) for p in ends]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while any(next_offset[p] < ends[p] for p in ends):
                assert time.monotonic() < deadline, f"kafka-python read reached {next_offset} of {ends}"
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for r in records:
                        if r.offset < ends[tp.partition]:
                            got[tp.partition].append((r.offset, id_of(r.value)))
                        next_offset[tp.partition] = r.offset + 1
        finally:
            consumer.close()
    return got


def high_watermarks(bootstrap, deadline_s=30):
    """{partition: high watermark} by ListOffsets; retried until every
    partition answers (librdkafka says "unknown partition" until its
    metadata has the leader)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-final"})
    try:
        def ask():
            consumer.list_topics(TOPIC, timeout=5)
            ends = {}
            for p in range(PARTITIONS):
                low, high = consumer.get_watermark_offsets(CkTopicPartition(TOPIC, p), timeout=5, cached=False)
                assert low == 0, f"partition {p} starts at {low}: nothing was deleted"
                ends[p] = high
            return ends

        return wait_until("the high watermark of every partition", deadline_s, ask)
    finally:
        consumer.close()


@pytest.fixture
def fault_cluster(tmp_path):
    c = Cluster(tmp_path, 3, extra=BROKER_CONFIG)
    try:
        yield c
    finally:
        # A SIGSTOPped node would ignore SIGTERM until continued.
        for p in c.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
        c.stop()


def test_fault_checker_catches_loss_conflicts_and_watermark_regressions():
    # The verdict below must be able to fail: hand it broken histories.
    fault_checker._self_test()


class Faults:
    """The five faults, in turn, against a running producer. Each step ends
    when the cluster has settled and every partition takes acks=all writes
    again; a step that cannot get there raises AssertionError."""

    def __init__(self, cluster, step, producer, threads):
        self.c = cluster
        self.step = step
        self.producer = producer
        self.threads = threads
        self.everyone = bootstrap_of(cluster, range(cluster.n))
        self.md = None
        self.probes = {"sent": 0, "acked": {}, "errors": defaultdict(int)}
        self.zombie_producer = None
        self.zombie_reader = None

    def acks(self, what, deadline_s=30):
        wait_acks(self.producer, max(1, RATE // PARTITIONS // 4), deadline_s, what)

    def kill_a_partition_leader(self):
        c, step = self.c, self.step
        victim = node_leading(self.md, 0)
        step.set(f"1: kill -9 node {victim + 1}, leader of partition 0")
        c.kill9(victim)
        if RF > 1:
            wait_until("partition 0 to get a new leader", 30,
                       lambda: partition_metadata(self.everyone)[0][0] not in (-1, victim + 1))
            step.set("1: partition 0 has a new leader")
            self.acks("with one node dead")
        else:
            time.sleep(3)  # the schedule: restart it a few seconds later
        c.start(victim)
        self.md = settle(c, step, f"restarting node {victim + 1}")
        self.acks("after step 1")

    def kill_the_controller(self):
        c, step = self.c, self.step
        controller = c.status()["leader_id"]
        step.set(f"2: kill -9 node {controller}, the active controller")
        c.kill9(controller - 1)
        wait_until("a new active controller", 30,
                   lambda: c.status()["leader_id"] not in (-1, controller))
        step.set(f"2: node {c.status()['leader_id']} is the active controller")
        if RF > 1:
            self.acks("with the old controller dead")
        c.start(controller - 1)
        self.md = settle(c, step, f"restarting node {controller}")
        self.acks("after step 2")

    def pause_a_broker(self):
        c, step, probes = self.c, self.step, self.probes
        controller = c.status()["leader_id"]
        led = defaultdict(list)
        for p, (leader, _, _) in self.md.items():
            led[leader].append(p)
        # A broker that leads partitions and is not the active controller:
        # this step is about fencing, step 2 was about the controller.
        paused = max((b for b in led if b != controller), key=lambda b: len(led[b]), default=None)
        if paused is None:
            paused = next(b for b in (1, 2, 3) if b != controller)
        paused_partitions = led.get(paused, [])
        # Clients that only know this broker, connected before it stops: they
        # will go on talking to it once it is continued.
        zombie_bootstrap = bootstrap_of(c, [paused - 1])
        self.zombie_producer = Producer({
            "bootstrap.servers": zombie_bootstrap, "acks": "all", "enable.idempotence": False,
            "linger.ms": 0, "request.timeout.ms": 5000, "socket.timeout.ms": 5000, "message.timeout.ms": 15000,
            "topic.metadata.refresh.interval.ms": 600000,
        })

        def probe_report(err, msg):
            if err is None:
                probes["acked"][id_of(msg.value())] = (msg.partition(), msg.offset())
            else:
                probes["errors"][err.name()] += 1

        def probe(count):
            for _ in range(count):
                for p in paused_partitions:
                    rid = PROBE_IDS + probes["sent"]
                    probes["sent"] += 1
                    self.zombie_producer.produce(TOPIC, value=value_of(rid), partition=p, on_delivery=probe_report)
                self.zombie_producer.poll(0)

        probe(1)
        self.zombie_producer.flush(15)
        if paused_partitions:
            self.zombie_reader = LiveReader(zombie_bootstrap, step, paused_partitions, "zombie")
            self.threads.append(self.zombie_reader)
            self.zombie_reader.start()
            assert self.zombie_reader.ready.wait(30), "the zombie-side reader read nothing in 30s"
        step.set(f"3: SIGSTOP node {paused} (leads partitions {paused_partitions})")
        c.pause(paused - 1)
        others = [i for i in range(3) if i != paused - 1]
        wait_until(f"node {paused} to be fenced", 30 + SESSION_TIMEOUT_MS / 1000, lambda: any(
            b["id"] == paused and b["state"] == "fenced" for b in c.status(prefer=others)["brokers"]))
        step.set(f"3: node {paused} is fenced")
        if RF > 1 and paused_partitions:
            wait_until(f"partitions {paused_partitions} to move off node {paused}", 30, lambda: all(
                partition_metadata(bootstrap_of(c, others))[p][0] not in (-1, paused) for p in paused_partitions))
            self.acks(f"with node {paused} stopped")
        step.set(f"3: SIGCONT node {paused}; probing it as a zombie")
        c.resume(paused - 1)
        # Straight away, while it may still believe it leads: acks=all writes
        # it must not acknowledge alone.
        probe(20)
        time.sleep(0.5)
        probe(20)
        self.md = settle(c, step, f"continuing node {paused}")
        self.zombie_producer.flush(20)
        self.acks("after step 3")

    def kill_all(self):
        c, step = self.c, self.step
        step.set("4: kill -9 all three nodes")
        c.kill9_all()
        time.sleep(2)
        step.set("4: restarting all three nodes")
        for i in range(3):
            c.start(i)
        self.md = settle(c, step, "the full-cluster restart")
        self.acks("after step 4", deadline_s=60)

    def wipe_a_node(self):
        c, step = self.c, self.step
        controller = c.status()["leader_id"]
        wiped = next(b for b in (1, 2, 3) if b != controller)
        step.set(f"5: stop node {wiped}, wipe {c.data_dir(wiped - 1)}, restart it")
        c.stop_node(wiped - 1)
        if RF > 1:
            shutil.rmtree(c.data_dir(wiped - 1))
        else:
            # Unreplicated partitions have no other copy to rebuild from.
            step.set(f"5: replication factor 1: node {wiped} restarts with its data")
        c.start(wiped - 1)
        self.md = settle(c, step, f"rebuilding node {wiped}", deadline_s=120)
        self.acks("after step 5")


STEPS = [int(n) for n in os.environ.get("FJORD_FAULT_STEPS", "1,2,3,4,5").split(",")]


# The idempotent run (librdkafka's enable.idempotence=true, issue 5) kills a
# partition leader and the controller: retries across the failovers must be
# deduplicated by the leaders, so it fails on duplicates too.
@pytest.mark.parametrize("idempotent,steps", [(False, None), (True, [1, 2])], ids=["plain", "idempotent"])
def test_no_acknowledged_record_is_lost_under_faults(fault_cluster, idempotent, steps):
    steps = steps or STEPS
    c = fault_cluster
    step = Step()
    everyone = bootstrap_of(c, range(3))
    create_topic(everyone, TOPIC, PARTITIONS, config={"min.insync.replicas": str(MIN_ISR)},
                 replication_factor=RF)

    producer = AckingProducer(everyone, step, RATE, idempotent=idempotent)
    watcher = LiveReader(everyone, step, range(PARTITIONS), "live", sample_list_offsets=True)
    threads = [producer, watcher]
    faults = Faults(c, step, producer, threads)
    schedule = {1: faults.kill_a_partition_leader, 2: faults.kill_the_controller, 3: faults.pause_a_broker,
                4: faults.kill_all, 5: faults.wipe_a_node}
    # A step that never settles is a failure, but the records are checked
    # all the same: what was acknowledged must still be there.
    fault_error = None
    try:
        faults.md = settle(c, step, "topic creation")
        producer.start()
        watcher.start()
        wait_acks(producer, RATE // PARTITIONS, 60, "in the warm-up")
        assert watcher.ready.wait(30), "the live reader read nothing in 30s"
        for n in steps:
            schedule[n]()
    except AssertionError as e:
        fault_error = f"during \"{step.name}\": {e}"
        step.set(f"FAILED: {fault_error}")
    finally:
        step.set("stopping the producers and readers")
        producer.stopping.set()
        producer.join(60)
        for t in threads[1:]:
            t.stopping.set()
            t.join(30)
    for t in threads:
        assert t.crashed is None, f"{t.name} crashed: {t.crashed!r}"
    if faults.zombie_producer is not None:
        faults.zombie_producer.flush(20)
        faults.zombie_producer = None

    # Two complete reads, a leadership change between them (when the cluster
    # is healthy enough for that).
    reads, read_errors = [], []
    ends = ends2 = None
    try:
        ends = high_watermarks(everyone, deadline_s=30 if fault_error is None else 10)
        reads.append(read_all("confluent", everyone, ends, deadline_s=120 if fault_error is None else 30))
        if fault_error is None:
            moved = node_leading(faults.md, 0)
            step.set(f"final: restarting node {moved + 1} (leader of partition 0) between the two reads")
            c.stop_node(moved)
            c.start(moved)
            settle(c, step, f"restarting node {moved + 1}")
        ends2 = high_watermarks(everyone, deadline_s=30 if fault_error is None else 10)
        reads.append(read_all("kafka-python", everyone, ends2, deadline_s=120 if fault_error is None else 30))
    except (AssertionError, KafkaException) as e:
        read_errors.append(f"{step.name}: {e}")

    acked = dict(producer.acked)
    acked.update(faults.probes["acked"])
    live = dict(watcher.seen)
    conflicts = list(watcher.conflicts)
    hw_samples = sorted(watcher.hw_samples, key=lambda s: s[0])
    zombie_reader = faults.zombie_reader
    if zombie_reader is not None:
        for key, rid in zombie_reader.seen.items():
            if live.setdefault(key, rid) != rid:
                conflicts.append((key[0], key[1], {"live": live[key], "zombie reader": rid}))
        conflicts += zombie_reader.conflicts
        hw_samples += zombie_reader.hw_samples
    verdict = fault_checker.check(acked, reads, live, conflicts, [])
    # High watermarks per source: each client must see them only go up.
    for source in sorted({s[4] for s in hw_samples}):
        samples = [s for s in hw_samples if s[4] == source]
        verdict.hw_regressions += fault_checker.check({}, reads, hw_samples=samples).hw_regressions
    broker_panics = panics(c)

    print()
    print("steps:", *(f"  {t:6.1f}s {name}" for t, name in step.log), sep="\n")
    print(f"producer: {producer.produced} sent, {len(producer.acked)} acknowledged, "
          f"{len(producer.failed)} failed {dict(producer.errors)}, {producer.undelivered} undelivered at close")
    probes = faults.probes
    print(f"zombie probe: {probes['sent']} sent, {len(probes['acked'])} acknowledged, errors {dict(probes['errors'])}")
    print(f"live reader: {len(watcher.seen)} offsets read, errors {dict(watcher.errors)} {watcher.first_errors}, "
          f"{len(hw_samples)} high watermark samples, {watcher.list_offsets_failures} ListOffsets failures")
    if zombie_reader is not None:
        print(f"zombie reader: {len(zombie_reader.seen)} offsets read, errors {dict(zombie_reader.errors)} "
              f"{zombie_reader.first_errors}")
    print(f"final reads: {len(reads)}, end offsets {ends} / {ends2}; read errors {read_errors}")
    print("verdict:", verdict.summary())
    if verdict.details():
        print(verdict.details())
    if broker_panics:
        print("broker panics:", *broker_panics, sep="\n  ")
    problems = []
    if fault_error:
        problems.append(f"the cluster did not recover {fault_error}")
    if len(reads) < 2:
        problems.append(f"only {len(reads)} of 2 complete reads: {read_errors}")
    if not verdict.ok:
        problems.append(verdict.summary() + "\n" + verdict.details())
    if idempotent and verdict.duplicates:
        problems.append(f"the idempotent producer wrote {verdict.duplicates} duplicates")
    if broker_panics:
        problems.append("brokers panicked:\n" + "\n".join(broker_panics))
    if ends is not None and ends2 is not None and ends2 != ends:
        problems.append(f"the high watermarks changed with no producer running: {ends} then {ends2}")
    assert producer.acked, "the producer got no acknowledgement at all"
    assert not problems, "\n".join(problems)
