"""The command processor: consume a command, decide, emit events, index updates and
a reply, exactly once, in one Kafka transaction."""

from .faults import PROTECTED_SETTINGS, ProcessorConfigError, stall_hook
from .kafka_clients import RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS
from .loop import CONSUME_CHUNK, IDLE_POLL_S, Processor
from .restore import RESTORE_BATCH, RESTORE_CONSUMER, restore_partitions
from .settings import (
    GC_CHUNK_RECORDS,
    HUNG_CALL_S,
    MAX_COMMAND_BYTES,
    ProcessorFatal,
    ProcessorSettings,
)

__all__ = [
    "CONSUME_CHUNK",
    "GC_CHUNK_RECORDS",
    "HUNG_CALL_S",
    "IDLE_POLL_S",
    "MAX_COMMAND_BYTES",
    "PROTECTED_SETTINGS",
    "RESTORE_BATCH",
    "RESTORE_CONSUMER",
    "RETRY_BACKOFF_MAX_MS",
    "RETRY_BACKOFF_MS",
    "Processor",
    "ProcessorConfigError",
    "ProcessorFatal",
    "ProcessorSettings",
    "restore_partitions",
    "stall_hook",
]
