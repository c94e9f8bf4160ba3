"""Avro binary primitives for the hand-written coders in `avro.py`: zig-zag
varints, strings, `["null", "string"]` unions, union branch tags.

Writers return bytes. Readers take the buffer and a position and return
(value, new position); running off the end raises IndexError or `Truncated`.
"""

from __future__ import annotations

from typing import Final

from .codec_error import CodecError

__all__ = [
    "BYTE",
    "END",
    "INT_MAX",
    "INT_MIN",
    "NULL",
    "TAG",
    "Truncated",
    "bad_branch",
    "rint",
    "rlong",
    "ropt_str",
    "rstr",
    "skip_str",
    "wint",
    "wlong",
    "wopt_str",
    "wstr",
]

BYTE: Final = tuple(bytes((i,)) for i in range(256))
TAG: Final = tuple(BYTE[i << 1] for i in range(8))  # union branch i / array count i
NULL: Final = TAG[0]  # union branch 0 ("null")
END: Final = b"\x00"  # end of an array's blocks
LONG_MIN: Final = -(1 << 63)
LONG_MAX: Final = (1 << 63) - 1
INT_MIN: Final = -(1 << 31)
INT_MAX: Final = (1 << 31) - 1


class Truncated(Exception):
    """The body ends before the value does."""


# --- writing ---------------------------------------------------------------------


def wlong(v: int, field: str) -> bytes:
    """A zig-zag varint."""
    if 0 <= v < 64:  # the common case: one byte
        return BYTE[v << 1]
    if not LONG_MIN <= v <= LONG_MAX:
        raise CodecError(f"{field} {v} is out of range for an Avro long")
    z = (v << 1) ^ (v >> 63)
    if z < 0x80:
        return BYTE[z]
    if z < 0x4000:  # two bytes (a seq up to 8,191): no int of the groups made
        return BYTE[(z & 0x7F) | 0x80] + BYTE[z >> 7]
    # The groups of 7 bits, low first, gathered into one int: one bytes object made.
    groups, n = 0, 0
    while z >= 0x80:
        groups |= ((z & 0x7F) | 0x80) << (8 * n)
        z >>= 7
        n += 1
    return (groups | z << (8 * n)).to_bytes(n + 1, "little")


def wint(v: int, field: str) -> bytes:
    if not INT_MIN <= v <= INT_MAX:
        raise CodecError(f"{field} {v} is out of range for an Avro int")
    return wlong(v, field)


def wstr(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (BYTE[n << 1] if n < 64 else wlong(n, "string length")) + b


def wopt_str(s: str | None) -> bytes:
    """A ["null", "string"] union."""
    return NULL if s is None else TAG[1] + wstr(s)


# --- reading ---------------------------------------------------------------------


def rlong(buf: bytes, pos: int) -> tuple[int, int]:
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


def rint(buf: bytes, pos: int) -> tuple[int, int]:
    v, pos = rlong(buf, pos)
    if not INT_MIN <= v <= INT_MAX:
        raise CodecError(f"{v} is out of range for an Avro int")
    return v, pos


def rstr(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    if n < 0x80 and not n & 1:  # the common case: a one-byte length, 0 to 63
        n >>= 1
        pos += 1
    else:
        n, pos = rlong(buf, pos)
        if n < 0:
            raise CodecError(f"negative string length {n}")
    end = pos + n
    if end > len(buf):
        raise Truncated
    return buf[pos:end].decode(), end


def skip_str(buf: bytes, pos: int) -> int:
    n = buf[pos]
    if n < 0x80 and not n & 1:
        return pos + 1 + (n >> 1)
    n, pos = rlong(buf, pos)
    if n < 0:
        raise CodecError(f"negative string length {n}")
    return pos + n


def ropt_str(buf: bytes, pos: int, field: str) -> tuple[str | None, int]:
    branch, pos = rlong(buf, pos)
    if branch == 0:
        return None, pos
    if branch == 1:
        return rstr(buf, pos)
    raise bad_branch(field, branch)


def bad_branch(field: str, branch: int) -> CodecError:
    return CodecError(f"invalid union branch {branch} in {field}")
