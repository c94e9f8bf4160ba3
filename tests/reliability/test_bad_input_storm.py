"""Bad input storm: malformed records of every kind (random bytes, truncated Avro,
wrong fingerprints, invalid ids, oversized Appends, unknown command records, ...)
interleaved with valid commands, and at each fault point (a share of the load
answered) a processor SIGKILLed and restarted, so that dead letters are written
again after a crash too. The processors never stop on bad input, every malformed
record is dead-lettered once (and answered MALFORMED), every valid command applied
exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(7200)]

VALID_SHARE = 0.2  # valid commands: this share of the scale's command count


def test_bad_input_storm(
    reliability_kafka: KafkaConfig, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run(
        reliability_kafka,
        scale,
        tmp_path,
        malformed=scale.malformed,
        commands=max(scale.workflows, int(scale.commands * VALID_SHARE)),
    )

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.kill_storm(scale.fault_points))

    try:
        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    run.verdict("bad-input", report, capsys)
    assert report.malformed == scale.malformed, "every malformed record counted as such"
    assert report.dead_letters == scale.malformed, "every malformed record dead-lettered once"
    assert run.malformed_factory is not None
    assert set(run.malformed_factory.counts) >= {"random", "truncated", "oversized"}
