"""A restore's states made again, together, once its reads are over.

A restore makes its states, which live on, among the many objects it drops soon (the
fetched records, the folds' and the state reads' working objects). pymalloc gives
memory back only by whole arenas, and a state left in an arena keeps it all: after a
fold of the events, about 400 B per workflow more than the states themselves
(docs/benchmarks.md). So the states are held in one buffer per partition (a large
`bytes`: malloc's memory, which the restore gives back after, heap.py), all of them dropped, which
frees the arenas they kept, and then made again one after another, filling few
arenas. That costs an encoding and a decoding per workflow (about 2 us compiled),
little beside the records a restore reads per workflow.
"""

from __future__ import annotations

from duroot_stream.domain import WorkflowState
from duroot_stream.wire import decode_states, encode_states

from .collection import hold_collection, release_collection
from .state_store import FoldedStates, Snapshot

Restored = dict[int, tuple[dict[str, WorkflowState], int]]


def compacted(restored: Restored) -> Restored:
    """The same partitions, workflows and counts, each state made anew; `restored` is
    emptied (its states must have no other holder, or their arenas stay)."""
    hold_collection()  # no cycles among states: nothing for the collector to find
    try:
        held = [_held(partition, restored) for partition in list(restored)]
        out: Restored = {}
        shared: dict[str, str] = {}  # the workflows of one root share its texts
        for partition, data, snapshot, events in held:
            states: dict[str, WorkflowState] = (
                {} if snapshot is None else FoldedStates({}, snapshot)
            )
            decode_states(data, states, shared)
            out[partition] = (states, events)
        return out
    finally:
        release_collection()


def _held(partition: int, restored: Restored) -> tuple[int, bytes, Snapshot | None, int]:
    """A partition's states as one buffer, taken out of `restored`."""
    states, events = restored.pop(partition)
    snapshot = states.snapshot if isinstance(states, FoldedStates) else None
    return partition, encode_states(states.values()), snapshot, events
