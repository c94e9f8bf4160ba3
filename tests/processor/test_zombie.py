"""A zombie's late commit is not missed by the instance that took its partitions over
(Kafka Streams' KAFKA-10167).

KIP-447 fences a zombie when it sends its offsets with an old group generation, but
`commit_transaction` (EndTxn) checks no generation: an instance that stalls between
the two while the group moves its partitions on can still commit. Here the instance
"zombie" stalls there (a `StallBefore` fault blocks its loop thread while
librdkafka's threads go on), its consumer leaves the group once
`max.poll.interval.ms` has passed without a poll (what librdkafka does for a stalled
application), the group gives its partitions to "heir", and only once the heir has
begun restoring them (or is waiting for the zombie's transaction) does the zombie
resume and commit. The reliability verifier then replays every command through the
domain core: nothing lost, nothing duplicated, every vid chain intact.

With the old restore (read to the last stable offset) the heir's state lacks the
zombie's events while its consumer resumes after the zombie's commands: its next
events reuse their seq numbers and break the chain, and the verifier says so.

Twice: with the heir's fencing off, the heir waits and the late commit goes
through; with it on (the default), the heir ends the zombie's transaction as soon as
it finds it open (fencing.py) and restores while the zombie still sleeps, and the
zombie's late commit fails, fenced: it stops, and its commands are the heir's.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import replace

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, Commit, Init, PathUsage
from duroot_stream.processor import FENCE_AFTER_S, Processor, ProcessorFatal
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import partition_for
from tests.kafka_helpers import wait_until
from tests.processor.client_faults import StallBefore
from tests.processor_harness import PARTITIONS, Requester, command, running_processor
from tests.reliability.verify import replay

pytestmark = pytest.mark.broker

REGISTRY = str(uuid.uuid4())
# The zombie: out of the group 6 s after its loop stops polling (librdkafka leaves
# the group itself then), its transaction allowed to live far longer, so that the
# late commit succeeds (with the default timeout the coordinator might abort it).
ZOMBIE_SETTINGS = {
    "session.timeout.ms": "6000",
    "max.poll.interval.ms": "6000",
    "transaction.timeout.ms": "60000",
}
RESTORE_LOGS = ("partitions restored", "restore waiting for an open transaction")


def workflow_per_partition(partitions: int) -> list[str]:
    """One workflow id for each partition."""
    found: dict[int, str] = {}
    while len(found) < partitions:
        wf = str(uuid.uuid4())
        found.setdefault(partition_for(wf, partitions), wf)
    return [found[p] for p in range(partitions)]


class _Logs(logging.Handler):
    """The processor log records, as they come (both instances run in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def restores_since(self, mark: int, partitions: set[int]) -> list[str]:
        """Restore logs since record `mark` naming one of `partitions`."""
        return [
            r.getMessage()
            for r in self.records[mark:]
            if r.getMessage() in RESTORE_LOGS and partitions & set(getattr(r, "partitions", ()))
        ]


def owned(processor: Processor) -> set[int]:
    """The partitions a processor holds (restored, not revoked)."""
    return processor.owned_partitions()


@pytest.mark.parametrize("fencing", [False, True], ids=["waits", "fences"])
def test_a_zombie_commit_after_its_partitions_moved_is_neither_lost_nor_doubled(
    kafka: KafkaConfig, requester: Requester, capsys: pytest.CaptureFixture[str], fencing: bool
) -> None:
    # The zombie's loop thread, once armed, stalls between send_offsets and commit.
    stall = StallBefore("commit_transaction")
    armed, paused, resume = stall.armed, stall.paused, stall.resume
    logs = _Logs()
    logger = logging.getLogger("duroot.processor")
    logger.addHandler(logs)
    level = logger.level
    logger.setLevel(logging.INFO)  # the restore's own log lines are INFO
    workflows = workflow_per_partition(PARTITIONS)
    everything = set(range(PARTITIONS))
    zombie_kafka = replace(kafka, overrides=ZOMBIE_SETTINGS)
    fence_after_s = FENCE_AFTER_S if fencing else None
    fenced = pytest.raises(ProcessorFatal, match="fenced") if fencing else contextlib.nullcontext()
    try:
        with fenced, running_processor(zombie_kafka, stall, instance_id="zombie") as z:
            for wf in workflows:
                assert requester.request(command(wf, Init(REGISTRY, "/g/" + wf, "h", "/r"))).ok
                assert requester.request(command(wf, Append((PathUsage("before", 1),)))).ok
            with running_processor(kafka, instance_id="heir", fence_after_s=fence_after_s) as heir:
                wait_until(
                    lambda: owned(z) and owned(heir) and owned(z) | owned(heir) == everything,
                    timeout=60,
                    what="the partitions shared out",
                )
                # An Append to every workflow: the zombie's next transaction holds some
                # of them, and stalls before its commit.
                armed.set()
                during = [
                    requester.send(command(wf, Append((PathUsage("during", 2),))))
                    for wf in workflows
                ]
                wait_until(paused.is_set, timeout=60, what="the zombie to stall before its commit")
                stalled_at, mark, zombies = time.monotonic(), len(logs.records), owned(z)
                committed = z.metrics.transactions.labels("committed")._value.get()
                # Its consumer leaves the group (max.poll.interval.ms); the heir gets
                # its partitions and restores them, or waits for the open transaction.
                restores = wait_until(
                    lambda: logs.restores_since(mark, zombies),
                    timeout=120,
                    what="the heir to take the zombie's partitions over",
                )
                took_over_s = time.monotonic() - stalled_at
                if fencing:  # restored while the zombie sleeps with its transaction open
                    wait_until(
                        lambda: "partitions restored" in logs.restores_since(mark, zombies),
                        timeout=120,
                        what="the heir to restore the zombie's partitions before it wakes",
                    )
                    took_over_s = time.monotonic() - stalled_at
                    assert paused.is_set() and not resume.is_set()
                    # The fencing producer may finish after the abort it began.
                    wait_until(
                        lambda: heir.metrics.previous_owners_fenced._value.get() == 1,
                        timeout=KAFKA_TIMEOUT_S,
                        what="the heir's fencing of the zombie to finish",
                    )
                resume.set()  # the zombie wakes up and commits
                wait_until(
                    lambda: (
                        z.metrics.transactions.labels("committed")._value.get() > committed
                        or z.failed
                    ),
                    timeout=60,
                    what="the zombie's late commit",
                )
                late_commit = "committed" if not z.failed else "failed"
                for corr in during:
                    requester.wait_reply(corr, timeout=120)
                # Whoever owns each workflow now: two more commands each, chained on
                # whatever state it holds.
                for wf in workflows:
                    assert requester.request(
                        command(wf, Append((PathUsage("after", 3),))), timeout=120
                    ).ok
                    assert requester.request(command(wf, Commit()), timeout=120).ok
                heir_restored = heir.workflow_count()
    finally:
        logger.removeHandler(logs)
        logger.setLevel(level)
        resume.set()
    report = replay(kafka)
    with capsys.disabled():
        print(
            f"\n[zombie] partitions {sorted(zombies)} taken over {took_over_s:.1f} s after the "
            f"stall ({restores[0]!r}); "
            f"late commit {late_commit}; heir holds {heir_restored} workflows; {report.summary()}"
        )
    assert stall.injected == 1, f"{stall.injected} stalls injected, not one"
    assert late_commit == ("failed" if fencing else "committed"), late_commit
    assert report.commands == 5 * len(workflows) and report.missing_replies == 0
    assert report.lost == 0 and report.duplicated == 0, report.problems
    assert report.problem_count == 0, "\n".join(report.problems)
