"""One started workflow brought to its end, in a worker thread (steps 1-4 of the
runner, see `runner.py`): the state decides, du runs only in a checked root (in
the very directory checked, `paths.open_root`), its lines go out as chained
`Append`s, then `Commit` or `Fail`."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from duroot_stream import metrics as metrics_mod
from duroot_stream.client import (
    CommandRejected,
    Unavailable,
    WorkflowNotFound,
    WorkflowStatus,
    make_command,
)
from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    CommandBody,
    Commit,
    Fail,
    IndexStarted,
    StateCode,
    WorkflowIndexEvent,
)

from . import du, paths
from .runner_settings import RunnerSettings

log = logging.getLogger("duroot.runner")

T = TypeVar("T")

FAIL_CODE = 1
INTERRUPTED = "du was interrupted"
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class Stopping(Exception):
    """The runner is stopping: leave the workflow unsettled."""


class CommandSender(Protocol):
    def send(self, command: Command) -> str: ...


class StatusReader(Protocol):
    def status(self, workflow_id: str) -> WorkflowStatus: ...


class DuStarts(Protocol):
    """Which workflows du was started for (the runner's du-start marks)."""

    def was_started(self, workflow_id: str) -> bool: ...

    def mark_started(self, workflow_id: str) -> None:
        """Durably, before du starts; `Unavailable` if it could not be recorded."""


class NoMarks:
    """Nothing remembered (tests of one handler): INITIALIZED runs du."""

    def was_started(self, workflow_id: str) -> bool:
        return False

    def mark_started(self, workflow_id: str) -> None:
        return None


class Shutdown:
    """The runner's stop signal and the du processes it kills (any thread)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._runs: set[du.DuRun] = set()
        self._lock = threading.Lock()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.kill()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def running(self, run: du.DuRun) -> Iterator[None]:
        """While `run` runs, a stop kills it; `Stopping` if the stop came first."""
        with self._lock:
            if self._event.is_set():
                raise Stopping
            self._runs.add(run)
        try:
            yield
        finally:
            with self._lock:
                self._runs.discard(run)


class WorkflowHandler:
    def __init__(
        self,
        settings: RunnerSettings,
        metrics: metrics_mod.RunnerMetrics,
        client: CommandSender,
        reader: StatusReader,
        shutdown: Shutdown,
        starts: DuStarts | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client = client
        self._reader = reader
        self._shutdown = shutdown
        self._starts: DuStarts = starts or NoMarks()

    def handle(self, event: WorkflowIndexEvent) -> bool:
        """Bring one started workflow to its end; True when it is settled."""
        wf = event.workflow_id
        try:
            self._by_state(event)
            return True
        except Stopping:
            return False
        except CommandRejected as exc:  # someone else changed the workflow
            command = type(exc.command.body).__name__ if exc.command else None
            log.warning(
                "a command was rejected; leaving the workflow",
                extra={
                    "workflow": wf,
                    "command": command,
                    "code": exc.rejected.code.value,
                    "error": exc.rejected.message,
                },
            )
            self.metrics.du_runs.labels("rejected").inc()
            return True
        except Exception as exc:  # a bug: fail the workflow rather than retry forever
            log.exception("runner error", extra={"workflow": wf})
            self.metrics.errors.labels("failed").inc()
            try:
                self._send(wf, Fail(FAIL_CODE, f"runner error: {exc}"), None)
            except Stopping:
                return False
            except Exception:
                log.exception("could not fail the workflow", extra={"workflow": wf})
            return True

    # 1. The state, not the offset, decides: a record delivered again is handled right.
    def _by_state(self, event: WorkflowIndexEvent) -> None:
        wf = event.workflow_id
        assert isinstance(event.payload, IndexStarted)
        try:
            status = self._retrying(
                f"read the state of workflow {wf}", lambda: self._reader.status(wf)
            )
        except WorkflowNotFound:
            log.info("workflow deleted; nothing to do", extra={"workflow": wf})
            return
        match status.state:
            case StateCode.INITIALIZED if not self._starts.was_started(wf):
                self._run_du(wf, event.payload.host_root, status.vid)
            case StateCode.INITIALIZED | StateCode.APPENDING:
                # Started before (marked, or lines appended) and interrupted: never re-run.
                log.warning(
                    "found an interrupted du run",
                    extra={"workflow": wf, "state": status.state.name},
                )
                self._send(wf, Fail(FAIL_CODE, INTERRUPTED), status.vid)
                self.metrics.du_runs.labels("interrupted").inc()
            case StateCode.COMPLETED:
                log.info("committing a completed workflow again", extra={"workflow": wf})
                with contextlib.suppress(CommandRejected):  # ignored, as in nog
                    self._send(wf, Commit(), None)
            case _:
                log.debug("workflow already ended", extra={"workflow": wf})

    def _run_du(self, wf: str, host_root: str, vid: str) -> None:
        s = self.settings
        # 2. The root check: du never starts outside the configured roots, and runs in
        # exactly the directory checked, whatever happens to its path meanwhile.
        try:
            root = paths.open_root(host_root, s.roots)
        except paths.RootRefused as exc:
            log.warning(
                "refused to run du",
                extra={"workflow": wf, "host_root": host_root, "reason": exc.reason, "why": exc},
            )
            self.metrics.refusals.labels(exc.reason).inc()
            self._send(wf, Fail(FAIL_CODE, f"refused: {exc}"), vid)
            return
        except OSError as exc:  # missing, not a directory, not searchable: as du would fail
            error = f"cannot enter {exc.filename!r}: {exc.strerror}"
            self._settle(wf, vid, 0, du.DuOutcome(None, "", 0.0, error=error))
            return
        with contextlib.closing(root):
            # Durable before du starts: a crash from here on fails the workflow as
            # interrupted instead of running du a second time.
            self._retrying(
                f"record that du starts for workflow {wf}", lambda: self._starts.mark_started(wf)
            )
            if s.before_du is not None:
                s.before_du(host_root)
            log.info("du started", extra={"workflow": wf, "host_root": host_root})
            vid, lines, outcome = self._du_in(wf, vid, root)
        self._settle(wf, vid, lines, outcome)

    def _du_in(self, wf: str, vid: str, root: paths.OpenedRoot) -> tuple[str, int, du.DuOutcome]:
        """3. du, its lines appended while it runs; `--summarize` if it printed nothing."""
        s = self.settings
        argv = du.du_argv(s.du_command, s.threshold, s.max_depth, s.one_file_system)
        vid, lines, outcome = self._du_and_append(wf, vid, argv, root)
        if outcome.ok and lines == 0:
            argv = du.summarize_argv(s.du_command, s.one_file_system)
            vid, lines, outcome = self._du_and_append(wf, vid, argv, root)
            if outcome.ok and lines == 0:
                outcome = du.DuOutcome(0, outcome.stderr, outcome.duration_s, error="no output")
        return vid, lines, outcome

    def _settle(self, wf: str, vid: str, lines: int, outcome: du.DuOutcome) -> None:
        """4. Commit, or Fail with du's error and stderr."""
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
        self, wf: str, vid: str, argv: list[str], root: paths.OpenedRoot
    ) -> tuple[str, int, du.DuOutcome]:
        """Run du, appending its lines as they come: (vid, lines, outcome)."""
        s = self.settings
        run = du.DuRun(argv, root, timeout=s.timeout_s, stderr_limit=s.stderr_limit)
        with self._shutdown.running(run):
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
        self.metrics.du_duration.observe(outcome.duration_s)
        if self._shutdown.is_set():
            raise Stopping
        return vid, run.lines, outcome

    # --- commands ---------------------------------------------------------------------

    def _send(self, wf: str, body: CommandBody, expected_vid: str | None) -> str:
        """Send one command and wait for its reply: the new vid. `expected_vid=None`:
        no version check. `CommandRejected` if the processor refused it; sent again
        (same command id) while nobody answers, until the runner stops."""
        command = make_command(wf, body, expected_vid or NO_VC)
        return self._retrying(
            f"send {type(body).__name__} for workflow {wf}", lambda: self._client.send(command)
        )

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, again after a back-off while it raises `Unavailable`."""
        attempt = 0
        while True:
            if self._shutdown.is_set():
                raise Stopping
            try:
                return call()
            except Unavailable as exc:
                delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                log.warning(
                    f"cannot {what}; trying again", extra={"error": str(exc), "in_s": delay}
                )
                attempt += 1
                if self._shutdown.wait(delay):
                    raise Stopping from None
