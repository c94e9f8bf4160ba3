"""Crash storm: two processors, SIGKILLed at random every few seconds and restarted
with the same --instance-id, while the load runs. Nothing lost, nothing duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig

from .harness import Run, Scale
from .supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(7200)]


def test_crash_storm(
    reliability_kafka: KafkaConfig, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(reliability_kafka, scale, tmp_path)
    try:

        def chaos(sup: Supervisor) -> None:
            sup.start("a")
            sup.start("b")
            sup.run_chaos(sup.kill_storm(scale.kill_interval))

        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    run.verdict("crash-storm", report, capsys)
    assert run.supervisor.kills > 0, "the run ended before the first kill"
