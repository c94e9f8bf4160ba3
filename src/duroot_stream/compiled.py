"""The compiled build: which modules mypyc compiles, which build runs, and the check
that no compiled module runs stale.

`COMPILED` is the one list of the compiled set: the build (`hatch_build.py`, for
wheels, editable installs and `make`) compiles these modules, and importing
duroot_stream checks them. Adding a module to the compiled build is one line here.

The same source runs pure where no C compiler is present, or when it was installed
with `DUROOT_PURE_PYTHON=1`: then no module of the set has a compiled twin.

A compiled module is an extension module beside its source (`state.py` and
`state.cpython-311-x86_64-linux-gnu.so`); Python imports the extension first,
whatever the source says. So an edited source must never meet the old extension:
the build records the SHA-256 of each source it compiled (`compiled-sources.sha256`
beside this module), and `check()` refuses, naming the module, a set that is partly
compiled or whose extension is older than its source and was built from other
text. The common case costs one directory listing per package and two `stat`s per
module: only a source newer than its extension (an edit; a checkout; a wheel,
whose files all get the time of installation) is hashed.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Literal

# What the processor, the restore and the readers run per record.
COMPILED = (
    "duroot_stream.ids",
    "duroot_stream.domain.decider",
    "duroot_stream.domain.gc",
    "duroot_stream.domain.model",
    "duroot_stream.domain.recent",
    "duroot_stream.domain.state",
    "duroot_stream.domain.ulid",
    "duroot_stream.domain.validation",
    "duroot_stream.processor.batch",
    "duroot_stream.processor.engine",
    "duroot_stream.processor.fold",
    "duroot_stream.processor.routes",
    "duroot_stream.processor.workflows",
    "duroot_stream.wire.avro",
    "duroot_stream.wire.avro_readers",
    "duroot_stream.wire.binary",
    "duroot_stream.wire.checks",
    "duroot_stream.wire.codec",
    "duroot_stream.wire.codec_error",
    "duroot_stream.wire.event_records",
    "duroot_stream.wire.headers",
    "duroot_stream.wire.partitioning",
    "duroot_stream.wire.state_codec",
    "duroot_stream.wire.trace",
)
SOURCES_FILE = "compiled-sources.sha256"  # `sha256sum` format, paths from the package's parent

Build = Literal["compiled", "pure"]
# Where the package lives (os.path, not pathlib: this runs at every start).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StaleBuild(ImportError):
    """A compiled module that does not match its source; the message says which and
    what to do."""


def source_path(module: str, root: str = ROOT) -> str:
    return os.path.join(root, *module.split(".")) + ".py"


def source_digest(path: str) -> str:
    import hashlib  # only when a source is newer than its extension

    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def extension_of(source: str, listing: dict[str, frozenset[str]]) -> str | None:
    """The compiled twin of `source`, if its directory holds one."""
    folder, name = os.path.split(source)
    names = listing.get(folder)
    if names is None:
        try:
            names = listing[folder] = frozenset(os.listdir(folder))
        except FileNotFoundError:
            names = listing[folder] = frozenset()
    stem = name.removesuffix(".py")
    for suffix in EXTENSION_SUFFIXES:
        if stem + suffix in names:
            return os.path.join(folder, stem + suffix)
    return None


def recorded_digests(root: str = ROOT) -> dict[str, str]:
    """Source path (from `root`, with /) -> SHA-256, as the build recorded them."""
    try:
        with open(os.path.join(root, "duroot_stream", SOURCES_FILE), encoding="ascii") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return {}
    return {name: digest for digest, _, name in (line.partition("  ") for line in lines)}


def check(root: str = ROOT) -> Build:
    """Which build this is; raises StaleBuild for a module that would run stale."""
    listing: dict[str, frozenset[str]] = {}
    found = {m: extension_of(source_path(m, root), listing) for m in COMPILED}
    compiled = [m for m, ext in found.items() if ext is not None]
    if not compiled:
        return "pure"
    rebuild = "rebuild: `make` in a source tree, else reinstall duroot-stream"
    missing = [m for m, ext in found.items() if ext is None]
    if missing:
        raise StaleBuild(
            f"{missing[0]} is not compiled, but {compiled[0]} is: the build is older than "
            f"the list of compiled modules (duroot_stream/compiled.py); {rebuild}"
        )
    recorded: dict[str, str] | None = None
    for module, extension in found.items():
        source = source_path(module, root)
        assert extension is not None
        try:
            newer = os.stat(source).st_mtime > os.stat(extension).st_mtime
        except FileNotFoundError:  # an installation without the sources: nothing to compare
            continue
        if not newer:
            continue
        if recorded is None:
            recorded = recorded_digests(root)
        name = os.path.relpath(source, root).replace(os.sep, "/")
        if recorded.get(name) != source_digest(source):
            raise StaleBuild(
                f"{module}: its compiled module {os.path.basename(extension)} was built "
                f"from another version of {os.path.basename(source)}, which would not run "
                f"as written; {rebuild}"
            )
    return "compiled"


BUILD: Build = check()
