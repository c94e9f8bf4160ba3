"""What the processor's Kafka adapter does when a client call fails, for real (a broker),
each fault injected once through the fault port (`Processor(faults=...)`):

- a non-fatal _STATE from `produce` (the transaction failed in the background)
  aborts the batch, which is redone: every command applied and answered once,
  those fetched with it but not handled yet included;
- a `commit_transaction` that times out is kept when the group's committed offsets
  show it committed, and redone when they show it did not (the producer renewed
  either way);
- a transactional call hung past the hung-call limit exits the process.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootStarted, Init
from duroot_stream.processor import HUNG_CALL_S, Processor
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import Topics, partition_for
from tests.kafka_helpers import read_all
from tests.processor.client_faults import FailCall
from tests.processor_harness import (
    PARTITIONS,
    REPLY_S,
    Requester,
    command,
    header_value,
    new_workflow_id,
    running_processor,
    setup_topics,
    workflow_events,
)
from tests.reliability.supervisor import ProcessorProcess

pytestmark = pytest.mark.broker

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")


def _state_error() -> KafkaException:
    # What librdkafka raised from produce() after an OUT_OF_ORDER_SEQUENCE in the
    # background, in a full-size rebalance run.
    return KafkaException(
        KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state")
    )


def _timed_out() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit_transaction timed out"))


def _counted(processor: Processor, result: str) -> float:
    value: float = processor.metrics.transactions.labels(result)._value.get()
    return value


def test_a_state_error_from_produce_aborts_the_batch_which_is_redone_once(
    kafka: KafkaConfig, requester: Requester
) -> None:
    # Commands on every partition, waiting before the processor starts: its first
    # batch fetches them together. The fault comes at the second command's first
    # record (a command makes three: event, index, reply), so the third, fetched
    # with it, is not handled yet when the batch aborts.
    sent = {requester.send(command(wf, INIT)): wf for wf in _one_per_partition(3)}
    faults = FailCall("produce", _state_error, armed=1, skip=3)
    with running_processor(kafka, faults) as proc:
        for correlation in sent:
            assert requester.wait_reply(correlation).ok
        aborted, renewals = _counted(proc, "aborted"), proc.metrics.producer_renewals._value.get()
    assert faults.injected == 1 and aborted == 1 and renewals == 0
    for wf in sent.values():
        assert [type(e.payload) for _, e in workflow_events(kafka, wf)] == [DuRootStarted], wf
    replies = Counter(
        header_value(m, "correlation-id").decode()
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
    )
    assert all(replies[c] == 1 for c in sent), replies


def _one_per_partition(count: int) -> list[str]:
    found: dict[int, str] = {}
    while len(found) < count:
        wf = new_workflow_id()
        found.setdefault(partition_for(wf, PARTITIONS), wf)
    return [found[p] for p in sorted(found)]


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_a_timed_out_commit_is_kept_or_redone_as_the_committed_offsets_say(
    kafka: KafkaConfig, requester: Requester, committed: bool
) -> None:
    # The commit runs and its answer is lost, or it times out without running.
    faults = FailCall("commit_transaction", _timed_out, after=committed, armed=1)
    wf = new_workflow_id()
    with running_processor(kafka, faults) as proc:
        assert requester.request(command(wf, INIT)).ok
        aborted = _counted(proc, "aborted")
        renewals = proc.metrics.producer_renewals._value.get()
    assert faults.injected == 1 and renewals == 1
    assert aborted == (0 if committed else 1)
    assert [type(e.payload) for _, e in workflow_events(kafka, wf)] == [DuRootStarted]
    replies = [
        m
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
        if m.key() is not None
    ]
    assert len(replies) == 1, "answered once"


def test_a_transactional_call_hung_past_the_limit_exits_the_process(
    kafka: KafkaConfig, tmp_path: Path
) -> None:
    assert HUNG_CALL_S == 60, "the limit the claim names; a short one here"
    setup_topics(kafka)
    limit_s = 2.0
    proc = ProcessorProcess(
        "hung",
        kafka.bootstrap_servers,
        kafka.topic_prefix,
        tmp_path,
        fault=("--hang", "init_transactions", "--hung-call-s", str(limit_s)),
    )
    proc.start()
    try:
        assert proc.process is not None
        # Started (imports, topics checked: a Kafka call), hung past the limit, seen
        # by the watchdog's next look.
        code = proc.process.wait(KAFKA_TIMEOUT_S + 2 * limit_s + REPLY_S)
        log = proc.log_path.read_text(errors="replace")
    finally:
        proc.close()
    assert code == 1, log
    assert "Kafka call init_transactions has not returned for" in log, log
