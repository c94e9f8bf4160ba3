"""Processor instances as real processes (the `duroot-stream processor` CLI), and the chaos.

`Supervisor` owns every process it starts and kills what is left in `close()`, so a
failing test never leaves a processor behind. It runs one chaos policy at a time in
a thread. Faults are scheduled by progress (the share of the load answered), never
by wall time, and the load waits at each fault's point until the fault has begun
(`ceiling`), so a run of any size and speed gets every one of them:

- `kill_storm`: at each point SIGKILL a random instance and start it again with the
  same `--instance-id` (so it aborts what its predecessor left open);
- `churn`: at each point an instance joins (start) or leaves (SIGTERM, a clean
  shutdown);
- `at_progress`: any other fault (the broker restart) at each point.

Every fault injected is recorded in `faults`. A watcher thread notices exits nobody
asked for (a crash, a fatal error) and records them in `unexpected_exits`; with
`restart_crashed` it starts the instance again so the run can finish and the test
can still report everything else.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from duroot_stream.processor.kafka_clients import TRANSACTION_TIMEOUT_MS
from tests.kafka_helpers import wait_until

CLI = str(Path(sys.executable).with_name("duroot-stream"))
ROOT = Path(__file__).resolve().parents[2]  # where `tests` is a package
TXN_TIMEOUT_X = "transaction.timeout.ms="
TERM_TIMEOUT_S = 90.0  # above the processor's own hung-call exit (60 s)
# Exit 0 after SIGTERM; or killed by it when it came before the handler was installed
# (an instance still importing, just restarted by the storm, has nothing to finish).
CLEAN_EXITS = (0, -signal.SIGTERM)


@dataclass
class ProcessorProcess:
    """One `duroot-stream processor --instance-id ID` process, restartable. With
    `fault` (its options), the processor runs with that test fault
    (tests/reliability/faulty_processor.py)."""

    instance_id: str
    bootstrap: str
    topic_prefix: str
    log_dir: Path
    extra_args: tuple[str, ...] = ()
    fault: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    expected_exit: bool = False  # we killed or stopped it (reset by start)
    reported: bool = False  # the watcher has seen this exit (reset by start)
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"processor-{self.instance_id}.log"

    def start(self) -> None:
        assert not self.running, f"{self.instance_id} is already running"
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in close())
        self._log.write(f"--- start {self.starts + 1} at {time.strftime('%X')}\n".encode())
        self._log.flush()
        launcher = (
            [sys.executable, "-m", "tests.reliability.faulty_processor", *self.fault, "--"]
            if self.fault
            else [CLI]
        )
        self.process = subprocess.Popen(
            [
                *launcher,
                "processor",
                "--instance-id",
                self.instance_id,
                "-b",
                self.bootstrap,
                "--topic-prefix",
                self.topic_prefix,
                "--standbys",  # every scenario runs with warm standbys
                "1",
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # stacks on SIGABRT (a hang)
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals only, never the terminal's
        )
        self.starts += 1
        self.expected_exit = self.reported = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no commit, no leaving the group, an open transaction left behind."""
        self.expected_exit = True
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = TERM_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; the exit code, or None if it hung (it is killed then)."""
        self.expected_exit = True
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Hung: SIGABRT makes faulthandler write every thread's stack to the log.
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            self.kill()
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True)
class Exit:
    instance_id: str
    returncode: int | None
    at: float  # seconds since the supervisor started
    what: str  # "crashed" | "SIGTERM exit code N" | "hung on SIGTERM"


@dataclass(frozen=True)
class Fault:
    what: str  # "SIGKILL a", "join c", "leave b", "broker SIGTERM", ...
    progress: float  # share of the load answered when it was injected
    at: float  # seconds since the supervisor started


Policy = Callable[[threading.Event], None]
PROGRESS_POLL_S = 0.05  # how often a scheduled fault looks at the progress
CHAOS_STOP_S = TERM_TIMEOUT_S + 10  # a fault under way may SIGTERM an instance


@dataclass
class Supervisor:
    bootstrap: str
    topic_prefix: str
    log_dir: Path
    rng: random.Random
    progress: Callable[[], float]  # share of the load answered, 0..1
    restart_crashed: bool = True
    extra_args: tuple[str, ...] = ()
    instances: dict[str, ProcessorProcess] = field(default_factory=dict)
    kills: int = 0
    joins: int = 0
    leaves: int = 0
    unexpected_exits: list[Exit] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run by close()

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._chaos_stop = threading.Event()
        self._chaos: threading.Thread | None = None
        self.chaos_errors: list[BaseException] = []
        self._ceiling = 1.0  # see `ceiling`
        self._held_at = 1.0  # see `hold_load`
        watcher = threading.Thread(target=self._watch, name="supervisor-watch", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    # --- instances --------------------------------------------------------------

    def start(self, instance_id: str) -> ProcessorProcess:
        with self._lock:
            proc = self.instances.get(instance_id)
            if proc is None:
                proc = ProcessorProcess(
                    instance_id, self.bootstrap, self.topic_prefix, self.log_dir, self.extra_args
                )
                self.instances[instance_id] = proc
            proc.start()
            return proc

    def running(self) -> list[ProcessorProcess]:
        with self._lock:
            return [p for p in self.instances.values() if p.running]

    def kill_and_restart(self, proc: ProcessorProcess) -> None:
        with self._lock:
            proc.kill()
            self.kills += 1
            proc.start()

    def leave(self, proc: ProcessorProcess) -> None:
        """SIGTERM: the instance commits, leaves the group and must exit 0."""
        with self._lock:
            code = proc.terminate()
            self.leaves += 1
            if code not in CLEAN_EXITS:
                what = "hung on SIGTERM" if code is None else f"SIGTERM exit code {code}"
                self.unexpected_exits.append(Exit(proc.instance_id, code, self._now(), what))

    def stop_all(self) -> None:
        """Clean shutdown of every running instance (SIGTERM, in parallel)."""
        self.stop_chaos()
        with self._lock:
            running = self.running()
            for proc in running:
                assert proc.process is not None
                proc.expected_exit = True
                proc.process.send_signal(signal.SIGTERM)
            for proc in running:
                code = proc.terminate()
                if code not in CLEAN_EXITS:
                    what = "hung on SIGTERM" if code is None else f"SIGTERM exit code {code}"
                    self.unexpected_exits.append(Exit(proc.instance_id, code, self._now(), what))

    def close(self) -> None:
        """Kill every instance still running, also when the chaos thread failed."""
        try:
            self.stop_chaos()
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(10)
            with self._lock:
                for proc in self.instances.values():
                    proc.close()
            for cleanup in self.cleanups:
                cleanup()

    def _now(self) -> float:
        return round(time.monotonic() - self._started, 1)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for proc in self.instances.values():
                    if proc.process is None or proc.process.poll() is None:
                        continue
                    if proc.expected_exit or proc.reported:
                        continue
                    proc.reported = True
                    self.unexpected_exits.append(
                        Exit(proc.instance_id, proc.process.returncode, self._now(), "crashed")
                    )
                    if self.restart_crashed and not self._stop.is_set():
                        proc.start()

    # --- chaos ------------------------------------------------------------------

    def run_chaos(self, policy: Policy) -> None:
        """Run `policy(stop_event)` in a thread until `stop_chaos()`."""
        assert self._chaos is None, "one chaos policy at a time"

        def target() -> None:
            try:
                policy(self._chaos_stop)
            except BaseException as exc:  # surfaced by stop_chaos
                self.chaos_errors.append(exc)

        self._chaos = threading.Thread(target=target, name="chaos", daemon=True)
        self._chaos.start()

    def ceiling(self) -> float:
        """The share of the load that may be answered for now (the load's driver sends no
        more): a fault under way holds the load at the next fault's point, so that a slow
        fault (a takeover waiting for a transaction) cannot let the load run past the
        points still to come, or to its end, with faults not yet injected."""
        return min(self._ceiling, self._held_at)

    def hold_load(self, held: bool = True) -> None:
        """Send no more of the load until `hold_load(False)`: a fault whose steps would
        let one instance's partitions run ahead of another's holds it meanwhile."""
        self._held_at = self.progress() if held else 1.0

    def stop_chaos(self) -> None:
        """Stop the policy; raise what it raised, or that it did not stop (a fault still
        waiting: its own deadline would raise later, unseen)."""
        self._chaos_stop.set()
        self._ceiling = self._held_at = 1.0
        chaos, self._chaos = self._chaos, None
        if chaos is not None:
            chaos.join(CHAOS_STOP_S)
        if self.chaos_errors:
            raise self.chaos_errors[0]
        if chaos is not None and chaos.is_alive():
            raise AssertionError(
                f"the chaos policy did not stop within {CHAOS_STOP_S:.0f} s after the load "
                f"ended: a fault still waits ({len(self.faults)} injected)\n{self.diagnostics()}"
            )

    def at_progress(self, points: Sequence[float], fault: Callable[[], str]) -> Policy:
        """`fault()` once when each share of `points` of the load is answered; it says
        what it did. Until a fault has begun, the load is held at its point
        (`ceiling`), so every fault finds load left to disturb. The run's own deadline
        bounds the waits: it ends in `stop`."""

        def policy(stop: threading.Event) -> None:
            shares = sorted(points)
            self._ceiling = shares[0] if shares else 1.0
            try:
                for i, share in enumerate(shares):
                    while self.progress() < share:
                        if stop.wait(PROGRESS_POLL_S):
                            return
                    reached, at = self.progress(), self._now()
                    if reached >= 1.0:
                        return
                    self._ceiling = shares[i + 1] if i + 1 < len(shares) else 1.0
                    what = fault()
                    self.faults.append(Fault(what, round(reached, 3), at))
            finally:
                self._ceiling = 1.0

        return policy

    def kill_storm(self, points: Sequence[float]) -> Policy:
        """At each point: SIGKILL a random running instance, start it again."""

        def kill() -> str:
            # Outside the lock: the watcher may be restarting a crashed instance.
            running = wait_until(self.running, timeout=60, what="a running instance to kill")
            proc = self.rng.choice(running)
            self.kill_and_restart(proc)
            return f"SIGKILL {proc.instance_id}"

        return self.at_progress(points, kill)

    def churn(self, points: Sequence[float], ids: list[str], low: int = 1, high: int = 3) -> Policy:
        """At each point an instance from `ids` joins or leaves (SIGTERM), keeping
        between `low` and `high` of them running: from the middle, two points are
        enough for a join and a leave."""

        def change() -> str:
            with self._lock:
                running = self.running()
                idle = [i for i in ids if i not in {p.instance_id for p in running}]
                if len(running) < high and (len(running) <= low or self.rng.random() < 0.5):
                    joining = self.rng.choice(idle)
                    self.start(joining)
                    self.joins += 1
                    return f"join {joining}"
                leaving = self.rng.choice(running)
                self.leave(leaving)
                return f"leave {leaving.instance_id}"

        return self.at_progress(points, change)

    def transaction_timeout_s(self) -> float:
        """The longest transaction timeout of the instances: a `-X` override, or the
        processor's own."""
        args = [*self.extra_args, *(a for p in self.instances.values() for a in p.extra_args)]
        set_ms = [int(a.split("=", 1)[1]) for a in args if a.startswith(TXN_TIMEOUT_X)]
        return max([TRANSACTION_TIMEOUT_MS, *set_ms]) / 1000

    def diagnostics(self) -> str:
        parts = [
            f"faults={self.faults} unexpected_exits={self.unexpected_exits}",
        ]
        for proc in self.instances.values():
            parts.append(f"--- {proc.log_path} (tail)\n{proc.log_tail()}")
        return "\n".join(parts)


def line_since(log: Path, mark: int, *needles: str) -> str | None:
    """The first line of `log` after byte `mark` that holds one of `needles`."""
    with log.open("rb") as f:
        f.seek(mark)
        for raw in f:
            line = raw.decode(errors="replace")
            if any(needle in line for needle in needles):
                return line.rstrip()
    return None
