"""Run real processors in threads and talk to them with raw Kafka records (wire-level)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypedDict, Unpack

from confluent_kafka import OFFSET_END, Consumer, Message, Producer, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import NO_VC, Command, CommandBody, Reply, WorkflowEvent
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.processor import Faults, Processor, ProcessorSettings
from duroot_stream.processor.kafka_clients import TRANSACTION_TIMEOUT_MS
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import (
    Codec,
    EventHeaders,
    Topics,
    create_topics,
    parse_event_headers,
    partition_for,
)
from tests.kafka_helpers import read_all, wait_until

PARTITIONS = 3
# A reply is visible at the latest once its transaction has committed, or been
# aborted by the coordinator (the transaction timeout) and redone, whose Kafka calls
# give up after KAFKA_TIMEOUT_S: how long a test waits for one.
REPLY_S = TRANSACTION_TIMEOUT_MS / 1000 + KAFKA_TIMEOUT_S

# A record's headers as confluent_kafka types them: (name, value) pairs, in order.
Headers = list[tuple[str, str | bytes | None]]


class SettingsOverrides(TypedDict, total=False):
    """The ProcessorSettings fields a test may set, besides `kafka`."""

    instance_id: str
    group_id: str
    batch_size: int
    commit_interval_s: float
    gc_interval_s: float
    max_active_s: float
    delete_after_s: float
    metrics_port: int | None
    reply_topics: str | None
    restore_wait_s: float | None
    gc_chunk_records: int
    fence_after_s: float | None
    standbys: int


@contextmanager
def running_processor(
    kafka: KafkaConfig,
    faults: Faults | None = None,
    ready: bool = True,
    **overrides: Unpack[SettingsOverrides],
) -> Iterator[Processor]:
    """A processor in a thread, ready (first assignment restored) when yielded, or
    only started (`ready` False); `faults` steer its Kafka client calls
    (tests/processor/client_faults.py)."""
    settings = replace(
        ProcessorSettings(kafka=kafka, instance_id=f"t-{uuid.uuid4().hex[:6]}"), **overrides
    )
    processor = Processor(settings, faults=faults)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            processor.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if ready:
        wait_until(lambda: processor.ready.is_set() or errors, timeout=60, what="processor ready")
    if errors:
        raise errors[0]
    try:
        yield processor
    finally:
        processor.stop()
        thread.join(60)
        assert not thread.is_alive(), "processor did not stop within 60 s"
        if errors:
            raise errors[0]


def new_workflow_id() -> str:
    return str(uuid.uuid4())


def command(
    workflow_id: str, body: CommandBody, expected_vid: str = NO_VC, command_id: str | None = None
) -> Command:
    return Command(command_id or new_ulid(), workflow_id, expected_vid, now_ms(), body)


def vid_of(reply: Reply) -> str:
    """The head a reply names; every successful reply names one."""
    assert reply.vid is not None, f"the reply names no vid: {reply}"
    return reply.vid


def record_headers(msg: Message) -> Headers:
    """A record's headers in order (consumed records carry a list; the stubs allow a dict)."""
    raw = msg.headers()
    if raw is None:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def header_value(msg: Message, name: str) -> bytes:
    """The last value of header `name`, which the record must carry (as bytes, as consumed)."""
    value = dict(record_headers(msg))[name]
    assert isinstance(value, bytes), f"header {name!r} is {value!r}"
    return value


def key_text(msg: Message) -> str:
    """A record's key as text; the record must have one."""
    key = msg.key()
    assert key is not None, "a record without a key"
    return key.decode()


@dataclass
class Requester:
    """Publishes commands and collects replies from one partition of the replies topic."""

    kafka: KafkaConfig
    codec: Codec = field(default_factory=Codec)

    def __post_init__(self) -> None:
        self.topics = Topics(self.kafka.topic_prefix)
        self.producer = Producer(
            {"bootstrap.servers": self.kafka.bootstrap_servers, "enable.idempotence": True}
        )
        self.replies = Consumer(
            {
                "bootstrap.servers": self.kafka.bootstrap_servers,
                "group.id": f"req-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.replies.assign([TopicPartition(self.topics.replies, 0, OFFSET_END)])
        self.received: dict[bytes, Reply] = {}
        self.reply_headers: dict[bytes, Headers] = {}
        # The end offset is resolved lazily: poll once so replies sent from now on are seen.
        self.replies.poll(0.5)

    def send(
        self,
        cmd: Command | None = None,
        *,
        raw: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        correlation: str | None = None,
        reply_route: bool = True,
    ) -> str:
        """Publish a command (or raw bytes); returns the correlation id used."""
        corr = correlation or (cmd.command_id if cmd else new_ulid())
        if cmd is not None:
            raw = self.codec.encode_command(cmd)
            key = cmd.workflow_id.encode()
            if partition is None:
                partition = partition_for(cmd.workflow_id, PARTITIONS)
        headers: Headers | None = (
            [
                ("reply-topic", self.topics.replies.encode()),
                ("reply-partition", b"0"),
                ("correlation-id", corr.encode()),
            ]
            if reply_route
            else None
        )
        self.producer.produce(
            self.topics.commands, raw, key, partition=partition or 0, headers=headers
        )
        self.producer.flush(10)
        return corr

    def wait_reply(self, correlation: str, timeout: float = REPLY_S) -> Reply:
        corr = correlation.encode()

        def arrived() -> Reply | None:
            if corr in self.received:
                return self.received[corr]
            for msg in self.replies.consume(100, 0.2):
                if msg.error():
                    continue
                headers = record_headers(msg)
                cid = dict(headers).get("correlation-id")
                if isinstance(cid, bytes):  # as consumed; never str
                    self.received[cid] = self.codec.decode_reply(msg.value())
                    self.reply_headers[cid] = headers
            return self.received.get(corr)

        reply = wait_until(arrived, timeout=timeout, interval=0, what=f"reply to {correlation}")
        assert reply is not None  # wait_until returns only a truthy result
        return reply

    def request(self, cmd: Command, timeout: float = REPLY_S) -> Reply:
        return self.wait_reply(self.send(cmd), timeout)

    def close(self) -> None:
        """Both clients, while the broker still answers (librdkafka logs once it does not)."""
        self.replies.close()
        self.producer.flush(10)
        self.producer.close()


def workflow_events(
    kafka: KafkaConfig, workflow_id: str
) -> list[tuple[EventHeaders, WorkflowEvent]]:
    codec = Codec()
    out: list[tuple[EventHeaders, WorkflowEvent]] = []
    for msg in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).events):
        if msg.value() is None:
            continue
        h = parse_event_headers(record_headers(msg))
        if h.workflow_id == workflow_id:
            out.append((h, codec.decode_event(msg.value())))
    return out


def setup_topics(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=PARTITIONS, extra_configs=None)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


class ProcessorLogs(logging.Handler):
    """The processor's log records, as they come (`captured_logs`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def partitions(self, message: str) -> list[list[int]]:
        """The `partitions` of each record with this message, in order."""
        return [
            sorted(getattr(r, "partitions", ())) for r in self.records if r.getMessage() == message
        ]


@contextmanager
def captured_logs() -> Iterator[ProcessorLogs]:
    """The processor logger's records from INFO up, while in the block."""
    handler = ProcessorLogs()
    logger = logging.getLogger("duroot.processor")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
