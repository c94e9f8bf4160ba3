"""The failover benchmark's figures: from the load client's files and the processors' logs.

`Timeline` follows the sender's and the receiver's JSON lines while they are
written (`benchmarks.failover_client`). `partition_figures` reduces one
partition's commands around the event to the figures of `FailoverPartition`
(see `benchmarks.failover` for their definitions); `read_log` and the
functions after it read what the processors logged (`--log-format json`).
"""

from __future__ import annotations

import calendar
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.latency import percentile
from benchmarks.results import FailoverPartition, Takeover

PARTITIONS = 6
RESTORED = "partitions restored"
REVOKED = "partitions revoked"
WAITING = "restore waiting for an open transaction"
# librdkafka's words for a member the group gave up on (or that gave up on the group).
EVICTION = re.compile(
    r"session timed out|UNKNOWN_MEMBER_ID|FENCED_MEMBER_EPOCH|fenced|lost|max\.poll",
    re.IGNORECASE,
)


class Tail:
    """New complete JSON lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[Any]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line]


@dataclass
class Timeline:
    """Every command sent (partition, sent) and when its reply became visible."""

    sent_file: Path
    seen_file: Path
    sent: dict[str, tuple[int, float]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    produced: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sent, self._seen = Tail(self.sent_file), Tail(self.seen_file)

    def update(self) -> None:
        for command_id, partition, at in self._sent.read():
            self.sent[command_id] = (int(partition), float(at))
        for command_id, visible, produced in self._seen.read():
            self.seen.setdefault(command_id, float(visible))
            self.produced.setdefault(command_id, float(produced))

    def answering(self, since: float, within_s: float = 1.0) -> set[int]:
        """Partitions that answered a command sent after `since` within `within_s`."""
        return {
            p
            for cid, (p, at) in self.sent.items()
            if at >= since and cid in self.seen and self.seen[cid] - at <= within_s
        }

    def outstanding(self) -> int:
        return sum(1 for cid in self.sent if cid not in self.seen)

    def rate(self) -> float:
        times = [at for _, at in self.sent.values()]
        return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


def partition_figures(
    timeline: Timeline,
    partition: int,
    event: float,
    end: float,
    steady_from: float,
    owners: tuple[str, str],
    moved: bool,
) -> FailoverPartition:
    """One partition's figures; `event` and `end` bound the observation (epoch seconds)."""
    mine = [(cid, at) for cid, (p, at) in timeline.sent.items() if p == partition]
    before = sorted(
        (timeline.seen[cid] - at) * 1000
        for cid, at in mine
        if steady_from <= at < event - 1 and cid in timeline.seen
    )
    # Commands outstanding at the event or sent after it until the end of the
    # observation; an unanswered one counts as waiting until the end.
    window = [
        (at, timeline.seen.get(cid), timeline.produced.get(cid))
        for cid, at in mine
        if at <= end and timeline.seen.get(cid, end) >= event
    ]
    waited = max(((v or end) - max(at, event) for at, v, _ in window), default=0.0)
    handled = max(((r or end) - max(at, event) for at, _, r in window), default=0.0)
    visible = sorted(v for _, v, _ in window if v is not None and v <= end)
    missing = sum(1 for _, v, _ in window if v is None)
    bounds = [event, *visible, *([end] if missing else [])]
    silent, back = 0.0, 0.0
    for a, b in itertools.pairwise(bounds):
        if b - a > silent:
            silent, back = b - a, b - event
    return FailoverPartition(
        partition=partition,
        owner_before=owners[0],
        owner_after=owners[1],
        moved=moved,
        waited_s=round(waited, 3),
        produced_waited_s=round(handled, 3),
        silent_s=round(silent, 3),
        back_after_s=round(back, 3),
        p99_before_ms=round(percentile(before, 0.99), 1),
        commands=len(window),
        missing=missing,
    )


# --- the processors' logs ---------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    at: float  # epoch seconds
    instance: str
    logger: str
    level: str
    msg: str
    fields: dict[str, Any] = field(hash=False)


def read_log(path: Path, instance: str) -> list[LogLine]:
    """The JSON lines of one processor's log (other lines, e.g. a traceback, skipped)."""
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not raw.startswith("{"):
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        stamp, _, millis = str(entry.pop("ts")).rstrip("Z").partition(".")
        at = calendar.timegm(_parse_utc(stamp)) + int(millis or 0) / 1000
        out.append(
            LogLine(
                at,
                instance,
                str(entry.pop("logger", "")),
                str(entry.pop("level", "")),
                str(entry.pop("msg", "")),
                entry,
            )
        )
    return out


def _parse_utc(stamp: str) -> tuple[int, ...]:
    date, _, clock = stamp.partition("T")
    return (*map(int, date.split("-")), *map(int, clock.split(":")), 0, 0, 0)


def rebalances(lines: Iterable[LogLine], since: float, until: float) -> int:
    """Assignments and revocations the processors logged in [since, until)."""
    return sum(1 for x in lines if x.msg in (RESTORED, REVOKED) and since <= x.at < until)


def evictions(lines: Iterable[LogLine], since: float) -> list[str]:
    """librdkafka's warnings and errors that tell of a member leaving the group."""
    return [
        f"{x.instance}: {x.msg}"
        for x in lines
        if x.at >= since
        and x.logger == "librdkafka"
        and x.level in ("warning", "error")
        and EVICTION.search(x.msg)
    ]


def takeovers(lines: Sequence[LogLine], event: float, end: float) -> list[Takeover]:
    """Every restore that ended between the event and the end of the observation, with
    whether it waited for an open transaction (a previous owner's, on the commands'
    offsets or the events)."""
    out = []
    for x in lines:
        if x.msg != RESTORED or not event <= x.at <= end:
            continue
        began = x.at - float(x.fields.get("seconds", 0.0))
        waited = any(
            y.msg == WAITING and y.instance == x.instance and began - 0.01 <= y.at <= x.at
            for y in lines
        )
        out.append(
            Takeover(
                instance=x.instance,
                partitions=tuple(sorted(int(p) for p in x.fields.get("partitions", []))),
                assigned_after_s=round(began - event, 3),
                restore_s=round(float(x.fields.get("seconds", 0.0)), 3),
                events=int(x.fields.get("events", 0)),
                waited_for_transaction=waited,
            )
        )
    return out
