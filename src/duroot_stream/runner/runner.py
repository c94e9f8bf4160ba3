"""The du runner: one per file-server host (nog's nogfsostad role).

It follows the index topic in its own consumer group, `duroot-runner-<host>`
(read_committed, static membership with the group id as instance id, so a
restarted runner takes over at once and a second runner for the same host
fences the first). For each index `DuRootStarted` whose host is its own:

1. Read the workflow's state (`DuRootReader.status`: the workflow's own
   partition). The state, not the offset, decides what to do, so a message
   delivered again after a crash is handled correctly:
   INITIALIZED -> run du (steps 2-4); APPENDING -> it was interrupted: `Fail`
   `du was interrupted`, never re-run; COMPLETED -> `Commit` again, ignoring
   errors; TERMINATED or deleted -> nothing.
2. Check the host root (`du.check_root`): absolute, no NUL, real path inside
   a configured root. Otherwise refuse: log, count, `Fail` with the reason;
   du is never started.
3. Run `du -0 --threshold=T --max-depth=D .` in the root's real path
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
the next start finds those workflows APPENDING (failed as interrupted) or
INITIALIZED (run again).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from duroot_stream import metrics as metrics_mod
from duroot_stream.client.readers import DuRootReader
from duroot_stream.client.requester import (
    CommandRejected,
    DuRootClient,
    Unavailable,
    WorkflowNotFound,
    make_command,
)
from duroot_stream.config import ConfigError, KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Append,
    CommandBody,
    Commit,
    Fail,
    IndexStarted,
    StateCode,
    WorkflowIndexEvent,
)
from duroot_stream.runner import du
from duroot_stream.wire import Codec, CodecError, Topics

log = logging.getLogger("duroot.runner")

T = TypeVar("T")

FAIL_CODE = 1
INTERRUPTED = "du was interrupted"
# Appends are chained (each waits for the previous reply), so their size sets the pace;
# the byte bound keeps an Append well below Kafka's 1 MB message limit.
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_BATCH_BYTES = 900 * 1024
POLL_TIMEOUT_S = 0.2
CONSUME_BATCH = 100
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
_FATAL_CODES = {KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID}


@dataclass(frozen=True)
class RunnerSettings:
    kafka: KafkaConfig
    host: str  # the host name in Init / DuRootStarted this runner serves
    roots: tuple[str, ...]  # du runs only inside these (real paths)
    group_id: str = ""  # default duroot-runner-<host>
    du_command: tuple[str, ...] = ("du",)  # the du executable, possibly behind a wrapper
    threshold: str = du.DEFAULT_THRESHOLD
    max_depth: int = du.DEFAULT_MAX_DEPTH
    timeout_s: float = 3600.0  # per du run
    concurrency: int = 2  # du runs at once
    batch_size: int = DEFAULT_BATCH_SIZE  # paths per Append, at most
    batch_bytes: int = DEFAULT_BATCH_BYTES  # about this many bytes of paths per Append
    stderr_limit: int = du.DEFAULT_STDERR_LIMIT
    command_timeout_s: float = 30.0  # per command, before it is sent again
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.host:
            problems.append("--host is empty")
        if not self.roots:
            problems.append("no --root given")
        problems += [f"--root {r!r} is not an absolute path" for r in self.roots if r[:1] != "/"]
        if not self.du_command:
            problems.append("the du command is empty")
        try:
            du.check_threshold(self.threshold)
        except ValueError as exc:
            problems.append(str(exc))
        for name in ("max_depth", "concurrency", "batch_size", "batch_bytes", "stderr_limit"):
            value = getattr(self, name)
            if value < (0 if name in ("max_depth", "stderr_limit") else 1):
                problems.append(f"{name} {value} is too small")
        if self.timeout_s <= 0 or self.command_timeout_s <= 0:
            problems.append("timeouts must be positive")
        if problems:
            raise ConfigError("runner: " + "; ".join(problems))

    @property
    def group(self) -> str:
        return self.group_id or f"duroot-runner-{self.host}"


# --- which offsets may be committed ------------------------------------------------------


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # offsets handed out, in order
    settled: set[int] = field(default_factory=set)
    committed: int = -1  # the last offset committed (the next one to read)


class OffsetTracker:
    """Per partition, the offsets handed out in order; an offset becomes committable
    once it and every earlier one are settled. Not thread-safe: the runner's main
    loop owns it."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def add(self, partition: int, offset: int) -> None:
        self._parts.setdefault(partition, _Partition()).pending.append(offset)

    def settle(self, partition: int, offset: int) -> None:
        """Mark an offset settled; unknown ones (a partition since revoked) are ignored."""
        part = self._parts.get(partition)
        if part is not None and offset in part.pending:
            part.settled.add(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> the offset to commit (next to read), where it has advanced."""
        out = {}
        for partition, part in self._parts.items():
            point = -1
            while part.pending and part.pending[0] in part.settled:
                offset = part.pending.popleft()
                part.settled.discard(offset)
                point = offset + 1
            if point > part.committed:
                out[partition] = point
        return out

    def committed(self, partition: int, offset: int) -> None:
        part = self._parts.get(partition)
        if part is not None:
            part.committed = max(part.committed, offset)

    def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)

    def unsettled(self) -> int:
        return sum(len(p.pending) - len(p.settled) for p in self._parts.values())


# --- the runner -------------------------------------------------------------------------


class _Stopping(Exception):
    """The runner is stopping: leave the workflow unsettled."""


class _Rejected(Exception):
    """The processor rejected one of our commands: someone else changed the workflow."""


@dataclass
class _Job:
    workflow_id: str
    offsets: list[tuple[int, int]]  # (partition, offset) of the index messages it settles
    future: Future[bool] | None = None


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
        self._stop = threading.Event()
        self._tracker = OffsetTracker()
        self._jobs: dict[str, _Job] = {}  # workflow id -> job in progress
        self._finished: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._runs: set[du.DuRun] = set()  # du processes running, killed on stop
        self._runs_lock = threading.Lock()
        self._paused: bool | None = None  # None: unknown (after an assignment)
        self._consumer: Consumer | None = None
        self._client: DuRootClient | None = None
        self._reader: DuRootReader | None = None

    # --- life cycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Kill running du processes, commit what is settled, leave (any thread)."""
        self._stop.set()
        with self._runs_lock:
            runs = list(self._runs)
        for run in runs:
            run.kill()

    def run(self) -> None:
        """Serve until `stop()`. Raises `Unavailable` for a fatal Kafka error."""
        s = self.settings
        self._client = DuRootClient(s.kafka, timeout=s.command_timeout_s)
        self._reader = DuRootReader(s.kafka, codec=self.codec)
        self._consumer = consumer = self._new_consumer()
        pool = ThreadPoolExecutor(s.concurrency, thread_name_prefix="du-run")
        log.info(
            "runner started",
            extra={"host": s.host, "roots": list(s.roots), "group": s.group},
        )
        try:
            consumer.subscribe(
                [self.topics.index],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stop.is_set():
                for message in _consume(consumer):
                    self._dispatch(message, pool)
                self._collect_finished()
                self._commit()
                self._flow_control()
        finally:
            self.stop()
            pool.shutdown(wait=True)
            self._collect_finished()
            self._commit()
            consumer.close()
            self._client.close()
            log.info("runner stopped", extra={"host": s.host})

    def _new_consumer(self) -> Consumer:
        s = self.settings
        settings = {
            "group.id": s.group,
            # Static membership: a restarted runner takes over its assignment at once,
            # and a second runner for the same host fences the first.
            "group.instance.id": s.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
        try:
            return Consumer(s.kafka.client(**settings))
        except KafkaException as exc:
            raise ConfigError(f"consumer settings: {exc.args[0].str()}") from None

    # --- the main loop --------------------------------------------------------------

    def _dispatch(self, message: Message, pool: ThreadPoolExecutor) -> None:
        error = message.error()
        if error is not None:
            if error.fatal() or error.code() in _FATAL_CODES:
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
        job = self._jobs[wf] = _Job(wf, [(partition, offset)])
        job.future = pool.submit(self._handle, event)
        job.future.add_done_callback(lambda f: self._finished.put((wf, f.result())))

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

    def _collect_finished(self) -> None:
        while True:
            try:
                wf, settled = self._finished.get_nowait()
            except queue.Empty:
                return
            job = self._jobs.pop(wf)
            if settled:
                for partition, offset in job.offsets:
                    self._tracker.settle(partition, offset)

    def _commit(self, partitions: list[int] | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        points = self._tracker.committable()
        if partitions is not None:
            points = {p: o for p, o in points.items() if p in partitions}
        if not points:
            return
        offsets = [TopicPartition(self.topics.index, p, o) for p, o in points.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The offsets stay settled and are committed with the next advance (or
            # delivered again after a restart, which the state check makes harmless).
            log.warning("committing index offsets failed", extra={"error": str(exc)})
            return
        for p, o in points.items():
            self._tracker.committed(p, o)

    def _flow_control(self) -> None:
        """Stop fetching while `concurrency` workflows are in progress. (Polling goes on,
        so the group membership does; paused partitions resume where they stopped.)"""
        consumer = self._consumer
        assert consumer is not None
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
        log.info(
            "index partitions assigned", extra={"partitions": [p.partition for p in partitions]}
        )
        self._paused = None
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [p.partition for p in partitions]
        self._collect_finished()
        self._commit(numbers)  # still ours: commit what is settled
        self._tracker.drop(numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._tracker.drop([p.partition for p in partitions])

    # --- one workflow (in a worker thread) ---------------------------------------------

    def _handle(self, event: WorkflowIndexEvent) -> bool:
        """Bring one started workflow to its end; True when it is settled."""
        wf = event.workflow_id
        try:
            self._handle_state(event)
            return True
        except _Stopping:
            return False
        except _Rejected as exc:
            log.warning(
                "a command was rejected; leaving the workflow", extra={"workflow": wf, "error": exc}
            )
            self.metrics.du_runs.labels("rejected").inc()
            return True
        except Exception as exc:  # a bug: fail the workflow rather than retry forever
            log.exception("runner error", extra={"workflow": wf})
            try:
                self._send(wf, Fail(FAIL_CODE, f"runner error: {exc}"), None)
            except _Stopping:
                return False
            except Exception:
                log.exception("could not fail the workflow", extra={"workflow": wf})
            return True

    def _handle_state(self, event: WorkflowIndexEvent) -> None:
        wf = event.workflow_id
        assert isinstance(event.payload, IndexStarted)
        reader = self._reader
        assert reader is not None
        try:
            status = self._retrying(f"read the state of workflow {wf}", lambda: reader.status(wf))
        except WorkflowNotFound:
            log.info("workflow deleted; nothing to do", extra={"workflow": wf})
            return
        match status.state:
            case StateCode.INITIALIZED:
                self._run_du(wf, event.payload.host_root, status.vid)
            case StateCode.APPENDING:
                log.warning("found an interrupted du run", extra={"workflow": wf})
                self._send(wf, Fail(FAIL_CODE, INTERRUPTED), status.vid)
                self.metrics.du_runs.labels("interrupted").inc()
            case StateCode.COMPLETED:
                log.info("committing a completed workflow again", extra={"workflow": wf})
                with contextlib.suppress(_Rejected):  # ignored, as in nog
                    self._send(wf, Commit(), None)
            case _:
                log.debug("workflow already ended", extra={"workflow": wf})

    def _run_du(self, wf: str, host_root: str, vid: str) -> None:
        s = self.settings
        try:
            cwd = du.check_root(host_root, s.roots)
        except du.RootRefused as exc:
            log.warning(
                "refused to run du",
                extra={"workflow": wf, "host_root": host_root, "reason": exc.reason, "why": exc},
            )
            self.metrics.refusals.labels(exc.reason).inc()
            self._send(wf, Fail(FAIL_CODE, f"refused: {exc}"), vid)
            return
        log.info("du started", extra={"workflow": wf, "host_root": host_root})
        vid, lines, outcome = self._du_and_append(
            wf, vid, du.du_argv(s.du_command, s.threshold, s.max_depth), cwd
        )
        if outcome.ok and lines == 0:
            vid, lines, outcome = self._du_and_append(wf, vid, du.summarize_argv(s.du_command), cwd)
            if outcome.ok and lines == 0:
                outcome = du.DuOutcome(0, outcome.stderr, outcome.duration_s, error="no output")
        extra = {"workflow": wf, "lines": lines, "seconds": round(outcome.duration_s, 3)}
        if outcome.ok:
            self._send(wf, Commit(), vid)
            self.metrics.du_runs.labels("ok").inc()
            log.info("du completed", extra=extra)
        else:
            message = f"du failed: {outcome.describe()}; stderr: {outcome.stderr}"
            self._send(wf, Fail(FAIL_CODE, message), vid)
            self.metrics.du_runs.labels("timeout" if outcome.timed_out else "failed").inc()
            log.warning("du failed", extra={**extra, "error": message})

    def _du_and_append(
        self, wf: str, vid: str, argv: list[str], cwd: str
    ) -> tuple[str, int, du.DuOutcome]:
        """Run du, appending its lines as they come: (vid, lines, outcome)."""
        s = self.settings
        run = du.DuRun(argv, cwd, timeout=s.timeout_s, stderr_limit=s.stderr_limit)
        with self._runs_lock:
            if self._stop.is_set():
                raise _Stopping
            self._runs.add(run)
        self.metrics.active_runs.inc()
        try:
            run.start()
            for batch in run.batches(s.batch_size, s.batch_bytes):
                vid = self._send(wf, Append(tuple(batch)), vid)
                self.metrics.lines_published.inc(len(batch))
            outcome = run.wait()
        finally:
            run.close()
            self.metrics.active_runs.dec()
            with self._runs_lock:
                self._runs.discard(run)
        self.metrics.du_duration.observe(outcome.duration_s)
        if self._stop.is_set():
            raise _Stopping
        return vid, run.lines, outcome

    # --- commands -----------------------------------------------------------------------

    def _send(self, wf: str, body: CommandBody, expected_vid: str | None) -> str:
        """Send one command and wait for its reply: the new vid. `expected_vid=None`:
        no version check. `_Rejected` if the processor refused it; sent again (same
        command id) while nobody answers, until the runner stops."""
        client = self._client
        assert client is not None
        command = make_command(wf, body, expected_vid or NO_VC)
        try:
            return self._retrying(
                f"send {type(body).__name__} for workflow {wf}", lambda: client.send(command)
            )
        except CommandRejected as exc:
            raise _Rejected(f"{type(body).__name__}: {exc}") from exc

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, again after a back-off while it raises `Unavailable`."""
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Stopping
            try:
                return call()
            except Unavailable as exc:
                delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                log.warning(
                    f"cannot {what}; trying again", extra={"error": str(exc), "in_s": delay}
                )
                attempt += 1
                if self._stop.wait(delay):
                    raise _Stopping from None

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


# --- command line ---------------------------------------------------------------------------
