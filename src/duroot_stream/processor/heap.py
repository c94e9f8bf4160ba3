"""glibc's malloc made to give back what a restore frees (restore.py calls both).

A restore frees far more than it keeps: the fetched records, the folds, the states made
before compaction (compaction.py). glibc keeps freed memory in the process:

- `give_back()` (`malloc_trim(0)`, once the restore is over) returns the free pages of
  every arena and the top of the main one: after 100,000 workflows, 110-360 MiB of RSS
  down to 80 MiB, in 4-26 ms.
- It does not trim the top of the other arenas, those of librdkafka's threads, which
  only `free` trims, above the trim threshold. That threshold is dynamic: freeing a
  block larger than the mmap threshold (librdkafka's fetch buffers, MiBs) raises the
  mmap threshold to its size (up to 32 MiB) and the trim threshold to twice that. So
  after most restores the arena of a broker thread kept 15-27 MiB of its top resident:
  130-550 B more per restored workflow of 100,000, by chance (docs/benchmarks.md).
  `settle()` fixes both thresholds at glibc's defaults, which ends the raising.

Process-wide, and the processor's whole life: a process that restores once restores
again at the next rebalance. A fixed mmap threshold maps every block above 128 KiB
afresh (a fetch buffer, a large command); measured, neither the restore nor the
handling of a command got slower. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Final

# mallopt's parameters (malloc.h) and glibc's default for both thresholds.
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
THRESHOLD: Final = 128 * 1024

_lock = threading.Lock()
_settled = False


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


_mallopt = _libc_function("mallopt")
_malloc_trim = _libc_function("malloc_trim")


def settle() -> bool:
    """Fix glibc's trim and mmap thresholds (once per process); False where there is
    no glibc malloc to tell."""
    global _settled
    if _mallopt is None or _malloc_trim is None:  # mallopt alone: not glibc's malloc
        return False
    with _lock:
        if not _settled:
            _settled = bool(
                _mallopt(M_MMAP_THRESHOLD, THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, THRESHOLD)
            )
        return _settled


def give_back() -> None:
    """Return the freed memory of every arena to the kernel (`malloc_trim(0)`)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
