"""The client library: publish commands and wait for replies (`DuRootClient`),
read results, status, events and the index (`DuRootReader`)."""

from .commands import make_command
from .errors import (
    CommandRejected,
    CommandTimeout,
    ConflictInit,
    ConflictState,
    ConflictStateAdvanced,
    DuRootError,
    InvalidArgument,
    InvalidCommand,
    MalformedCommand,
    Unavailable,
    Uninitialized,
    VersionConflict,
    WaitTimeout,
    WorkflowConflict,
    WorkflowFailed,
    WorkflowNotFound,
)
from .index import IndexEntry
from .readers import DuRootReader
from .requester import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT_S, MAX_IN_FLIGHT, Begun, DuRootClient
from .results import DuResult, Progress, StoredEvent, WorkflowStatus

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT_S",
    "MAX_IN_FLIGHT",
    "Begun",
    "CommandRejected",
    "CommandTimeout",
    "ConflictInit",
    "ConflictState",
    "ConflictStateAdvanced",
    "DuResult",
    "DuRootClient",
    "DuRootError",
    "DuRootReader",
    "IndexEntry",
    "InvalidArgument",
    "InvalidCommand",
    "MalformedCommand",
    "Progress",
    "StoredEvent",
    "Unavailable",
    "Uninitialized",
    "VersionConflict",
    "WaitTimeout",
    "WorkflowConflict",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowStatus",
    "make_command",
]
