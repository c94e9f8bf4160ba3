"""A single-node Apache Kafka broker (KRaft) from Maven Central jars, for development and tests.

The jars come from `jars.fetch_jars` (Maven Central, cached); each start formats a
storage directory and runs `kafka.Kafka` on 127.0.0.1. With `security="sasl_ssl"` its
one client listener is SASL_SSL (SCRAM-SHA-512 users made at format time, a
certificate authority made on the spot: see `local_tls`) and the StandardAuthorizer
denies what no ACL allows. A `Quorum`
makes it one node of a multi-node cluster (`cluster.LocalCluster`); a `Listener`
adds a plaintext client listener advertised at another port (a proxy in front).
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from duroot_stream.local import BrokerError
from duroot_stream.local.jars import fetch_jars, require_tool

from . import tls as local_tls

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Listener:
    """A further plaintext client listener: the broker binds `port` and advertises
    `advertised_port`, so clients bootstrapped there keep talking through whatever
    forwards that port (a fault-injecting proxy in the tests)."""

    name: str
    port: int
    advertised_port: int


@dataclass(frozen=True)
class Quorum:
    """This node's place in a KRaft quorum of combined broker+controller nodes."""

    node_id: int
    voters: Mapping[int, int] = field(hash=False)  # node id -> controller port
    cluster_id: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_cluster_id() -> str:
    # Kafka's Uuid text: URL-safe base64 of 16 random bytes, no padding; like
    # Kafka's own generator, never one starting with "-" (it reads as an option).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


LOG4J2 = """\
status = warn
shutdownHook = disable
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p [kafka] %c{1}: %m%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
"""
# How often the coordinator aborts transactions past their timeout (Kafka: 10 s):
# tests that wait for one wait this much longer than the timeout.
ABORT_CHECK_MS = 5000
# Into a log file only, the transaction coordinator at INFO (a few lines per producer):
# what it did with each transaction across a restart is what explains a hanging one.
TXN_LOG4J2 = "logger.txn.name = kafka.coordinator.transaction\nlogger.txn.level = INFO\n"


def server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    secured: Mapping[str, str] | None = None,
    *,
    quorum: Quorum | None = None,
    listeners: Sequence[Listener] = (),
    extra: Mapping[str, str] | None = None,
) -> str:
    """The broker's settings; `secured` (from `local_tls.server_settings`) replaces the
    plaintext listeners; `extra` goes on top of all (a benchmark's group limits)."""
    voters = dict(quorum.voters) if quorum else {1: controller_port}
    # Three replicas (one node may die) and three partitions for the coordinators (they
    # spread over the nodes) in a cluster; else one of each: first use is fast.
    replicas, min_isr, internal = (3, 2, "3") if len(voters) >= 3 else (1, 1, "1")
    listen, advertised = [f"PLAINTEXT://127.0.0.1:{port}"], [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = ["PLAINTEXT"]
    for x in listeners:
        listen.append(f"{x.name}://127.0.0.1:{x.port}")
        advertised.append(f"{x.name}://127.0.0.1:{x.advertised_port}")
        protocols.append(x.name)
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(quorum.node_id if quorum else 1),
        "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{p}" for n, p in voters.items()),
        "listeners": ",".join([*listen, f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            f"{name}:PLAINTEXT" for name in ["CONTROLLER", *protocols]
        ),
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": internal,
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": internal,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        # Compaction observable within a test's patience.
        "log.cleaner.backoff.ms": "500",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": str(ABORT_CHECK_MS),
        **(secured or {}),
        **(extra or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


class LocalBroker:
    """Start, wait for and stop one local broker. Use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        log_file: Path | None = None,
        heap: str = "1g",
        security: str = "plaintext",
        users: Mapping[str, str] | None = None,
        quorum: Quorum | None = None,
        listeners: Sequence[Listener] = (),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """`security`: "plaintext" or "sasl_ssl"; `users`: SCRAM user -> password for
        sasl_ssl, besides the super user `admin` (a password made for any left empty).
        `quorum`: one node of a cluster; `listeners`: further plaintext listeners;
        `settings`: server properties on top of the ones made here."""
        if security not in ("plaintext", "sasl_ssl"):
            raise BrokerError(f"security {security!r}: expected plaintext or sasl_ssl")
        if security != "plaintext" and (quorum is not None or listeners):
            raise BrokerError("a cluster node or extra listeners: only with security plaintext")
        self.quorum = quorum
        self.listeners = tuple(listeners)
        self.settings = dict(settings or {})
        self.security = security
        self.users = dict(users or {})
        self.port = port or free_port()
        self._keep_data = data_dir is not None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="duroot-kafka-"))
        self.log_file = log_file
        self.heap = heap
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secured(self) -> bool:
        return self.security == "sasl_ssl"

    def client_settings(self, user: str = local_tls.ADMIN) -> dict[str, str]:
        """librdkafka settings for `user` (bootstrap.servers included); {} for plaintext."""
        if not self.secured:
            return {"bootstrap.servers": self.bootstrap}
        return local_tls.read_client_file(self.client_file(user))

    def client_file(self, user: str = local_tls.ADMIN) -> Path:
        """The properties file (`-F FILE`) of `user`, written at start, mode 0600."""
        return self.data_dir / "clients" / f"{user}.properties"

    def _java(self, jars: Path, *args: str, **kwargs: object) -> list[str]:
        return [
            require_tool("java", "Debian: apt-get install openjdk-17-jre-headless"),
            "-Xms256m",
            f"-Xmx{self.heap}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'app-logs'}",
            "-cp",
            f"{jars}/*",
            *args,
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalBroker:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Format (once) and start the process without waiting: a cluster's nodes must
        all be running before any of them can answer."""
        jars = fetch_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        log_dirs = self.data_dir / "kraft"
        controller_port = self._controller_port(props)
        secured: dict[str, str] | None = None
        scram: list[str] = []
        if self.secured:
            users = local_tls.ensure_material(self.data_dir, self.bootstrap, self.users)
            secured = local_tls.server_settings(self.data_dir, self.port, controller_port, users)
            scram = [arg for u, pw in users.items() for arg in local_tls.scram_args(u, pw)]
        props.touch(mode=0o600)  # the inter-broker password is in it
        props.write_text(
            server_properties(
                self.port,
                controller_port,
                log_dirs,
                secured,
                quorum=self.quorum,
                listeners=self.listeners,
                extra=self.settings,
            )
        )
        txn = TXN_LOG4J2 if self.log_file is not None else ""
        (self.data_dir / "log4j2.properties").write_text(LOG4J2 + txn)
        if not (log_dirs / "meta.properties").exists():
            fmt = subprocess.run(
                self._java(
                    jars,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    self.quorum.cluster_id if self.quorum else new_cluster_id(),
                    "-c",
                    str(props),
                    *scram,
                ),
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(
                    f"kafka.tools.StorageTool format failed for {log_dirs} "
                    f"(exit {fmt.returncode}): {fmt.stderr[-2000:] or fmt.stdout[-2000:]}"
                )
        stderr: IO[bytes] | None = None
        if self.log_file is not None:
            self._log_handle = stderr = open(self.log_file, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self._java(jars, "kafka.Kafka", str(props)),
            stdout=stderr or subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker in order
        )

    def _controller_port(self, props: Path) -> int:
        # A restarted broker on the same data dir must keep its controller address.
        if self.quorum is not None:
            return self.quorum.voters[self.quorum.node_id]
        if props.exists():
            match = re.search(r"controller\.quorum\.voters=1@127\.0\.0\.1:(\d+)", props.read_text())
            if match:
                return int(match.group(1))
        return free_port()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        client = AdminClient({**self.client_settings(), "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {self.process.returncode} during start"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                client.list_topics(timeout=2)
                return
            except KafkaException:
                continue
        self.stop()
        raise BrokerError(
            f"the Kafka broker on {self.bootstrap} did not answer within {timeout:.0f} s"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL if it hangs; remove temporary data."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if not self._keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL without cleanup, for failure tests; `start()` again reuses the data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
