"""Run real processors in threads and talk to them with raw Kafka records (wire-level)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import NO_VC, Command, CommandBody, Reply, WorkflowEvent
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.processor import Processor, ProcessorSettings
from duroot_stream.wire import (
    Codec,
    EventHeaders,
    Topics,
    create_topics,
    parse_event_headers,
    partition_for,
)

from .kafka_helpers import read_all, wait_until

PARTITIONS = 3


@contextmanager
def running_processor(kafka: KafkaConfig, **overrides: object) -> Iterator[Processor]:
    """A processor in a thread, ready (first assignment restored) when yielded."""
    settings = replace(
        ProcessorSettings(kafka=kafka, instance_id=f"t-{uuid.uuid4().hex[:6]}"), **overrides
    )  # type: ignore[arg-type]
    processor = Processor(settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            processor.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
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
        self.reply_headers: dict[bytes, list[tuple[str, bytes]]] = {}
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
        headers = (
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

    def wait_reply(self, correlation: str, timeout: float = 30) -> Reply:
        corr = correlation.encode()

        def arrived() -> Reply | None:
            if corr in self.received:
                return self.received[corr]
            for msg in self.replies.consume(100, 0.2):
                if msg.error():
                    continue
                headers = list(msg.headers() or [])
                cid = dict(headers).get("correlation-id")
                if cid is not None:
                    self.received[cid] = self.codec.decode_reply(msg.value())
                    self.reply_headers[cid] = headers
            return self.received.get(corr)

        return wait_until(arrived, timeout=timeout, interval=0, what=f"reply to {correlation}")

    def request(self, cmd: Command, timeout: float = 30) -> Reply:
        return self.wait_reply(self.send(cmd), timeout)

    def close(self) -> None:
        self.replies.close()


def workflow_events(
    kafka: KafkaConfig, workflow_id: str
) -> list[tuple[EventHeaders, WorkflowEvent]]:
    codec = Codec()
    out = []
    for msg in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).events):
        if msg.value() is None:
            continue
        h = parse_event_headers(msg.headers())
        if h.workflow_id == workflow_id:
            out.append((h, codec.decode_event(msg.value())))
    return out


def setup_topics(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=PARTITIONS, extra_configs=None)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
