"""Unmodified Kafka admin clients manage fjord's topics: kafka-python's
KafkaAdminClient and confluent-kafka's AdminClient create, describe (with
config sources), alter, grow and delete topics; kcat lists them."""
import subprocess

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic as ConfluentNewTopic,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, NewPartitions as KpNewPartitions, NewTopic
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from conftest import wait_until


def kafka_python_admin(cluster):
    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=15000)


def confluent_admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def topic_configs(admin, topic):
    described = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return described["topic"][topic]


def topic_names(admin):
    return set(admin.list_topics(timeout=15).topics)


def test_kafka_python_creates_describes_grows_and_deletes(three_nodes):
    admin = kafka_python_admin(three_nodes)
    try:
        admin.create_topics([NewTopic("kp-orders", 3, 1, topic_configs={"retention.ms": "60000"})])
        assert "kp-orders" in admin.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic("kp-orders", 3, 1)])
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic("kp-overreplicated", 1, 4)])

        configs = topic_configs(admin, "kp-orders")
        assert configs["retention.ms"]["value"] == "60000", configs
        assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["cleanup.policy"]["value"] == "delete"
        assert configs["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"
        # The default filter keeps only what the topic overrides.
        modified = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, "kp-orders")])
        assert set(modified["topic"]["kp-orders"]) == {"retention.ms"}, modified

        admin.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, "kp-orders", configs={"segment.ms": "120000"})])
        configs = topic_configs(admin, "kp-orders")
        assert configs["segment.ms"]["value"] == "120000"
        assert configs["retention.ms"]["value"] == "60000"
        # Legacy AlterConfigs (key 33) replaces the whole override set;
        # kafka-python re-sends the overrides it is not changing.
        admin.alter_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, "kp-orders", configs={"segment.ms": "180000"})],
            incremental=False,
        )
        configs = topic_configs(admin, "kp-orders")
        assert configs["segment.ms"]["value"] == "180000"
        assert configs["retention.ms"]["value"] == "60000"

        admin.create_partitions({"kp-orders": KpNewPartitions(5)})
        topic = admin.describe_topics(["kp-orders"])[0]
        assert len(topic["partitions"]) == 5

        admin.delete_topics(["kp-orders"])
        wait_until("kp-orders gone", 15, lambda: "kp-orders" not in admin.list_topics())
    finally:
        admin.close()


def test_confluent_creates_describes_alters_and_deletes(three_nodes):
    admin = confluent_admin(three_nodes)
    futures = admin.create_topics(
        [ConfluentNewTopic("ck-orders", num_partitions=6, replication_factor=1, config={"retention.bytes": "1048576"})],
        request_timeout=15,
    )
    futures["ck-orders"].result(timeout=20)
    assert "ck-orders" in topic_names(admin)
    md = admin.list_topics(topic="ck-orders", timeout=15).topics["ck-orders"]
    leaders = [p.leader for p in md.partitions.values()]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3], leaders

    with pytest.raises(KafkaException) as refused:
        admin.create_topics([ConfluentNewTopic("ck-orders", 1, 1)])["ck-orders"].result(timeout=20)
    assert refused.value.args[0].name() == "TOPIC_ALREADY_EXISTS"
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([ConfluentNewTopic("bad name!", 1, 1)])["bad name!"].result(timeout=20)
    assert refused.value.args[0].name() == "TOPIC_EXCEPTION"  # librdkafka's name for INVALID_TOPIC_EXCEPTION (17)
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([ConfluentNewTopic("ck-bad-config", 1, 1, config={"retention.ms": "soon"})])[
            "ck-bad-config"
        ].result(timeout=20)
    assert refused.value.args[0].name() == "INVALID_CONFIG"

    resource = ConfigResource(ConfigResource.Type.TOPIC, "ck-orders")
    described = admin.describe_configs([resource])[resource].result(timeout=20)
    assert described["retention.bytes"].value == "1048576"
    assert described["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    alter = ConfigResource(
        ConfigResource.Type.TOPIC,
        "ck-orders",
        incremental_configs=[
            ConfigEntry("max.message.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    admin.incremental_alter_configs([alter])[alter].result(timeout=20)
    described = admin.describe_configs([resource])[resource].result(timeout=20)
    assert described["max.message.bytes"].value == "2097152"
    assert described["retention.bytes"].value == "-1"
    assert described["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    admin.create_partitions([NewPartitions("ck-orders", 8)])["ck-orders"].result(timeout=20)
    wait_until(
        "8 partitions", 15, lambda: len(admin.list_topics(topic="ck-orders", timeout=15).topics["ck-orders"].partitions) == 8
    )

    admin.delete_topics(["ck-orders"], request_timeout=15)["ck-orders"].result(timeout=20)
    wait_until("ck-orders gone", 15, lambda: "ck-orders" not in topic_names(admin))


def test_kcat_lists_a_created_topic(single_node):
    admin = confluent_admin(single_node)
    admin.create_topics([ConfluentNewTopic("kcat-topic", 2, 1)])["kcat-topic"].result(timeout=20)
    out = subprocess.run(
        ["kcat", "-L", "-b", single_node.bootstrap, "-t", "kcat-topic", "-m", "10"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert 'topic "kcat-topic" with 2 partitions:' in out.stdout, out.stdout
    assert "partition 0, leader 1, replicas: 1, isrs: 1" in out.stdout, out.stdout


def test_fjord_topic_cli_round_trip(single_node):
    import json
    import os

    fjord = os.environ.get("FJORD_BIN", "target/debug/fjord")
    run = lambda *args: subprocess.run(  # noqa: E731
        [fjord, "topic", *args, "--bootstrap-server", single_node.bootstrap],
        capture_output=True, text=True, timeout=60,
    )
    created = run("create", "cli-topic", "--partitions", "3", "--config", "retention.ms=5000")
    assert created.returncode == 0, created.stderr
    again = run("create", "cli-topic", "--partitions", "3")
    assert again.returncode == 2
    assert "cli-topic" in again.stderr and "TopicAlreadyExists" in again.stderr, again.stderr
    assert "cli-topic" in run("list").stdout.split()
    described = json.loads(run("describe", "cli-topic", "--json").stdout)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"] == {"name": "retention.ms", "value": "5000", "source": "DYNAMIC_TOPIC_CONFIG", "read_only": False}
    altered = run("alter", "cli-topic", "--delete-config", "retention.ms", "--config", "segment.ms=60000")
    assert altered.returncode == 0, altered.stderr
    configs = {c["name"]: c for c in json.loads(run("describe", "cli-topic", "--json").stdout)["configs"]}
    assert configs["retention.ms"]["source"] == "DEFAULT_CONFIG"
    assert configs["segment.ms"]["value"] == "60000"
    assert run("delete", "cli-topic").returncode == 0
    gone = run("describe", "cli-topic")
    assert gone.returncode == 2 and "UnknownTopicOrPartition" in gone.stderr, gone.stderr
