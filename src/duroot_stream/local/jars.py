"""The Apache Kafka jars the local broker runs: fetched once with Maven
(`deploy/kafka/pom.xml`, which pins the version and says why) into a cache outside
the repository, `~/.cache/duroot-stream/kafka-<version>-<hash of the dependencies>`
(`DUROOT_CACHE_DIR` or `XDG_CACHE_HOME` move it)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from duroot_stream.local import BrokerError


def _pom_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (
        here.parent / "kafka" / "pom.xml",
        here.parents[2] / "deploy" / "kafka" / "pom.xml",
    ):
        if candidate.is_file():
            return candidate
    raise BrokerError("deploy/kafka/pom.xml not found: reinstall duroot-stream")


def kafka_version(pom: Path | None = None) -> str:
    text = (pom or _pom_path()).read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", text)
    if not match:
        raise BrokerError(f"{pom}: no <kafka.version> property")
    return match.group(1)


def cache_dir() -> Path:
    base = os.environ.get("DUROOT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "duroot-stream"
    )
    # The dependencies' hash in the name: a pom that gains a jar gets a cache of its own.
    deps = re.search(r"<dependencies>.*</dependencies>", _pom_path().read_text(), re.S)
    digest = hashlib.sha256((deps.group(0) if deps else "").encode()).hexdigest()[:8]
    return Path(base) / f"kafka-{kafka_version()}-{digest}"


def require_tool(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(
            f"{tool} not found: the local Kafka broker needs Java 17+ and Maven "
            f"({install}). Without them, run the whole stack with `docker compose up`."
        )
    return path


def fetch_jars(progress: IO[str] | None = sys.stderr) -> Path:
    """Download the broker's jars into the cache once; later calls return at once."""
    target = cache_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = require_tool("mvn", "Debian: apt-get install maven")
    require_tool("java", "Debian: apt-get install openjdk-17-jre-headless")
    if progress:
        print(f"fetching Kafka {kafka_version()} jars with Maven into {target} ...", file=progress)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_pom_path()),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"mvn dependency:copy-dependencies failed (exit {result.returncode}); "
            "check that Maven Central is reachable.\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    marker.touch()
    return target
