"""The processor's settings and the limits it works within."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from duroot_stream.config import KafkaConfig

KAFKA_TIMEOUT_S = 30.0
HUNG_CALL_S = 2 * KAFKA_TIMEOUT_S  # the CLI exits when a Kafka call blocks this long
# Records must fit librdkafka's message.max.bytes (1,000,000), or producing them
# fails, and the processor would stop on that command after every restart. An
# event is at most a few hundred bytes bigger than the command that caused it:
# bigger commands are dead-lettered. A dead letter is the malformed record plus
# headers, so one of a record near the limit is cut to fit.
MAX_COMMAND_BYTES = 990_000
DEAD_LETTER_MAX_BYTES = 990_000
# A transaction may live `transaction.timeout.ms` (at most 40 s unless -X sets more),
# and the broker aborts one past it on its next check (every 10 s by default): an
# open transaction a restore still waits for after both, with a margin, is hanging.
RESTORE_WAIT_S = 70.0
ABORT_CHECK_MARGIN_S = 30.0  # added to a -X transaction.timeout.ms for the same bound
# Records garbage collection puts into one transaction, at most (one command's own
# records excepted: a Delete's tombstones and index records are never split).
GC_CHUNK_RECORDS = 10_000
# A dead owner's offsets stay unstable until its transaction ends; a live owner's
# never are at a takeover (it commits before it lets partitions go). So a short
# look is enough before the heir ends the transaction itself (a stable answer takes
# milliseconds; a slow one costs only a look at the group).
FENCE_AFTER_S = 0.2


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaConfig
    instance_id: str = field(default_factory=socket.gethostname)
    group_id: str = "duroot-processor"
    batch_size: int = 1000  # commands per transaction, at most
    commit_interval_s: float = 0.1  # like Kafka Streams under exactly-once
    gc_interval_s: float = 60.0
    max_active_s: float = 24 * 3600.0  # AbortExpired after this long active
    delete_after_s: float = 5 * 24 * 3600.0  # Delete this long after completion
    metrics_port: int | None = None
    # Topics a command's reply route may name (a regex, matched in full); None: the
    # replies topic and `<prefix>replies.*`. Never the pipeline's own topics.
    reply_topics: str | None = None
    # How long a restore waits for an open transaction (None: `restore_wait()`).
    restore_wait_s: float | None = None
    gc_chunk_records: int = GC_CHUNK_RECORDS
    # A restore that finds a previous owner's transaction still open after this long
    # ends it if that owner has left the group (fencing.py); None: wait for the broker.
    fence_after_s: float | None = FENCE_AFTER_S
    # Other instances whose partitions' state this one keeps current (standby.py).
    standbys: int = 0

    @property
    def transactional_id(self) -> str:
        """Stable per instance: a restarted instance (or a renewed producer) aborts
        what its predecessor left open at init_transactions."""
        return f"{self.group_id}-{self.instance_id}"

    def restore_wait(self) -> float:
        """`restore_wait_s`, or a bound above the transaction timeout in effect."""
        if self.restore_wait_s is not None:
            return self.restore_wait_s
        timeout_ms = self.kafka.overrides.get("transaction.timeout.ms")
        if timeout_ms is None or not str(timeout_ms).isdigit():
            return RESTORE_WAIT_S
        return max(RESTORE_WAIT_S, int(timeout_ms) / 1000 + ABORT_CHECK_MARGIN_S)
