"""The pipeline on a SASL_SSL broker with the StandardAuthorizer: one SCRAM principal
per role, holding only the ACLs `duroot-stream acls apply` gives it.

One secured broker serves the module. Each role's settings come from its properties
file (`-F FILE`), as an operator would give them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import generate_latest

from duroot_stream.client import DuRootClient, DuRootReader, Root
from duroot_stream.config import KafkaConfig, read_properties
from duroot_stream.exporter import Exporter, ExporterSettings
from duroot_stream.ids import now_ms
from duroot_stream.kafka import new_reader
from duroot_stream.local.broker import LocalBroker
from duroot_stream.local.tls import make_ca
from duroot_stream.logs import JsonFormatter
from duroot_stream.runner import Runner, RunnerSettings
from duroot_stream.scheduler import Scheduler, SchedulerSettings
from duroot_stream.wire import Topics, create_topics
from tests.kafka_helpers import wait_until
from tests.processor_harness import PARTITIONS, running_processor
from tests.usage_helpers import running

pytestmark = pytest.mark.broker

ROLES = ("processor", "runner", "requester", "reader", "exporter", "scheduler")
OUTSIDER = "outsider"  # a valid user with no ACL at all
REGISTRY = str(uuid.UUID(int=13))
HOST = "sechost"
FAIL_FAST_S = 15.0


@dataclass(frozen=True)
class Secured:
    broker: LocalBroker
    prefix: str

    def file(self, user: str) -> Path:
        return self.broker.client_file(user)

    def config(self, user: str) -> KafkaConfig:
        return KafkaConfig.from_env(topic_prefix=self.prefix, config_file=self.file(user), env={})

    def passwords(self) -> list[str]:
        users = (*ROLES, OUTSIDER, "admin")
        return [read_properties(self.file(u))["sasl.password"] for u in users]

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """`duroot-stream ARGS`: exit code and everything it printed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DUROOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "duroot_stream.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("secured")
    broker = LocalBroker(
        data_dir=base / "data",
        log_file=base / "broker.log",
        security="sasl_ssl",
        users={user: "" for user in (*ROLES, OUTSIDER)},
    )
    with broker:
        found = Secured(broker, f"s{uuid.uuid4().hex[:8]}.")
        create_topics(found.config("admin"), partitions=PARTITIONS)
        roles = [arg for role in ROLES for arg in (f"--{role}", role)]
        code, out = cli("acls", "apply", "-F", str(found.file("admin")), "--topic-prefix",
                        found.prefix, *roles)  # fmt: skip
        assert code == 0, out
        yield found


@contextmanager
def running_runner(kafka: KafkaConfig, root: Path) -> Iterator[Runner]:
    runner = Runner(RunnerSettings(kafka, host=HOST, roots=(str(root),), threshold="0"))
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(runner.run)
        wait_until(lambda: runner.ready.is_set() or done.done(), timeout=60, what="runner")
        if done.done():
            done.result()  # it stopped during start: its error, now
        try:
            yield runner
        finally:
            runner.stop()
        done.result(60)  # raises what the runner raised


# --- the pipeline, each role as its own principal ------------------------------------


def test_pipeline_runs_through_sasl_ssl_and_prints_no_secret(
    secured: Secured,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "data").write_bytes(b"x" * 10_000)
    caplog.set_level(logging.DEBUG)
    caplog.handler.setFormatter(JsonFormatter())  # every field of every record, not just its text
    with (
        running_processor(secured.config("processor")) as processor,
        running_runner(secured.config("runner"), root) as runner,
        DuRootClient(secured.config("requester")) as client,
    ):
        begun = client.begin(REGISTRY, "/g/sec", HOST, str(root))
        result = DuRootReader(secured.config("reader")).get_du(
            begun.workflow_id, wait=True, timeout=60
        )
        metrics = generate_latest(processor.metrics.registry) + generate_latest(
            runner.metrics.registry
        )
    assert result.complete and not result.failed
    assert {line.path for line in result.lines} >= {".", "a"}
    out, err = capfd.readouterr()
    printed = "\n".join([out, err, caplog.text, metrics.decode(), repr(secured.config("admin"))])
    for password in secured.passwords():
        assert password not in printed


def test_run_goes_through_sasl_ssl_with_the_environment(secured: Secured, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"y" * 5000)
    admin = secured.config("admin")
    code, out = cli(
        "run", str(tmp_path), "--bytes", "--timeout", "60", "--topic-prefix",
        f"run{uuid.uuid4().hex[:6]}.",
        env={"DUROOT_BOOTSTRAP_SERVERS": admin.bootstrap_servers,
             "DUROOT_KAFKA_CONFIG": str(secured.file("admin"))},
        timeout=180,
    )  # fmt: skip
    assert code == 0, out
    assert "# workflowId: " in out
    for password in secured.passwords():
        assert password not in out


# --- a wrong password, an untrusted certificate: fail fast, naming the cause ---------


def _with(secured: Secured, tmp_path: Path, user: str, key: str, value: str) -> Path:
    settings = {**read_properties(secured.file(user)), key: value}
    path = tmp_path / f"{user}-bad.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return path


COMMANDS = {
    "processor": ("processor", "--instance-id", "bad-1"),
    "runner": ("runner", "--host", HOST, "--root", "/tmp"),
    "status": ("status", str(uuid.UUID(int=1))),
    "begin": (
        "begin",
        "--global-root",
        "/g/x",
        "--registry-id",
        REGISTRY,
        "--host",
        HOST,
        "--host-root",
        "/tmp",
    ),
}  # fmt: skip}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_wrong_password_fails_fast_naming_the_cause(
    secured: Secured, tmp_path: Path, command: str
) -> None:
    user = {"status": "reader", "begin": "requester"}.get(command, command)
    bad = _with(secured, tmp_path, user, "sasl.password", "not-the-password")
    started = time.monotonic()
    code, out = cli(*COMMANDS[command], "-F", str(bad), "--topic-prefix", secured.prefix)
    assert time.monotonic() - started < FAIL_FAST_S, out
    assert code == 2, out
    assert "authentication failed" in out and "invalid credentials" in out, out
    assert "not-the-password" not in out


def test_run_with_a_wrong_password_fails_fast(secured: Secured, tmp_path: Path) -> None:
    bad = _with(secured, tmp_path, "admin", "sasl.password", "not-the-password")
    started = time.monotonic()
    code, out = cli(
        "run", str(tmp_path),
        env={"DUROOT_BOOTSTRAP_SERVERS": secured.broker.bootstrap, "DUROOT_KAFKA_CONFIG": str(bad)},
    )  # fmt: skip
    assert time.monotonic() - started < FAIL_FAST_S, out
    assert code == 2 and "invalid credentials" in out, out


@pytest.mark.parametrize("command", ["processor", "status"])
def test_an_untrusted_certificate_fails_fast_naming_the_cause(
    secured: Secured, tmp_path: Path, command: str
) -> None:
    other_ca = make_ca(tmp_path / "other-ca", "not the broker's CA")
    user = "reader" if command == "status" else command
    bad = _with(secured, tmp_path, user, "ssl.ca.location", str(other_ca))
    started = time.monotonic()
    code, out = cli(*COMMANDS[command], "-F", str(bad), "--topic-prefix", secured.prefix)
    assert time.monotonic() - started < FAIL_FAST_S, out
    assert code == 2, out
    assert "TLS failed" in out and "certificate verify failed" in out, out


# --- least privilege: each principal can do its job and nothing more -----------------


def _produce_error(config: KafkaConfig, topic: str) -> int | None:
    """The error code of producing one record to `topic` as `config`'s principal; None: ok."""
    producer = Producer(config.client(**{"message.timeout.ms": 10_000}))
    seen: list[KafkaError | None] = []
    producer.produce(topic, b"probe", b"k", on_delivery=lambda err, _msg: seen.append(err))
    producer.flush(15)
    assert seen, f"no delivery report for {topic}"
    return None if seen[0] is None else int(seen[0].code())


def _read_error(config: KafkaConfig, topic: str) -> int | None:
    """The error code of fetching `topic`'s first records; None: ok."""
    consumer = new_reader(config, **{"enable.partition.eof": True})
    try:
        # No DESCRIBE: the topic is hidden from the principal's metadata.
        hidden = consumer.list_topics(topic, timeout=10).topics[topic].error
        if hidden is not None:
            return int(hidden.code())
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                return None
            return int(error.code())
        raise AssertionError(f"reading {topic}: neither records, an end nor an error")
    except KafkaException as exc:
        return int(exc.args[0].code())
    finally:
        consumer.close()


def _transactions_error(config: KafkaConfig, transactional_id: str) -> int | None:
    producer = Producer(config.client(**{"transactional.id": transactional_id}))
    try:
        producer.init_transactions(15)
        return None
    except KafkaException as exc:
        return int(exc.args[0].code())


DENIED_WRITE = KafkaError.TOPIC_AUTHORIZATION_FAILED
DENIED_TXN = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_the_runner_cannot_write_events_or_index(secured: Secured) -> None:
    runner, t = secured.config("runner"), secured.topics
    assert _produce_error(runner, t.events) == DENIED_WRITE
    assert _produce_error(runner, t.index) == DENIED_WRITE
    assert _produce_error(runner, t.dlq) == DENIED_WRITE


def test_a_requester_writes_commands_reads_replies_and_nothing_else(secured: Secured) -> None:
    requester, t = secured.config("requester"), secured.topics
    assert _read_error(requester, t.replies) is None
    for topic in (t.events, t.index, t.dlq, t.replies):
        assert _produce_error(requester, topic) == DENIED_WRITE, topic
    for topic in (t.events, t.index, t.commands):
        assert _read_error(requester, topic) == DENIED_WRITE, topic
    # Writing a command is allowed: the broker accepts the record (the processor
    # dead-letters it as undecodable, which is its job, not the ACLs').
    assert _produce_error(requester, t.commands) is None


def test_a_reader_reads_events_and_index_and_writes_nothing(secured: Secured) -> None:
    reader, t = secured.config("reader"), secured.topics
    assert _read_error(reader, t.events) is None
    assert _read_error(reader, t.index) is None
    for topic in (t.commands, t.events, t.index, t.replies, t.dlq):
        assert _produce_error(reader, topic) == DENIED_WRITE, topic


def test_the_exporter_reads_events_and_the_scheduler_begins_each_as_its_principal(
    secured: Secured,
) -> None:
    exporter_config, scheduler_config, t = (
        secured.config("exporter"),
        secured.config("scheduler"),
        secured.topics,
    )
    # The exporter reads the events topic and nothing else, and writes nothing.
    assert _read_error(exporter_config, t.events) is None
    for topic in (t.commands, t.index, t.replies):
        assert _read_error(exporter_config, topic) == DENIED_WRITE, topic
    for topic in (t.commands, t.events, t.index, t.replies, t.dlq):
        assert _produce_error(exporter_config, topic) == DENIED_WRITE, topic
    # The scheduler reads the index and replies and writes commands only.
    for topic in (t.index, t.replies):
        assert _read_error(scheduler_config, topic) is None, topic
    for topic in (t.events, t.index, t.replies, t.dlq):
        assert _produce_error(scheduler_config, topic) == DENIED_WRITE, topic
    # Each does its job as its principal: a root begun, and its failed run exported.
    root = f"/g/scheduled-{uuid.uuid4().hex[:6]}"
    settings = SchedulerSettings(
        scheduler_config, {root: Root(REGISTRY, HOST, "/srv/x")}, every_s=3600, spread_s=0
    )
    now = now_ms()  # one period for the scheduler and the test, whatever the clock does
    with (
        running_processor(secured.config("processor")),
        running(Scheduler(settings, clock=lambda: now), "scheduler") as scheduler,
        running(Exporter(ExporterSettings(exporter_config)), "exporter") as exporter,
        DuRootClient(secured.config("requester")) as client,
    ):
        assert scheduler.metrics.registry.get_sample_value("duroot_schedule_begun_total") == 1
        wf = settings.plan.workflow_id(settings.plan.period(now), root, settings.roots[root])
        client.fail(wf, 9, "failed on purpose")
        labels = {"host": HOST, "root": root}
        wait_until(
            lambda: (
                exporter.metrics.registry.get_sample_value(
                    "duroot_usage_last_run_status_code", labels
                )
                == 9
            ),
            timeout=30,
            what="the exporter to serve the failed run",
        )
        assert exporter.problem is None


def test_only_the_processor_may_use_processor_transactional_ids(secured: Secured) -> None:
    for user in ("runner", "requester", "reader", OUTSIDER):
        assert _transactions_error(secured.config(user), "duroot-processor-x") == DENIED_TXN
    assert _transactions_error(secured.config("processor"), "duroot-processor-x") is None
    # ... and the processor no other transactional id.
    assert _transactions_error(secured.config("processor"), "other-x") == DENIED_TXN


def test_a_principal_without_acls_can_do_nothing(secured: Secured) -> None:
    outsider, t = secured.config(OUTSIDER), secured.topics
    for topic in (t.commands, t.events, t.index, t.replies):
        assert _produce_error(outsider, topic) == DENIED_WRITE, topic
        assert _read_error(outsider, topic) == DENIED_WRITE, topic
