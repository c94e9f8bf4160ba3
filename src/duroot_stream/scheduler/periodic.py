"""The scheduler: begins a du of every root of a roots file once per period.

For each root whose moment in the current period has come (`plan.Plan`):

1. Read the index table once for all roots due now. The root's workflow of this
   period is there already: skipped (`already_begun`). Another workflow of the
   root is still active: skipped (`active`) for this period, never begun twice
   at once.
2. Send the Init of the period's workflow, expecting the empty history
   (`EVENT_EPOCH`). Accepted: begun. Rejected because the workflow exists (a
   version conflict: another scheduler came first): skipped (`already_begun`).
3. Kafka or the processor did not answer: counted as failed to begin and tried
   again after `retry_s` (the same command: applied late, it still counts as
   begun), as long as the period lasts. A rejection for any other
   reason (an invalid registry id, say) is logged and not tried again this period.

A restart begins, at once, every root whose moment in the current period has
passed, and step 1 or 2 finds those begun before. Missed periods are not made up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, Counter, Gauge

from duroot_stream.client import (
    DuRootClient,
    DuRootError,
    DuRootReader,
    IndexEntry,
    Root,
    Unavailable,
    WorkflowConflict,
    make_command,
)
from duroot_stream.client.commands import canonical_uuid
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import EVENT_EPOCH, Command, Init
from duroot_stream.ids import now_ms
from duroot_stream.metrics import build_info

from .plan import Plan

log = logging.getLogger("duroot.scheduler")

MAX_WAIT_S = 30.0  # look at the clock at least this often (it may jump)
SKIP_REASONS = ("active", "already_begun")


@dataclass(frozen=True)
class SchedulerSettings:
    kafka: KafkaConfig
    roots: Mapping[str, Root]  # global root -> where it lives (a roots file)
    every_s: float
    spread_s: float | None = None  # None: the whole period
    command_timeout_s: float = 30.0
    retry_s: float = 60.0
    metrics_port: int | None = None
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        """ValueError for a registry id that is not a UUID, or a bad period or spread."""
        roots = {
            name: replace(
                root, registry_id=canonical_uuid(root.registry_id, f"{name}: registry id")
            )
            for name, root in self.roots.items()
        }
        object.__setattr__(self, "roots", roots)
        every_ms = round(self.every_s * 1000)
        spread = every_ms if self.spread_s is None else round(self.spread_s * 1000)
        object.__setattr__(self, "plan", Plan(every_ms, spread))


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        build_info(self.registry)
        r = self.registry
        self.begun = Counter("duroot_schedule_begun", "du runs begun (Init accepted).", registry=r)
        self.skipped = Counter(
            "duroot_schedule_skipped",
            "Roots not begun in a period, by reason: active (its last run is still "
            "running), already_begun (by another scheduler, or before a restart).",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        self.failures = Counter(
            "duroot_schedule_begin_failures",
            "Attempts to begin a du that failed (Kafka or the processor did not answer, "
            "or the Init was rejected).",
            registry=r,
        )
        labels = ["host", "root"]
        self.period = Gauge(
            "duroot_schedule_period_seconds",
            "How often the root is measured (--every).",
            labels,
            registry=r,
        )
        self.since = Gauge(
            "duroot_schedule_since_timestamp_seconds",
            "Since when this scheduler schedules the root (its start).",
            labels,
            registry=r,
        )
        self.next_begin = Gauge(
            "duroot_schedule_next_begin_timestamp_seconds",
            "When the root's next du is due (or due again, after a failure).",
            labels,
            registry=r,
        )


class Scheduler:
    """`run()` until `stop()`. `clock`: milliseconds since the epoch (tests pass their own)."""

    def __init__(self, settings: SchedulerSettings, clock: Callable[[], int] = now_ms) -> None:
        if not settings.roots:
            raise ValueError("no roots to schedule")
        self.settings = settings
        self.plan = settings.plan
        self.clock = clock
        self.metrics = SchedulerMetrics()
        self.ready = threading.Event()  # set after the first look at what is due
        self._stop = threading.Event()
        self._done: dict[str, int] = {}  # global root -> the last period it was handled in
        self._retry_at: dict[str, int] = {}  # global root -> not before (ms)
        self._attempts: dict[str, Command] = {}  # global root -> its Init not answered yet

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        kafka = self.settings.kafka
        started = self.clock() / 1000
        for global_root, root in self.settings.roots.items():
            labels = (root.host, global_root)
            self.metrics.period.labels(*labels).set(self.plan.every_ms / 1000)
            self.metrics.since.labels(*labels).set(started)
        with DuRootClient(kafka, timeout=self.settings.command_timeout_s) as client:
            reader = DuRootReader(kafka)
            while not self._stop.is_set():
                now = self.clock()
                due = self._due(now)
                if due:
                    self._begin(client, reader, due, self.plan.period(now), now)
                self.ready.set()
                wake = self._next_wake(self.clock())
                self._stop.wait(min(MAX_WAIT_S, max(0.0, (wake - self.clock()) / 1000)))

    def _due(self, now: int) -> list[str]:
        period = self.plan.period(now)
        return [
            name
            for name, root in self.settings.roots.items()
            if self._done.get(name) != period
            and self.plan.due_ms(period, name, root) <= now
            and self._retry_at.get(name, 0) <= now
        ]

    def _next_wake(self, now: int) -> int:
        period = self.plan.period(now)
        wakes = []
        for name, root in self.settings.roots.items():
            if self._done.get(name) == period:
                wake = self.plan.due_ms(period + 1, name, root)
            else:
                wake = max(self.plan.due_ms(period, name, root), self._retry_at.get(name, 0))
            self.metrics.next_begin.labels(root.host, name).set(wake / 1000)
            wakes.append(wake)
        return min(wakes)

    def _begin(
        self,
        client: DuRootClient,
        reader: DuRootReader,
        due: list[str],
        period: int,
        now: int,
    ) -> None:
        # 1. One read of the index for every root due now.
        try:
            entries = reader.index()
        except DuRootError as exc:
            for name in due:
                self._failed(name, period, now, exc)
            return
        for name in due:
            root = self.settings.roots[name]
            wf = self.plan.workflow_id(period, name, root)
            skip = _skip_reason(entries, wf, name, root)
            if skip is None:
                skip = self._init(client, wf, name, root, period, now)
            else:
                self._done[name] = period
            if skip is not None:
                self.metrics.skipped.labels(skip).inc()
                log.info("not begun", extra={"root": name, "reason": skip, "workflow_id": wf})

    def _init(
        self, client: DuRootClient, wf: str, name: str, root: Root, period: int, now: int
    ) -> str | None:
        """2. Init the period's workflow; the skip reason, or None when begun or failed.

        A retry sends the failed attempt's command again, same command id: if that one
        was applied after all, the processor answers with its first reply (begun)."""
        attempt = self._attempts.get(name)
        if attempt is None or attempt.workflow_id != wf:
            body = Init(root.registry_id, name, root.host, root.host_root)
            attempt = self._attempts[name] = make_command(wf, body, EVENT_EPOCH)
        try:
            client.send(attempt)
        except WorkflowConflict:
            self._done[name] = period
            del self._attempts[name]
            return "already_begun"
        except DuRootError as exc:
            self._failed(name, period, now, exc)
            return None
        self._done[name] = period
        del self._attempts[name]
        self.metrics.begun.inc()
        log.info("began", extra={"root": name, "host": root.host, "workflow_id": wf})
        return None

    def _failed(self, name: str, period: int, now: int, exc: DuRootError) -> None:
        """3. Counted; tried again later if Kafka or the processor may answer then."""
        self.metrics.failures.inc()
        if isinstance(exc, Unavailable):
            self._retry_at[name] = now + round(self.settings.retry_s * 1000)
            log.warning("could not begin; trying again", extra={"root": name, "error": str(exc)})
        else:
            self._done[name] = period
            log.error("could not begin", extra={"root": name, "error": str(exc)})


def _skip_reason(entries: Mapping[str, IndexEntry], wf: str, name: str, root: Root) -> str | None:
    """1. Why the root is not to be begun now, as far as the index tells; None: begin it."""
    if wf in entries:
        return "already_begun"
    for entry in entries.values():
        if (
            entry.state == "active"
            and entry.global_root == name
            and entry.registry_id == root.registry_id
        ):
            return "active"
    return None
