"""The processor's settings, its one fatal error, and the limits it works within."""

from __future__ import annotations

import socket
from collections.abc import Callable
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


class ProcessorFatal(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, fatal Kafka error)."""


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
    # Test hook: `decide` raises, as a programming error would, for these command ids.
    fail_decide_for: frozenset[str] = frozenset()
    # Fault injection for tests: called before each commit; returning True makes
    # the processor abort that transaction as if Kafka had required it.
    abort_before_commit: Callable[[], bool] | None = None
