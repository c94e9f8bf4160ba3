"""The processor end to end through a real broker and its Kafka adapter: events, index
and replies as Kafka readers see them, restore, an aborted transaction, fencing,
compaction, reply routes checked against real metadata, settings Kafka refuses, and
partitions added. What each command writes, refuses or dead-letters is tested without
a broker (test_engine*.py); deadlines here come from the settings in force."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from duroot_stream.config import ConfigError, KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    Append,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    ErrorCode,
    IndexCompleted,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
)
from duroot_stream.kafka import header_bytes
from duroot_stream.processor import (
    Processor,
    ProcessorConfigError,
    ProcessorFatal,
    ProcessorSettings,
)
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import Codec, Topics, partition_for
from tests.kafka_helpers import read_all, wait_until
from tests.processor.client_faults import FailCall, abortable
from tests.processor_harness import (
    PARTITIONS,
    REPLY_S,
    Requester,
    command,
    key_text,
    new_workflow_id,
    running_processor,
    setup_topics,
    vid_of,
    workflow_events,
)

pytestmark = pytest.mark.broker

REGISTRY = str(uuid.UUID(int=7))
INIT = Init(REGISTRY, "/g/root", "files1", "/data/root")


def test_happy_path_events_index_and_automatic_end(
    kafka: KafkaConfig, requester: Requester
) -> None:
    wf = new_workflow_id()
    with running_processor(kafka):
        r1 = requester.request(command(wf, INIT))
        assert r1.ok and r1.error is None and r1.workflow_id == wf
        r2 = requester.request(
            command(wf, Append((PathUsage("a", 1024), PathUsage("b", 2048))), vid_of(r1))
        )
        assert r2.ok and vid_of(r2) > vid_of(r1)
        r3 = requester.request(command(wf, Commit(), vid_of(r2)))
        assert r3.ok
    events = workflow_events(kafka, wf)
    payloads = [e.payload for _, e in events]
    assert payloads == [
        DuRootStarted(REGISTRY, "/g/root", "files1", "/data/root"),
        DuUpdated("a", 1024),
        DuUpdated("b", 2048),
        DuRootCompleted(0, ""),
        DuRootCommitted(),
    ]
    assert [e.seq for _, e in events] == [0, 1, 2, 3, 4]
    assert [e.parent for _, e in events] == [EVENT_EPOCH] + [e.event_id for _, e in events[:-1]]
    assert events[-1][1].event_id == r3.vid, "the reply names the head after the automatic End"
    assert all(h.vid == e.event_id and h.seq == e.seq for h, e in events)
    # the index mirrors STARTED and COMPLETED
    codec = Codec()
    index = [
        codec.decode_index_event(m.value())
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).index)
        if m.key() == wf.encode()
    ]
    assert [type(i.payload) for i in index] == [IndexStarted, IndexCompleted]
    assert index[0].workflow_event_id == events[0][1].event_id
    assert index[1].workflow_event_id == events[3][1].event_id
    assert index[1].registry_id == REGISTRY


def test_reply_routes_header_and_replies_topic(kafka: KafkaConfig, requester: Requester) -> None:
    wf = new_workflow_id()
    with running_processor(kafka):
        cmd = command(wf, INIT)
        corr = requester.send(cmd, correlation="corr-42")
        reply = requester.wait_reply(corr)
        assert reply.command_id == cmd.command_id
        assert dict(requester.reply_headers[b"corr-42"])["correlation-id"] == b"corr-42"
        # Without reply headers the reply goes to the replies topic keyed by command id.
        bare = command(wf, Append((PathUsage("a", 1),)))
        requester.send(bare, reply_route=False)
        codec = Codec()

        def keyed_reply() -> list[Reply]:
            return [
                codec.decode_reply(m.value())
                for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
                if m.key() == bare.command_id.encode()
            ]

        replies = wait_until(keyed_reply, timeout=REPLY_S, what="reply keyed by command id")
    assert len(replies) == 1 and replies[0].ok and replies[0].command_id == bare.command_id


def test_restart_restores_state_and_continues_with_last_vid(
    kafka: KafkaConfig, requester: Requester
) -> None:
    wf = new_workflow_id()
    with running_processor(kafka, instance_id="one"):
        v1 = vid_of(requester.request(command(wf, INIT)))
        v2 = vid_of(requester.request(command(wf, Append((PathUsage("a", 5),)), v1)))
    with running_processor(kafka, instance_id="two") as second:
        assert second.workflow_count() >= 1
        assert (
            requester.request(command(wf, Append((PathUsage("b", 6),)), v1)).error
            is ErrorCode.VERSION_CONFLICT
        ), "the restored state knows the head moved on"
        r = requester.request(command(wf, Commit(), v2))
    assert r.ok
    assert [e.seq for _, e in workflow_events(kafka, wf)] == [0, 1, 2, 3]


def test_garbage_collection_expires_and_deletes(kafka: KafkaConfig, requester: Requester) -> None:
    active, done = new_workflow_id(), new_workflow_id()
    with running_processor(kafka, gc_interval_s=0.5, max_active_s=1.0, delete_after_s=2.0) as proc:
        requester.request(command(active, INIT))
        requester.request(command(done, INIT))
        requester.request(command(done, Commit()))

        def gone() -> bool:
            return proc.workflow_count() == 0

        # Expired after max_active, deleted delete_after later, each noticed by the next
        # pass and committed within a reply's time.
        s = proc.settings
        bound = s.max_active_s + s.delete_after_s + 2 * (s.gc_interval_s + REPLY_S)
        wait_until(gone, timeout=bound, what="both workflows expired and deleted")
    expired = [
        e.payload
        for _, e in workflow_events(kafka, active)
        if isinstance(e.payload, DuRootCompleted)
    ]
    assert expired == [DuRootCompleted(104, "expired")]


def test_aborted_transaction_leaves_nothing_visible_and_no_state(
    kafka: KafkaConfig, requester: Requester
) -> None:
    """The first transaction holding the Append aborts: its events and reply never become
    visible, the state forgets it, and the re-consumed command applies exactly once."""
    wf = new_workflow_id()
    faults = FailCall("commit_transaction", abortable)
    with running_processor(kafka, faults) as proc:
        v1 = vid_of(requester.request(command(wf, INIT)))
        faults.arm()
        append = command(wf, Append((PathUsage("a", 1),)), v1)
        reply = requester.request(append)
        assert faults.injected == 1
        assert proc.metrics.transactions.labels("aborted")._value.get() == 1
    assert reply.ok
    events = workflow_events(kafka, wf)
    assert [type(e.payload) for _, e in events] == [DuRootStarted, DuUpdated]
    assert events[1][1].parent == v1 and events[1][1].event_id == reply.vid
    # Exactly one reply became visible for the aborted-then-retried command.
    replies = [
        m
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
        if dict(m.headers() or [])["correlation-id"] == append.command_id.encode()
    ]
    assert len(replies) == 1


def test_fenced_instance_stops_with_an_error(kafka: KafkaConfig, requester: Requester) -> None:
    """A newer producer with the instance's transactional id fences it; the instance stops."""
    with (
        pytest.raises(ProcessorFatal, match="fenced"),
        running_processor(kafka, instance_id="same") as proc,
    ):
        assert requester.request(command(new_workflow_id(), INIT)).ok
        _successor(kafka, f"{proc.settings.group_id}-same")
        requester.send(command(new_workflow_id(), INIT))
        # Its next transaction is refused.
        wait_until(lambda: proc.failed, timeout=REPLY_S, what="the fenced instance to stop")


def _successor(kafka: KafkaConfig, transactional_id: str) -> None:
    """A producer with `transactional_id` bumps its epoch: the running instance with it
    is a zombie now. The producer is gone when this returns (the test's traceback,
    which pytest keeps, does not hold it past the broker)."""
    from confluent_kafka import Producer

    successor = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": transactional_id}
    )
    successor.init_transactions(30)


def test_deleted_history_is_compacted_away(kafka: KafkaConfig) -> None:
    """After Delete and a cleaner run, no key of the workflow is left in the event topic."""
    from confluent_kafka import Producer

    from duroot_stream.wire import create_topics, partition_for
    from tests.processor_harness import PARTITIONS

    create_topics(
        kafka,
        partitions=PARTITIONS,
        extra_configs={
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",
            "min.compaction.lag.ms": "0",
        },
    )
    requester = Requester(kafka)
    wf = new_workflow_id()
    with running_processor(kafka):
        requester.request(command(wf, INIT))
        requester.request(command(wf, Append((PathUsage("a", 1),))))
        requester.request(command(wf, Commit()))
        assert requester.request(command(wf, Delete())).ok
    requester.close()
    events_topic = Topics(kafka.topic_prefix).events
    partition = partition_for(wf, PARTITIONS)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

    def compacted() -> bool:
        # Segments roll only on an append after segment.ms: append harmless tombstones.
        producer.produce(events_topic, None, f"{uuid.uuid4()}/0".encode(), partition=partition)
        producer.flush(10)
        keys = [key_text(m) for m in read_all(kafka.bootstrap_servers, events_topic)]
        return not any(k.startswith(wf + "/") for k in keys)

    wait_until(compacted, timeout=120, interval=1, what=f"the cleaner to remove {wf}'s keys")


def _replies_with(kafka: KafkaConfig, name: str, value: bytes) -> list[Message]:
    topics = Topics(kafka.topic_prefix)
    return [
        m
        for m in read_all(kafka.bootstrap_servers, topics.replies)
        if header_bytes(m, name) == value
    ]


def test_unparsable_reply_partition_is_logged_counted_and_the_correlation_id_echoed(
    kafka: KafkaConfig, requester: Requester, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="duroot.processor")
    topics = Topics(kafka.topic_prefix)
    wf = new_workflow_id()
    cmd = command(wf, INIT)
    with running_processor(kafka) as proc:
        requester.producer.produce(
            topics.commands,
            Codec().encode_command(cmd),
            wf.encode(),
            partition=partition_for(wf, PARTITIONS),
            headers=[
                ("reply-topic", topics.replies.encode()),
                ("reply-partition", b"zero"),
                ("correlation-id", b"corr-bad-partition"),
            ],
        )
        requester.producer.flush(10)
        replies = wait_until(
            lambda: _replies_with(kafka, "correlation-id", b"corr-bad-partition"),
            timeout=REPLY_S,
            what="the reply with the correlation id",
        )
        counted = proc.metrics.reply_header_errors.labels("reply-partition")._value.get()
        by_reason = proc.metrics.reply_route_errors.labels("bad-header")._value.get()
    assert len(replies) == 1
    reply = Codec().decode_reply(replies[0].value() or b"")
    assert reply.ok and reply.command_id == cmd.command_id
    # The default route: the replies topic keyed by command id, saying why.
    assert replies[0].key() == cmd.command_id.encode()
    assert replies[0].partition() == partition_for(cmd.command_id, PARTITIONS)
    assert b"'reply-partition'" in (header_bytes(replies[0], "reply-route-error") or b"")
    assert counted == 1 and by_reason == 1
    warnings = [r for r in caplog.records if getattr(r, "reason", None) == "bad-header"]
    assert len(warnings) == 1 and "'zero'" in str(getattr(warnings[0], "error", ""))


# Routes that once stopped the processor, or misrouted its reply,
# and a route to each of the pipeline's own topics.
FOUND_ROUTES: dict[str, list[tuple[str, bytes]]] = {
    "nul-topic": [
        ("reply-topic", b"no such topic \x00"),
        ("reply-partition", b"-7"),
        ("correlation-id", b"\xff\xfe not utf-8"),
    ],
    "partition-out-of-range": [("reply-topic", b"{replies}"), ("reply-partition", b"999999")],
    "huge-topic": [("reply-topic", b"r" * 100_000), ("reply-partition", b"0")],
    "unknown-topic": [("reply-topic", b"{prefix}replies.nobody"), ("reply-partition", b"0")],
    "not-allowed": [("reply-topic", b"elsewhere"), ("reply-partition", b"0")],
    "huge-correlation-id": [("correlation-id", b"c" * 300)],
    **{
        f"own-{role}": [("reply-topic", f"{{{role}}}".encode()), ("reply-partition", b"0")]
        for role in ("commands", "events", "index", "dlq")
    },
}


def test_reply_routes_that_cannot_be_followed_still_apply_the_command(
    kafka: KafkaConfig, requester: Requester
) -> None:
    topics = Topics(kafka.topic_prefix)
    names = {
        "replies": topics.replies,
        "prefix": topics.prefix,
        "commands": topics.commands,
        "events": topics.events,
        "index": topics.index,
        "dlq": topics.dlq,
    }
    sent: dict[str, tuple[str, str]] = {}  # case -> (workflow id, command id)
    with running_processor(kafka) as proc:
        for case, route in FOUND_ROUTES.items():
            wf = new_workflow_id()
            cmd = command(wf, INIT)
            headers: list[tuple[str, str | bytes | None]] = [
                (k, v.decode("latin-1").format(**names).encode("latin-1")) for k, v in route
            ]
            requester.producer.produce(
                topics.commands,
                Codec().encode_command(cmd),
                wf.encode(),
                partition=partition_for(wf, PARTITIONS),
                headers=headers,
            )
            sent[case] = (wf, cmd.command_id)
        requester.producer.flush(10)
        after = requester.request(command(new_workflow_id(), INIT))
        assert after.ok, "the processor goes on after the bad routes"
        assert not proc.failed
        expected = {
            "bad-header": 2,
            "partition-out-of-range": 1,
            "unknown-topic": 1,
            "not-allowed": 1,
            "correlation-id-too-long": 1,
            "own-topic": 4,
        }
        # Counted when each transaction commits; the commands are on several partitions.
        wait_until(
            lambda: _route_errors(proc) == expected,
            timeout=REPLY_S,
            what=f"route errors {expected}",
        )
    replies = {
        m.key(): m for m in read_all(kafka.bootstrap_servers, topics.replies) if m.key() is not None
    }
    for case, (wf, command_id) in sent.items():
        reply = replies.get(command_id.encode())
        assert reply is not None, f"{case}: no reply keyed by its command id"
        assert header_bytes(reply, "reply-route-error"), case
        assert Codec().decode_reply(reply.value() or b"").ok, case
        assert [type(e.payload) for _, e in workflow_events(kafka, wf)] == [DuRootStarted], case
    # Nothing but events in events, index events in index, dead letters in dlq.
    codec = Codec()
    for m in read_all(kafka.bootstrap_servers, topics.events):
        codec.decode_event(m.value())
    for m in read_all(kafka.bootstrap_servers, topics.index):
        codec.decode_index_event(m.value())
    assert read_all(kafka.bootstrap_servers, topics.dlq) == []


def _route_errors(proc: Processor) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for metric in proc.metrics.reply_route_errors.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize(
    "setting", ["transactional.id", "isolation.level", "enable.auto.commit", "enable.idempotence"]
)
def test_settings_exactly_once_rests_on_are_refused(setting: str) -> None:
    kafka = KafkaConfig(overrides={setting: "x"})
    with pytest.raises(ConfigError, match=setting.replace(".", "\\.")):
        Processor(ProcessorSettings(kafka=kafka))


def test_a_session_timeout_the_broker_refuses_stops_the_processor(kafka: KafkaConfig) -> None:
    setup_topics(kafka)
    bad = KafkaConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=kafka.topic_prefix,
        overrides={"session.timeout.ms": "4000"},  # below group.min.session.timeout.ms
    )
    with (
        pytest.raises(ProcessorConfigError, match="Kafka refuses this processor's configuration"),
        running_processor(bad),
    ):
        pass


def _grow_commands_topic(kafka: KafkaConfig, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    name = Topics(kafka.topic_prefix).commands
    for future in admin.create_partitions([NewPartitions(name, partitions)]).values():
        future.result(30)


def test_added_partitions_stop_the_processor_instead_of_dead_lettering(
    kafka: KafkaConfig, requester: Requester
) -> None:
    grown = PARTITIONS + 1  # doubling would keep every old workflow where it was
    # A new workflow that a client knowing the new count routes to an old partition,
    # which is not where the processor's old count puts it.
    wf = next(
        w
        for w in (new_workflow_id() for _ in range(1000))
        if partition_for(w, grown) < PARTITIONS
        and partition_for(w, grown) != partition_for(w, PARTITIONS)
    )
    with (
        pytest.raises(ProcessorFatal, match="partition count must never change"),
        running_processor(kafka) as proc,
    ):
        _grow_commands_topic(kafka, grown)
        requester.send(command(wf, INIT), partition=partition_for(wf, grown))
        # The misrouted command's batch checks the count before it commits.
        wait_until(lambda: proc.failed, timeout=REPLY_S, what="the processor to stop")
    assert read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).dlq) == []


def test_assigned_partition_beyond_the_count_stops_the_processor(
    kafka: KafkaConfig, requester: Requester
) -> None:
    # Metadata refreshed often, so the group sees the new partitions soon.
    fast = KafkaConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=kafka.topic_prefix,
        overrides={"topic.metadata.refresh.interval.ms": "500"},
    )
    with (
        pytest.raises(ProcessorFatal, match=f"has partition {2 * PARTITIONS - 1}"),
        running_processor(fast) as proc,
    ):
        _grow_commands_topic(kafka, 2 * PARTITIONS)
        # Seen at the next metadata refresh, assigned by a rebalance (its Kafka calls
        # bounded as the processor's), raised by the loop's next batch.
        bound = 0.5 + KAFKA_TIMEOUT_S + REPLY_S
        wait_until(lambda: proc.failed, timeout=bound, what="the processor to stop")
