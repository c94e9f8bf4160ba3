"""Restores off the loop's thread, against a real broker: while a partition assigned to
a processor waits in its restore, the processor answers the partitions it already
owns; a partition revoked mid-restore is never installed from that restore, and one
assigned again gets a fresh restore; a processor stops mid-restore without waiting
for it.

A restore is held by a test transaction open on the events partition (it reads up to
the high watermark, waiting at the last stable offset until the transaction ends),
which the test commits when it is done looking.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from confluent_kafka import Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, Init, PathUsage
from duroot_stream.processor import Processor
from duroot_stream.processor.loop import IDLE_POLL_S
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.processor_harness import (
    PARTITIONS,
    ProcessorLogs,
    Requester,
    captured_logs,
    command,
    running_processor,
)
from tests.transaction_helpers import open_transaction, workflow_on

pytestmark = pytest.mark.broker

EVERY = set(range(PARTITIONS))
HOLD_MS = 300_000  # the holding transactions outlive any step of a test
RESTORE_WAIT_S = 600.0  # a held restore is not given up on meanwhile
REBALANCE_S = 60.0  # a member joining or leaving, and the restores it starts, begin


@pytest.fixture
def logs() -> Iterator[ProcessorLogs]:
    with captured_logs() as handler:
        yield handler


def restoring(processor: Processor) -> set[int]:
    """The partitions whose restore the processor's gauge shows under way."""
    gauge = processor.metrics.restore_in_progress
    return {p for p in EVERY if gauge.labels(str(p))._value.get() == 1}


def hold(kafka: KafkaConfig, partitions: set[int]) -> list[Producer]:
    """Open transactions on these events partitions: their restores wait for them."""
    events = Topics(kafka.topic_prefix).events
    return [
        open_transaction(kafka, events, p, workflow_on(p), timeout_ms=HOLD_MS)
        for p in sorted(partitions)
    ]


def release(holds: list[Producer]) -> None:
    for producer in holds:
        producer.commit_transaction(30)


def test_owned_partitions_are_answered_while_a_moved_partition_waits_in_its_restore(
    kafka: KafkaConfig, requester: Requester
) -> None:
    group = f"async-{uuid.uuid4().hex[:8]}"
    registry = str(uuid.uuid4())
    workflows = {p: workflow_on(p) for p in EVERY}
    holds: list[Producer] = []
    try:
        with ExitStack() as a_stack, ExitStack() as b_stack:
            a = a_stack.enter_context(
                running_processor(kafka, instance_id="a", group_id=group, restore_wait_s=600.0)
            )
            b = b_stack.enter_context(
                running_processor(kafka, instance_id="b", group_id=group, restore_wait_s=600.0)
            )
            wait_until(
                lambda: (
                    a.owned_partitions() | b.owned_partitions() == EVERY
                    and a.owned_partitions()
                    and b.owned_partitions()
                ),
                timeout=REBALANCE_S,
                what="the partitions shared out",
            )
            moving, staying = a.owned_partitions(), b.owned_partitions()
            for wf in workflows.values():
                assert requester.request(command(wf, Init(registry, "/g/" + wf, "h", "/r"))).ok
            holds = hold(kafka, moving)
            a_stack.close()  # a leaves: b gets its partitions, and restores them, held
            wait_until(
                lambda: restoring(b) == moving,
                timeout=REBALANCE_S,
                what="b to restore a's partitions",
            )
            # Commands of a moved partition wait for its restore; b's own are answered
            # as soon as b handles and commits them.
            waiting = [
                requester.send(command(workflows[p], Append((PathUsage("moved", 1),))))
                for p in sorted(moving)
            ]
            answer_s = b.settings.commit_interval_s + IDLE_POLL_S + KAFKA_TIMEOUT_S
            for p in sorted(staying):
                reply = requester.request(
                    command(workflows[p], Append((PathUsage("own", 1),))), timeout=answer_s
                )
                assert reply.ok, reply
            assert restoring(b) == moving and not moving & b.owned_partitions(), (
                "the moved partitions were restored while their restore was held"
            )
            assert not {c.encode() for c in waiting} & set(requester.received), (
                "a command of a partition not restored was answered"
            )
            release(holds)
            holds = []
            wait_until(
                lambda: b.owned_partitions() == EVERY,
                timeout=REBALANCE_S,
                what="the moved partitions restored",
            )
            for corr in waiting:
                assert requester.wait_reply(corr).ok
            # The restore read the events the holding transactions committed late.
            assert b.workflow_count() == len(workflows) + len(moving)
            assert restoring(b) == set()
    finally:
        for producer in holds:
            producer.abort_transaction(30)


def test_a_partition_revoked_mid_restore_is_not_installed_from_that_restore(
    kafka: KafkaConfig, requester: Requester, logs: ProcessorLogs
) -> None:
    group = f"async-{uuid.uuid4().hex[:8]}"
    holds = hold(kafka, EVERY)
    try:
        with ExitStack() as b_stack, ExitStack() as c_stack:
            b = b_stack.enter_context(
                running_processor(
                    kafka, ready=False, instance_id="b", group_id=group, restore_wait_s=600.0
                )
            )
            wait_until(lambda: restoring(b) == EVERY, timeout=REBALANCE_S, what="b restoring")
            c = c_stack.enter_context(
                running_processor(
                    kafka, ready=False, instance_id="c", group_id=group, restore_wait_s=600.0
                )
            )
            # c joins: b gives up some of its partitions, all of them mid-restore.
            wait_until(
                lambda: restoring(c) and restoring(b) == EVERY - restoring(c),
                timeout=REBALANCE_S,
                what="some of b's partitions moved to c",
            )
            moved = restoring(c)
            assert logs.partitions("restore called off") == [sorted(moved)]
            # c stops mid-restore, without waiting for the held restore; its
            # partitions go back to b, which restores them afresh.
            stopping = time.monotonic()
            c_stack.close()
            stop_s = time.monotonic() - stopping
            wait_until(
                lambda: restoring(b) == EVERY, timeout=REBALANCE_S, what="the partitions back"
            )
            assert b.owned_partitions() == set() and not b.ready.is_set()
            release(holds)
            holds = []
            wait_until(lambda: b.ready.is_set(), timeout=REBALANCE_S, what="b ready")
            assert b.owned_partitions() == EVERY and restoring(b) == set()
            # b's first restore (every partition) installed only those it still held
            # for it; the moved ones came from their fresh restore.
            assert logs.partitions("stale restore discarded") == [sorted(moved)]
            assert sorted(logs.partitions("partitions restored")) == sorted(
                [sorted(EVERY - moved), sorted(moved)]
            )
            assert b.workflow_count() == len(EVERY)  # each held STARTED event, once
            registry = str(uuid.uuid4())
            for p in sorted(EVERY):
                wf = workflow_on(p)
                assert requester.request(command(wf, Init(registry, "/g/" + wf, "h", "/r"))).ok
    finally:
        for producer in holds:
            producer.abort_transaction(30)
    assert stop_s < KAFKA_TIMEOUT_S, f"c took {stop_s:.1f} s to stop mid-restore"
    assert "restore thread still running at stop" not in [r.getMessage() for r in logs.records]
