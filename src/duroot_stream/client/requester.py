"""The requester's library: publish commands and wait for their replies.

    from duroot_stream.client import DuRootClient
    from duroot_stream.config import ConfigError, KafkaConfig

    with DuRootClient(KafkaConfig.from_env()) as client:
        begun = client.begin(registry_id, "/example/data", "files.example.org", "/srv/data")
        vid = client.append_many(begun.workflow_id, [("a", 4096), ("b", 8192)])
        client.commit(begun.workflow_id, expected_vid=vid)

How a command travels (DESIGN.md, "Request-reply"):

1. The client assigns its reply consumer to one partition of `<prefix>replies`,
   starting at that partition's end, before it sends anything (no consumer
   group: nothing to rebalance, nothing to commit).
2. Each command is produced to `<prefix>commands`, key = workflow id, in the
   workflow's partition (`partition_for`, Java's murmur2), with the headers
   `reply-topic`, `reply-partition` and `correlation-id` (= the command id).
3. A background thread reads the reply partition and completes the future of
   the command whose correlation id the reply echoes; other replies in that
   partition (other clients share it) are ignored.
4. No reply within `timeout / (retries + 1)`: the same command (same command
   id) is sent again; the processor answers a repeated command id with the
   reply it gave first and emits nothing new. No reply within `timeout`:
   `CommandTimeout`.

Pipelining: `submit` returns a `Future[Reply]` without waiting, and
`append_many` keeps several `Append` batches in flight. Commands to one
workflow go to one partition through one idempotent producer, so the
processor applies them in the order they were submitted.

Every error is a `DuRootError`: rejections map one class per `ErrorCode`;
`Unavailable` (Kafka) and its `CommandTimeout` (no processor answered) say
what to check. The readers (get, events, index, status) are in `readers`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from duroot_stream import kafka
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    RECENT_COMMANDS,
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
)
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.kafka import header, new_producer
from duroot_stream.kafka import new_reader as new_consumer
from duroot_stream.wire import Codec, CodecError, Topics, partition_for

log = logging.getLogger(__name__)

# Request-reply headers (Spring Kafka's ReplyingKafkaTemplate names), UTF-8 text.
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"
CORRELATION_ID = "correlation-id"

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 2
DEFAULT_BATCH_SIZE = 1000
# Appends in flight in `append_many`. A re-sent command is recognised only
# among the workflow's last RECENT_COMMANDS commands, so at most half of that
# may be outstanding when a retry goes out.
DEFAULT_MAX_IN_FLIGHT = RECENT_COMMANDS // 2
METADATA_TIMEOUT_S = 10.0


# --- errors -----------------------------------------------------------------------


class DuRootError(Exception):
    """Root of every error the client library raises."""


class Unavailable(DuRootError):
    """Kafka could not be reached, a topic is missing, or a command was not delivered."""


class CommandTimeout(Unavailable):
    """No reply within the timeout: most likely no processor is running."""

    def __init__(self, command: Command, timeout: float, attempts: int) -> None:
        self.command = command
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            f"no processor answered command {command.command_id} "
            f"({type(command.body).__name__} of workflow {command.workflow_id}) within "
            f"{timeout:g} s ({attempts} attempt{'s' if attempts != 1 else ''}); check that "
            "`duroot-stream processor` is running on the same brokers and topic prefix. "
            "The command may still be applied later; re-sending it with the same command id "
            "is safe."
        )


class WorkflowNotFound(DuRootError):
    """The workflow does not exist (never begun, or deleted)."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id} not found (never begun, or deleted)")


class WorkflowFailed(DuRootError):
    """The workflow completed with a non-zero status code."""

    def __init__(self, workflow_id: str, status_code: int, status_message: str) -> None:
        self.workflow_id = workflow_id
        self.status_code = status_code
        self.status_message = status_message
        super().__init__(f"workflow {workflow_id} failed (status {status_code}): {status_message}")


class WaitTimeout(DuRootError):
    """`get_du(wait=True, timeout=…)`: the workflow did not complete in time."""


class CommandRejected(DuRootError):
    """The processor rejected the command; `code` says why, the message says how."""

    code: ClassVar[ErrorCode | None] = None

    def __init__(self, reply: Reply, command: Command | None = None) -> None:
        self.reply = reply
        self.command = command
        self.error_code = reply.error
        super().__init__(reply.message or (reply.error.value if reply.error else "rejected"))


class WorkflowConflict(CommandRejected):
    """The workflow is not in the state (or at the version) the command needs."""


class ConflictInit(WorkflowConflict):
    code = ErrorCode.CONFLICT_INIT


class ConflictState(WorkflowConflict):
    code = ErrorCode.CONFLICT_STATE


class ConflictStateAdvanced(WorkflowConflict):
    code = ErrorCode.CONFLICT_STATE_ADVANCED


_VERSION_CONFLICT_RE = re.compile(r"stored vid (\w+), expected vid (\w+)")


class VersionConflict(WorkflowConflict):
    """`expected_vid` was not the workflow's head; both vids are attributes."""

    code = ErrorCode.VERSION_CONFLICT

    def __init__(self, reply: Reply, command: Command | None = None) -> None:
        super().__init__(reply, command)
        match = _VERSION_CONFLICT_RE.search(reply.message)
        self.stored_vid: str | None = match.group(1) if match else None
        self.expected_vid: str | None = (
            match.group(2) if match else (command.expected_vid if command else None)
        )


class InvalidCommand(CommandRejected):
    code = ErrorCode.INVALID_COMMAND


class Uninitialized(CommandRejected):
    code = ErrorCode.UNINITIALIZED


class InvalidArgument(CommandRejected):
    code = ErrorCode.INVALID_ARGUMENT


class MalformedCommand(CommandRejected):
    code = ErrorCode.MALFORMED


REJECTIONS: dict[ErrorCode, type[CommandRejected]] = {
    cls.code: cls
    for cls in (
        ConflictInit,
        ConflictState,
        ConflictStateAdvanced,
        InvalidCommand,
        Uninitialized,
        VersionConflict,
        InvalidArgument,
        MalformedCommand,
    )
    if cls.code is not None
}


def rejection(reply: Reply, command: Command | None = None) -> CommandRejected:
    """The typed exception for a rejecting reply."""
    cls = REJECTIONS.get(reply.error, CommandRejected) if reply.error else CommandRejected
    return cls(reply, command)


def check_reply(reply: Reply, command: Command | None = None) -> str:
    """The new vid of an accepting reply; raises the typed rejection otherwise."""
    if reply.ok and reply.vid is not None:
        return reply.vid
    if reply.ok:
        raise DuRootError(f"reply to command {reply.command_id} accepted it but has no vid")
    raise rejection(reply, command)


def kafka_unavailable(what: str, exc: BaseException) -> Unavailable:
    """An `Unavailable` for a Kafka exception, naming what was being done."""
    detail = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return Unavailable(f"{what}: {detail}")


# --- commands ---------------------------------------------------------------------


def canonical_uuid(text: str, what: str = "workflow id") -> str:
    """Canonical lowercase UUID text; ValueError naming `what` otherwise."""
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a UUID") from None


def make_command(
    workflow_id: str,
    body: CommandBody,
    expected_vid: str = NO_VC,
    *,
    command_id: str | None = None,
    issued_at: int | None = None,
) -> Command:
    """A `Command` with a fresh command id (ULID) and the time now."""
    return Command(
        command_id=command_id or new_ulid(),
        workflow_id=canonical_uuid(workflow_id),
        expected_vid=expected_vid,
        issued_at=now_ms() if issued_at is None else issued_at,
        body=body,
    )


def path_usages(paths: Iterable[PathUsage | tuple[str, int]]) -> tuple[PathUsage, ...]:
    """`PathUsage`s from `PathUsage`s or `(path, usage)` pairs, checked as the processor
    would (so a pipelined append cannot fail half-way for a bad line)."""
    out = []
    for item in paths:
        p = item if isinstance(item, PathUsage) else PathUsage(item[0], item[1])
        if not isinstance(p.path, str):
            raise ValueError(f"path {p.path!r} is not text")
        if isinstance(p.usage, bool) or not isinstance(p.usage, int) or p.usage < 0:
            raise ValueError(f"usage {p.usage!r} of path {p.path!r} is not a byte count >= 0")
        out.append(p)
    return tuple(out)


def _batches(items: tuple[PathUsage, ...], size: int) -> Iterator[tuple[PathUsage, ...]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class Begun:
    """What `begin` returns."""

    workflow_id: str
    vid: str


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
    future: Future[Reply]
    deadline: float  # time.monotonic() when CommandTimeout is raised
    attempts: int = 0


class DuRootClient:
    """Publishes commands and waits for their replies (see the module docstring).

    `timeout`: seconds to wait for a reply, retries included; `retries`: how
    many times a command is re-sent (same command id) within that time.
    Thread-safe; use one client per process, and close it (or use `with`).
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        codec: Codec | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.timeout = timeout
        self.retries = retries
        self._codec = codec or Codec(config.schema_registry_url)
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
        """The partition of `<prefix>replies` this client reads (-1 before `start`)."""
        return self._conn.reply_partition if self._conn else -1

    # -- lifecycle

    def __enter__(self) -> DuRootClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Connect and assign the reply partition; the first command does it anyway."""
        with self._lock:
            if self._closed:
                raise DuRootError("the client is closed")
            if self._conn is not None:
                return
            self._conn = conn = self._connect()
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="duroot-client-replies", daemon=True
        )
        self._thread.start()

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
        consumer = new_consumer(self.config, **{"fetch.wait.max.ms": 10})
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
        """Send `command`; the future's result is its `Reply` (accepted or rejected).

        The future fails with `CommandTimeout` or `Unavailable`. Re-sends use the
        same command id; keep fewer than RECENT_COMMANDS commands of one workflow
        in flight, or a re-sent one may be applied twice (`append_many` does).
        """
        self.start()
        conn = self._conn
        assert conn is not None
        value = self._codec.encode_command(command)
        future: Future[Reply] = Future()
        future.set_running_or_notify_cancel()
        now = time.monotonic()
        pending = _Pending(command, value, future, deadline=now + self.timeout)
        with self._lock:
            if command.command_id in self._pending:
                raise ValueError(f"command {command.command_id} is already in flight")
            self._pending[command.command_id] = pending
            self._schedule(now, command.command_id)
        try:
            self._produce(conn, pending)
        except DuRootError as exc:
            self._finish(command.command_id, exc)
        return future

    def send(self, command: Command) -> str:
        """Send `command` and wait: the new vid, or the typed exception."""
        return check_reply(self._result(self.submit(command), command), command)

    def _schedule(self, now: float, command_id: str) -> None:
        """Next re-send (or the timeout) of a pending command; call with the lock held."""
        interval = self.timeout / (self.retries + 1)
        pending = self._pending[command_id]
        when = min(now + interval, pending.deadline)
        heapq.heappush(self._timers, (when, next(self._tie), command_id))

    def _produce(self, conn: _Connection, pending: _Pending) -> None:
        command = pending.command
        pending.attempts += 1
        headers: list[tuple[str, str | bytes | None]] = [
            (REPLY_TOPIC, self.topics.replies.encode()),
            (REPLY_PARTITION, str(conn.reply_partition).encode()),
            (CORRELATION_ID, command.command_id.encode()),
        ]
        partition = partition_for(command.workflow_id, conn.command_partitions)

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
                    partition=partition,
                    headers=headers,
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
                    self._on_reply(msg)
                conn.producer.poll(0)
                self._fire_timers(conn)
            except Exception:  # keep answering the other commands
                log.exception("the reply thread hit an error")

    def _on_reply(self, msg: Message) -> None:
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

    # -- one method per command

    def init(
        self,
        workflow_id: str,
        registry_id: str,
        global_root: str,
        host: str,
        host_root: str,
        *,
        expected_vid: str = NO_VC,
    ) -> str:
        """Init (begin) a du of `global_root` on `host`; the vid of the STARTED event.

        Repeating it with the same fields is a no-op that returns the same vid."""
        body = Init(canonical_uuid(registry_id, "registry id"), global_root, host, host_root)
        return self.send(make_command(workflow_id, body, expected_vid))

    def begin(
        self,
        registry_id: str,
        global_root: str,
        host: str,
        host_root: str,
        *,
        workflow_id: str | None = None,
    ) -> Begun:
        """`init` of a new workflow (a random id unless given)."""
        wf = canonical_uuid(workflow_id) if workflow_id else str(uuid.uuid4())
        return Begun(wf, self.init(wf, registry_id, global_root, host, host_root))

    def append(
        self,
        workflow_id: str,
        paths: Iterable[PathUsage | tuple[str, int]],
        *,
        expected_vid: str = NO_VC,
    ) -> str:
        """Append du lines (one DuUpdated event each) in one command."""
        items = tuple(p if isinstance(p, PathUsage) else PathUsage(*p) for p in paths)
        return self.send(make_command(workflow_id, Append(items), expected_vid))

    def append_many(
        self,
        workflow_id: str,
        paths: Iterable[PathUsage | tuple[str, int]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        expected_vid: str = NO_VC,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> str:
        """Append any number of du lines as pipelined `Append` batches, in order.

        The first batch carries `expected_vid` and is confirmed before the rest is
        sent without a version check, up to `max_in_flight` at a time (the
        processor applies one workflow's commands in offset order). Returns the
        vid after the last batch. Lines are checked before anything is sent; if a
        batch is rejected anyway, the exception's notes say how many lines were
        appended before it.
        """
        if batch_size < 1 or not 1 <= max_in_flight <= RECENT_COMMANDS:
            raise ValueError(f"batch_size must be >= 1 and max_in_flight 1..{RECENT_COMMANDS}")
        items = path_usages(paths)
        if not items:
            raise ValueError("append_many: no paths")
        batches = _batches(items, batch_size)
        first = next(batches)
        vid = self.append(workflow_id, first, expected_vid=expected_vid)
        done = len(first)
        window: deque[tuple[Command, Future[Reply], int]] = deque()
        try:
            for batch in batches:
                command = make_command(workflow_id, Append(batch))
                window.append((command, self.submit(command), len(batch)))
                if len(window) >= max_in_flight:
                    vid, done = self._confirm_oldest(window, done)
            while window:
                vid, done = self._confirm_oldest(window, done)
        except DuRootError as exc:
            for _, future, _ in window:  # let the rest finish; their outcome is moot now
                future.exception()
            exc.add_note(
                f"append_many: {done} of {len(items)} lines of workflow {workflow_id} were "
                f"appended before this error; the last confirmed vid is {vid}"
            )
            raise
        return vid

    def _confirm_oldest(
        self, window: deque[tuple[Command, Future[Reply], int]], done: int
    ) -> tuple[str, int]:
        """Wait for the oldest command in flight: (its vid, lines confirmed so far)."""
        command, future, lines = window[0]
        vid = check_reply(self._result(future, command), command)
        window.popleft()
        return vid, done + lines

    def _result(self, future: Future[Reply], command: Command) -> Reply:
        # The reply thread fails the future at its deadline; the margin only guards
        # against that thread having died.
        try:
            return future.result(timeout=self.timeout + 10)
        except TimeoutError:
            raise CommandTimeout(command, self.timeout, 0) from None

    def commit(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Complete the workflow successfully (COMPLETED 0 and COMMITTED)."""
        return self.send(make_command(workflow_id, Commit(), expected_vid))

    def fail(self, workflow_id: str, code: int, message: str, *, expected_vid: str = NO_VC) -> str:
        """Complete the workflow as failed with a non-zero `code`."""
        return self.send(make_command(workflow_id, Fail(code, message), expected_vid))

    def abort_expired(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Complete an active workflow as expired (status 104)."""
        return self.send(make_command(workflow_id, AbortExpired(), expected_vid))

    def end(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """End a completed workflow (the processor already does after completion)."""
        return self.send(make_command(workflow_id, End(), expected_vid))

    def delete(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Delete a completed workflow's history; returns the empty history's vid."""
        return self.send(make_command(workflow_id, Delete(), expected_vid))


# --- Kafka calls with the client's errors ------------------------------------------


def topic_partitions(client: Producer | Consumer, topic: str) -> int:
    """The partition count of `topic`; `Unavailable` if Kafka or the topic is missing."""
    try:
        count = kafka.partition_count(client, topic)
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot read the metadata of topic {topic}", exc) from None
    if count is None:
        raise Unavailable(
            f"topic {topic} does not exist (create the topics with `duroot-stream topics create`)"
        )
    return count


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) offsets of a partition; `Unavailable` when Kafka does not answer."""
    try:
        return kafka.watermarks(consumer, topic, partition)
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot read the offsets of {topic}/{partition}", exc) from None


def _fail(future: Future[Reply], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
