"""Unmodified Kafka clients see fjord's cluster: brokers, cluster id and
controller, through ApiVersions, Metadata, DescribeCluster and DescribeQuorum."""
import subprocess

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from conftest import cluster_status


def test_confluent_admin_describes_the_cluster(three_nodes):
    status = cluster_status(three_nodes.bootstrap)
    admin = AdminClient({"bootstrap.servers": three_nodes.bootstrap})
    described = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert described.cluster_id == status["cluster_id"]
    assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    assert sorted(n.port for n in described.nodes) == sorted(k for k, _ in three_nodes.ports)
    assert described.controller.id == status["leader_id"]


def test_confluent_metadata_lists_every_broker(three_nodes):
    admin = AdminClient({"bootstrap.servers": three_nodes.bootstrap})
    md = admin.list_topics(timeout=15)
    assert md.cluster_id == cluster_status(three_nodes.bootstrap)["cluster_id"]
    assert sorted(md.brokers) == [1, 2, 3]
    assert {b.port for b in md.brokers.values()} == {k for k, _ in three_nodes.ports}


def test_kafka_python_admin_bootstraps(three_nodes):
    admin = KafkaAdminClient(bootstrap_servers=three_nodes.bootstrap, request_timeout_ms=10000)
    try:
        described = admin.describe_cluster()
        assert described["cluster_id"] == cluster_status(three_nodes.bootstrap)["cluster_id"]
        assert sorted(b["broker_id"] for b in described["brokers"]) == [1, 2, 3], described
        assert not any(b["is_fenced"] for b in described["brokers"]), described
        assert described["controller_id"] == cluster_status(three_nodes.bootstrap)["leader_id"]
    finally:
        admin.close()


def test_kcat_lists_the_brokers(single_node):
    out = subprocess.run(
        ["kcat", "-L", "-b", single_node.bootstrap, "-m", "10"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    kafka_port = single_node.ports[0][0]
    assert "1 brokers:" in out.stdout, out.stdout
    assert f"broker 1 at 127.0.0.1:{kafka_port}" in out.stdout, out.stdout


def test_status_from_every_node_agrees(three_nodes):
    answers = [cluster_status(f"127.0.0.1:{k}") for k, _ in three_nodes.ports]
    leaders = {a["leader_id"] for a in answers}
    assert len(leaders) == 1
    assert {a["cluster_id"] for a in answers} == {answers[0]["cluster_id"]}
    for a in answers:
        assert sorted(v["id"] for v in a["voters"]) == [1, 2, 3]
        assert all(v["lag"] >= 0 for v in a["voters"])
