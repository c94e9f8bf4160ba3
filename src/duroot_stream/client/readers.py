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
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    STATUS_CODE_OK,
    DuRootCommitted,
    DuRootCompleted,
    DuUpdated,
    IndexCompleted,
    IndexDeleted,
    IndexStarted,
    PathUsage,
    StateCode,
    WorkflowEvent,
    WorkflowIndexEvent,
    WorkflowState,
    evolve,
    initial_state,
    ulid_time_ms,
)
from duroot_stream.kafka import new_reader as new_consumer
from duroot_stream.wire import Codec, CodecError, Topics, partition_for

from .requester import (
    DuRootError,
    Unavailable,
    WaitTimeout,
    WorkflowFailed,
    WorkflowNotFound,
    canonical_uuid,
    kafka_unavailable,
    topic_partitions,
    watermarks,
)

log = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 10.0
BATCH = 1000  # records per consume() call
# consume() returns when it has BATCH records or after this long; it is how long
# the end of a partition costs, and how long a following reader may lag.
BATCH_WAIT_S = 0.02
FOLLOW_WAIT_S = 0.2
END_FETCH_WAIT_MS = 5
FOLLOW_FETCH_WAIT_MS = 100
PROGRESS_INTERVAL_S = 1.0
MIN_STEP_BACK = 1000  # offsets; the first step back when a history's start is missing


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DuResult:
    """A workflow's du lines, in the order they were appended, and its final status."""

    workflow_id: str
    lines: list[PathUsage]
    vid: str  # the workflow's head when read
    complete: bool  # COMPLETED (or TERMINATED): no more lines will come
    status_code: int | None  # None while running; 0 = success
    status_message: str
    state: StateCode

    @property
    def failed(self) -> bool:
        return self.complete and self.status_code != STATUS_CODE_OK

    def raise_for_status(self) -> DuResult:
        """Self, or `WorkflowFailed` if the workflow completed with a non-zero status."""
        if self.failed:
            raise WorkflowFailed(self.workflow_id, self.status_code or 0, self.status_message)
        return self


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """What `duroot-stream status` shows: state, vid, counts and times."""

    workflow_id: str
    state: StateCode
    vid: str
    events: int  # events in the history (the next seq)
    lines: int  # du lines (DuUpdated events)
    registry_id: str
    global_root: str
    host: str
    host_root: str
    started_at_ms: int | None
    completed_at_ms: int | None
    status_code: int | None
    status_message: str
    partition: int  # of the events topic


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One record of the events topic, decoded."""

    partition: int
    offset: int
    timestamp_ms: int
    workflow_id: str
    seq: int
    event: WorkflowEvent | None  # None: a tombstone (the history was deleted)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One workflow in the index table: its latest index event, merged with the
    STARTED fields if they are still in the topic (compaction keeps only the latest)."""

    workflow_id: str
    registry_id: str
    latest: WorkflowIndexEvent
    global_root: str | None = None
    host: str | None = None
    host_root: str | None = None
    started_vid: str | None = None
    completed_vid: str | None = None
    status_code: int | None = None
    status_message: str = ""

    @property
    def state(self) -> str:
        """ "active", "completed" or "deleted"."""
        match self.latest.payload:
            case IndexStarted():
                return "active"
            case IndexCompleted():
                return "completed"
            case _:
                return "deleted"

    @property
    def started_at_ms(self) -> int | None:
        return ulid_time_ms(self.started_vid) if self.started_vid else None

    @property
    def completed_at_ms(self) -> int | None:
        return ulid_time_ms(self.completed_vid) if self.completed_vid else None


@dataclass(frozen=True, slots=True)
class Progress:
    """Passed to `get_du(progress=…)` while it waits."""

    workflow_id: str
    lines: int
    state: StateCode


# --- one workflow's history, folded ------------------------------------------------


class _History:
    """The records of one workflow seen so far, folded with the domain's `evolve`.

    Of a run of UPDATED events only the last is folded (when the state is next
    asked for): for an UPDATED, `evolve` only moves the state code, vid and seq,
    and a reader needs nothing else that it changes."""

    def __init__(self, workflow_id: str, codec: Codec) -> None:
        self.workflow_id = workflow_id
        self.codec = codec
        self._folded = initial_state(workflow_id)
        self._last_update: WorkflowEvent | None = None
        self.lines: list[PathUsage] = []
        self.status: DuRootCompleted | None = None
        self.terminated = False  # COMMITTED seen
        self.first_seq: int | None = None  # of the current incarnation (since a deletion)
        self.first_offset = -1
        self.deleted = False  # a tombstone was seen

    @property
    def state(self) -> WorkflowState:
        if self._last_update is not None:
            self._folded = evolve(self._folded, self._last_update)
            self._last_update = None
        return self._folded

    def add(self, msg: Message) -> None:
        value = msg.value()
        if value is None:  # a tombstone: the history up to here was deleted
            self.deleted = True
            self._folded, self._last_update = initial_state(self.workflow_id), None
            self.lines, self.status, self.first_seq, self.terminated = [], None, None, False
            return
        try:
            event = self.codec.decode_event(value)
        except CodecError as exc:
            raise DuRootError(
                f"undecodable event at {msg.topic()}/{msg.partition()}@{msg.offset()}: {exc}"
            ) from None
        if self.first_seq is None:
            self.first_seq, self.first_offset = event.seq, msg.offset() or 0
        payload = event.payload
        if type(payload) is DuUpdated:
            self._last_update = event
            self.lines.append(PathUsage(payload.path, payload.usage))
            return
        self._folded = evolve(self.state, event)
        if type(payload) is DuRootCompleted:
            self.status = payload
        elif type(payload) is DuRootCommitted:
            self.terminated = True

    @property
    def complete(self) -> bool:
        return self.state.code in (StateCode.COMPLETED, StateCode.TERMINATED)

    def result(self) -> DuResult:
        state = self.state
        return DuResult(
            workflow_id=self.workflow_id,
            lines=self.lines,
            vid=state.vid,
            complete=self.complete,
            status_code=self.status.status_code if self.status else None,
            status_message=self.status.status_message if self.status else "",
            state=state.code,
        )


class _Outcome:
    """How one read of a partition ended."""

    DONE = "done"  # TERMINATED, or the end (without wait), or COMPLETED at the end
    PREFIX_MISSING = "prefix-missing"  # the first event found was not seq 0


# --- the reader -----------------------------------------------------------------------


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
    ) -> _History:
        consumer = self._consumer(follow=wait)
        try:
            entry = self._index_anchor(consumer, wf)
            if entry is None:
                raise WorkflowNotFound(wf)
            topic = self.topics.events
            partition = partition_for(wf, self._partition_count(consumer, topic))
            low, high = watermarks(consumer, topic, partition)
            # 2. The first offset at or after the time of the event the index mirrors.
            start = _offset_at(consumer, topic, partition, ulid_time_ms(entry.workflow_event_id))
            start = high if start < 0 else max(start, low)
            step = 0
            while True:
                history = _History(wf, self._codec)
                outcome = self._read_history(
                    consumer, partition, start, start > low, history, wait, deadline, progress
                )
                if outcome == _Outcome.DONE or start <= low:
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
        history: _History,
        wait: bool,
        deadline: float | None,
        progress: Callable[[Progress], None] | None,
    ) -> str:
        """3. Read one workflow's records from `start`; how it ended (`_Outcome`).

        `need_start`: give up as soon as the first event found is not seq 0."""
        prefix = f"{history.workflow_id}/".encode()
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        topic = self.topics.events
        for records, at_end in _scan(consumer, topic, {partition: start}, follow=wait):
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
        for records, _ in _scan(consumer, topic, {partition: _BEGINNING}):
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
            for records, _ in _scan(consumer, topic, dict.fromkeys(range(n), _BEGINNING)):
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
                    table[wf] = _merge(table.get(wf), event)
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
                starts = dict.fromkeys(partitions, _BEGINNING)
            else:  # the end offsets now (OFFSET_END would be resolved later, lazily)
                starts = {p: watermarks(consumer, topic, p)[1] for p in partitions}
            scan = _scan(consumer, topic, starts, follow=follow, stop=stop)
            if positioned is not None:
                positioned.set()
            for records, _ in scan:
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
        return new_consumer(
            self.config,
            **{
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # How long the broker holds a fetch at the end of a partition. The end
                # is known only from an empty fetch, so this is what reaching it costs
                # (librdkafka's default is 500 ms); when following, it is the polling.
                "fetch.wait.max.ms": FOLLOW_FETCH_WAIT_MS if follow else END_FETCH_WAIT_MS,
                # Read a partition as fast as librdkafka can: no back-off when its
                # queue is full, and large fetches.
                "fetch.queue.backoff.ms": 0,
                "max.partition.fetch.bytes": 10 * 1024 * 1024,
            },
        )

    def _partition_count(self, consumer: Consumer, topic: str) -> int:
        # Asked on every new consumer, not cached: the answer also tells librdkafka
        # the partition leaders, which a fresh consumer would otherwise look up
        # lazily after assign() (about half a second).
        count = self._partitions[topic] = topic_partitions(consumer, topic)
        return count


def _merge(previous: IndexEntry | None, event: WorkflowIndexEvent) -> IndexEntry:
    """Fold one index event into the workflow's entry."""
    p = previous
    if p is not None and p.registry_id != event.registry_id:
        p = None
    base = IndexEntry(event.workflow_id, event.registry_id, event)
    payload = event.payload
    match payload:
        case IndexStarted():
            return IndexEntry(
                event.workflow_id,
                event.registry_id,
                event,
                payload.global_root,
                payload.host,
                payload.host_root,
                started_vid=event.workflow_event_id,
            )
        case IndexCompleted() if p is not None:
            return IndexEntry(
                event.workflow_id,
                event.registry_id,
                event,
                p.global_root,
                p.host,
                p.host_root,
                p.started_vid,
                event.workflow_event_id,
                payload.status_code,
                payload.status_message,
            )
        case IndexCompleted():
            return IndexEntry(
                event.workflow_id,
                event.registry_id,
                event,
                completed_vid=event.workflow_event_id,
                status_code=payload.status_code,
                status_message=payload.status_message,
            )
        case IndexDeleted() if p is not None:
            return IndexEntry(
                p.workflow_id,
                p.registry_id,
                event,
                p.global_root,
                p.host,
                p.host_root,
                p.started_vid,
                p.completed_vid,
                p.status_code,
                p.status_message,
            )
    return base


# --- scanning partitions ------------------------------------------------------------

_BEGINNING = -2  # librdkafka's OFFSET_BEGINNING


def _offset_at(consumer: Consumer, topic: str, partition: int, ms: int) -> int:
    """The first offset whose timestamp is >= `ms`; -1 if there is none."""
    try:
        (found,) = consumer.offsets_for_times(
            [TopicPartition(topic, partition, ms)], timeout=METADATA_TIMEOUT_S
        )
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot look up offsets by time in {topic}", exc) from None
    if found.error is not None:
        raise Unavailable(f"cannot look up offsets by time in {topic}: {found.error}")
    return found.offset


def _scan(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    *,
    follow: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[tuple[list[Message], bool]]:
    """Batches of records of `topic` from the partitions and offsets in `starts`,
    each partition in offset order, each with "every partition is at its end now".

    Without `follow` it ends there; with it, it yields (possibly empty) batches
    until `stop` is set or the caller stops iterating. The end is the last stable
    offset (read_committed), reported by librdkafka's partition-EOF events.
    """
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    at_end: set[int] = set()
    wait = FOLLOW_WAIT_S if follow else BATCH_WAIT_S
    while stop is None or not stop.is_set():
        records = []
        for msg in consumer.consume(BATCH, wait):
            err = msg.error()
            if err is None:
                records.append(msg)
                at_end.discard(msg.partition() or 0)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition() or 0)
            else:
                _check(err, topic)
        everywhere = len(at_end) == len(starts)
        yield records, everywhere
        if everywhere and not follow:
            return


def _check(err: KafkaError, topic: str) -> None:
    """Raise for a consumer error that will not go away by itself."""
    if err.fatal() or (not err.retriable() and err.code() in _FATAL_CODES):
        raise Unavailable(f"reading {topic}: {err.str()}")
    log.debug("reading %s: %s", topic, err.str())


_FATAL_CODES = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
