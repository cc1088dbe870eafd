#!/usr/bin/env bash
# Failover time: kill -9 of a partition's leader to the first acknowledged
# produce on the new leader, on a fresh 3-node loopback cluster.
#
# Each run makes a topic with one partition, replication factor 3 and
# min.insync.replicas=2, and a librdkafka producer (acks=all, idempotence
# off, linger.ms=0) sends to that partition in a tight loop, a bounded number
# of records in flight. Once acknowledgements flow, the partition's leader is
# killed with SIGKILL; the failover time is from the kill to the delivery
# report of the first record *handed to the producer after the kill* (the
# old leader was dead by then, so that record's acknowledgement came from
# the new leader; records retried from before the kill may be acknowledged
# a little sooner, which the "first ack" column shows). The killed node is
# restarted and the cluster settles (full ISR) before the next run. Prints
# every run and the median.
#
# The time is mostly broker.session.timeout.ms: a kill -9 is noticed when the
# broker's heartbeats stop, as in Kafka. Both are printed.
#
# Usage: scripts/failover.sh [--runs N] [--session-timeout-ms MS]
# Env:   FJORD_BIN  the binary (default: the release build,
#                   $CARGO_TARGET_DIR/release/fjord)
#        BENCH_DIR  where the nodes write and log, kept after (default: a temp
#                   dir under /var/tmp, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=5
SESSION_TIMEOUT_MS=
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --session-timeout-ms) SESSION_TIMEOUT_MS="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--session-timeout-ms MS]" >&2; exit 2 ;;
    esac
done

export FJORD_BIN="${FJORD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fjord-target}/release/fjord}"
if [ ! -x "$FJORD_BIN" ]; then
    echo "failover.sh: no fjord binary at $FJORD_BIN (build it, or set FJORD_BIN)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "failover.sh: no .venv (run scripts/setup.sh): the producer is confluent-kafka" >&2
    exit 2
fi
if [ -n "${BENCH_DIR:-}" ]; then
    DIR="$BENCH_DIR"
    mkdir -p "$DIR"
else
    DIR="$(mktemp -d "${TMPDIR:-/var/tmp}/fjord-failover.XXXXXX")"
    trap 'rm -rf "$DIR"' EXIT
fi

.venv/bin/python - "$DIR" "$RUNS" "$SESSION_TIMEOUT_MS" <<'EOF'
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, "tests/clients")
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from conftest import Cluster, wait_until  # noqa: E402

directory, runs, session_timeout_ms = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
extra = {"min.insync.replicas": 2}
if session_timeout_ms:
    extra["broker.session.timeout.ms"] = session_timeout_ms
    extra["broker.heartbeat.interval.ms"] = max(1, int(session_timeout_ms) // 6)
print(f"== 3 fjord nodes ({os.environ['FJORD_BIN']}), config {extra}", flush=True)
cluster = Cluster(directory, 3, extra=extra)


def partition_state(topic):
    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic=topic, timeout=5)
    pm = md.topics[topic].partitions[0]
    return pm.leader, len(pm.isrs), pm.error


def one_run(n):
    topic = f"failover-{n}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    wait_until(f"{topic} to have a leader and 3 in sync", 60,
               lambda: (lambda s: s[0] > 0 and s[1] == 3 and s[2] is None)(partition_state(topic)))
    reports = []  # (monotonic time of the report, sent at, offset)

    def on_delivery(err, msg):
        if err is None:
            reports.append((time.monotonic(), float(msg.value()), msg.offset()))

    producer = Producer({
        "bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": False,
        "linger.ms": 0, "message.timeout.ms": 60000, "queue.buffering.max.messages": 1000,
        "on_delivery": on_delivery, "log_level": 0,
    })

    def send_for(deadline, until):
        while time.monotonic() < deadline and not until():
            try:
                producer.produce(topic, value=repr(time.monotonic()).encode(), partition=0)
            except BufferError:
                producer.poll(0.001)
            producer.poll(0)

    send_for(time.monotonic() + 30, lambda: len(reports) >= 500)
    assert len(reports) >= 500, f"only {len(reports)} acknowledgements before the kill"
    leader = partition_state(topic)[0]
    killed_at = time.monotonic()
    cluster.kill9(leader - 1)
    send_for(killed_at + 120, lambda: any(sent > killed_at for _, sent, _ in reports))
    after = [r for r in reports if r[1] > killed_at]
    assert after, f"no acknowledgement in 120 s after killing node {leader}"
    first_new = min(t for t, _, _ in after) - killed_at
    first_any = min(t for t, _, _ in reports if t > killed_at) - killed_at
    new_leader = partition_state(topic)[0]
    producer.flush(30)
    cluster.start(leader - 1)
    cluster.wait_all_active(60)
    wait_until(f"{topic} to have 3 in sync again", 60, lambda: partition_state(topic)[1] == 3)
    print(f"run {n}: killed leader {leader}, new leader {new_leader}: first acknowledgement of a record "
          f"sent after the kill {first_new * 1000:.0f} ms (first acknowledgement after the kill "
          f"{first_any * 1000:.0f} ms)", flush=True)
    return first_new


try:
    try:
        times = [one_run(n) for n in range(1, runs + 1)]
    except BaseException:
        for i in range(3):
            print(f"--- node {i + 1}: exit status {cluster.procs[i].poll()}, log tail:\n{cluster.log_tail(i, 15)}",
                  file=sys.stderr)
        raise
    print(f"failover (kill -9 of the leader to the first acks=all acknowledgement from the new leader), "
          f"{runs} runs: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
          f"broker.session.timeout.ms={session_timeout_ms or 'default (9000)'}")
finally:
    cluster.stop()
EOF
