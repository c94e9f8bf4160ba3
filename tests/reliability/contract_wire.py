"""The wire contract as the reliability verifier reads it, written from
docs/contract.md and the schema files alone.

Nothing here comes from `duroot_stream`: records are decoded by fastavro's generic
reader from `schemas/*.avsc`, the partition is this module's own murmur2, and the
limits are the numbers the contract states. A mistake the processor and the
verifier shared would otherwise pass unseen.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

# Dead letters: "`too-large` (over 990,000 bytes)".
MAX_COMMAND_BYTES = 990_000
# Versions: the vid of an empty history and the two sentinels.
EVENT_EPOCH = "00000000000000000000000000"
NO_VC = "00000000000000000000000001"
RETRY_NO_VC = "00000000000000000000000002"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
# "UUIDs lower case with hyphens, ULIDs 26 upper-case Crockford base32 characters"
# (a ULID is 128 bits: its first character is at most 7).
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ULID_TEXT = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
# Headers: `event-type` by payload.
EVENT_TYPES = {
    "DuRootStarted": "STARTED",
    "DuUpdated": "UPDATED",
    "DuRootCompleted": "COMPLETED",
    "DuRootCommitted": "COMMITTED",
}
SINGLE_OBJECT = b"\xc3\x01"  # then the 8-byte little-endian CRC-64-AVRO fingerprint


# --- partitioning ---------------------------------------------------------------


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as a signed 32-bit int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(workflow_id: str, partitions: int) -> int:
    """`(murmur2(UTF-8 bytes of the workflow id) & 0x7fffffff) % N`."""
    return (murmur2(workflow_id.encode()) & 0x7FFFFFFF) % partitions


# --- values -----------------------------------------------------------------------


class Undecodable(Exception):
    """Not a record of the expected type in the contract's framing."""


def crc64_avro(data: bytes) -> int:
    """The Avro specification's CRC-64-AVRO (Rabin) fingerprint."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    out = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        out.append(fp)
    return out


_TABLE = _table()


def _plain(schema: Any) -> Any:
    """The schema without logical types: a timestamp is the long it is on the wire."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


@dataclass(frozen=True)
class RecordType:
    """One top-level record: the current schema (the reader) and every writer schema
    a single-object message may name by its fingerprint (current and released)."""

    name: str
    reader: Any
    writers: dict[bytes, Any]

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record as fastavro reads it (a union of records as (name, fields))."""
        if not data:
            raise Undecodable("empty or null value")
        if not data.startswith(SINGLE_OBJECT) or len(data) < 10:
            # The Confluent framing needs a registry, and the suite runs without one.
            raise Undecodable(f"not single-object framed: {data[:2].hex()}")
        writer = self.writers.get(data[2:10])
        if writer is None:
            raise Undecodable(f"no {self.name} schema has fingerprint {data[2:10].hex()}")
        current = writer is self.reader
        body = io.BytesIO(data)
        body.seek(10)
        try:
            value = fastavro.schemaless_reader(
                body, writer, None if current else self.reader, return_record_name=True
            )
        except Exception as exc:  # fastavro: short reads, bad UTF-8, unknown branches
            raise Undecodable(f"{self.name} body: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(data):
            raise Undecodable(f"{len(data) - body.tell()} bytes after the {self.name} body")
        if not isinstance(value, dict):
            raise Undecodable(f"{self.name} body is not a record")
        if current and _written(self.reader, value) != data[10:]:
            # fastavro reads a negative union index as a branch counted from the end
            # (Python's list indexing); Avro has none. Every writer of this suite
            # writes one block per array and the shortest varints, so a body that is
            # not what its value writes back holds something Avro does not allow.
            raise Undecodable(f"{self.name} body is not the Avro encoding of {value}")
        return {k: _short_names(v) for k, v in value.items()}


def _written(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, value)
    return out.getvalue()


def _short_names(value: Any) -> Any:
    """A union branch as (record name without namespace, fields)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return (value[0].rsplit(".", 1)[-1], value[1])
    return value


@cache
def record_type(name: str) -> RecordType:
    """`schemas/<name>.avsc` and its released versions `schemas/released/<name>.v*.avsc`."""
    paths = [SCHEMAS / f"{name}.avsc", *sorted((SCHEMAS / "released").glob(f"{name}.v*.avsc"))]
    parsed = [fastavro.parse_schema(_plain(json.loads(p.read_text()))) for p in paths]
    writers = {}
    for schema in reversed(parsed):  # the current one wins a fingerprint it shares
        canonical = to_parsing_canonical_form(schema).encode()
        writers[crc64_avro(canonical).to_bytes(8, "little")] = schema
    return RecordType(name, parsed[0], writers)


def decoder(name: str) -> Callable[[bytes | None], dict[str, Any]]:
    return record_type(name).decode


def canonical_ids(fields: dict[str, Any], uuids: tuple[str, ...], ulids: tuple[str, ...]) -> bool:
    """Are these fields of `fields` canonical UUID and ULID text?"""
    return all(
        isinstance(fields.get(k), str) and UUID_TEXT.fullmatch(fields[k]) for k in uuids
    ) and all(isinstance(fields.get(k), str) and ULID_TEXT.fullmatch(fields[k]) for k in ulids)


# --- dead letters -----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the contract makes of one record on the commands topic: a command to
    apply, or the `dlq-reason` of its dead letter."""

    command: dict[str, Any] | None
    reason: str | None  # too-large, undecodable, misrouted, bad-key


def judge(key: bytes | None, value: bytes | None, partition: int, partitions: int) -> Verdict:
    """A command record as the contract's Dead letters section judges it: over the
    size limit, not a command (ids not canonical text included), on another than
    its workflow's partition, or keyed by another than its workflow id."""
    if len(value or b"") > MAX_COMMAND_BYTES:
        return Verdict(None, "too-large")
    try:
        command = decoder("Command")(value)
    except Undecodable:
        return Verdict(None, "undecodable")
    if not canonical_ids(command, ("workflow_id",), ("command_id", "expected_vid")):
        return Verdict(None, "undecodable")
    workflow = command["workflow_id"]
    if partition_of(workflow, partitions) != partition:
        return Verdict(None, "misrouted")
    if key != workflow.encode():
        return Verdict(None, "bad-key")
    return Verdict(command, None)
