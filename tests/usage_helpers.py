"""Services in threads and the Inits applied, for the scheduler and exporter tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TypeVar

from duroot_stream.client import DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootStarted
from tests.kafka_helpers import wait_until

START_TIMEOUT_S = 60.0


class Service(Protocol):
    ready: threading.Event

    def run(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


@contextmanager
def running(service: S, what: str) -> Iterator[S]:
    """`service.run()` in a thread, ready when yielded; stopped and joined after, and
    whatever it raised raised here."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name=what, daemon=True)
    thread.start()
    wait_until(
        lambda: service.ready.is_set() or errors, timeout=START_TIMEOUT_S, what=f"{what} ready"
    )
    try:
        if errors:
            raise errors[0]
        yield service
    finally:
        service.stop()
        thread.join(START_TIMEOUT_S)
        assert not thread.is_alive(), f"{what} did not stop"
    if errors:
        raise errors[0]


def inits_applied(kafka: KafkaConfig) -> dict[str, list[str]]:
    """Global root -> the workflows begun for it: one STARTED event per Init applied."""
    begun: dict[str, list[str]] = {}
    for stored in DuRootReader(kafka).events():
        event = stored.event
        if event is not None and type(event.payload) is DuRootStarted:
            begun.setdefault(event.payload.global_root, []).append(event.workflow_id)
    return begun


def inits_once_visible(kafka: KafkaConfig, expected: Mapping[str, int]) -> dict[str, list[str]]:
    """`inits_applied` once it shows at least `expected` Inits per root. A reply is read
    once its transaction commits, but Kafka writes the commit markers of the other
    partitions of that transaction a moment later: until then a read_committed reader
    stops short of them."""

    def enough() -> dict[str, list[str]] | None:
        begun = inits_applied(kafka)
        return begun if all(len(begun.get(k, [])) >= n for k, n in expected.items()) else None

    found = wait_until(enough, timeout=START_TIMEOUT_S, what=f"the Inits applied: {expected}")
    assert found is not None
    return found
