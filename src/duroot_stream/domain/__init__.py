"""The pure domain core: the du-root workflow's vocabulary and its decider.

- model.py: the values (commands, events, replies), enums, sentinels, id text;
- decider.py: `decide` (validation, version check, the state table), `reply_for`;
- state.py: `WorkflowState` and its fold, `evolve` and `WorkflowReplay`;
- recent.py: the command ids a workflow remembers for dedupe;
- gc.py: the expiry policy (`expiry_command`, `expiry_records`);
- ulid.py: ULID text to and from its value and time.

No Kafka, no Avro, no clock, no randomness, no I/O (a test checks the
imports). Ids and times come in from outside.
"""

from .decider import (
    Accepted,
    Decision,
    IdSource,
    Rejected,
    decide,
    reply_for,
)
from .gc import expiry_command, expiry_records
from .model import (
    CROCKFORD,
    EVENT_EPOCH,
    NO_VC,
    RETRY_NO_VC,
    STATUS_CODE_EXPIRED,
    STATUS_CODE_OK,
    STATUS_MESSAGE_EXPIRED,
    ULID_RE,
    UUID_RE,
    AbortExpired,
    Append,
    Command,
    CommandBody,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    End,
    ErrorCode,
    EventPayload,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexPayload,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    StateCode,
    WorkflowEvent,
    WorkflowIndexEvent,
    event_key,
    new_tuple,
)
from .recent import RECENT_COMMANDS, binary_ids, pack_binary
from .state import (
    WorkflowDeleted,
    WorkflowReplay,
    WorkflowState,
    evolve,
    initial_state,
)
from .ulid import CROCKFORD_PAIRS, decode_ulid, encode_ulid, ulid_time_ms

__all__ = [
    "CROCKFORD",
    "CROCKFORD_PAIRS",
    "EVENT_EPOCH",
    "NO_VC",
    "RECENT_COMMANDS",
    "RETRY_NO_VC",
    "STATUS_CODE_EXPIRED",
    "STATUS_CODE_OK",
    "STATUS_MESSAGE_EXPIRED",
    "ULID_RE",
    "UUID_RE",
    "AbortExpired",
    "Accepted",
    "Append",
    "Command",
    "CommandBody",
    "Commit",
    "Decision",
    "Delete",
    "DuRootCommitted",
    "DuRootCompleted",
    "DuRootStarted",
    "DuUpdated",
    "End",
    "ErrorCode",
    "EventPayload",
    "Fail",
    "IdSource",
    "IndexCompleted",
    "IndexDeleted",
    "IndexPayload",
    "IndexStarted",
    "Init",
    "PathUsage",
    "Rejected",
    "Reply",
    "StateCode",
    "WorkflowDeleted",
    "WorkflowEvent",
    "WorkflowIndexEvent",
    "WorkflowReplay",
    "WorkflowState",
    "binary_ids",
    "decide",
    "decode_ulid",
    "encode_ulid",
    "event_key",
    "evolve",
    "expiry_command",
    "expiry_records",
    "initial_state",
    "new_tuple",
    "pack_binary",
    "reply_for",
    "ulid_time_ms",
]
