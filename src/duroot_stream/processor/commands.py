"""One command in, its records out: decode, routing check, decide, then the
workflow events, index events and tombstones, and the reply (or the dead letter),
all produced into the open transaction."""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from confluent_kafka import Message

from duroot_stream.domain import (
    Accepted,
    Command,
    ErrorCode,
    Rejected,
    Reply,
    WorkflowState,
    decide,
    initial_state,
    reply_for,
)
from duroot_stream.ids import MonotonicUlids
from duroot_stream.kafka import Headers, headers, position
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import Codec, CodecError, Topics, event_headers, partition_for

from .headers import (
    CORRELATION_ID,
    DLQ_ERROR,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    DLQ_TRUNCATED,
    REPLY_PARTITION,
    REPLY_TOPIC,
)
from .settings import DEAD_LETTER_MAX_BYTES, MAX_COMMAND_BYTES, ProcessorFatal
from .state import Workflows
from .transaction import Transaction

log = logging.getLogger("duroot.processor")

ANY_PARTITION = -1  # produce: let the partitioner (murmur2_random) pick by key
BAD_HEADER_LOG_S = 10.0  # at most one warning about unusable reply headers this often


class ReplyRoute(NamedTuple):
    topic: str
    partition: int
    correlation_id: bytes | None


class CommandHandler:
    def __init__(
        self,
        txn: Transaction,
        workflows: Workflows,
        codec: Codec,
        topics: Topics,
        partition_counts: dict[str, int],
        metrics: ProcessorMetrics,
    ) -> None:
        self._txn = txn
        self._workflows = workflows
        self._codec = codec
        self._metrics = metrics
        self._new_id = MonotonicUlids()
        # Per command: resolved once (a Topics property formats the name each time).
        self._events_topic, self._index_topic = topics.events, topics.index
        self._replies_topic, self._dlq_topic = topics.replies, topics.dlq
        self._commands_partitions = partition_counts[topics.commands]
        self._index_partitions = partition_counts[topics.index]
        self._replies_partitions = partition_counts[topics.replies]
        self._bad_header_log_at = 0.0
        self._bad_headers_unlogged = 0

    def handle(self, message: Message) -> None:
        """A consumed record: its command applied, or dead-lettered."""
        error = message.error()
        if error is not None:
            if error.fatal():
                raise ProcessorFatal(f"consumer error: {error}")
            log.warning("consumer error", extra={"error": str(error)})
            return
        batch = self._txn.begin()
        partition, offset = position(message)
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
            command = self._codec.decode_command(value)
        except CodecError as exc:
            self._reject_malformed(message, route, "undecodable", str(exc))
            return
        workflows = self._workflows.of(partition)
        # A workflow with state here was routed here before; murmur2 (pure Python,
        # ~10 us) only for the others.
        expected = (
            partition
            if command.workflow_id in workflows
            else partition_for(command.workflow_id, self._commands_partitions)
        )
        if expected != partition:
            batch.misrouted = True  # checked at commit: did the partition count change?
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
        reply = self.apply(partition, workflows, command)
        if route is None:  # to the replies topic, partitioned by command id (murmur2)
            route = ReplyRoute(self._replies_topic, ANY_PARTITION, None)
        self._send_reply(route, command.command_id, reply)

    def apply(self, partition: int, workflows: dict[str, WorkflowState], command: Command) -> Reply:
        """Decide `command`; on acceptance produce its effects and keep the new state."""
        old = workflows.get(command.workflow_id)
        state = old or initial_state(command.workflow_id)
        decision = decide(state, command, self._new_id)
        command_type = type(command.body).__name__
        count = self._txn.count
        match decision:
            case Rejected(code=code):
                count(self._metrics.commands, command_type, code.value.lower())
            case Accepted(duplicate=True):
                count(self._metrics.commands, command_type, "duplicate")
            case Accepted():
                count(self._metrics.commands, command_type, "ok")
                self._emit(partition, decision)
                self._txn.batch.undo.setdefault((partition, command.workflow_id), old)
                self._workflows.replace(workflows, old, decision.state)
        return reply_for(command, decision)

    def _emit(self, partition: int, decision: Accepted) -> None:
        # Events, index events and replies are made from a decoded (so checked)
        # command and this processor's ULIDs: encoded without checking the ids again.
        produce, count, metrics, codec = (
            self._txn.produce,
            self._txn.count,
            self._metrics,
            self._codec,
        )
        events_topic = self._events_topic
        for event in decision.events:
            produce(
                events_topic,
                partition,
                event.key.encode(),
                codec.encode_event(event, validate=False),
                event_headers(event),
            )
            count(metrics.events, type(event.payload).__name__)
        for key in decision.deleted_keys:
            produce(events_topic, partition, key.encode(), None, None)
        if decision.deleted_keys:
            count(metrics.tombstones, "events", amount=len(decision.deleted_keys))
        if not decision.index_events and not decision.index_tombstone:
            return
        workflow_id = decision.state.workflow_id
        index_partition = partition_for(workflow_id, self._index_partitions)
        for index_event in decision.index_events:
            produce(
                self._index_topic,
                index_partition,
                workflow_id.encode(),
                codec.encode_index_event(index_event, validate=False),
                None,
            )
            count(metrics.index_events, type(index_event.payload).__name__)
        if decision.index_tombstone:
            produce(self._index_topic, index_partition, workflow_id.encode(), None, None)
            count(metrics.tombstones, "index")

    # --- replies and dead letters ---------------------------------------------------

    def _reply_route(self, message: Message) -> ReplyRoute | None:
        found = dict(headers(message))
        topic = found.get(REPLY_TOPIC)
        correlation = found.get(CORRELATION_ID)
        if topic:
            try:
                return ReplyRoute(
                    topic.decode(), int(found.get(REPLY_PARTITION) or b"0"), correlation
                )
            except UnicodeDecodeError:
                self._bad_reply_header(message, REPLY_TOPIC, topic)
            except ValueError:
                self._bad_reply_header(message, REPLY_PARTITION, found.get(REPLY_PARTITION))
        if correlation:  # to the replies topic, partitioned by correlation id
            return ReplyRoute(
                self._replies_topic,
                partition_for(correlation, self._replies_partitions),
                correlation,
            )
        return None

    def _bad_reply_header(self, message: Message, name: str, value: bytes | None) -> None:
        """Counted, and logged at most every BAD_HEADER_LOG_S: a bad client can send many."""
        self._txn.count(self._metrics.reply_header_errors, name)
        now = time.monotonic()
        if now < self._bad_header_log_at:
            self._bad_headers_unlogged += 1
            return
        log.warning(
            "unusable reply header: the reply goes to the replies topic",
            extra={
                "header": name,
                "value": repr(value),
                "partition": message.partition(),
                "offset": message.offset(),
                "not_logged_before": self._bad_headers_unlogged,
            },
        )
        self._bad_header_log_at = now + BAD_HEADER_LOG_S
        self._bad_headers_unlogged = 0

    def _send_reply(self, route: ReplyRoute, key: str | None, reply: Reply) -> None:
        self._txn.produce(
            route.topic,
            route.partition,
            key.encode() if key else route.correlation_id,
            self._codec.encode_reply(reply, validate=False),  # ids from a decoded command
            [(CORRELATION_ID, route.correlation_id)] if route.correlation_id else None,
        )

    def _reject_malformed(
        self, message: Message, route: ReplyRoute | None, reason: str, error: str
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
        key, value, original = message.key(), message.value(), headers(message)
        added: Headers = [
            (DLQ_ERROR, error.encode()),
            (DLQ_REASON, reason.encode()),
            (DLQ_TOPIC, (message.topic() or "").encode()),
            (DLQ_PARTITION, str(message.partition()).encode()),
            (DLQ_OFFSET, str(message.offset()).encode()),
        ]
        if _size(key, value, original + added) > DEAD_LETTER_MAX_BYTES:
            # Too big to produce (and failing would stop us on every restart): cut it;
            # the whole record stays in the commands topic at dlq-partition/offset.
            added.append((DLQ_TRUNCATED, f"{_size(key, value, original)} bytes".encode()))
            original = []
            key = key[:1024] if key else key
            room = max(0, DEAD_LETTER_MAX_BYTES - _size(key, None, added))
            value = value[:room] if value else value
        self._txn.produce(self._dlq_topic, 0, key, value, [*original, *added])
        self._txn.count(self._metrics.dead_letters, reason)
        self._txn.count(self._metrics.commands, "unknown", "malformed")
        if route is not None:
            reply = Reply(None, None, False, None, ErrorCode.MALFORMED, error)
            self._send_reply(route, None, reply)


def _size(key: bytes | None, value: bytes | None, record_headers: Headers) -> int:
    """Bytes of a record's key, value and headers."""
    return (
        len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in record_headers)
    )
