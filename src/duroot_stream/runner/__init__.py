"""The du runner: one per file-server host; runs du for the workflows started on it."""

from . import du, paths
from .offsets import OffsetTracker
from .runner_settings import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, RunnerSettings
from .service import Runner
from .workflow import INTERRUPTED

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "INTERRUPTED",
    "OffsetTracker",
    "Runner",
    "RunnerSettings",
    "du",
    "paths",
]
