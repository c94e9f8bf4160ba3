"""An heir killed while it fences a dead owner: at each fault point (a share of the load
answered) instance v stalls with a transaction open (the file-steered stall of
tests/reliability/faulty_processor.py, before `commit_transaction`) and is SIGKILLed
there; h takes v's partitions over, finds v's transaction open and v out of the group,
and is SIGKILLed in turn just before it fences v (the same stall, `--stall-at fence`).
A new instance then takes every partition over and must end both dead owners'
transactions itself (processor/fencing.py): v's, named by the offsets v claimed, and
h's, should h have had one open. Then v and h start again and the new instance leaves
(SIGTERM), for the next round. Nothing lost, nothing duplicated, every chain intact,
and each round's new instance fenced v. The load waits while a round runs, so that
no instance's partitions run ahead of the others'."""

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

STALL_WAIT_S = 120.0  # v commits every 0.1 s while it has commands
# h notices v's death after the session timeout (6 s) and starts restoring; a new
# instance starts, joins and restores (generous bounds for a loaded machine).
TAKEOVER_S = 180.0
V_FENCED = "fenced a previous owner transactional_id=duroot-processor-v "


def test_an_heir_killed_while_it_fences(
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
    for instance, at in (("v", "commit_transaction"), ("h", "fence")):
        sup.instances[instance] = ProcessorProcess(
            instance,
            k.bootstrap_servers,
            k.topic_prefix,
            tmp_path,
            fault=("--stall-dir", str(stall_dir), "--stall-at", at),
        )
    v_arm, v_stalled, h_arm, h_stalled = (
        stall_dir / name for name in ("v.arm", "v.stalled", "h.arm", "h.stalled")
    )
    rounds: list[str] = []

    def restored_since(proc: ProcessorProcess, mark: int) -> bool:
        return line_since(proc.log_path, mark, "partitions restored") is not None

    def heir_kill() -> str:
        v, h = sup.instances["v"], sup.instances["h"]
        v_arm.touch()
        wait_until(
            lambda: v_stalled.exists() or run.driver.progress >= 1.0,
            timeout=STALL_WAIT_S,
            what="v to stall with a transaction open",
        )
        assert v_stalled.exists(), (
            f"the load ended before v committed again: no command for v (faults so far: "
            f"{sup.faults}, answered {run.driver.progress:.3f})\n{sup.diagnostics()}"
        )
        # From here until v and h are back, the load waits: h's own partitions would
        # run ahead of v's otherwise, and the next round's v might get partitions
        # whose share of the load is done (no command to stall on).
        sup.hold_load()
        h_arm.touch()
        v.kill()
        v_stalled.unlink()  # its stall dies with it
        wait_until(h_stalled.exists, timeout=TAKEOVER_S, what="h to stall before it fences v")
        h.kill()
        h_stalled.unlink()
        heir = sup.start(f"n{len(rounds) + 1}")
        found = wait_until(
            lambda: line_since(heir.log_path, 0, V_FENCED),
            timeout=TAKEOVER_S,
            what=f"{heir.instance_id} to fence v",
        )
        rounds.append(f"{heir.instance_id}: {found}")
        wait_until(
            lambda: restored_since(heir, 0), timeout=TAKEOVER_S, what="the new instance's restore"
        )
        marks = {p.instance_id: p.log_path.stat().st_size for p in (v, h)}
        v.start()
        h.start()
        wait_until(
            lambda: all(restored_since(p, marks[p.instance_id]) for p in (v, h)),
            timeout=TAKEOVER_S,
            what="v and h back with partitions",
        )
        sup.leave(heir)  # v and h take its partitions; the next round finds them settled
        sup.hold_load(False)
        return f"SIGKILL v stalled, SIGKILL h fencing, {heir.instance_id} took over"

    def chaos(s: Supervisor) -> None:
        s.start("v")
        h = s.start("h")
        wait_until(lambda: restored_since(h, 0), timeout=TAKEOVER_S, what="h's partitions")
        s.run_chaos(s.at_progress(scale.fault_points, heir_kill))

    report = run.go_and_verify(chaos)
    with capsys.disabled():
        print(f"\n[reliability heir-kill] each round's new instance fenced v: {rounds}")
    run.verdict("heir-kill", report, capsys)
    assert len(rounds) == len(scale.fault_points), rounds
