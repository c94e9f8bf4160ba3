"""Cluster failover: three brokers (replication 3, min ISR 2), two processors under
load. At each fault point (a share of the load answered) the node that leads the
transaction coordinator of one processor, or a commands partition (alternately), is
SIGKILLed; once the cluster has elected a new leader it is started again. The next
fault first waits until that node answers and every replica is back in sync, so a
kill never takes a second node (the quorum) or the last in-sync replica. Nothing
lost, nothing duplicated, processing resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from duroot_stream.config import KafkaConfig
from duroot_stream.local.cluster import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, LocalCluster
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.reliability.harness import PARTITIONS, Run, Scale, prepare
from tests.reliability.supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # timeout: tests/conftest.py

ELECTION_TIMEOUT_S = 180.0  # the broker session timeout (9 s) plus a loaded machine
CATCH_UP_TIMEOUT_S = 300.0


def _asks(question: Callable[[], bool]) -> Callable[[], bool]:
    """A metadata question that may meet the dying node: no answer is a no."""

    def ask() -> bool:
        try:
            return question()
        except KafkaException:
            return False

    return ask


def test_cluster_failover(
    own_cluster: LocalCluster, scale: Scale, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = KafkaConfig(bootstrap_servers=own_cluster.bootstrap, topic_prefix="reliability.")
    prepare(kafka)
    topics = Topics(kafka.topic_prefix)
    replicated = [t.name for t in topics.all()] + [TRANSACTION_STATE_TOPIC, OFFSETS_TOPIC]
    run = Run(kafka, scale, tmp_path)
    elections: list[float] = []
    restarted: list[int] = []  # started again, not yet seen back in every ISR

    def caught_up() -> None:
        while restarted:
            node = restarted.pop()
            own_cluster.nodes[node].wait_ready()
            wait_until(
                _asks(lambda: not own_cluster.under_replicated(replicated)),
                timeout=CATCH_UP_TIMEOUT_S,
                interval=0.5,
                what=f"node {node} back in every ISR",
            )

    def kill_leader() -> str:
        caught_up()
        n = len(run.supervisor.faults)
        if n % 2 == 0:  # the coordinator of a's, then b's transactions
            txn_id = f"duroot-processor-{'ab'[n // 2 % 2]}"
            node = own_cluster.transaction_coordinator(txn_id)
            what = f"coordinator of {txn_id}"
            moved = _asks(lambda: own_cluster.transaction_coordinator(txn_id) not in (node, -1))
        else:
            partition = run.rng.randrange(PARTITIONS)
            node = own_cluster.leader(topics.commands, partition)
            what = f"leader of {topics.commands}[{partition}]"
            moved = _asks(lambda: own_cluster.leader(topics.commands, partition) not in (node, -1))
        own_cluster.kill(node)
        killed = time.monotonic()
        wait_until(moved, timeout=ELECTION_TIMEOUT_S, what=f"a new {what} after node {node}")
        elections.append(time.monotonic() - killed)
        own_cluster.restart(node, wait=False)  # the load goes on while it recovers
        restarted.append(node)
        return f"SIGKILL node {node} ({what}), elected in {elections[-1]:.0f} s"

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.at_progress(scale.fault_points, kill_leader))

    try:
        run.go(chaos)
        caught_up()
        report = run.settle_and_verify()
    finally:
        run.supervisor.close()
    # Across an election an instance may be fenced, or a call may hang past the CLI's
    # 60 s limit: it exits 1 and is restarted, as a service manager would.
    run.verdict("cluster-failover", report, capsys, allow_fatal_exits=True)
    assert len(elections) == len(scale.fault_points), "a new leader after every kill"
    assert own_cluster.brokers() == {1, 2, 3}, "every node back at the end"
