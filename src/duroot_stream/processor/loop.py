"""The processor: commands in, events + index updates + replies out, exactly once.

One consumer (group `duroot-processor`) reads the command topic; one
transactional producer writes everything a batch of commands causes. Per
batch, in one Kafka transaction:

1. consume commands until the batch is full or the commit interval has passed;
2. per command: decode, `decide` against the workflow's state, apply the new
   state (remembering the old one for an abort), and produce the workflow
   events, index events, tombstones and the reply (or the dead letter);
3. garbage collection, when its timer is due: `AbortExpired` and `Delete`
   for old workflows of the owned partitions, through the same path;
4. send the consumed offsets to the transaction and commit it.

State per owned partition is rebuilt from the compacted event topic when the
partition is assigned (restore), read to its last stable offset before any of
its commands is handled.

Kafka errors are triaged in one place, `_triage`: retriable → retry;
`txn_requires_abort` → abort, rewind and undo the batch's state changes;
anything else (fenced, fatal) → `ProcessorFatal`, the process exits non-zero.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter

from duroot_stream import metrics as metrics_mod
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Accepted,
    Command,
    DuRootStarted,
    ErrorCode,
    Rejected,
    Reply,
    StateCode,
    WorkflowReplay,
    WorkflowState,
    decide,
    expiry_command,
    initial_state,
    reply_for,
)
from duroot_stream.ids import MonotonicUlids, new_ulid, now_ms
from duroot_stream.wire import (
    Codec,
    CodecError,
    TopicCheckError,
    Topics,
    event_headers,
    partition_for,
)

log = logging.getLogger("duroot.processor")

T = TypeVar("T")

KAFKA_TIMEOUT_S = 30.0
HUNG_CALL_S = 2 * KAFKA_TIMEOUT_S  # the CLI exits when a Kafka call blocks this long
IDLE_POLL_S = 0.2  # how long to wait for a first command before checking the stop flag
CONSUME_CHUNK = 500  # commands taken from the fetch queue at a time
RESTORE_BATCH = 10_000  # records taken from the fetch queue at a time
ACTIVE_REPLAYS = 1_000  # per partition, see _PartitionFold
# Records must fit librdkafka's message.max.bytes (1,000,000), or producing them
# fails, and the processor would stop on that command after every restart. An
# event is at most a few hundred bytes bigger than the command that caused it:
# bigger commands are dead-lettered. A dead letter is the malformed record plus
# headers, so one of a record near the limit is cut to fit.
MAX_COMMAND_BYTES = 990_000
DEAD_LETTER_MAX_BYTES = 990_000

# Header names of the request-reply convention (Spring Kafka's ReplyingKafkaTemplate).
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"
CORRELATION_ID = "correlation-id"
ANY_PARTITION = -1  # produce: let the partitioner (murmur2_random) pick by key


class ProcessorFatal(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, fatal Kafka error)."""


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaConfig
    instance_id: str = field(default_factory=socket.gethostname)
    group_id: str = "duroot-processor"
    batch_size: int = 1000  # commands per transaction, at most
    commit_interval_s: float = 0.1  # like Kafka Streams under exactly-once
    gc_interval_s: float = 60.0
    max_active_s: float = 24 * 3600.0  # AbortExpired after this long active
    delete_after_s: float = 5 * 24 * 3600.0  # Delete this long after completion
    metrics_port: int | None = None
    # Fault injection for tests: called before each commit; returning True makes
    # the processor abort that transaction as if Kafka had required it.
    abort_before_commit: Callable[[], bool] | None = None


@dataclass
class _Batch:
    """The open transaction: what to commit, and what to undo on abort."""

    started: float
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> offset to commit
    first_offsets: dict[int, int] = field(default_factory=dict)  # partition -> rewind target
    undo: dict[tuple[int, str], WorkflowState | None] = field(default_factory=dict)
    commands: int = 0
    issued_at: list[int] = field(default_factory=list)


class _ReplyRoute(NamedTuple):
    topic: str
    partition: int
    correlation_id: bytes | None


class Processor:
    def __init__(
        self,
        settings: ProcessorSettings,
        metrics: metrics_mod.ProcessorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or metrics_mod.ProcessorMetrics()
        self.topics = Topics(settings.kafka.topic_prefix)
        # Per command: resolved once (a Topics property formats the name each time).
        self._events_topic, self._replies_topic = self.topics.events, self.topics.replies
        self.codec = Codec(settings.kafka.schema_registry_url)
        self._new_id = MonotonicUlids()
        self._stop = threading.Event()
        self._fatal = False
        self._fatal_cause = ""
        self._batch: _Batch | None = None
        self._workflows: dict[int, dict[str, WorkflowState]] = {}  # partition -> workflows
        self._partition_counts: dict[str, int] = {}
        # Per command, counted as they change and published at each commit:
        # recounting 100,000 workflows at every commit would take longer than it.
        self._state_counts = dict.fromkeys(StateCode, 0)
        # Counts of the open transaction by (metric, labels), added to the metrics
        # when it commits (so an aborted and redone batch counts once), and one
        # `labels().inc()` per batch instead of several microseconds per command.
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self._next_gc = time.monotonic() + settings.gc_interval_s
        self.ready = threading.Event()  # set once the first assignment is restored
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_call: tuple[str, float] | None = None  # (call, started) of `_retry`

    # --- life cycle -------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch, commit, leave the group (from any thread or a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Process until `stop()`; raises `ProcessorFatal` when it cannot go on."""
        self._connect()
        assert self._consumer is not None
        try:
            while not self._stop.is_set():
                self._run_batch()
            if self._batch is not None:
                self._commit()
        except BaseException:
            self._fatal = True  # leave without committing: the open transaction is abandoned
            raise
        finally:
            self._close()

    def _connect(self) -> None:
        kafka = self.settings.kafka
        self._producer = Producer(
            kafka.client(
                **{
                    # Stable per instance: a restarted instance aborts what its
                    # predecessor left open (init_transactions) instead of letting it
                    # hold back the last stable offset until the timeout.
                    "transactional.id": f"{self.settings.group_id}-{self.settings.instance_id}",
                    "transaction.timeout.ms": 10_000,
                    "linger.ms": 5,
                    "queue.buffering.max.messages": 1_000_000,
                    "queue.buffering.max.kbytes": 1_048_576,
                    # For replies keyed by command id without a reply partition
                    # (partition -1): the Java client's murmur2, computed in C.
                    "partitioner": "murmur2_random",
                    "error_cb": self._on_producer_error,
                }
            )
        )
        self._consumer = Consumer(
            kafka.client(
                **{
                    "group.id": self.settings.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                    "statistics.interval.ms": 5_000,
                    "stats_cb": self.metrics.on_statistics,
                }
            )
        )
        self._partition_counts = self._check_topics()
        self._retry("init_transactions", lambda: self._producer.init_transactions(KAFKA_TIMEOUT_S))  # type: ignore[union-attr]
        self._consumer.subscribe(
            [self.topics.commands],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "processor started",
            extra={
                "instance": self.settings.instance_id,
                "group": self.settings.group_id,
                "commands_topic": self.topics.commands,
            },
        )

    def _on_producer_error(self, error: KafkaError) -> None:
        # A fatal error reaches later calls only as a generic _FATAL: keep the cause.
        if error.fatal():
            self._fatal_cause = str(error)
        log.warning("producer error", extra={"error": str(error)})

    def _check_topics(self) -> dict[str, int]:
        assert self._consumer is not None
        md = self._consumer.list_topics(timeout=KAFKA_TIMEOUT_S)
        counts: dict[str, int] = {}
        for name in (
            self.topics.commands,
            self.topics.events,
            self.topics.index,
            self.topics.replies,
            self.topics.dlq,
        ):
            topic = md.topics.get(name)
            if topic is None or topic.error is not None:
                raise TopicCheckError(
                    f"topic {name} is missing (create it with `duroot-stream topics create`)"
                )
            counts[name] = len(topic.partitions)
        if counts[self.topics.commands] != counts[self.topics.events]:
            raise TopicCheckError(
                f"partitions: {self.topics.commands} has {counts[self.topics.commands]} but "
                f"{self.topics.events} has {counts[self.topics.events]}; they must be equal "
                "(events are co-partitioned with commands); refusing to start"
            )
        return counts

    def _close(self) -> None:
        if self._consumer is not None:
            # Leaves the group; on_revoke runs and finds nothing to commit.
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            if not self._fatal:  # a fenced producer has nothing left to deliver
                self._producer.flush(5)
            self._producer = None
        log.info("processor stopped", extra={"instance": self.settings.instance_id})

    # --- the batch loop ---------------------------------------------------------

    def _run_batch(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            self._fill_batch(consumer)
        except _AbortNeeded as exc:
            self._abort(str(exc))
            return
        # 4. Commit offsets and outputs together.
        self._commit()

    def _fill_batch(self, consumer: Consumer) -> None:
        # 1. Wait for a first command, then take what is already fetched, until the
        #    batch is full, the commit interval has passed, or we have caught up.
        #    Caught up means commit now: small batches at low load (latency), full
        #    ones when behind (throughput). `consume(n, timeout)` would wait for all
        #    n, so waiting is done by `poll`, and `consume` only with timeout 0.
        if self._batch is None:
            first = consumer.poll(0.0 if self._stop.is_set() else IDLE_POLL_S)
            if first is not None:
                self._handle(first)
        while self._batch is not None and not self._stop.is_set():
            wanted = self.settings.batch_size - self._batch.commands
            if (
                wanted <= 0
                or time.monotonic() >= self._batch.started + self.settings.commit_interval_s
            ):
                break
            messages = consumer.consume(num_messages=min(wanted, CONSUME_CHUNK), timeout=0)
            for message in messages:
                # 2. Decide and produce, per command.
                self._handle(message)
            if len(messages) < min(wanted, CONSUME_CHUNK):
                break
        # 3. Garbage collection when due.
        if time.monotonic() >= self._next_gc:
            self._collect_garbage()

    def _begin(self) -> _Batch:
        if self._batch is None:
            assert self._producer is not None
            producer = self._producer
            self._retry("begin_transaction", producer.begin_transaction)
            self._batch = _Batch(started=time.monotonic())
        return self._batch

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise ProcessorFatal(f"consumer error: {error}")
            log.warning("consumer error", extra={"error": str(error)})
            return
        batch = self._begin()
        partition, offset = _position(message)
        batch.first_offsets.setdefault(partition, offset)
        batch.next_offsets[partition] = offset + 1
        batch.commands += 1
        route = self._reply_route(message)
        value = message.value() or b""
        if len(value) > MAX_COMMAND_BYTES:
            why = f"command of {len(value)} bytes, more than {MAX_COMMAND_BYTES}"
            self._reject_malformed(message, route, "too-large", why)
            return
        try:
            command = self.codec.decode_command(value)
        except CodecError as exc:
            self._reject_malformed(message, route, "undecodable", str(exc))
            return
        workflows = self._workflows.setdefault(partition, {})
        # A workflow with state here was routed here before; murmur2 (pure Python,
        # ~10 us) only for the others.
        expected = (
            partition
            if command.workflow_id in workflows
            else partition_for(command.workflow_id, self._partition_counts[self.topics.commands])
        )
        if expected != partition:
            self._reject_malformed(
                message,
                route,
                "misrouted",
                f"command for workflow {command.workflow_id} arrived on partition {partition}, "
                f"but murmur2 partitioning puts it on {expected}: produce with the workflow id "
                "as key and partitioner=murmur2_random",
            )
            return
        batch.issued_at.append(command.issued_at)
        reply = self._apply(partition, workflows, command)
        if route is None:  # to the replies topic, partitioned by command id (murmur2)
            route = _ReplyRoute(self._replies_topic, ANY_PARTITION, None)
        self._send_reply(route, command.command_id, reply)

    def _apply(
        self, partition: int, workflows: dict[str, WorkflowState], command: Command
    ) -> Reply:
        """Decide `command`; on acceptance produce its effects and keep the new state."""
        old = workflows.get(command.workflow_id)
        state = old or initial_state(command.workflow_id)
        decision = decide(state, command, self._new_id)
        command_type = type(command.body).__name__
        match decision:
            case Rejected(code=code):
                self._count(self.metrics.commands, command_type, code.value.lower())
            case Accepted(duplicate=True):
                self._count(self.metrics.commands, command_type, "duplicate")
            case Accepted():
                self._count(self.metrics.commands, command_type, "ok")
                self._emit(partition, decision)
                batch = self._batch
                assert batch is not None
                batch.undo.setdefault((partition, command.workflow_id), old)
                new = decision.state
                if new.code is StateCode.UNINITIALIZED:
                    workflows.pop(command.workflow_id, None)  # deleted: nothing to keep
                else:
                    workflows[command.workflow_id] = new
                    self._state_counts[new.code] += 1
                if old is not None:
                    self._state_counts[old.code] -= 1
        return reply_for(command, decision)

    def _count(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        """`counter.labels(*labels).inc(amount)` when the open transaction commits."""
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0) + amount

    def _emit(self, partition: int, decision: Accepted) -> None:
        # Events, index events and replies are made from a decoded (so checked)
        # command and this processor's ULIDs: encoded without checking the ids again.
        events_topic = self._events_topic
        for event in decision.events:
            self._produce(
                events_topic,
                partition,
                event.key.encode(),
                self.codec.encode_event(event, validate=False),
                event_headers(event),
            )
            self._count(self.metrics.events, type(event.payload).__name__)
        for key in decision.deleted_keys:
            self._produce(events_topic, partition, key.encode(), None, None)
        if decision.deleted_keys:
            self._count(self.metrics.tombstones, "events", amount=len(decision.deleted_keys))
        if not decision.index_events and not decision.index_tombstone:
            return
        workflow_id = decision.state.workflow_id
        index_partition = partition_for(workflow_id, self._partition_counts[self.topics.index])
        for index_event in decision.index_events:
            self._produce(
                self.topics.index,
                index_partition,
                workflow_id.encode(),
                self.codec.encode_index_event(index_event, validate=False),
                None,
            )
            self._count(self.metrics.index_events, type(index_event.payload).__name__)
        if decision.index_tombstone:
            self._produce(self.topics.index, index_partition, workflow_id.encode(), None, None)
            self._count(self.metrics.tombstones, "index")

    def _reply_route(self, message: Message) -> _ReplyRoute | None:
        headers = {k: _as_bytes(v) for k, v in _headers(message)}
        topic = headers.get(REPLY_TOPIC)
        correlation = headers.get(CORRELATION_ID)
        if topic:
            try:
                name = topic.decode()
                reply_partition = int(headers.get(REPLY_PARTITION) or b"0")
            except (UnicodeDecodeError, ValueError):
                return None
            return _ReplyRoute(name, reply_partition, correlation)
        if correlation:
            return _ReplyRoute(
                self.topics.replies,
                partition_for(correlation, self._partition_counts[self.topics.replies]),
                correlation,
            )
        return None

    def _send_reply(self, route: _ReplyRoute, key: str | None, reply: Reply) -> None:
        headers: Headers | None = (
            [(CORRELATION_ID, route.correlation_id)] if route.correlation_id else None
        )
        self._produce(
            route.topic,
            route.partition,
            key.encode() if key else route.correlation_id,
            self.codec.encode_reply(reply, validate=False),  # ids from a decoded command
            headers,
        )

    def _reject_malformed(
        self, message: Message, route: _ReplyRoute | None, reason: str, error: str
    ) -> None:
        """Answer MALFORMED where someone waits, and keep the bytes in the dead-letter topic."""
        log.warning(
            "malformed command dead-lettered",
            extra={
                "reason": reason,
                "error": error,
                "partition": message.partition(),
                "offset": message.offset(),
            },
        )
        key, value, original = message.key(), message.value(), _headers(message)
        headers: Headers = [
            ("dlq-error", error.encode()),
            ("dlq-reason", reason.encode()),
            ("dlq-topic", (message.topic() or "").encode()),
            ("dlq-partition", str(message.partition()).encode()),
            ("dlq-offset", str(message.offset()).encode()),
        ]
        if _size(key, value, original + headers) > DEAD_LETTER_MAX_BYTES:
            # Too big to produce (and failing would stop us on every restart): cut it;
            # the whole record stays in the commands topic at dlq-partition/offset.
            headers.append(("dlq-truncated", f"{_size(key, value, original)} bytes".encode()))
            original = []
            key = key[:1024] if key else key
            room = max(0, DEAD_LETTER_MAX_BYTES - _size(key, None, headers))
            value = value[:room] if value else value
        self._produce(self.topics.dlq, 0, key, value, [*original, *headers])
        self._count(self.metrics.dead_letters, reason)
        self._count(self.metrics.commands, "unknown", "malformed")
        if route is not None:
            reply = Reply(None, None, False, None, ErrorCode.MALFORMED, error)
            self._send_reply(route, None, reply)

    def _produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]] | None,
    ) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    headers=list(headers) if headers else None,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let it drain
            except KafkaException as exc:
                self._triage("produce", exc)  # returns only when retriable
                time.sleep(0.05)

    # --- garbage collection -----------------------------------------------------

    def _collect_garbage(self) -> None:
        self._next_gc = time.monotonic() + self.settings.gc_interval_s
        now = now_ms()
        max_active = int(self.settings.max_active_s * 1000)
        delete_after = int(self.settings.delete_after_s * 1000)
        for partition, workflows in list(self._workflows.items()):
            for state in list(workflows.values()):
                body = expiry_command(state, now, max_active, delete_after)
                if body is None:
                    continue
                self._begin()
                command = Command(new_ulid(), state.workflow_id, NO_VC, now, body)
                reply = self._apply(partition, workflows, command)
                self.metrics.gc_commands.labels(type(body).__name__).inc()
                log.info(
                    "garbage collection",
                    extra={
                        "workflow": state.workflow_id,
                        "command": type(body).__name__,
                        "ok": reply.ok,
                        "error": reply.error.value if reply.error else None,
                    },
                )

    # --- commit, abort, error triage -------------------------------------------

    def _commit(self) -> None:
        batch = self._batch
        if batch is None:
            return
        assert self._producer is not None and self._consumer is not None
        producer, consumer = self._producer, self._consumer
        offsets = [
            TopicPartition(self.topics.commands, p, o) for p, o in batch.next_offsets.items()
        ]
        try:
            if self.settings.abort_before_commit and self.settings.abort_before_commit():
                raise _AbortNeeded("injected by abort_before_commit")
            if offsets:
                self._retry(
                    "send_offsets_to_transaction",
                    lambda: producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), KAFKA_TIMEOUT_S
                    ),
                )
            self._retry("commit_transaction", lambda: producer.commit_transaction(KAFKA_TIMEOUT_S))
        except _AbortNeeded as exc:
            self._abort(str(exc))
            return
        self._batch = None
        now = time.time()
        for (counter, labels), amount in self._counts.items():
            counter.labels(*labels).inc(amount)
        self._counts.clear()
        self.metrics.transactions.labels("committed").inc()
        self.metrics.batch_size.observe(batch.commands)
        self.metrics.batch_duration.observe(time.monotonic() - batch.started)
        observe = self.metrics.command_latency.observe
        for issued_at in batch.issued_at:
            observe(max(0.0, now - issued_at / 1000))
        self._publish_state_gauges()

    def _abort(self, why: str) -> None:
        """Abort the open transaction, rewind the consumer, undo the state changes."""
        batch = self._batch
        assert batch is not None and self._producer is not None and self._consumer is not None
        log.warning("aborting transaction", extra={"reason": why, "commands": batch.commands})
        producer = self._producer
        try:
            self._retry("abort_transaction", lambda: producer.abort_transaction(KAFKA_TIMEOUT_S))
        except _AbortNeeded as exc:
            raise ProcessorFatal(f"abort_transaction failed: {exc}") from None
        for (partition, workflow_id), old in batch.undo.items():
            workflows = self._workflows.get(partition)
            if workflows is None:
                continue
            if old is None:
                workflows.pop(workflow_id, None)
            else:
                workflows[workflow_id] = old
        assignment = {tp.partition for tp in self._consumer.assignment()}
        for partition, offset in batch.first_offsets.items():
            if partition in assignment:
                self._consumer.seek(TopicPartition(self.topics.commands, partition, offset))
        self._batch = None
        self._counts.clear()  # the batch is redone and counted then
        self.metrics.transactions.labels("aborted").inc()
        self._update_state_gauges()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """Run a transactional call; retriable errors are retried, the rest triaged."""
        delay = 0.1
        self._in_call = (what, time.monotonic())
        try:
            while True:
                try:
                    return call()
                except KafkaException as exc:
                    self._triage(what, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._in_call = None

    def hung_call(self, limit_s: float) -> tuple[str, float] | None:
        """The transactional call (with its retries) running longer than `limit_s`,
        and for how long.

        After a broker restart librdkafka can block in `send_offsets_to_transaction`
        past its timeout, or time out on every retry, for good (librdkafka issues
        5456, 5511), while its heartbeats keep our partitions; the CLI exits then,
        so that a restart (a new client) recovers.
        """
        call = self._in_call
        if call is None or time.monotonic() - call[1] <= limit_s:
            return None
        return call[0], time.monotonic() - call[1]

    def _triage(self, what: str, exc: KafkaException) -> None:
        """The one place Kafka errors are sorted: return = retry; raise otherwise."""
        error: KafkaError = exc.args[0]
        if error.retriable():
            log.warning(
                "retriable Kafka error, retrying", extra={"call": what, "error": str(error)}
            )
            return
        if error.txn_requires_abort():
            raise _AbortNeeded(f"{what}: {error}")
        if self._producer is not None and not self._fatal_cause:
            try:
                self._producer.poll(0)  # serves error_cb, which records the fatal cause
            except KafkaException as fatal:
                self._fatal_cause = str(fatal.args[0])
        cause = self._fatal_cause
        cause = f" (cause: {cause})" if cause and cause != str(error) else ""
        raise ProcessorFatal(
            f"{what} failed: {error}{cause}; this instance stops (another instance with "
            "the same --instance-id took over, or Kafka reported a fatal error)"
        )

    # --- rebalancing and restore ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        numbers = [tp.partition for tp in partitions]
        if numbers:
            self._restore(numbers)
        self.metrics.partitions.set(len(self._workflows))
        if not self.ready.is_set():
            log.info(
                "processor ready",
                extra={
                    "partitions": sorted(self._workflows),
                    "workflows": self.workflow_count(),
                    "restore_s": round(time.monotonic() - started, 3),
                },
            )
            self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._fatal:
            return
        if self._batch is not None:
            self._commit()  # finish the open transaction while we still own the partitions
        self._drop(tp.partition for tp in partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: our offsets can no longer be committed.
        if self._batch is not None and not self._fatal:
            self._abort("partitions lost")
        self._drop(tp.partition for tp in partitions)

    def _drop(self, partitions: Any) -> None:
        dropped = [p for p in partitions if self._workflows.pop(p, None) is not None]
        if dropped:
            log.info("partitions revoked", extra={"partitions": dropped})
        self.metrics.partitions.set(len(self._workflows))
        self._update_state_gauges()

    def _restore(self, partitions: list[int]) -> None:
        """Rebuild the partitions' workflows from the event topic, to its last stable offset."""
        started = time.monotonic()
        restored = restore_partitions(
            self.settings.kafka,
            self.topics.events,
            partitions,
            self.codec,
            on_start=lambda p: self.metrics.restore_in_progress.labels(str(p)).set(1),
        )
        for partition, (workflows, events) in restored.items():
            self._workflows[partition] = workflows
            label = str(partition)
            self.metrics.restore_in_progress.labels(label).set(0)
            self.metrics.restore_events.labels(label).inc(events)
            self.metrics.restore_duration.labels(label).set(time.monotonic() - started)
        total_events = sum(events for _, events in restored.values())
        total_workflows = sum(len(w) for w, _ in restored.values())
        elapsed = time.monotonic() - started
        log.info(
            "partitions restored",
            extra={
                "partitions": sorted(partitions),
                "workflows": total_workflows,
                "events": total_events,
                "seconds": round(elapsed, 3),
                "events_per_s": int(total_events / elapsed) if elapsed > 0 else None,
            },
        )
        self._update_state_gauges()

    def _update_state_gauges(self) -> None:
        """Recount the workflows by state (after a restore, revocation or abort); publish."""
        counts = dict.fromkeys(StateCode, 0)
        for workflows in self._workflows.values():
            for state in workflows.values():
                counts[state.code] += 1
        self._state_counts = counts
        self._publish_state_gauges()

    def _publish_state_gauges(self) -> None:
        for code, count in self._state_counts.items():
            self.metrics.workflows.labels(code.name.lower()).set(count)

    # --- introspection for tests and `run` --------------------------------------

    @property
    def failed(self) -> bool:
        """True once `run` has stopped on an error."""
        return self._fatal

    def workflow_count(self) -> int:
        return sum(len(w) for w in self._workflows.values())


class _AbortNeeded(Exception):
    """A transactional call failed with `txn_requires_abort`."""


Headers = list[tuple[str, str | bytes | None]]


def _headers(message: Message) -> Headers:
    headers = message.headers()
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a record's key, value and headers."""
    return len(key or b"") + len(value or b"") + sum(len(k) + len(_as_bytes(v)) for k, v in headers)


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def _position(message: Message) -> tuple[int, int]:
    """Partition and offset of a consumed message (always set for those)."""
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None
    return partition, offset


def restore_partitions(
    kafka: KafkaConfig,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    on_start: Callable[[int], None] | None = None,
) -> dict[int, tuple[dict[str, WorkflowState], int]]:
    """Fold each partition of the event topic into workflow states.

    Reads from the beginning to the last stable offset (read_committed: the
    partition EOF fires there) and folds each partition with a
    `_PartitionFold`. A tombstone drops its workflow. Returns, per partition,
    the workflows and the number of records read.

    Per event only the first fields of the Avro body are read (id, workflow,
    seq, cause, payload type: `Codec.event_facts`), and only STARTED payloads
    are decoded. Not the headers, though they carry the same: confluent-kafka
    builds a message's header list on first access, which costs more (about
    9 us for the six on a 2-core test machine) than all the rest of the fold.
    """
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": "duroot-restore",  # required; never joined or committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                # The EOF comes with the first fetch that finds nothing new, which
                # the broker holds back this long (default 500 ms).
                "fetch.wait.max.ms": 10,
            }
        )
    )
    folds = {p: _PartitionFold() for p in partitions}
    # The fold makes no reference cycles, only many objects that live on: the
    # cyclic garbage collector would walk them again and again (10-15 % of a
    # restore's time), so it waits until the restore is done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        starts: list[TopicPartition] = []
        for p in partitions:
            low, high = _watermarks(consumer, TopicPartition(events_topic, p))
            if high > low:
                starts.append(TopicPartition(events_topic, p, low))  # no offset lookup
                if on_start:
                    on_start(p)
        pending = {tp.partition for tp in starts}
        if starts:
            consumer.assign(starts)
        while pending:
            # Take what is fetched (`consume(n, timeout)` would wait for all n);
            # wait with `poll` only when nothing is.
            messages = consumer.consume(num_messages=RESTORE_BATCH, timeout=0)
            if not messages:
                message = consumer.poll(1.0)
                messages = [message] if message is not None else []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(_position(message)[0])
                        continue
                    raise ProcessorFatal(f"restoring {events_topic}: {error}")
                folds[_position(message)[0]].add(message, codec)
    finally:
        consumer.close()
        if gc_was_enabled:
            gc.enable()
    return {p: (fold.finish(), fold.records) for p, fold in folds.items()}


def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """Low and high (last stable) offsets; retried while a fresh topic has no leader yet."""
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
            return int(low), int(high)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if time.monotonic() > deadline or not (
                error.retriable() or error.code() == KafkaError.NOT_LEADER_FOR_PARTITION
            ):
                raise ProcessorFatal(f"offsets of {tp.topic} [{tp.partition}]: {error}") from exc
            time.sleep(0.2)


class _PartitionFold:
    """One partition's workflows during a restore.

    The workflows with events coming in are folded by `WorkflowReplay`s (a
    mutable accumulator each, much cheaper per event than `evolve`). Beyond
    `ACTIVE_REPLAYS`, the longest-active one is turned into its state, and
    resumed from it should more of its events come: a history's events are
    close together in the topic (one du run), so this is rare, and the
    accumulators of all workflows are never held at once (they would take
    more memory than the states, and leave it fragmented afterwards).
    """

    __slots__ = ("active", "records", "states")

    def __init__(self) -> None:
        self.states: dict[str, WorkflowState] = {}
        self.active: dict[str, WorkflowReplay] = {}  # oldest activated first
        self.records = 0

    def add(self, message: Message, codec: Codec) -> None:
        self.records += 1
        value = message.value()
        if value is None:  # tombstone of a deleted history: "<workflow-id>/<seq>"
            workflow_id = (message.key() or b"").split(b"/", 1)[0].decode()
            self.active.pop(workflow_id, None)
            self.states.pop(workflow_id, None)
            return
        vid, workflow_id, seq, command_id, event_type = codec.event_facts(value)
        replay = self.active.get(workflow_id) or self._activate(workflow_id)
        started = None
        if event_type is DuRootStarted:
            payload = codec.decode_event(value).payload
            assert isinstance(payload, DuRootStarted)
            started = payload
        replay.add(event_type, vid, seq, command_id, started)

    def _activate(self, workflow_id: str) -> WorkflowReplay:
        state = self.states.pop(workflow_id, None)
        replay = WorkflowReplay(workflow_id) if state is None else WorkflowReplay.resume(state)
        self.active[workflow_id] = replay
        if len(self.active) > ACTIVE_REPLAYS:
            oldest = next(iter(self.active))
            self.states[oldest] = self.active.pop(oldest).state()
        return replay

    def finish(self) -> dict[str, WorkflowState]:
        for workflow_id, replay in self.active.items():
            self.states[workflow_id] = replay.state()
        self.active.clear()
        return self.states
