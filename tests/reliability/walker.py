"""One workflow's random walk of commands (`Walker`): what the load sends, one in
flight at a time; workload.py's `Driver` runs the walkers."""

from __future__ import annotations

import random
import re
import uuid
from collections import deque
from dataclasses import dataclass, field

from duroot_stream.domain import (
    NO_VC,
    RETRY_NO_VC,
    AbortExpired,
    Append,
    Command,
    CommandBody,
    Commit,
    Delete,
    End,
    ErrorCode,
    Fail,
    Init,
    PathUsage,
    Reply,
    StateCode,
    encode_ulid,
)
from duroot_stream.ids import new_ulid, now_ms

_STATE_IN_MESSAGE = re.compile(r"(?:state|advanced to) ([A-Z]+)$")


def random_ulid(rng: random.Random) -> str:
    """A well-formed ULID that no event has (the run's ids are of today)."""
    return encode_ulid((rng.getrandbits(40) << 80) | rng.getrandbits(80))


@dataclass
class Walker:
    """One workflow's requester: a random walk over the commands."""

    workflow_id: str
    rng: random.Random
    budget: int  # commands still to send
    registry_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    belief: StateCode = StateCode.UNINITIALIZED
    last_vid: str | None = None
    vids: list[str] = field(default_factory=list)  # every vid a reply gave, oldest first
    recent: deque[Command] = field(default_factory=lambda: deque(maxlen=4))
    resent: int = 0

    def next_command(self) -> Command:
        rng = self.rng
        if self.recent and rng.random() < 0.05:
            self.resent += 1
            return rng.choice(self.recent)  # the same command id again
        body = self._body()
        command = Command(new_ulid(), self.workflow_id, self._expected_vid(), now_ms(), body)
        self.recent.append(command)
        return command

    def on_reply(self, command: Command, reply: Reply) -> None:
        if reply.ok:
            assert reply.vid is not None
            self.last_vid = reply.vid
            self.vids.append(reply.vid)
            match command.body:
                case Init():
                    self.belief = StateCode.INITIALIZED
                case Append():
                    self.belief = StateCode.APPENDING
                case Commit() | Fail() | AbortExpired() if self.belief < StateCode.COMPLETED:
                    self.belief = StateCode.TERMINATED  # completion ends at once
                case Delete():
                    self.belief = StateCode.UNINITIALIZED
        elif reply.error in (ErrorCode.CONFLICT_STATE, ErrorCode.CONFLICT_STATE_ADVANCED):
            match = _STATE_IN_MESSAGE.search(reply.message)
            if match and match.group(1) in StateCode.__members__:
                self.belief = StateCode[match.group(1)]

    def _expected_vid(self) -> str:
        r = self.rng.random()
        if r < 0.45 and self.last_vid is not None:
            return self.last_vid
        if r < 0.57 and len(self.vids) > 1:
            return self.rng.choice(self.vids[:-1])  # stale
        if r < 0.62:
            return random_ulid(self.rng)  # never existed
        if r < 0.67:
            return RETRY_NO_VC
        return NO_VC

    def _init(self) -> Init:
        return Init(self.registry_id, f"/g/{self.workflow_id}", "files.example.org", "/srv/data")

    def _body(self) -> CommandBody:
        rng = self.rng
        r = rng.random()
        if r < 0.03:  # an invalid argument
            invalid: list[CommandBody] = [
                Init(self.registry_id, "/g", "", "/r"),
                Init("00000000-0000-0000-0000-000000000000", "/g", "h", "/r"),
                Fail(0, "zero is not a failure code"),
                Append(()),
            ]
            return rng.choice(invalid)
        if r < 0.10:  # any command type at all
            anything: list[CommandBody] = [
                self._init(),
                Init(self.registry_id, "/elsewhere", "h", "/r"),  # CONFLICT_INIT
                self._append(),
                Commit(),
                Fail(rng.randint(1, 200), "failed on purpose"),
                AbortExpired(),
                End(),
                Delete(),
            ]
            return rng.choice(anything)
        match self.belief:
            case StateCode.UNINITIALIZED:
                return self._init()
            case StateCode.INITIALIZED | StateCode.APPENDING:
                if r < 0.80:
                    return self._append()
                if r < 0.88:
                    return Commit()
                if r < 0.92:
                    return Fail(rng.randint(1, 200), "du failed: on purpose")
                if r < 0.94:
                    return AbortExpired()
                return self._init()  # the same Init again: a no-op
            case _:
                if r < 0.60:
                    return Delete()
                if r < 0.75:
                    return End()  # a no-op on TERMINATED
                return Commit()  # CONFLICT_STATE
        raise AssertionError("unreachable")

    def _append(self) -> Append:
        rng = self.rng
        n = rng.randint(100, 300) if rng.random() < 0.01 else rng.randint(1, 3)
        return Append(
            tuple(
                PathUsage(f"d{rng.randrange(100)}/f{rng.randrange(10_000)}", rng.getrandbits(40))
                for _ in range(n)
            )
        )
