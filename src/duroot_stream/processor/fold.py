"""The events fold of a restore: one partition's records of the event topic into its
workflows' states (`restore.restore_partitions` reads them from Kafka), and `feed`,
which hands each record read to its partition's sink. Compiled: both run per record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from confluent_kafka import Message

from duroot_stream.domain import DuRootStarted, DuUpdated, WorkflowReplay, WorkflowState
from duroot_stream.wire import Codec

ACTIVE_REPLAYS = 1_000  # per partition, see PartitionFold


class Sink(Protocol):
    """What takes a partition's records during a restore (a fold, a state read)."""

    def add(self, message: Message, codec: Codec) -> None: ...


def feed(messages: list[Message], sinks: Mapping[int, Sink], codec: Codec) -> list[Message]:
    """Give each record of `messages` to its partition's sink; returns the others
    (partition EOFs and errors), in order."""
    others: list[Message] = []
    for message in messages:
        if message.error() is None:
            sink = sinks[message.partition() or 0]
            if isinstance(sink, PartitionFold):  # compiled: a direct call, not a lookup
                sink.add(message, codec)
            else:
                sink.add(message, codec)
        else:
            others.append(message)
    return others


class _Run:
    """A workflow's replay during a restore and the run of its events not folded yet:
    UPDATED events of the command its last folded event came from. Each of those
    sets only the code, the vid and the seq, so the run's last one stands for all
    (`pending`, folded by `flush`): per event of a run, the workflow id is decoded
    and the command id compared as written, nothing more."""

    __slots__ = ("command", "pending", "replay")

    def __init__(self, replay: WorkflowReplay) -> None:
        self.replay = replay
        self.command = b""  # the last folded event's command id as written (see event_head)
        self.pending: bytes | None = None

    def flush(self, codec: Codec) -> None:
        if self.pending is not None:
            vid, _, seq, command_id, event_type = codec.event_facts(self.pending)
            self.replay.add(event_type, vid, seq, command_id, None)
            self.pending = None


class PartitionFold:
    """One partition's workflows during a restore.

    The workflows with events coming in are folded by `WorkflowReplay`s (a
    mutable accumulator each, much cheaper per event than `evolve`), a run of
    one command's UPDATED events at a time (`_Run`). Beyond
    `ACTIVE_REPLAYS`, the longest-active one is turned into its state, and
    resumed from it should more of its events come: a history's events are
    close together in the topic (one du run), so this is rare, and the
    accumulators of all workflows are never held at once (they would take
    more memory than the states, and leave it fragmented afterwards).
    """

    __slots__ = ("active", "records", "shared", "states")

    def __init__(self) -> None:
        self.states: dict[str, WorkflowState] = {}
        # The registry ids, hosts and roots, each text once (many workflows name the
        # same); not sys.intern's table, which would keep its size after the restore.
        self.shared: dict[str, str] = {}
        self.active: dict[str, _Run] = {}  # oldest activated first
        self.records = 0

    def add(self, message: Message, codec: Codec) -> None:
        self.records += 1
        value = message.value()
        if value is None:  # tombstone of a deleted history: "<workflow-id>/<seq>"
            workflow_id = (message.key() or b"").split(b"/", 1)[0].decode()
            self.active.pop(workflow_id, None)
            self.states.pop(workflow_id, None)
            return
        workflow_id, _, start, end, event_type = codec.event_head(value)
        run = self.active.get(workflow_id) if start else None
        if run is not None and event_type is DuUpdated and value[start:end] == run.command:
            run.pending = value
            return
        vid, workflow_id, seq, command_id, event_type = codec.event_facts(value)
        run = run or self.active.get(workflow_id) or self._activate(workflow_id, codec)
        run.flush(codec)
        started = None
        if event_type is DuRootStarted:
            payload = codec.decode_event(value).payload
            assert isinstance(payload, DuRootStarted)
            share = self.shared.setdefault
            started = DuRootStarted(
                share(payload.registry_id, payload.registry_id),
                share(payload.global_root, payload.global_root),
                share(payload.host, payload.host),
                share(payload.host_root, payload.host_root),
            )
        run.replay.add(event_type, vid, seq, command_id, started)
        run.command = value[start:end] if start else b""

    def _activate(self, workflow_id: str, codec: Codec) -> _Run:
        state = self.states.pop(workflow_id, None)
        replay = WorkflowReplay(workflow_id) if state is None else WorkflowReplay.resume(state)
        run = self.active[workflow_id] = _Run(replay)
        if len(self.active) > ACTIVE_REPLAYS:
            oldest = next(iter(self.active))
            self.states[oldest] = _state(self.active.pop(oldest), codec)
        return run

    def finish(self, codec: Codec) -> dict[str, WorkflowState]:
        for workflow_id, run in self.active.items():
            self.states[workflow_id] = _state(run, codec)
        self.active.clear()
        return self.states


def _state(run: _Run, codec: Codec) -> WorkflowState:
    run.flush(codec)
    return run.replay.state()
