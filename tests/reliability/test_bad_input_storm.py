"""Bad input storm: malformed records of every kind (random bytes, truncated Avro,
wrong fingerprints, invalid ids, oversized Appends, unknown command records, ...)
interleaved with valid commands, and at each fault point (a share of the load
answered) a processor SIGKILLed and restarted, so that dead letters are written
again after a crash too. The processors never stop on bad input, every malformed
record is dead-lettered once (and answered MALFORMED), every valid command applied
exactly once. Each malformed record is keyed by a real workflow id on that workflow's
partition (the record's own, where it names one), so only what is wrong with it can
refuse it, and its dead letter must give the reason its kind calls for."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.reliability.contract_wire import MAX_COMMAND_BYTES
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py

VALID_SHARE = 0.2  # valid commands: this share of the scale's command count
# What the contract makes of each kind the workload sends: the `dlq-reason` of its
# dead letter, or None for a command it applies (answered INVALID_ARGUMENT).
REASONS = {"misrouted": "misrouted", "bad-key": "bad-key", "oversized-valid": "too-large"}
APPLIED = {"invalid-argument"}


def expected_reason(kind: str, size: int) -> str | None:
    if kind in APPLIED:
        return None
    if size > MAX_COMMAND_BYTES:
        return "too-large"
    return REASONS.get(kind, "undecodable")


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
    assert run.malformed_factory is not None
    counts = run.malformed_factory.counts
    applied = sum(counts.get(kind, 0) for kind in APPLIED)
    assert report.malformed == scale.malformed - applied, "every malformed record counted as such"
    assert report.dead_letters == report.malformed, "every malformed record dead-lettered once"
    assert set(counts) >= {"random", "truncated", "oversized", "misrouted", "bad-key"}
    wrong = {}
    for correlation, (kind, size) in run.driver.malformed_by_correlation.items():
        found = report.dead_letter_reasons.get(correlation)
        if found != expected_reason(kind, size):
            wrong[correlation] = f"{kind} ({size} bytes): {found}"
    shown = list(wrong.values())[:10]
    assert not wrong, f"{len(wrong)} records refused for the wrong reason: {shown}"
