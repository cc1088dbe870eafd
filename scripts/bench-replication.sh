#!/usr/bin/env bash
# What replication costs: on a fresh 3-node loopback cluster, in one run,
#   1. `fjord bench produce` with acks=all to a topic with replication
#      factor 3 (min.insync.replicas=2, as the fault test runs it);
#   2. the same bench with acks=1 to a topic with replication factor 1;
# both 1 KiB records, 6 partitions. Prints records/s, MB/s, p50/p99 latency
# of each and the ratio of the first to the second.
#
# Usage: scripts/bench-replication.sh [--records N]
# Env:   FJORD_BIN  the binary (default: the release build,
#                   $CARGO_TARGET_DIR/release/fjord)
#        BENCH_DIR  where the nodes write (default: a new temp dir under
#                   /var/tmp, on disk rather than tmpfs); removed after.
# It prints figures and never fails on them: a benchmark has no pass mark.
set -euo pipefail

RECORDS=300000
RECORD_SIZE=1024
PARTITIONS=6
while [ $# -gt 0 ]; do
    case "$1" in
        --records) RECORDS="$2"; shift 2 ;;
        *) echo "usage: $0 [--records N]" >&2; exit 2 ;;
    esac
done

FJORD_BIN="${FJORD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fjord-target}/release/fjord}"
if [ ! -x "$FJORD_BIN" ]; then
    echo "bench-replication.sh: no fjord binary at $FJORD_BIN (build it, or set FJORD_BIN)" >&2
    exit 2
fi
DIR="${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/fjord-bench-repl.XXXXXX")}"
mkdir -p "$DIR"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
KAFKA=() CONTROLLER=()
VOTERS=
for n in 1 2 3; do
    KAFKA[$n]=$(free_port)
    CONTROLLER[$n]=$(free_port)
    VOTERS="$VOTERS${VOTERS:+,}$n@127.0.0.1:${CONTROLLER[$n]}"
done
BOOTSTRAP="127.0.0.1:${KAFKA[1]},127.0.0.1:${KAFKA[2]},127.0.0.1:${KAFKA[3]}"

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB memory; data in $DIR"
echo "== 3 fjord nodes on $BOOTSTRAP ($FJORD_BIN)"
for n in 1 2 3; do
    "$FJORD_BIN" node --node-id "$n" --data-dir "$DIR/node-$n" \
        -o "listeners=PLAINTEXT://127.0.0.1:${KAFKA[$n]},CONTROLLER://127.0.0.1:${CONTROLLER[$n]}" \
        -o "advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA[$n]}" \
        -o "controller.quorum.voters=$VOTERS" \
        -o "fjord.metrics.listen=127.0.0.1:$(free_port)" \
        -o "min.insync.replicas=2" \
        >"$DIR/node-$n.log" 2>&1 &
    PIDS+=($!)
done
# Ready when all three brokers are registered and unfenced.
ready=
for _ in $(seq 1 600); do
    active=$("$FJORD_BIN" cluster status --bootstrap-server "$BOOTSTRAP" --json --timeout 2 2>/dev/null |
        grep -o '"state":"active"' | wc -l || true)
    if [ "$active" = 3 ]; then
        ready=1
        break
    fi
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench-replication.sh: a node exited:" >&2
            tail -n 20 "$DIR"/node-*.log >&2
            exit 1
        fi
    done
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "bench-replication.sh: the cluster did not get 3 active brokers in 60 s" >&2
    exit 1
fi

bench() { # topic acks replication-factor
    "$FJORD_BIN" bench produce --bootstrap-server "$BOOTSTRAP" --topic "$1" \
        --partitions "$PARTITIONS" --replication-factor "$3" --acks "$2" \
        --records "$RECORDS" --record-size "$RECORD_SIZE" --json
}
echo "== fjord bench produce: $RECORDS records of $RECORD_SIZE bytes, $PARTITIONS partitions, acks=all, replication factor 3"
REPLICATED=$(bench bench-rf3 all 3)
echo "   $REPLICATED"
echo "== fjord bench produce: $RECORDS records of $RECORD_SIZE bytes, $PARTITIONS partitions, acks=1, replication factor 1"
SINGLE=$(bench bench-rf1 1 1)
echo "   $SINGLE"

python3 - "$REPLICATED" "$SINGLE" <<'EOF'
import json, sys
r, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def mb(x):
    return x["bytes"] / x["seconds"] / 1e6
print()
print(f"{'':28}{'records/s':>12}{'MB/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
for name, x in (("acks=all, RF=3", r), ("acks=1, RF=1", s)):
    print(f"{name:28}{x['records_per_sec']:12.0f}{mb(x):9.1f}{x['latency_ms_p50']:9.2f}"
          f"{x['latency_ms_p99']:9.2f}{x['failed']:8d}")
print(f"{'ratio (RF=3 / RF=1)':28}{r['records_per_sec'] / s['records_per_sec']:12.2f}{mb(r) / mb(s):9.2f}"
      f"{r['latency_ms_p50'] / s['latency_ms_p50']:9.2f}{r['latency_ms_p99'] / s['latency_ms_p99']:9.2f}")
print("(MB = 10^6 bytes of record values)")
EOF
