"""ULID text, both ways: 128-bit value <-> 26 Crockford base32 characters.

Pure helpers (no clock, no randomness); `duroot_stream.ids` builds new ids
with them. Text is written canonical (upper case, `model.ULID_RE`); read in
either case, as the ULID spec asks of decoders.
"""

from __future__ import annotations

import re
from typing import Final

from .model import CROCKFORD, ULID_RE

try:
    from mypy_extensions import i64
except ImportError:  # a pure install (domain/native.py)
    from .native import i64

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


# Canonical text a byte at a time, for ulid_halves: each Crockford character's value,
# 32 for every other byte.
_DIGIT_VALUES: Final = bytes(
    CROCKFORD.index(chr(b)) if chr(b) in CROCKFORD else 32 for b in range(256)
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


def ulid_halves(text: str) -> tuple[i64, i64] | None:
    """Canonical ULID text -> the two halves of its value, each as a signed 64-bit
    integer (`int.from_bytes(half, "big", signed=True)`); None for any other text.
    Read a digit at a time into parts that fit a machine integer (compiled: no
    128-bit value made, no overflow in either build)."""
    digits = text.encode()
    if len(digits) != 26:  # non-ASCII text is longer
        return None
    values = _DIGIT_VALUES
    top: i64 = 0  # bits 65-127: the first digit holds 3 bits, then 12 x 5
    for at in range(13):
        digit = values[digits[at]]
        if digit >= 32 or (at == 0 and digit > 7):
            return None
        top = (top << 5) | digit
    middle: i64 = values[digits[13]]  # bits 60-64
    if middle >= 32:
        return None
    rest: i64 = 0  # bits 0-59
    for at in range(14, 26):
        digit = values[digits[at]]
        if digit >= 32:
            return None
        rest = (rest << 5) | digit
    high: i64 = ((top & _BELOW_62) << 1) | (middle >> 4)
    if top >> 62:  # the sign bit of the high half
        high += _MIN64
    low: i64 = rest | ((middle & 7) << 60)
    if middle & 8:  # the sign bit of the low half
        low += _MIN64
    return high, low


def ulid_text(value: bytes) -> str:
    """16 bytes -> canonical ULID text (`ulid_bytes` undone)."""
    return encode_ulid(int.from_bytes(value, "big"))


_BELOW_62: Final = (1 << 62) - 1
_MIN64: Final = -(1 << 63)


def halves_text(high: i64, low: i64) -> str:
    """Canonical ULID text of the halves `ulid_halves` gives. The ten-bit groups taken
    from each half (compiled: machine integers, no 128-bit value made)."""
    pairs = CROCKFORD_PAIRS
    return "".join(
        [
            pairs[(high >> 56) & 255],
            pairs[(high >> 46) & 1023],
            pairs[(high >> 36) & 1023],
            pairs[(high >> 26) & 1023],
            pairs[(high >> 16) & 1023],
            pairs[(high >> 6) & 1023],
            pairs[((high & 63) << 4) | ((low >> 60) & 15)],
            pairs[(low >> 50) & 1023],
            pairs[(low >> 40) & 1023],
            pairs[(low >> 30) & 1023],
            pairs[(low >> 20) & 1023],
            pairs[(low >> 10) & 1023],
            pairs[low & 1023],
        ]
    )


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
