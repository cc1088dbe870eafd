#!/usr/bin/env bash
# Measures this machine's limits, then fjord against them, in one run:
#   1. sequential write with fdatasync (dd), the ceiling for produce;
#   2. loopback TCP throughput (a plain socket sender and receiver), the
#      ceiling for consume, which serves from the page cache over TCP;
#   3. a fresh single node (temp data dir, free loopback ports):
#      `fjord bench produce` (1 KiB records, 6 partitions, acks=1, about
#      1 GiB) and `fjord bench consume` of the same data.
# Each fjord figure is printed with its ratio to the matching limit.
#
# Usage: scripts/bench.sh [--records N]
# Env:   FJORD_BIN  the binary (default: the release build,
#                   $CARGO_TARGET_DIR/release/fjord; build it first with
#                   `cargo build --release`)
#        BENCH_DIR  where dd and the node write (default: a new temp dir
#                   under /var/tmp, on disk rather than tmpfs); removed after.
# It prints figures and never fails on them: a benchmark has no pass mark.
set -euo pipefail

RECORDS=1048576 # 1 GiB of 1 KiB values
RECORD_SIZE=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --records) RECORDS="$2"; shift 2 ;;
        *) echo "usage: $0 [--records N]" >&2; exit 2 ;;
    esac
done

FJORD_BIN="${FJORD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fjord-target}/release/fjord}"
if [ ! -x "$FJORD_BIN" ]; then
    echo "bench.sh: no fjord binary at $FJORD_BIN (build it, or set FJORD_BIN)" >&2
    exit 2
fi
DIR="${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/fjord-bench.XXXXXX")}"
mkdir -p "$DIR"
NODE_PID=
cleanup() {
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB memory; data in $DIR"

echo "== sequential write with fdatasync: dd bs=1M count=1024 conv=fdatasync"
DD_OUT=$(dd if=/dev/zero of="$DIR/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
echo "   $DD_OUT"
# "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.1 s, 511 MB/s"
DISK_BPS=$(echo "$DD_OUT" | awk -F', ' '{split($0, a, " "); sub(/ s$/, "", $3); printf "%.0f", a[1] / $3}')
rm -f "$DIR/dd.bin"

echo "== loopback TCP: 2 GiB through one 127.0.0.1 socket"
TCP_BPS=$(python3 - <<'EOF'
import socket, threading, time
TOTAL = 2 << 30
CHUNK = 1 << 20
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
received = 0
def receive():
    global received
    conn, _ = server.accept()
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        received += len(data)
    conn.close()
reader = threading.Thread(target=receive)
reader.start()
sender = socket.create_connection(server.getsockname())
block = b"x" * CHUNK
start = time.perf_counter()
for _ in range(TOTAL // CHUNK):
    sender.sendall(block)
sender.close()
reader.join()
elapsed = time.perf_counter() - start
assert received == TOTAL, received
print(int(received / elapsed))
EOF
)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
KAFKA_PORT=$(free_port)
CONTROLLER_PORT=$(free_port)
METRICS_PORT=$(free_port)
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
echo "== fjord node on $BOOTSTRAP ($FJORD_BIN)"
"$FJORD_BIN" node --data-dir "$DIR/data" \
    -o "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT" \
    -o "controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT" \
    -o "fjord.metrics.listen=127.0.0.1:$METRICS_PORT" \
    >"$DIR/node.log" 2>&1 &
NODE_PID=$!
# Ready when the broker is registered and unfenced: topics can be placed.
for _ in $(seq 1 300); do
    if "$FJORD_BIN" cluster status --bootstrap-server "$BOOTSTRAP" --json --timeout 2 2>/dev/null |
        grep -q '"state":"active"'; then
        break
    fi
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
        echo "bench.sh: the node exited:" >&2
        cat "$DIR/node.log" >&2
        exit 1
    fi
    sleep 0.1
done

echo "== fjord bench produce: $RECORDS records of $RECORD_SIZE bytes, 6 partitions, acks=1"
PRODUCE=$("$FJORD_BIN" bench produce --bootstrap-server "$BOOTSTRAP" --topic bench \
    --partitions 6 --records "$RECORDS" --record-size "$RECORD_SIZE" --acks 1 --json)
echo "   $PRODUCE"
echo "== fjord bench consume: the same topic from the beginning"
CONSUME=$("$FJORD_BIN" bench consume --bootstrap-server "$BOOTSTRAP" --topic bench --json)
echo "   $CONSUME"

python3 - "$DISK_BPS" "$TCP_BPS" "$PRODUCE" "$CONSUME" <<'EOF'
import json, sys
disk, tcp = float(sys.argv[1]), float(sys.argv[2])
produce, consume = json.loads(sys.argv[3]), json.loads(sys.argv[4])
mb = 1e6
p_bps = produce["bytes"] / produce["seconds"]
c_bps = consume["bytes"] / consume["seconds"]
print()
print(f"{'':34}{'MB/s':>10}  ratio")
print(f"{'disk: dd conv=fdatasync':34}{disk / mb:10.1f}")
print(f"{'loopback TCP':34}{tcp / mb:10.1f}")
print(f"{'fjord produce (acks=1)':34}{p_bps / mb:10.1f}  {p_bps / disk:.2f} of disk, {p_bps / tcp:.2f} of TCP")
print(f"{'fjord consume':34}{c_bps / mb:10.1f}  {c_bps / tcp:.2f} of TCP")
print(f"produce: {produce['records_per_sec']:.0f} records/s, latency p50 {produce['latency_ms_p50']:.1f} ms, "
      f"p99 {produce['latency_ms_p99']:.1f} ms, max {produce['latency_ms_max']:.1f} ms; "
      f"consume: {consume['records_per_sec']:.0f} records/s   (MB = 10^6 bytes)")
EOF
