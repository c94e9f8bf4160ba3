"""SIGINT stops a service as SIGTERM does (README: "stops on SIGINT or SIGTERM"): a
service manager sends SIGTERM, a terminal's Ctrl-C SIGINT. Each service (processor,
runner, serve) is started as its CLI, is ready, gets one signal, and must exit with
the same code and log the same lines from then on, whichever signal it was."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import free_port
from tests.kafka_helpers import wait_until
from tests.processor_harness import setup_topics

pytestmark = pytest.mark.broker

CLI = str(Path(sys.executable).with_name("duroot-stream"))
START_S = 120.0  # the CLI imports, connects, is assigned its partitions, restores
# A clean stop: the processor commits and leaves the group; its hung-call watchdog
# would end it after 60 s, the runner's du runs are killed, uvicorn's grace is 2 s.
STOP_S = 90.0
# A text log line: "HH:MM:SS level logger: message key=value ...": the level, logger
# and message stay, the time and the values (instance ids, ports, seconds) go.
_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<what>\S+\s+\S+: .*?)(?: \w+=.*)?$")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _service(name: str, kafka: KafkaConfig, tmp_path: Path, port: int) -> tuple[list[str], str]:
    """The CLI of `name` and the URL that answers 200 once it is ready."""
    common = ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    if name == "processor":
        argv = [CLI, "processor", *common, "--instance-id", "signals", "--metrics-port", str(port)]
        return argv, f"http://127.0.0.1:{port}/readyz"
    if name == "runner":
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        argv = [CLI, "runner", *common, "--host", "signals", "--root", str(root)]
        return [*argv, "--metrics-port", str(port)], f"http://127.0.0.1:{port}/readyz"
    return [CLI, "serve", *common, "--port", str(port)], f"http://127.0.0.1:{port}/"


def stop_with(
    sig: signal.Signals, name: str, kafka: KafkaConfig, tmp_path: Path
) -> tuple[int, list[str]]:
    """Start service `name`, wait until it is ready, send `sig`: its exit code and the
    log lines it wrote after the signal, without times and values."""
    log = tmp_path / f"{name}-{sig.name}.log"
    argv, ready_url = _service(name, kafka, tmp_path, free_port())
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: _ready(ready_url), timeout=START_S, interval=0.2, what=f"{name} ready"
            )
            mark = log.stat().st_size
            process.send_signal(sig)
            code = process.wait(STOP_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    with log.open("rb") as f:
        f.seek(mark)
        after = f.read().decode(errors="replace").splitlines()
    return code, [m.group("what") for line in after if (m := _LINE.match(line))]


@pytest.mark.parametrize("name", ["processor", "runner", "serve"])
def test_sigint_stops_a_service_as_sigterm_does(
    name: str, kafka: KafkaConfig, tmp_path: Path
) -> None:
    setup_topics(kafka)
    term_code, term_lines = stop_with(signal.SIGTERM, name, kafka, tmp_path)
    int_code, int_lines = stop_with(signal.SIGINT, name, kafka, tmp_path)
    assert term_code == 0, f"SIGTERM: exit {term_code}, then {term_lines}"
    assert (int_code, int_lines) == (term_code, term_lines)
    assert int_lines, "a stop is logged"
