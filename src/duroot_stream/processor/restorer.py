"""Restores off the loop's thread: partitions assigned to a processor are restored
while it goes on handling the partitions it already owns.

The rebalance callback assigns the new partitions paused and `start`s their restore:
a thread of its own per assignment (a second assignment arriving meanwhile does not
wait behind the first, which may wait up to the transaction timeout for a dead
owner's transaction). The thread uses no client of the loop's (a consumer call from
another thread blocks while the loop is inside poll): its own short-lived consumer,
with the group's `group.id` and never joining it, asks for the committed offsets
(`restore.await_stable_offsets`), and `restore.restore_partitions` reads the events
with another; a dead previous owner's open transaction is ended (`fencing.py`). The
loop, before each batch, takes the `finished` restores, installs their workflows and
resumes their partitions.

Each assignment of a partition has an epoch: only the restore of its latest
assignment, still held, is installed. A partition revoked (or lost) mid-restore is
dropped, its result discarded; assigned again, it gets a fresh restore. A restore
whose partitions are all dropped, or whose processor stops, is called off between
its waits and fetches (`RestoreCancelled`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from duroot_stream.domain import WorkflowState
from duroot_stream.kafka import new_consumer
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import Codec, Topics

from .fencing import Fencer
from .port import Faults
from .restore import restore_assigned
from .restore_read import RestoreCancelled
from .settings import KAFKA_TIMEOUT_S, ProcessorSettings
from .standby import Warm
from .state_store import FoldedStates

log = logging.getLogger("duroot.processor")

# What one restore does: partitions and a `cancelled` check in; per partition its
# workflows and the records read out (the processor's: from Kafka, `_from_kafka`).
Restore = Callable[[list[int], Callable[[], bool]], dict[int, tuple[dict[str, WorkflowState], int]]]


@dataclass(frozen=True)
class Finished:
    """A restore's outcome: per partition its workflows and the records read, or
    the error it ended with."""

    epoch: int
    partitions: tuple[int, ...]
    started: float  # monotonic: when the partitions were assigned
    restored: dict[int, tuple[dict[str, WorkflowState], int]]
    error: Exception | None = None


class Restorer:
    """The restores under way. `start`, `drop`, `finished` and `close` are called from
    the loop's thread (the rebalance callbacks run in it too); the restore threads
    only read `_restoring` and put their outcome on `_done`. `restore`: how a restore
    is done (a test's stand-in; None: from Kafka); `faults`: a test's, for fencing;
    `standby`: hands over what a warm standby read of the partitions (standby.py)."""

    def __init__(
        self,
        settings: ProcessorSettings,
        topics: Topics,
        codec: Codec,
        metrics: ProcessorMetrics,
        stopping: threading.Event,
        restore: Restore | None = None,
        faults: Faults | None = None,
        standby: Callable[[list[int]], Mapping[int, Warm]] | None = None,
    ) -> None:
        self._settings = settings
        self._standby = standby
        self._topics = topics
        self._codec = codec
        self._metrics = metrics
        self._stop = stopping
        self._closing = threading.Event()
        self._epoch = 0
        self._restoring: dict[int, int] = {}  # partition -> epoch of its latest assignment
        self._done: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._installing: list[tuple[list[int], Finished]] = []  # for `announce`
        self._restore = restore or self._from_kafka
        after = settings.fence_after_s  # None: wait for the broker to end the transaction
        self._fence = (
            None
            if after is None
            else Fencer(
                settings.kafka,
                settings.group_id,
                settings.transactional_id,
                after,
                metrics.previous_owners_fenced.inc,
                faults,
            )
        )

    @property
    def restoring(self) -> list[int]:
        """The partitions assigned whose restore is not installed yet."""
        return sorted(self._restoring)

    def start(self, partitions: list[int]) -> None:
        """Restore newly assigned `partitions` (assigned paused) in a thread."""
        self._epoch += 1
        epoch, started = self._epoch, time.monotonic()
        for p in partitions:
            self._restoring[p] = epoch
            self._metrics.restore_in_progress.labels(str(p)).set(1)
        thread = threading.Thread(
            target=self._run,
            args=(epoch, tuple(partitions), started),
            name=f"restore-{'-'.join(map(str, partitions))}",
            daemon=True,  # joined at close; never keeps a failed process alive
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def drop(self, partitions: Iterable[int]) -> list[int]:
        """Revoked or lost: their restores, if under way, are not installed."""
        dropped = [p for p in partitions if self._restoring.pop(p, None) is not None]
        for p in dropped:
            self._metrics.restore_in_progress.labels(str(p)).set(0)
        if dropped:
            log.info("restore called off", extra={"partitions": dropped})
        return dropped

    def finished(self) -> list[tuple[int, dict[str, WorkflowState]]]:
        """The restored partitions to install now (partition, workflows), each still
        held and restored for its latest assignment; raises the error a restore of
        such a partition ended with (`ProcessorFatal`: the processor stops)."""
        out: list[tuple[int, dict[str, WorkflowState]]] = []
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return out
            current = [p for p in done.partitions if self._restoring.get(p) == done.epoch]
            if done.error is not None:
                if isinstance(done.error, RestoreCancelled):
                    continue
                if current:
                    raise done.error
                log.warning(  # its partitions are no longer ours
                    "restore failed after its partitions were revoked",
                    extra={"partitions": list(done.partitions), "error": str(done.error)},
                )
                continue
            stale = sorted(set(done.partitions) - set(current))
            if stale:
                log.info("stale restore discarded", extra={"partitions": stale})
            for p in current:
                del self._restoring[p]
                self._record(p, done.restored[p][1], done.started)
                out.append((p, done.restored[p][0]))
            if current:
                self._installing.append((current, done))

    def announce(self) -> None:
        """The restores `finished` handed out are installed and their partitions
        answered: one `partitions restored` line per assignment, and its takeover
        time (assignment to answering), which includes waiting for a previous owner's
        transaction or fencing it."""
        for partitions, done in self._installing:
            self._metrics.takeover_duration.observe(time.monotonic() - done.started)
            self._log(partitions, done)
        self._installing.clear()

    def close(self) -> None:
        """Call off the restores under way and wait for their threads."""
        self._closing.set()
        for thread in self._threads:
            thread.join(KAFKA_TIMEOUT_S)
            if thread.is_alive():
                log.warning("restore thread still running at stop", extra={"thread": thread.name})
        if self._fence is not None:
            self._fence.close()

    def _run(self, epoch: int, partitions: tuple[int, ...], started: float) -> None:
        def cancelled() -> bool:
            if self._stop.is_set() or self._closing.is_set():
                return True
            return all(self._restoring.get(p) != epoch for p in partitions)

        try:
            restored = self._restore(list(partitions), cancelled)
        except Exception as exc:  # raised by the loop (`finished`), unless called off
            self._done.put(Finished(epoch, partitions, started, {}, exc))
            return
        self._done.put(Finished(epoch, partitions, started, restored))

    def _from_kafka(
        self, partitions: list[int], cancelled: Callable[[], bool]
    ) -> dict[int, tuple[dict[str, WorkflowState], int]]:
        settings, topics = self._settings, self._topics
        # Asks for the group's committed offsets as the loop's consumer would
        # (require_stable, read_committed), without joining the group.
        consumer = new_consumer(
            settings.kafka,
            **{
                "group.id": settings.group_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            },
        )
        try:
            return restore_assigned(
                consumer,
                settings.kafka,
                topics.commands,
                topics.events,
                partitions,
                self._codec,
                settings.restore_wait(),
                self._fence,
                cancelled,
                self._metrics,
                self._standby,
            )
        finally:
            consumer.close()

    def _record(self, partition: int, events: int, started: float) -> None:
        label, metrics = str(partition), self._metrics
        metrics.restore_in_progress.labels(label).set(0)
        metrics.restore_events.labels(label).inc(events)
        metrics.restore_duration.labels(label).set(time.monotonic() - started)

    def _log(self, partitions: list[int], done: Finished) -> None:
        events = sum(done.restored[p][1] for p in partitions)
        elapsed = time.monotonic() - done.started
        log.info(
            "partitions restored",
            extra={
                "partitions": sorted(partitions),
                "workflows": sum(len(done.restored[p][0]) for p in partitions),
                "events": events,
                "from_state": sorted(
                    p for p in partitions if not isinstance(done.restored[p][0], FoldedStates)
                ),
                "seconds": round(elapsed, 3),
                "events_per_s": int(events / elapsed) if elapsed > 0 else None,
            },
        )
