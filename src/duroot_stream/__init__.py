"""duroot-stream: du on file-system roots as an event-sourced workflow on Kafka."""

# First: a compiled module that would run stale stops the import (compiled.py).
from . import compiled as compiled

__version__ = "0.1.0"
