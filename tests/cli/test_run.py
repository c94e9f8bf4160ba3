"""`duroot-stream run`: the whole pipeline on a fresh local broker, as `make run` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def _processes(needle: str) -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline:
            found.add(int(pid))
    return found


def _tree(root: Path) -> None:
    for a in range(3):
        for b in range(3):
            d = root / f"dir{a}" / f"sub{b}"
            d.mkdir(parents=True)
            (d / "data").write_bytes(b"x" * (4096 * (a + b + 1)))
    (root / "top.txt").write_text("hello")


def _du_directly(root: Path) -> list[str]:
    out = subprocess.run(
        ["du", "-0", "--threshold=0", "--max-depth=2", "."],
        cwd=root,
        capture_output=True,
        check=True,
        env={"LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"]},
    ).stdout
    lines = []
    for record in out.split(b"\0"):
        if not record:
            continue
        kib, path = record.decode().split("\t", 1)
        path = path.removeprefix("./") or "."
        lines.append(f"{int(kib) * 1024} {path}")
    return lines


def test_run_prints_what_du_prints_and_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _tree(root)
    # The run's broker keeps its data under TMPDIR: a private one tells its processes apart
    # from any other broker on the machine.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUROOT_")}
    env["TMPDIR"] = str(private_tmp)
    result = subprocess.run(
        [sys.executable, "-m", "duroot_stream.cli.main", "run", str(root), "--bytes"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert printed == _du_directly(root)
    assert "# workflowId: " in result.stdout
    # Progress on stderr, in order.
    progress = [line for line in result.stderr.splitlines() if line.startswith("==>")]
    steps = [
        "broker ready",
        "topics ready",
        "processor ready",
        "runner ready",
        "began workflow",
        "workflow complete",
        "metrics:",
        "done",
    ]
    positions = [next(i for i, line in enumerate(progress) if step in line) for step in steps]
    assert positions == sorted(positions), progress
    # The usage exporter beside the other services, with the run's usage in it.
    metrics_line = next(line for line in progress if "metrics:" in line)
    assert "usage (exporter) http://127.0.0.1:" in metrics_line, metrics_line
    assert not _processes(str(private_tmp)), "run left its broker running"
    assert not list(private_tmp.iterdir()), "run left its broker's data behind"
    assert not _processes(str(root)), "run left a process behind (du?)"


def test_run_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "duroot_stream.cli.main", "run", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not a directory" in result.stderr
