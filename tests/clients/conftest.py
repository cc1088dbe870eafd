"""Real fjord processes for the real-client tests.

Each fixture starts `fjord node` processes (the binary in $FJORD_BIN) on free
loopback ports in a temp dir, waits until `fjord cluster status` answers, and
stops them (SIGTERM, then SIGKILL) whatever the test did.
"""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

FJORD_BIN = os.environ.get("FJORD_BIN", "target/debug/fjord")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, deadline_s, check):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the condition may raise until it holds
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last error: {last})")


def cluster_status(bootstrap):
    out = subprocess.run(
        [FJORD_BIN, "cluster", "status", "--bootstrap-server", bootstrap, "--json", "--timeout", "3"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return json.loads(out.stdout)


class Cluster:
    def __init__(self, tmp_path, n, extra=None):
        self.n = n
        self.ports = [(free_port(), free_port()) for _ in range(n)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(self.ports))
        self.procs = []
        self.logs = []
        for i, (kafka, controller) in enumerate(self.ports):
            node_id = i + 1
            args = [
                FJORD_BIN, "node", "--node-id", str(node_id), "--data-dir", str(tmp_path / f"node-{node_id}"),
                "-o", f"listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}",
                "-o", f"advertised.listeners=PLAINTEXT://127.0.0.1:{kafka}",
                "-o", f"controller.quorum.voters={voters}",
                "-o", f"fjord.metrics.listen=127.0.0.1:{free_port()}",
            ]
            for k, v in (extra or {}).items():
                args += ["-o", f"{k}={v}"]
            log = open(tmp_path / f"node-{node_id}.log", "w")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        self.bootstrap = ",".join(f"127.0.0.1:{k}" for k, _ in self.ports)
        wait_until(f"{n} active brokers", 60, lambda: self._all_active())

    def _all_active(self):
        s = cluster_status(f"127.0.0.1:{self.ports[0][0]}")
        return s if sum(1 for b in s["brokers"] if b["state"] == "active") == self.n else None

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def single_node(tmp_path):
    c = Cluster(tmp_path, 1)
    yield c
    c.stop()


@pytest.fixture
def three_nodes(tmp_path):
    c = Cluster(tmp_path, 3)
    yield c
    c.stop()
