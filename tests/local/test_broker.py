"""The local broker: started by the session fixture; the CLI starts and stops one cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from duroot_stream.local.broker import LocalBroker, server_properties

pytestmark = pytest.mark.broker


def test_session_broker_answers_admin_calls(bootstrap: str) -> None:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert md.brokers, "the broker lists no brokers"


def test_cli_broker_prints_bootstrap_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "duroot_stream.cli.main", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until ready or exit
        match = re.fullmatch(r"bootstrap=127\.0\.0\.1:(\d+)", line)
        assert match, f"unexpected first line {line!r}"
        md = AdminClient({"bootstrap.servers": line.split("=", 1)[1]}).list_topics(timeout=10)
        assert md.brokers
        data_dirs_before = {p for p in os.listdir("/tmp") if p.startswith("duroot-kafka-")}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        data_dirs_after = {p for p in os.listdir("/tmp") if p.startswith("duroot-kafka-")}
        assert len(data_dirs_after) < len(data_dirs_before), "temporary data dir not removed"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_broker_restarts_on_its_data_dir_with_same_ports(tmp_path: Path) -> None:
    broker = LocalBroker(data_dir=tmp_path / "data")
    broker.start()
    try:
        port = broker.port
        broker.kill()
        started = time.monotonic()
        again = LocalBroker(port=port, data_dir=tmp_path / "data").start()
        assert again.bootstrap == f"127.0.0.1:{port}"
        assert time.monotonic() - started < 120
        again.stop()
    finally:
        broker.stop()
    assert (tmp_path / "data" / "kraft" / "meta.properties").exists(), "given data dir was removed"


def test_server_properties_are_test_friendly(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1) for line in server_properties(9092, 9093, tmp_path).splitlines()
    )
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:9092")


def test_extra_server_properties_go_on_top(tmp_path: Path) -> None:
    extra = {"group.min.session.timeout.ms": "1000", "group.initial.rebalance.delay.ms": "3000"}
    text = server_properties(9092, 9093, tmp_path, extra=extra)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["group.min.session.timeout.ms"] == "1000"
    assert props["group.initial.rebalance.delay.ms"] == "3000"  # replaces the default one
    assert text.count("group.initial.rebalance.delay.ms=") == 1
