"""librdkafka's own log lines go through the project's logging, at librdkafka's level."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from duroot_stream import logs
from duroot_stream.config import KafkaConfig
from tests.kafka_helpers import wait_until

RAW_LINE = re.compile(r"^%\d\|", re.MULTILINE)  # librdkafka's own stderr format


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("syslog_mapped", "text", "level"),
    [
        (logging.ERROR, "[thrd:main]: 127.0.0.1:1/bootstrap: Connect failed", logging.ERROR),
        (logging.INFO, "[thrd:main]: Disconnected", logging.INFO),
        (logging.WARNING, "[thrd:main]: Metadata request failed", logging.WARNING),
        # librdkafka retries it by itself: not the operator's to act on.
        (
            logging.WARNING,
            "[thrd:main]: Failed to acquire transactional PID from broker TxnCoordinator/1: "
            "Broker: Coordinator load in progress: retrying",
            logging.INFO,
        ),
    ],
)
def test_levels_match_librdkafkas(
    caplog: pytest.LogCaptureFixture, syslog_mapped: int, text: str, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger=logs.LIBRDKAFKA_LOGGER)
    logs.librdkafka_logger().log(syslog_mapped, "%s [%s] %s", "FAIL", "rdkafka#producer-1", text)
    (record,) = caplog.records
    assert record.name == "librdkafka"
    assert record.levelno == level
    assert record.getMessage() == text.split("]: ", 1)[1]
    assert vars(record)["facility"] == "FAIL"
    assert vars(record)["client"] == "rdkafka#producer-1"


def test_a_real_clients_lines_come_out_as_json(capfd: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "json")
    try:
        producer = Producer(KafkaConfig(bootstrap_servers=f"127.0.0.1:{_closed_port()}").client())
        lines: list[str] = []

        def logged() -> bool:
            producer.poll(0.1)  # librdkafka's log lines are served here
            lines.extend(capfd.readouterr().err.splitlines())
            return any('"librdkafka"' in line for line in lines)

        wait_until(logged, timeout=30, what="a librdkafka log line")
    finally:
        logging.getLogger().handlers.clear()
    assert not RAW_LINE.search("\n".join(lines))
    entry = json.loads(next(line for line in lines if '"librdkafka"' in line))
    assert entry["level"] == "error"
    assert entry["facility"] == "FAIL"
    assert "Connection refused" in entry["msg"]
    assert entry["client"].startswith("rdkafka#producer-")


@pytest.mark.broker
def test_a_healthy_run_shows_no_librdkafka_line(tmp_path: Path) -> None:
    (tmp_path / "tree" / "d").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUROOT_")}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "duroot_stream.cli.main", "run", str(tmp_path / "tree")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not RAW_LINE.search(result.stderr), result.stderr
    assert "librdkafka" not in result.stderr, result.stderr
