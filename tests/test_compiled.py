"""The compiled build: the run imports the build it expects, and a compiled module that
does not match its source stops the program, naming the module."""

from __future__ import annotations

import gc
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from duroot_stream import compiled
from duroot_stream.compiled import COMPILED, SOURCES_FILE, StaleBuild, check
from duroot_stream.domain import WorkflowState

PACKAGE = Path(compiled.__file__).parent
# Set by the Makefile: `make test` expects "compiled" where a C compiler is, `make
# test-pure` "pure". Unset (a bare pytest), the first test has nothing to hold the run to.
EXPECTED = os.environ.get("DUROOT_EXPECT_BUILD", "")
SUFFIX = EXTENSION_SUFFIXES[0]


@pytest.mark.skipif(not EXPECTED, reason="DUROOT_EXPECT_BUILD not set (the Makefile sets it)")
def test_the_run_imports_the_build_it_expects() -> None:
    assert EXPECTED in ("compiled", "pure"), f"DUROOT_EXPECT_BUILD={EXPECTED!r}"
    imported = {m: importlib.import_module(m).__file__ or "" for m in COMPILED}
    extensions = {m: f for m, f in imported.items() if f.endswith(tuple(EXTENSION_SUFFIXES))}
    if EXPECTED == "compiled":  # no module of the set fell back to its source
        assert extensions == imported
    else:  # the sources themselves run
        assert extensions == {}
        assert all(f.endswith(".py") for f in imported.values())
    assert compiled.BUILD == EXPECTED


@pytest.mark.skipif(compiled.BUILD != "compiled", reason="the compiled build's layout")
def test_a_compiled_state_is_small_and_outside_the_cyclic_collector() -> None:
    """The processor holds one state per workflow (domain/state.py: acyclic)."""
    state = WorkflowState("w")
    assert not gc.is_tracked(state)
    assert sys.getsizeof(state) <= 128


def test_the_compiled_set_names_modules_that_exist() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for module in COMPILED:
        assert Path(compiled.source_path(module)).is_file(), module


# --- the check, on a copy of the package's layout ---------------------------------------


def _tree(root: Path, *, built: bool) -> None:
    """The compiled set's sources under `root` and, if `built`, an extension for each
    (made after the sources, so newer) and the record of their digests."""
    lines = []
    for module in COMPILED:
        source = Path(compiled.source_path(module, str(root)))
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"# {module}\n", encoding="utf-8")
        relative = source.relative_to(root).as_posix()
        lines.append(f"{hashlib.sha256(source.read_bytes()).hexdigest()}  {relative}\n")
    if built:
        for module in COMPILED:
            source = Path(compiled.source_path(module, str(root)))
            source.with_name(source.stem + SUFFIX).write_bytes(b"")
        (root / "duroot_stream" / SOURCES_FILE).write_text("".join(lines), encoding="ascii")


def _newer(path: Path) -> None:
    """Make `path` newer than everything beside it."""
    stamp = path.stat().st_mtime + 10
    os.utime(path, (stamp, stamp))


def test_sources_alone_are_the_pure_build(tmp_path: Path) -> None:
    _tree(tmp_path, built=False)
    assert check(str(tmp_path)) == "pure"


def test_extensions_newer_than_their_sources_are_the_compiled_build(tmp_path: Path) -> None:
    _tree(tmp_path, built=True)
    assert check(str(tmp_path)) == "compiled"


def test_a_source_newer_but_as_built_is_fine(tmp_path: Path) -> None:
    # A checkout or a wheel's installation gives sources new times, not new text.
    _tree(tmp_path, built=True)
    _newer(Path(compiled.source_path(COMPILED[3], str(tmp_path))))
    assert check(str(tmp_path)) == "compiled"


def test_an_edited_source_stops_the_program_naming_its_module(tmp_path: Path) -> None:
    _tree(tmp_path, built=True)
    source = Path(compiled.source_path(COMPILED[3], str(tmp_path)))
    source.write_text("# edited\n", encoding="utf-8")
    _newer(source)
    with pytest.raises(StaleBuild, match=rf"^{COMPILED[3]}: its compiled module .* another"):
        check(str(tmp_path))


def test_an_edited_source_without_a_record_stops_the_program(tmp_path: Path) -> None:
    _tree(tmp_path, built=True)
    (tmp_path / "duroot_stream" / SOURCES_FILE).unlink()
    _newer(Path(compiled.source_path(COMPILED[0], str(tmp_path))))
    with pytest.raises(StaleBuild, match=rf"^{COMPILED[0]}: "):
        check(str(tmp_path))


def test_a_module_missing_from_a_compiled_build_stops_the_program(tmp_path: Path) -> None:
    # A module added to the set after the last build would run as Python unnoticed.
    _tree(tmp_path, built=True)
    source = Path(compiled.source_path(COMPILED[-1], str(tmp_path)))
    source.with_name(source.stem + SUFFIX).unlink()
    with pytest.raises(StaleBuild, match=rf"^{COMPILED[-1]} is not compiled"):
        check(str(tmp_path))


def test_importing_the_package_refuses_a_stale_module(tmp_path: Path) -> None:
    """The check runs at `import duroot_stream`, before any module of the set."""
    _tree(tmp_path, built=True)
    for name in ("__init__.py", "compiled.py"):
        shutil.copy(PACKAGE / name, tmp_path / "duroot_stream" / name)
    edited = Path(compiled.source_path(COMPILED[5], str(tmp_path)))
    edited.write_text("# edited\n", encoding="utf-8")
    _newer(edited)
    run = subprocess.run(
        [sys.executable, "-c", "import duroot_stream"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert f"StaleBuild: {COMPILED[5]}: its compiled module" in run.stderr
