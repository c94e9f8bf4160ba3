"""Values the subcommands parse: durations as nog (Go) writes them."""

from __future__ import annotations

import argparse
import re

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def duration_s(text: str) -> float:
    """Seconds from `90`, `90s`, `5m`, `1h30m`, `250ms` or `2d` (Go's time.ParseDuration
    units, plus `d`; a bare number is seconds)."""
    spec = text.strip()
    try:
        return float(spec)
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _PART.finditer(spec):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(spec) or not spec:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give seconds or e.g. 90s, 5m, 1h30m, 2d"
        )
    return total
