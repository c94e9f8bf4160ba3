"""Readers: a workflow's du result and status, the event stream, the index table.

    from duroot_stream.client import DuRootReader

    with DuRootReader(KafkaConfig.from_env()) as reader:
        result = reader.get_du(workflow_id, wait=True).raise_for_status()
        for line in result.lines:
            print(line.usage, line.path)

How `get_du` (and `status`) finds a workflow without scanning more than it must:

1. Look the workflow up in the index table (its partition of `<prefix>index`).
   No entry: `WorkflowNotFound`. Its earliest index event still in the topic
   (STARTED, until compaction leaves only the latest, COMPLETED) mirrors a
   workflow event whose vid is a ULID, so it carries that event's time.
2. Ask the broker for the first offset of the workflow's partition of
   `<prefix>events` (`partition_for(workflow id, N)`) at or after that time:
   the processor produced that event after it made its vid, so the event, and
   every later one, lies at or after that offset.
3. Read from there, keeping only records whose key is `<workflow id>/<seq>`
   (the key says what the `workflow-id` header says, and is cheaper to test),
   and decode only those. Stop at the workflow's COMMITTED event; otherwise at
   the end of the partition, or, with `wait`, once it completes.
4. If the first event found is not seq 0 (the anchor was COMPLETED, or the
   clocks disagreed), the history started earlier: go back, at least as far
   as its seq says, then doubling the distance, until seq 0 is found or the
   partition's start is reached. Each try stops at the first event found.

So a finished workflow costs roughly its own span of the partition, and never
more than the partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum
from types import TracebackType

from confluent_kafka import Consumer, Message

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import WorkflowIndexEvent, ulid_time_ms
from duroot_stream.wire import Codec, CodecError, Topics, partition_for

from .calls import offset_at, topic_partitions, watermarks
from .commands import canonical_uuid
from .errors import DuRootError, WaitTimeout, WorkflowNotFound
from .history import History
from .index import IndexEntry, merge
from .results import DuResult, Progress, StoredEvent, WorkflowStatus
from .scan import BEGINNING, new_scanner, scan

__all__ = ["DuRootReader"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
MIN_STEP_BACK = 1000  # offsets; the first step back when a history's start is missing


class _Outcome(Enum):
    """How one read of a partition ended."""

    DONE = "done"  # TERMINATED, or the end (without wait), or COMPLETED at the end
    PREFIX_MISSING = "prefix-missing"  # the first event found was not seq 0


class DuRootReader:
    """Reads workflow results, events and the index. Each call uses its own consumer
    (assigned partitions, read_committed, no group), so calls may run in parallel."""

    def __init__(self, config: KafkaConfig, *, codec: Codec | None = None) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self._codec = codec or Codec(config.schema_registry_url)
        self._partitions: dict[str, int] = {}

    def __enter__(self) -> DuRootReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between calls; here for symmetry with the client."""

    # -- get and status

    def get_du(
        self,
        workflow_id: str,
        *,
        wait: bool = False,
        timeout: float | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> DuResult:
        """The workflow's du lines and status. `wait`: follow it until it completes
        (`WaitTimeout` after `timeout` seconds; None = forever). Does not raise for a
        failed workflow: see `DuResult.failed` and `raise_for_status()`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._history(canonical_uuid(workflow_id), wait, deadline, progress).result()

    def status(self, workflow_id: str) -> WorkflowStatus:
        """State, vid, counts and times of a workflow (`WorkflowNotFound` if none)."""
        wf = canonical_uuid(workflow_id)
        history = self._history(wf, False, None, None)
        s = history.state
        return WorkflowStatus(
            workflow_id=wf,
            state=s.code,
            vid=s.vid,
            events=s.seq,
            lines=len(history.lines),
            registry_id=s.registry_id,
            global_root=s.global_root,
            host=s.host,
            host_root=s.host_root,
            started_at_ms=s.started_at or None,
            completed_at_ms=s.completed_at or None,
            status_code=history.status.status_code if history.status else None,
            status_message=history.status.status_message if history.status else "",
            partition=partition_for(wf, self._partitions[self.topics.events]),
        )

    def _history(
        self,
        wf: str,
        wait: bool,
        deadline: float | None,
        progress: Callable[[Progress], None] | None,
    ) -> History:
        consumer = self._consumer(follow=wait)
        try:
            entry = self._index_anchor(consumer, wf)
            if entry is None:
                raise WorkflowNotFound(wf)
            topic = self.topics.events
            partition = partition_for(wf, self._partition_count(consumer, topic))
            low, high = watermarks(consumer, topic, partition)
            # 2. The first offset at or after the time of the event the index mirrors.
            start = offset_at(consumer, topic, partition, ulid_time_ms(entry.workflow_event_id))
            start = high if start < 0 else max(start, low)
            step = 0
            while True:
                history = History(wf, self._codec)
                outcome = self._read_history(
                    consumer, partition, start, start > low, history, wait, deadline, progress
                )
                if outcome is _Outcome.DONE or start <= low:
                    break
                # 4. The history started before `start`: go back and read again. Its
                # STARTED lies at least `first_seq` records before the first event found.
                if history.first_seq is None:  # nothing found: the timestamps misled us
                    start = low
                    continue
                bound = min(start, history.first_offset - history.first_seq)
                start = max(low, bound - step)
                step = max(MIN_STEP_BACK, 2 * step)
                log.debug("the history of %s starts earlier; reading from %d", wf, start)
        finally:
            consumer.close()
        if history.first_seq is None:  # deleted since the index was read
            raise WorkflowNotFound(wf)
        return history

    def _read_history(
        self,
        consumer: Consumer,
        partition: int,
        start: int,
        need_start: bool,
        history: History,
        wait: bool,
        deadline: float | None,
        progress: Callable[[Progress], None] | None,
    ) -> _Outcome:
        """3. Read one workflow's records from `start`; how it ended (`_Outcome`).

        `need_start`: give up as soon as the first event found is not seq 0."""
        prefix = f"{history.workflow_id}/".encode()
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        topic = self.topics.events
        for records, at_end in scan(consumer, topic, {partition: start}, follow=wait):
            for msg in records:
                key = msg.key()
                if key is None or not key.startswith(prefix):
                    continue
                history.add(msg)
                if need_start and history.first_seq not in (None, 0):
                    return _Outcome.PREFIX_MISSING
                if history.terminated:
                    return _Outcome.DONE
            if wait and at_end and history.deleted and history.first_seq is None:
                raise WorkflowNotFound(history.workflow_id)  # deleted while we waited
            if at_end and (not wait or history.complete):
                return _Outcome.DONE if history.first_seq == 0 else _Outcome.PREFIX_MISSING
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise WaitTimeout(
                    f"workflow {history.workflow_id} did not complete in time "
                    f"(state {history.state.code.name}, {len(history.lines)} lines so far)"
                )
            if progress is not None and now >= next_progress:
                progress(Progress(history.workflow_id, len(history.lines), history.state.code))
                next_progress = now + PROGRESS_INTERVAL_S
        return _Outcome.DONE  # pragma: no cover (_scan follows forever when waiting)

    def _index_anchor(self, consumer: Consumer, wf: str) -> WorkflowIndexEvent | None:
        """1. The earliest index event of the workflow still in the topic since its
        last deletion (STARTED until compaction removes it, then the latest); None if
        the workflow has no entry."""
        topic = self.topics.index
        partition = partition_for(wf, self._partition_count(consumer, topic))
        key = wf.encode()
        first: bytes | None = None
        for records, _ in scan(consumer, topic, {partition: BEGINNING}):
            for msg in records:
                if msg.key() == key:
                    value = msg.value()
                    first = None if value is None else first or value
        if first is None:
            return None
        try:
            return self._codec.decode_index_event(first)
        except CodecError as exc:
            raise DuRootError(f"undecodable index entry of workflow {wf}: {exc}") from None

    # -- the index table

    def index(self, *, registry_id: str | None = None) -> dict[str, IndexEntry]:
        """The index table: workflow id -> entry, oldest started first. Tombstones
        remove entries, so deleted workflows are absent."""
        registry = canonical_uuid(registry_id, "registry id") if registry_id else None
        topic = self.topics.index
        table: dict[str, IndexEntry] = {}
        consumer = self._consumer()
        try:
            n = self._partition_count(consumer, topic)
            for records, _ in scan(consumer, topic, dict.fromkeys(range(n), BEGINNING)):
                for msg in records:
                    raw_key = msg.key()
                    if raw_key is None:
                        continue
                    wf = raw_key.decode("utf-8", "replace")
                    value = msg.value()
                    if value is None:
                        table.pop(wf, None)
                        continue
                    try:
                        event = self._codec.decode_index_event(value)
                    except CodecError as exc:
                        log.warning("skipping an undecodable index record: %s", exc)
                        continue
                    table[wf] = merge(table.get(wf), event)
        finally:
            consumer.close()
        entries = [e for e in table.values() if registry is None or e.registry_id == registry]
        entries.sort(key=lambda e: e.started_vid or e.latest.workflow_event_id)
        return {e.workflow_id: e for e in entries}

    # -- the event stream

    def events(
        self,
        *,
        from_beginning: bool = True,
        follow: bool = False,
        workflow_id: str | None = None,
        stop: threading.Event | None = None,
        positioned: threading.Event | None = None,
    ) -> Iterator[StoredEvent]:
        """Decoded records of the events topic, each partition in offset order.

        `from_beginning=False` starts at the end as of now. Without `follow` it ends
        at the end of every partition; with it, it waits for more until `stop` is
        set (or the caller stops iterating). `workflow_id`: only that workflow's
        partition and records. `positioned` is set once the start offsets are fixed
        (from then on, every new event will be seen)."""
        topic = self.topics.events
        consumer = self._consumer(follow=follow)
        try:
            n = self._partition_count(consumer, topic)
            prefix: bytes | None = None
            partitions: list[int] = list(range(n))
            if workflow_id is not None:
                wf = canonical_uuid(workflow_id)
                prefix, partitions = f"{wf}/".encode(), [partition_for(wf, n)]
            if from_beginning:
                starts = dict.fromkeys(partitions, BEGINNING)
            else:  # the end offsets now (OFFSET_END would be resolved later, lazily)
                starts = {p: watermarks(consumer, topic, p)[1] for p in partitions}
            batches = scan(consumer, topic, starts, follow=follow, stop=stop)
            if positioned is not None:
                positioned.set()
            for records, _ in batches:
                for msg in records:
                    key = msg.key()
                    if key is None or (prefix is not None and not key.startswith(prefix)):
                        continue
                    stored = self._stored_event(msg, key)
                    if stored is not None:
                        yield stored
        finally:
            consumer.close()

    def _stored_event(self, msg: Message, key: bytes) -> StoredEvent | None:
        wf, _, seq_text = key.decode("utf-8", "replace").rpartition("/")
        value = msg.value()
        event = None
        if value is not None:
            try:
                event = self._codec.decode_event(value)
            except CodecError as exc:
                log.warning(
                    "skipping an undecodable event",
                    extra={"partition": msg.partition(), "offset": msg.offset(), "error": str(exc)},
                )
                return None
        return StoredEvent(
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=msg.timestamp()[1],
            workflow_id=event.workflow_id if event else wf,
            seq=event.seq if event else int(seq_text) if seq_text.isdigit() else -1,
            event=event,
        )

    # -- Kafka plumbing

    def _consumer(self, follow: bool = False) -> Consumer:
        return new_scanner(self.config, follow)

    def _partition_count(self, consumer: Consumer, topic: str) -> int:
        # Asked on every new consumer, not cached: the answer also tells librdkafka
        # the partition leaders, which a fresh consumer would otherwise look up
        # lazily after assign() (about half a second).
        count = self._partitions[topic] = topic_partitions(consumer, topic)
        return count
