"""Services in threads and the Inits applied, for the scheduler and exporter tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootStarted
from duroot_stream.wire import Codec, Topics
from tests.kafka_helpers import read_all, wait_until

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
    codec = Codec()
    begun: dict[str, list[str]] = {}
    for msg in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).events):
        value = msg.value()
        if value is None:
            continue
        event = codec.decode_event(value)
        if type(event.payload) is DuRootStarted:
            begun.setdefault(event.payload.global_root, []).append(event.workflow_id)
    return begun
