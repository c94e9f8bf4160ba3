"""A walk over an Avro body by its writer schema that refuses what fastavro accepts:
a negative or too-large union branch or enum index. fastavro indexes the branch list
with the number read, so -1 silently reads as the last branch (a command read as a
`Delete`). Only the fastavro path (older writers, a registry's schemas) needs it;
the hand-written coders check their branches themselves."""

from __future__ import annotations

from typing import Any

from .binary import rlong
from .codec_error import CodecError

_FIXED_WIDTH = {"null": 0, "boolean": 1, "float": 4, "double": 8}


def check_indices(schema: Any, data: bytes, pos: int) -> None:
    """Raise `CodecError` naming the field whose union branch or enum index is out of
    range; `IndexError` when `data` ends early (the caller's truncation)."""
    _Walk(data).value(schema, pos, "")


class _Walk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.named: dict[str, Any] = {}

    def value(self, schema: Any, pos: int, where: str) -> int:
        if isinstance(schema, list):
            branch, pos = rlong(self.data, pos)
            if not 0 <= branch < len(schema):
                raise CodecError(f"{where or 'value'}: union branch {branch} is out of range")
            return self.value(schema[branch], pos, where)
        if isinstance(schema, str):
            if schema in self.named:
                return self.value(self.named[schema], pos, where)
            return self.primitive(schema, pos)
        kind = schema["type"]
        if "name" in schema:
            self.named.setdefault(schema["name"], schema)
        if kind == "record":
            for f in schema["fields"]:
                pos = self.value(f["type"], pos, f"{where}.{f['name']}" if where else f["name"])
            return pos
        if kind == "enum":
            index, pos = rlong(self.data, pos)
            if not 0 <= index < len(schema["symbols"]):
                raise CodecError(f"{where}: enum index {index} is out of range")
            return pos
        if kind == "fixed":
            return self.end(pos + int(schema["size"]))
        if kind in ("array", "map"):
            return self.blocks(schema, pos, where)
        return self.primitive(kind, pos)

    def blocks(self, schema: Any, pos: int, where: str) -> int:
        while True:
            count, pos = rlong(self.data, pos)
            if count == 0:
                return pos
            if count < 0:  # a block with its byte size after the count
                count = -count
                _, pos = rlong(self.data, pos)
            for _ in range(count):
                if schema["type"] == "map":
                    pos = self.primitive("string", pos)
                pos = self.value(schema.get("items", schema.get("values")), pos, where)

    def primitive(self, kind: str, pos: int) -> int:
        if kind in _FIXED_WIDTH:
            return self.end(pos + _FIXED_WIDTH[kind])
        if kind in ("int", "long"):
            return rlong(self.data, pos)[1]
        if kind in ("bytes", "string"):
            size, pos = rlong(self.data, pos)
            if size < 0:
                raise CodecError(f"negative length {size}")
            return self.end(pos + size)
        raise CodecError(f"unknown Avro type {kind!r} in the writer schema")

    def end(self, pos: int) -> int:
        if pos > len(self.data):
            raise IndexError("the body ends early")
        return pos
