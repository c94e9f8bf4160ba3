"""Broker restart: at each fault point (a share of the load answered) the broker goes
down (SIGTERM, or SIGKILL) and is started again on the same port and data dir; the
processors reconnect (or, fenced or hung, exit and are restarted) and nothing is
lost or duplicated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from duroot_stream.broker import LocalBroker
from duroot_stream.config import KafkaConfig

from .harness import Run, Scale, prepare
from .supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(7200)]

OUTAGE_S = 5.0  # how long the broker stays down, on purpose: the fault itself


@pytest.mark.parametrize("stop", ["term", "kill"])
def test_broker_restart(
    stop: str,
    own_broker: LocalBroker,
    scale: Scale,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stop`: how the broker goes down, SIGTERM (a controlled shutdown) or SIGKILL."""
    kafka = KafkaConfig(bootstrap_servers=own_broker.bootstrap, topic_prefix="reliability.")
    prepare(kafka)
    run = Run(kafka, scale, tmp_path)

    def restart() -> str:
        if stop == "kill":
            own_broker.kill()
        else:
            own_broker.stop()
        time.sleep(OUTAGE_S)  # the outage's length, not a wait for something
        own_broker.start()
        return f"broker SIG{stop.upper()}"

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.at_progress(scale.fault_points, restart))

    try:
        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    # An instance whose transaction was open through the outage is fenced when the
    # broker aborts it on its timeout (10 s), or finds a Kafka call hung past its
    # timeout: it exits 1 and is restarted, as a service manager would.
    run.verdict(f"broker-restart-{stop}", report, capsys, allow_fatal_exits=True)
