"""One command in, its records out: decode, checks, decide, then the workflow events,
index events and tombstones, and the reply (or the dead letter), all produced into
the open transaction (`batch.Batches`, through the port: no Kafka client here).

Whatever goes wrong with one record ends with it, never the loop: a record that
cannot be applied is dead-lettered with its reason (`DeadLetterReason`), and its
command refused (a `Rejected`, MALFORMED) where a route can be found. Its records
are all encoded before the first is produced, so a failure (an encoder raising,
`decide` raising: a bug) leaves nothing behind; should Kafka refuse one of them once
others are produced, the transaction is aborted and redone with that command
dead-lettered.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from duroot_stream import tracing
from duroot_stream.domain import (
    Accepted,
    Command,
    Decision,
    ErrorCode,
    IdSource,
    Rejected,
    Reply,
    WorkflowState,
    decide,
    initial_state,
    reply_for,
)
from duroot_stream.ids import MonotonicUlids
from duroot_stream.kafka import ConsumedRecord, Headers, headers, position
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import (
    Codec,
    CodecError,
    DeadLetter,
    DeadLetterReason,
    RouteError,
    RouteProblem,
    Topics,
    copyable_headers,
    dead_letter_headers,
    events_headers,
    partition_for,
    trace_carrier,
)

from .batch import Batches, Record
from .collection import hold_collection, release_collection
from .faults import AbortNeeded, ProcessorFatal, RecordRefused
from .routes import ReplyRoutes, Route
from .settings import DEAD_LETTER_MAX_BYTES, MAX_COMMAND_BYTES
from .workflows import Workflows

log = logging.getLogger("duroot.processor")

Decide = Callable[[WorkflowState, Command, IdSource], Decision]


class _Refused(Exception):
    """This record cannot be applied: its command is refused (`rejected`) and the
    record dead-lettered with `reason`."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.rejected = Rejected(ErrorCode.MALFORMED, message)


class CommandHandler:
    """Commands into the open batch. `routes` says where replies go; `decide` is the
    workflow's (the domain's `decide`; a test may give one that fails)."""

    def __init__(
        self,
        batches: Batches,
        workflows: Workflows,
        codec: Codec,
        topics: Topics,
        partition_counts: dict[str, int],
        metrics: ProcessorMetrics,
        routes: ReplyRoutes,
        group: str,
        decide: Decide = decide,
    ) -> None:
        self._batches = batches
        self._workflows = workflows
        self._codec = codec
        self._metrics = metrics
        self._new_id = MonotonicUlids()
        # Per command: resolved once (a Topics property formats the name each time).
        self._events_topic, self._index_topic = topics.events, topics.index
        self._replies_topic, self._dlq_topic = topics.replies, topics.dlq
        self._commands_partitions = partition_counts[topics.commands]
        self._index_partitions = partition_counts[topics.index]
        self.routes = routes
        self._decide = decide
        self._group = group
        self._recording = False  # tracing.recording(), checked once per transaction
        # (partition, offset) -> why: commands whose records Kafka refused part-way;
        # the redone transaction dead-letters them. Small: one entry per such command.
        self.poisoned: dict[tuple[int, int], _Refused] = {}
        self._tracebacks: set[tuple[str, str, int | None]] = set()

    def handle_all(
        self, messages: Sequence[ConsumedRecord], on_error: Callable[[Any], None]
    ) -> None:
        """Handle consumed records in order; `on_error` gets a consumer error that
        comes in place of one. Should the transaction need an abort on the way
        (`AbortNeeded`), the records after the one it came with were consumed but not
        handled: their partitions are rewound with the batch's, so they come again. One
        of a partition not restored (paused: it should not come) is rewound to, too."""
        handle, restored = self.handle, self._workflows.by_partition
        unrestored: dict[int, int] = {}  # partition -> first offset not handled
        try:
            for message in messages:
                error = message.error()
                if error is not None:
                    on_error(error)
                    continue
                if message.partition() not in restored:
                    at = position(message)
                    unrestored.setdefault(at[0], at[1])
                    continue
                handle(message)  # in its trace context
        except AbortNeeded:
            first = self._batches.batch.first_offsets
            for message in messages:
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None and message.error() is None:
                    first.setdefault(partition, offset)  # the earliest, per partition
            raise
        if unrestored:
            self._batches.rewind(unrestored, "commands of partitions not restored yet")

    def handle(self, message: ConsumedRecord) -> None:
        """A consumed record (not an error): its command applied, or dead-lettered, in
        the record's trace context (`tracing.processing`); never raises for it."""
        if not self._batches.open:  # once per transaction: is an OpenTelemetry SDK set up?
            self._recording = tracing.recording()
        batch = self._batches.begin()
        partition, offset = position(message)
        batch.first_offsets.setdefault(partition, offset)
        batch.next_offsets[partition] = offset + 1
        batch.commands += 1
        try:
            record_headers = headers(message)  # read once: for the trace and the route
        except Exception as exc:
            route = self.routes.rejected(
                RouteError(f"headers not readable: {exc}", None), partition, offset, "(unreadable)"
            )
            self._dead_letter(message, [], route, _Refused(DeadLetterReason.BAD_HEADERS, str(exc)))
            return
        carrier = trace_carrier(record_headers)
        # The cyclic garbage collector waits until the command is handled: an Append
        # of 10,000 paths makes about 100,000 containers (events, headers, records),
        # none cyclic, and collections among them took a third of its time.
        hold_collection()
        try:
            if not carrier and not self._recording:  # no span, no trace headers to carry
                self._handle(message, record_headers, partition, offset)
                return
            with tracing.processing(message, carrier, self._group):
                self._handle(message, record_headers, partition, offset)
        finally:
            release_collection()

    def _handle(
        self, message: ConsumedRecord, record_headers: Headers, partition: int, offset: int
    ) -> None:
        batch = self._batches.batch
        route = self.routes.route(record_headers, partition, offset)
        produced = batch.produced
        try:
            poisoned = self.poisoned.get((partition, offset))
            if poisoned is not None:
                raise poisoned
            self._apply_record(message, partition, route)
        except (AbortNeeded, ProcessorFatal):
            raise
        except Exception as exc:
            refused = exc if isinstance(exc, _Refused) else self._internal_error(exc)
            if batch.produced != produced:  # some of its records are in the transaction
                self.poisoned[(partition, offset)] = refused
                raise AbortNeeded(
                    f"command at {partition}/{offset} failed part-way: {refused}"
                ) from None
            self._dead_letter(message, record_headers, route, refused)

    def _apply_record(self, message: ConsumedRecord, partition: int, route: Route) -> None:
        value = message.value() or b""
        if len(value) > MAX_COMMAND_BYTES:
            raise _Refused(
                DeadLetterReason.TOO_LARGE,
                f"command of {len(value)} bytes, more than {MAX_COMMAND_BYTES}",
            )
        try:
            command = self._codec.decode_command(value)
        except CodecError as exc:
            raise _Refused(DeadLetterReason.UNDECODABLE, str(exc)) from None
        workflows = self._workflows.of(partition)
        # A workflow with state here was routed here before; murmur2 (pure Python,
        # ~10 us) only for the others.
        expected = (
            partition
            if command.workflow_id in workflows
            else partition_for(command.workflow_id, self._commands_partitions)
        )
        if expected != partition:
            self._batches.batch.misrouted = (
                True  # checked at commit: did the partition count change?
            )
            raise _Refused(
                DeadLetterReason.MISROUTED,
                f"command for workflow {command.workflow_id} arrived on partition {partition}, "
                f"but murmur2 partitioning puts it on {expected}: produce with the workflow id "
                "as key and partitioner=murmur2_random",
            )
        key = message.key()
        if key != command.workflow_id.encode():
            raise _Refused(
                DeadLetterReason.BAD_KEY,
                f"record key {_show(key)} is not the command's workflow id {command.workflow_id}",
            )
        self.apply(partition, workflows, command, route)
        self._batches.batch.issued_at.append(command.issued_at)

    def apply(
        self,
        partition: int,
        workflows: dict[str, WorkflowState],
        command: Command,
        route: Route | None = None,
    ) -> Reply:
        """Decide `command`; on acceptance produce its effects and keep the new state;
        the reply to `route`. Nothing is produced or changed when this raises before
        the first record is produced."""
        old = workflows.get(command.workflow_id)
        state = old or initial_state(command.workflow_id)
        decision = self._decide(state, command, self._new_id)
        reply = reply_for(command, decision)
        command_type = type(command.body).__name__
        records: list[Record] = []
        if isinstance(decision, Accepted) and not decision.duplicate:
            records = self._effects(partition, decision)
        encoded_reply = None if route is None else self._codec.encode_reply(reply, validate=False)
        batches = self._batches
        if records:
            batches.produce(records)
        if route is not None and encoded_reply is not None:
            self._send_reply(route, command.command_id.encode(), encoded_reply)
        count = batches.count
        match decision:
            case Rejected(code=code):
                count(self._metrics.commands, command_type, code.value.lower())
            case Accepted(duplicate=True):
                count(self._metrics.commands, command_type, "duplicate")
            case Accepted():
                count(self._metrics.commands, command_type, "ok")
                self._count_effects(decision)
                batches.batch.undo.setdefault((partition, command.workflow_id), old)
                self._workflows.replace(workflows, old, decision.state)
        return reply

    def _effects(self, partition: int, decision: Accepted) -> list[Record]:
        # Events, index events and replies are made from a decoded (so checked)
        # command and this processor's ULIDs: encoded without checking the ids again.
        codec, events_topic, events = self._codec, self._events_topic, decision.events
        records: list[Record] = [
            (events_topic, partition, event.key.encode(), value, event_headers)
            for event, value, event_headers in zip(
                events, codec.encode_events(events), events_headers(events), strict=True
            )
        ]
        records.extend(
            (events_topic, partition, k.encode(), None, None) for k in decision.deleted_keys
        )
        if decision.index_events or decision.index_tombstone:
            workflow_id = decision.state.workflow_id
            index_partition = partition_for(workflow_id, self._index_partitions)
            key = workflow_id.encode()
            records.extend(
                (
                    self._index_topic,
                    index_partition,
                    key,
                    codec.encode_index_event(e, validate=False),
                    None,
                )
                for e in decision.index_events
            )
            if decision.index_tombstone:
                records.append((self._index_topic, index_partition, key, None, None))
        return records

    def _count_effects(self, decision: Accepted) -> None:
        count, metrics = self._batches.count, self._metrics
        by_type: dict[str, int] = {}  # an Append's events are one type: counted once
        for event in decision.events:
            name = type(event.payload).__name__
            by_type[name] = by_type.get(name, 0) + 1
        for name, n in by_type.items():
            count(metrics.events, name, amount=n)
        if decision.deleted_keys:
            count(metrics.tombstones, "events", amount=len(decision.deleted_keys))
        for index_event in decision.index_events:
            count(metrics.index_events, type(index_event.payload).__name__)
        if decision.index_tombstone:
            count(metrics.tombstones, "index")

    # --- replies and dead letters ---------------------------------------------------

    def _send_reply(self, route: Route, key: bytes | None, value: bytes) -> None:
        """Produce a reply; one Kafka refuses at its route goes to the replies topic."""
        produce = self._batches.produce_one
        try:
            produce(route.topic, route.partition, key, value, route.headers())
        except RecordRefused as exc:
            if route.error is not None:  # already the default route: not ours to fix
                raise
            problem = RouteError(
                f"reply not accepted at {route.topic!r} [{route.partition}]: {exc}",
                route.correlation_id,
                RouteProblem.UNDELIVERABLE,
            )
            default = self.routes.rejected(problem, -1, -1, route.topic)
            produce(default.topic, default.partition, key, value, default.headers())

    def _internal_error(self, exc: Exception) -> _Refused:
        """A bug met by one record: its traceback logged once per place, reason internal-error."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = (
            type(exc).__name__,
            frame.filename if frame else "",
            frame.lineno if frame else None,
        )
        if where not in self._tracebacks:
            self._tracebacks.add(where)
            log.error("internal error on a command (dead-lettered)", exc_info=exc)
        return _Refused(DeadLetterReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _dead_letter(
        self, message: ConsumedRecord, original: Headers, route: Route, refused: _Refused
    ) -> None:
        """Keep the record in the dead-letter topic; answer its refusal at `route`."""
        partition, offset = position(message)
        reason, rejected = refused.reason, refused.rejected
        error = rejected.message
        log.warning(
            "command dead-lettered",
            extra={
                "reason": reason.value,
                "error": error,
                "partition": partition,
                "offset": offset,
            },
        )
        key, value = message.key(), message.value()
        kept: Headers = copyable_headers(original)
        letter = DeadLetter(reason, error[:10_000], message.topic() or "", partition, offset)
        added: Headers = list(dead_letter_headers(letter))
        if _size(key, value, kept + added) > DEAD_LETTER_MAX_BYTES or len(kept) != len(original):
            # Too big to produce (failing would stop us on every restart), or headers
            # that cannot be produced: cut; the whole record stays at dlq-partition/offset.
            whole = _size(key, value, original)
            added = list(dead_letter_headers(_truncated(letter, f"{whole} bytes")))
            kept = []
            key = key[:1024] if key else key
            room = max(0, DEAD_LETTER_MAX_BYTES - _size(key, None, added))
            value = value[:room] if value else value
        batches = self._batches
        batches.produce_one(self._dlq_topic, 0, key, value, [*kept, *added])
        batches.count(self._metrics.dead_letters, reason.value)
        batches.count(self._metrics.commands, "unknown", "malformed")
        if route.awaited:  # someone waits for an answer (the command id is not known)
            reply = Reply(None, None, False, None, rejected.code, error[:1000])
            self._send_reply(route, None, self._codec.encode_reply(reply, validate=False))


def _truncated(letter: DeadLetter, truncated: str) -> DeadLetter:
    return DeadLetter(
        letter.reason, letter.error, letter.topic, letter.partition, letter.offset, truncated
    )


def _show(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    return repr(key[:60]) + ("..." if len(key) > 60 else "")


def _size(key: bytes | None, value: bytes | None, record_headers: Headers) -> int:
    """Bytes of a record's key, value and headers."""
    return (
        len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in record_headers)
    )
