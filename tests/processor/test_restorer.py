"""Restores off the loop's thread, without a broker: which restore's result is
installed (the latest assignment's, of a partition still held), what a failed or
called-off one does, and the engine's guard against commands of a partition whose
restore is not installed."""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Init, StateCode, WorkflowState
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.processor import ProcessorFatal, ProcessorSettings
from duroot_stream.processor.collection import hold_collection, release_collection
from duroot_stream.processor.restore_read import RestoreCancelled
from duroot_stream.processor.restorer import Restorer
from duroot_stream.wire import Codec, Topics
from tests.kafka_helpers import wait_until
from tests.processor.memory import MemoryProcessor
from tests.processor_harness import command
from tests.transaction_helpers import workflow_on

Restored = dict[int, tuple[dict[str, WorkflowState], int]]


class HeldRestores:
    """A stand-in restore that holds each call until the test lets it finish; its
    result names the call (workflow id `call-<n>`), so a test sees whose was installed."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], Callable[[], bool]]] = []
        self.release: list[threading.Event] = []
        self.fail: dict[int, Exception] = {}  # call number -> what it raises

    def __call__(self, partitions: list[int], cancelled: Callable[[], bool]) -> Restored:
        go = threading.Event()
        n = len(self.calls)
        self.release.append(go)
        self.calls.append((partitions, cancelled))
        while not go.wait(0.01):
            if cancelled():
                raise RestoreCancelled(f"call {n}")
        if n in self.fail:
            raise self.fail[n]
        state = WorkflowState(f"call-{n}", StateCode.APPENDING)
        return {p: ({state.workflow_id: state}, 1) for p in partitions}


@pytest.fixture
def held() -> HeldRestores:
    return HeldRestores()


@pytest.fixture
def stopping() -> threading.Event:
    return threading.Event()


@pytest.fixture
def restorer(held: HeldRestores, stopping: threading.Event) -> Iterator[Restorer]:
    restorer = Restorer(
        ProcessorSettings(kafka=KafkaConfig()),
        Topics(""),
        Codec(),
        ProcessorMetrics(),
        stopping,
        restore=held,
    )
    yield restorer
    for go in held.release:
        go.set()
    restorer.close()


def finished_once(restorer: Restorer, count: int) -> list[tuple[int, str]]:
    """What `finished` returns once `count` restores have ended: (partition, workflow)."""
    out: list[tuple[int, str]] = []

    def collect() -> bool:
        out.extend((p, next(iter(w))) for p, w in restorer.finished())
        return restorer._done.qsize() == 0 and ended(restorer) >= count

    wait_until(collect, timeout=10, what=f"{count} restores ended")
    return out


def ended(restorer: Restorer) -> int:
    return sum(1 for t in restorer._threads if not t.is_alive())


def in_progress(restorer: Restorer, partition: int) -> float:
    return float(restorer._metrics.restore_in_progress.labels(str(partition))._value.get())


def test_a_finished_restore_is_installed_once(held: HeldRestores, restorer: Restorer) -> None:
    restorer.start([0, 2])
    assert restorer.restoring == [0, 2] and in_progress(restorer, 2) == 1
    wait_until(lambda: held.calls, timeout=10, what="the restore to begin")
    assert restorer.finished() == []  # under way: nothing to install
    held.release[0].set()
    assert finished_once(restorer, 1) == [(0, "call-0"), (2, "call-0")]
    assert restorer.restoring == [] and in_progress(restorer, 2) == 0
    assert restorer.finished() == []


def test_a_partition_revoked_mid_restore_is_not_installed(
    held: HeldRestores, restorer: Restorer
) -> None:
    restorer.start([0, 1])
    wait_until(lambda: held.calls, timeout=10, what="the restore to begin")
    assert restorer.drop([1, 2]) == [1]  # 2 was never assigned
    assert in_progress(restorer, 1) == 0
    held.release[0].set()
    assert finished_once(restorer, 1) == [(0, "call-0")]


def test_a_partition_revoked_and_assigned_again_mid_restore_gets_the_fresh_restore(
    held: HeldRestores, restorer: Restorer
) -> None:
    restorer.start([0, 1])
    restorer.drop([1])
    restorer.start([1])
    wait_until(lambda: len(held.calls) == 2, timeout=10, what="both restores to begin")
    held.release[1].set()  # the fresh one ends first
    assert finished_once(restorer, 1) == [(1, "call-1")]
    held.release[0].set()  # the old one: only its partition still held for it
    assert finished_once(restorer, 2) == [(0, "call-0")]
    assert restorer.restoring == []


def test_the_old_restore_ending_first_is_not_installed_for_a_reassigned_partition(
    held: HeldRestores, restorer: Restorer
) -> None:
    restorer.start([1])
    restorer.drop([1])
    restorer.start([1])
    wait_until(lambda: len(held.calls) == 2, timeout=10, what="both restores to begin")
    # The first is called off as soon as none of its partitions is held for it.
    assert held.calls[0][1]() is True and held.calls[1][1]() is False
    held.release[0].set()
    assert finished_once(restorer, 1) == []
    assert restorer.restoring == [1]
    held.release[1].set()
    assert finished_once(restorer, 2) == [(1, "call-1")]


@pytest.mark.parametrize("revoked", [False, True])
def test_a_failed_restore_is_raised_by_the_loop_unless_its_partitions_were_revoked(
    held: HeldRestores, restorer: Restorer, revoked: bool
) -> None:
    held.fail[0] = ProcessorFatal("a hanging transaction")
    restorer.start([2])
    wait_until(lambda: held.calls, timeout=10, what="the restore to begin")
    if revoked:
        restorer.drop([2])
    held.release[0].set()
    if revoked:
        assert finished_once(restorer, 1) == []
        return
    with pytest.raises(ProcessorFatal, match="a hanging transaction"):
        wait_until(lambda: restorer.finished() or None, timeout=10, what="the failure")


def test_stopping_calls_the_restores_off(
    held: HeldRestores, restorer: Restorer, stopping: threading.Event
) -> None:
    restorer.start([0])
    wait_until(lambda: held.calls, timeout=10, what="the restore to begin")
    stopping.set()
    restorer.close()  # joins: the held restore notices it is called off
    assert ended(restorer) == 1 and finished_once(restorer, 1) == []


def test_commands_of_a_partition_not_restored_are_not_handled_but_consumed_again() -> None:
    p = MemoryProcessor()
    owned, waiting = (workflow_on(0), workflow_on(1))
    p.workflows.drop([1])  # assigned, its restore not installed
    registry = str(uuid.uuid4())
    held = p.routed(command(waiting, Init(registry, "/g/" + waiting, "h", "/r")))
    handled = p.routed(command(owned, Init(registry, "/g/" + owned, "h", "/r")))
    assert p.run_batch()
    assert p.reply(handled).ok and p.kafka.committed == {0: 1}
    assert [r.header("correlation-id") for r in p.kafka.records(p.topics.replies)] == [
        handled.encode()
    ]
    assert p.kafka.rewinds == [{1: 0}] and p.kafka.position[1] == 0
    p.workflows.restored(1, {})  # installed: its commands are handled from the first
    assert p.run_batch()
    assert p.reply(held).ok and p.kafka.committed == {0: 1, 1: 1}


def test_collection_comes_back_with_the_last_holder() -> None:
    assert gc.isenabled()
    hold_collection()  # a command being handled
    hold_collection()  # a restore folding, in another thread
    release_collection()
    assert not gc.isenabled()
    release_collection()
    assert gc.isenabled()
    gc.disable()  # off before anyone held it: stays off
    try:
        hold_collection()
        release_collection()
        assert not gc.isenabled()
    finally:
        gc.enable()
