"""A real open transaction that nobody will end soon: a producer process that writes
in a transaction with a long `transaction.timeout.ms` and is SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys

from duroot_stream.config import KafkaConfig

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
