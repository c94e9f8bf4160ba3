"""The client library: publish commands and wait for replies (`DuRootClient`),
read results, status, events and the index (`DuRootReader`)."""

from .commands import make_command
from .compare import Comparison, PathChange, Run, by_change, changes, compare_workflows
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
from .index import IndexEntry, runs_of
from .readers import DuRootReader
from .requester import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT_S, MAX_IN_FLIGHT, Begun, DuRootClient
from .results import DuResult, Progress, StoredEvent, WorkflowStatus
from .roots import Root, load_roots

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT_S",
    "MAX_IN_FLIGHT",
    "Begun",
    "CommandRejected",
    "CommandTimeout",
    "Comparison",
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
    "PathChange",
    "Progress",
    "Root",
    "Run",
    "StoredEvent",
    "Unavailable",
    "Uninitialized",
    "VersionConflict",
    "WaitTimeout",
    "WorkflowConflict",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowStatus",
    "by_change",
    "changes",
    "compare_workflows",
    "load_roots",
    "make_command",
    "runs_of",
]
