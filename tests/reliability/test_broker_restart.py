"""Broker restart: at each fault point (a share of the load answered) the broker goes
down (SIGTERM, or SIGKILL) and is started again on the same port and data dir; the
processors ride it out on their own (a transactional call that times out or blocks
gives up its producer for a new one, see processor/transaction.py), none exits,
and nothing is lost or duplicated. Printed: the seconds from each fault until
replies flow again (100 more than when the broker answered).

Kafka 4.3.0 to 4.4.0 leave a transaction hanging across a restart (KAFKA-20734: a
partition without a leader for a moment reads to the coordinator as deleted, and a
transaction it is committing is recorded as committed without its markers; 2 of 4
small SIGKILL runs on 4.4.0), so the project pins 4.2.2. `HangingWatch` runs
find-hanging when a last stable offset stands still, and a failure names what it
found."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import LocalBroker
from duroot_stream.ops import transactions
from duroot_stream.processor.hanging import ABORT_CHECK_INTERVAL_S, StallTracker
from duroot_stream.processor.kafka_clients import TRANSACTION_TIMEOUT_MS
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.reliability.harness import Run, Scale, prepare
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py

OUTAGE_S = 5.0  # how long the broker stays down, on purpose: the fault itself
RECOVERY_TIMEOUT_S = 300.0  # a generous bound on a loaded machine: replies must flow again
FLOWING = 100  # replies after the broker is back that show the processors work again


# When DurootHangingTransaction would fire: a last stable offset that has stood still
# for longer than the processors' transaction timeout plus Kafka's default abort check
# (the processor's hanging-transaction monitor uses the same bound).
WATCH_AFTER_S = TRANSACTION_TIMEOUT_MS / 1000 + ABORT_CHECK_INTERVAL_S
WATCH_POLL_S = 2.0
WATCH_BACKOFF_S = 15.0


class HangingWatch:
    """What an operator would look at when the alert fires: once a partition of the
    pipeline's topics has had its last stable offset stand still past
    `WATCH_AFTER_S`, runs `find-hanging` (Kafka's KIP-664 check) and records what it
    lists, for the failure message. It aborts nothing: the hanging transactions seen
    had committed at their coordinator (KAFKA-20734), and an abort would drop them."""

    def __init__(self, kafka: KafkaConfig) -> None:
        self.kafka = kafka
        t = Topics(kafka.topic_prefix)
        self.names = [t.events, t.index, t.replies, t.dlq]
        self.found: list[str] = []
        self.errors: list[str] = []
        self._trackers = {name: StallTracker() for name in self.names}
        self._next_look = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hanging-watch", daemon=True)

    def __enter__(self) -> HangingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(240)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_POLL_S):
            try:
                self._check(time.monotonic())
            except Exception as exc:  # the broker is down, the tool failed: look again
                self.errors.append(repr(exc)[:200])

    def _check(self, now: float) -> None:
        unstable = transactions.unstable_partitions(self.kafka, self.names)
        stalled = False
        for name, tracker in self._trackers.items():
            mine = [(p, lso, hw) for topic, p, lso, hw in unstable if topic == name]
            tracker.keep(p for p, _, _ in mine)
            for p, lso, hw in mine:
                stalled |= tracker.observe(p, lso, hw, now).seconds > WATCH_AFTER_S
        if not stalled or now < self._next_look:
            return
        self._next_look = now + WATCH_BACKOFF_S  # a JVM per look: not every poll
        rows = transactions.find_hanging(self.kafka, max_transaction_timeout_min=0)
        for row in rows[1:]:
            topic, partition, producer, epoch, _, start = row[:6]
            found = f"{topic}[{partition}]@{start} producer {producer} epoch {epoch}"
            if found not in self.found:
                self.found.append(found)


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

    recoveries: list[float] = []  # seconds from each fault until replies flow again
    back: list[float] = []  # seconds from each fault until the broker answered again

    def restart() -> str:
        down = time.monotonic()
        if stop == "kill":
            own_broker.kill()
        else:
            own_broker.stop()
        time.sleep(OUTAGE_S)  # the outage's length, not a wait for something
        own_broker.start()
        back.append(round(time.monotonic() - down, 1))
        # Flowing again: FLOWING replies more than when the broker answered (the first
        # few may be of transactions committed before it went down).
        replied = run.driver.replied
        wait_until(
            lambda: run.driver.replied >= min(replied + FLOWING, run.driver.total),
            timeout=RECOVERY_TIMEOUT_S,
            interval=0.05,
            what="a reply after the broker restart",
        )
        recoveries.append(round(time.monotonic() - down, 1))
        return f"broker SIG{stop.upper()}"

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.at_progress(scale.fault_points, restart))

    try:
        with HangingWatch(kafka) as watch:
            try:
                run.go(chaos)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nfind-hanging listed: {watch.found}") from None
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    with capsys.disabled():
        print(
            f"  seconds from each broker SIG{stop.upper()} until it answered again: {back}, "
            f"until {FLOWING} more replies: {recoveries}; "
            f"replies read twice by the load's reader: {run.driver.rereads}\n"
            f"  hanging transactions (KIP-664) found: {watch.found}"
        )
    run.verdict(f"broker-restart-{stop}", report, capsys)
    assert len(recoveries) == len(scale.fault_points)
