"""The command processor: consume a command, decide, emit events, index updates and
a reply, exactly once, in one Kafka transaction."""

from .loop import (
    HUNG_CALL_S,
    MAX_COMMAND_BYTES,
    Processor,
    ProcessorFatal,
    ProcessorSettings,
)

__all__ = ["HUNG_CALL_S", "MAX_COMMAND_BYTES", "Processor", "ProcessorFatal", "ProcessorSettings"]
