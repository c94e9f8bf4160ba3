"""Zombies under load: at each fault point (a share of the load answered) instance z
stalls between `send_offsets_to_transaction` and `commit_transaction` (the file-steered
`FileStall` of tests/reliability/faulty_processor.py), its consumer leaves the group
once `max.poll.interval.ms` has passed (librdkafka does so for a stalled
application), the group gives its partitions to h,
and once h has begun restoring them (or waits for z's transaction) z resumes and
commits late (KIP-447 does not fence EndTxn; z's transaction may live 60 s). Nothing
lost, nothing duplicated, every chain intact (Kafka Streams' KAFKA-10167)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.kafka_helpers import wait_until
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import ProcessorProcess, Supervisor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.timeout(7200),
    # Not yet for CI: in 2 of 9 runs the zombie, rejoined after its first stall, never
    # stalled again (no commit of its reached the hook; exactly-once held: lost 0,
    # duplicated 0), so the run had fewer faults than planned. Cause not found (see
    # the zombie report); run it with DUROOT_RELIABILITY_ZOMBIE_STALL=1.
    pytest.mark.skipif(
        os.environ.get("DUROOT_RELIABILITY_ZOMBIE_STALL") != "1",
        reason="set DUROOT_RELIABILITY_ZOMBIE_STALL=1: not yet reliable enough for CI",
    ),
]

ZOMBIE_ARGS = (
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "max.poll.interval.ms=6000",
    "-X",
    "transaction.timeout.ms=60000",
)
TAKEOVER_LINES = ("partitions restored", "restore waiting for an open transaction")


def test_zombie_stalls_under_load(
    reliability_kafka: KafkaConfig,
    scale: Scale,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stall_dir = tmp_path / "stall"
    stall_dir.mkdir()
    run = Run(reliability_kafka, scale, tmp_path)
    sup = run.supervisor
    k = reliability_kafka
    sup.instances["z"] = ProcessorProcess(
        "z",
        k.bootstrap_servers,
        k.topic_prefix,
        tmp_path,
        ZOMBIE_ARGS,
        fault=("--stall-dir", str(stall_dir)),
    )
    arm, stalled, resume = (stall_dir / f"z.{n}" for n in ("arm", "stalled", "resume"))
    takeovers: list[str] = []

    def stall() -> str:
        heir_log = sup.instances["h"].log_path
        arm.touch()
        wait_until(stalled.exists, timeout=120, what="z to stall before a commit")
        mark = heir_log.stat().st_size
        found = wait_until(
            lambda: _line_since(heir_log, mark, TAKEOVER_LINES),
            timeout=180,
            what="h to take z's partitions",
        )
        assert found is not None  # wait_until returns only a truthy result
        takeovers.append(found)
        zombie_log = sup.instances["z"].log_path
        mark = zombie_log.stat().st_size
        resume.touch()
        wait_until(lambda: not stalled.exists(), timeout=120, what="z to resume")
        # z rejoins and gets partitions back: the next stall comes with the group
        # settled (a stall in the middle of a rebalance meets librdkafka's lost-flag
        # race, confluentinc/librdkafka#5604, and z may stop fetching).
        wait_until(
            lambda: _line_since(zombie_log, mark, ("partitions restored",)),
            timeout=180,
            what="z to rejoin with partitions",
        )
        return "stall z"

    def chaos(s: Supervisor) -> None:
        s.start("z")
        heir = s.start("h")
        wait_until(
            lambda: _line_since(heir.log_path, 0, ("partitions restored",)),
            timeout=180,
            what="h to get its partitions",
        )
        s.run_chaos(s.at_progress(scale.fault_points, stall))

    try:
        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        resume.touch()
        sup.close()
    with capsys.disabled():
        print(f"\n[reliability zombie-stall] the heir's first line after each stall: {takeovers}")
    run.verdict("zombie-stall", report, capsys)
    assert len(takeovers) == len(scale.fault_points), takeovers


def _line_since(log: Path, mark: int, lines: tuple[str, ...]) -> str | None:
    """The first of `lines` found in `log` after byte `mark`, if any."""
    with log.open("rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    return next((line for line in lines if line in text), None)
