"""The du runner: one per file-server host; runs du for the workflows started on it."""

from . import du
from .runner import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, INTERRUPTED, Runner, RunnerSettings

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "INTERRUPTED",
    "Runner",
    "RunnerSettings",
    "du",
]
