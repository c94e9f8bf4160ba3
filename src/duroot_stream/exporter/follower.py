"""The exporter: reads the events topic from its beginning into the usage table, then
follows it, while `/metrics` serves the table.

1. Assign every partition of `<prefix>events` from its beginning: read_committed,
   no consumer group (a group id it never joins), so any number of exporters run
   side by side, each with the whole table, and none keeps state of its own.
2. Fold each record into the table (`usage.UsageTable`): an event is applied, a
   tombstone deletes its workflow, a record that cannot be decoded is logged,
   counted and skipped.
3. Once every partition has been read to its end, the table is rebuilt: `ready`
   is set, and the usage families are served from then on (before that, a scrape
   could see an older run than the one served before a restart).
4. Follow: keep reading; a consumer error that will not go away (the topic gone,
   access denied) is reported on `/healthz` and the partitions are assigned again
   from where the table stands.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from duroot_stream.client import DuRootError
from duroot_stream.client.calls import topic_partitions
from duroot_stream.client.scan import BEGINNING, check, new_scanner
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Codec, CodecError, Topics

from .families import ExporterMetrics
from .usage import UsageTable

log = logging.getLogger("duroot.exporter")

BATCH = 1000
POLL_S = 0.2
RETRY_S = 2.0
DEFAULT_MAX_DEPTH = 1
DEFAULT_MAX_SERIES = 10_000


@dataclass(frozen=True)
class ExporterSettings:
    kafka: KafkaConfig
    max_depth: int = DEFAULT_MAX_DEPTH
    max_series: int = DEFAULT_MAX_SERIES
    metrics_port: int | None = None


class Exporter:
    """`run()` until `stop()`; `ready` once the table is rebuilt; `problem` says what
    is wrong with reading now (None when all is well)."""

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self.topic = Topics(settings.kafka.topic_prefix).events
        self.table = UsageTable(settings.max_depth, settings.max_series)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.metrics = ExporterMetrics(self.table, self.lock, self.ready)
        self.problem: str | None = None
        self._codec = Codec(settings.kafka.schema_registry_url)
        self._stop = threading.Event()
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._at_end: set[int] = set()  # partitions read to their end at least once

    def stop(self) -> None:
        self._stop.set()

    def has_run(self, workflow_id: str) -> bool:
        """Whether the table holds the completed run `workflow_id`."""
        with self.lock:
            return any(workflow_id in usage.runs for usage in self.table.roots.values())

    def wait_for(self, workflow_id: str, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until the table holds the run; whether it does."""
        deadline = time.monotonic() + timeout
        while not self.has_run(workflow_id):
            if time.monotonic() > deadline or self._stop.wait(POLL_S):
                return False
        return True

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            consumer = new_scanner(self.settings.kafka, follow=True)
            try:
                self._follow(consumer, started)
            except DuRootError as exc:
                self.problem = f"cannot read {self.topic}: {exc}"
                log.error("cannot read the events topic; trying again", extra={"error": str(exc)})
                self._stop.wait(RETRY_S)
            finally:
                consumer.close()

    def _follow(self, consumer: Consumer, started: float) -> None:
        # 1. Every partition, from the beginning or from where the table stands.
        count = topic_partitions(consumer, self.topic)
        for p in range(count):
            self._next.setdefault(p, BEGINNING)
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in self._next.items()])
        self.problem = None
        while not self._stop.is_set():
            records = []
            for msg in consumer.consume(BATCH, POLL_S):
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition() or 0)
                else:
                    check(err, self.topic)  # 4. raises for what will not go away
            with self.lock:
                kinds = [self._fold(msg) for msg in records]  # 2.
            for kind in ("event", "tombstone"):  # counted per batch: a label lookup costs
                if n := kinds.count(kind):
                    self.metrics.records.labels(kind).inc(n)
            # 3. Rebuilt once every partition has been read to its end (librdkafka's
            # end-of-partition event: the last stable offset as of then).
            if not self.ready.is_set() and len(self._at_end) >= count:
                self.metrics.rebuild_duration.set(time.monotonic() - started)
                self.ready.set()
                log.info(
                    "usage table rebuilt",
                    extra={"roots": len(self.table.roots), "series": self.table.series},
                )

    def _fold(self, msg: Message) -> str:
        """One record into the table; what it was: event, tombstone or skipped."""
        partition, offset = msg.partition() or 0, msg.offset() or 0
        self._next[partition] = offset + 1
        key, value = msg.key(), msg.value()
        if value is None:
            if key is None:
                return "skipped"
            self.table.delete(key.decode("utf-8", "replace").rpartition("/")[0])
            return "tombstone"
        try:
            event = self._codec.decode_event(value)
        except CodecError as exc:
            self.metrics.undecodable.inc()
            log.warning(
                "skipping an undecodable event",
                extra={"partition": partition, "offset": offset, "error": str(exc)},
            )
            return "skipped"
        try:
            self.table.apply(event)
        except Exception:  # a bug must not stop the exporter on this record for good
            self.metrics.undecodable.inc()
            log.exception("skipping an event the table could not take", extra={"offset": offset})
            return "skipped"
        return "event"
