"""Faults for the processor's Kafka client calls (`port.Faults`), given to
`Processor(..., faults=...)` by broker tests: each one counts what it injected, so a
test can assert that its fault happened as often as planned."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

T = TypeVar("T")


class ClientFaults:
    """No fault: every call runs as it would (the base of the ones below)."""

    def __init__(self) -> None:
        self.injected = 0  # faults injected so far

    def pause(self, what: str) -> None:
        return None

    def call(self, what: str, call: Callable[[], T]) -> T:
        return call()


def abortable(reason: str = "injected") -> KafkaException:
    """An error librdkafka flags as requiring the transaction's abort."""
    return KafkaException(KafkaError(KafkaError._STATE, reason, txn_requires_abort=True))


class FailCall(ClientFaults):
    """While armed (`arm(n)`: the next n times), call `what` raises `error` instead of
    running, or, with `after`, once it has run (an answer lost on its way back);
    `skip` such calls pass first."""

    def __init__(
        self,
        what: str,
        error: Callable[[], BaseException],
        after: bool = False,
        armed: int = 0,
        skip: int = 0,
    ) -> None:
        super().__init__()
        self.what, self.error, self.after = what, error, after
        self._armed, self._skip = armed, skip
        self._lock = threading.Lock()

    def arm(self, times: int = 1) -> None:
        with self._lock:
            self._armed = times

    @property
    def armed(self) -> bool:
        return self._armed > 0

    def call(self, what: str, call: Callable[[], T]) -> T:
        if what != self.what or not self._take():
            return call()
        if self.after:
            call()
        raise self.error()

    def _take(self) -> bool:
        with self._lock:
            if self._armed <= 0:
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            self._armed -= 1
            self.injected += 1
            return True


class StallBefore(ClientFaults):
    """Once armed, the loop thread stalls before call `what` until `resume` is set:
    `paused` is set meanwhile (a zombie between two transactional calls)."""

    def __init__(self, what: str, limit_s: float = 180.0) -> None:
        super().__init__()
        self.what, self.limit_s = what, limit_s
        self.armed, self.paused, self.resume = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )

    def pause(self, what: str) -> None:
        if what != self.what or not self.armed.is_set():
            return
        self.armed.clear()
        self.injected += 1
        self.paused.set()
        self.resume.wait(self.limit_s)


class Hang(ClientFaults):
    """Call `what` never returns (until `release` is set): a call librdkafka blocks in."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.release = threading.Event()

    def call(self, what: str, call: Callable[[], T]) -> T:
        if what == self.what:
            self.injected += 1
            self.release.wait()
        return call()


class StallFirstProduce(ClientFaults):
    """Once armed, the next transaction stalls at its first `produce`, until `resume`
    is set (`paused` is set meanwhile): its batch is open, but Kafka has not heard of
    the transaction yet, so its timeout does not run."""

    def __init__(self, limit_s: float = 180.0) -> None:
        super().__init__()
        self.limit_s = limit_s
        self.armed, self.paused, self.resume = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._begun = False

    def call(self, what: str, call: Callable[[], T]) -> T:
        if what == "begin_transaction" and self.armed.is_set():
            self.armed.clear()
            self._begun = True
        elif what == "produce" and self._begun:
            self._begun = False
            self.injected += 1
            self.paused.set()
            self.resume.wait(self.limit_s)
        return call()
