"""The installed version of duroot-stream (from the package metadata)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("duroot-stream")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
