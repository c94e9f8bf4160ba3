"""No restore holds a transaction open: a partition of a million events, assigned in
the middle of a load, is restored while the receiver goes on committing its batches.

Cooperative rebalancing calls `on_assign` inside `poll`/`consume`, in the middle of
a batch. A restore there, on the loop's thread, would keep the batch's transaction
open for the whole restore; one longer than the transaction timeout (plus the
broker's abort check) has the coordinator abort it, and the commit after the restore
fails: the instance is fenced. Here the transaction timeout is 4 s and the restore
of the big partition takes longer; the receiving instance restores it in a thread,
must lose nothing, apply every command once, and never abort or be fenced.

The assignment is made to come mid-batch: the receiver stalls at the first record of
a transaction (`StallFirstProduce`: Kafka has not heard of the transaction yet, so
its timeout does not run) until the group has given it the big partition, and goes
on with that batch, in which the assignment reaches it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    NO_VC,
    Append,
    Command,
    DuRootStarted,
    DuUpdated,
    Init,
    PathUsage,
    WorkflowEvent,
)
from duroot_stream.ids import MonotonicUlids, new_ulid, now_ms
from duroot_stream.processor import Processor
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import Codec, Topics, event_headers, partition_for
from tests.kafka_helpers import read_all, wait_until
from tests.processor.client_faults import StallFirstProduce
from tests.processor_harness import (
    PARTITIONS,
    Requester,
    command,
    header_value,
    running_processor,
)

pytestmark = pytest.mark.broker

Headers = list[tuple[str, str | bytes | None]]  # as confluent_kafka types them

BIG = 0  # the partition with the million events
BIG_WORKFLOWS, BIG_EVENTS_EACH = 1_000, 1_000
LOAD_WORKFLOWS, LOAD_APPENDS = 40, 1_000  # on the other partitions
BACKLOG = 20_000  # commands the receiver is kept behind while the big partition moves
SETTINGS = {"transaction.timeout.ms": "4000"}
REGISTRY = str(uuid.uuid4())


def _zigzag(n: int) -> bytes:
    """An Avro long."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def write_big_partition(kafka: KafkaConfig, topic: str, partition: int) -> int:
    """Workflows of STARTED + DuUpdated events on `partition`, valid and chained.

    Encoding a million events one by one takes 20 s here; each event is spliced from
    a template the codec encoded instead (checked against the codec once per workflow):
    framing, vid, parent, workflow id, seq, command id, payload."""
    codec, new_id = Codec(), MonotonicUlids()
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 50,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    written, made = 0, 0
    while made < BIG_WORKFLOWS:
        wf = str(uuid.uuid4())
        if partition_for(wf, PARTITIONS) != partition:
            continue
        made += 1
        cause = new_ulid()
        head = new_id(EVENT_EPOCH)
        started = WorkflowEvent(
            head, EVENT_EPOCH, wf, 0, cause, DuRootStarted(REGISTRY, "/g/" + wf, "h", "/r")
        )
        first_headers: Headers = list(event_headers(started))
        records = [(f"{wf}/0".encode(), codec.encode_event(started, validate=False), first_headers)]
        sample = WorkflowEvent(new_id(head), head, wf, 1, cause, DuUpdated("d", 4096))
        encoded = codec.encode_event(sample, validate=False)
        at = encoded.index(sample.event_id.encode()) - 1  # the length byte before the vid
        framing, rest = encoded[:at], encoded[at + 2 * 27 :]
        wf_part = rest[: 1 + len(wf)]
        tail = rest[1 + len(wf) + len(_zigzag(1)) :]  # command id, payload
        (kind, wf_header, (vid_name, _), (parent_name, _), (seq_name, _), cause_header) = (
            event_headers(sample)
        )
        for seq in range(1, BIG_EVENTS_EACH):
            vid = sample.event_id if seq == 1 else new_id(head)
            value = b"".join(
                (
                    framing,
                    b"\x34",
                    vid.encode(),
                    b"\x34",
                    head.encode(),
                    wf_part,
                    _zigzag(seq),
                    tail,
                )
            )
            if seq == 1:
                assert value == encoded, "the spliced event differs from the codec's"
            headers: Headers = [
                kind,
                wf_header,
                (vid_name, vid.encode()),
                (parent_name, head.encode()),
                (seq_name, str(seq).encode()),
                cause_header,
            ]
            records.append((f"{wf}/{seq}".encode(), value, headers))
            head = vid
        for key, value, headers in records:
            while True:
                try:
                    producer.produce(topic, value, key, partition=partition, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
        written += len(records)
        producer.poll(0)
    assert producer.flush(120) == 0, "events not delivered"
    return written


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def owned(processor: Processor) -> set[int]:
    return processor.owned_partitions()


def test_a_partition_of_a_million_events_assigned_mid_batch_is_restored_after_a_commit(
    kafka: KafkaConfig, requester: Requester, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = Topics(kafka.topic_prefix)
    load = [
        wf for wf in (str(uuid.uuid4()) for _ in range(400)) if partition_for(wf, PARTITIONS) != BIG
    ]
    load = load[:LOAD_WORKFLOWS]
    for wf in load:
        requester.send(command(wf, Init(REGISTRY, "/g/" + wf, "h", "/r")))
    logs = _Logs()
    logger = logging.getLogger("duroot.processor")
    logger.addHandler(logs)
    level = logger.level
    logger.setLevel(logging.INFO)  # the restore's own log lines are INFO
    config = replace(kafka, overrides=SETTINGS)
    # Long batches (up to 2 s of commands in one transaction): an assignment comes in
    # the middle of one. Both instances alike; which one gets the big partition
    # first is the assignor's choice.
    group = f"restore-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.client())
    stalls = {"first": StallFirstProduce(), "second": StallFirstProduce()}
    try:
        with ExitStack() as first_stack, ExitStack() as second_stack:
            first, second = (
                stack.enter_context(
                    running_processor(
                        config,
                        stalls[name],
                        instance_id=name,
                        group_id=group,
                        commit_interval_s=2.0,
                        batch_size=100_000,
                    )
                )
                for stack, name in ((first_stack, "first"), (second_stack, "second"))
            )
            wait_until(
                lambda: owned(first) and owned(second) and len(owned(first) | owned(second)) == 3,
                timeout=120,
                what="the partitions shared out",
            )
            receiver, leave = (
                (second, first_stack) if BIG in owned(first) else (first, second_stack)
            )
            # Written behind the owner's back (it never restores them, saving time):
            # the receiver reads them all when the partition moves to it.
            started = time.monotonic()
            big_events = write_big_partition(kafka, topics.events, BIG)
            written_s = time.monotonic() - started
            # A backlog of Appends kept up until the big partition has moved, however
            # fast the receiver is: the assignment comes while it works through one.
            sending = threading.Event()
            sent: list[str] = []
            sender = threading.Thread(
                target=_send_appends,
                args=(kafka, load, (first, second), sent, sending),
                daemon=True,
            )
            sender.start()
            try:
                wait_until(
                    lambda: receiver.metrics.transactions.labels("committed")._value.get() > 0,
                    timeout=60,
                    what="the receiver to work on the load",
                )
                stall = stalls[receiver.settings.instance_id]
                stall.armed.set()
                wait_until(stall.paused.is_set, timeout=60, what="the receiver to stall")
                mark = len(logs.records)
                leave.close()  # stops it: it commits, leaves the group
                # The group's rebalance, bounded as the processor's Kafka calls are.
                wait_until(
                    lambda: _assigned(admin, group, topics.commands, BIG),
                    timeout=KAFKA_TIMEOUT_S,
                    interval=0.2,
                    what="the group to give the big partition to the receiver",
                )
                stall.resume.set()  # the batch goes on; the assignment comes in it
                wait_until(
                    lambda: BIG in owned(receiver), timeout=120, what="the big partition moved"
                )
                moved_s = time.monotonic() - started
            finally:
                sending.set()
                sender.join(120)
            assert not sender.is_alive(), "the load's sender did not finish"
            replies: Counter[str] = wait_until(
                lambda: _replies(kafka, sent) or Counter(),
                timeout=180,
                interval=1,
                what="every command answered",
            )
            aborted = receiver.metrics.transactions.labels("aborted")._value.get()
            restored = receiver.metrics.restore_events.labels(str(BIG))._value.get()
            held = receiver.workflow_count()
            assert not receiver.failed
    finally:
        logger.removeHandler(logs)
        logger.setLevel(level)
    mid_batch = [
        r
        for r in logs.records[mark:]
        if r.getMessage() == "restoring assigned partitions"
        and getattr(r, "instance", None) == receiver.settings.instance_id
        and BIG in getattr(r, "partitions", ())
        and getattr(r, "batch_commands", 0) > 0
    ]
    restores = [
        getattr(r, "seconds", None)
        for r in logs.records[mark:]
        if r.getMessage() == "partitions restored" and BIG in getattr(r, "partitions", ())
    ]
    with capsys.disabled():
        print(
            f"\n[big restore] {big_events:,} events written in {written_s:.0f} s; the big "
            f"partition restored mid-load in {restores} s (moved at {moved_s:.0f} s), assigned "
            f"with {[getattr(r, 'batch_commands', None) for r in mid_batch]} commands in the "
            "open batch; "
            f"{len(sent):,} Appends answered; aborted transactions {aborted}"
        )
    assert stall.injected == 1, f"{stall.injected} stalls, not one"
    assert mid_batch, "the big partition was not assigned mid-batch"
    assert big_events == BIG_WORKFLOWS * BIG_EVENTS_EACH
    assert restored >= big_events, "the receiver did not restore the big partition"
    assert held >= BIG_WORKFLOWS + len(load)
    assert aborted == 0, "a transaction aborted: the restore held it open"
    assert sorted(replies.values()) == [1] * len(sent), "a command answered twice"
    codec, histories = Codec(), {wf: list[WorkflowEvent]() for wf in load}
    for m in read_all(kafka.bootstrap_servers, topics.events, timeout=120):
        wf = (m.key() or b"").split(b"/")[0].decode()
        if wf in histories and m.value() is not None:
            histories[wf].append(codec.decode_event(m.value()))
    for wf, events in histories.items():
        assert [e.seq for e in events] == list(range(len(events)))
        assert all(b.parent == a.event_id for a, b in itertools.pairwise(events))
        paths = [e.payload.path for e in events if isinstance(e.payload, DuUpdated)]
        assert len(paths) >= LOAD_APPENDS and paths == [f"p{i}" for i in range(len(paths))], wf


def _assigned(admin: AdminClient, group: str, topic: str, partition: int) -> bool:
    """Whether the group's coordinator has given `topic` [`partition`] to a member."""
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    wanted = TopicPartition(topic, partition)
    return any(
        (tp.topic, tp.partition) == (wanted.topic, wanted.partition)
        for member in future.result(10).members
        for tp in member.assignment.topic_partitions
    )


def _handled(processors: tuple[Processor, ...]) -> float:
    """Commands the processors have committed, by their metrics."""
    return sum(
        sample.value
        for processor in processors
        for metric in processor.metrics.registry.collect()
        if metric.name == "duroot_processor_commands"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def _send_appends(
    kafka: KafkaConfig,
    load: list[str],
    processors: tuple[Processor, ...],
    sent: list[str],
    done: threading.Event,
) -> None:
    """Appends round robin over `load`, their correlation ids into `sent`: at least
    LOAD_APPENDS per workflow, and then on until `done`, keeping the receiver about
    BACKLOG commands behind (never caught up, never flooded)."""
    codec, topics = Codec(), Topics(kafka.topic_prefix)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    i = 0
    while i < LOAD_APPENDS or not done.is_set():
        if i >= LOAD_APPENDS and len(sent) - _handled(processors) > BACKLOG:
            producer.poll(0.01)
            continue
        for wf in load:
            c = Command(new_ulid(), wf, NO_VC, now_ms(), Append((PathUsage(f"p{i}", i),)))
            headers: Headers = [
                ("reply-topic", topics.replies.encode()),
                ("reply-partition", b"0"),
                ("correlation-id", c.command_id.encode()),
            ]
            producer.produce(
                topics.commands,
                codec.encode_command(c),
                wf.encode(),
                partition=partition_for(wf, PARTITIONS),
                headers=headers,
            )
            sent.append(c.command_id)
        producer.poll(0)
        i += 1
    assert producer.flush(60) == 0


def _replies(kafka: KafkaConfig, sent: list[str]) -> Counter[str] | None:
    """Replies per correlation id once every command in `sent` has one."""
    found = Counter(
        header_value(m, "correlation-id").decode()
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
    )
    wanted = Counter({c: found[c] for c in sent})
    return wanted if all(wanted.values()) else None
