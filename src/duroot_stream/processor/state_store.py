"""The state topic (`<prefix>state`, compacted, internal): each workflow's state, so that
a restore reads one record per live workflow instead of every event.

Written (`StateChangelog`, by `batch.Batches.commit`) in the transaction of the events
that changed it: at each commit, before the offsets are sent, the state of every
workflow the batch changed (its undo journal's keys), one record per workflow, on the
partition of its events; a deleted workflow gets a tombstone. A partition restored by
folding its events (`FoldedStates`) has all its states written once more, then its
marker (key `MARKER_KEY`, a `StateMarker` with the events' end the fold read to): the
partition's records are complete from then on.

Read (`StateRead`, by `restore.restore_partitions`) from the start of the partition to
its high watermark, last record per key; used only when every check holds, else the
events are folded as before (the events stay the source of truth): a marker, that is
not beyond the events partition's end, every record decodable with the current
schemas (state_codec.py), and the events partition's last record in the state
(`last_event_problem`: a processor that writes no state, of an older version, wrote
after the marker otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Message

from duroot_stream.domain import WorkflowState
from duroot_stream.ids import now_ms
from duroot_stream.wire import (
    MARKER_KEY,
    Codec,
    CodecError,
    StateMarker,
    decode_marker,
    decode_state,
    encode_marker,
    encode_state,
)

log = logging.getLogger("duroot.processor")

# (topic, partition, key, value, headers): as batch.Record
StateRecord = tuple[str, int, bytes | None, bytes | None, None]


@dataclass(frozen=True)
class Snapshot:
    """A partition's snapshot to write: its states, tombstones for the `stale` keys
    (records of the state topic that the fold did not find: a workflow or record
    that should not be there), and the marker with `events_end`."""

    events_end: int
    stale: tuple[bytes, ...] = ()


class FoldedStates(dict[str, WorkflowState]):
    """A partition's workflows folded from its events: their snapshot is due
    (`Workflows.restored` notes it)."""

    __slots__ = ("snapshot",)

    def __init__(self, states: dict[str, WorkflowState], snapshot: Snapshot) -> None:
        super().__init__(states)
        self.snapshot = snapshot


class StateChangelog:
    """The state records of a transaction, on `topic`; `writer` names the instance in
    the markers it writes."""

    def __init__(self, topic: str, writer: str) -> None:
        self.topic = topic
        self.writer = writer

    def changed(
        self,
        changed: Iterable[tuple[int, str]],
        by_partition: Mapping[int, Mapping[str, WorkflowState]],
    ) -> list[StateRecord]:
        """The current state of each changed (partition, workflow id); a tombstone for
        one that is no longer held (deleted). Partitions no longer held are skipped."""
        topic = self.topic
        records: list[StateRecord] = []
        for partition, workflow_id in changed:
            workflows = by_partition.get(partition)
            if workflows is None:
                continue
            state = workflows.get(workflow_id)
            value = None if state is None else encode_state(state)
            records.append((topic, partition, workflow_id.encode(), value, None))
        return records

    def snapshot(
        self,
        partition: int,
        workflows: Mapping[str, WorkflowState],
        snapshot: Snapshot,
        written: set[str],
    ) -> list[StateRecord]:
        """Tombstones for the stale keys, every state of `partition` but those `written`
        already in this transaction, then its marker."""
        topic = self.topic
        records: list[StateRecord] = [
            (topic, partition, key, None, None)
            for key in snapshot.stale
            if key.decode(errors="replace") not in workflows
        ]
        records += [
            (topic, partition, workflow_id.encode(), encode_state(state), None)
            for workflow_id, state in workflows.items()
            if workflow_id not in written
        ]
        marker = StateMarker(snapshot.events_end, self.writer, now_ms())
        records.append((topic, partition, MARKER_KEY, encode_marker(marker), None))
        return records


class StateRead:
    """One state partition read during a restore: the last record per key (decoded at
    the end, so what compaction has not dropped yet costs no decoding)."""

    __slots__ = ("marker", "records", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self.marker: bytes | None = None
        self.records = 0

    def add(self, message: Message, _codec: Codec) -> None:
        self.records += 1
        key = message.key() or b""
        if key == MARKER_KEY:
            self.marker = message.value()
        else:
            self.values[key] = message.value()

    def stale(self, states: Mapping[str, WorkflowState]) -> tuple[bytes, ...]:
        """The keys read with a value that `states` (the fold's) does not hold."""
        return tuple(
            key
            for key, value in self.values.items()
            if value is not None and key.decode(errors="replace") not in states
        )

    def states(self, events_end: int) -> tuple[dict[str, WorkflowState] | None, str, str]:
        """The workflows, or None when they are not to be used; the reason (a metric
        label) and the detail (for the log)."""
        if self.marker is None:
            return None, "no_marker", "the partition has no marker"
        try:
            marker = decode_marker(self.marker)
        except CodecError as exc:
            return None, "undecodable", f"the marker: {exc}"
        if marker.events_end > events_end:
            return (
                None,
                "beyond_events_end",
                f"the marker covers the events up to {marker.events_end}, beyond their end "
                f"{events_end} (the events topic was recreated?)",
            )
        states: dict[str, WorkflowState] = {}
        for key, value in self.values.items():
            if value is None:  # a tombstone: deleted
                continue
            try:
                state = decode_state(value)
            except CodecError as exc:
                return None, "undecodable", f"the state of {key!r}: {exc}"
            if state.workflow_id.encode() != key:
                return None, "undecodable", f"the state under {key!r} is {state.workflow_id}'s"
            states[state.workflow_id] = state
        return states, "", ""


class LastRecord:
    """Keeps the key and value of the last record given (of an events partition)."""

    __slots__ = ("record",)

    def __init__(self) -> None:
        self.record: tuple[bytes, bytes | None] | None = None

    def add(self, message: Message, _codec: Codec) -> None:
        self.record = (message.key() or b"", message.value())


def last_event_problem(
    states: Mapping[str, WorkflowState], key: bytes, value: bytes | None, codec: Codec
) -> str | None:
    """Why `states` cannot be the fold of an events partition whose last record is
    (`key`, `value`), or None: its event must be its workflow's head; after a
    tombstone (a deleted history), the workflow must be gone."""
    workflow_id = key.split(b"/", 1)[0].decode(errors="replace")
    if value is None:
        if workflow_id in states:
            return f"the last event record deletes {workflow_id}, which the state holds"
        return None
    try:
        vid, workflow_id, _, _, _ = codec.event_facts(value)
    except CodecError as exc:
        return f"the last event record {key!r}: {exc}"
    state = states.get(workflow_id)
    if state is None or state.vid != vid:
        head = None if state is None else state.vid
        return (
            f"the last event {vid} of {workflow_id} is not in the state (head {head}): events "
            "were written without their state (by a processor of an older version?)"
        )
    return None
