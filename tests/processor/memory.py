"""The processor's engine on an in-memory Kafka: no broker, no client.

`MemoryKafka` is an in-memory adapter of the engine's port (`port.TransactionPort`):
a commands topic and the group's position in it and committed offsets, one
transaction at a time, and the records its committed transactions wrote, by topic.
Like Kafka, it refuses a record for a topic or partition that does not exist, or
one larger than `max_record_bytes`; a test may make it refuse others (`refuse`),
abort the next commits (`abort_commits`) or lose them (`lose_commits`: timed out,
not committed).

`MemoryProcessor` wires the engine as the processor's loop does (`Batches`,
`CommandHandler`, `Collector`, `ReplyRoutes`) on a `MemoryKafka`, and runs one batch
at a time: every command not consumed yet, garbage collection when due, commit.
The engine's tests (test_engine*.py) and `benchmarks.handler` run on these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from confluent_kafka import Consumer, Message

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Command, Reply, WorkflowState, decide
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.processor.batch import Batches
from duroot_stream.processor.collector import Collector
from duroot_stream.processor.engine import CommandHandler, Decide
from duroot_stream.processor.faults import AbortNeeded, RecordRefused
from duroot_stream.processor.port import CommitTimes, RecordHeaders
from duroot_stream.processor.routes import ReplyRoutes
from duroot_stream.processor.settings import ProcessorSettings
from duroot_stream.processor.state_store import StateChangelog
from duroot_stream.processor.workflows import Workflows
from duroot_stream.wire import CORRELATION_ID, Codec, Topics, partition_for, reply_route_headers

PARTITIONS = 3
MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes, the processor's producer's
GROUP = "memory-processor"


class Written(NamedTuple):
    """A record a committed transaction wrote."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: RecordHeaders | None

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        return next((v for k, v in reversed(self.headers or ()) if k == name), None)


class MemoryKafka:
    """An in-memory `TransactionPort` (see the module docstring)."""

    def __init__(
        self,
        topics: Topics,
        partitions: int = PARTITIONS,
        max_record_bytes: int | None = MESSAGE_MAX_BYTES,
        keep: bool = True,
    ) -> None:
        """`keep` False: records are counted (`kept`), not kept (a benchmark, which
        never reads them back; an aborted transaction's are counted too)."""
        self.names = topics
        self.max_record_bytes = max_record_bytes
        self.keep = keep
        self.kept = 0  # records committed
        # topic -> partition count: the pipeline's topics (one dead-letter partition)
        self.partitions = {
            topics.commands: partitions,
            topics.events: partitions,
            topics.index: partitions,
            topics.replies: partitions,
            topics.dlq: 1,
            topics.state: partitions,
        }
        self.commands: dict[int, list[Message]] = {p: [] for p in range(partitions)}
        self.position = dict.fromkeys(range(partitions), 0)  # next command to consume
        self.committed: dict[int, int] = {}  # the group's committed offsets
        self.commit_offsets: list[dict[int, int]] = []  # the offsets of each commit
        self.written: dict[str, list[tuple[Any, ...]]] = {}  # by topic, as produced
        self.begun = self.commits = 0
        self.aborts: list[str] = []  # why each abort came
        self.rewinds: list[dict[int, int]] = []
        self._refuse: Callable[[Written], str | None] | None = None
        self.abort_commits = 0  # the next commits raise AbortNeeded
        self.lose_commits = 0  # the next commits time out, not committed (None)
        self._open: list[tuple[Any, ...]] | None = None

    # --- the commands topic -----------------------------------------------------

    def send(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Message:
        """Append a record to the commands topic; the record, as it will be consumed."""
        log = self.commands[partition]
        message = Message(
            topic=self.names.commands,
            partition=partition,
            offset=len(log),
            key=key,
            value=value,
            headers=headers,
        )
        log.append(message)
        return message

    def consume(self) -> list[Message]:
        """Every command not consumed yet, partition by partition, in order."""
        found: list[Message] = []
        for partition, log in self.commands.items():
            found.extend(log[self.position[partition] :])
            self.position[partition] = len(log)
        return found

    def create_topic(self, name: str, partitions: int) -> None:
        self.partitions[name] = partitions

    def records(self, topic: str) -> list[Written]:
        """What committed transactions wrote to `topic`, in order."""
        return [Written(*r) for r in self.written.get(topic, ())]

    @property
    def open(self) -> bool:
        return self._open is not None

    @property
    def refuse(self) -> Callable[[Written], str | None] | None:
        """Refuses a record for which it returns a reason (a test's fault)."""
        return self._refuse

    @refuse.setter
    def refuse(self, refuse: Callable[[Written], str | None] | None) -> None:
        self._refuse = refuse

    # --- what ReplyRoutes asks (a consumer's list_topics) --------------------------

    def list_topics(self, timeout: float | None = None) -> Any:
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n)))
                for name, n in self.partitions.items()
            }
        )

    # --- the port ---------------------------------------------------------------

    def begin(self) -> None:
        assert self._open is None, "begin with a transaction open"
        self._open = []
        self.begun += 1

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: RecordHeaders | None,
    ) -> None:
        written = self._open
        if written is None:
            raise AssertionError("produce without a transaction")
        # Kept lean: benchmarks.handler measures the engine on it.
        if (
            self._refuse is not None
            or self.max_record_bytes is not None
            or not 0 <= partition < self.partitions.get(topic, 0)
        ):
            partition = self._check(Written(topic, partition, key, value, headers))
        if self.keep:
            written.append((topic, partition, key, value, headers))
        else:  # counted only: a record kept alive would cost the garbage collector
            self.kept += 1

    def _check(self, record: Written) -> int:
        """The record's partition (one by key for -1); `RecordRefused` as Kafka
        would refuse it, or as `refuse` says."""
        count = self.partitions.get(record.topic)
        partition = record.partition
        if count is None or partition >= count:
            raise RecordRefused(f"Local: Unknown topic or partition: {record.topic} [{partition}]")
        if partition < 0:  # by key, as the processor's producer (murmur2_random)
            partition = partition_for((record.key or b"").decode(), count)
        if self.max_record_bytes is not None and _size(record) > self.max_record_bytes:
            raise RecordRefused("Broker: Message size too large")
        if self._refuse is not None and (why := self._refuse(record)) is not None:
            raise RecordRefused(why)
        return partition

    def commit(self, offsets: Mapping[int, int]) -> CommitTimes | None:
        written = self._open
        assert written is not None, "commit without a transaction"
        if self.abort_commits:
            self.abort_commits -= 1
            raise AbortNeeded("commit_transaction: injected abortable error")
        self._open = None
        if self.lose_commits:
            self.lose_commits -= 1
            return None
        if self.keep:
            self.kept += len(written)
            for record in written:
                self.written.setdefault(record[0], []).append(record)
        self.committed.update(offsets)
        self.commit_offsets.append(dict(offsets))
        self.commits += 1
        return CommitTimes(0.0, 0.0)

    def abort(self, why: str) -> None:
        assert self._open is not None, "abort without a transaction"
        self._open = None
        self.aborts.append(why)

    def rewind(self, offsets: Mapping[int, int]) -> None:
        self.rewinds.append(dict(offsets))
        self.position.update(offsets)

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        return {p: self.position[p] for p in partitions}


def _size(record: Written) -> int:
    headers = sum(len(k) + len(v or b"") for k, v in record.headers or ())
    return len(record.key or b"") + len(record.value or b"") + headers


def _no_consumer_error(error: object) -> None:
    raise AssertionError(f"the in-memory commands topic gave an error: {error}")


class MemoryProcessor:
    """The engine on a `MemoryKafka`, wired as the processor's loop wires it."""

    def __init__(
        self,
        settings: ProcessorSettings | None = None,
        decide: Decide = decide,
        partitions: int = PARTITIONS,
        max_record_bytes: int | None = MESSAGE_MAX_BYTES,
        extra_topics: Mapping[str, int] | None = None,
        keep: bool = True,
    ) -> None:
        """`extra_topics`: topics (name -> partitions) besides the pipeline's; `keep`
        as `MemoryKafka`'s."""
        self.settings = settings or ProcessorSettings(KafkaConfig(topic_prefix="mem."))
        self.topics = topics = Topics(self.settings.kafka.topic_prefix)
        self.kafka = kafka = MemoryKafka(topics, partitions, max_record_bytes, keep)
        for name, partitions in (extra_topics or {}).items():
            kafka.create_topic(name, partitions)
        self.codec = Codec()
        self.metrics = metrics = ProcessorMetrics()
        self.workflows = workflows = Workflows(metrics)
        for partition in kafka.commands:  # every partition assigned, nothing to restore
            workflows.restored(partition, {})
        counts = dict(kafka.partitions)
        changelog = StateChangelog(topics.state, "memory-processor")
        self.batches = Batches(kafka, workflows, metrics, changelog)
        self.routes = ReplyRoutes(
            cast(Consumer, kafka), topics, self.settings.reply_topics, counts, metrics,
            self.batches.count,
        )  # fmt: skip
        self.handler = CommandHandler(
            self.batches, workflows, self.codec, topics, counts, metrics, self.routes, GROUP, decide
        )
        self.collector = Collector(
            self.settings, self.batches, kafka, workflows, self.handler, metrics
        )

    def send(
        self,
        command: Command,
        *,
        partition: int | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        value: bytes | None = None,
    ) -> Message:
        """`command` on the commands topic (its workflow's partition, keyed by its
        workflow id, encoded, unless told otherwise)."""
        home = partition_for(command.workflow_id, self.kafka.partitions[self.topics.commands])
        return self.kafka.send(
            home if partition is None else partition,
            command.workflow_id.encode() if key is None else key,
            self.codec.encode_command(command) if value is None else value,
            headers,
        )

    def run_batch(self) -> bool:
        """What the loop does per transaction: handle every command not consumed yet,
        garbage collection when due, commit. True if it committed (or had nothing)."""
        batches = self.batches
        try:
            self.handler.handle_all(self.kafka.consume(), _no_consumer_error)
            if self.collector.due():
                self.collector.collect()
        except AbortNeeded as exc:
            batches.abort(str(exc))
            return False
        return batches.commit()

    # --- what tests ask ---------------------------------------------------------

    def routed(self, command: Command, **how: Any) -> str:
        """Send `command` asking for its reply on the replies topic's partition 0;
        the correlation id (its command id)."""
        route = reply_route_headers(self.topics.replies, 0, command.command_id)
        self.send(command, headers=[*route], **how)
        return command.command_id

    def reply(self, correlation: str) -> Reply:
        """The one reply written with `correlation`."""
        found = [
            r
            for r in self.kafka.records(self.topics.replies)
            if r.header(CORRELATION_ID) == correlation.encode()
        ]
        assert len(found) == 1, f"{len(found)} replies to {correlation}"
        return self.codec.decode_reply(found[0].value)

    def request(self, command: Command) -> Reply:
        """`command` sent, its batch committed, its reply."""
        correlation = self.routed(command)
        assert self.run_batch(), "the batch did not commit"
        return self.reply(correlation)

    def events_of(self, workflow_id: str) -> list[Written]:
        prefix = f"{workflow_id}/".encode()
        return [
            r for r in self.kafka.records(self.topics.events) if (r.key or b"").startswith(prefix)
        ]

    def counted(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The value of counter `duroot_processor_<name>_total` with `labels`."""
        value = self.metrics.registry.get_sample_value(f"duroot_processor_{name}_total", labels)
        return value or 0.0

    def state(self, workflow_id: str) -> WorkflowState | None:
        for workflows in self.workflows.by_partition.values():
            if workflow_id in workflows:
                return workflows[workflow_id]
        return None

    def snapshot(self) -> dict[int, dict[str, WorkflowState]]:
        """Every workflow held, by partition (a copy)."""
        return {p: dict(w) for p, w in self.workflows.by_partition.items()}
