"""Consumer groups through fjord's group coordinator with unmodified clients.

What a Kafka user relies on: consumers in one group split a topic's
partitions; when one dies (kill -9, no LeaveGroup) the others take its
partitions within its session timeout; nothing produced is skipped;
committed offsets survive a full cluster restart; and when the
coordinator's own node dies, consumers find the new coordinator and go on
from their committed offsets.

Consumers that are killed run in subprocesses (confluent-kafka); the
kafka-python members run in threads. One 3-node quorum serves the module,
with `group.initial.rebalance.delay.ms=0` and 6 s sessions to stay quick.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import Cluster, create_topic, wait_until

PARTITIONS = 6
SESSION_MS = 6000

MEMBER = r"""
import json, os, sys
from confluent_kafka import Consumer
bootstrap, group, topic, out = sys.argv[1:5]
instance = sys.argv[5] if len(sys.argv) > 5 else None
state = {"assigned": []}
def write_assignment(consumer, partitions):
    state["assigned"] = sorted(set(state["assigned"]) | {p.partition for p in partitions})
    dump()
def revoke(consumer, partitions):
    with open(out + ".revoked", "a") as f:
        f.write(" ".join(str(p.partition) for p in partitions) + "\n")
    state["assigned"] = sorted(set(state["assigned"]) - {p.partition for p in partitions})
    dump()
def dump():
    tmp = out + ".assign.tmp"
    with open(tmp, "w") as f:
        json.dump(state["assigned"], f)
    os.replace(tmp, out + ".assign")
c = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "session.timeout.ms": %d, "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": os.environ.get("FJORD_ASSIGNOR", "range"),
    "socket.timeout.ms": 5000,
    **({"group.instance.id": instance} if instance else {}),
})
c.subscribe([topic], on_assign=write_assignment, on_revoke=revoke)
dump()
with open(out + ".read", "a") as log:
    while not os.path.exists(out + ".stop"):
        msgs = c.consume(100, 0.5)
        good = [m for m in msgs if m.error() is None]
        for m in good:
            log.write(f"{m.partition()} {m.offset()}\n")
        log.flush()
        if good:
            try:
                c.commit(asynchronous=False)
            except Exception as e:
                print("commit failed:", e, flush=True)
c.close()
""" % SESSION_MS


KP_MEMBER = r"""
import json, os, sys
from kafka import KafkaConsumer, ConsumerRebalanceListener
bootstrap, group, topic, out = sys.argv[1:5]
assigned = set()
def dump():
    tmp = out + ".assign.tmp"
    with open(tmp, "w") as f:
        json.dump(sorted(assigned), f)
    os.replace(tmp, out + ".assign")
class Listener(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        assigned.difference_update(tp.partition for tp in revoked)
        with open(out + ".revoked", "a") as f:
            f.write(" ".join(str(tp.partition) for tp in revoked) + "\n")
        dump()
    def on_partitions_assigned(self, given):
        assigned.update(tp.partition for tp in given)
        dump()
c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=%d, heartbeat_interval_ms=500)
c.subscribe([topic], listener=Listener())
dump()
with open(out + ".read", "a") as log:
    while not os.path.exists(out + ".stop"):
        batch = c.poll(timeout_ms=500)
        for tp, msgs in batch.items():
            for m in msgs:
                log.write(f"{tp.partition} {m.offset}\n")
        log.flush()
        if batch:
            try:
                c.commit()
            except Exception as e:
                print("commit failed:", e, flush=True)
c.close()
""" % SESSION_MS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("groups"), 3,
                extra={"group.initial.rebalance.delay.ms": "0"})
    yield c
    c.stop()


def produce(bootstrap, topic, n, start=0):
    """Produces n keyed records spread over every partition; returns
    {(partition, offset)} acknowledged."""
    acked = set()
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})

    def done(err, msg):
        if err is None:
            acked.add((msg.partition(), msg.offset()))

    for i in range(start, start + n):
        p.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS, on_delivery=done)
    assert p.flush(60) == 0
    assert len(acked) == n
    return acked


class Member:
    def __init__(self, tmp, bootstrap, group, topic, i, instance=None, client="confluent",
                 assignor="range"):
        self.out = str(tmp / f"{group}-member-{i}")
        script = MEMBER if client == "confluent" else KP_MEMBER
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, bootstrap, group, topic, self.out]
            + ([instance] if instance else []),
            env={**os.environ, "FJORD_ASSIGNOR": assignor},
            stdout=open(self.out + ".log", "w"), stderr=subprocess.STDOUT)

    def assigned(self):
        try:
            with open(self.out + ".assign") as f:
                return set(json.load(f))
        except (OSError, ValueError):
            return set()

    def read(self):
        return set(self.read_in_order())

    def read_in_order(self):
        try:
            with open(self.out + ".read") as f:
                return [tuple(map(int, line.split())) for line in f if line.strip()]
        except OSError:
            return []

    def revocations(self):
        try:
            with open(self.out + ".revoked") as f:
                return [line for line in f if line.strip()]
        except OSError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            open(self.out + ".stop", "w").close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def end_offsets(acked):
    ends = {p: 0 for p in range(PARTITIONS)}
    for p, o in acked:
        ends[p] = max(ends[p], o + 1)
    return ends


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_three_members_share_and_survive_a_kill9(cluster, tmp_path, client):
    # The restart test reads the confluent run's group.
    topic, group = ("grp-ck", "ck-group") if client == "confluent" else ("grp-kp9", "kp9-group")
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    acked = produce(cluster.bootstrap, topic, 600)
    members = [Member(tmp_path, cluster.bootstrap, group, topic, i, client=client) for i in range(3)]
    try:
        wait_until("three members with two partitions each", 60,
                   lambda: all(len(m.assigned()) == 2 for m in members)
                   and set().union(*(m.assigned() for m in members)) == set(range(PARTITIONS)))
        wait_until("the first 600 records read", 60,
                   lambda: acked <= set().union(*(m.read() for m in members)))
        killed = members[0]
        orphaned = killed.assigned()
        killed.kill9()
        started = time.monotonic()
        # What the killed member had committed: nothing it did not commit
        # may be skipped, nothing before it re-read by the new owners.
        committed_at_kill = committed(cluster.bootstrap, group, topic)
        rest = members[1:]
        already = [len(m.read_in_order()) for m in rest]
        wait_until("two members owning all six partitions", SESSION_MS / 1000 + 20,
                   lambda: set().union(*(m.assigned() for m in rest)) == set(range(PARTITIONS))
                   and sum(len(m.assigned()) for m in rest) == PARTITIONS)
        took = time.monotonic() - started
        print(f"{client}: rebalance after kill -9 took {took:.1f}s (session timeout {SESSION_MS / 1000}s)")
        assert took < SESSION_MS / 1000 + 10
        acked |= produce(cluster.bootstrap, topic, 600, start=600)
        wait_until("every produced record read at least once", 60,
                   lambda: acked <= set().union(*(m.read() for m in members)))
        for m, skip in zip(rest, already):
            for p in orphaned:
                taken_over = [o for (q, o) in m.read_in_order()[skip:] if q == p]
                if taken_over:
                    assert min(taken_over) == committed_at_kill[p], (p, min(taken_over), committed_at_kill)
    finally:
        for m in members:
            m.stop()
    commits = sum(cluster.metric(i, "fjord_group_commits_total") for i in range(3))
    rebalances = sum(cluster.metric(i, "fjord_group_rebalances_total") for i in range(3))
    assert commits > 0 and rebalances >= 2, (commits, rebalances)
    wait_until("committed offsets at the log end", 30,
               lambda: committed(cluster.bootstrap, group, topic) == end_offsets(acked))
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    assert group in {g.group_id for g in listed.valid}


def test_committed_offsets_survive_a_full_restart(cluster):
    before = committed(cluster.bootstrap, "ck-group", "grp-ck")
    assert all(o > 0 for o in before.values()), before
    cluster.restart_all()
    wait_until("the same committed offsets after the restart", 60,
               lambda: committed(cluster.bootstrap, "ck-group", "grp-ck") == before)
    # Ten unread records per partition: the coordinator reports the lag of
    # the partitions it leads.
    produce(cluster.bootstrap, "grp-ck", 10 * PARTITIONS)

    def lag():
        total = sum(cluster.metric(i, "fjord_group_lag", group="ck-group") for i in range(3))
        return total if total > 0 and total % 10 == 0 else None

    wait_until("consumer lag exported", 30, lag)


@pytest.mark.parametrize("assignor", ["roundrobin", "cooperative-sticky"])
def test_other_assignors(cluster, tmp_path, assignor):
    """The leader's assignment is relayed as is, so librdkafka's other
    assignors (cooperative-sticky's incremental rebalances included) work."""
    topic, group = f"grp-{assignor}", f"{assignor}-group"
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    acked = produce(cluster.bootstrap, topic, 300)
    members = [Member(tmp_path, cluster.bootstrap, group, topic, i, assignor=assignor)
               for i in range(3)]
    try:
        wait_until("three members with two partitions each", 60,
                   lambda: all(len(m.assigned()) == 2 for m in members)
                   and set().union(*(m.assigned() for m in members)) == set(range(PARTITIONS)))
        members[0].kill9()
        rest = members[1:]
        wait_until("two members owning all six partitions", SESSION_MS / 1000 + 20,
                   lambda: set().union(*(m.assigned() for m in rest)) == set(range(PARTITIONS))
                   and sum(len(m.assigned()) for m in rest) == PARTITIONS)
        wait_until("every record read", 60,
                   lambda: acked <= set().union(*(m.read() for m in members)))
    finally:
        for m in members:
            m.stop()


def test_a_leaving_member_rebalances_quickly(cluster, tmp_path):
    topic, group = "grp-leave", "leave-group"
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    members = [Member(tmp_path, cluster.bootstrap, group, topic, i) for i in range(3)]
    try:
        wait_until("three members with two partitions each", 60,
                   lambda: all(len(m.assigned()) == 2 for m in members))
        started = time.monotonic()
        members[0].stop()  # close(): LeaveGroup
        rest = members[1:]
        wait_until("two members owning all six partitions", 30,
                   lambda: sum(len(m.assigned()) for m in rest) == PARTITIONS
                   and set().union(*(m.assigned() for m in rest)) == set(range(PARTITIONS)))
        took = time.monotonic() - started
        print(f"rebalance after a member left took {took:.2f}s")
        assert took < SESSION_MS / 1000, "LeaveGroup must not wait for the session timeout"
    finally:
        for m in members:
            m.stop()


def test_commit_metadata_round_trips(cluster):
    topic = "grp-meta"
    create_topic(cluster.bootstrap, topic, 1, replication_factor=3)
    produce_one = Producer({"bootstrap.servers": cluster.bootstrap})
    produce_one.produce(topic, b"x")
    produce_one.flush(10)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "meta-group",
                  "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0, 1, metadata="checkpoint-7")
        c.commit(offsets=[tp], asynchronous=False)
        got = c.committed([TopicPartition(topic, 0)], timeout=10)[0]
        assert (got.offset, got.metadata) == (1, "checkpoint-7")
    finally:
        c.close()


def test_a_restarted_static_member_causes_no_rebalance(cluster, tmp_path):
    topic, group = "grp-static", "static-group"
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    produce(cluster.bootstrap, topic, 60)
    # a joins first and leads; b is the follower that restarts.
    a = Member(tmp_path, cluster.bootstrap, group, topic, 0, instance="static-a")
    wait_until("a alone owning everything", 60, lambda: len(a.assigned()) == PARTITIONS)
    b = Member(tmp_path, cluster.bootstrap, group, topic, 1, instance="static-b")
    try:
        wait_until("two static members with three partitions each", 60,
                   lambda: len(a.assigned()) == 3 and len(b.assigned()) == 3)
        before = b.assigned()
        b_revocations = len(a.revocations())
        b.kill9()
        b2 = Member(tmp_path, cluster.bootstrap, group, topic, 2, instance="static-b")
        try:
            wait_until("the restarted static member back on its partitions", SESSION_MS / 1000 + 10,
                       lambda: b2.assigned() == before)
            # Well within the session timeout: a never saw a rebalance.
            assert len(a.revocations()) == b_revocations, a.revocations()
        finally:
            b2.stop()
    finally:
        a.stop()
        b.stop()


def test_kafka_python_members_share_a_topic(cluster):
    from kafka import KafkaConsumer

    topic, group = "grp-kp", "kp-group"
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    acked = produce(cluster.bootstrap, topic, 600)
    read = [set() for _ in range(3)]
    assigned = [set() for _ in range(3)]
    stop = threading.Event()
    errors = []

    def member(i):
        try:
            c = KafkaConsumer(topic, bootstrap_servers=cluster.bootstrap, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500)
            while not stop.is_set():
                batch = c.poll(timeout_ms=500)
                assigned[i] = {tp.partition for tp in c.assignment()}
                for tp, msgs in batch.items():
                    read[i].update((tp.partition, m.offset) for m in msgs)
                if batch:
                    c.commit()
            c.close()
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until("three kafka-python members with two partitions each", 90,
                   lambda: all(len(a) == 2 for a in assigned)
                   and set().union(*assigned) == set(range(PARTITIONS)))
        wait_until("every record read", 60, lambda: acked <= set().union(*read))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert committed(cluster.bootstrap, group, topic) == end_offsets(acked)


def test_coordinator_kill9_consumers_continue(cluster, tmp_path):
    topic, group = "grp-failover", "failover-group"
    create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    acked = produce(cluster.bootstrap, topic, 300)
    members = [Member(tmp_path, cluster.bootstrap, group, topic, i) for i in range(2)]
    coordinator = None
    try:
        wait_until("both members assigned", 60,
                   lambda: set().union(*(m.assigned() for m in members)) == set(range(PARTITIONS)))
        wait_until("the first records read", 60,
                   lambda: acked <= set().union(*(m.read() for m in members)))
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        coordinator = desc.coordinator.id
        cluster.kill9(coordinator - 1)
        survivors = ",".join(f"127.0.0.1:{cluster.ports[i][0]}" for i in cluster.alive())
        acked |= produce(survivors, topic, 300, start=300)
        wait_until("every record read after the coordinator died", 90,
                   lambda: acked <= set().union(*(m.read() for m in members)))
        wait_until("commits reach the new coordinator", 60,
                   lambda: committed(survivors, group, topic) == end_offsets(acked))
    finally:
        for m in members:
            m.stop()
        if coordinator is not None:
            cluster.start(coordinator - 1)
