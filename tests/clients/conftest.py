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
        self.tmp_path = tmp_path
        self.extra = dict(extra or {})
        self.ports = [(free_port(), free_port()) for _ in range(n)]
        self.metrics_ports = [free_port() for _ in range(n)]
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(self.ports))
        self.procs = [None] * n
        self.logs = []
        for i in range(n):
            self.start(i)
        self.bootstrap = ",".join(f"127.0.0.1:{k}" for k, _ in self.ports)
        wait_until(f"{n} active brokers", 60, lambda: self._all_active())

    def start(self, i):
        """Starts node index `i` (node id i + 1) on its own ports and data dir,
        the same ones across restarts; its log file is appended to."""
        kafka, controller = self.ports[i]
        node_id = i + 1
        args = [
            FJORD_BIN, "node", "--node-id", str(node_id), "--data-dir", str(self.tmp_path / f"node-{node_id}"),
            "-o", f"listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}",
            "-o", f"advertised.listeners=PLAINTEXT://127.0.0.1:{kafka}",
            "-o", f"controller.quorum.voters={self.voters}",
            "-o", f"fjord.metrics.listen=127.0.0.1:{self.metrics_ports[i]}",
        ]
        for k, v in self.extra.items():
            args += ["-o", f"{k}={v}"]
        log = open(self.tmp_path / f"node-{node_id}.log", "a")
        self.logs.append(log)
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def _all_active(self):
        # Every running node must see it: a node just restarted answers from
        # its own image, which can still be the one from before it stopped.
        statuses = [cluster_status(f"127.0.0.1:{self.ports[i][0]}") for i in self.alive()]
        if len(statuses) < self.n:
            return None
        for s in statuses:
            if sum(1 for b in s["brokers"] if b["state"] == "active") != self.n:
                return None
        return statuses[0]

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()

    def stop_node(self, i, timeout=20):
        """SIGTERM node index `i` and waits for it to exit; returns its exit status."""
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"node {i + 1} did not stop within {timeout}s of SIGTERM")

    def kill9(self, i):
        """SIGKILL node index `i`: no shutdown path runs."""
        p = self.procs[i]
        p.kill()
        p.wait()

    def restart_all(self, deadline_s=60):
        """SIGTERM every node, then starts them again on the same dirs and
        ports and waits until all brokers are active."""
        for i in range(self.n):
            if self.procs[i].poll() is None:
                self.procs[i].send_signal(signal.SIGTERM)
        for i in range(self.n):
            self.stop_node(i)
        for i in range(self.n):
            self.start(i)
        self.wait_all_active(deadline_s)

    def wait_all_active(self, deadline_s=60):
        wait_until(f"{self.n} active brokers", deadline_s, lambda: self._all_active())

    def metric(self, i, name, **labels):
        """The sum of the Prometheus samples `name` (with these labels) that
        node index `i` exports, 0.0 when it exports none."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_ports[i]}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line[len(name):len(name) + 1] not in ("{", " "):
                continue
            sample, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total

    def data_dir(self, i):
        return self.tmp_path / f"node-{i + 1}"

    def alive(self):
        """Indexes of nodes whose process is running (stopped ones included)."""
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def status(self, prefer=None):
        """`fjord cluster status --json` through the running nodes, those in
        `prefer` first (a SIGSTOPped node would only time out)."""
        order = list(prefer or []) + [i for i in self.alive() if i not in (prefer or [])]
        if not order:
            raise RuntimeError("no node is running")
        return cluster_status(",".join(f"127.0.0.1:{self.ports[i][0]}" for i in order))

    def pause(self, i):
        """SIGSTOP node index `i`: it keeps its sockets but answers nothing."""
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i):
        self.procs[i].send_signal(signal.SIGCONT)

    def kill9_all(self):
        """SIGKILL every running node at once (all signals sent before any wait)."""
        running = [p for p in self.procs if p is not None and p.poll() is None]
        for p in running:
            p.kill()
        for p in running:
            p.wait()

    def log_tail(self, i, lines=40):
        for log in self.logs:
            log.flush()
        path = self.tmp_path / f"node-{i + 1}.log"
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])


def topic_leaders(bootstrap, topic):
    """{partition: leader} when the topic exists and every partition has a
    leader, else None."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return None
    leaders = {p: pm.leader for p, pm in t.partitions.items()}
    if any(pm.error is not None or pm.leader < 0 for pm in t.partitions.values()):
        return None
    return leaders


def create_topic(bootstrap, topic, partitions, config=None, deadline_s=30, replication_factor=1):
    """Creates `topic` with CreateTopics (replication factor 1 unless told)
    and waits until every partition has a leader; returns {partition: leader}."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor,
                   config=dict(config or {}))
    admin.create_topics([new], request_timeout=15)[topic].result(timeout=20)

    def all_led():
        leaders = topic_leaders(bootstrap, topic)
        return leaders if leaders is not None and len(leaders) == partitions else None

    return wait_until(f"{topic}'s {partitions} partitions to have leaders", deadline_s, all_led)


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
