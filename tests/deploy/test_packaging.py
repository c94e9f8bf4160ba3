"""The wheel carries what the installed package needs without the source tree: the
compiled modules where a C compiler is, pure Python with DUROOT_PURE_PYTHON=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from duroot_stream.compiled import COMPILED

ROOT = Path(__file__).resolve().parents[2]
HAS_COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc"))
# With the development environment's build tools: no network.
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")


def build_wheel(out: Path, **env: str) -> Path:
    """`pip wheel .` with the development environment's build tools (no network)."""
    environ = {k: v for k, v in os.environ.items() if k != "DUROOT_PURE_PYTHON"}
    subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**environ, **env},
    )
    (wheel,) = out.glob("duroot_stream-*.whl")
    return wheel


def extension_names(module: str) -> set[str]:
    return {module.replace(".", "/") + suffix for suffix in EXTENSION_SUFFIXES}


def check_ships_schemas_and_the_broker_pom(wheel: Path) -> None:
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


def imported_files(wheel: Path, unpacked: Path) -> dict[str, str]:
    """Each compiled-set module's file, and the build, as the unpacked wheel imports them
    (first on the path: the source tree is not seen)."""
    zipfile.ZipFile(wheel).extractall(unpacked)
    program = (
        "import importlib, json, duroot_stream.compiled as c; "
        f"files = {{m: importlib.import_module(m).__file__ for m in {list(COMPILED)!r}}}; "
        "print(json.dumps({**files, 'BUILD': c.BUILD}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    files: dict[str, str] = json.loads(run.stdout)
    return files


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the wheel is pure (tested below)")
def test_the_wheel_is_compiled_and_imports_its_compiled_modules(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel
    check_ships_schemas_and_the_broker_pom(wheel)
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in COMPILED:
        assert extension_names(module) & names, f"{module} not compiled in {wheel.name}"
    assert "duroot_stream/compiled-sources.sha256" in names
    files = imported_files(wheel, tmp_path / "unpacked")
    assert files.pop("BUILD") == "compiled"
    for module, file in files.items():
        assert file.startswith(str(tmp_path / "unpacked")), file
        assert file.endswith(tuple(EXTENSION_SUFFIXES)), f"{module} imported from {file}"


def test_the_pure_wheel_has_no_compiled_module(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist", DUROOT_PURE_PYTHON="1")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    check_ships_schemas_and_the_broker_pom(wheel)
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.endswith(".so")] == []
    files = imported_files(wheel, tmp_path / "unpacked")
    assert files.pop("BUILD") == "pure"
    assert all(file.endswith(".py") for file in files.values()), files
