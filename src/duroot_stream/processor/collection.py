"""The cyclic garbage collector held off while many objects that make no cycles are
made: a command being handled (engine.py), a partition being folded (restore.py).

Both run at once (a restore has a thread of its own), so `gc.disable()` and
`gc.enable()` are counted here: the collector comes back when the last holder
releases it, and only if it was on when the first one held it. Paired calls each
saving `gc.isenabled()` would not do: one could save False while the other held
it, and leave it off for good.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_was_enabled = False


def hold_collection() -> None:
    """No cyclic collection until the matching `release_collection()`."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1


def release_collection() -> None:
    """The collector back on once no one holds it (if it was on before)."""
    global _holders
    with _lock:
        _holders -= 1
        if _holders == 0 and _was_enabled:
            gc.enable()
