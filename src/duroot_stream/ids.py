"""ULIDs for event and command ids: monotonic within the process and above a given floor.

The domain asks for "a new id greater than this vid"; this is the clock- and
randomness-backed answer the processor injects. The ULID text itself is the
domain's (`encode_ulid`, `decode_ulid`). It runs once per event, so the text
is built from the domain's table of two-character pairs (10 bits each), and
mostly only the last pair is new.
"""

from __future__ import annotations

import random
import time

from duroot_stream.domain import CROCKFORD_PAIRS, decode_ulid, encode_ulid

__all__ = ["MonotonicUlids", "new_ulid", "now_ms"]

_MAX = (1 << 128) - 1
_RANDOM_BITS = 80
# Event ids need uniqueness, not secrecy; SystemRandom would cost a syscall each.
_random = random.Random()


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
        text = self._stem_text + CROCKFORD_PAIRS[value & 1023]
        if text <= floor:  # same length, upper case: text order is numeric order
            value = decode_ulid(floor) + 1
            if value > _MAX:
                raise OverflowError("ULID space exhausted")
            text = encode_ulid(value)
            # The next id goes on from here, not back to the clock, until it catches up.
            self._ms = max(self._ms, value >> _RANDOM_BITS)
        self._value = value
        return text


def new_ulid() -> str:
    """A fresh ULID text, e.g. for a command id."""
    return encode_ulid((now_ms() << _RANDOM_BITS) | _random.getrandbits(_RANDOM_BITS))
