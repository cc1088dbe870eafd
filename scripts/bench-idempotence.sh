#!/usr/bin/env bash
# What the idempotent producer costs: on a fresh 3-node loopback cluster, in
# one run, librdkafka (confluent-kafka) produces N 1 KiB records with
# acks=all to a 6-partition topic with replication factor 3, once with
# enable.idempotence=false and once with true (each to its own topic), and
# prints records/s and MB/s of each and their ratio. librdkafka is the
# producer here because fjord's own client has no idempotence.
#
# Usage: scripts/bench-idempotence.sh [--records N]
# Env:   FJORD_BIN  the binary (default: the release build)
# It prints figures and never fails on them: a benchmark has no pass mark.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=200000
while [ $# -gt 0 ]; do
    case "$1" in
        --records) RECORDS="$2"; shift 2 ;;
        *) echo "usage: $0 [--records N]" >&2; exit 2 ;;
    esac
done
export FJORD_BIN="${FJORD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fjord-target}/release/fjord}"
if [ ! -x "$FJORD_BIN" ]; then
    echo "bench-idempotence.sh: no fjord binary at $FJORD_BIN (build it, or set FJORD_BIN)" >&2
    exit 2
fi
DIR="$(mktemp -d "${TMPDIR:-/var/tmp}/fjord-bench-idem.XXXXXX")"
trap 'rm -rf "$DIR"' EXIT

.venv/bin/python - "$DIR" "$RECORDS" <<'PY'
import pathlib
import sys
import time

sys.path.insert(0, "tests/clients")
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from conftest import Cluster  # noqa: E402

directory, records = pathlib.Path(sys.argv[1]), int(sys.argv[2])
cluster = Cluster(directory, 3)
value = b"x" * 1024
results = {}
try:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for idempotent in (False, True):
        topic = f"bench-idempotent-{idempotent}".lower()
        admin.create_topics([NewTopic(topic, 6, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
        time.sleep(2)
        failed = []
        producer = Producer({
            "bootstrap.servers": cluster.bootstrap, "acks": "all",
            "enable.idempotence": idempotent, "linger.ms": 5, "batch.size": 1 << 20,
            "queue.buffering.max.messages": 500000,
        })
        start = time.monotonic()
        for i in range(records):
            while True:
                try:
                    producer.produce(topic, value=value, on_delivery=lambda e, m: e and failed.append(e))
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 10000 == 0:
                producer.poll(0)
        producer.flush(120)
        seconds = time.monotonic() - start
        results[idempotent] = (records / seconds, records * 1024 / seconds / 1e6, len(failed))
        print(f"enable.idempotence={str(idempotent).lower():5}  {records / seconds:10.0f} records/s "
              f"{records * 1024 / seconds / 1e6:8.1f} MB/s  failed {len(failed)}", flush=True)
    print(f"ratio (idempotent / not): {results[True][0] / results[False][0]:.2f}")
finally:
    cluster.stop()
PY
