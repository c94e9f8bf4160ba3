"""Rebalance under load: at each fault point (a share of the load answered) an
instance joins or leaves (SIGTERM, a clean shutdown), between one and three of them
running at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py


def test_rebalance_under_load(
    reliability_kafka: KafkaConfig, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(reliability_kafka, scale, tmp_path)

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.churn(scale.fault_points, ["a", "b", "c"], low=1, high=3))

    try:
        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    run.verdict("rebalance", report, capsys)
    assert run.supervisor.joins > 0 and run.supervisor.leaves > 0, "no membership change"
