"""Zombies under load: at each fault point (a share of the load answered) instance z
stalls between `send_offsets_to_transaction` and `commit_transaction` (the file-steered
`FileStall` of tests/reliability/faulty_processor.py), its consumer leaves the group
once `max.poll.interval.ms` has passed (librdkafka does so for a stalled
application), the group gives its partitions to h. h finds z's offsets unstable
(z's transaction is open and may live 60 s) and z out of the group, so it fences z
(processor/fencing.py) and restores without waiting for z's transaction; then z
resumes and tries to commit late (KIP-447 does not fence EndTxn): it finds itself
fenced, exits 1 and is started again. Nothing lost, nothing duplicated, every chain
intact. (The late commit that races a restore, Kafka Streams' KAFKA-10167, is
tests/processor/test_zombie.py's, with fencing off and on.)

A stall needs z to commit, so z must have commands on its partitions once armed. If
the load ends first, the fault fails saying so; if the load goes on and z does not
commit, it fails with z's and h's log tails (a liveness problem). Both used to end
as "fewer faults than planned": the wait outlived the supervisor's join and its
error was dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.kafka_helpers import wait_until
from tests.reliability.harness import Run, Scale
from tests.reliability.supervisor import ProcessorProcess, Supervisor, line_since

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
]

ZOMBIE_ARGS = (
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "max.poll.interval.ms=6000",
    "-X",
    "transaction.timeout.ms=60000",
)
# h fences z while z sleeps, or restores at once should z have had nothing open.
TAKEOVER_LINES = ("fenced a previous owner", "partitions restored")
STALL_WAIT_S = 120.0  # z commits every 0.1 s while it has commands
# z leaves after max.poll.interval.ms, h restores (waiting up to the transaction
# timeout for z's transaction), z rejoins and restores: generous bounds for each.
TAKEOVER_S = 180.0


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
        try:
            wait_until(
                lambda: stalled.exists() or run.driver.progress >= 1.0,
                timeout=STALL_WAIT_S,
                what="z to stall before a commit",
            )
        except AssertionError as exc:  # the load goes on without z committing
            raise AssertionError(f"{exc}\n{sup.diagnostics()}") from None
        assert stalled.exists(), "the load ended before z committed again: no command for z"
        # Until z is back, the load waits: h's own partitions would run ahead of z's
        # otherwise, and z might come back to partitions whose share of the load is
        # done (no command to stall on next time).
        sup.hold_load()
        mark = heir_log.stat().st_size
        found = wait_until(
            lambda: line_since(heir_log, mark, *TAKEOVER_LINES),
            timeout=TAKEOVER_S,
            what="h to take z's partitions",
        )
        assert found is not None  # wait_until returns only a truthy result
        takeovers.append(found)
        zombie_log = sup.instances["z"].log_path
        mark = zombie_log.stat().st_size
        resume.touch()
        wait_until(lambda: not stalled.exists(), timeout=TAKEOVER_S, what="z to resume")
        # z (fenced: after its restart) rejoins and gets partitions back: the next stall
        # comes with the group settled (a stall in the middle of a rebalance meets
        # librdkafka's lost-flag race, confluentinc/librdkafka#5604, and z may stop
        # fetching).
        wait_until(
            lambda: line_since(zombie_log, mark, "partitions restored"),
            timeout=TAKEOVER_S,
            what="z to rejoin with partitions",
        )
        sup.hold_load(False)
        return "stall z"

    def chaos(s: Supervisor) -> None:
        s.start("z")
        heir = s.start("h")
        wait_until(
            lambda: line_since(heir.log_path, 0, "partitions restored"),
            timeout=TAKEOVER_S,
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
    fences = sup.instances["h"].log_path.read_text().count("fenced a previous owner")
    z_exits = [e for e in sup.unexpected_exits if e.instance_id == "z" and e.returncode == 1]
    # z exits 1 when it finds itself fenced, and is started again.
    run.verdict("zombie-stall", report, capsys, allow_fatal_exits=True)
    stalls = len(scale.fault_points)
    assert len(takeovers) == stalls, takeovers
    # z stalls with its offsets sent: each takeover finds them unstable, and fences.
    assert fences == stalls, f"h fenced z {fences} times in {stalls} stalls: {takeovers}"
    assert len(z_exits) == stalls, f"z exited fenced {len(z_exits)} times: {z_exits}"
