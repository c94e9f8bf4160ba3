"""Request-reply over Kafka: publish a command, complete its future with the reply.

The mechanics behind `DuRootClient` (docs/contract.md, "Request-reply"; the steps are
in `requester`'s docstring): one idempotent producer to `<prefix>commands`, one
consumer assigned to a random partition of `<prefix>replies` from its end, and
a thread that reads the replies, re-sends commands without one (same command
id, same headers: a re-send is in the first send's trace) and fails them with
`CommandTimeout` at their deadline.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Command, Reply
from duroot_stream.kafka import header, new_producer, new_reader
from duroot_stream.tracing import publishing
from duroot_stream.wire import (
    CORRELATION_ID,
    Codec,
    CodecError,
    Topics,
    partition_for,
    reply_route_headers,
)

from .calls import topic_partitions, watermarks
from .errors import CommandTimeout, DuRootError, Unavailable, kafka_unavailable

log = logging.getLogger(__name__)

__all__ = ["Exchange"]


@dataclass(frozen=True, slots=True)
class _Connection:
    producer: Producer
    consumer: Consumer
    command_partitions: int
    reply_partition: int


@dataclass(slots=True)
class _Pending:
    """A command waiting for its reply."""

    command: Command
    value: bytes
    partition: int  # of `<prefix>commands`: the workflow's
    # The reply route and the publish span's trace context: a re-send is the same record.
    headers: list[tuple[str, str | bytes | None]]
    future: Future[Reply]
    deadline: float  # time.monotonic() when CommandTimeout is raised
    attempts: int = 0


class Exchange:
    """Sends commands and matches their replies; thread-safe (see the module docstring).

    `timeout`: seconds to wait for a reply, re-sends included; `retries`: how
    many times a command is re-sent within that time.
    """

    def __init__(self, config: KafkaConfig, codec: Codec, *, timeout: float, retries: int) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.timeout = timeout
        self.retries = retries
        self._codec = codec
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._timers: list[tuple[float, int, str]] = []  # (when, tie-breaker, command id)
        self._tie = itertools.count()
        self._stop = threading.Event()
        self._closed = False
        self._conn: _Connection | None = None
        self._thread: threading.Thread | None = None

    @property
    def reply_partition(self) -> int:
        """The partition of `<prefix>replies` this exchange reads (-1 before `start`)."""
        return self._conn.reply_partition if self._conn else -1

    # -- lifecycle

    def start(self) -> _Connection:
        """Connect and assign the reply partition, once."""
        with self._lock:
            if self._closed:
                raise DuRootError("the client is closed")
            if self._conn is not None:
                return self._conn
            self._conn = conn = self._connect()
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="duroot-client-replies", daemon=True
        )
        self._thread.start()
        return conn

    def _connect(self) -> _Connection:
        # Delivery must fail within the command timeout, not librdkafka's 300 s.
        delivery_ms = max(1000, int(self.timeout * 1000))
        producer = new_producer(
            self.config,
            **{
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "message.timeout.ms": delivery_ms,
            },
        )
        consumer = new_reader(self.config, **{"fetch.wait.max.ms": 10})
        try:
            command_partitions = topic_partitions(producer, self.topics.commands)
            reply_partition = random.randrange(topic_partitions(consumer, self.topics.replies))
            # The end offset now, not OFFSET_END: librdkafka resolves that lazily, and a
            # reply written before it does would be skipped.
            _, high = watermarks(consumer, self.topics.replies, reply_partition)
            consumer.assign([TopicPartition(self.topics.replies, reply_partition, high)])
        except BaseException:
            consumer.close()
            raise
        return _Connection(producer, consumer, command_partitions, reply_partition)

    def close(self) -> None:
        """Stop the reply thread; commands still waiting fail with `DuRootError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn = self._conn
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if conn is not None:
            conn.producer.flush(5)
            conn.consumer.close()
        with self._lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            _fail(p.future, DuRootError(f"client closed before command {p.command.command_id}"))

    # -- sending

    def submit(self, command: Command) -> Future[Reply]:
        """Send `command`; the future's result is its `Reply` (accepted or rejected),
        or it fails with `CommandTimeout` or `Unavailable`."""
        conn = self.start()
        value = self._codec.encode_command(command)
        future: Future[Reply] = Future()
        future.set_running_or_notify_cancel()
        topic, command_id = self.topics.commands, command.command_id
        partition = partition_for(command.workflow_id, conn.command_partitions)
        route = reply_route_headers(self.topics.replies, conn.reply_partition, command_id)
        try:
            with publishing(topic, partition, command.workflow_id, command_id) as trace:
                now = time.monotonic()
                pending = _Pending(
                    command, value, partition, [*route, *trace], future, now + self.timeout
                )
                with self._lock:
                    if command_id in self._pending:
                        raise ValueError(f"command {command_id} is already in flight")
                    self._pending[command_id] = pending
                    self._schedule(now, command_id)
                self._produce(conn, pending)
        except DuRootError as exc:  # the span records it; the future fails with it
            self._finish(command_id, exc)
        return future

    def result(self, future: Future[Reply], command: Command) -> Reply:
        """The reply of a submitted command (raises what the future fails with)."""
        # The reply thread fails the future at its deadline; the margin only guards
        # against that thread having died.
        try:
            return future.result(timeout=self.timeout + 10)
        except TimeoutError:
            raise CommandTimeout(command, self.timeout, 0) from None

    def _schedule(self, now: float, command_id: str) -> None:
        """Next re-send (or the timeout) of a pending command; call with the lock held."""
        interval = self.timeout / (self.retries + 1)
        pending = self._pending[command_id]
        when = min(now + interval, pending.deadline)
        heapq.heappush(self._timers, (when, next(self._tie), command_id))

    def _produce(self, conn: _Connection, pending: _Pending) -> None:
        command = pending.command
        pending.attempts += 1

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._finish(
                    command.command_id,
                    Unavailable(
                        f"could not publish command {command.command_id} to "
                        f"{self.topics.commands}: {err.str()}"
                    ),
                )

        while True:
            try:
                conn.producer.produce(
                    self.topics.commands,
                    value=pending.value,
                    key=command.workflow_id.encode(),
                    partition=pending.partition,
                    headers=pending.headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                if time.monotonic() > pending.deadline:
                    raise Unavailable(
                        f"the producer queue stayed full for {self.timeout:g} s; "
                        f"is Kafka at {self.config.bootstrap_servers} reachable?"
                    ) from None
                conn.producer.poll(0.05)
            except KafkaException as exc:
                raise kafka_unavailable(
                    f"cannot publish command {command.command_id}", exc
                ) from None

    def _finish(self, command_id: str, outcome: Reply | BaseException) -> None:
        with self._lock:
            pending = self._pending.pop(command_id, None)
        if pending is None:
            return  # answered already (a reply to a re-sent command), or timed out
        if isinstance(outcome, BaseException):
            _fail(pending.future, outcome)
        else:
            pending.future.set_result(outcome)

    # -- the reply thread

    def _run(self, conn: _Connection) -> None:
        while not self._stop.is_set():
            try:
                # One message, or 50 ms: a reply is handled as soon as it arrives
                # (a batch would wait out the timeout); then whatever else is there.
                messages = conn.consumer.consume(1, 0.05)
                if messages:
                    messages += conn.consumer.consume(500, 0)
                for msg in messages:
                    self.on_reply(msg)
                conn.producer.poll(0)
                self._fire_timers(conn)
            except Exception:  # keep answering the other commands
                log.exception("the reply thread hit an error")

    def on_reply(self, msg: Message) -> None:
        """One record of the reply partition (a test may wrap this to lose replies)."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("reply consumer: %s", err)
            return
        correlation_id = header(msg, CORRELATION_ID)
        if correlation_id is None or correlation_id not in self._pending:
            return  # another client's reply, or one we have already
        try:
            reply = self._codec.decode_reply(msg.value())
        except CodecError as exc:
            self._finish(correlation_id, DuRootError(f"undecodable reply: {exc}"))
            return
        self._finish(correlation_id, reply)

    def _fire_timers(self, conn: _Connection) -> None:
        now = time.monotonic()
        due: list[tuple[_Pending, bool]] = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                _, _, command_id = heapq.heappop(self._timers)
                pending = self._pending.get(command_id)
                if pending is None:
                    continue
                expired = now >= pending.deadline
                if expired:
                    del self._pending[command_id]
                else:
                    self._schedule(now, command_id)
                due.append((pending, expired))
        for pending, expired in due:  # in submission order, so re-sends keep their order
            if expired:
                _fail(
                    pending.future, CommandTimeout(pending.command, self.timeout, pending.attempts)
                )
                continue
            log.info(
                "no reply yet, re-sending command",
                extra={"command_id": pending.command.command_id, "attempt": pending.attempts + 1},
            )
            try:
                self._produce(conn, pending)
            except DuRootError as exc:
                self._finish(pending.command.command_id, exc)


def _fail(future: Future[Reply], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
