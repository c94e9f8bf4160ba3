"""ULID text both ways (domain/ulid.py), checked against the ULID spec's example
and python-ulid as an independent oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from duroot_stream.domain import (
    CROCKFORD,
    CROCKFORD_PAIRS,
    EVENT_EPOCH,
    ULID_RE,
    decode_ulid,
    encode_ulid,
    ulid_time_ms,
)
from duroot_stream.domain.ulid import halves_text, ulid_halves

VALUES = st.integers(0, 2**128 - 1)
SPEC_EXAMPLE = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NOT_ULIDS = [
    pytest.param("", id="empty"),
    pytest.param("01ARZ3NDEK", id="short"),
    pytest.param(SPEC_EXAMPLE + "X", id="long"),
    pytest.param("01ARZ3NDEUTSV4RRFFQ69G5FAV", id="U-in-time"),
    pytest.param("01ARZ3NDEKTSV4RRFFQ69G5FAI", id="I-in-entropy"),
    pytest.param("01ARZ3NDEKTSV4RRFFQ69G5FAl", id="l-in-entropy"),
    pytest.param("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", id="beyond-128-bits"),
    # What int(_, 32) alone would accept: the text is checked first.
    pytest.param("01ARZ3NDEK_SV4RRFFQ69G5FAV", id="underscore"),
    pytest.param(" 1ARZ3NDEKTSV4RRFFQ69G5FAV", id="space"),
    pytest.param("+1ARZ3NDEKTSV4RRFFQ69G5FAV", id="sign"),
    pytest.param("01ARZ3NDEKTSV4RRFFQ69G5FA\u212a", id="kelvin-sign"),
    pytest.param("01ARZ3NDEKTSV4RRFFQ69G5FA\u0663", id="arabic-digit"),
]


def test_the_pairs_are_every_ten_bit_value() -> None:
    assert len(CROCKFORD_PAIRS) == 1024
    assert CROCKFORD_PAIRS[0] == "00" and CROCKFORD_PAIRS[1023] == "ZZ"
    assert all(
        pair == CROCKFORD[n >> 5] + CROCKFORD[n & 31] for n, pair in enumerate(CROCKFORD_PAIRS)
    )


@given(VALUES)
def test_encode_is_canonical_text_and_agrees_with_python_ulid(value: int) -> None:
    text = encode_ulid(value)
    assert ULID_RE.fullmatch(text)
    assert text == str(ULID.from_int(value))


@given(VALUES)
def test_decode_inverts_encode_in_either_case(value: int) -> None:
    text = encode_ulid(value)
    assert decode_ulid(text) == value
    assert decode_ulid(text.lower()) == value


@given(VALUES, VALUES)
def test_text_order_is_numeric_order(a: int, b: int) -> None:
    assert (encode_ulid(a) < encode_ulid(b)) is (a < b)


def test_the_edges() -> None:
    assert encode_ulid(0) == EVENT_EPOCH
    assert encode_ulid(2**128 - 1) == "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    assert decode_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == 2**128 - 1


def test_ulid_time_ms_of_the_spec_example() -> None:
    # Its often-quoted time 1469918176385 belongs to another ULID ("01ARYZ6S41...").
    # "01ARZ3NDEK" = 0 1 10 24 31 3 21 13 14 19 in Crockford base32.
    digits = [0, 1, 10, 24, 31, 3, 21, 13, 14, 19]
    by_hand = sum(d * 32 ** (9 - i) for i, d in enumerate(digits))
    assert by_hand == 1469922850259
    assert ulid_time_ms(SPEC_EXAMPLE) == ulid_time_ms(SPEC_EXAMPLE.lower()) == by_hand
    # "01ARYZ6S41" = 0 1 10 24 30 31 6 25 4 1
    digits = [0, 1, 10, 24, 30, 31, 6, 25, 4, 1]
    assert sum(d * 32 ** (9 - i) for i, d in enumerate(digits)) == 1469918176385
    assert ulid_time_ms("01ARYZ6S41TSV4RRFFQ69G5FAV") == 1469918176385


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1))
def test_ulid_time_ms_is_the_top_48_bits(ms: int, entropy: int) -> None:
    text = encode_ulid((ms << 80) | entropy)
    assert ulid_time_ms(text) == ms == ULID.from_str(text).milliseconds


def test_ulid_time_ms_edges() -> None:
    assert ulid_time_ms(EVENT_EPOCH) == 0
    assert ulid_time_ms("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == 2**48 - 1


@pytest.mark.parametrize("text", NOT_ULIDS)
def test_non_ulids_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a ULID"):
        decode_ulid(text)
    with pytest.raises(ValueError, match="not a ULID"):
        ulid_time_ms(text)
    assert ulid_halves(text) is None and ulid_halves(text.lower()) is None


@given(VALUES)
def test_the_halves_are_the_signed_64_bit_halves_and_give_the_text_back(value: int) -> None:
    check_halves(value)


@pytest.mark.parametrize("value", [0, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**127, 2**128 - 1])
def test_the_halves_at_their_edges(value: int) -> None:
    check_halves(value)


def check_halves(value: int) -> None:
    text = encode_ulid(value)
    high, low = ulid_halves(text) or (None, None)
    binary = value.to_bytes(16, "big")
    assert high == int.from_bytes(binary[:8], "big", signed=True)
    assert low == int.from_bytes(binary[8:], "big", signed=True)
    assert high is not None and low is not None
    assert halves_text(high, low) == text
