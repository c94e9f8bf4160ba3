"""A reference model of one workflow, written from docs/contract.md for the
reliability verifier, independent of `duroot_stream.domain`.

It works on commands as `contract_wire` decodes them (plain dicts, a body as
(record name, fields)). `decide` says what the contract expects of a command:
the reply's outcome and the event payloads, index payloads and tombstones to
write; the verifier matches those with what the processor wrote and hands the
event ids it found to `apply`. The model makes no ids of its own: a workflow's
vid is the id of the last event found.

The contract, section by section:
- Request-reply: the last 16 command ids that emitted events are remembered per
  workflow, and a repeat gets the reply it got first, emitting nothing;
- Order of checks: repeated id, then the fields (INVALID_ARGUMENT), then the
  version (VERSION_CONFLICT), then the state table;
- The state machine's table, and what goes with the events: STARTED and COMPLETED
  are mirrored on the index, COMPLETED is followed by the processor's own End
  (COMMITTED), a Delete tombstones every event key, writes index DuRootDeleted
  and an index tombstone, and leaves the workflow UNINITIALIZED.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.contract_wire import (
    EVENT_EPOCH,
    NIL_UUID,
    NO_VC,
    RETRY_NO_VC,
    UUID_TEXT,
)

RECENT_COMMANDS = 16
STATUS_EXPIRED = (104, "expired")
LONG_MAX = 2**63 - 1

Payload = tuple[str, dict[str, Any]]  # (record name, fields), as fastavro reads a union

UNINITIALIZED, INITIALIZED, APPENDING, COMPLETED, TERMINATED = (
    "UNINITIALIZED",
    "INITIALIZED",
    "APPENDING",
    "COMPLETED",
    "TERMINATED",
)
_ACTIVE = (INITIALIZED, APPENDING)
_COMMITTED: Payload = ("DuRootCommitted", {})


@dataclass(frozen=True)
class Outcome:
    """What the contract expects of one command."""

    ok: bool
    error: str | None = None
    events: tuple[Payload, ...] = ()
    index: Payload | None = None  # mirrors events[0]; or DuRootDeleted
    registry_id: str = ""  # of the index record
    tombstones: tuple[str, ...] = ()  # event keys, in seq order (Delete)
    repeated_vid: str | None = None  # a repeated command id: the vid of its first reply

    @property
    def deletes(self) -> bool:
        return bool(self.index and self.index[0] == "DuRootDeleted")


@dataclass
class Workflow:
    """One workflow as the contract describes its state."""

    workflow_id: str
    state: str = UNINITIALIZED
    vid: str = EVENT_EPOCH
    seq: int = 0  # events in the history = the next event's seq
    root: dict[str, Any] = field(default_factory=dict)  # the Init's four fields
    recent: OrderedDict[str, str] = field(default_factory=OrderedDict)  # command id -> vid

    def decide(self, command: dict[str, Any]) -> Outcome:
        if command["command_id"] in self.recent:
            return Outcome(True, repeated_vid=self.recent[command["command_id"]])
        name, body = command["command"]
        if _invalid(name, body):
            return Outcome(False, "INVALID_ARGUMENT")
        expected = command["expected_vid"]
        if expected not in (NO_VC, RETRY_NO_VC) and expected != self.vid:
            return Outcome(False, "VERSION_CONFLICT")
        return _TABLE[name](self, body)

    def apply(self, command_id: str, outcome: Outcome, event_ids: list[str]) -> None:
        """The state after `outcome` whose events were found with `event_ids`."""
        if outcome.deletes:
            self.state, self.vid, self.seq, self.root = UNINITIALIZED, EVENT_EPOCH, 0, {}
            self.recent.clear()
            return
        if not outcome.events:
            return
        for (name, fields), _ in zip(outcome.events, event_ids, strict=True):
            if name == "DuRootStarted":
                self.state, self.root = INITIALIZED, dict(fields)
            elif name == "DuUpdated":
                self.state = APPENDING
            elif name == "DuRootCompleted":
                self.state = COMPLETED
            else:
                self.state = TERMINATED
        self.vid = event_ids[-1]
        self.seq += len(event_ids)
        self.recent.pop(command_id, None)
        self.recent[command_id] = self.vid
        while len(self.recent) > RECENT_COMMANDS:
            self.recent.popitem(last=False)

    def reply_vid(self, outcome: Outcome) -> str | None:
        """The vid an accepted command's reply names (after `apply`); None if rejected."""
        if not outcome.ok:
            return None
        return outcome.repeated_vid or self.vid


def _invalid(name: str, body: dict[str, Any]) -> bool:
    """The fields the contract's order of checks names."""
    if name == "Init":
        registry = body["registry_id"]
        empty = not (body["global_root"] and body["host"] and body["host_root"])
        return not UUID_TEXT.fullmatch(registry) or registry == NIL_UUID or empty
    if name == "Fail":
        return bool(body["code"] == 0)
    if name == "Append":
        paths = body["paths"]
        return not paths or any(not 0 <= p["usage"] <= LONG_MAX for p in paths)
    return False


def _conflict() -> Outcome:
    return Outcome(False, "CONFLICT_STATE")


def _no_op() -> Outcome:
    return Outcome(True)


def _complete(wf: Workflow, code: int, message: str) -> Outcome:
    completed = {"status_code": code, "status_message": message}
    events = (("DuRootCompleted", completed), _COMMITTED)
    return Outcome(True, events=events, index=events[0], registry_id=wf.root["registry_id"])


def _init(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state == UNINITIALIZED:
        root = {k: body[k] for k in ("global_root", "host", "host_root")}
        started = ("DuRootStarted", dict(body))
        return Outcome(
            True, events=(started,), index=("DuRootStarted", root), registry_id=body["registry_id"]
        )
    if wf.state == INITIALIZED:
        return _no_op() if wf.root == body else Outcome(False, "CONFLICT_INIT")
    return Outcome(False, "CONFLICT_STATE_ADVANCED")


def _append(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state not in _ACTIVE:
        return _conflict()
    return Outcome(True, events=tuple(("DuUpdated", dict(p)) for p in body["paths"]))


def _commit(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state in _ACTIVE:
        return _complete(wf, 0, "")
    return _no_op() if wf.state == COMPLETED else _conflict()


def _fail(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state in _ACTIVE:
        return _complete(wf, body["code"], body["message"])
    return _no_op() if wf.state == COMPLETED else _conflict()


def _abort_expired(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state in _ACTIVE:
        return _complete(wf, *STATUS_EXPIRED)
    return _no_op() if wf.state in (COMPLETED, TERMINATED) else _conflict()


def _end(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state == COMPLETED:
        return Outcome(True, events=(_COMMITTED,))
    return _no_op() if wf.state == TERMINATED else _conflict()


def _delete(wf: Workflow, body: dict[str, Any]) -> Outcome:
    if wf.state == UNINITIALIZED:
        return _no_op()
    if wf.state in _ACTIVE:
        return _conflict()
    keys = tuple(f"{wf.workflow_id}/{seq}" for seq in range(wf.seq))
    registry = wf.root["registry_id"]
    return Outcome(True, index=("DuRootDeleted", {}), registry_id=registry, tombstones=keys)


_TABLE = {
    "Init": _init,
    "Append": _append,
    "Commit": _commit,
    "Fail": _fail,
    "AbortExpired": _abort_expired,
    "End": _end,
    "Delete": _delete,
}
