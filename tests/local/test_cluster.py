"""The local three-node cluster: replication as promised, the coordinator rule checked
against the brokers' own answer, a killed leader replaced and back in sync, the CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    ConfigResource,
)

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import Listener, Quorum, server_properties
from duroot_stream.local.cluster import (
    OFFSETS_TOPIC,
    LocalCluster,
    coordinator_partition,
    java_string_hash,
)
from duroot_stream.wire import Topics, create_topics
from tests.kafka_helpers import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]


def test_java_string_hash_matches_java() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("duroot-processor-a") == 2_023_264_268  # jshell says so
    # The one string everybody knows hashes to Integer.MIN_VALUE; Utils.abs makes it 0.
    assert java_string_hash("polygenelubricants") == -(1 << 31)
    assert coordinator_partition("polygenelubricants", 3) == 0


def test_cluster_node_properties_replicate_everything(tmp_path: Path) -> None:
    quorum = Quorum(2, {1: 9101, 2: 9102, 3: 9103}, "cluster-id")
    text = server_properties(9092, 9102, tmp_path, quorum=quorum)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"


def test_extra_listener_binds_one_port_and_advertises_another(tmp_path: Path) -> None:
    text = server_properties(9092, 9093, tmp_path, listeners=[Listener("PROXIED", 9200, 9300)])
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,PROXIED://127.0.0.1:9200,CONTROLLER://127.0.0.1:9093"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,PROXIED://127.0.0.1:9300"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with LocalCluster(3, log_dir=logs) as c:
        yield c


def test_topics_get_three_replicas_and_min_isr_two(cluster: LocalCluster) -> None:
    kafka = KafkaConfig(bootstrap_servers=cluster.bootstrap, topic_prefix="rf.")
    create_topics(kafka, partitions=3)
    topics = Topics(kafka.topic_prefix)
    admin = cluster.admin()
    names = [topic.name for topic in topics.all()]

    # Created at the controller; each broker's metadata learns of them a little later.
    def metadata() -> ClusterMetadata | None:
        m = admin.list_topics(timeout=30)
        known = all(n in m.topics and m.topics[n].partitions for n in names)
        return m if known else None

    md = wait_until(metadata, timeout=60, what="the new topics in the metadata")
    assert md is not None
    for topic in topics.all():
        for p in md.topics[topic.name].partitions.values():
            assert sorted(p.replicas) == [1, 2, 3], f"{topic.name}[{p.id}] {p.replicas}"
    configs = admin.describe_configs([ConfigResource("topic", topics.events)])
    for future in configs.values():
        assert future.result()["min.insync.replicas"].value == "2"


def test_coordinator_rule_agrees_with_the_brokers(cluster: LocalCluster) -> None:
    """Groups and transactional ids share Kafka's rule; the brokers name a group's
    coordinator (describe_consumer_groups), so several groups check the rule."""
    kafka = KafkaConfig(bootstrap_servers=cluster.bootstrap, topic_prefix="co.")
    create_topics(kafka, partitions=1)
    groups = [f"g-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    consumers = []
    for group in groups:
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
        consumer.subscribe([Topics(kafka.topic_prefix).commands])
        consumers.append(consumer)
    try:

        def joined() -> bool:
            for c in consumers:
                c.poll(0.1)
            return all(c.assignment() for c in consumers)

        wait_until(joined, timeout=120, what="every group joined")
        partitions = len(
            cluster.admin().list_topics(OFFSETS_TOPIC, timeout=30).topics[OFFSETS_TOPIC].partitions
        )
        described = cluster.admin().describe_consumer_groups(groups)
        seen = set()
        for group, future in described.items():
            assert future.result().coordinator.id == cluster.group_coordinator(group), group
            seen.add(coordinator_partition(group, partitions))
        assert len(seen) > 1, "every group on one partition: the rule was not exercised"
    finally:
        for c in consumers:
            c.close()


def test_killed_leader_is_replaced_and_catches_up(cluster: LocalCluster) -> None:
    kafka = KafkaConfig(bootstrap_servers=cluster.bootstrap, topic_prefix="kill.")
    create_topics(kafka, partitions=3)
    topic = Topics(kafka.topic_prefix).commands
    # The node asked may learn of the new topic's partitions a moment after the others.
    leader = wait_until(
        lambda: max(cluster.leader(topic, 0), 0), timeout=60, what=f"a leader of {topic}[0]"
    )
    cluster.kill(leader)
    try:
        new = wait_until(
            lambda: (n := cluster.leader(topic, 0)) not in (leader, -1) and n,
            timeout=120,
            what=f"a new leader of {topic}[0] after node {leader} was killed",
        )
        assert new != leader
        assert leader not in cluster.brokers()
    finally:
        cluster.restart(leader)
    wait_until(lambda: not cluster.under_replicated([topic]), timeout=120, what="ISR full")
    assert cluster.brokers() == {1, 2, 3}


def test_cli_broker_nodes_3_prints_every_node_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "duroot_stream.cli.main", "broker", "--nodes", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until ready or exit
        assert re.fullmatch(r"bootstrap=(127\.0\.0\.1:\d+,){2}127\.0\.0\.1:\d+", line), line
        admin = AdminClient({"bootstrap.servers": line.split("=", 1)[1]})
        # Whichever node answers: its metadata may learn of the last node a little later.
        wait_until(
            lambda: sorted(admin.list_topics(timeout=30).brokers) == [1, 2, 3],
            timeout=60,
            what="three brokers in the metadata",
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        assert time.monotonic() - started < 120
    finally:
        if proc.poll() is None:
            proc.kill()
