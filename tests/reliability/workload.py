"""The load: per workflow a random walk of commands, one in flight at a time.

Each `Walker` (walker.py) is a requester that believes it knows its workflow's state from the
replies it got, and usually sends what fits (Init, Appends, Commit, Delete, Init
again), but also every other command type, invalid arguments, no version check,
the vid of its last reply, a stale vid, a vid that never existed, and now and
then one of its recent commands again with the same command id. Whether the
belief is right does not matter: the verifier replays what the processor
consumed through the domain core, which decides what was right.

`Driver` runs all walkers from one thread: it sends each walker's next command
as soon as the previous one is answered, so up to one command per workflow is in
flight, and (for the bad input storm) interleaves malformed records (malformed.py). Every record
carries the request-reply headers with a correlation id of its own, so each send
can be matched with exactly one reply.

With `ReplyClient`s, walkers belong to clients that each make a reply topic of
their own as they start (a share of the load answered), then route their
commands' replies there; a reply found anywhere else is recorded in `misrouted`
(the client waiting on its own topic would never have seen it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    Command,
)
from duroot_stream.ids import new_ulid
from duroot_stream.kafka import header_bytes
from duroot_stream.wire import Codec, Topics, partition_for, wait_visible
from tests.reliability.malformed import Malformed
from tests.reliability.walker import Walker

log = logging.getLogger("duroot.reliability")

STALL_S = 5.0  # no reply at all for this long: the whole load stalled


@dataclass
class ReplyClient:
    """Walkers whose replies go to a topic of their own, made when `starts_at` of
    the load is answered (or when nothing else is left in flight); none of them
    sends anything before."""

    topic: str
    partitions: int
    starts_at: float
    walkers: list[Walker]
    started: bool = False

    def reply_partition(self, walker: Walker) -> int:
        return partition_for(walker.workflow_id, self.partitions)


@dataclass
class _Pending:
    walker: Walker | None  # None for a malformed record
    command: Command | None
    sent_at: float
    reply_topic: str


class DriverError(AssertionError):
    pass


@dataclass
class Driver:
    """Sends every walker's commands (and malformed records) and collects the replies."""

    kafka: KafkaConfig
    walkers: list[Walker]
    partitions: int
    malformed: Callable[[], Malformed] | None = None  # makes one malformed record
    malformed_total: int = 0
    clients: list[ReplyClient] = field(default_factory=list)  # private reply topics
    stall_timeout_s: float = 240.0
    # The share of the load that may be answered for now (`Supervisor.ceiling`): no
    # record is sent beyond it.
    ceiling: Callable[[], float] = lambda: 1.0
    sent: int = 0
    stalls: int = 0  # times no reply came for STALL_S or longer
    longest_quiet_s: float = 0.0
    replied: int = 0
    malformed_sent: int = 0
    unexpected_replies: list[str] = field(default_factory=list)  # duplicates, strangers
    misrouted: list[str] = field(default_factory=list)  # replies not on the route asked for
    # correlation id -> (kind, bytes) of each malformed record sent
    malformed_by_correlation: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = Topics(self.kafka.topic_prefix)
        self.codec = Codec()
        self.total = sum(w.budget for w in self.walkers) + self.malformed_total
        self._pending: dict[bytes, _Pending] = {}
        self._answered: set[bytes] = set()
        self._delivery_errors: list[str] = []
        # (topic, partition) of a reply topic -> next offset to read
        self._next_offsets: dict[tuple[str, int], int] = {}
        self.rereads = 0  # replies read again after the reader's position went back
        self._client_of = {id(w): c for c in self.clients for w in c.walkers}

    @property
    def progress(self) -> float:
        """Share of all records answered, 0..1."""
        return self.replied / self.total if self.total else 1.0

    def run(self, deadline_s: float) -> None:
        producer = Producer(
            self.kafka.client(
                **{
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.max.bytes": 1_048_576,
                }
            )
        )
        consumer = Consumer(
            self.kafka.client(
                **{
                    "group.id": f"reliability-{uuid.uuid4().hex}",  # assigned, never joined
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    # Should the position ever be reset (an offset out of range while a
                    # restarted broker's high watermark catches up), go back, not to the
                    # end: the end would skip replies that every walker then waits for.
                    # What is read twice is skipped by offset (`_fresh`).
                    "auto.offset.reset": "earliest",
                    "logger": log,
                }
            )
        )
        # Incremental: the clients' reply topics are added as they start.
        consumer.incremental_assign(
            [
                TopicPartition(self.topics.replies, p, OFFSET_BEGINNING)
                for p in range(self.partitions)
            ]
        )
        ready = deque(w for w in self.walkers if w.budget > 0 and id(w) not in self._client_of)
        malformed_per_valid = self.malformed_total / max(1, self.total - self.malformed_total)
        owed = 0.0
        deadline = time.monotonic() + deadline_s
        last_reply = started = time.monotonic()
        next_report = started + 10
        try:
            while self.replied < self.total:
                self._start_clients(consumer, ready)
                while ready and self._may_send():
                    walker = ready.popleft()
                    walker.budget -= 1
                    self._send_command(producer, walker)
                    owed += malformed_per_valid
                    while owed >= 1 and self.malformed_sent < self.malformed_total:
                        owed -= 1
                        self._send_malformed(producer)
                if self.malformed_sent < self.malformed_total and not any(
                    w.budget for w in self.walkers
                ):
                    while self.malformed_sent < self.malformed_total and self._may_send():
                        self._send_malformed(producer)  # the rest, once the walkers are done
                producer.poll(0)
                if self._delivery_errors:
                    raise DriverError(f"commands not delivered: {self._delivery_errors[:5]}")
                for message in consumer.consume(1000, 0.05):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise DriverError(f"reading replies: {error}")
                        continue
                    if not self._fresh(message):
                        continue
                    answered = self._on_reply(message)
                    last_reply = self._quiet_until(last_reply, time.monotonic())
                    if answered is not None and answered.budget > 0:
                        ready.append(answered)
                now = time.monotonic()
                if not self._pending:  # held at the ceiling: the quiet is not a stall
                    last_reply = now
                if now >= next_report:
                    next_report = now + 10
                    log.info(
                        "%.0f s: %d/%d answered, %d waiting",
                        now - started,
                        self.replied,
                        self.total,
                        len(self._pending),
                    )
                if now > deadline or now - last_reply > self.stall_timeout_s:
                    stalled = self._stalled(now > deadline, now - last_reply)
                    raise DriverError(
                        f"{stalled}; reader: {self._reader_state(consumer)}; "
                        f"records the load's producer has not delivered yet: {len(producer)}"
                    )
            producer.flush(60)
        finally:
            consumer.close()
            del producer  # now, also after a failure (its traceback would keep it alive)

    def _may_send(self) -> bool:
        return self.replied + len(self._pending) < self.ceiling() * self.total

    def _start_clients(self, consumer: Consumer, ready: deque[Walker]) -> None:
        """Start the clients that are due, and the next one when nothing is in flight
        (the load never waits for a share it cannot reach without them)."""
        idle = not (ready or self._pending)
        for client in self.clients:
            if not client.started and (idle or self.progress >= client.starts_at):
                self._start_client(client, consumer, ready)
                idle = False

    def _start_client(self, client: ReplyClient, consumer: Consumer, ready: deque[Walker]) -> None:
        """As a client starts: make its reply topic, read it, then send."""
        admin = AdminClient(self.kafka.client())
        admin.create_topics([NewTopic(client.topic, client.partitions)])[client.topic].result()
        wait_visible(admin, [client.topic])
        consumer.incremental_assign(
            [TopicPartition(client.topic, p, OFFSET_BEGINNING) for p in range(client.partitions)]
        )
        client.started = True
        ready.extend(w for w in client.walkers if w.budget > 0)
        log.info("client started: %s at %.0f%% answered", client.topic, self.progress * 100)

    def _fresh(self, message: Message) -> bool:
        """False for a record read before (the position went back): not a second reply."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return True
        if offset < self._next_offsets.get((topic, partition), 0):
            self.rereads += 1
            return False
        self._next_offsets[(topic, partition)] = offset + 1
        return True

    def _reader_state(self, consumer: Consumer) -> str:
        """Where the reply reader is against each partition's last stable offset and end,
        to tell a reader that stopped from a transaction that holds the replies back."""
        parts = []
        for tp in consumer.position(consumer.assignment()):
            try:
                stable = str(consumer.get_watermark_offsets(tp, timeout=10)[1])
            except Exception as exc:  # a diagnostic only
                stable = f"? ({exc})"
            parts.append(
                f"{tp.topic} {tp.partition}: position {tp.offset}, read to "
                f"{self._next_offsets.get((tp.topic, tp.partition), 0)}, last stable {stable}"
            )
        return f"{'; '.join(parts)}; read twice {self.rereads}"

    def _quiet_until(self, last_reply: float, now: float) -> float:
        """Count the quiet before this reply as a stall if it was long; `now`."""
        quiet = now - last_reply
        self.longest_quiet_s = max(self.longest_quiet_s, quiet)
        if quiet >= STALL_S:
            self.stalls += 1
        return now

    def _send_command(self, producer: Producer, walker: Walker) -> None:
        command = walker.next_command()
        partition = partition_for(command.workflow_id, self.partitions)
        client = self._client_of.get(id(walker))
        route = (self.topics.replies, partition)
        if client is not None:
            route = (client.topic, client.reply_partition(walker))
        value = self.codec.encode_command(command)
        self._produce(producer, partition, command.workflow_id.encode(), value, route)
        self._pending[self._last] = _Pending(walker, command, time.monotonic(), route[0])

    def _send_malformed(self, producer: Producer) -> None:
        assert self.malformed is not None
        bad = self.malformed()
        route = (self.topics.replies, bad.partition)
        self._produce(producer, bad.partition, bad.key, bad.value, route)
        self._pending[self._last] = _Pending(None, None, time.monotonic(), route[0])
        self.malformed_by_correlation[self._last.decode()] = (bad.kind, len(bad.value or b""))
        self.malformed_sent += 1

    def _produce(
        self,
        producer: Producer,
        partition: int,
        key: bytes,
        value: bytes | None,
        route: tuple[str, int],
    ) -> None:
        """Produce a record at `partition` whose reply is asked for at `route`."""
        correlation = new_ulid().encode()
        headers: list[tuple[str, str | bytes | None]] = [
            ("reply-topic", route[0].encode()),
            ("reply-partition", str(route[1]).encode()),
            ("correlation-id", correlation),
        ]
        while True:
            try:
                producer.produce(
                    self.topics.commands,
                    value,
                    key,
                    partition=partition,
                    headers=headers,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        self._last = correlation
        self.sent += 1

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))

    def _on_reply(self, message: Message) -> Walker | None:
        correlation = header_bytes(message, "correlation-id") or b""
        pending = self._pending.pop(correlation, None)
        if pending is None:
            what = "second reply" if correlation in self._answered else "reply to nothing sent"
            self.unexpected_replies.append(f"{what}: correlation {correlation!r}")
            return None
        self._answered.add(correlation)
        self.replied += 1
        if message.topic() != pending.reply_topic:
            error = header_bytes(message, "reply-route-error") or b"none"
            self.misrouted.append(
                f"correlation {correlation!r}: on {message.topic()} [{message.partition()}], "
                f"asked for {pending.reply_topic}; reply-route-error {error!r}"
            )
        if pending.walker is None or pending.command is None:
            return None
        reply = self.codec.decode_reply(message.value() or b"")
        pending.walker.on_reply(pending.command, reply)
        return pending.walker

    def _stalled(self, past_deadline: bool, quiet_s: float) -> str:
        oldest = sorted(self._pending.values(), key=lambda p: p.sent_at)[:5]
        stuck = sorted(
            {partition_for(p.command.workflow_id, self.partitions) for p in oldest if p.command}
        )
        why = "deadline passed" if past_deadline else f"no reply for {quiet_s:.0f} s"
        return (
            f"{why}: {self.replied}/{self.total} answered, {len(self._pending)} waiting; "
            f"oldest waiting on partitions {stuck}"
        )
