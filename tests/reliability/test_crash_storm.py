"""Crash storm: two processors under load; at each fault point (a share of the load
answered) a random one is SIGKILLed and restarted with the same --instance-id.
Nothing lost, nothing duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py


def test_crash_storm(
    reliability_kafka: KafkaConfig, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(reliability_kafka, scale, tmp_path)
    try:

        def chaos(sup: Supervisor) -> None:
            sup.start("a")
            sup.start("b")
            sup.run_chaos(sup.kill_storm(scale.fault_points))

        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    run.verdict("crash-storm", report, capsys)
    assert run.supervisor.kills == len(scale.fault_points), "a SIGKILL at every fault point"
