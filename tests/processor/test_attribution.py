"""Where a transaction's time goes: every committed transaction is observed
once in each attribution histogram, and an aborted one in none."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, Init, PathUsage
from duroot_stream.metrics import ProcessorMetrics
from tests.processor.client_faults import FailCall, abortable
from tests.processor_harness import (
    Requester,
    command,
    new_workflow_id,
    running_processor,
    vid_of,
)

pytestmark = pytest.mark.broker

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
STEPS = (
    "duroot_processor_decide_duration_seconds",
    "duroot_processor_produce_duration_seconds",
    "duroot_processor_send_offsets_duration_seconds",
    "duroot_processor_commit_duration_seconds",
)


def _sample(metrics: ProcessorMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_each_committed_transaction_observed_in_every_step(
    kafka: KafkaConfig, requester: Requester
) -> None:
    wf = new_workflow_id()
    # The first transaction's commit fails as Kafka says abort: it is redone.
    faults = FailCall("commit_transaction", abortable, armed=1)
    with running_processor(kafka, faults) as proc:
        first = requester.request(command(wf, INIT))
        assert first.ok
        second = requester.request(command(wf, Append((PathUsage("a", 1),)), vid_of(first)))
        assert second.ok
    assert faults.injected == 1
    metrics = proc.metrics  # read once the processor has stopped: nothing moves
    committed = metrics.transactions.labels("committed")._value.get()
    assert metrics.transactions.labels("aborted")._value.get() == 1
    assert committed >= 2
    for name in STEPS:
        assert _sample(metrics, f"{name}_count") == committed, name
        assert _sample(metrics, f"{name}_sum") > 0, name
