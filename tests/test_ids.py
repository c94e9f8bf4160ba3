"""The clock- and randomness-backed ids (duroot_stream.ids): canonical ULID text,
strictly increasing, above the floor the domain names."""

from __future__ import annotations

import itertools

import pytest

from duroot_stream.domain import ULID_RE, decode_ulid, encode_ulid, ulid_time_ms
from duroot_stream.ids import MonotonicUlids, new_ulid, now_ms

FAR_AHEAD = encode_ulid(((now_ms() + 10**9) << 80) | 12345)  # some 11 days from now


def test_ids_increase_strictly_and_carry_the_time() -> None:
    new_id = MonotonicUlids()
    before = now_ms()
    ids = [new_id("") for _ in range(5000)]  # many within one millisecond
    after = now_ms()
    assert all(ULID_RE.fullmatch(i) for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(before <= ulid_time_ms(i) <= after for i in ids)
    values = [decode_ulid(i) for i in ids]
    # Within a millisecond, one more than the last (the cached stem rolls over too).
    same_ms = [(a, b) for a, b in itertools.pairwise(values) if a >> 80 == b >> 80]
    assert same_ms and all(b == a + 1 for a, b in same_ms)


def test_an_id_is_above_a_floor_ahead_of_the_clock() -> None:
    new_id = MonotonicUlids()
    first = new_id(FAR_AHEAD)
    assert decode_ulid(first) == decode_ulid(FAR_AHEAD) + 1
    # And the ids go on from there, not back to the clock.
    second = new_id("")
    assert second > first
    assert decode_ulid(second) == decode_ulid(first) + 1


def test_ids_stay_above_a_floor_after_the_clock_moves_on() -> None:
    # A later millisecond on the clock must not take the ids back below the floor.
    clock = iter(range(1_000, 2_000))
    new_id = MonotonicUlids(lambda: next(clock))
    floor = encode_ulid((5_000 << 80) | 7)
    ids = [new_id(floor), new_id(""), new_id("")]
    assert ids[1:] == [encode_ulid((5_000 << 80) | n) for n in (9, 10)]


def test_the_text_is_right_across_a_pair_boundary() -> None:
    # Within a millisecond only the last pair is encoded anew: its roll-over
    # from "ZZ" must carry into the cached stem.
    new_id = MonotonicUlids()
    floor = encode_ulid((decode_ulid(FAR_AHEAD) & ~1023) | 1022)  # ends in "ZY"
    ids = [floor]
    for _ in range(3):
        ids.append(new_id(ids[-1]))  # as the decider asks: above the previous vid
    assert ids[1:] == [encode_ulid(decode_ulid(floor) + n) for n in (1, 2, 3)]
    assert ids[1][-2:] == "ZZ" and ids[2][-2:] == "00" and ids[2][:24] > ids[1][:24]


def test_many_ids_are_the_ids_one_at_a_time_with_one_clock_read() -> None:
    reads: list[int] = []

    def clock() -> int:
        reads.append(1)
        return 5_000

    new_id = MonotonicUlids(clock)
    floor = encode_ulid((5_001 << 80) | 1020)  # ahead of the clock; the run crosses pairs
    ids = new_id.many(floor, 2500)  # and two roll-overs of the last pair
    assert len(reads) == 1
    assert [decode_ulid(i) for i in ids] == [decode_ulid(floor) + n for n in range(1, 2501)]
    assert all(ULID_RE.fullmatch(i) for i in ids)
    # The next id goes on after the run.
    assert decode_ulid(new_id("")) == decode_ulid(ids[-1]) + 1
    assert new_id.many(ids[-1], 1) == [encode_ulid(decode_ulid(ids[-1]) + 2)]


def test_the_ulid_space_ends() -> None:
    with pytest.raises(OverflowError):
        MonotonicUlids()("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")


def test_new_ulid_is_canonical_text_of_now() -> None:
    before = now_ms()
    ulid = new_ulid()
    assert ULID_RE.fullmatch(ulid)
    assert before <= ulid_time_ms(ulid) <= now_ms()
