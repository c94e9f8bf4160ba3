"""Garbage collection's policy: which workflows to expire, and how.

The processor asks this of every workflow it holds, now and then, and sends
the command it answers through the same table as any other command.
"""

from __future__ import annotations

from .model import AbortExpired, Delete, StateCode
from .state import WorkflowState


def expiry_command(
    state: WorkflowState, now_ms: int, max_active_ms: int, delete_after_ms: int
) -> AbortExpired | Delete | None:
    """What garbage collection should send for this workflow now, if anything.

    `AbortExpired` for a workflow active (INITIALIZED or APPENDING) that
    started more than `max_active_ms` ago; `Delete` for one finished
    (COMPLETED or TERMINATED) that completed more than `delete_after_ms` ago.
    """
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            if now_ms - state.started_at > max_active_ms:
                return AbortExpired()
        case StateCode.COMPLETED | StateCode.TERMINATED:
            if now_ms - state.completed_at > delete_after_ms:
                return Delete()
        case _:
            pass
    return None


def expiry_records(state: WorkflowState, command: AbortExpired | Delete) -> int:
    """About how many records `command` makes for `state` (garbage collection's chunks
    are counted so): AbortExpired its COMPLETED and COMMITTED events and the index
    entry; Delete a tombstone per event, the index DuRootDeleted and its tombstone."""
    if isinstance(command, Delete):
        return state.seq + 2
    return 3
