"""Network trouble: processor a talks to the broker only through a fault proxy (the
broker's PROXIED listener is advertised at the proxy's port), processor b directly.
At each fault point (a share of the load answered) the proxy, in turn, stalls every
connection of a for a while, resets them all, holds a's next EndTxn, or a's next
Produce for 5-15 s. Nothing lost, nothing duplicated; and no partition's last
stable offset stays stuck below its high watermark for longer than the transaction
timeout plus the broker's abort check interval (a watcher samples them all run long).

Two variants differ in how long the EndTxn is held, measured against the processor's
own limit for a transactional call (`TXN_CALL_TIMEOUT_S`, 6 s, given up 2 s later
at most):

- `within-timeout`: 2-4 s, below that limit: the commit waits the hold out;
- `past-timeout`: 11-15 s, past the limit and its grace: the processor gives the
  commit up and renews its producer while the EndTxn is still held. The new
  producer's InitProducerId makes the coordinator abort the transaction (or finish
  it) and bumps the epoch, so the held request, arriving late, is fenced; the
  group's committed offsets then say whether the batch is redone or kept. The test
  asserts that renewal: a "renewing the producer" line in a's log during the hold.

Neither hold reaches librdkafka's request timeout: with the processor's 40 s
transaction timeout librdkafka lowers `socket.timeout.ms` to just below it, so it
never sends the EndTxn again by itself. (With a 10 s transaction timeout it did, and
the held request then committed the producer's next transaction half-made:
test_network_late_endtxn.py shows that hazard on a bare producer.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import ABORT_CHECK_MS, LocalBroker
from duroot_stream.processor.kafka_clients import TRANSACTION_TIMEOUT_MS
from duroot_stream.processor.kafka_transaction import CALL_GRACE_S, TXN_CALL_TIMEOUT_S
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.reliability.harness import PARTITIONS, Run, Scale, prepare
from tests.reliability.proxy import END_TXN, PRODUCE, FaultProxy
from tests.reliability.supervisor import ProcessorProcess, Supervisor, line_since

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py

TRANSACTION_TIMEOUT_S = TRANSACTION_TIMEOUT_MS / 1000  # the processor's transaction.timeout.ms
ABORT_CHECK_S = ABORT_CHECK_MS / 1000  # the local broker's abort check interval
# A loaded machine: sampling every second, the coordinator's markers, the scheduler.
SETTLE_SLACK_S = 15.0
STALL_S = 8.0  # how long a stall lasts, on purpose: the fault itself
APPLIED_TIMEOUT_S = 240.0  # a's next EndTxn or Produce: a may be restarting first
HOLD_POLL_S = 0.2  # how often a hold is looked for
# librdkafka's request timeout: socket.timeout.ms, lowered to the transaction timeout.
REQUEST_TIMEOUT_S = TRANSACTION_TIMEOUT_S - 0.1
# Within: 2 s to spare below the call limit (a loaded machine answers late). Past: 3 s
# beyond the limit and its grace, still far below the request timeout.
GIVEN_UP_S = TXN_CALL_TIMEOUT_S + CALL_GRACE_S  # the processor has given a call up by then
END_TXN_HOLDS_S = {
    "within-timeout": (TXN_CALL_TIMEOUT_S - 4.0, TXN_CALL_TIMEOUT_S - 2.0),
    "past-timeout": (GIVEN_UP_S + 3.0, GIVEN_UP_S + 7.0),
}
assert max(END_TXN_HOLDS_S["past-timeout"]) < REQUEST_TIMEOUT_S, "librdkafka would re-send it"
RENEWAL = "renewing the producer"  # the processor's log line (kafka_transaction.renew)


@dataclass
class LsoWatch:
    """Samples the last stable offset and high watermark of `topics`' partitions every
    second; `longest_stuck_s` is the longest any LSO stayed at one value below its HW."""

    kafka: KafkaConfig
    topics: list[str]
    longest_stuck_s: float = 0.0
    worst: str = ""
    _since: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lso-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        committed = Consumer(
            self.kafka.client(**{"group.id": "lso-watch", "isolation.level": "read_committed"})
        )
        uncommitted = Consumer(
            self.kafka.client(**{"group.id": "hw-watch", "isolation.level": "read_uncommitted"})
        )
        try:
            while not self._stop.wait(1.0):
                for topic in self.topics:
                    for p in range(PARTITIONS):
                        try:
                            self._sample(committed, uncommitted, topic, p)
                        except KafkaException:
                            continue  # the broker was slow to answer: next round
        finally:
            committed.close()
            uncommitted.close()

    def _sample(self, committed: Consumer, uncommitted: Consumer, topic: str, p: int) -> None:
        tp = TopicPartition(topic, p)
        lso = committed.get_watermark_offsets(tp, timeout=10)[1]
        hw = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
        now = time.monotonic()
        if lso >= hw:
            self._since.pop((topic, p), None)
            return
        seen = self._since.get((topic, p))
        if seen is None or seen[0] != lso:
            self._since[(topic, p)] = (lso, now)
            return
        stuck = now - seen[1]
        if stuck > self.longest_stuck_s:
            self.longest_stuck_s = stuck
            self.worst = f"{topic}[{p}] lso={lso} hw={hw} for {stuck:.0f} s"


@pytest.mark.parametrize("end_txn_hold", ["within-timeout", "past-timeout"])
def test_network_faults(
    end_txn_hold: str,
    proxied_broker: tuple[LocalBroker, FaultProxy],
    scale: Scale,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker, proxy = proxied_broker
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix="reliability.")
    prepare(kafka)
    topics = Topics(kafka.topic_prefix)
    run = Run(kafka, scale, tmp_path)
    watch = LsoWatch(kafka, [topics.events, topics.index, topics.replies])

    def stall() -> str:
        proxy.stall()
        time.sleep(STALL_S)  # the outage's length, not a wait for something
        proxy.resume()
        return f"stall {STALL_S:.0f} s"

    def reset() -> str:
        # a may be between connections (restarting, renewing its producer): a reset
        # then finds nothing to reset, so wait until it is connected again.
        wait_until(
            lambda: proxy.open_connections() > 0,
            timeout=APPLIED_TIMEOUT_S,
            interval=0.2,
            what="a connection of processor a through the proxy",
        )
        return f"reset {proxy.reset()} connections"

    def hold(api_key: int, name: str, low: float, high: float) -> float:
        """Hold a's next request of `api_key`; returns once the hold has begun (the
        schedule goes on then, not when it ends): how long it lasts."""
        seconds = run.rng.uniform(low, high)
        before = proxy.held({api_key})
        proxy.delay({api_key}, seconds)
        wait_until(
            lambda: proxy.held({api_key}) > before,
            timeout=APPLIED_TIMEOUT_S,
            interval=HOLD_POLL_S,
            what=f"a's next {name} held by the proxy",
        )
        return seconds

    def delay_produce() -> str:
        return f"delay Produce {hold(PRODUCE, 'Produce', 5.0, 15.0):.1f} s"

    def delay_end_txn() -> str:
        seconds = hold(END_TXN, "EndTxn", *END_TXN_HOLDS_S[end_txn_hold])
        if end_txn_hold == "past-timeout":
            # The renewal must come while the EndTxn is still held, else the late
            # request met the old producer, and this variant tested nothing new.
            log = run.supervisor.instances["a"].log_path
            mark = log.stat().st_size
            found = wait_until(
                lambda: line_since(log, mark, RENEWAL),
                timeout=seconds - 2 * HOLD_POLL_S,
                interval=HOLD_POLL_S / 2,
                what=f"processor a renewing its producer during the {seconds:.1f} s hold",
            )
            assert found is not None  # wait_until returns only a truthy result
            renewals.append(found)
        return f"delay EndTxn {seconds:.1f} s"

    renewals: list[str] = []
    faults: list[Callable[[], str]] = [stall, delay_end_txn, reset, delay_produce]

    def fault() -> str:
        return faults[len(run.supervisor.faults) % len(faults)]()

    def chaos(sup: Supervisor) -> None:
        # a is bootstrapped at the proxy: the metadata it gets back names the proxy too.
        sup.instances["a"] = ProcessorProcess("a", proxy.address, kafka.topic_prefix, tmp_path)
        sup.start("a")
        sup.start("b")
        watch.start()
        sup.run_chaos(sup.at_progress(scale.fault_points, fault))

    try:
        run.go(chaos)
        report = run.settle_and_verify()
    finally:
        watch.stop()
        run.supervisor.close()
    stats = proxy.stats
    with capsys.disabled():
        print(
            f"\n[reliability network-faults-{end_txn_hold}] proxy: connections={stats.connections} "
            f"requests={dict(stats.requests)} stalls={stats.stalls} resets={stats.resets} "
            f"(connections reset {stats.connections_reset}) delayed={dict(stats.delayed)}; "
            f"longest LSO stuck {watch.longest_stuck_s:.1f} s ({watch.worst or '-'}); "
            f"renewals during the EndTxn holds: {renewals}"
        )
    # After a reset librdkafka may block a call past the CLI's hung-call limit (60 s,
    # librdkafka issues 5456 and 5511): a exits 1 and is restarted, as a service
    # manager would.
    run.verdict(f"network-faults-{end_txn_hold}", report, capsys, allow_fatal_exits=True)
    end_txn_holds = sum(f.what.startswith("delay EndTxn") for f in run.supervisor.faults)
    assert end_txn_holds > 0, "no EndTxn was held"
    if end_txn_hold == "past-timeout":
        assert len(renewals) == end_txn_holds, f"renewals during the holds: {renewals}"
    assert stats.requests[PRODUCE] > 0, "processor a never produced through the proxy"
    injected = stats.stalls + stats.resets + sum(stats.delayed.values())
    assert injected == len(run.supervisor.faults), f"the proxy counted {injected} faults"
    assert stats.connections_reset >= stats.resets, "a reset found no connection to reset"
    limit = TRANSACTION_TIMEOUT_S + ABORT_CHECK_S + SETTLE_SLACK_S
    assert watch.longest_stuck_s <= limit, (
        f"a last stable offset stood still below its high watermark for "
        f"{watch.longest_stuck_s:.0f} s ({watch.worst}), more than {limit:.0f} s"
    )
