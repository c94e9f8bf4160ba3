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
from collections.abc import Callable
from typing import Final

from duroot_stream.domain import CROCKFORD_PAIRS, decode_ulid, encode_ulid

__all__ = ["MonotonicUlids", "new_ulid", "now_ms"]

_MAX: Final = (1 << 128) - 1
_RANDOM_BITS: Final = 80
# Event ids need uniqueness, not secrecy; SystemRandom would cost a syscall each.
_random: Final = random.Random()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MonotonicUlids:
    """`new_id(floor)`: a ULID of now, one more than the last id within the same
    millisecond (so ids never go backwards), and above `floor` if the clock lags.

    Within a millisecond consecutive ids differ in the last character pair, so
    the text of everything above the last 10 bits is kept and reused, and the id
    is held as that stem and the last 10 bits apart: the common case adds one to
    a small number, not to a 128-bit one.
    """

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock  # milliseconds since the epoch; a test's own
        self._ms = -1
        self._stem = -1  # the last id >> 10, and its 24 characters
        self._stem_text = ""
        self._low = 0  # the last id & 1023

    def __call__(self, floor: str) -> str:
        ms = self._clock()
        if ms > self._ms:
            self._ms = ms
            value = (ms << _RANDOM_BITS) | _random.getrandbits(_RANDOM_BITS)
            self._stem_at(value)
        elif self._low < 1023:  # the same millisecond: one more in the last pair
            self._low += 1
        else:  # the last pair rolls over into the stem
            self._stem_at(((self._stem << 10) | self._low) + 1)
        text = self._stem_text + CROCKFORD_PAIRS[self._low]
        if text <= floor:  # same length, upper case: text order is numeric order
            value = decode_ulid(floor) + 1
            if value > _MAX:
                raise OverflowError("ULID space exhausted")
            self._stem_at(value)
            text = self._stem_text + CROCKFORD_PAIRS[self._low]
            # The next id goes on from here, not back to the clock, until it catches up.
            self._ms = max(self._ms, value >> _RANDOM_BITS)
        return text

    def many(self, floor: str, n: int) -> list[str]:
        """`n` ids in order, the first `self(floor)`: the clock read once for all
        (an Append of 10,000 paths takes 10,000 ids in one go)."""
        out = [self(floor)]
        stem_text, low = self._stem_text, self._low
        for _ in range(n - 1):
            if low < 1023:
                low += 1
            else:  # the last pair rolls over into the stem
                self._stem_at(((self._stem << 10) | low) + 1)
                stem_text, low = self._stem_text, self._low
            out.append(stem_text + CROCKFORD_PAIRS[low])
        self._low = low
        return out

    def _stem_at(self, value: int) -> None:
        """The last id is `value`: its stem (encoded if it changed) and last 10 bits."""
        if value >> 10 != self._stem:
            self._stem, self._stem_text = value >> 10, encode_ulid(value)[:24]
        self._low = value & 1023


def new_ulid() -> str:
    """A fresh ULID text, e.g. for a command id."""
    return encode_ulid((now_ms() << _RANDOM_BITS) | _random.getrandbits(_RANDOM_BITS))
