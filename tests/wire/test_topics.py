"""`topics create` is idempotent; `topics check` names the topic and the setting that is wrong."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from duroot_stream.cli import main as cli
from duroot_stream.cli import options
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootCommitted, Reply, StateCode, WorkflowEvent, WorkflowState
from duroot_stream.wire import MARKER_KEY, Codec, CodecError, StateMarker
from duroot_stream.wire.topic_admin import (
    Replication,
    TopicCheckError,
    check_partitions,
    check_topics,
    create_topics,
    partition_problems,
    wait_visible,
)
from duroot_stream.wire.topics import EventKey, Partitioning, TopicRole, Topics
from tests.kafka_helpers import wait_until

pytestmark = pytest.mark.broker


def test_create_twice_is_idempotent(kafka: KafkaConfig) -> None:
    first = create_topics(kafka, partitions=3)
    assert len(first) == 6
    assert create_topics(kafka, partitions=3) == []
    counts = check_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    assert counts[topics.commands] == counts[topics.events] == counts[topics.state] == 3
    assert counts[topics.dlq] == 1


def test_cli_topics_create_and_check(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    assert cli.main(["topics", "create", "--partitions", "2", *args]) == 0
    assert cli.main(["topics", "check", *args]) == 0
    out = capsys.readouterr().out
    assert f"ok {kafka.topic_prefix}events partitions=2" in out


def _create(kafka: KafkaConfig, name: str, partitions: int, policy: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    fs = admin.create_topics([NewTopic(name, partitions, 1, config={"cleanup.policy": policy})])
    for f in fs.values():
        f.result()
    wait_visible(admin, [name])


def _create_all_but(kafka: KafkaConfig, skip: str) -> None:
    topics = Topics(kafka.topic_prefix)
    for name, policy in [
        (topics.commands, "delete"),
        (topics.events, "compact"),
        (topics.index, "compact"),
        (topics.replies, "delete"),
        (topics.dlq, "delete"),
    ]:
        if name != skip:
            _create(kafka, name, 4, policy)


def test_check_detects_partition_mismatch(kafka: KafkaConfig) -> None:
    topics = Topics(kafka.topic_prefix)
    _create_all_but(kafka, topics.events)
    _create(kafka, topics.events, 2, "compact")
    with pytest.raises(
        TopicCheckError,
        match=rf"partitions: {topics.commands} has 4, {topics.events} has 2, {topics.index} has 4",
    ):
        check_topics(kafka)


def test_check_refuses_an_index_partitioned_otherwise(kafka: KafkaConfig) -> None:
    topics = Topics(kafka.topic_prefix)
    _create_all_but(kafka, topics.index)
    _create(kafka, topics.index, 3, "compact")
    with pytest.raises(TopicCheckError, match=rf"{topics.index} has 3; they must be equal"):
        check_topics(kafka)


def test_check_refuses_another_count_than_expected(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=2)
    assert check_topics(kafka, partitions=2)[Topics(kafka.topic_prefix).index] == 2
    with pytest.raises(TopicCheckError, match=r"they must all be 3: .* N can never change"):
        check_topics(kafka, partitions=3)


def test_check_detects_wrong_cleanup_policy(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = Topics(kafka.topic_prefix)
    _create_all_but(kafka, topics.events)
    _create(kafka, topics.events, 4, "delete")
    with pytest.raises(
        TopicCheckError,
        match=rf"cleanup.policy: topic {topics.events} has 'delete', expected 'compact'",
    ):
        check_topics(kafka)
    rc = cli.main(
        ["topics", "check", "-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    )
    assert rc == options.EXIT_FAILED
    assert "cleanup.policy" in capsys.readouterr().err


def test_check_reports_missing_topics(kafka: KafkaConfig) -> None:
    with pytest.raises(TopicCheckError, match="is missing"):
        check_topics(kafka)


def test_compaction_removes_a_tombstoned_key(kafka: KafkaConfig) -> None:
    """The cleaner really drops a key whose last record is a tombstone (events topic settings)."""
    name = f"{kafka.topic_prefix}compaction"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for f in admin.create_topics(
        [
            NewTopic(
                name,
                1,
                1,
                config={
                    "cleanup.policy": "compact",
                    "segment.ms": "100",
                    "min.cleanable.dirty.ratio": "0.01",
                    "delete.retention.ms": "100",
                    "min.compaction.lag.ms": "0",
                },
            )
        ]
    ).values():
        f.result()
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(name, key=b"gone", value=b"v1")
    producer.produce(name, key=b"kept", value=b"v1")
    producer.produce(name, key=b"gone", value=None)
    producer.flush(10)

    def keys_in_topic() -> list[bytes | None]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": uuid.uuid4().hex,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(name, 0, -2)])
        keys: list[bytes | None] = []
        try:
            while True:
                msg = consumer.poll(5)
                if msg is None or msg.error():
                    break
                keys.append(msg.key())
        finally:
            consumer.close()
        return keys

    def cleaned() -> bool:
        # Segments roll only on an append after segment.ms: keep appending filler.
        producer.produce(name, key=b"filler", value=b"x")
        producer.flush(10)
        time.sleep(0.2)
        return b"gone" not in keys_in_topic()

    wait_until(cleaned, timeout=90, interval=0.5, what="the cleaner to remove key 'gone'")
    assert b"kept" in keys_in_topic()


# --- without a broker -------------------------------------------------------------

WF = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
ID1 = "01HGW2N7EHJVJ4CJ999RRS2E97"
ID2 = "01HGW2N7EHJVJ4CJ999RRS2E98"


def test_names_and_configs_are_those_of_the_design() -> None:
    topics = Topics("duroot.")
    day = 24 * 3600 * 1000
    assert {t.name: (t.all_configs(), t.partitions_for(6)) for t in topics.all()} == {
        "duroot.commands": ({"cleanup.policy": "delete", "retention.ms": str(7 * day)}, 6),
        "duroot.events": ({"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}, 6),
        "duroot.index": ({"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}, 6),
        "duroot.replies": ({"cleanup.policy": "delete", "retention.ms": str(day)}, 6),
        "duroot.commands.dlq": (
            {"cleanup.policy": "delete", "retention.ms": str(30 * day)},
            1,
        ),
        "duroot.state": (
            {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.bytes": str(8 * 1024 * 1024),
                "segment.ms": str(10 * 60 * 1000),
            },
            6,
        ),
    }
    assert [t.name for t in topics.all()] == [
        topics.commands,
        topics.events,
        topics.index,
        topics.replies,
        topics.dlq,
        topics.state,
    ]
    assert topics.topic(TopicRole.EVENTS).all_configs({"segment.ms": "100"})["segment.ms"] == "100"


def test_keys_round_trip_and_say_what_is_wrong() -> None:
    topics = Topics("duroot.")
    commands, events = topics.topic(TopicRole.COMMANDS), topics.topic(TopicRole.EVENTS)
    assert commands.parse_key(commands.key_bytes(WF)) == WF
    event = WorkflowEvent(ID2, ID1, WF, 12, ID1, DuRootCommitted())
    assert events.key_bytes(EventKey(WF, 12)) == event.key.encode() == f"{WF}/12".encode()
    assert events.parse_key(f"{WF}/12".encode()) == EventKey(WF, 12)
    assert topics.topic(TopicRole.DLQ).parse_key(None) == b""
    with pytest.raises(CodecError, match="is not a workflow id"):
        commands.parse_key(WF.upper().encode())
    with pytest.raises(CodecError, match="without a key"):
        topics.topic(TopicRole.INDEX).parse_key(None)
    with pytest.raises(CodecError, match=r"is not <workflow-id>/<seq>"):
        events.parse_key(f"{WF}/-1".encode())
    with pytest.raises(CodecError, match="is not UTF-8"):
        topics.topic(TopicRole.REPLIES).parse_key(b"\xff")
    state = topics.topic(TopicRole.STATE)
    assert state.parse_key(state.key_bytes(WF)) == WF
    assert state.parse_key(MARKER_KEY) == MARKER_KEY.decode()
    with pytest.raises(CodecError, match="is not a workflow id"):
        state.parse_key(b"~other")


def test_values_go_through_the_codec() -> None:
    codec, replies = Codec(), Topics("duroot.").topic(TopicRole.REPLIES)
    reply = Reply(ID1, WF, True, ID2, None, "")
    assert replies.decode(codec, replies.encode(codec, reply)) == reply
    dlq = Topics("duroot.").topic(TopicRole.DLQ)
    assert dlq.decode(codec, dlq.encode(codec, b"\x00raw")) == b"\x00raw"
    state_topic = Topics("duroot.").topic(TopicRole.STATE)
    state = WorkflowState(
        WF, StateCode.COMPLETED, ID2, 3, "r", "/g", "h", "/h", 1, 2, ((ID1, ID2),)
    )
    marker = StateMarker(17, "p1", 5)
    for value in (state, marker):
        assert state_topic.decode(codec, state_topic.encode(codec, value)) == value


def test_partitioning_of_each_role() -> None:
    topics = Topics("duroot.")
    assert {t.role: t.partitioning for t in topics.all()} == {
        TopicRole.COMMANDS: Partitioning.BY_WORKFLOW,
        TopicRole.EVENTS: Partitioning.BY_WORKFLOW,
        TopicRole.INDEX: Partitioning.BY_WORKFLOW,
        TopicRole.REPLIES: Partitioning.BY_COMMAND,
        TopicRole.DLQ: Partitioning.SINGLE,
        TopicRole.STATE: Partitioning.BY_WORKFLOW,
    }


def test_partition_problems() -> None:
    topics = Topics("p.")
    good = {t.name: t.partitions_for(4) for t in topics.all()}
    assert partition_problems(topics, good) == []
    assert partition_problems(topics, good, expected=4) == []
    check_partitions(topics, {**good, topics.replies: 9})  # replies may differ
    (problem,) = partition_problems(topics, good, expected=6)
    assert problem.startswith(
        "partitions: p.commands has 4, p.events has 4, p.index has 4, p.state has 4;"
    )
    assert "they must all be 6" in problem and "N can never change" in problem
    missing = {k: v for k, v in good.items() if k != topics.dlq}
    assert partition_problems(topics, missing) == [
        "topic p.commands.dlq is missing (create it with `duroot-stream topics create`)"
    ]
    with pytest.raises(
        TopicCheckError, match=r"p\.index has 5, p\.state has 4; they must be equal"
    ):
        check_partitions(topics, {**good, topics.index: 5})
    with pytest.raises(
        TopicCheckError, match=r"p\.index has 4, p\.state has 3; they must be equal"
    ):
        check_partitions(topics, {**good, topics.state: 3})


@pytest.mark.parametrize(
    ("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_replication_follows_the_cluster(brokers: int, expected: tuple[int, int]) -> None:
    assert tuple(Replication.for_brokers(brokers)) == expected


def test_created_topics_get_the_local_brokers_replication(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=2)
    client = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topics = Topics(kafka.topic_prefix)
    resource = ConfigResource("topic", topics.events)
    configs = client.describe_configs([resource])[resource].result()
    assert configs["min.insync.replicas"].value == "1"
    md = client.list_topics(topics.events, timeout=10)
    assert {len(p.replicas) for p in md.topics[topics.events].partitions.values()} == {1}
    assert check_topics(kafka, partitions=2) == {t.name: t.partitions_for(2) for t in topics.all()}


def test_check_names_a_replication_factor_below_the_one_asked_for(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=2)
    with pytest.raises(TopicCheckError) as found:
        check_topics(kafka, replication_factor=3)
    message = str(found.value)
    assert (
        f"replication factor: topic {kafka.topic_prefix}commands has 1 replicas, expected 3"
        in message
    )
    # The rule for three replicas: min.insync.replicas 2.
    assert (
        f"min.insync.replicas: topic {kafka.topic_prefix}events has 1, expected at least 2"
        in message
    )


def test_check_names_a_retention_too_short(kafka: KafkaConfig) -> None:
    topics = Topics(kafka.topic_prefix)
    create_topics(kafka, partitions=2)
    client = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    shorter = ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topics.replies, incremental_configs=[shorter])
    for future in client.incremental_alter_configs([resource]).values():
        future.result()

    def reported() -> str:
        try:
            check_topics(kafka)
        except TopicCheckError as exc:
            return str(exc)
        return ""

    message = wait_until(reported, timeout=30, what="the altered retention seen by the check")
    assert (
        f"retention.ms: topic {topics.replies} keeps records 60 s, expected at least 86400 s"
        in message
    )


def test_topics_cli_takes_replication_flags(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    assert (
        cli.main(["topics", "create", "--partitions", "2", "--replication-factor", "1", *base]) == 0
    )
    assert cli.main(["topics", "check", "--partitions", "2", *base]) == 0
    capsys.readouterr()
    assert cli.main(["topics", "check", "--partitions", "3", *base]) == options.EXIT_FAILED
    assert "must all be 3" in capsys.readouterr().err
    assert cli.main(["topics", "check", "--min-insync-replicas", "2", *base]) == options.EXIT_FAILED
    assert "min.insync.replicas" in capsys.readouterr().err
