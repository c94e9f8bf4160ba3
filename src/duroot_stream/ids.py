"""ULIDs for event ids: monotonic within the process and above a given floor.

The domain asks for "a new id greater than this vid"; this is the clock- and
randomness-backed answer the processor injects. It runs once per event, so the
Crockford base32 text is built from a table of two-character pairs (10 bits
each), and mostly only the last pair is new.
"""

from __future__ import annotations

import random
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 characters
_MAX = (1 << 128) - 1
_RANDOM_BITS = 80
# Event ids need uniqueness, not secrecy; SystemRandom would cost a syscall each.
_random = random.Random()


def encode_ulid(value: int) -> str:
    """128-bit int -> 26-character ULID text (130 bits: two leading zero bits)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def decode_ulid(text: str) -> int:
    """26-character ULID text -> 128-bit int (ValueError if it is not one)."""
    if len(text) != 26 or text[0] > "7":
        raise ValueError(f"not a ULID: {text!r}")
    value = 0
    try:
        for char in text.upper():
            value = (value << 5) | _VALUE[char]
    except KeyError:
        raise ValueError(f"not a ULID: {text!r}") from None
    return value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MonotonicUlids:
    """`new_id(floor)`: a ULID of now, one more than the last id within the same
    millisecond (so ids never go backwards), and above `floor` if the clock lags.

    Within a millisecond consecutive ids differ in the last character pair, so
    the text of everything above the last 10 bits is kept and reused.
    """

    def __init__(self) -> None:
        self._ms = -1
        self._value = 0
        self._stem = -1  # value >> 10 last encoded, and its 24 characters
        self._stem_text = ""

    def __call__(self, floor: str) -> str:
        ms = now_ms()
        if ms > self._ms:
            self._ms = ms
            value = (ms << _RANDOM_BITS) | _random.getrandbits(_RANDOM_BITS)
        else:
            value = self._value + 1
        if value >> 10 != self._stem:
            self._stem, self._stem_text = value >> 10, encode_ulid(value)[:24]
        text = self._stem_text + _PAIRS[value & 1023]
        if text <= floor:  # same length, upper case: text order is numeric order
            value = decode_ulid(floor) + 1
            if value > _MAX:
                raise OverflowError("ULID space exhausted")
            text = encode_ulid(value)
        self._value = value
        return text


def new_ulid() -> str:
    """A fresh ULID text, e.g. for a command id."""
    return encode_ulid((now_ms() << _RANDOM_BITS) | _random.getrandbits(_RANDOM_BITS))
