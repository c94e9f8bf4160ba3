"""The one module that knows the topics: per role a `Topic` bundling its name,
key format and parser, value coder, configs and partitioning (creating and
checking them on a cluster is `topic_admin.py`).

A workflow's partition is `murmur2(workflow id) % N` in `commands`, `events`,
`index` and `state`, with one N for the four: events and states go to the
partition number of the command that caused them. N can never change once the topics hold data
(every workflow would move to another partition, and its history and index
entry would be split), so the check refuses any difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Literal, NamedTuple, TypeVar, overload

from duroot_stream.domain import (
    Command,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
    WorkflowState,
    event_key,
)

from .checks import show, uuid_match
from .codec import Codec
from .codec_error import CodecError
from .state_codec import (
    MARKER_KEY,
    StateMarker,
    decode_state_value,
    encode_marker,
    encode_state,
)

DEFAULT_PARTITIONS = 6
DAY_MS = 24 * 3600 * 1000

K = TypeVar("K")
V = TypeVar("V")


class TopicRole(Enum):
    COMMANDS = "commands"
    EVENTS = "events"
    INDEX = "index"
    REPLIES = "replies"
    DLQ = "commands.dlq"
    STATE = "state"  # internal: the processor's alone


class Partitioning(Enum):
    """How a topic's records are spread over its partitions."""

    BY_WORKFLOW = "murmur2(workflow id) % N, N the same for all such topics, for ever"
    BY_COMMAND = "murmur2(command id) % N, N as created (any count works)"
    SINGLE = "one partition"


class EventKey(NamedTuple):
    """The key of an event: `<workflow-id>/<seq>`, unique per event."""

    workflow_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class KeyFormat(Generic[K]):
    """How a topic's keys are written and read; `read` raises CodecError."""

    description: str
    write: Callable[[K], bytes]
    read: Callable[[bytes | None], K]


@dataclass(frozen=True, slots=True)
class ValueFormat(Generic[V]):
    """How a topic's values are encoded and decoded (tombstones aside)."""

    description: str
    encode: Callable[[Codec, V], bytes]
    decode: Callable[[Codec, bytes | None], V]


def _key_text(raw: bytes | None, what: str) -> str:
    if raw is None:
        raise CodecError(f"a record without a key; expected {what}")
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError:
        raise CodecError(f"key {show(raw)} is not UTF-8; expected {what}") from None


def _read_workflow_key(raw: bytes | None) -> str:
    text = _key_text(raw, "a workflow id")
    if uuid_match(text) is None:
        raise CodecError(f"key {show(text)} is not a workflow id (canonical UUID text)")
    return text


def _read_event_key(raw: bytes | None) -> EventKey:
    text = _key_text(raw, "<workflow-id>/<seq>")
    workflow_id, _, seq = text.partition("/")
    if uuid_match(workflow_id) is None or not (seq.isascii() and seq.isdigit()):
        raise CodecError(f"key {show(text)} is not <workflow-id>/<seq>")
    return EventKey(workflow_id, int(seq))


def _read_state_key(raw: bytes | None) -> str:
    if raw == MARKER_KEY:
        return MARKER_KEY.decode()
    return _read_workflow_key(raw)


def _read_reply_key(raw: bytes | None) -> str:
    return _key_text(raw, "a command id")


def _raw(_codec: Codec, data: bytes | None) -> bytes:
    return data or b""


def _encode_state_value(_codec: Codec, value: WorkflowState | StateMarker) -> bytes:
    return encode_marker(value) if isinstance(value, StateMarker) else encode_state(value)


def _decode_state_value(_codec: Codec, data: bytes | None) -> WorkflowState | StateMarker:
    return decode_state_value(data or b"")


WORKFLOW_KEY: KeyFormat[str] = KeyFormat("workflow id (UUID text)", str.encode, _read_workflow_key)
EVENT_KEY: KeyFormat[EventKey] = KeyFormat(
    "<workflow-id>/<seq>", lambda k: event_key(*k).encode(), _read_event_key
)
REPLY_KEY: KeyFormat[str] = KeyFormat(
    "command id (ULID text); a malformed command's correlation id", str.encode, _read_reply_key
)
# A dead letter keeps the original key; a missing one reads as b"".
STATE_KEY: KeyFormat[str] = KeyFormat(
    f"workflow id (UUID text); {MARKER_KEY.decode()}: the partition's marker",
    str.encode,
    _read_state_key,
)
ORIGINAL_KEY: KeyFormat[bytes] = KeyFormat(
    "the dead-lettered record's key", bytes, lambda raw: raw or b""
)

COMMAND_VALUE: ValueFormat[Command] = ValueFormat(
    "Command (Avro)", Codec.encode_command, Codec.decode_command
)
EVENT_VALUE: ValueFormat[WorkflowEvent] = ValueFormat(
    "WorkflowEvent (Avro); null: a tombstone", Codec.encode_event, Codec.decode_event
)
INDEX_VALUE: ValueFormat[WorkflowIndexEvent] = ValueFormat(
    "WorkflowIndexEvent (Avro); null: a tombstone",
    Codec.encode_index_event,
    Codec.decode_index_event,
)
REPLY_VALUE: ValueFormat[Reply] = ValueFormat(
    "Reply (Avro)", Codec.encode_reply, Codec.decode_reply
)
ORIGINAL_VALUE: ValueFormat[bytes] = ValueFormat("the dead-lettered record's bytes", _raw, _raw)
STATE_VALUE: ValueFormat[WorkflowState | StateMarker] = ValueFormat(
    "WorkflowState (Avro), StateMarker (Avro) for the marker; null: a tombstone",
    _encode_state_value,
    _decode_state_value,
)


@dataclass(frozen=True, slots=True)
class Topic(Generic[K, V]):
    """One topic of a deployment: its name and everything that goes with it."""

    role: TopicRole
    name: str
    key: KeyFormat[K]
    value: ValueFormat[V]
    cleanup_policy: str
    configs: Mapping[str, str]  # besides cleanup.policy
    partitioning: Partitioning

    def key_bytes(self, key: K) -> bytes:
        return self.key.write(key)

    def parse_key(self, raw: bytes | None) -> K:
        """The key of a record of this topic; CodecError if it is not one."""
        return self.key.read(raw)

    def encode(self, codec: Codec, value: V) -> bytes:
        return self.value.encode(codec, value)

    def decode(self, codec: Codec, data: bytes | None) -> V:
        return self.value.decode(codec, data)

    def all_configs(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, **self.configs, **(extra or {})}

    def partitions_for(self, partitions: int) -> int:
        """Its partition count in a deployment created with `partitions`."""
        return 1 if self.partitioning is Partitioning.SINGLE else partitions


class _Spec(NamedTuple):
    key: KeyFormat[Any]
    value: ValueFormat[Any]
    cleanup_policy: str
    configs: Mapping[str, str]
    partitioning: Partitioning


_COMPACTED = {"min.cleanable.dirty.ratio": "0.1"}
# A state record per changed workflow per transaction: the cleaner must keep up so
# that a restore reads about one record per live workflow. It cleans only closed
# segments, so they are small (8 MiB, about 50,000 states) and close at least every
# 10 minutes; 0.1 dirty starts it, so at most about a tenth of the closed ones are stale.
_STATE_CONFIGS = {
    "min.cleanable.dirty.ratio": "0.1",
    "segment.bytes": str(8 * 1024 * 1024),
    "segment.ms": str(10 * 60 * 1000),
}
_SPECS: dict[TopicRole, _Spec] = {
    TopicRole.COMMANDS: _Spec(
        WORKFLOW_KEY,
        COMMAND_VALUE,
        "delete",
        {"retention.ms": str(7 * DAY_MS)},
        Partitioning.BY_WORKFLOW,
    ),
    # Keys are unique per event, so compaction only ever drops tombstoned history.
    TopicRole.EVENTS: _Spec(
        EVENT_KEY, EVENT_VALUE, "compact", _COMPACTED, Partitioning.BY_WORKFLOW
    ),
    TopicRole.INDEX: _Spec(
        WORKFLOW_KEY, INDEX_VALUE, "compact", _COMPACTED, Partitioning.BY_WORKFLOW
    ),
    TopicRole.REPLIES: _Spec(
        REPLY_KEY, REPLY_VALUE, "delete", {"retention.ms": str(DAY_MS)}, Partitioning.BY_COMMAND
    ),
    TopicRole.DLQ: _Spec(
        ORIGINAL_KEY,
        ORIGINAL_VALUE,
        "delete",
        {"retention.ms": str(30 * DAY_MS)},
        Partitioning.SINGLE,
    ),
    TopicRole.STATE: _Spec(
        STATE_KEY, STATE_VALUE, "compact", _STATE_CONFIGS, Partitioning.BY_WORKFLOW
    ),
}


@dataclass(frozen=True)
class Topics:
    """The topics under one prefix (default `duroot.`): names, and `Topic`s."""

    prefix: str

    @property
    def commands(self) -> str:
        return self.name(TopicRole.COMMANDS)

    @property
    def events(self) -> str:
        return self.name(TopicRole.EVENTS)

    @property
    def index(self) -> str:
        return self.name(TopicRole.INDEX)

    @property
    def replies(self) -> str:
        return self.name(TopicRole.REPLIES)

    @property
    def dlq(self) -> str:
        return self.name(TopicRole.DLQ)

    @property
    def state(self) -> str:
        return self.name(TopicRole.STATE)

    def name(self, role: TopicRole) -> str:
        return f"{self.prefix}{role.value}"

    @overload
    def topic(self, role: Literal[TopicRole.COMMANDS]) -> Topic[str, Command]: ...
    @overload
    def topic(self, role: Literal[TopicRole.EVENTS]) -> Topic[EventKey, WorkflowEvent]: ...
    @overload
    def topic(self, role: Literal[TopicRole.INDEX]) -> Topic[str, WorkflowIndexEvent]: ...
    @overload
    def topic(self, role: Literal[TopicRole.REPLIES]) -> Topic[str, Reply]: ...
    @overload
    def topic(self, role: Literal[TopicRole.DLQ]) -> Topic[bytes, bytes]: ...
    @overload
    def topic(self, role: Literal[TopicRole.STATE]) -> Topic[str, WorkflowState | StateMarker]: ...
    @overload
    def topic(self, role: TopicRole) -> Topic[Any, Any]: ...
    def topic(self, role: TopicRole) -> Topic[Any, Any]:
        return Topic(role, self.name(role), *_SPECS[role])

    def all(self) -> tuple[Topic[Any, Any], ...]:
        """The six topics, commands first."""
        return tuple(self.topic(role) for role in TopicRole)
