"""The wheel carries what the installed package needs without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_schemas_and_the_broker_pom(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("duroot_stream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in ("Command", "WorkflowEvent", "WorkflowIndexEvent", "Reply"):
        assert f"duroot_stream/schemas/{schema}.avsc" in names
        assert f"duroot_stream/schemas/released/{schema}.v1.avsc" in names
    assert "duroot_stream/kafka/pom.xml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "duroot-stream = duroot_stream.cli.main:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
