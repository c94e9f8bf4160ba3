"""The events fold of a restore: one partition's records of the event topic into its
workflows' states (`restore.restore_partitions` reads them from Kafka)."""

from __future__ import annotations

from confluent_kafka import Message

from duroot_stream.domain import DuRootStarted, WorkflowReplay, WorkflowState
from duroot_stream.wire import Codec

ACTIVE_REPLAYS = 1_000  # per partition, see PartitionFold


class PartitionFold:
    """One partition's workflows during a restore.

    The workflows with events coming in are folded by `WorkflowReplay`s (a
    mutable accumulator each, much cheaper per event than `evolve`). Beyond
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
            share = self.shared.setdefault
            started = DuRootStarted(
                share(payload.registry_id, payload.registry_id),
                share(payload.global_root, payload.global_root),
                share(payload.host, payload.host),
                share(payload.host_root, payload.host_root),
            )
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
