"""The wire format: the one module that knows bytes.

Values are Avro (schemas in `schemas/*.avsc`) in one of two framings:

- single-object encoding, the default: `C3 01`, the 8-byte CRC-64-AVRO
  fingerprint of the writer schema's Parsing Canonical Form (little-endian),
  then the Avro body;
- the Confluent wire format, when a Schema Registry URL is configured: `00`,
  the 4-byte big-endian schema id, then the Avro body. Schemas are registered
  under subject = the record's full name (e.g. `io.duroot.stream.Command`).

Readers accept both framings, whatever the codec was configured with.

How the bodies are read and written:

- The current schemas are written and read by the small hand-written Avro
  coders below (`_write_*` / `_read_*`), because encoding and decoding run
  per command in the processor's hot path. Measured on an `Append` event:
  fastavro's `schemaless_writer` (parsed schema, tuple-notation union, dict
  built by hand) takes 2-3 times as long as `_write_event`, and its reader
  returns dicts that still have to become model values. Each coder
  implements exactly one schema, pinned by its fingerprint in
  `_CODED_FINGERPRINTS`: the codec refuses to start if a `.avsc` changed and
  its coder did not. The tests check every coder byte for byte against
  fastavro.
- Bodies written with any other schema (a released older version, or
  whatever a registry holds) are read by fastavro, resolving the writer
  schema to the current one by the Avro rules, and written back in the
  current schema for the hand-written reader: one mapping to the model.

To change a schema: edit the `.avsc` (new fields need defaults), update its
coder and fingerprint here, and keep the previous released version in
`schemas/released/<Name>.v<N>.avsc` so old data stays readable.

Logical types are not converted: `issued_at` is milliseconds as an int, as
in the domain model.

Every problem with the bytes raises `CodecError`. Schema Registry I/O
errors (the registry unreachable, HTTP 5xx) are not problems with the
message and propagate unchanged.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any, Generic, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from duroot_stream.domain import (
    AbortExpired,
    Append,
    Command,
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
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
)

__all__ = [
    "EVENT_TYPES",
    "NAMESPACE",
    "Codec",
    "CodecError",
    "EventFacts",
    "EventHeaders",
    "event_headers",
    "parse_event_headers",
    "schemas_dir",
]

NAMESPACE = "io.duroot.stream"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

T = TypeVar("T")


class CodecError(ValueError):
    """Bytes that are not a valid message of the expected type, or a value that
    cannot be encoded. The message says what was wrong."""


# --- schema files ---------------------------------------------------------------


def schemas_dir() -> Path:
    """`schemas/`: inside the installed package (wheel), else the source tree."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "schemas"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "schemas"


# The schema each hand-written coder implements (fastavro's CRC-64-AVRO hex
# of the Parsing Canonical Form, bytes as on the wire).
_CODED_FINGERPRINTS = {
    "Command": "baaf2d0eb39c8e19",
    "WorkflowEvent": "d224334916fd5cac",
    "WorkflowIndexEvent": "a9a9beecf55ddb8f",
    "Reply": "2a52f5b64c0f1603",
}


@dataclass(frozen=True, slots=True)
class _Writer:
    """A writer schema that messages may name (by fingerprint or registry id)."""

    full_name: str  # e.g. io.duroot.stream.Command
    schema: Any  # parsed by fastavro; None: the current schema (hand-written coder)
    label: str  # for messages: "fingerprint 0x…" or "schema id 7"


@dataclass(frozen=True, slots=True)
class _Current:
    """One top-level schema as shipped in `schemas/`."""

    name: str  # Command, WorkflowEvent, WorkflowIndexEvent, Reply
    full_name: str
    text: str  # compact JSON, as registered
    reader: Any  # parsed by fastavro, logical types stripped
    fingerprint: bytes  # 8 bytes, as on the wire


@dataclass(frozen=True, slots=True)
class _Catalog:
    current: dict[str, _Current]  # by name
    writers: dict[bytes, _Writer]  # by fingerprint: current and released schemas

    def writer_for(self, schema: Any, label: str) -> _Writer:
        """The writer for a schema found in a registry."""
        parsed: Any = fastavro.parse_schema(_strip_logical_types(schema))
        fp = _fingerprint(parsed)
        known = self.writers.get(fp)
        if known is not None:
            return known
        full_name = parsed.get("name", "?") if isinstance(parsed, dict) else str(parsed)
        return _Writer(full_name, parsed, label)


def _strip_logical_types(schema: Any) -> Any:
    """A copy without `logicalType`: same bytes, values as the model has them."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@cache
def _catalog() -> _Catalog:
    """Load `schemas/*.avsc` and `schemas/released/*.avsc`, once."""
    root = schemas_dir()
    current: dict[str, _Current] = {}
    writers: dict[bytes, _Writer] = {}
    for name, coded in _CODED_FINGERPRINTS.items():
        path = root / f"{name}.avsc"
        raw = json.loads(path.read_text(encoding="utf-8"))
        reader: Any = fastavro.parse_schema(_strip_logical_types(raw))
        fp = _fingerprint(reader)
        if fp.hex() != coded:
            raise RuntimeError(
                f"{path} (fingerprint {fp.hex()}) is not the schema codec.py's hand-written "
                f"coder implements ({coded}): update _write_/_read_ for {name} and "
                f"_CODED_FINGERPRINTS"
            )
        full_name = reader["name"]
        text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
        current[name] = _Current(name, full_name, text, reader, fp)
        writers[fp] = _Writer(full_name, None, f"fingerprint 0x{fp.hex()}")
    for path in sorted((root / "released").glob("*.avsc")):
        parsed: Any = fastavro.parse_schema(
            _strip_logical_types(json.loads(path.read_text(encoding="utf-8")))
        )
        fp = _fingerprint(parsed)
        writers.setdefault(fp, _Writer(parsed["name"], parsed, f"released {path.name}"))
    return _Catalog(current, writers)


# --- Avro binary: writing --------------------------------------------------------

_BYTE = tuple(bytes((i,)) for i in range(256))
_TAG = tuple(_BYTE[i << 1] for i in range(8))  # union branch i / array count i
_NULL = _TAG[0]  # union branch 0 ("null")
_END = b"\x00"  # end of an array's blocks
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def _long(v: int, field: str) -> bytes:
    """A zig-zag varint."""
    if 0 <= v < 64:  # the common case: one byte
        return _BYTE[v << 1]
    if not _LONG_MIN <= v <= _LONG_MAX:
        raise CodecError(f"{field} {v} is out of range for an Avro long")
    z = (v << 1) ^ (v >> 63)
    if z < 0x80:
        return _BYTE[z]
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    if z < 0x200000:
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
    out = []
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _int(v: int, field: str) -> bytes:
    if not _INT_MIN <= v <= _INT_MAX:
        raise CodecError(f"{field} {v} is out of range for an Avro int")
    return _long(v, field)


def _str(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (_BYTE[n << 1] if n < 64 else _long(n, "string length")) + b


def _opt_str(s: str | None) -> bytes:
    """A ["null", "string"] union."""
    return _NULL if s is None else _TAG[1] + _str(s)


def _write_command(prefix: bytes, c: Command) -> bytes:
    b = c.body
    match b:  # union branches in schema order: Init, Append, Commit, Fail, ...
        case Append():
            body = _TAG[1] + _write_paths(b.paths)
        case Init():
            body = b"".join(
                (_TAG[0], _str(b.registry_id), _str(b.global_root), _str(b.host), _str(b.host_root))
            )
        case Commit():
            body = _TAG[2]
        case Fail():
            body = _TAG[3] + _int(b.code, "Fail.code") + _str(b.message)
        case AbortExpired():
            body = _TAG[4]
        case End():
            body = _TAG[5]
        case Delete():
            body = _TAG[6]
        case _:
            raise CodecError(f"not a command body: {type(b).__name__}")
    return b"".join(
        (
            prefix,
            _str(c.command_id),
            _str(c.workflow_id),
            _str(c.expected_vid),
            _long(c.issued_at, "issued_at"),
            body,
        )
    )


def _write_paths(paths: tuple[PathUsage, ...]) -> bytes:
    """An array of PathUsage, in one block."""
    if not paths:
        return _END
    parts = [_long(len(paths), "array length")]
    for p in paths:
        parts.append(_str(p.path))
        parts.append(_long(p.usage, "PathUsage.usage"))
    parts.append(_END)
    return b"".join(parts)


def _write_event(prefix: bytes, e: WorkflowEvent) -> bytes:
    p = e.payload
    match p:  # DuRootStarted, DuUpdated, DuRootCompleted, DuRootCommitted
        case DuUpdated():
            payload = _TAG[1] + _str(p.path) + _long(p.usage, "DuUpdated.usage")
        case DuRootStarted():
            payload = b"".join(
                (_TAG[0], _str(p.registry_id), _str(p.global_root), _str(p.host), _str(p.host_root))
            )
        case DuRootCompleted():
            payload = _TAG[2] + _int(p.status_code, "status_code") + _str(p.status_message)
        case DuRootCommitted():
            payload = _TAG[3]
        case _:
            raise CodecError(f"not an event payload: {type(p).__name__}")
    return b"".join(
        (
            prefix,
            _str(e.event_id),
            _str(e.parent),
            _str(e.workflow_id),
            _long(e.seq, "seq"),
            _str(e.command_id),
            payload,
        )
    )


def _write_index_event(prefix: bytes, e: WorkflowIndexEvent) -> bytes:
    p = e.payload
    match p:  # index.DuRootStarted, index.DuRootCompleted, index.DuRootDeleted
        case IndexStarted():
            payload = b"".join((_TAG[0], _str(p.global_root), _str(p.host), _str(p.host_root)))
        case IndexCompleted():
            payload = _TAG[1] + _int(p.status_code, "status_code") + _str(p.status_message)
        case IndexDeleted():
            payload = _TAG[2]
        case _:
            raise CodecError(f"not an index payload: {type(p).__name__}")
    return b"".join(
        (
            prefix,
            _str(e.event_id),
            _str(e.registry_id),
            _str(e.workflow_id),
            _str(e.workflow_event_id),
            payload,
        )
    )


# The ErrorCode enum's symbols in schema order (pinned by the fingerprint).
_ERROR_SYMBOLS = (
    "CONFLICT_INIT",
    "CONFLICT_STATE",
    "CONFLICT_STATE_ADVANCED",
    "INVALID_COMMAND",
    "UNINITIALIZED",
    "VERSION_CONFLICT",
    "INVALID_ARGUMENT",
    "MALFORMED",
)
_ERROR_BY_INDEX = tuple(ErrorCode[s] for s in _ERROR_SYMBOLS)
_ERROR_INDEX = {code: _TAG[1] + _long(i, "") for i, code in enumerate(_ERROR_BY_INDEX)}


def _write_reply(prefix: bytes, r: Reply) -> bytes:
    if r.error is None:
        error = _NULL
    else:
        error = _ERROR_INDEX.get(r.error, b"")
        if not error:
            raise CodecError(f"not an ErrorCode: {r.error!r}")
    return b"".join(
        (
            prefix,
            _opt_str(r.command_id),
            _opt_str(r.workflow_id),
            b"\x01" if r.ok else b"\x00",
            _opt_str(r.vid),
            error,
            _str(r.message),
        )
    )


# --- Avro binary: reading ----------------------------------------------------------
#
# Each reader takes the buffer and a position and returns (value, new position).
# Running off the end raises IndexError or _Truncated.


class _Truncated(Exception):
    pass


def _rlong(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise CodecError("varint longer than 10 bytes")
    if z >> 64:
        raise CodecError("varint out of range for an Avro long")
    return (z >> 1) ^ -(z & 1), pos


def _rint(buf: bytes, pos: int) -> tuple[int, int]:
    v, pos = _rlong(buf, pos)
    if not _INT_MIN <= v <= _INT_MAX:
        raise CodecError(f"{v} is out of range for an Avro int")
    return v, pos


def _rstr(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    if n < 0x80 and not n & 1:  # the common case: a one-byte length, 0 to 63
        n >>= 1
        pos += 1
    else:
        n, pos = _rlong(buf, pos)
        if n < 0:
            raise CodecError(f"negative string length {n}")
    end = pos + n
    if end > len(buf):
        raise _Truncated
    return buf[pos:end].decode(), end


def _skip_str(buf: bytes, pos: int) -> int:
    n = buf[pos]
    if n < 0x80 and not n & 1:
        return pos + 1 + (n >> 1)
    n, pos = _rlong(buf, pos)
    if n < 0:
        raise CodecError(f"negative string length {n}")
    return pos + n


def _ropt_str(buf: bytes, pos: int, field: str) -> tuple[str | None, int]:
    branch, pos = _rlong(buf, pos)
    if branch == 0:
        return None, pos
    if branch == 1:
        return _rstr(buf, pos)
    raise _bad_branch(field, branch)


def _bad_branch(field: str, branch: int) -> CodecError:
    return CodecError(f"invalid union branch {branch} in {field}")


# Bodies without fields: one shared instance each (they are frozen).
_COMMIT, _ABORT_EXPIRED, _END_CMD, _DELETE = Commit(), AbortExpired(), End(), Delete()
_COMMITTED, _INDEX_DELETED = DuRootCommitted(), IndexDeleted()


def _read_command(buf: bytes, pos: int) -> tuple[Command, int]:
    command_id, pos = _rstr(buf, pos)
    workflow_id, pos = _rstr(buf, pos)
    expected_vid, pos = _rstr(buf, pos)
    issued_at, pos = _rlong(buf, pos)
    branch, pos = _rlong(buf, pos)
    body: Init | Append | Commit | Fail | AbortExpired | End | Delete
    if branch == 1:
        paths, pos = _read_paths(buf, pos)
        body = Append(paths)
    elif branch == 0:
        registry_id, global_root, host, host_root, pos = _read_root(buf, pos)
        body = Init(registry_id, global_root, host, host_root)
    elif branch == 2:
        body = _COMMIT
    elif branch == 3:
        code, pos = _rint(buf, pos)
        message, pos = _rstr(buf, pos)
        body = Fail(code, message)
    elif branch == 4:
        body = _ABORT_EXPIRED
    elif branch == 5:
        body = _END_CMD
    elif branch == 6:
        body = _DELETE
    else:
        raise _bad_branch("Command.command", branch)
    return Command(command_id, workflow_id, expected_vid, issued_at, body), pos


def _read_root(buf: bytes, pos: int) -> tuple[str, str, str, str, int]:
    """registry_id, global_root, host, host_root of Init or DuRootStarted.

    Interned: many workflows name the same registry, host and root (a root is
    du'ed again and again), and the processor holds one state per workflow.
    """
    registry_id, pos = _rstr(buf, pos)
    global_root, pos = _rstr(buf, pos)
    host, pos = _rstr(buf, pos)
    host_root, pos = _rstr(buf, pos)
    intern = sys.intern
    return intern(registry_id), intern(global_root), intern(host), intern(host_root), pos


def _read_paths(buf: bytes, pos: int) -> tuple[tuple[PathUsage, ...], int]:
    items: list[PathUsage] = []
    while True:
        n, pos = _rlong(buf, pos)
        if n == 0:
            return tuple(items), pos
        if n < 0:  # a block with its size in bytes; the size is not needed
            n = -n
            _, pos = _rlong(buf, pos)
        if 2 * n > len(buf) - pos:  # each PathUsage takes at least 2 bytes
            raise _Truncated
        for _ in range(n):
            path, pos = _rstr(buf, pos)
            usage, pos = _rlong(buf, pos)
            items.append(PathUsage(path, usage))


def _read_event(buf: bytes, pos: int) -> tuple[WorkflowEvent, int]:
    event_id, pos = _rstr(buf, pos)
    parent, pos = _rstr(buf, pos)
    workflow_id, pos = _rstr(buf, pos)
    seq, pos = _rlong(buf, pos)
    command_id, pos = _rstr(buf, pos)
    branch, pos = _rlong(buf, pos)
    payload: DuRootStarted | DuUpdated | DuRootCompleted | DuRootCommitted
    if branch == 1:
        path, pos = _rstr(buf, pos)
        usage, pos = _rlong(buf, pos)
        payload = DuUpdated(path, usage)
    elif branch == 0:
        registry_id, global_root, host, host_root, pos = _read_root(buf, pos)
        payload = DuRootStarted(registry_id, global_root, host, host_root)
    elif branch == 2:
        code, pos = _rint(buf, pos)
        message, pos = _rstr(buf, pos)
        payload = DuRootCompleted(code, message)
    elif branch == 3:
        payload = _COMMITTED
    else:
        raise _bad_branch("WorkflowEvent.payload", branch)
    return WorkflowEvent(event_id, parent, workflow_id, seq, command_id, payload), pos


# (event_id, workflow_id, seq, command_id, payload type): see Codec.event_facts.
EventFacts = tuple[str, str, int, str, type[EventPayload]]
_PAYLOAD_TYPES: tuple[type[EventPayload], ...] = (
    DuRootStarted,
    DuUpdated,
    DuRootCompleted,
    DuRootCommitted,
)  # union branches in schema order


# Avro string lengths (zig-zag varints, one byte each) of a ULID and a UUID text.
_ULID_LEN, _UUID_LEN = 26 << 1, 36 << 1


def _read_event_facts(buf: bytes, pos: int) -> EventFacts:
    if buf[pos] == _ULID_LEN and buf[pos + 27] == _ULID_LEN and buf[pos + 54] == _UUID_LEN:
        # The common layout, read by position: event id and parent (ULIDs), then
        # the workflow id (a UUID); the parent is skipped, not decoded.
        event_id = buf[pos + 1 : pos + 27].decode()
        workflow_id = buf[pos + 55 : pos + 91].decode()
        pos += 91
    else:
        event_id, pos = _rstr(buf, pos)
        pos = _skip_str(buf, pos)  # parent
        workflow_id, pos = _rstr(buf, pos)
    seq, pos = _rlong(buf, pos)
    command_id, pos = _rstr(buf, pos)
    branch = buf[pos]  # a one-byte varint: 0, 2, 4 or 6
    if branch & 1 or branch >= 2 * len(_PAYLOAD_TYPES):
        raise _bad_branch("WorkflowEvent.payload", branch)
    return event_id, workflow_id, seq, command_id, _PAYLOAD_TYPES[branch >> 1]


def _read_index_event(buf: bytes, pos: int) -> tuple[WorkflowIndexEvent, int]:
    event_id, pos = _rstr(buf, pos)
    registry_id, pos = _rstr(buf, pos)
    workflow_id, pos = _rstr(buf, pos)
    workflow_event_id, pos = _rstr(buf, pos)
    branch, pos = _rlong(buf, pos)
    payload: IndexStarted | IndexCompleted | IndexDeleted
    if branch == 0:
        global_root, pos = _rstr(buf, pos)
        host, pos = _rstr(buf, pos)
        host_root, pos = _rstr(buf, pos)
        payload = IndexStarted(global_root, host, host_root)
    elif branch == 1:
        code, pos = _rint(buf, pos)
        message, pos = _rstr(buf, pos)
        payload = IndexCompleted(code, message)
    elif branch == 2:
        payload = _INDEX_DELETED
    else:
        raise _bad_branch("WorkflowIndexEvent.payload", branch)
    return WorkflowIndexEvent(event_id, registry_id, workflow_id, workflow_event_id, payload), pos


def _read_reply(buf: bytes, pos: int) -> tuple[Reply, int]:
    command_id, pos = _ropt_str(buf, pos, "Reply.command_id")
    workflow_id, pos = _ropt_str(buf, pos, "Reply.workflow_id")
    ok_byte = buf[pos]
    if ok_byte > 1:
        raise CodecError(f"invalid boolean byte 0x{ok_byte:02x} in Reply.ok")
    vid, pos = _ropt_str(buf, pos + 1, "Reply.vid")
    branch, pos = _rlong(buf, pos)
    error: ErrorCode | None = None
    if branch == 1:
        index, pos = _rlong(buf, pos)
        if not 0 <= index < len(_ERROR_BY_INDEX):
            raise CodecError(f"invalid ErrorCode index {index} in Reply.error")
        error = _ERROR_BY_INDEX[index]
    elif branch != 0:
        raise _bad_branch("Reply.error", branch)
    message, pos = _rstr(buf, pos)
    return Reply(command_id, workflow_id, ok_byte == 1, vid, error, message), pos


# --- id checks ---------------------------------------------------------------------

_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")  # Crockford base32, canonical
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ulid_match = _ULID_RE.fullmatch
_uuid_match = _UUID_RE.fullmatch


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _ulid(field: str, v: str) -> None:
    if not isinstance(v, str) or _ulid_match(v) is None:
        raise CodecError(f"invalid ULID text in {field}: {_show(v)}")


def _uuid(field: str, v: str) -> None:
    if not isinstance(v, str) or _uuid_match(v) is None:
        raise CodecError(f"invalid UUID text in {field}: {_show(v)}")


# Each check is one fast test of all fields; only when it fails (or meets a
# value of the wrong type) do the field-by-field checks find what to report.


def _check_command(c: Command) -> None:
    try:
        if (
            _ulid_match(c.command_id)
            and _uuid_match(c.workflow_id)
            and _ulid_match(c.expected_vid)
            and (type(c.body) is not Init or _uuid_match(c.body.registry_id))
        ):
            return
    except TypeError:
        pass
    _ulid("command_id", c.command_id)
    _uuid("workflow_id", c.workflow_id)
    _ulid("expected_vid", c.expected_vid)
    if isinstance(c.body, Init):
        _uuid("registry_id", c.body.registry_id)


def _check_event(e: WorkflowEvent) -> None:
    try:
        if (
            _ulid_match(e.event_id)
            and _ulid_match(e.parent)
            and _uuid_match(e.workflow_id)
            and _ulid_match(e.command_id)
            and e.seq >= 0
            and (type(e.payload) is not DuRootStarted or _uuid_match(e.payload.registry_id))
        ):
            return
    except TypeError:
        pass
    _ulid("event_id", e.event_id)
    _ulid("parent", e.parent)
    _uuid("workflow_id", e.workflow_id)
    _ulid("command_id", e.command_id)
    if not isinstance(e.seq, int) or e.seq < 0:
        raise CodecError(f"invalid seq {_show(e.seq)}")
    if isinstance(e.payload, DuRootStarted):
        _uuid("registry_id", e.payload.registry_id)


def _check_index_event(e: WorkflowIndexEvent) -> None:
    try:
        if (
            _ulid_match(e.event_id)
            and _uuid_match(e.registry_id)
            and _uuid_match(e.workflow_id)
            and _ulid_match(e.workflow_event_id)
        ):
            return
    except TypeError:
        pass
    _ulid("event_id", e.event_id)
    _uuid("registry_id", e.registry_id)
    _uuid("workflow_id", e.workflow_id)
    _ulid("workflow_event_id", e.workflow_event_id)


def _check_reply(r: Reply) -> None:
    if r.command_id is not None:
        _ulid("command_id", r.command_id)
    if r.workflow_id is not None:
        _uuid("workflow_id", r.workflow_id)
    if r.vid is not None:
        _ulid("vid", r.vid)


# --- the codec -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Coder(Generic[T]):
    """How one top-level record is checked, written and read."""

    name: str
    check: Callable[[T], None]
    write: Callable[[bytes, T], bytes]  # (prefix, value) -> message
    read: Callable[[bytes, int], tuple[T, int]]  # (body, position) -> value, end


_COMMAND = _Coder("Command", _check_command, _write_command, _read_command)
_EVENT = _Coder("WorkflowEvent", _check_event, _write_event, _read_event)
_INDEX_EVENT = _Coder(
    "WorkflowIndexEvent", _check_index_event, _write_index_event, _read_index_event
)
_REPLY = _Coder("Reply", _check_reply, _write_reply, _read_reply)

# Errors a model value of the wrong shape causes while writing.
_WRITE_ERRORS = (TypeError, AttributeError, UnicodeEncodeError)

# Registry clients by URL, shared by all codecs in the process (so that codecs
# on one "mock://" URL see the same schemas, as they would on a real registry).
_REGISTRY_CLIENTS: dict[str, Any] = {}


def _registry_client(url: str) -> Any:
    client = _REGISTRY_CLIENTS.get(url)
    if client is None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        # new_client: a MockSchemaRegistryClient for "mock://…" URLs.
        client = SchemaRegistryClient.new_client({"url": url})
        _REGISTRY_CLIENTS[url] = client
    return client


class Codec:
    """Encodes and decodes the four message types.

    `schema_registry_url=None`: write Avro single-object encoding. A URL
    (including `mock://…`): write the Confluent wire format, registering the
    schemas on first use. Decoding accepts both framings either way; the
    Confluent one needs a registry.
    """

    def __init__(self, schema_registry_url: str | None = None) -> None:
        self._catalog = _catalog()
        self._registry: Any = None
        # Framing prefix by record name; with a registry, filled on first use.
        self._prefix: dict[str, bytes] = {}
        # Writer schemas by registry id, fetched on first sight.
        self._by_id: dict[int, _Writer] = {}
        if schema_registry_url is None:
            for name, current in self._catalog.current.items():
                self._prefix[name] = SINGLE_OBJECT_MAGIC + current.fingerprint
        else:
            self._registry = _registry_client(schema_registry_url)
        # What a message in the current schema and single-object framing starts
        # with, by record name: the common case of `_writer`, and what
        # `event_facts` reads in place (whatever framing the codec writes).
        self._current: dict[str, tuple[bytes, _Writer]] = {
            name: (SINGLE_OBJECT_MAGIC + c.fingerprint, self._catalog.writers[c.fingerprint])
            for name, c in self._catalog.current.items()
        }
        self._event_prefix = self._current["WorkflowEvent"][0]

    # -- public API

    def encode_command(self, c: Command) -> bytes:
        return self._encode(_COMMAND, c)

    def decode_command(self, data: bytes | None) -> Command:
        return self._decode(_COMMAND, data)

    def encode_event(self, e: WorkflowEvent, *, validate: bool = True) -> bytes:
        """`validate=False` skips the id checks, for events made by `decide` from
        a decoded (so checked) command and the processor's own ULIDs."""
        return self._encode(_EVENT, e, validate)

    def decode_event(self, data: bytes | None) -> WorkflowEvent:
        return self._decode(_EVENT, data)

    def encode_index_event(self, e: WorkflowIndexEvent, *, validate: bool = True) -> bytes:
        return self._encode(_INDEX_EVENT, e, validate)

    def decode_index_event(self, data: bytes | None) -> WorkflowIndexEvent:
        return self._decode(_INDEX_EVENT, data)

    def encode_reply(self, r: Reply, *, validate: bool = True) -> bytes:
        return self._encode(_REPLY, r, validate)

    def decode_reply(self, data: bytes | None) -> Reply:
        return self._decode(_REPLY, data)

    def event_facts(self, data: bytes) -> EventFacts:
        """What a restore needs of an event, read from the first fields of its body:
        (event_id, workflow_id, seq, command_id, payload type); the payload itself
        is not decoded. Bodies in the current schema and single-object framing
        are read in place and, unlike `decode_event`, without the id checks (the
        restore trusts its own topic); any other is decoded in full."""
        if data.startswith(self._event_prefix):
            try:
                return _read_event_facts(data, len(self._event_prefix))
            except (IndexError, _Truncated, UnicodeDecodeError):
                raise CodecError("truncated or invalid Avro body for WorkflowEvent") from None
        e = self.decode_event(data)
        return e.event_id, e.workflow_id, e.seq, e.command_id, type(e.payload)

    # -- encoding

    def _encode(self, coder: _Coder[T], value: T, validate: bool = True) -> bytes:
        prefix = self._prefix.get(coder.name) or self._register(coder.name)
        try:
            if validate:
                coder.check(value)
            return coder.write(prefix, value)
        except _WRITE_ERRORS as e:
            raise CodecError(f"cannot encode {coder.name}: {e}") from e
        except CodecError as e:
            raise CodecError(f"cannot encode {coder.name}: {e}") from None

    def _register(self, name: str) -> bytes:
        """Register the current schema (Confluent framing); its prefix."""
        from confluent_kafka.schema_registry import Schema

        current = self._catalog.current[name]
        schema_id = self._registry.register_schema(current.full_name, Schema(current.text, "AVRO"))
        prefix = CONFLUENT_MAGIC + int(schema_id).to_bytes(4, "big")
        self._by_id[schema_id] = self._catalog.writers[current.fingerprint]
        self._prefix[name] = prefix
        return prefix

    # -- decoding

    def _decode(self, coder: _Coder[T], data: bytes | None) -> T:
        if not data:
            raise CodecError("empty message" if data is not None else "empty message (a tombstone)")
        if type(data) is not bytes:
            data = bytes(data)
        writer, pos = self._writer(coder.name, data)
        try:
            if writer.schema is None:
                value, end = coder.read(data, pos)
            else:
                value, end = coder.read(self._resolve(coder.name, writer, data, pos), 0)
        except (IndexError, _Truncated):
            raise CodecError(f"truncated Avro body for {coder.name}") from None
        except UnicodeDecodeError as e:
            raise CodecError(f"invalid UTF-8 in the Avro body of {coder.name}: {e}") from None
        except CodecError as e:
            raise CodecError(f"invalid Avro body for {coder.name}: {e}") from None
        if writer.schema is None and end != len(data):
            raise CodecError(
                f"{len(data) - end} trailing bytes after the Avro body of {coder.name}"
            )
        coder.check(value)
        return value

    def _writer(self, name: str, data: bytes) -> tuple[_Writer, int]:
        """The writer schema named by the framing, and where the body starts."""
        prefix, current = self._current[name]
        if data.startswith(prefix):
            return current, len(prefix)
        magic = data[0]
        writer: _Writer | None
        if magic == 0xC3:
            if len(data) < 10:
                raise CodecError(f"truncated single-object header for {name}")
            if data[1] != 0x01:
                raise CodecError(f"bad single-object marker 0xc3 0x{data[1]:02x} for {name}")
            fp = data[2:10]
            writer = self._catalog.writers.get(fp)
            if writer is None:
                raise CodecError(f"unknown schema fingerprint 0x{fp.hex()} for {name}")
            pos = 10
        elif magic == 0x00:
            if len(data) < 5:
                raise CodecError(f"truncated Confluent header for {name}")
            if self._registry is None:
                raise CodecError("Confluent-framed message but no schema registry configured")
            schema_id = int.from_bytes(data[1:5], "big")
            writer = self._by_id.get(schema_id) or self._fetch(schema_id)
            pos = 5
        else:
            raise CodecError(
                f"not a framed Avro message: first byte 0x{magic:02x} "
                f"(expected 0xc3 single-object or 0x00 Confluent) for {name}"
            )
        if writer.full_name != self._catalog.current[name].full_name:
            raise CodecError(f"not a {name}: written with schema {writer.full_name}")
        return writer, pos

    def _fetch(self, schema_id: int) -> _Writer:
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            registered = self._registry.get_schema(schema_id)
        except SchemaRegistryError as e:
            if e.http_status_code == 404:
                raise CodecError(f"unknown schema id {schema_id}") from None
            raise
        try:
            writer = self._catalog.writer_for(
                json.loads(registered.schema_str), f"schema id {schema_id}"
            )
        except Exception as e:  # any JSON or fastavro complaint about the schema
            raise CodecError(f"unreadable writer schema id {schema_id}: {e}") from e
        self._by_id[schema_id] = writer
        return writer

    def _resolve(self, name: str, writer: _Writer, data: bytes, pos: int) -> bytes:
        """The body rewritten in the current schema: fastavro reads it, resolving
        the writer schema to the current one, and writes it back."""
        reader = self._catalog.current[name].reader
        fo = BytesIO(data)
        fo.seek(pos)
        try:
            record = fastavro.schemaless_reader(fo, writer.schema, reader, return_record_name=True)
            out = BytesIO()
            fastavro.schemaless_writer(out, reader, record)
        except (EOFError, StopIteration):
            raise _Truncated from None
        except Exception as e:  # fastavro's resolution and data errors
            raise CodecError(f"cannot read it as written with {writer.label}: {e}") from e
        if fo.tell() != len(data):
            raise CodecError(f"{len(data) - fo.tell()} trailing bytes after the Avro body")
        return out.getvalue()


# --- event headers -----------------------------------------------------------------

EVENT_TYPES: dict[type, str] = {
    DuRootStarted: "STARTED",
    DuUpdated: "UPDATED",
    DuRootCompleted: "COMPLETED",
    DuRootCommitted: "COMMITTED",
}
_EVENT_TYPE_BYTES = {cls: name.encode() for cls, name in EVENT_TYPES.items()}
_EVENT_TYPE_NAMES = frozenset(EVENT_TYPES.values())
_HEADER_NAMES = ("event-type", "workflow-id", "vid", "parent", "seq", "command-id")


@dataclass(frozen=True, slots=True)
class EventHeaders:
    """An event's Kafka headers: enough to rebuild state and route it unread."""

    event_type: str  # "STARTED" | "UPDATED" | "COMPLETED" | "COMMITTED"
    workflow_id: str
    vid: str  # = the event's event_id
    parent: str
    seq: int
    command_id: str


def event_headers(e: WorkflowEvent) -> list[tuple[str, bytes]]:
    """The Kafka headers of an event (UTF-8 values, `seq` in decimal)."""
    event_type = _EVENT_TYPE_BYTES.get(type(e.payload))
    if event_type is None:
        raise CodecError(f"not an event payload: {type(e.payload).__name__}")
    return [
        ("event-type", event_type),
        ("workflow-id", e.workflow_id.encode()),
        ("vid", e.event_id.encode()),
        ("parent", e.parent.encode()),
        ("seq", str(e.seq).encode()),
        ("command-id", e.command_id.encode()),
    ]


def parse_event_headers(headers: list[tuple[str, bytes]] | None) -> EventHeaders:
    """Read an event's headers (others are ignored; of repeated ones the last
    counts). Raises CodecError naming a missing or bad header."""
    found: dict[str, str] = {}
    for key, raw in headers or ():
        if key not in _HEADER_NAMES:
            continue
        if raw is None:
            raise CodecError(f"event header {key!r} has no value")
        try:
            found[key] = raw if isinstance(raw, str) else bytes(raw).decode()
        except UnicodeDecodeError:
            raise CodecError(f"event header {key!r} is not UTF-8: {_show(raw)}") from None
    missing = [name for name in _HEADER_NAMES if name not in found]
    if missing:
        raise CodecError(f"missing event header {missing[0]!r}")

    event_type = found["event-type"]
    if event_type not in _EVENT_TYPE_NAMES:
        raise CodecError(f"bad event header 'event-type': {_show(event_type)}")
    seq = found["seq"]
    if not (seq.isascii() and seq.isdigit()):
        raise CodecError(f"bad event header 'seq': {_show(seq)} is not a decimal number")
    for name, check in (
        ("workflow-id", _uuid_match),
        ("vid", _ulid_match),
        ("parent", _ulid_match),
        ("command-id", _ulid_match),
    ):
        if check(found[name]) is None:
            raise CodecError(f"bad event header {name!r}: {_show(found[name])}")
    return EventHeaders(
        event_type=event_type,
        workflow_id=found["workflow-id"],
        vid=found["vid"],
        parent=found["parent"],
        seq=int(seq),
        command_id=found["command-id"],
    )
