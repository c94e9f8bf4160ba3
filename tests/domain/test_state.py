"""The two folds of state.py give the same states: the restore-only `WorkflowReplay`
and `evolve`; and the packed recent-commands form keeps what the tuple of pairs held."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duroot_stream.domain import (
    EVENT_EPOCH,
    RECENT_COMMANDS,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    StateCode,
    WorkflowDeleted,
    WorkflowEvent,
    WorkflowReplay,
    WorkflowState,
    encode_ulid,
    evolve,
    initial_state,
    recent,
)

WF = "11111111-1111-4111-8111-111111111111"
PAYLOADS = st.one_of(
    st.builds(
        DuRootStarted,
        st.sampled_from(["aaaaaaaa-0000-4000-8000-000000000001", "r2"]),
        st.sampled_from(["/g/a", "/g/b"]),
        st.sampled_from(["h1", "h2"]),
        st.sampled_from(["/a", "/b"]),
    ),
    st.just(DuUpdated("", 0)),
    st.builds(DuUpdated, st.text(max_size=4), st.integers(0, 10)),
    st.just(DuRootCompleted(0, "")),
    st.just(DuRootCompleted(104, "expired")),
    st.just(DuRootCommitted()),
)
# Command ids: a few that repeat (as a command's events do), and arbitrary text.
COMMAND_IDS = (
    st.sampled_from([encode_ulid((7 << 80) | n) for n in range(4)])  # recent.py's binary form
    | st.sampled_from(["a", "b", "c", "d"])
    | st.text(max_size=3)
)
STEPS = st.lists(
    st.one_of(st.tuples(PAYLOADS, COMMAND_IDS), st.just("deleted"), st.just("resumed")),
    max_size=120,
)


def ulid(ms: int, entropy: int) -> str:
    return encode_ulid((ms << 80) | entropy)


def fold_both(steps: list[tuple[EventPayload, str] | str]) -> tuple[WorkflowState, WorkflowState]:
    """The state by `evolve` and by `WorkflowReplay` after the same history;
    at "resumed" the replay is turned into its state and resumed from it."""
    state = initial_state(WF)
    replay = WorkflowReplay(WF)
    for n, step in enumerate(steps):
        if step == "deleted":  # tombstones: the restore starts a new replay
            state = evolve(state, WorkflowDeleted(WF))
            replay = WorkflowReplay(WF)
            continue
        if step == "resumed":
            replay = WorkflowReplay.resume(replay.state())
            continue
        assert not isinstance(step, str)
        payload, command_id = step
        event = WorkflowEvent(
            ulid(1_700_000_000_000 + n, n), state.vid, WF, state.seq, command_id, payload
        )
        state = evolve(state, event)
        started = payload if isinstance(payload, DuRootStarted) else None
        replay.add(type(payload), event.event_id, event.seq, command_id, started)
    return state, replay.state()


@settings(max_examples=400, deadline=None)
@given(STEPS)
def test_replay_equals_the_fold_of_evolve(steps: list[tuple[EventPayload, str] | str]) -> None:
    by_evolve, by_replay = fold_both(steps)
    assert by_replay == by_evolve
    assert by_replay.recent_commands == by_evolve.recent_commands


@settings(max_examples=100, deadline=None)
@given(st.lists(COMMAND_IDS, min_size=RECENT_COMMANDS * 5, max_size=RECENT_COMMANDS * 12))
def test_replay_equals_evolve_over_long_histories(command_ids: list[str]) -> None:
    steps: list[tuple[EventPayload, str] | str] = [(DuUpdated("", 0), c) for c in command_ids]
    by_evolve, by_replay = fold_both(steps)
    assert by_replay == by_evolve


def test_replay_needs_the_started_payload() -> None:
    with pytest.raises(ValueError):
        WorkflowReplay(WF).add(DuRootStarted, ulid(1, 1), 0, "c")


ULIDS = st.builds(encode_ulid, st.integers(0, 2**128 - 1))


@given(
    st.lists(
        st.tuples(st.text(max_size=40) | ULIDS, st.text(max_size=40) | ULIDS),
        max_size=RECENT_COMMANDS,
        unique_by=lambda e: e[0],
    )
)
def test_packed_recent_commands_round_trip(entries: list[tuple[str, str]]) -> None:
    head = entries[-1][1] if entries else EVENT_EPOCH
    packed = recent.pack(tuple(entries), head)
    assert recent.unpack(packed, head) == tuple(entries)
    for command_id, vid in entries:
        assert recent.lookup(packed, head, command_id) == vid
    assert recent.lookup(packed, head, "\x00not there\x00") is None or any(
        c == "\x00not there\x00" for c, _ in entries
    )
    assert WorkflowState(WF, recent_commands=tuple(entries)).recent_commands == tuple(entries)


def test_ulid_ids_pack_binary_without_the_newest_vid() -> None:
    commands = [encode_ulid((1 << 80) | n) for n in range(3)]
    vids = [encode_ulid((2 << 80) | n) for n in range(3)]
    entries = tuple(zip(commands, vids, strict=True))
    packed = recent.pack(entries, vids[-1])
    assert isinstance(packed, bytes)
    assert len(packed) == 16 + 2 * (16 + 16)  # the newest command, then two full entries
    assert recent.unpack(packed, vids[-1]) == entries
    # An id equal to an older entry's vid is not taken for a command.
    assert recent.lookup(packed, vids[-1], vids[0]) is None
    # A command's next event changes nothing packed: the new head is the newest's vid.
    assert recent.remember(packed, vids[-1], commands[-1], ulid(9, 9)) is packed
    # Another id than a canonical ULID turns the form to text, keeping the entries.
    after = recent.remember(packed, vids[-1], "not a ulid", ulid(9, 9))
    assert isinstance(after, str)
    assert recent.unpack(after, ulid(9, 9)) == (*entries, ("not a ulid", ulid(9, 9)))


@given(st.integers(0, 2**128 - 1), st.text(max_size=30), st.text(), st.text())
def test_a_compact_state_reads_and_compares_as_the_one_of_text(
    value: int, other: str, global_root: str, host_root: str
) -> None:
    """`compact` holds a ULID vid as integers and the roots as one text: the same
    state as with its texts; the texts shared through the table."""
    shared: dict[str, str] = {}
    for vid in (encode_ulid(value), other, EVENT_EPOCH):
        fields = (WF, StateCode.APPENDING, vid, 3, "r", global_root, "h", host_root, 1, 2)
        text = WorkflowState(*fields, recent_commands=((vid, vid),))
        compact = WorkflowState(*fields, recent_commands=((vid, vid),), compact=shared)
        assert compact.vid == vid and compact == text and text == compact
        assert hash(compact) == hash(text) and repr(compact) == repr(text)
        assert compact.recent_commands == ((vid, vid),)
        assert (compact.global_root, compact.host_root) == (global_root, host_root)
        again = WorkflowState(*fields, compact=shared)
        assert again._global_root is compact._global_root and again.host is compact.host


def test_a_compact_state_keeps_a_root_too_long_for_one_text_as_two() -> None:
    long_root = "/r" * 0x88000
    state = WorkflowState(WF, global_root=long_root, host_root="/h", compact={})
    assert (state.global_root, state.host_root) == (long_root, "/h")
