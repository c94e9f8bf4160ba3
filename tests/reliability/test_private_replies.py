"""Private reply topics under a crash storm: two processors; clients each make a
reply topic of their own as they start (one before the load, two after each fault
point: one while the killed instance comes back, one later) and ask for their
replies there. At each fault point (a share of the load answered) a random
processor is SIGKILLed and restarted with the same --instance-id. Every reply on
the topic its command asked for; nothing lost, nothing duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.reliability.harness import Run, Scale, kill_storm

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(7200)]

# Shares of the load after a fault at which a client starts.
CLIENT_DELAYS = (0.01, 0.05)


def test_private_reply_topics_under_a_crash_storm(
    reliability_kafka: KafkaConfig, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starts = (0.0, *sorted(p + d for p in scale.fault_points for d in CLIENT_DELAYS))
    run = Run(reliability_kafka, scale, tmp_path, client_starts=starts)
    report = run.go_and_verify(kill_storm(scale.fault_points))
    run.verdict("private-replies", report, capsys)
    assert run.supervisor.kills == len(scale.fault_points), "a SIGKILL at every fault point"
    assert len(run.driver.clients) == len(starts) > 1
    assert report.replies == report.commands, "one reply per command record"
