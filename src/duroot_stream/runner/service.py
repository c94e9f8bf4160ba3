"""The du runner: one per file-server host (nog's nogfsostad role).

It follows the index topic in its own consumer group, `duroot-runner-<host>`
(read_committed, static membership with the group id as instance id, so a
restarted runner takes over at once and a second runner for the same host
fences the first). For each index `DuRootStarted` whose host is its own:

1. Read the workflow's state (`DuRootReader.status`: the workflow's own
   partition). The state, not the offset, decides what to do, so a message
   delivered again after a crash is handled correctly:
   INITIALIZED -> run du (steps 2-4), unless a du was started for it before
   (its du-start mark, below); APPENDING, or INITIALIZED and marked -> it was
   interrupted: `Fail` `du was interrupted`, never re-run; COMPLETED -> `Commit`
   again, ignoring errors; TERMINATED or deleted -> nothing.
2. Check and open the host root (`paths.open_root`): absolute, no NUL, real
   path inside a configured root; opened without the kernel following a
   symlink, and the directory held checked again. Otherwise refuse: log,
   count, `Fail` with the reason; du is never started.
3. Mark the workflow du-started, durably (`DuStartMarks`: the metadata of the
   index offset commit, which the next runner reads when it is assigned the
   partition), then run `du -0 --threshold=T --max-depth=D .` in exactly that directory
   (`du.DuRun`: argument list, `LC_ALL=C.UTF-8`, a time limit) and publish
   its lines as `Append` batches while it runs, each carrying the vid of the
   previous reply as `expected_vid`. If du printed nothing, one `du -0
   --summarize .` line.
4. `Commit`; or, if du failed, `Fail` code 1 `du failed: <error>; stderr:
   <stderr>`.
5. Only then is the message's offset committable, and an offset is committed
   only when it and every earlier offset of its partition are settled
   (`OffsetTracker`): several du runs proceed at once (`concurrency`), and a
   crash re-delivers whatever was not finished, never loses it.

Commands go through `DuRootClient`; when Kafka or the processor does not
answer, the same command (same command id, so the processor applies it once)
is sent again until it is answered or the runner stops. A rejected command
(the workflow was aborted or changed by someone else) ends the run: du is
killed, the workflow is left as it is.

Stopping kills the running du processes and commits only settled offsets;
the next start finds those workflows APPENDING or marked du-started, and fails
them as interrupted: du is never run twice for a workflow. (nog runs du again for
a workflow found INITIALIZED; a du killed before its first line left no trace
there.)

Steps 1-4 run in a worker thread (`workflow.py`), step 5 and the commit of the
marks here with `offsets.py`. Whatever a job raises, it settles: an error past the handler's
own (a bug) is logged with the workflow id and counted
(`duroot_runner_errors_total{action="left"}`), and the workflow is left as it
is for the state check when its record is read again; otherwise that
partition's commits would stall behind it for good.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from duroot_stream import metrics as metrics_mod
from duroot_stream.client import DuRootClient, DuRootReader, Unavailable
from duroot_stream.domain import IndexStarted, WorkflowIndexEvent
from duroot_stream.kafka import Triage, new_consumer, polled
from duroot_stream.wire import Codec, CodecError, Topics

from .offsets import DuStartMarks, OffsetTracker
from .runner_settings import RunnerSettings
from .workflow import Shutdown, Stopping, WorkflowHandler

log = logging.getLogger("duroot.runner")

POLL_TIMEOUT_S = 0.2
CONSUME_BATCH = 100


@dataclass
class _Job:
    workflow_id: str
    offsets: list[tuple[int, int]]  # (partition, offset) of the index records it settles


@dataclass
class _MarkRequest:
    """A worker asks the main loop to commit a du-start mark; `done` once tried."""

    workflow_id: str
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""  # the commit failed
    gone: bool = False  # the job is gone


class Runner:
    def __init__(
        self,
        settings: RunnerSettings,
        metrics: metrics_mod.RunnerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or metrics_mod.RunnerMetrics()
        self.topics = Topics(settings.kafka.topic_prefix)
        self.codec = Codec(settings.kafka.schema_registry_url)
        self.ready = threading.Event()  # set once the first assignment arrived
        self._shutdown = Shutdown()
        self._tracker = OffsetTracker()
        self._marks = DuStartMarks()
        self._mark_requests: queue.SimpleQueue[_MarkRequest] = queue.SimpleQueue()
        self._deferred: list[_MarkRequest] = []
        self._assigned: set[int] = set()
        self._jobs: dict[str, _Job] = {}  # workflow id -> job in progress
        self._finished: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._paused: bool | None = None  # None: unknown (after an assignment)

    # --- life cycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Kill running du processes, commit what is settled, leave (any thread)."""
        self._shutdown.set()

    def run(self) -> None:
        """Serve until `stop()`. Raises `Unavailable` for a fatal Kafka error."""
        s = self.settings
        client = DuRootClient(s.kafka, timeout=s.command_timeout_s)
        reader = DuRootReader(s.kafka, codec=self.codec)
        handler = WorkflowHandler(s, self.metrics, client, reader, self._shutdown, self)
        try:
            consumer = new_consumer(
                s.kafka,
                **{
                    "group.id": s.group,
                    # Static membership: a restarted runner takes over its assignment at
                    # once, and a second runner for the same host fences the first.
                    "group.instance.id": s.group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    # Index records held back by an open transaction, for the
                    # stalled-last-stable-offset alert.
                    "statistics.interval.ms": 5_000,
                    "stats_cb": self.metrics.on_index_statistics,
                },
            )
        except BaseException:
            client.close()
            raise
        pool = ThreadPoolExecutor(s.concurrency, thread_name_prefix="du-run")

        def start(event: WorkflowIndexEvent) -> None:
            pool.submit(self._job, handler, event)

        log.info("runner started", extra={"host": s.host, "roots": list(s.roots), "group": s.group})
        try:
            consumer.subscribe(
                [self.topics.index],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._shutdown.is_set():
                for message in _consume(consumer):
                    self._dispatch(message, start)
                self._collect_finished()
                self._apply_marks(consumer)
                self._commit(consumer)
                self._flow_control(consumer)
        finally:
            self.stop()
            pool.shutdown(wait=True)
            self._collect_finished()
            self._commit(consumer)
            consumer.close()
            client.close()
            log.info("runner stopped", extra={"host": s.host})

    # --- the main loop --------------------------------------------------------------

    def _dispatch(self, message: Message, start: Callable[[WorkflowIndexEvent], None]) -> None:
        error = message.error()
        if error is not None:
            if polled(error) is Triage.FATAL:
                # Typically fenced: another runner for this host (same group.instance.id).
                raise Unavailable(f"reading {self.topics.index}: {error.str()}; stopping")
            log.warning("index consumer", extra={"error": error.str()})
            return
        partition, offset = message.partition() or 0, message.offset() or 0
        self._tracker.add(partition, offset)
        event = self._started_here(message)
        if event is None:
            self._tracker.settle(partition, offset)
            return
        wf = event.workflow_id
        job = self._jobs.get(wf)
        if job is not None:  # delivered again while we still run it (a rebalance)
            job.offsets.append((partition, offset))
            return
        self._jobs[wf] = _Job(wf, [(partition, offset)])
        start(event)

    def _started_here(self, message: Message) -> WorkflowIndexEvent | None:
        """The index event if it is a DuRootStarted for this host, else None."""
        value = message.value()
        if value is None:  # a tombstone
            return None
        try:
            event = self.codec.decode_index_event(value)
        except CodecError as exc:
            log.warning(
                "skipping an undecodable index record",
                extra={"partition": message.partition(), "offset": message.offset(), "error": exc},
            )
            return None
        payload = event.payload
        if not isinstance(payload, IndexStarted) or payload.host != self.settings.host:
            return None
        return event

    def _job(self, handler: WorkflowHandler, event: WorkflowIndexEvent) -> None:
        """One workflow, in a worker thread. It always settles, whatever it raises."""
        wf = event.workflow_id
        settled = True
        try:
            settled = handler.handle(event)
        except BaseException:
            # Past the handler's own `except` (a bug): leave the workflow as it is; the
            # state decides if its index record is read again.
            self.metrics.errors.labels("left").inc()
            log.exception("runner error; leaving the workflow as it is", extra={"workflow": wf})
        finally:
            self._finished.put((wf, settled))

    def _collect_finished(self) -> None:
        while True:
            try:
                wf, settled = self._finished.get_nowait()
            except queue.Empty:
                return
            job = self._jobs.pop(wf)
            if settled:
                self._marks.discard(wf)
                for partition, offset in job.offsets:
                    self._tracker.settle(partition, offset)

    def _apply_marks(self, consumer: Consumer) -> None:
        """Commit the du-start marks the workers asked for (du waits for this). One
        of a partition not ours at the moment (in a rebalance) waits until it is."""
        requests, self._deferred = self._deferred, []
        while True:
            try:
                requests.append(self._mark_requests.get_nowait())
            except queue.Empty:
                break
        for request in requests:
            wf = request.workflow_id
            job = self._jobs.get(wf)
            if job is None:
                request.gone = True
                request.done.set()
                continue
            partition = job.offsets[0][0]
            if partition in self._assigned:
                self._marks.add(partition, wf)
                error = self._commit(consumer, [partition])
                if error is not None:  # du does not start: no mark left behind
                    self._marks.discard(wf)
                    request.error = error
                if error is not None or self._marks.durable(partition, wf):
                    request.done.set()
                    continue
            self._deferred.append(request)

    def _commit(self, consumer: Consumer, partitions: list[int] | None = None) -> str | None:
        """Commit the settled offsets, and the marks where they changed; the error."""
        points = self._tracker.committable()
        for p in self._marks.dirty() - points.keys():
            at = self._tracker.position(p)
            if at is not None:  # the offset unchanged, only the marks
                points[p] = at
        if partitions is not None:
            points = {p: o for p, o in points.items() if p in partitions}
        if not points:
            return None
        marks = {p: self._marks.metadata(p) for p in points}
        offsets = [
            TopicPartition(self.topics.index, p, o, metadata=marks[p]) for p, o in points.items()
        ]
        try:
            done = consumer.commit(offsets=offsets, asynchronous=False) or []
            failed = [tp for tp in done if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except KafkaException as exc:
            # The offsets stay settled and are committed with the next advance (or
            # delivered again after a restart, which the state check makes harmless).
            log.warning("committing index offsets failed", extra={"error": str(exc)})
            return f"committing index offsets: {exc}"
        for p, o in points.items():
            self._tracker.committed(p, o)
            self._marks.committed(p, marks[p])
        return None

    def _flow_control(self, consumer: Consumer) -> None:
        """Stop fetching while `concurrency` workflows are in progress. (Polling goes on,
        so the group membership does; paused partitions resume where they stopped.)"""
        full = len(self._jobs) >= self.settings.concurrency
        if full == self._paused:
            return
        assignment = consumer.assignment()
        if assignment:
            if full:
                consumer.pause(assignment)
            else:
                consumer.resume(assignment)
        self._paused = full

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [p.partition for p in partitions]
        log.info("index partitions assigned", extra={"partitions": numbers})
        # The marks a previous runner left: which workflows du was started for.
        try:
            committed = consumer.committed(partitions, timeout=30) if partitions else []
        except KafkaException as exc:
            raise Unavailable(
                f"reading the committed offsets (du-start marks) of {self.topics.index}: "
                f"{exc}; stopping, a restart tries again"
            ) from exc
        for tp in committed:
            self._marks.load(tp.partition, tp.metadata)
        self._assigned |= set(numbers)
        self._paused = None
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [p.partition for p in partitions]
        self._collect_finished()
        self._apply_marks(consumer)
        self._commit(consumer, numbers)  # still ours: commit what is settled
        self._forget(numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([p.partition for p in partitions])

    def _forget(self, numbers: list[int]) -> None:
        self._tracker.drop(numbers)
        self._marks.drop(numbers)
        self._assigned -= set(numbers)

    # --- du-start marks, for the workers (workflow.DuStarts) --------------------------

    def was_started(self, workflow_id: str) -> bool:
        """Did a previous runner start du for this workflow (and not settle it)?"""
        return self._marks.was_started(workflow_id)

    def mark_started(self, workflow_id: str) -> None:
        """Record durably that du starts for the workflow; returns once committed.
        `Unavailable` if the commit failed; `Stopping` if the runner stops."""
        request = _MarkRequest(workflow_id)
        self._mark_requests.put(request)
        while not request.done.wait(POLL_TIMEOUT_S):
            if self._shutdown.is_set():
                raise Stopping
        if request.gone:
            raise Stopping
        if request.error:
            raise Unavailable(request.error)

    # --- for tests and status ---------------------------------------------------------------

    @property
    def in_progress(self) -> int:
        return len(self._jobs)


def _consume(consumer: Consumer) -> list[Message]:
    """The next message (waiting up to POLL_TIMEOUT_S) and whatever else is ready.
    (`consume(n, timeout)` alone would wait the whole timeout for n messages.)"""
    first = consumer.poll(POLL_TIMEOUT_S)
    if first is None:
        return []
    return [first, *consumer.consume(CONSUME_BATCH, 0)]
