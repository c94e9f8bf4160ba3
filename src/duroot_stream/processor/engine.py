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
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from duroot_stream import tracing
from duroot_stream.domain import (
    Accepted,
    Command,
    Decision,
    IdSource,
    Rejected,
    Reply,
    WorkflowState,
    decide,
    initial_state,
    reply_for,
)
from duroot_stream.ids import MonotonicUlids
from duroot_stream.kafka import ConsumedRecord, position
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import (
    ROUTE_HEADER_NAMES,
    TRACE_HEADER_NAMES,
    Codec,
    CodecError,
    DeadLetter,
    DeadLetterReason,
    HeaderList,
    RouteError,
    RouteProblem,
    Topics,
    carrier_of,
    last_values,
    partition_for,
)

from .batch import Batches, Record
from .collection import hold_collection, release_collection
from .dead_letter import Refused, dead_letter_record, internal_error
from .faults import AbortNeeded, ProcessorFatal, RecordRefused
from .routes import ReplyRoutes, Route
from .settings import MAX_COMMAND_BYTES
from .workflows import Workflows

log = logging.getLogger("duroot.processor")

Decide = Callable[[WorkflowState, Command, IdSource], Decision]
# What the engine reads of a command's headers, picked in one pass.
_PICKED: Final = ROUTE_HEADER_NAMES | TRACE_HEADER_NAMES


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
        self._held = False  # handle_all holds the garbage collector for its records
        # (partition, offset) -> why: commands whose records Kafka refused part-way;
        # the redone transaction dead-letters them. Small: one entry per such command.
        self.poisoned: dict[tuple[int, int], Refused] = {}
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
        hold_collection()  # once for the records, not per record (see `handle`)
        self._held = True
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
        finally:
            self._held = False
            release_collection()
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
            # Read once, as librdkafka gives them (a value may be str or bytes: the
            # readers take both); of them the route and trace headers picked in one pass.
            raw = message.headers()
            record_headers: HeaderList = (
                () if raw is None else list(raw.items()) if isinstance(raw, dict) else raw
            )
            picked = last_values(record_headers, _PICKED)
        except Exception as exc:
            route = self.routes.rejected(
                RouteError(f"headers not readable: {exc}", None), partition, offset, "(unreadable)"
            )
            self._dead_letter(message, [], route, Refused(DeadLetterReason.BAD_HEADERS, str(exc)))
            return
        carrier = carrier_of(picked)
        # The cyclic garbage collector waits until the command is handled: an Append
        # of 10,000 paths makes about 100,000 containers (events, headers, records),
        # none cyclic, and collections among them took a third of its time.
        held = self._held  # by handle_all already, for all its records
        if not held:
            hold_collection()
        try:
            if not carrier and not self._recording:  # no span, no trace headers to carry
                self._handle(message, record_headers, picked, partition, offset)
                return
            self._batches.carrying = True
            try:
                with tracing.processing(message, carrier, self._group):
                    self._handle(message, record_headers, picked, partition, offset)
            finally:
                self._batches.carrying = False
        finally:
            if not held:
                release_collection()

    def _handle(
        self,
        message: ConsumedRecord,
        record_headers: HeaderList,
        picked: dict[str, bytes | str | None],
        partition: int,
        offset: int,
    ) -> None:
        batch = self._batches.batch
        route = self.routes.route(picked, partition, offset)
        produced = batch.produced
        try:
            if self.poisoned:  # (rare) a command Kafka refused part-way, redone
                poisoned = self.poisoned.get((partition, offset))
                if poisoned is not None:
                    raise poisoned
            self._apply_record(message, partition, route)
        except (AbortNeeded, ProcessorFatal):
            raise
        except Exception as exc:
            refused = exc if isinstance(exc, Refused) else internal_error(exc, self._tracebacks)
            if batch.produced != produced:  # some of its records are in the transaction
                self.poisoned[(partition, offset)] = refused
                raise AbortNeeded(
                    f"command at {partition}/{offset} failed part-way: {refused}"
                ) from None
            self._dead_letter(message, record_headers, route, refused)

    def _apply_record(self, message: ConsumedRecord, partition: int, route: Route) -> None:
        value = message.value() or b""
        if len(value) > MAX_COMMAND_BYTES:
            raise Refused(
                DeadLetterReason.TOO_LARGE,
                f"command of {len(value)} bytes, more than {MAX_COMMAND_BYTES}",
            )
        try:
            command = self._codec.decode_command(value)
        except CodecError as exc:
            raise Refused(DeadLetterReason.UNDECODABLE, str(exc)) from None
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
            raise Refused(
                DeadLetterReason.MISROUTED,
                f"command for workflow {command.workflow_id} arrived on partition {partition}, "
                f"but murmur2 partitioning puts it on {expected}: produce with the workflow id "
                "as key and partitioner=murmur2_random",
            )
        key = message.key()
        if key != command.workflow_id.encode():
            raise Refused(
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
        started = time.perf_counter()  # one timer for the command's records, not one per record
        if records:
            batches.produce(records)
        if route is not None and encoded_reply is not None:
            self._send_reply(route, command.command_id.encode(), encoded_reply)
        batches.batch.producing += time.perf_counter() - started
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
        codec, events_topic = self._codec, self._events_topic
        # The same list (its records are `Record`s), not a copy of it.
        records = cast(list[Record], codec.event_records(decision.events, events_topic, partition))
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
        count, metrics, events = self._batches.count, self._metrics, decision.events
        if len(events) == 1:  # the common case (an Append of one path)
            count(metrics.events, type(events[0].payload).__name__)
        else:
            by_type: dict[str, int] = {}  # an Append's events are one type: counted once
            for event in events:
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

    def _dead_letter(
        self, message: ConsumedRecord, original: HeaderList, route: Route, refused: Refused
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
        letter = DeadLetter(reason, error[:10_000], message.topic() or "", partition, offset)
        key, value, letter_headers = dead_letter_record(
            message.key(), message.value(), original, letter
        )
        batches = self._batches
        started = time.perf_counter()
        batches.produce_one(self._dlq_topic, 0, key, value, letter_headers)
        batches.count(self._metrics.dead_letters, reason.value)
        batches.count(self._metrics.commands, "unknown", "malformed")
        if route.awaited:  # someone waits for an answer (the command id is not known)
            reply = Reply(None, None, False, None, rejected.code, error[:1000])
            self._send_reply(route, None, self._codec.encode_reply(reply, validate=False))
        batches.batch.producing += time.perf_counter() - started


def _show(key: bytes | None) -> str:
    if key is None:
        return "(none)"
    return repr(key[:60]) + ("..." if len(key) > 60 else "")
