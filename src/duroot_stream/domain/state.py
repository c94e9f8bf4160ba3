"""A workflow's state and the fold that builds it from the workflow's events.

`WorkflowState` is nog's `durootwf.State`, plus what dedupe and garbage
collection need. The state has one source of truth, the event history, and
two folds over it that apply the same rules, numbered alike below:

- `evolve(state, event)`: one new state per event. `decide` uses it (the old
  state stays valid, so the processor can undo a command).
- `WorkflowReplay`: restore only. It changes a few fields in place and makes
  one `WorkflowState` at the end, which is most of what a restore saves:

      replay = WorkflowReplay(workflow_id)
      for event in history:
          replay.add(type(event.payload), event.event_id, event.seq, event.command_id, started)
      state = replay.state()  # == the fold of `evolve` over the history

The rules, per event:

1. the state code after the event's type (`CODE_AFTER`); any other type is an error;
2. the vid is the event's id, and `seq` counts the events;
3. DuRootStarted sets the four root fields and `started_at` (the ULID time of its id);
4. DuRootCompleted sets `completed_at` (the ULID time of its id);
5. the event's command is remembered with the vid it left (recent.py).

Of the payload only DuRootStarted's fields are read; of the other events just
the type, so a restore may skip decoding their bodies (the event headers
carry the rest). A deleted history (tombstones) folds to the initial state.

Why two folds of the same rules: each is the cheap one for its caller, and the
pure build (no compiler) must stay as fast as it was. Folding a decision with
a replay (resume, add, state) instead of `evolve` costs about twice as much
there; the restore with `evolve` would make a state per event. The compiled
build would not mind either way, the pure one does. So both stay, and the
property tests of tests/domain/test_state.py hold them to the same states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .model import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    StateCode,
    WorkflowEvent,
)
from .recent import EMPTY, Packed, pack, remember, unpack
from .ulid import halves_text, ulid_halves, ulid_time_ms

try:
    from mypy_extensions import i64, mypyc_attr
except ImportError:  # a pure install: no mypy, nothing to tell the compiler
    from .native import i64, mypyc_attr


# Acyclic: its fields are strings, numbers and bytes, so no cycle can pass through a
# state; the compiled build leaves it out of the cyclic collector (no GC header,
# 16 B less per workflow, and nothing for a collection to walk).
@mypyc_attr(acyclic=True)
class WorkflowState:
    """nog's `durootwf.State`, plus what dedupe and garbage collection need.

    `recent_commands`: (command_id, vid of that command's last event), oldest
    first, at most RECENT_COMMANDS entries; held packed in `recent` (recent.py),
    which the folds pass on as it is (`packed`).

    `compact` (a table of texts, shared by the states made with it): the vid, a ULID,
    is held as its two 64-bit halves (unboxed in the compiled build: 16 B where its
    text takes 75 B) and made text when read (`vid`); the two roots as one text
    (`_global_root`, `_host_root` None), which the workflows of a root share with the
    registry id and host, through the table; the roots are cut from it when read.
    The states a restore keeps are made so (processor/compaction.py): they are most
    of what a processor holds, and most wait long for their next command. `decide`'s
    states keep the texts they are given, which it reads again at once: a conversion
    each way would cost about 1 us a command. Any other text than a ULID's is held
    as text.

    A class with slots rather than a NamedTuple or a frozen dataclass: the compiled
    build makes it a native class (its fields a C struct, the integers unboxed), and
    mypyc cannot compile a class that inherits from a tuple. The fields are Final:
    mypy refuses an assignment, and the compiled build raises AttributeError.
    """

    __slots__ = (
        "_global_root",
        "_host_root",
        "_vid_high",
        "_vid_low",
        "_vid_text",
        "code",
        "completed_at",
        "host",
        "recent",
        "registry_id",
        "seq",
        "started_at",
        "workflow_id",
    )

    def __init__(
        self,
        workflow_id: str,
        code: StateCode = StateCode.UNINITIALIZED,
        vid: str = EVENT_EPOCH,
        seq: int = 0,
        registry_id: str = "",
        global_root: str = "",
        host: str = "",
        host_root: str = "",
        started_at: int = 0,
        completed_at: int = 0,
        recent_commands: tuple[tuple[str, str], ...] = (),
        *,
        packed: Packed | None = None,
        compact: dict[str, str] | None = None,
    ) -> None:
        self.workflow_id: Final = workflow_id
        self.code: Final = code
        halves = None if compact is None else ulid_halves(vid)
        high: i64 = 0
        low: i64 = 0
        if halves is not None:
            high, low = halves
        self._vid_high: Final = high
        self._vid_low: Final = low
        self._vid_text: Final = None if halves is not None else vid
        self.seq: Final = seq  # number of events in the history = the next event's seq
        roots: str = global_root
        second: str | None = host_root
        if compact is not None:
            share = compact.setdefault
            registry_id, host = share(registry_id, registry_id), share(host, host)
            if len(global_root) < 0x110000:  # its length fits in one character
                roots = chr(len(global_root)) + global_root + host_root
                roots, second = share(roots, roots), None
            else:
                roots, second = share(global_root, global_root), share(host_root, host_root)
        self.registry_id: Final = registry_id
        self._global_root: Final = roots
        self.host: Final = host
        self._host_root: Final = second
        self.started_at: Final = started_at  # ms, the ULID time of the STARTED event
        self.completed_at: Final = completed_at  # ms, the ULID time of the COMPLETED event
        self.recent: Final = pack(recent_commands, vid) if packed is None else packed

    @property
    def vid(self) -> str:
        text = self._vid_text
        if text is not None:
            return text
        last = _last_vid
        if last[0] is self:
            return last[1]
        made = halves_text(self._vid_high, self._vid_low)
        _remember_vid(self, made)
        return made

    @property
    def global_root(self) -> str:
        roots = self._global_root
        if self._host_root is not None:
            return roots
        return roots[1 : 1 + ord(roots[0])]

    @property
    def host_root(self) -> str:
        host_root = self._host_root
        if host_root is not None:
            return host_root
        roots = self._global_root
        return roots[1 + ord(roots[0]) :]

    @property
    def recent_commands(self) -> tuple[tuple[str, str], ...]:
        return unpack(self.recent, self.vid)

    def _fields(self) -> tuple[object, ...]:
        """The fields in the constructor's order, but `recent`, whose two forms may differ
        for the same commands (recent.py)."""
        return tuple(getattr(self, name) for name in _COMPARED)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkflowState):
            return NotImplemented
        return self._fields() == other._fields() and (
            self.recent == other.recent or self.recent_commands == other.recent_commands
        )

    def __hash__(self) -> int:
        return hash((self._fields(), self.recent_commands))

    def __repr__(self) -> str:
        shown = [f"{n}={v!r}" for n, v in zip(_COMPARED, self._fields(), strict=True)]
        return f"WorkflowState({', '.join(shown)}, recent_commands={self.recent_commands!r})"


# The constructor's parameters but the last; what equality compares field by field.
_COMPARED = (
    "workflow_id",
    "code",
    "vid",
    "seq",
    "registry_id",
    "global_root",
    "host",
    "host_root",
    "started_at",
    "completed_at",
)


# The compact state whose vid was read last, and that vid as text: `decide` reads a
# state's vid several times. One tuple, replaced whole (threads see a pair or the other).
_last_vid: tuple[WorkflowState | None, str] = (None, "")


def _remember_vid(state: WorkflowState, text: str) -> None:
    global _last_vid
    _last_vid = (state, text)


def initial_state(workflow_id: str) -> WorkflowState:
    """The state of an empty (never started, or deleted) history."""
    return WorkflowState(workflow_id)


@dataclass(frozen=True, slots=True)
class WorkflowDeleted:
    """The workflow's history was deleted (on the wire: tombstones)."""

    workflow_id: str


# Rule 1 (docs/contract.md, "The state machine"): the state code after each event type.
CODE_AFTER: Final[dict[type[EventPayload], StateCode]] = {
    DuRootStarted: StateCode.INITIALIZED,
    DuUpdated: StateCode.APPENDING,
    DuRootCompleted: StateCode.COMPLETED,
    DuRootCommitted: StateCode.TERMINATED,
}


def evolve(state: WorkflowState, event: WorkflowEvent | WorkflowDeleted) -> WorkflowState:
    """Fold one event into the state; trusts the history (no checks).

    Runs once per event `decide` accepts, so it only sets fields.
    """
    if not isinstance(event, WorkflowEvent):
        if isinstance(event, WorkflowDeleted):
            return initial_state(state.workflow_id)
        raise TypeError(f"invalid event type {type(event).__name__}")
    payload = event.payload
    code = CODE_AFTER.get(type(payload))  # 1.
    if code is None:
        raise TypeError(f"invalid event type {type(payload).__name__}")
    vid = event.event_id  # 2.
    registry_id, host = state.registry_id, state.host
    global_root, second = state._global_root, state._host_root  # the fields: no property
    host_root = second if second is not None else state.host_root
    if second is None:  # a compact state's roots are one text
        global_root = state.global_root
    started_at, completed_at = state.started_at, state.completed_at
    if isinstance(payload, DuRootStarted):  # 3.
        registry_id, global_root = payload.registry_id, payload.global_root
        host, host_root = payload.host, payload.host_root
        started_at = ulid_time_ms(vid)
    elif isinstance(payload, DuRootCompleted):  # 4.
        completed_at = ulid_time_ms(vid)
    return WorkflowState(
        state.workflow_id,
        code,
        vid,
        event.seq + 1,
        registry_id,
        global_root,
        host,
        host_root,
        started_at,
        completed_at,
        packed=remember(state.recent, state.vid, event.command_id, vid),  # 5.
    )


class WorkflowReplay:
    """The state of one workflow, folded in place; see the module docstring.

    `started` is the DuRootStarted payload of a STARTED event and None
    otherwise. `WorkflowReplay.resume(state)` goes on from a state made before.
    """

    __slots__ = (
        "_code",
        "_command",
        "_completed_at",
        "_recent",
        "_recent_head",
        "_root",
        "_seq",
        "_started_at",
        "_vid",
        "workflow_id",
    )

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self._code = StateCode.UNINITIALIZED
        self._vid = EVENT_EPOCH
        self._seq = 0
        self._root = ("", "", "", "")  # registry_id, global_root, host, host_root
        self._started_at = 0
        self._completed_at = 0
        self._command: str | None = None  # the command id of the latest event
        # Rule 5, deferred: the recent commands before the latest one, which is
        # added when the next command starts (a command's events come one after
        # another, and only its last vid is kept) or by state(); and the vid their
        # newest one left (recent.py: the packed form leaves it out).
        self._recent = EMPTY
        self._recent_head = EVENT_EPOCH

    @classmethod
    def resume(cls, state: WorkflowState) -> WorkflowReplay:
        """A replay that goes on from `state` (which it leaves as it is)."""
        replay = cls(state.workflow_id)
        replay._code, replay._vid, replay._seq = state.code, state.vid, state.seq
        replay._root = (state.registry_id, state.global_root, state.host, state.host_root)
        replay._started_at, replay._completed_at = state.started_at, state.completed_at
        # The newest entry holds the latest command's last vid so far; if that
        # command has more events, `state()` updates it in place.
        replay._recent, replay._recent_head = state.recent, state.vid
        return replay

    def add(
        self,
        event_type: type[EventPayload],
        vid: str,
        seq: int,
        command_id: str,
        started: DuRootStarted | None = None,
    ) -> None:
        """Fold one event: its payload type, id (the new vid), seq and cause."""
        code = CODE_AFTER.get(event_type)  # 1.
        if code is None:
            raise TypeError(f"invalid event type {event_type.__name__}")
        if command_id != self._command:  # 5. (the previous command's last vid is known)
            if self._command is not None:
                self._recent = remember(self._recent, self._recent_head, self._command, self._vid)
                self._recent_head = self._vid
            self._command = command_id
        self._code = code
        self._vid, self._seq = vid, seq + 1  # 2.
        if event_type is DuRootStarted:  # 3.
            if started is None:
                raise ValueError("a STARTED event needs its DuRootStarted payload")
            self._root = _root(started)
            self._started_at = ulid_time_ms(vid)
        elif event_type is DuRootCompleted:  # 4.
            self._completed_at = ulid_time_ms(vid)

    def state(self) -> WorkflowState:
        """The state after every event added so far."""
        recent = self._recent
        if self._command is not None:  # 5. (the latest command)
            recent = remember(recent, self._recent_head, self._command, self._vid)
        registry_id, global_root, host, host_root = self._root
        return WorkflowState(
            self.workflow_id,
            self._code,
            self._vid,
            self._seq,
            registry_id,
            global_root,
            host,
            host_root,
            self._started_at,
            self._completed_at,
            packed=recent,
        )


def _root(started: DuRootStarted) -> tuple[str, str, str, str]:
    """Rule 3: registry_id, global_root, host, host_root, in the state's order."""
    return started.registry_id, started.global_root, started.host, started.host_root
