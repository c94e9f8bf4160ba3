"""The compiled build: mypyc compiles the modules listed in src/duroot_stream/compiled.py.

Two entry points, one way of building:

- the hatchling build hook (pyproject.toml, `[tool.hatch.build.targets.wheel.hooks.custom]`):
  `pip install .` and `pip wheel .` put the extension modules in the wheel; an editable
  install (`pip install -e .`) builds them beside the sources;
- `python hatch_build.py`: that in-place build alone, as `make` runs it before anything
  else; it does nothing when every extension is newer than its source, and it removes
  the extensions when the build is pure.

The build is pure (the package's own Python, nothing compiled) with `DUROOT_PURE_PYTHON=1`,
or where no C compiler or no Python headers are found; it says so and why. A compiler
that is there but fails stops the build: a silent fallback would pass for compiled.

Beside the extensions it writes `duroot_stream/compiled-sources.sha256`, the digest of
each source compiled, by which importing the package tells a stale extension
(`duroot_stream/compiled.py`).

A hook of our own rather than the hatch-mypyc plugin, which has no fallback without a
compiler and renames pyproject.toml while it runs; rather than setuptools as the build
backend, to keep hatchling's file selection and the schema files it maps into the
package. setuptools only drives the C compiler here, as mypyc expects.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
MODULE_LIST = SRC / "duroot_stream" / "compiled.py"
SOURCES_FILE = "compiled-sources.sha256"
PURE_SWITCH = "DUROOT_PURE_PYTHON"
# The one shared library of the compiled modules: duroot_stream__mypyc.<suffix>, top level.
GROUP = "duroot_stream"
# What the build needs beyond hatchling (the build environment gets them from the hook).
BUILD_REQUIRES = ["mypy>=1.18", "setuptools>=70"]
# mypy as configured in pyproject.toml; the modules the compiled ones import but that are
# not compiled are read for their types only (their optional imports need not be there).
MYPY_ARGS = ["--config-file", str(ROOT / "pyproject.toml"), "--follow-imports=silent"]

# Run in a child process: mypyc translates to C and setuptools compiles and links it.
_COMPILE = """
import sys
from mypyc.build import mypycify
from setuptools import setup

lib, temp, group, *paths = sys.argv[1:]
setup(
    name="duroot-stream-compiled",
    ext_modules=mypycify(paths, group_name=group, target_dir=temp + "/c"),
    script_args=["--quiet", "build_ext", "--build-lib", lib, "--build-temp", temp],
)
"""


def compiled_modules() -> list[str]:
    """The `COMPILED` tuple of compiled.py, read without importing the package."""
    for node in ast.parse(MODULE_LIST.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            return [str(m) for m in ast.literal_eval(node.value)]
    raise RuntimeError(f"no COMPILED = (...) in {MODULE_LIST}")


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def why_pure() -> str | None:
    """Why this build is pure, or None when it is compiled."""
    if os.environ.get(PURE_SWITCH, "") not in ("", "0"):
        return f"{PURE_SWITCH}={os.environ[PURE_SWITCH]}"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler} not found)"
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return f"no Python headers (no Python.h in {include})"
    return None


def compile_modules(lib: Path, temp: Path) -> tuple[list[Path], str]:
    """Compile the set into `lib` (laid out from the package's parent); `temp` keeps
    mypyc's C and the objects, so a build in the same place redoes only what changed.
    Returns the extension files and the digests of the sources compiled."""
    modules = compiled_modules()
    digests = "".join(
        f"{hashlib.sha256(source_of(m).read_bytes()).hexdigest()}  "
        f"{source_of(m).relative_to(SRC).as_posix()}\n"
        for m in modules
    )
    temp.mkdir(parents=True, exist_ok=True)
    # cwd: not the project, whose pyproject.toml setuptools would read as its own.
    subprocess.run(
        [sys.executable, "-c", _COMPILE, str(lib), str(temp), GROUP, *MYPY_ARGS]
        + [str(source_of(m)) for m in modules],
        cwd=temp,
        check=True,
    )
    extensions = [_extension(lib, m) for m in modules]
    missing = [m for m, e in zip(modules, extensions, strict=True) if e is None]
    if missing:
        raise RuntimeError(f"mypyc built no extension for {', '.join(missing)}")
    shared = [lib / f"{GROUP}__mypyc{suffix}" for suffix in EXTENSION_SUFFIXES]
    return [e for e in extensions if e is not None] + [s for s in shared if s.is_file()], digests


def _extension(lib: Path, module: str) -> Path | None:
    stem = lib.joinpath(*module.split("."))
    return next(
        (p for s in EXTENSION_SUFFIXES if (p := stem.with_name(stem.name + s)).is_file()), None
    )


# --- in place: the sources' own directory (editable installs, make) --------------------


def in_place_extensions() -> list[Path]:
    """The extension modules beside the sources: the compiled set's and any left over."""
    found = [p for p in (SRC / "duroot_stream").rglob("*.so") if p.is_file()]
    found += [p for s in EXTENSION_SUFFIXES if (p := SRC / f"{GROUP}__mypyc{s}").is_file()]
    return found


def up_to_date() -> bool:
    """Every module of the set has an extension newer than its source and than this file."""
    for module in compiled_modules():
        extension = _extension(SRC, module)
        if extension is None:
            return False
        built = extension.stat().st_mtime
        if built < source_of(module).stat().st_mtime or built < Path(__file__).stat().st_mtime:
            return False
    return (SRC / "duroot_stream" / SOURCES_FILE).is_file()


def build_in_place() -> str:
    """Make the extensions beside the sources what the build should be; what it did."""
    reason = why_pure()
    if reason is not None:
        removed = in_place_extensions()
        for path in removed:
            path.unlink()
        (SRC / "duroot_stream" / SOURCES_FILE).unlink(missing_ok=True)
        return f"duroot-stream: pure Python build ({reason}); {len(removed)} extensions removed"
    if up_to_date():
        return "duroot-stream: compiled build up to date"
    work = ROOT / "build" / "compiled"  # kept between builds: mypyc's C and the objects
    extensions, digests = compile_modules(work / "lib", work / "temp")
    placed = set()
    for built in extensions:
        target = SRC / built.relative_to(work / "lib")
        staged = target.with_name(target.name + ".new")
        shutil.copyfile(built, staged)
        os.replace(staged, target)  # a running process keeps the file it mapped
        placed.add(target)
    for stray in set(in_place_extensions()) - placed:  # a module taken out of the set
        stray.unlink()
    (SRC / "duroot_stream" / SOURCES_FILE).write_text(digests, encoding="ascii")
    return f"duroot-stream: compiled build of {len(compiled_modules())} modules (mypyc)"


# --- the hatchling hook ---------------------------------------------------------------


class CompiledBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return [] if why_pure() else BUILD_REQUIRES

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if version == "editable":
            self.app.display_info(build_in_place())
            return
        reason = why_pure()
        if reason is not None:
            self.app.display_info(f"duroot-stream: pure Python build ({reason})")
            return
        self._temp = Path(tempfile.mkdtemp(prefix="duroot-compiled-"))
        extensions, digests = compile_modules(self._temp / "lib", self._temp / "temp")
        for path in extensions:
            build_data["force_include"][str(path)] = path.relative_to(self._temp / "lib").as_posix()
        record = self._temp / SOURCES_FILE
        record.write_text(digests, encoding="ascii")
        build_data["force_include"][str(record)] = f"duroot_stream/{SOURCES_FILE}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"duroot-stream: compiled build of {len(compiled_modules())} modules")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        temp = getattr(self, "_temp", None)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    print(build_in_place())
