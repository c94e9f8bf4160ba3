"""One follower of the events topic per web view: a tally per workflow (lines, state)
for the index page, and a fan-out of new events to the open pages (server-sent events).

One consumer for all browser tabs, not one each; the pages ask the reader for
everything else."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from duroot_stream.client import DuRootError, DuRootReader, StoredEvent
from duroot_stream.domain import (
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    StateCode,
)

log = logging.getLogger(__name__)

RETRY_S = 2.0  # after Kafka was unreachable
QUEUE_LIMIT = 1000  # events a slow page may fall behind before it misses some


@dataclass(frozen=True, slots=True)
class Tally:
    """What the events topic says of one workflow so far."""

    lines: int = 0
    state: StateCode = StateCode.UNINITIALIZED
    last_seq: int = -1
    # From STARTED: the index loses it when compaction keeps only a workflow's COMPLETED.
    global_root: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """One new event, as a page is told about it."""

    workflow_id: str
    seq: int
    kind: str  # the payload's type, or "Deleted" for a tombstone
    lines: int  # the workflow's lines so far

    def as_json(self) -> dict[str, object]:
        return {"workflow_id": self.workflow_id, "seq": self.seq, "kind": self.kind}


_STATE_AFTER = {
    DuRootStarted: StateCode.INITIALIZED,
    DuUpdated: StateCode.APPENDING,
    DuRootCompleted: StateCode.COMPLETED,
    DuRootCommitted: StateCode.TERMINATED,
}


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Notice | None]  # None: the view is closing
    workflow_id: str | None


@dataclass(eq=False)
class Live:
    """Follows the events topic from its beginning in a thread (`start`, `stop`)."""

    reader: DuRootReader
    tallies: dict[str, Tally] = field(default_factory=dict)
    error: str | None = None  # why Kafka cannot be read now; None when it can
    _stop: threading.Event = field(default_factory=threading.Event)
    _subscribers: set[_Subscriber] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following, and end the pages' event streams (they would hold up a shutdown)."""
        self._stop.set()
        with self._lock:
            for sub in self._subscribers:
                sub.loop.call_soon_threadsafe(_offer, sub.queue, None)
        if self._thread is not None:
            self._thread.join(10)

    def subscribe(self, workflow_id: str | None) -> _Subscriber:
        """New events from now on (of one workflow, or all) into the subscriber's queue;
        call from the event loop that reads the queue."""
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(QUEUE_LIMIT), workflow_id)
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def _run(self) -> None:
        while not self._stop.is_set():
            # From the beginning again after an outage: a tally must not count twice.
            self.tallies = {}
            try:
                positioned = _Reachable(self)
                for stored in self.reader.events(
                    follow=True, stop=self._stop, positioned=positioned
                ):
                    self._add(stored)
            except DuRootError as exc:
                self.error = str(exc)
                log.warning("web view: cannot follow the events topic: %s", exc)
                self._stop.wait(RETRY_S)
            except Exception:  # a bug must not end the view silently
                log.exception("web view: the events follower failed")
                self._stop.wait(RETRY_S)

    def _add(self, stored: StoredEvent) -> None:
        wf = stored.workflow_id
        before = self.tallies.get(wf, Tally())
        if stored.event is None:
            self.tallies.pop(wf, None)
            kind, after = "Deleted", Tally()
        else:
            payload = stored.event.payload
            kind = type(payload).__name__
            after = Tally(
                before.lines + (type(payload) is DuUpdated),
                _STATE_AFTER.get(type(payload), before.state),
                stored.seq,
                payload.global_root if type(payload) is DuRootStarted else before.global_root,
            )
            self.tallies[wf] = after
        notice = Notice(wf, stored.seq, kind, after.lines)
        with self._lock:
            subscribers = [s for s in self._subscribers if s.workflow_id in (None, wf)]
        for sub in subscribers:
            sub.loop.call_soon_threadsafe(_offer, sub.queue, notice)


class _Reachable(threading.Event):
    """Set by the reader once it has read the metadata: Kafka answers again."""

    def __init__(self, live: Live) -> None:
        super().__init__()
        self.live = live

    def set(self) -> None:
        self.live.error = None
        super().set()


def _offer(queue: asyncio.Queue[Notice | None], notice: Notice | None) -> None:
    if notice is None:
        while queue.full():  # the end must get through
            queue.get_nowait()
    if not queue.full():  # a page that stopped reading misses events, the rest do not
        queue.put_nowait(notice)
