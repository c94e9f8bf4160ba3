"""Open and hanging Kafka transactions: find them, and abort one.

librdkafka has no admin API for transactions, so this runs Kafka's own tool,
`kafka-transactions.sh` (the class `TransactionsCommand` of the `kafka-tools`
artifact), from the jars the local broker caches (`deploy/kafka/pom.xml`), with
Java 17+. `duroot-stream transactions ...` (cli/ops.py) is its command line.

- `find_hanging`: Kafka's definition (KIP-664): a partition with an open
  transaction that its coordinator no longer knows about, so nothing will ever
  end it.
- `open_transactions`: what a user sees first: partitions of the pipeline's
  topics whose last stable offset is below the high watermark, with the
  producers that hold them open and for how long, and the `abort` that ends each
  one. An open transaction older than its producer's timeout plus the broker's
  abort check is stuck, hanging by KIP-664's definition or not.
- `fence`: what ends an open transaction that its coordinator knows, on every
  partition at once and with the consumer offsets it carries: a producer with its
  transactional.id calls init_transactions (as a restarted processor instance
  does), which aborts it and fences its producer.
- `abort`: writes an abort marker into one partition for the transaction that
  starts at an offset there: for a hanging transaction, which no coordinator
  will end. It drops that partition's records of the transaction: if the
  transaction committed elsewhere (a commit marker lost, as seen after a broker
  restart), that loses committed records. Check `describe` of its transactional
  id and the consumer group's offsets first.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import LOG4J2
from duroot_stream.local.jars import fetch_jars

TOOL_CLASS = "org.apache.kafka.tools.TransactionsCommand"
TOOL_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 30.0


class TransactionToolError(RuntimeError):
    """The transaction tool could not run or failed; the message says why."""


@dataclass(frozen=True)
class Producer:
    """One active producer of a partition, as `describe-producers` prints it."""

    producer_id: int
    epoch: int
    coordinator_epoch: int
    last_timestamp_ms: int
    transaction_start: int  # offset where its open transaction starts, -1 if none


@dataclass(frozen=True)
class OpenTransaction:
    topic: str
    partition: int
    stable: int  # last stable offset
    high: int  # high watermark
    producer: Producer
    transactional_id: str | None  # None: no coordinator knows its producer id

    @property
    def age_s(self) -> float:
        """Seconds since the producer last wrote to the partition."""
        return max(0.0, time.time() - self.producer.last_timestamp_ms / 1000)

    def ending_args(self) -> list[str]:
        """The `duroot-stream transactions` arguments that end it."""
        if self.transactional_id is not None:
            return ["fence", "--transactional-id", self.transactional_id]
        return [
            "abort",
            "--topic",
            self.topic,
            "--partition",
            str(self.partition),
            "--start-offset",
            str(self.producer.transaction_start),
        ]


def tool_command(kafka: KafkaConfig, args: Sequence[str], command_config: str | None) -> list[str]:
    """The `java ... TransactionsCommand --bootstrap-server ... ARGS` command line."""
    java = shutil.which("java")
    if java is None:
        raise TransactionToolError(
            "java not found: Kafka's transaction tool needs Java 17+ "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    jars = fetch_jars(progress=None)
    log_config = jars.parent / "transactions-log4j2.properties"
    if not log_config.exists():
        log_config.write_text(LOG4J2)
    command = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        f"{jars}/*",
        TOOL_CLASS,
        "--bootstrap-server",
        kafka.bootstrap_servers,
    ]
    if command_config:
        command += ["--command-config", str(Path(command_config).resolve())]
    return [*command, *args]


def run_tool(kafka: KafkaConfig, args: Sequence[str], command_config: str | None = None) -> str:
    """Run the tool; its standard output, or `TransactionToolError` with its errors."""
    command = tool_command(kafka, args, command_config)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TransactionToolError(
            f"kafka-transactions {' '.join(args)}: no answer from {kafka.bootstrap_servers} "
            f"within {TOOL_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        raise TransactionToolError(
            f"kafka-transactions {' '.join(args)} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done.stdout


def broker_ids(kafka: KafkaConfig) -> list[int]:
    admin = AdminClient(kafka.client())
    return sorted(admin.list_topics(timeout=REQUEST_TIMEOUT_S).brokers)


def find_hanging(
    kafka: KafkaConfig,
    topic: str | None = None,
    partition: int | None = None,
    broker_id: int | None = None,
    max_transaction_timeout_min: int = 1,
    command_config: str | None = None,
) -> list[list[str]]:
    """KIP-664 hanging transactions, as rows of the tool's table (header first).
    Without a topic or broker, every broker is searched."""
    base = ["find-hanging", "--max-transaction-timeout", str(max_transaction_timeout_min)]
    scopes: list[list[str]]
    if topic is not None:
        scopes = [
            ["--topic", topic, *([] if partition is None else ["--partition", str(partition)])]
        ]
    else:
        ids = [broker_id] if broker_id is not None else broker_ids(kafka)
        scopes = [["--broker-id", str(i)] for i in ids]
    rows: list[list[str]] = []
    for scope in scopes:
        table = parse_table(run_tool(kafka, [*base, *scope], command_config))
        rows += table if not rows else table[1:]
    return rows


def parse_table(text: str) -> list[list[str]]:
    """The tool's tab-separated, space-padded table: header and rows."""
    return [
        [c.strip() for c in line.split("\t") if c.strip()]
        for line in text.splitlines()
        if line.strip()
    ]


def describe_producers(
    kafka: KafkaConfig, topic: str, partition: int, command_config: str | None = None
) -> list[Producer]:
    text = run_tool(
        kafka,
        ["describe-producers", "--topic", topic, "--partition", str(partition)],
        command_config,
    )
    table = parse_table(text)
    if not table:
        return []
    column = {name: i for i, name in enumerate(table[0])}
    try:
        return [
            Producer(
                producer_id=_int(row[column["ProducerId"]]),
                epoch=_int(row[column["ProducerEpoch"]]),
                coordinator_epoch=_int(row[column["LatestCoordinatorEpoch"]]),
                last_timestamp_ms=_int(row[column["LastTimestamp"]]),
                transaction_start=_int(row[column["CurrentTransactionStartOffset"]]),
            )
            for row in table[1:]
        ]
    except (KeyError, IndexError, ValueError) as exc:
        raise TransactionToolError(
            f"describe-producers printed what was not expected: {text!r}"
        ) from exc


def _int(cell: str) -> int:
    return -1 if cell == "None" else int(cell)  # None: no open transaction


def unstable_partitions(
    kafka: KafkaConfig, topics: Sequence[str]
) -> list[tuple[str, int, int, int]]:
    """(topic, partition, last stable offset, high watermark) where the first is lower."""
    admin = AdminClient(kafka.client())
    metadata = admin.list_topics(timeout=REQUEST_TIMEOUT_S)
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    wanted = {
        TopicPartition(name, p): latest
        for name in topics
        if name in metadata.topics
        for p in metadata.topics[name].partitions
    }
    if not wanted:
        return []
    ends = {}
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        futures = admin.list_offsets(
            wanted, isolation_level=level, request_timeout=REQUEST_TIMEOUT_S
        )
        ends[level] = {
            (tp.topic, tp.partition): int(f.result(REQUEST_TIMEOUT_S).offset)
            for tp, f in futures.items()
        }
    stable, high = ends[IsolationLevel.READ_COMMITTED], ends[IsolationLevel.READ_UNCOMMITTED]
    return [
        (topic, partition, stable[(topic, partition)], high[(topic, partition)])
        for topic, partition in sorted(stable)
        if stable[(topic, partition)] < high[(topic, partition)]
    ]


def open_transactions(
    kafka: KafkaConfig,
    topics: Sequence[str],
    older_than_s: float = 0.0,
    command_config: str | None = None,
) -> list[OpenTransaction]:
    """Open transactions holding back the last stable offset of `topics`, whose
    producer last wrote more than `older_than_s` ago; the oldest first."""
    found = []
    unstable = unstable_partitions(kafka, topics)
    ids = transactional_ids(kafka, command_config) if unstable else {}
    for topic, partition, stable, high in unstable:
        for producer in describe_producers(kafka, topic, partition, command_config):
            txn_id = ids.get(producer.producer_id)
            txn = OpenTransaction(topic, partition, stable, high, producer, txn_id)
            if producer.transaction_start >= 0 and txn.age_s > older_than_s:
                found.append(txn)
    return sorted(found, key=lambda t: t.producer.last_timestamp_ms)


def transactional_ids(kafka: KafkaConfig, command_config: str | None = None) -> dict[int, str]:
    """Producer id -> transactional id of every transaction the coordinators know."""
    table = parse_table(run_tool(kafka, ["list"], command_config))
    if not table:
        return {}
    column = {name: i for i, name in enumerate(table[0])}
    return {
        _int(row[column["ProducerId"]]): row[column["TransactionalId"]]
        for row in table[1:]
        if len(row) == len(table[0])
    }


def fence(kafka: KafkaConfig, transactional_id: str, timeout_s: float = 60.0) -> None:
    """End the open transaction of `transactional_id` (aborted on every partition),
    and fence whichever producer still uses that id."""
    producer = KafkaProducer(kafka.client(**{"transactional.id": transactional_id, "log_level": 3}))
    try:
        producer.init_transactions(timeout_s)
    except KafkaException as exc:
        raise TransactionToolError(f"init_transactions for {transactional_id!r}: {exc}") from None


def abort(
    kafka: KafkaConfig,
    topic: str,
    partition: int,
    start_offset: int,
    command_config: str | None = None,
) -> str:
    """Abort the transaction that starts at `start_offset` of the partition."""
    args = [
        "abort",
        "--topic",
        topic,
        "--partition",
        str(partition),
        "--start-offset",
        str(start_offset),
    ]
    return run_tool(kafka, args, command_config)
