"""Transactional calls: which one runs now (for the hung-call exit, `exit_when_hung`),
and a worker thread to run them in, so that one that ignores its timeout can be left
behind.

After a broker restart librdkafka's `send_offsets_to_transaction` can block past
its timeout for good (librdkafka issues 5456 and 5511: a coordinator request whose
timeout is never checked). The call cannot be interrupted, but it need not block
the processor: `Worker.run` waits for it only so long, and the transaction then
gives up the producer for a new one (`Transaction.renew`), leaving the stuck call
to its own daemon thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

log = logging.getLogger("duroot.processor")

WATCHDOG_CHECK_S = 5.0  # how often the hung-call exit looks (more often for a short limit)


class Call(NamedTuple):
    what: str
    started: float


class CallWatch:
    """The transactional call running now, for the hung-call exit (read from any thread)."""

    def __init__(self) -> None:
        self.call: Call | None = None

    def hung(self, limit_s: float) -> tuple[str, float] | None:
        call = self.call
        if call is None or time.monotonic() - call.started <= limit_s:
            return None
        return call.what, time.monotonic() - call.started


class CallTimedOut(Exception):
    """The call did not return in time; it may still be running in the worker."""


class _Job:
    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Worker:
    """One daemon thread that runs calls one at a time (a daemon: a call stuck in C
    never keeps the process from exiting)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def run(self, call: Callable[[], T], timeout: float) -> T:
        """`call()` in the worker; its result or exception, or `CallTimedOut`."""
        job = _Job(call)
        self._jobs.put(job)
        if not job.done.wait(timeout):
            raise CallTimedOut(f"no answer after {timeout:.0f} s")
        if job.error is not None:
            raise job.error
        value: T = job.value
        return value

    def close(self) -> None:
        """The thread ends after the call it runs now, if that ever returns."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.value = job.call()
            except BaseException as exc:  # handed to the caller
                job.error = exc
            finally:
                job.done.set()
            del job  # the call's closure (its producer) must not outlive it here


def exit_when_hung(
    hung: Callable[[float], tuple[str, float] | None],
    limit_s: float,
    exit: Callable[[int], object] = os._exit,
) -> threading.Thread:
    """Start a daemon thread that exits the process (status 1) once `hung(limit_s)`
    names a transactional call running longer than `limit_s` (`Processor.hung_call`).

    Such a call cannot be interrupted, and librdkafka can block in one for good
    after a broker restart (issues 5456, 5511); a restart, with new clients, recovers."""

    def watch() -> None:
        while True:
            time.sleep(min(WATCHDOG_CHECK_S, limit_s / 4))
            found = hung(limit_s)
            if found is not None:
                log.error(
                    "processor stopped: Kafka call %s has not returned for %.0f s, past its "
                    "timeout; exiting so that a restart recovers",
                    *found,
                )
                exit(1)
                return

    thread = threading.Thread(target=watch, name="watchdog", daemon=True)
    thread.start()
    return thread
