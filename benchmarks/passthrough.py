"""The pass-through: the processor's exactly-once loop with no domain work.

The yardstick for the processor's throughput. Same
consumer and transactional-producer settings as `duroot_stream.processor`,
the same batching (wait for a first command, then take what is fetched in
chunks of 500 until 1,000 commands, 100 ms, or caught up), and the same
number of output records per command: one to the events topic (on the
command's partition, with six headers like an event's) and one to the
replies topic. The values are the command's bytes, passed through
undecoded. Then, per batch, one record per workflow the batch touched to the
state topic, as the processor writes each changed workflow's state (a value of
the size of an appending workflow's state record), `send_offsets_to_transaction`
and `commit_transaction`.

Run (the benchmarks start it): `python -m benchmarks.passthrough
--bootstrap-servers B --topic-prefix P --group G --partitions N`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootStarted,
    DuUpdated,
    WorkflowEvent,
    evolve,
    initial_state,
)
from duroot_stream.ids import MonotonicUlids
from duroot_stream.processor import (
    CONSUME_CHUNK,
    IDLE_POLL_S,
    RETRY_BACKOFF_MAX_MS,
    RETRY_BACKOFF_MS,
)
from duroot_stream.wire import (
    COMMAND_ID,
    EVENT_TYPE,
    PARENT,
    SEQ,
    VID,
    WORKFLOW_ID,
    Topics,
    encode_state,
)

BATCH_SIZE = 1000  # the processor's defaults
COMMIT_INTERVAL_S = 0.1
# As many headers as an event carries, values of the same sizes.
HEADERS: list[tuple[str, str | bytes | None]] = [
    (EVENT_TYPE, b"UPDATED"),
    (WORKFLOW_ID, b"7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"),
    (VID, b"01JD0000000000000000000000"),
    (PARENT, b"01JD0000000000000000000000"),
    (SEQ, b"12345"),
    (COMMAND_ID, b"01JD0000000000000000000000"),
]


def state_value() -> bytes:
    """The state record of a workflow appending its second command's lines: the bytes
    the processor writes to the state topic for each workflow a batch changed."""
    workflow_id, new_id = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab", MonotonicUlids()
    started = DuRootStarted(
        "0b0c8d4e-1111-4222-8333-444455556666", "/example/data/root-1", "files1.example.org",
        "/srv/data/root-1",
    )  # fmt: skip
    state = initial_state(workflow_id)
    for payload in (started, DuUpdated("dir1", 4096)):
        command_id = new_id(EVENT_EPOCH)
        event = WorkflowEvent(
            new_id(state.vid), state.vid, workflow_id, state.seq, command_id, payload
        )
        state = evolve(state, event)
    return encode_state(state)


class PassThrough:
    def __init__(self, config: KafkaConfig, group: str, partitions: int) -> None:
        self.topics = Topics(config.topic_prefix)
        self.replies_partitions = partitions
        self.stopping = False
        self.producer = Producer(
            config.client(
                **{
                    "transactional.id": f"{group}-passthrough",
                    "transaction.timeout.ms": 10_000,
                    "linger.ms": 5,
                    "retry.backoff.ms": RETRY_BACKOFF_MS,
                    "retry.backoff.max.ms": RETRY_BACKOFF_MAX_MS,
                    "queue.buffering.max.messages": 1_000_000,
                    "queue.buffering.max.kbytes": 1_048_576,
                }
            )
        )
        self.consumer = Consumer(
            config.client(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                }
            )
        )
        self.next_offsets: dict[int, int] = {}
        self.changed: set[tuple[int, bytes | None]] = set()  # (partition, workflow id)
        self.state_value = state_value()
        self.in_batch = 0
        self.started = 0.0

    def run(self) -> None:
        self.producer.init_transactions(30)
        self.consumer.subscribe([self.topics.commands], on_revoke=lambda c, p: self.commit())
        try:
            while not self.stopping:
                self.fill_batch()
                self.commit()
        finally:
            self.consumer.close()

    def fill_batch(self) -> None:
        first = self.consumer.poll(IDLE_POLL_S)
        if first is None:
            return
        self.handle(first)
        while self.in_batch:
            wanted = BATCH_SIZE - self.in_batch
            if wanted <= 0 or time.monotonic() >= self.started + COMMIT_INTERVAL_S:
                break
            messages = self.consumer.consume(num_messages=min(wanted, CONSUME_CHUNK), timeout=0)
            for message in messages:
                self.handle(message)
            if len(messages) < min(wanted, CONSUME_CHUNK):
                break

    def handle(self, message: Message) -> None:
        if message.error() is not None:
            return
        if not self.in_batch:
            self.producer.begin_transaction()
            self.started = time.monotonic()
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        self.next_offsets[partition] = offset + 1
        self.in_batch += 1
        key, value = message.key(), message.value()
        self.produce(self.topics.events, partition, key, value, HEADERS)
        self.produce(self.topics.replies, partition % self.replies_partitions, key, value, None)
        self.changed.add((partition, key))

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def commit(self) -> None:
        if not self.in_batch:
            return
        for partition, key in self.changed:
            self.produce(self.topics.state, partition, key, self.state_value, None)
        self.changed.clear()
        offsets = [TopicPartition(self.topics.commands, p, o) for p, o in self.next_offsets.items()]
        self.producer.send_offsets_to_transaction(
            offsets, self.consumer.consumer_group_metadata(), 30
        )
        self.producer.commit_transaction(30)
        self.next_offsets.clear()
        self.in_batch = 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.passthrough")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    args = parser.parse_args(argv)
    config = KafkaConfig(bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix)
    passthrough = PassThrough(config, args.group, args.partitions)

    def stop(*_: object) -> None:
        passthrough.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    passthrough.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
