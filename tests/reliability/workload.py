"""The load: per workflow a random walk of commands, one in flight at a time.

Each `Walker` is a requester that believes it knows its workflow's state from the
replies it got, and usually sends what fits (Init, Appends, Commit, Delete, Init
again), but also every other command type, invalid arguments, no version check,
the vid of its last reply, a stale vid, a vid that never existed, and now and
then one of its recent commands again with the same command id. Whether the
belief is right does not matter: the verifier replays what the processor
consumed through the domain core, which decides what was right.

`Driver` runs all walkers from one thread: it sends each walker's next command
as soon as the previous one is answered, so up to one command per workflow is in
flight, and (for the bad input storm) interleaves malformed records. Every record
carries the request-reply headers with a correlation id of its own, so each send
can be matched with exactly one reply.

With `ReplyClient`s, walkers belong to clients that each make a reply topic of
their own as they start (a share of the load answered), then route their
commands' replies there; a reply found anywhere else is recorded in `misrouted`
(the client waiting on its own topic would never have seen it).
"""

from __future__ import annotations

import logging
import random
import re
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
    NO_VC,
    RETRY_NO_VC,
    AbortExpired,
    Append,
    Command,
    CommandBody,
    Commit,
    Delete,
    End,
    ErrorCode,
    Fail,
    Init,
    PathUsage,
    Reply,
    StateCode,
    encode_ulid,
)
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.kafka import header_bytes
from duroot_stream.wire import Codec, Topics, partition_for, wait_visible

log = logging.getLogger("duroot.reliability")

STALL_S = 5.0  # no reply at all for this long: the whole load stalled
_STATE_IN_MESSAGE = re.compile(r"(?:state|advanced to) ([A-Z]+)$")


def random_ulid(rng: random.Random) -> str:
    """A well-formed ULID that no event has (the run's ids are of today)."""
    return encode_ulid((rng.getrandbits(40) << 80) | rng.getrandbits(80))


@dataclass
class Walker:
    """One workflow's requester: a random walk over the commands."""

    workflow_id: str
    rng: random.Random
    budget: int  # commands still to send
    registry_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    belief: StateCode = StateCode.UNINITIALIZED
    last_vid: str | None = None
    vids: list[str] = field(default_factory=list)  # every vid a reply gave, oldest first
    recent: deque[Command] = field(default_factory=lambda: deque(maxlen=4))
    resent: int = 0

    def next_command(self) -> Command:
        rng = self.rng
        if self.recent and rng.random() < 0.05:
            self.resent += 1
            return rng.choice(self.recent)  # the same command id again
        body = self._body()
        command = Command(new_ulid(), self.workflow_id, self._expected_vid(), now_ms(), body)
        self.recent.append(command)
        return command

    def on_reply(self, command: Command, reply: Reply) -> None:
        if reply.ok:
            assert reply.vid is not None
            self.last_vid = reply.vid
            self.vids.append(reply.vid)
            match command.body:
                case Init():
                    self.belief = StateCode.INITIALIZED
                case Append():
                    self.belief = StateCode.APPENDING
                case Commit() | Fail() | AbortExpired() if self.belief < StateCode.COMPLETED:
                    self.belief = StateCode.TERMINATED  # completion ends at once
                case Delete():
                    self.belief = StateCode.UNINITIALIZED
        elif reply.error in (ErrorCode.CONFLICT_STATE, ErrorCode.CONFLICT_STATE_ADVANCED):
            match = _STATE_IN_MESSAGE.search(reply.message)
            if match and match.group(1) in StateCode.__members__:
                self.belief = StateCode[match.group(1)]

    def _expected_vid(self) -> str:
        r = self.rng.random()
        if r < 0.45 and self.last_vid is not None:
            return self.last_vid
        if r < 0.57 and len(self.vids) > 1:
            return self.rng.choice(self.vids[:-1])  # stale
        if r < 0.62:
            return random_ulid(self.rng)  # never existed
        if r < 0.67:
            return RETRY_NO_VC
        return NO_VC

    def _init(self) -> Init:
        return Init(self.registry_id, f"/g/{self.workflow_id}", "files.example.org", "/srv/data")

    def _body(self) -> CommandBody:
        rng = self.rng
        r = rng.random()
        if r < 0.03:  # an invalid argument
            invalid: list[CommandBody] = [
                Init(self.registry_id, "/g", "", "/r"),
                Init("00000000-0000-0000-0000-000000000000", "/g", "h", "/r"),
                Fail(0, "zero is not a failure code"),
                Append(()),
            ]
            return rng.choice(invalid)
        if r < 0.10:  # any command type at all
            anything: list[CommandBody] = [
                self._init(),
                Init(self.registry_id, "/elsewhere", "h", "/r"),  # CONFLICT_INIT
                self._append(),
                Commit(),
                Fail(rng.randint(1, 200), "failed on purpose"),
                AbortExpired(),
                End(),
                Delete(),
            ]
            return rng.choice(anything)
        match self.belief:
            case StateCode.UNINITIALIZED:
                return self._init()
            case StateCode.INITIALIZED | StateCode.APPENDING:
                if r < 0.80:
                    return self._append()
                if r < 0.88:
                    return Commit()
                if r < 0.92:
                    return Fail(rng.randint(1, 200), "du failed: on purpose")
                if r < 0.94:
                    return AbortExpired()
                return self._init()  # the same Init again: a no-op
            case _:
                if r < 0.60:
                    return Delete()
                if r < 0.75:
                    return End()  # a no-op on TERMINATED
                return Commit()  # CONFLICT_STATE
        raise AssertionError("unreachable")

    def _append(self) -> Append:
        rng = self.rng
        n = rng.randint(100, 300) if rng.random() < 0.01 else rng.randint(1, 3)
        return Append(
            tuple(
                PathUsage(f"d{rng.randrange(100)}/f{rng.randrange(10_000)}", rng.getrandbits(40))
                for _ in range(n)
            )
        )


@dataclass
class Malformed:
    kind: str
    value: bytes | None
    partition: int
    key: bytes  # a real workflow id: the record's own, where it has one


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


# --- malformed records --------------------------------------------------------------
#
# Hand-made Avro, so that records the codec would refuse to write can be made too.


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return _zigzag(len(data)) + data


def raw_command(
    prefix: bytes,
    command_id: str | bytes,
    workflow_id: str | bytes,
    expected_vid: str | bytes,
    branch: int,
    body: bytes = b"",
) -> bytes:
    """A Command record written field by field: no checks at all."""
    return (
        prefix
        + _avro_str(command_id)
        + _avro_str(workflow_id)
        + _avro_str(expected_vid)
        + _zigzag(now_ms())
        + _zigzag(branch)
        + body
    )


ONE_MB = 1_000_000


@dataclass
class MalformedFactory:
    """Makes malformed command records of every kind, at random."""

    rng: random.Random
    partitions: int
    counts: dict[str, int] = field(default_factory=dict)
    big_budget: int = 12  # records of about 1 MB among them

    def __post_init__(self) -> None:
        codec = Codec()
        wf = str(uuid.uuid4())
        self._wf = wf
        self._record_wf = wf  # the workflow id of the record being made
        self._init = codec.encode_command(
            Command(new_ulid(), wf, NO_VC, now_ms(), Init(str(uuid.uuid4()), "/g", "h", "/r"))
        )
        self._append = codec.encode_command(
            Command(new_ulid(), wf, NO_VC, now_ms(), Append((PathUsage("a/b", 4096),) * 20))
        )
        self._prefix = self._init[:10]
        self._other_records = [
            codec.encode_reply(Reply(new_ulid(), wf, True, new_ulid(), None, "")),
            codec.encode_reply(Reply(None, None, False, None, ErrorCode.MALFORMED, "x")),
        ]

    def __call__(self) -> Malformed:
        rng = self.rng
        kinds = [
            "random",
            "empty",
            "null",
            "truncated",
            "fingerprint",
            "confluent",
            "marker",
            "invalid-id",
            "trailing",
            "oversized",
            "unknown-command",
            "other-record",
            "bad-utf8",
            "misrouted",
            "bad-key",
            "invalid-argument",
        ]
        kind = rng.choice(kinds)
        if kind == "oversized" and self.big_budget > 0 and rng.random() < 0.1:
            kind = rng.choice(["oversized-1mb", "oversized-valid"])
            self.big_budget -= 1
        # Keyed by a real workflow id on its partition, the record's own where it
        # names one: only what is wrong with the value (or the route) can refuse it.
        self._record_wf = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        value = getattr(self, "_" + kind.replace("-", "_"))()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = self._record_wf
        partition = partition_for(key, self.partitions)
        if kind == "misrouted":
            partition = (partition + 1 + rng.randrange(self.partitions - 1)) % self.partitions
        if kind == "bad-key":
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return Malformed(kind, value, partition, key.encode())

    def _random(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 300))

    def _empty(self) -> bytes:
        return b""

    def _null(self) -> None:
        return None

    def _truncated(self) -> bytes:
        self._record_wf = self._wf
        good = self.rng.choice([self._init, self._append])
        return good[: self.rng.randint(1, len(good) - 1)]

    def _fingerprint(self) -> bytes:
        self._record_wf = self._wf
        return b"\xc3\x01" + self.rng.randbytes(8) + self._init[10:]

    def _confluent(self) -> bytes:
        self._record_wf = self._wf
        return b"\x00" + self.rng.randbytes(4) + self._init[10:]

    def _marker(self) -> bytes:
        self._record_wf = self._wf
        return b"\xc3" + bytes([self.rng.choice([0, 2, 0xFF])]) + self._init[2:]

    def _invalid_id(self) -> bytes:
        good = (new_ulid(), self._record_wf, NO_VC)
        bad = self.rng.choice(
            [
                (new_ulid().lower(), good[1], good[2]),
                ("not-a-ulid", good[1], good[2]),
                ("", good[1], good[2]),
                ("8" + new_ulid()[1:], good[1], good[2]),  # overflows 128 bits
                (good[0], "not-a-uuid", good[2]),
                (good[0], good[1].upper(), good[2]),
                (good[0], "", good[2]),
                (good[0], good[1], "00000000000000000000000003x"),
                (good[0], good[1], "LIL0000000000000000000000I"),
            ]
        )
        return raw_command(self._prefix, *bad, 2)

    def _invalid_argument(self) -> bytes:
        """A good envelope, an Init whose registry id is no UUID: applied, answered
        INVALID_ARGUMENT, not dead-lettered."""
        body = _avro_str("registry") + _avro_str("/g") + _avro_str("h") + _avro_str("/r")
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 0, body)

    def _trailing(self) -> bytes:
        self._record_wf = self._wf
        return self.rng.choice([self._init, self._append]) + self.rng.randbytes(
            self.rng.randint(1, 20)
        )

    def _oversized(self) -> bytes:
        """Counts and lengths that claim far more than the record holds."""
        ids = (new_ulid(), self._record_wf, NO_VC)
        return self.rng.choice(
            [
                raw_command(self._prefix, *ids, 1, _zigzag(1 << 40) + b"\x02a\x02"),  # 2^40 paths
                raw_command(self._prefix, *ids, 1, _zigzag(-(1 << 40)) + _zigzag(1 << 50)),
                raw_command(self._prefix, *ids, 1, _zigzag(1) + _zigzag(1 << 50) + b"a"),
                raw_command(self._prefix, *ids, 0, _zigzag(1 << 62)),
                self._prefix + b"\xff" * 11,  # a varint longer than 10 bytes
                raw_command(self._prefix, *ids, 1, _zigzag(-1) + b"\x02a\x02"),  # count -1
            ]
        )

    def _oversized_1mb(self) -> bytes:
        """An Append of about 1 MB, around the clients' and the broker's message size
        limits, that is malformed (its last path is cut short): its dead letter, the
        same bytes plus headers, is bigger still."""
        n = 40_000
        paths = b"".join(_avro_str(f"dir/{i:020d}") + _zigzag(4096) for i in range(n))
        body = _zigzag(n) + paths + _zigzag(0)
        record = raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 1, body)
        size = self.rng.randint(ONE_MB - 10_000, 1_048_000)  # around librdkafka's 1e6 limit
        return record[:size]

    def _oversized_valid(self) -> bytes:
        """A well-formed Append of one path, about 1 MB: its event, a little bigger
        still, would not fit in a Kafka message, so it is refused as too large."""
        size = self.rng.randint(ONE_MB - 10_000, 1_040_000)
        body = Append((PathUsage("p" * size, 1),))
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), body))

    def _unknown_command(self) -> bytes:
        branch = self.rng.choice([7, 8, 63, 1000, -1, -7])
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, branch)

    def _other_record(self) -> bytes:
        return self.rng.choice(self._other_records)

    def _bad_utf8(self) -> bytes:
        body = _avro_str(b"\xff\xfe") + _avro_str("/g") + _avro_str("h") + _avro_str("/r")
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 0, body)

    def _misrouted(self) -> bytes:
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), Commit()))

    def _bad_key(self) -> bytes:
        """A good command on its workflow's partition, keyed by another workflow id."""
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), Commit()))
