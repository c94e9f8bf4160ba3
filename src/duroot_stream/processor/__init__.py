"""The command processor: consume a command, decide, emit events, index updates and
a reply, exactly once, in one Kafka transaction."""

from .faults import PROTECTED_SETTINGS, ProcessorConfigError, ProcessorFatal
from .kafka_clients import RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS
from .loop import CONSUME_CHUNK, IDLE_POLL_S, Processor
from .port import Faults
from .restore import restore_partitions
from .restore_read import RESTORE_BATCH, RESTORE_CONSUMER
from .settings import (
    FENCE_AFTER_S,
    GC_CHUNK_RECORDS,
    HUNG_CALL_S,
    MAX_COMMAND_BYTES,
    ProcessorSettings,
)
from .watchdog import exit_when_hung

__all__ = [
    "CONSUME_CHUNK",
    "FENCE_AFTER_S",
    "GC_CHUNK_RECORDS",
    "HUNG_CALL_S",
    "IDLE_POLL_S",
    "MAX_COMMAND_BYTES",
    "PROTECTED_SETTINGS",
    "RESTORE_BATCH",
    "RESTORE_CONSUMER",
    "RETRY_BACKOFF_MAX_MS",
    "RETRY_BACKOFF_MS",
    "Faults",
    "Processor",
    "ProcessorConfigError",
    "ProcessorFatal",
    "ProcessorSettings",
    "exit_when_hung",
    "restore_partitions",
]
