"""The roots file `begin --roots-file` and `schedule` read: where each global root lives.

[roots."/example/data"]
registry_id = "0b0c8d4e-1111-4222-8333-444455556666"
host = "files.example.org"
host_root = "/srv/data"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Root:
    """Where a global root lives (what nog's registry knows)."""

    registry_id: str
    host: str
    host_root: str


def load_roots(path: Path) -> dict[str, Root]:
    """A roots file: `[roots."<global root>"]` tables with `registry_id`, `host` and
    `host_root`. ValueError naming the file and the entry when something is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"roots file {path}: {exc}") from None
    roots = data.get("roots")
    if not isinstance(roots, dict):
        raise ValueError(f'roots file {path}: no [roots."<global root>"] tables')
    out = {}
    for global_root, entry in roots.items():
        fields = {}
        for name in ("registry_id", "host", "host_root"):
            value = entry.get(name) if isinstance(entry, dict) else None
            if not isinstance(value, str) or not value:
                raise ValueError(f'roots file {path}: [roots."{global_root}"] needs {name}')
            fields[name] = value
        out[global_root] = Root(**fields)
    return out
