"""The wire format's framing and the codec of the four message types.

Values are Avro (schemas in `schemas/*.avsc`, see `schemas.py`) in one of two
framings:

- single-object encoding, the default: `C3 01`, the 8-byte CRC-64-AVRO
  fingerprint of the writer schema's Parsing Canonical Form (little-endian),
  then the Avro body;
- the Confluent wire format, when a Schema Registry URL is configured: `00`,
  the 4-byte big-endian schema id, then the Avro body. Schemas are registered
  under subject = the record's full name (e.g. `io.duroot.stream.Command`).

Readers accept both framings, whatever the codec was configured with.

Bodies in the current schemas are written and read by the hand-written coders
of `avro.py` (the hot path). Bodies written with any other schema (a released
older version, or whatever a registry holds) are read by fastavro, resolving
the writer schema to the current one by the Avro rules, and written back in
the current schema for the hand-written reader: one mapping to the model.

Every problem with the bytes raises `CodecError`. Schema Registry I/O
errors (the registry unreachable, HTTP 5xx) are not problems with the
message and propagate unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any, Final, Generic, TypeVar

import fastavro

from duroot_stream.domain import Command, DuUpdated, Reply, WorkflowEvent, WorkflowIndexEvent

from .avro import write_command, write_index_event, write_reply
from .avro_readers import (
    EventFacts,
    EventHead,
    read_command,
    read_event,
    read_event_facts,
    read_event_head,
    read_index_event,
    read_reply,
)
from .avro_walk import check_indices
from .binary import Truncated
from .checks import check_command, check_event, check_index_event, check_reply
from .codec_error import CodecError
from .event_records import EventRecord, event_records
from .schemas import Writer, catalog, registry_client

__all__ = ["Codec"]

# What the decoders take: a bytearray or memoryview is copied to bytes first.
Data = bytes | bytearray | memoryview | None

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = b"\x00"

T = TypeVar("T")


class _Coder(Generic[T]):
    """How one top-level record is checked, written and read. A plain class: mypyc
    compiles it as a native one (a generic frozen dataclass with slots it cannot)."""

    __slots__ = ("check", "name", "read", "write")

    def __init__(
        self,
        name: str,
        check: Callable[[T], None],
        write: Callable[[bytes, T], bytes],  # (prefix, value) -> message
        read: Callable[[bytes, int], tuple[T, int]],  # (body, position) -> value, end
    ) -> None:
        self.name: Final = name
        self.check: Final = check
        self.write: Final = write
        self.read: Final = read


_COMMAND: Final = _Coder("Command", check_command, write_command, read_command)


def _write_event(prefix: bytes, e: WorkflowEvent) -> bytes:
    return event_records(prefix, (e,), "", 0)[0][3]


_EVENT: Final = _Coder("WorkflowEvent", check_event, _write_event, read_event)
_INDEX_EVENT: Final = _Coder(
    "WorkflowIndexEvent", check_index_event, write_index_event, read_index_event
)
_REPLY: Final = _Coder("Reply", check_reply, write_reply, read_reply)

# Errors a model value of the wrong shape causes while writing.
_WRITE_ERRORS: Final = (TypeError, AttributeError, UnicodeEncodeError)


class Codec:
    """Encodes and decodes the four message types.

    `schema_registry_url=None`: write Avro single-object encoding. A URL
    (including `mock://…`): write the Confluent wire format, registering the
    schemas on first use. Decoding accepts both framings either way; the
    Confluent one needs a registry.
    """

    def __init__(self, schema_registry_url: str | None = None) -> None:
        self._catalog = catalog()
        self._registry: Any = None
        # Framing prefix by record name; with a registry, filled on first use.
        self._prefix: dict[str, bytes] = {}
        # Writer schemas by registry id, fetched on first sight.
        self._by_id: dict[int, Writer] = {}
        if schema_registry_url is None:
            for name, current in self._catalog.current.items():
                self._prefix[name] = SINGLE_OBJECT_MAGIC + current.fingerprint
        else:
            self._registry = registry_client(schema_registry_url)
        # What a message in the current schema and single-object framing starts
        # with, by record name: the common case of `_writer`, and what
        # `event_facts` reads in place (whatever framing the codec writes).
        self._current: dict[str, tuple[bytes, Writer]] = {
            name: (SINGLE_OBJECT_MAGIC + c.fingerprint, self._catalog.writers[c.fingerprint])
            for name, c in self._catalog.current.items()
        }
        self._event_prefix = self._current["WorkflowEvent"][0]

    # -- public API

    def encode_command(self, c: Command) -> bytes:
        return self._encode(_COMMAND, c)

    def decode_command(self, data: Data) -> Command:
        return self._decode(_COMMAND, data)

    def encode_event(self, e: WorkflowEvent, *, validate: bool = True) -> bytes:
        """`validate=False` skips the id checks, for events made by `decide` from
        a decoded (so checked) command, the processor's own ULIDs and a registry
        id the decider accepted only in canonical text."""
        return self._encode(_EVENT, e, validate)

    def event_records(
        self, events: Sequence[WorkflowEvent], topic: str, partition: int
    ) -> list[EventRecord]:
        """One decision's events (`decide` made them: chained, checked) as records on
        `topic` [`partition`]: key, value (as `encode_event(e, validate=False)` writes
        it) and headers (`event_headers`), made in one pass (`event_records.py`)."""
        prefix = self._prefix.get(_EVENT.name) or self._register(_EVENT.name)
        try:
            return event_records(prefix, events, topic, partition)
        except _WRITE_ERRORS as exc:
            raise CodecError(f"cannot encode {_EVENT.name}: {exc}") from exc
        except CodecError as exc:
            raise CodecError(f"cannot encode {_EVENT.name}: {exc}") from None

    def decode_event(self, data: Data) -> WorkflowEvent:
        return self._decode(_EVENT, data)

    def encode_index_event(self, e: WorkflowIndexEvent, *, validate: bool = True) -> bytes:
        return self._encode(_INDEX_EVENT, e, validate)

    def decode_index_event(self, data: Data) -> WorkflowIndexEvent:
        return self._decode(_INDEX_EVENT, data)

    def encode_reply(self, r: Reply, *, validate: bool = True) -> bytes:
        return self._encode(_REPLY, r, validate)

    def decode_reply(self, data: Data) -> Reply:
        return self._decode(_REPLY, data)

    def event_facts(self, data: bytes) -> EventFacts:
        """What a restore needs of an event, read from the first fields of its body:
        (event_id, workflow_id, seq, command_id, payload type); the payload itself
        is not decoded. Bodies in the current schema and single-object framing
        are read in place and, unlike `decode_event`, without the id checks (the
        restore trusts its own topic); any other is decoded in full."""
        if data.startswith(self._event_prefix):
            try:
                return read_event_facts(data, len(self._event_prefix))
            except (IndexError, Truncated, UnicodeDecodeError):
                raise CodecError("truncated or invalid Avro body for WorkflowEvent") from None
        e = self.decode_event(data)
        return e.event_id, e.workflow_id, e.seq, e.command_id, type(e.payload)

    def event_head(self, data: bytes) -> EventHead:
        """Less than `event_facts`, for a restore's run of events of one command:
        (workflow_id, seq, start, end, payload type), where `data[start:end]` holds
        the command id as written. A start of 0 means "read `event_facts`" (another
        layout or framing; a damaged body, which `event_facts` reports)."""
        if data.startswith(self._event_prefix):
            try:
                return read_event_head(data, len(self._event_prefix))
            except (IndexError, Truncated, UnicodeDecodeError, CodecError):
                pass
        return "", 0, 0, 0, DuUpdated

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

    def _decode(self, coder: _Coder[T], data: Data) -> T:
        if not data:
            raise CodecError("empty message" if data is not None else "empty message (a tombstone)")
        if not isinstance(data, bytes):
            data = bytes(data)
        writer, pos = self._writer(coder.name, data)
        try:
            if writer.schema is None:
                value, end = coder.read(data, pos)
            else:
                value, end = coder.read(self._resolve(coder.name, writer, data, pos), 0)
        except (IndexError, Truncated):
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

    def _writer(self, name: str, data: bytes) -> tuple[Writer, int]:
        """The writer schema named by the framing, and where the body starts."""
        prefix, current = self._current[name]
        if data.startswith(prefix):
            return current, len(prefix)
        magic = data[0]
        writer: Writer | None
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

    def _fetch(self, schema_id: int) -> Writer:
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

    def _resolve(self, name: str, writer: Writer, data: bytes, pos: int) -> bytes:
        """The body rewritten in the current schema: fastavro reads it, resolving
        the writer schema to the current one, and writes it back."""
        reader = self._catalog.current[name].reader
        fo = BytesIO(data)
        fo.seek(pos)
        try:
            check_indices(writer.schema, data, pos)
            record = fastavro.schemaless_reader(fo, writer.schema, reader, return_record_name=True)
            out = BytesIO()
            fastavro.schemaless_writer(out, reader, record)
        except (EOFError, StopIteration, IndexError):
            raise Truncated from None
        except CodecError:
            raise
        except Exception as e:  # fastavro's resolution and data errors
            raise CodecError(f"cannot read it as written with {writer.label}: {e}") from e
        if fo.tell() != len(data):
            raise CodecError(f"{len(data) - fo.tell()} trailing bytes after the Avro body")
        return out.getvalue()
