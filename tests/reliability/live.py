"""A reader during the chaos: a read_committed consumer of the events topic, in a
thread, checking every prefix it sees of every workflow while the faults happen.

What a reader downstream of the processors relies on, checked record by record
(`WorkflowChecker.add`):

- the key is `<workflow>/<seq>`, on the workflow's partition, offsets rising;
- the headers decode and agree with the Avro body;
- seq is the next one of that workflow (no gap, nothing twice, nothing reordered),
  the parent is the vid of the event before (EVENT_EPOCH for seq 0), the vid rises;
- the event types follow the state machine: STARTED, UPDATED..., COMPLETED,
  COMMITTED;
- tombstones (a Delete) come only for an ended workflow, one per key in seq order;
  after the last one the workflow starts again from seq 0.

No aborted reads: at the end (`check_final`) every record it was given must be
in the final read_committed read of the topic, at the same partition and offset
with the same key and vid (or compacted away behind its key's tombstone; the
reader itself assumes the cleaner does not overtake it, true while the active
segment holds the run: topics here roll segments after 7 days). The consumer is
assigned (no group) from the beginning and rides out broker restarts on
librdkafka's own reconnects; only a fatal error or an offset reset (records
vanished) counts as a violation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import EVENT_EPOCH, StateCode
from duroot_stream.kafka import headers as record_headers
from duroot_stream.wire import (
    EVENT_TYPES,
    Codec,
    CodecError,
    Topics,
    parse_event_headers,
    partition_for,
)
from tests.kafka_helpers import wait_until

log = logging.getLogger("duroot.reliability.live")

MAX_VIOLATIONS = 30
BATCH = 5_000
POLL_S = 0.5
STATISTICS_INTERVAL_S = 5.0  # librdkafka's, kept for the failure message
METADATA_TIMEOUT_S = 60.0  # the topic's partitions, at the start

# The state after each event type, and which types may follow a state (docs/contract.md).
_AFTER = {
    "STARTED": StateCode.INITIALIZED,
    "UPDATED": StateCode.APPENDING,
    "COMPLETED": StateCode.COMPLETED,
    "COMMITTED": StateCode.TERMINATED,
}
_NEXT = {
    StateCode.UNINITIALIZED: {"STARTED"},
    StateCode.INITIALIZED: {"UPDATED", "COMPLETED"},
    StateCode.APPENDING: {"UPDATED", "COMPLETED"},
    StateCode.COMPLETED: {"COMMITTED"},
    StateCode.TERMINATED: set(),
}
_DELETABLE = (StateCode.COMPLETED, StateCode.TERMINATED)
# What librdkafka's statistics say of a partition that is not read to the end.
_FETCH_STATS = "fetch_state leader broker next_offset app_offset ls_offset hi_offset fetchq_cnt"
_TYPE_NAMES = {cls: name for cls, name in EVENT_TYPES.items()}


class Seen(Protocol):
    """A record as the final read has it (topic_reads.Record fits)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> dict[str, bytes]: ...


@dataclass
class _Workflow:
    code: StateCode = StateCode.UNINITIALIZED
    seq: int = 0  # the next event's seq
    vid: str = EVENT_EPOCH
    tombstones: int = 0  # tombstones seen of the deletion under way


@dataclass(frozen=True, slots=True)
class Violation:
    workflow: str
    partition: int
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.workflow} at events[{self.partition}]@{self.offset}: {self.what}"


@dataclass
class WorkflowChecker:
    """The checks of one record at a time (module docstring); no Kafka, no thread."""

    partitions: int
    codec: Codec = field(default_factory=Codec)
    workflows: dict[str, _Workflow] = field(default_factory=dict)
    last_offset: dict[int, int] = field(default_factory=dict)
    seen: dict[tuple[int, int], tuple[bytes, str | None]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    events: int = 0
    tombstones: int = 0
    compacted: int = 0  # read live, then removed by compaction (a later tombstone)

    def violation(self, workflow: str, partition: int, offset: int, what: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(Violation(workflow, partition, offset, what))

    def add(
        self,
        partition: int,
        offset: int,
        key: bytes,
        value: bytes | None,
        headers: dict[str, bytes],
    ) -> None:
        text = key.decode(errors="replace")
        workflow, _, seq_text = text.partition("/")
        bad = self._placement(partition, offset, workflow, seq_text)
        self.last_offset[partition] = offset
        if bad:
            self.violation(workflow, partition, offset, bad)
            return
        seq = int(seq_text)
        wf = self.workflows.setdefault(workflow, _Workflow())
        if value is None:
            self.seen[(partition, offset)] = (key, None)
            self.tombstones += 1
            bad = self._tombstone(wf, seq)
        else:
            self.events += 1
            bad = self._event(wf, workflow, seq, value, headers, (partition, offset), key)
        if bad:
            self.violation(workflow, partition, offset, bad)

    def _placement(self, partition: int, offset: int, workflow: str, seq: str) -> str | None:
        if offset <= self.last_offset.get(partition, -1):
            return f"offset after {self.last_offset[partition]}: read out of order"
        if not seq.isdigit():
            return f"key {workflow}/{seq} is not <workflow>/<seq>"
        try:
            uuid.UUID(workflow)
        except ValueError:
            return f"key {workflow}/{seq}: no workflow id"
        if partition_for(workflow, self.partitions) != partition:
            return "not on the workflow's partition"
        return None

    def _tombstone(self, wf: _Workflow, seq: int) -> str | None:
        if wf.code not in _DELETABLE:
            return f"tombstone for seq {seq} while {wf.code.name}"
        if seq != wf.tombstones or seq >= wf.seq:
            return f"tombstone for seq {seq}, expected {wf.tombstones} of {wf.seq}"
        wf.tombstones += 1
        if wf.tombstones == wf.seq:  # all gone: the workflow may start again
            wf.code, wf.seq, wf.vid, wf.tombstones = StateCode.UNINITIALIZED, 0, EVENT_EPOCH, 0
        return None

    def _event(
        self,
        wf: _Workflow,
        workflow: str,
        seq: int,
        value: bytes,
        headers: dict[str, bytes],
        where: tuple[int, int],
        key: bytes,
    ) -> str | None:
        try:
            h = parse_event_headers(list(headers.items()))
            body = self.codec.decode_event(value)
        except CodecError as exc:
            return f"undecodable: {exc}"
        self.seen[where] = (key, body.event_id)
        kind = _TYPE_NAMES.get(type(body.payload), "?")
        if (h.event_type, h.workflow_id, h.vid, h.parent, h.seq, h.command_id) != (
            kind,
            body.workflow_id,
            body.event_id,
            body.parent,
            body.seq,
            body.command_id,
        ):
            return f"headers {h} disagree with the body {body}"
        if body.workflow_id != workflow or body.seq != seq:
            return f"body says {body.workflow_id}/{body.seq}"
        bad = self._follows(wf, kind, seq, body.parent, body.event_id)
        # Checked from this one on, after a violation too (one report, not a cascade).
        wf.code, wf.seq, wf.vid, wf.tombstones = _AFTER[kind], seq + 1, body.event_id, 0
        return bad

    @staticmethod
    def _follows(wf: _Workflow, kind: str, seq: int, parent: str, vid: str) -> str | None:
        """Does this event continue the workflow's history as read so far?"""
        if wf.tombstones:
            return f"{kind} seq {seq} in the middle of a deletion ({wf.tombstones} tombstones)"
        if seq != wf.seq:
            return f"seq {seq}, expected {wf.seq} ({'a gap' if seq > wf.seq else 'again'})"
        if parent != wf.vid:
            return f"parent {parent}, expected the vid before it {wf.vid}: chain broken"
        if not vid > parent:
            return f"vid {vid} not above its parent {parent}"
        if kind not in _NEXT[wf.code]:
            return f"{kind} after {wf.code.name}: not a valid history"
        return None

    def check_final(self, final: Mapping[int, Sequence[Seen]]) -> int:
        """Every record seen must be in the final read (same place, key and vid):
        a record read and then gone was an aborted read, unless compaction took it (a
        tombstone of its key later in the partition). Returns how many were compared."""
        at = {(p, r.offset): r for p, records in final.items() for r in records}
        tombstoned = {
            (p, r.key): r.offset for p, rs in final.items() for r in rs if r.value is None
        }
        for (p, offset), (key, vid) in self.seen.items():
            r = at.get((p, offset))
            workflow = key.decode(errors="replace").split("/", 1)[0]
            if r is None:
                if tombstoned.get((p, key), -1) > offset:
                    self.compacted += 1
                    continue
                self.violation(workflow, p, offset, "read live, not in the final read (aborted)")
                continue
            final_vid = None if r.value is None else r.headers.get("vid", b"").decode()
            if r.key != key or final_vid != vid:
                what = f"read live as {key!r} {vid}, finally {r.key!r} {final_vid}"
                self.violation(workflow, p, offset, what)
        return len(self.seen)


class LiveReader:
    """`WorkflowChecker` fed by a consumer thread, from `start()` to `stop()`."""

    def __init__(self, kafka: KafkaConfig, partitions: int) -> None:
        self.kafka = kafka
        self.topic = Topics(kafka.topic_prefix).events
        self.checker = WorkflowChecker(partitions)
        self.transient_errors = 0  # broker restarts and the like, ridden out
        self.cpu_s = 0.0  # the thread's CPU time (its cost), once stopped
        self.errors: list[str] = []  # what stopped the thread, if anything
        self._stats: dict[str, Any] = {}  # librdkafka's latest statistics, parsed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        assert self._thread is None, "started twice"
        self._thread = threading.Thread(target=self._run, name="live-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None

    def behind(self, final: Mapping[int, Sequence[Seen]]) -> dict[int, tuple[int, int]]:
        """The partitions of `final` it has not read to the end: (last read, last record)."""
        with self._lock:
            last = dict(self.checker.last_offset)
        return {
            p: (last.get(p, -1), rs[-1].offset)
            for p, rs in final.items()
            if rs and last.get(p, -1) < rs[-1].offset
        }

    def caught_up(self, final: Mapping[int, Sequence[Seen]]) -> bool:
        """Has it read up to the last record of every partition of `final`?"""
        return not self.behind(final)

    def finish(self, final: Mapping[int, Sequence[Seen]], timeout: float = 300.0) -> None:
        """Wait until it has read everything in `final`, stop, compare (no aborted reads)."""
        if self._thread is not None and not self.errors:
            try:
                wait_until(lambda: self.errors or self.caught_up(final), timeout, 0.2, "live")
            except AssertionError as exc:
                lag = self.behind(final)
                raise AssertionError(
                    f"{exc} reader; partition: (last read, last record) {lag}; "
                    f"librdkafka says {self.fetch_states(lag)}"
                ) from None
        self.stop()
        self.checker.check_final(final)

    def fetch_states(self, partitions: Iterable[int]) -> dict[str, object]:
        """What librdkafka's latest statistics say of these partitions and the brokers:
        why a partition is not fetched (its fetch state, leader, offsets)."""
        with self._lock:
            stats = self._stats
        topic = stats.get("topics", {}).get(self.topic, {})
        states: dict[str, object] = {
            f"p{p}": {
                k: topic.get("partitions", {}).get(str(p), {}).get(k) for k in _FETCH_STATS.split()
            }
            for p in partitions
        }
        brokers = stats.get("brokers", {}).values()
        states["brokers"] = {b.get("nodeid"): b.get("state") for b in brokers}
        states["age_s"] = round(time.time() - stats.get("time", 0), 1) if stats else None
        return states

    def _on_stats(self, text: str) -> None:
        stats = json.loads(text)
        with self._lock:
            self._stats = stats

    @property
    def problems(self) -> list[str]:
        return self.errors + [str(v) for v in self.checker.violations]

    def figures(self) -> dict[str, object]:
        c = self.checker
        return {
            "live_events": c.events,
            "live_tombstones": c.tombstones,
            "live_compacted": c.compacted,
            "live_workflows": len(c.workflows),
            "live_violations": c.violation_count + len(self.errors),
            "live_transient_errors": self.transient_errors,
            "live_cpu_s": round(self.cpu_s, 1),
        }

    def _run(self) -> None:
        consumer = Consumer(
            self.kafka.client(
                **{
                    "group.id": f"reliability-live-{uuid.uuid4().hex}",  # assigned, never joined
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    # Records gone from under the reader are a finding, not a restart.
                    "auto.offset.reset": "error",
                    "fetch.queue.backoff.ms": 10,
                    # Kept for the failure message of a reader that stops catching up.
                    "statistics.interval.ms": int(STATISTICS_INTERVAL_S * 1000),
                    "stats_cb": self._on_stats,
                }
            )
        )
        try:
            meta = wait_until(
                lambda: consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions,
                timeout=METADATA_TIMEOUT_S,
                what=f"the partitions of {self.topic}",
            )
            self.checker.partitions = len(meta)  # the topic's own count, whatever a scenario made
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta])
            while not self._stop.is_set():
                messages = consumer.consume(BATCH, POLL_S)
                with self._lock:
                    for m in messages:
                        self._one(m)
        except BaseException as exc:  # surfaced as a problem of the scenario
            self.errors.append(f"live reader stopped: {exc!r}")
        finally:
            consumer.close()
            self.cpu_s = time.thread_time()

    def _one(self, m: Message) -> None:
        error = m.error()
        if error is not None:
            if error.fatal() or error.code() == KafkaError._AUTO_OFFSET_RESET:
                part, at = m.partition(), m.offset()
                self.checker.violation(
                    "-", -1 if part is None else part, -1 if at is None else at, error.str()
                )
            else:  # a broker restart: librdkafka reconnects by itself
                self.transient_errors += 1
                log.info("live reader: transient error", extra={"error": error.str()})
            return
        partition, offset = m.partition(), m.offset()
        assert partition is not None and offset is not None, "a record has both"
        fields = {name: value or b"" for name, value in record_headers(m)}
        self.checker.add(partition, offset, m.key() or b"", m.value(), fields)
