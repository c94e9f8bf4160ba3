"""Open transactions for tests: one the test ends itself (`open_transaction`), and
one that nobody will end soon (`leave_open_transaction`: a producer process that
writes in a transaction with a long `transaction.timeout.ms` and is SIGKILLed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid

from confluent_kafka import Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import EVENT_EPOCH, DuRootStarted, WorkflowEvent
from duroot_stream.ids import new_ulid
from duroot_stream.wire import Codec, event_headers, partition_for
from tests.processor_harness import PARTITIONS

LONG_TIMEOUT_MS = 900_000  # the broker's transaction.max.timeout.ms (15 min)

# Writes `count` records to one partition inside a transaction, flushes them (so
# they are in the log), says so, and waits to be killed.
_PRODUCER = """
import sys, time
from confluent_kafka import Producer
bootstrap, topic, partition, count, txn_id, timeout_ms = sys.argv[1:7]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
              "transaction.timeout.ms": int(timeout_ms)})
p.init_transactions(60)
p.begin_transaction()
for i in range(int(count)):
    p.produce(topic, b"left open", b"k", partition=int(partition))
p.flush(60)
print("written", flush=True)
time.sleep(3600)
"""


def leave_open_transaction(
    kafka: KafkaConfig, topic: str, partition: int, count: int = 5, txn_id: str = "left-open"
) -> None:
    """Return once `count` records of a transaction are in the partition and their
    producer is SIGKILLed: the transaction stays open for `LONG_TIMEOUT_MS`."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PRODUCER,
            kafka.bootstrap_servers,
            topic,
            str(partition),
            str(count),
            txn_id,
            str(LONG_TIMEOUT_MS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until written (or the process ends)
        assert line.strip() == "written", f"the producer did not write: {line!r}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def open_transaction(
    kafka: KafkaConfig, topic: str, partition: int, wf: str, timeout_ms: int = 60_000
) -> Producer:
    """A producer whose transaction holds one STARTED event of `wf` in `partition`
    (flushed: in the log), not yet ended: the test commits or aborts it."""
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "transactional.id": f"test-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": timeout_ms,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    event = WorkflowEvent(
        new_ulid(),
        EVENT_EPOCH,
        wf,
        0,
        new_ulid(),
        DuRootStarted(str(uuid.uuid4()), "/g", "h", "/r"),
    )
    producer.produce(
        topic,
        Codec().encode_event(event),
        f"{wf}/0".encode(),
        partition=partition,
        headers=list(event_headers(event)),
    )
    assert producer.flush(30) == 0
    return producer


def workflow_on(partition: int, partitions: int = PARTITIONS) -> str:
    """A new workflow id whose partition is `partition`."""
    while True:
        wf = str(uuid.uuid4())
        if partition_for(wf, partitions) == partition:
            return wf
