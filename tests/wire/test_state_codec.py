"""The internal state topic's values (wire/state_codec.py): a workflow's state and a
partition's marker round-trip, recent commands in their binary form (the real case:
ULIDs) and their text form (any other id); anything not written with the current
schemas is refused with `CodecError`, which the restore takes as "state not used"."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duroot_stream.domain import RECENT_COMMANDS, StateCode, WorkflowState
from duroot_stream.ids import new_ulid
from duroot_stream.wire import CodecError, StateMarker, decode_marker, encode_marker
from duroot_stream.wire.state_codec import (
    decode_state,
    decode_state_value,
    decode_states,
    encode_state,
    encode_states,
)

WF = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
ulids = st.builds(lambda _: new_ulid(), st.integers())
texts = st.text(min_size=1, max_size=30)


def state(recent: tuple[tuple[str, str], ...], vid: str | None = None) -> WorkflowState:
    head = vid or (recent[-1][1] if recent else new_ulid())
    return WorkflowState(
        WF, StateCode.APPENDING, head, 7, "r", "/g", "h", "/h/é", 1_700_000_000_000, 0, recent
    )


@given(st.lists(st.tuples(ulids, ulids), max_size=RECENT_COMMANDS, unique_by=lambda e: e[0]))
def test_a_state_of_ulids_round_trips_in_its_binary_form(entries: list[tuple[str, str]]) -> None:
    original = state(tuple(entries))
    decoded = decode_state(encode_state(original))
    assert decoded == original
    assert decoded.recent == original.recent and isinstance(decoded.recent, bytes)


@given(
    st.lists(st.tuples(texts, texts), max_size=RECENT_COMMANDS, unique_by=lambda e: e[0]),
    st.one_of(texts, ulids),
)
def test_a_state_of_other_ids_round_trips(entries: list[tuple[str, str]], vid: str) -> None:
    original = state(tuple(entries), vid)
    assert decode_state(encode_state(original)) == original


def test_a_marker_round_trips_and_is_told_from_a_state() -> None:
    marker = StateMarker(10**12, "proc-1", 1_700_000_000_000)
    assert decode_marker(encode_marker(marker)) == marker
    assert decode_state_value(encode_marker(marker)) == marker
    original = state(((new_ulid(), new_ulid()),))
    assert decode_state_value(encode_state(original)) == original


def test_what_the_current_schemas_did_not_write_is_refused() -> None:
    good = encode_state(state(((new_ulid(), new_ulid()),)))
    with pytest.raises(CodecError, match="unknown schema fingerprint 0x0123456789abcdef"):
        decode_state(b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + good[10:])
    with pytest.raises(CodecError, match="not a single-object WorkflowState"):
        decode_state(b"\x00\x00\x00\x00\x01" + good[10:])
    with pytest.raises(CodecError, match="truncated"):
        decode_state(good[:-5])
    with pytest.raises(CodecError, match="trailing bytes"):
        decode_state(good + b"\x00")
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        decode_marker(good)


def test_many_states_round_trip_in_one_buffer_their_roots_shared() -> None:
    states = [
        WorkflowState(
            f"7f1c0a3e-5b1d-4c2a-9e3f-0123456789{n:02x}",
            StateCode.COMPLETED,
            new_ulid(),
            n,
            "r",
            "/g/" + "x" * 40,  # not interned when made here: read back shared
            "h",
            "/h/é",
        )
        for n in range(40)
    ]
    into: dict[str, WorkflowState] = {}
    decode_states(encode_states(states), into, {})
    assert list(into.values()) == states
    assert all(key is state.workflow_id for key, state in into.items())
    assert len({id(state.global_root) for state in into.values()}) == 1
    decode_states(b"", into, {})
    assert len(into) == 40


def test_a_buffer_of_states_cut_short_is_refused() -> None:
    data = encode_states([state(((new_ulid(), new_ulid()),))])
    with pytest.raises(CodecError, match="truncated"):
        decode_states(data[:-3], {}, {})
