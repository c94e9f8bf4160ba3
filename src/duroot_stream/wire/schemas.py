"""The schema files (`schemas/*.avsc`), their catalog and fingerprints, and the
Schema Registry client.

The catalog holds the current schema of each top-level record and every writer
schema a message may name by its single-object fingerprint: the current ones
and the released older versions in `schemas/released/`. Each current schema
must be the one its hand-written coder in `avro.py` implements, pinned by its
fingerprint in `CODED_FINGERPRINTS`: the codec refuses to start otherwise.

To change a schema: edit the `.avsc` (new fields need defaults), update its
coder in `avro.py` and its fingerprint here, and keep the previous released
version in `schemas/released/<Name>.v<N>.avsc` so old data stays readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = [
    "CODED_FINGERPRINTS",
    "NAMESPACE",
    "Catalog",
    "Current",
    "Writer",
    "catalog",
    "registry_client",
    "schemas_dir",
]

NAMESPACE = "io.duroot.stream"

# The schema each hand-written coder implements (fastavro's CRC-64-AVRO hex
# of the Parsing Canonical Form, bytes as on the wire).
CODED_FINGERPRINTS = {
    "Command": "baaf2d0eb39c8e19",
    "WorkflowEvent": "d224334916fd5cac",
    "WorkflowIndexEvent": "a9a9beecf55ddb8f",
    "Reply": "2a52f5b64c0f1603",
}


def schemas_dir() -> Path:
    """`schemas/`: inside the installed package (wheel), else the source tree."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "schemas"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "schemas"


@dataclass(frozen=True, slots=True)
class Writer:
    """A writer schema that messages may name (by fingerprint or registry id)."""

    full_name: str  # e.g. io.duroot.stream.Command
    schema: Any  # parsed by fastavro; None: the current schema (hand-written coder)
    label: str  # for messages: "fingerprint 0x…" or "schema id 7"


@dataclass(frozen=True, slots=True)
class Current:
    """One top-level schema as shipped in `schemas/`."""

    name: str  # Command, WorkflowEvent, WorkflowIndexEvent, Reply
    full_name: str
    text: str  # compact JSON, as registered
    reader: Any  # parsed by fastavro, logical types stripped
    fingerprint: bytes  # 8 bytes, as on the wire


@dataclass(frozen=True, slots=True)
class Catalog:
    current: dict[str, Current]  # by name
    writers: dict[bytes, Writer]  # by fingerprint: current and released schemas

    def writer_for(self, schema: Any, label: str) -> Writer:
        """The writer for a schema found in a registry."""
        parsed: Any = fastavro.parse_schema(_strip_logical_types(schema))
        known = self.writers.get(_fingerprint(parsed))
        if known is not None:
            return known
        full_name = parsed.get("name", "?") if isinstance(parsed, dict) else str(parsed)
        return Writer(full_name, parsed, label)


def _strip_logical_types(schema: Any) -> Any:
    """A copy without `logicalType`: same bytes, values as the model has them."""
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _parse(path: Path) -> tuple[Any, Any]:
    """The schema in `path` as written, and parsed by fastavro without logical types."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return raw, fastavro.parse_schema(_strip_logical_types(raw))


@cache
def catalog() -> Catalog:
    """Load `schemas/*.avsc` and `schemas/released/*.avsc`, once."""
    root = schemas_dir()
    current: dict[str, Current] = {}
    writers: dict[bytes, Writer] = {}
    for name, coded in CODED_FINGERPRINTS.items():
        path = root / f"{name}.avsc"
        raw, reader = _parse(path)
        fp = _fingerprint(reader)
        if fp.hex() != coded:
            raise RuntimeError(
                f"{path} (fingerprint {fp.hex()}) is not the schema avro.py's hand-written "
                f"coder implements ({coded}): update _write_/_read_ for {name} and "
                f"CODED_FINGERPRINTS in schemas.py"
            )
        full_name = reader["name"]
        text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
        current[name] = Current(name, full_name, text, reader, fp)
        writers[fp] = Writer(full_name, None, f"fingerprint 0x{fp.hex()}")
    for path in sorted((root / "released").glob("*.avsc")):
        _, parsed = _parse(path)
        writers.setdefault(
            _fingerprint(parsed), Writer(parsed["name"], parsed, f"released {path.name}")
        )
    return Catalog(current, writers)


# Registry clients by URL, shared by all codecs in the process (so that codecs
# on one "mock://" URL see the same schemas, as they would on a real registry).
_REGISTRY_CLIENTS: dict[str, Any] = {}


def registry_client(url: str) -> Any:
    """The Schema Registry client for `url` (a mock one for `mock://…`), made once."""
    client = _REGISTRY_CLIENTS.get(url)
    if client is None:
        # Imported here: the registry extra is needed only with a registry URL.
        from confluent_kafka.schema_registry import SchemaRegistryClient

        client = SchemaRegistryClient.new_client({"url": url})
        _REGISTRY_CLIENTS[url] = client
    return client
