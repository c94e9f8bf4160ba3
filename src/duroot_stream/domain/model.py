"""The du-root workflow's vocabulary: states, commands, events, replies.

Pure values (frozen dataclasses; NamedTuples for the values made once per path;
enums). Nothing here knows Kafka, Avro, the clock or randomness; ids and times
come in from outside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final, NamedTuple

# Sentinel vids (26-character ULID text), as in nog's `events` package.
# The one rule for id text, everywhere: a UUID in canonical (lower-case, hyphenated)
# text, a ULID in canonical Crockford base32 (upper case, at most 2^128 - 1).
CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ULID_RE: Final = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")

EVENT_EPOCH: Final = "00000000000000000000000000"  # the vid of an empty history
NO_VC: Final = "00000000000000000000000001"  # expected vid: no version check
RETRY_NO_VC: Final = "00000000000000000000000002"  # expected vid: no check; a retry

STATUS_CODE_OK: Final = 0
STATUS_CODE_EXPIRED: Final = 104  # nog's StatusCodeExpired
STATUS_MESSAGE_EXPIRED: Final = "expired"


class StateCode(IntEnum):
    """nog's `durootwf.StateCode`, same order and values."""

    UNINITIALIZED = 0
    INITIALIZED = 1
    APPENDING = 2
    COMPLETED = 3
    TERMINATED = 4


class ErrorCode(Enum):
    """Why a command was rejected (the Avro enum `ErrorCode`)."""

    CONFLICT_INIT = "CONFLICT_INIT"
    CONFLICT_STATE = "CONFLICT_STATE"
    CONFLICT_STATE_ADVANCED = "CONFLICT_STATE_ADVANCED"
    INVALID_COMMAND = "INVALID_COMMAND"
    UNINITIALIZED = "UNINITIALIZED"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    MALFORMED = "MALFORMED"


# --- commands -----------------------------------------------------------------


# The values made per command or per path (PathUsage, Append, Command, Reply) write their
# own __init__ over Final fields, instead of a frozen dataclass's: the compiled build then
# makes them natively (it keeps a generated __init__ as Python, which sets each field
# through object.__setattr__, about four times the cost). Still dataclasses for equality,
# hashing, repr, `replace` and `fields`; read-only in the compiled build, and to mypy.


@dataclass(init=False, unsafe_hash=True)
class PathUsage:
    path: Final[str]
    usage: Final[int]  # bytes

    def __init__(self, path: str, usage: int) -> None:
        self.path = path
        self.usage = usage


@dataclass(frozen=True, slots=True)
class Init:
    registry_id: str  # UUID text
    global_root: str
    host: str
    host_root: str


@dataclass(init=False, unsafe_hash=True)
class Append:
    paths: Final[tuple[PathUsage, ...]]

    def __init__(self, paths: tuple[PathUsage, ...]) -> None:
        self.paths = paths


@dataclass(frozen=True, slots=True)
class Commit:
    pass


@dataclass(frozen=True, slots=True)
class Fail:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class AbortExpired:
    pass


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Delete:
    pass


CommandBody = Init | Append | Commit | Fail | AbortExpired | End | Delete


@dataclass(init=False, unsafe_hash=True)
class Command:
    command_id: Final[str]  # ULID text, chosen by the sender
    workflow_id: Final[str]  # UUID text
    expected_vid: Final[str]  # a real vid, NO_VC or RETRY_NO_VC
    issued_at: Final[int]  # ms since the Unix epoch
    body: Final[CommandBody]

    def __init__(
        self,
        command_id: str,
        workflow_id: str,
        expected_vid: str,
        issued_at: int,
        body: CommandBody,
    ) -> None:
        self.command_id = command_id
        self.workflow_id = workflow_id
        self.expected_vid = expected_vid
        self.issued_at = issued_at
        self.body = body


# --- workflow events ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DuRootStarted:
    registry_id: str
    global_root: str
    host: str
    host_root: str


class DuUpdated(NamedTuple):
    """One du line (NamedTuple, as `WorkflowEvent`: one per path)."""

    path: str
    usage: int


@dataclass(frozen=True, slots=True)
class DuRootCompleted:
    status_code: int
    status_message: str


@dataclass(frozen=True, slots=True)
class DuRootCommitted:
    pass


EventPayload = DuRootStarted | DuUpdated | DuRootCompleted | DuRootCommitted


class WorkflowEvent(NamedTuple):
    """A NamedTuple, not a frozen dataclass: one is made per path appended, and a
    frozen dataclass sets each field through object.__setattr__ (about three
    times the cost for these six)."""

    event_id: str  # the vid after this event (ULID text)
    parent: str  # the vid before it
    workflow_id: str
    seq: int  # 0, 1, 2, ... within the workflow's history
    command_id: str  # the command that caused it
    payload: EventPayload

    @property
    def key(self) -> str:
        return event_key(self.workflow_id, self.seq)


# Make a DuUpdated or a WorkflowEvent from the tuple of its fields, where one is made per
# path: tuple.__new__ is C, a NamedTuple's own __new__ a Python function (in either build).
new_tuple: Final = tuple.__new__


def event_key(workflow_id: str, seq: int) -> str:
    """The events topic key: `<workflow-id>/<seq>`, unique per event."""
    return f"{workflow_id}/{seq}"


# --- index events -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexStarted:
    global_root: str
    host: str
    host_root: str


@dataclass(frozen=True, slots=True)
class IndexCompleted:
    status_code: int
    status_message: str


@dataclass(frozen=True, slots=True)
class IndexDeleted:
    pass


IndexPayload = IndexStarted | IndexCompleted | IndexDeleted


@dataclass(frozen=True, slots=True)
class WorkflowIndexEvent:
    event_id: str  # ULID of this index event
    registry_id: str
    workflow_id: str
    workflow_event_id: str  # vid of the workflow event it mirrors
    payload: IndexPayload


# --- replies ------------------------------------------------------------------


@dataclass(init=False, unsafe_hash=True)
class Reply:
    command_id: Final[str | None]  # None when a malformed input did not reveal it
    workflow_id: Final[str | None]
    ok: Final[bool]
    vid: Final[str | None]  # head after the command; None on error
    error: Final[ErrorCode | None]
    message: Final[str]

    def __init__(
        self,
        command_id: str | None,
        workflow_id: str | None,
        ok: bool,
        vid: str | None,
        error: ErrorCode | None,
        message: str = "",
    ) -> None:
        self.command_id = command_id
        self.workflow_id = workflow_id
        self.ok = ok
        self.vid = vid
        self.error = error
        self.message = message
