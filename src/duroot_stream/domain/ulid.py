"""ULID text, both ways: 128-bit value <-> 26 Crockford base32 characters.

Pure helpers (no clock, no randomness); `duroot_stream.ids` builds new ids
with them. Text is written canonical (upper case, `model.ULID_RE`); read in
either case, as the ULID spec asks of decoders.
"""

from __future__ import annotations

import re
from typing import Final

from .model import CROCKFORD, ULID_RE

# The two characters of every 10-bit value: a ULID is 13 of them (130 bits,
# the first two always zero), so encoding is 13 lookups rather than 26.
CROCKFORD_PAIRS: Final[tuple[str, ...]] = tuple(a + b for a in CROCKFORD for b in CROCKFORD)

# Reading: check the text once, then let `int(_, 32)` do the arithmetic in C
# on the text translated to Python's base-32 digits (0-9, a-v). ASCII only:
# with IGNORECASE alone, "K" would also match the Kelvin sign.
_ANY_CASE: Final = re.compile(ULID_RE.pattern, re.IGNORECASE | re.ASCII)
_BASE32: Final = "0123456789abcdefghijklmnopqrstuv"
_TO_BASE32: Final = str.maketrans(CROCKFORD + CROCKFORD.lower(), _BASE32 + _BASE32)


# Canonical text only, for ulid_bytes: a table of the 256 bytes, the Crockford characters
# to their base-32 digits and every other byte to "!", which `int` refuses (it would take
# "_", a space, a sign, or "I" as a digit). A bytes table: no dictionary look-up a character.
_STRICT: Final = bytes(
    [ord(_BASE32[CROCKFORD.index(chr(b))]) if chr(b) in CROCKFORD else ord("!") for b in range(256)]
)


# The last conversion: `decide` converts a command's id twice (dedupe, then the fold).
# One tuple, replaced whole, so that threads never see a text with another's bytes.
_last: tuple[str, bytes | None] = ("", None)


def ulid_bytes(text: str) -> bytes | None:
    """Canonical ULID text -> its 16 bytes (big-endian); None for any other text."""
    global _last
    last = _last
    if text == last[0]:
        return last[1]
    if len(text) != 26 or text[0] > "7":
        return None
    try:  # non-ASCII text encodes to more than 26 bytes, which all become "!"
        value = int(text.encode().translate(_STRICT), 32).to_bytes(16, "big")
    except ValueError:
        return None
    _last = (text, value)
    return value


def ulid_text(value: bytes) -> str:
    """16 bytes -> canonical ULID text (`ulid_bytes` undone)."""
    return encode_ulid(int.from_bytes(value, "big"))


_HALF: Final = (1 << 64) - 1


def halves_text(high: int, low: int) -> str:
    """Canonical ULID text of the two signed 64-bit halves of its value (as
    `int.from_bytes(..., signed=True)` reads the first 8 bytes and the last 8)."""
    return encode_ulid(((high & _HALF) << 64) | (low & _HALF))


def encode_ulid(value: int) -> str:
    """128-bit int -> 26-character canonical ULID text."""
    pairs = CROCKFORD_PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def decode_ulid(text: str) -> int:
    """26-character ULID text, either case -> 128-bit int (ValueError if it is not one)."""
    if not _ANY_CASE.fullmatch(text):
        raise ValueError(f"not a ULID: {text!r}")
    return int(text.translate(_TO_BASE32), 32)


def ulid_time_ms(text: str) -> int:
    """The 48-bit ms timestamp of a ULID: its first 10 characters."""
    if not _ANY_CASE.fullmatch(text):
        raise ValueError(f"not a ULID: {text!r}")
    return int(text[:10].translate(_TO_BASE32), 32)
