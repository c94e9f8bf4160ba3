"""A local Schema Registry for development and tests: Apicurio Registry from Maven Central.

`io.apicurio:apicurio-registry-app:<version>`, classifier `all`, a `tar.gz` of a
Quarkus fast-jar, is fetched once with Maven into the cache beside the broker's
jars and unpacked; each start runs `java -jar quarkus-run.jar` on 127.0.0.1
with in-memory storage (H2). The Confluent-compatible API, which the codec's
Schema Registry client speaks, is under `/apis/ccompat/v7`.

Apicurio 3.3 is compiled for Java 21: the registry runs on the newest Java 21+
it finds (`DUROOT_REGISTRY_JAVA`, `JAVA_HOME`, `java` on the PATH, then
`/usr/lib/jvm/*`), while the broker keeps running on Java 17.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from duroot_stream.local.broker import free_port
from duroot_stream.local.jars import cache_dir

APICURIO_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
MIN_JAVA = 21
START_TIMEOUT_S = 240.0
CCOMPAT_PATH = "/apis/ccompat/v7"


class RegistryError(RuntimeError):
    """The local registry could not be fetched or started; the message says what to do."""


def registry_dir() -> Path:
    # Beside the broker's jars (cache_dir() is <cache>/kafka-<version>).
    return cache_dir().parent / f"apicurio-registry-{APICURIO_VERSION}"


def fetch_registry(progress: IO[str] | None = sys.stderr) -> Path:
    """Download and unpack Apicurio once; later calls return at once."""
    target = registry_dir()
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RegistryError(
            "mvn not found: the local registry is fetched with Maven (Debian: maven)"
        )
    if progress:
        print(
            f"fetching Apicurio Registry {APICURIO_VERSION} with Maven into {target} ...",
            file=progress,
        )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    download = partial / "download"
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={download}",
        ],
        capture_output=True,
        text=True,
    )
    archives = list(download.glob("*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RegistryError(
            f"mvn dependency:copy {ARTIFACT} failed (exit {result.returncode}); "
            "check that Maven Central is reachable.\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    with tarfile.open(archives[0]) as archive:
        archive.extractall(partial / "app", filter="data")
    shutil.rmtree(download)
    if not (partial / "app" / "quarkus-run.jar").is_file():
        raise RegistryError(f"{archives[0].name}: no quarkus-run.jar inside")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").touch()
    return target


def _java_major(java: Path) -> int:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def find_java() -> Path:
    """The newest Java >= 21 among the usual places."""
    candidates: list[Path] = []
    for env in ("DUROOT_REGISTRY_JAVA",):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"))
    found = [(major, java) for java in candidates if (major := _java_major(java)) >= MIN_JAVA]
    if not found:
        raise RegistryError(
            f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+, and none was found "
            "(set DUROOT_REGISTRY_JAVA to its java binary, or install a JDK 21+)"
        )
    return max(found)[1]


class LocalRegistry:
    """Apicurio Registry on 127.0.0.1 with in-memory storage; `url` is the ccompat API."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_path = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def start(self) -> LocalRegistry:
        app = fetch_registry() / "app"
        java = find_java()
        self._tmp = tempfile.TemporaryDirectory(prefix="duroot-registry-")
        log_path = self._log_path or Path(self._tmp.name) / "registry.log"
        with open(log_path, "ab") as log_out:
            self._process = subprocess.Popen(
                [
                    str(java),
                    "-Xms128m",
                    "-Xmx512m",
                    f"-Dquarkus.http.port={self.port}",
                    "-Dquarkus.http.host=127.0.0.1",
                    "-Dquarkus.management.enabled=false",  # its own port; nothing here needs it
                    "-Dquarkus.otel.sdk.disabled=true",
                    f"-Djava.io.tmpdir={self._tmp.name}",
                    "-jar",
                    str(app / "quarkus-run.jar"),
                ],
                stdout=log_out,
                stderr=subprocess.STDOUT,
                cwd=self._tmp.name,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RegistryError(f"Apicurio Registry exited at start; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryError(
                    f"Apicurio Registry did not answer within {START_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.5)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
