"""Running `du` on a host root and reading its output; no Kafka here.

- `du_argv` / `summarize_argv` / `check_threshold`: the argument lists.
  du crosses mount points below the root unless `one_file_system` (`-x`).
- `parse_record` / `parse_output`: NUL-terminated `<KiB>\\t<path>` records
  -> `PathUsage` (paths escaped with `paths.escape_path`).
- `DuRun`: one `du` process (argument list, no shell, `LC_ALL=C.UTF-8`, its
  own session, a time limit), run in a path or in exactly the directory an
  `OpenedRoot` holds. Its records are parsed as they arrive and
  handed out in batches; stderr is kept up to a limit.

The path escape and the root checks are in `paths`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from duroot_stream.domain import PathUsage

from .paths import OpenedRoot, escape_path

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_STDERR_LIMIT",
    "DEFAULT_THRESHOLD",
    "PATH_OVERHEAD",
    "DuOutcome",
    "DuOutputError",
    "DuRun",
    "check_threshold",
    "du_argv",
    "du_environment",
    "parse_output",
    "parse_record",
    "run_to_end",
    "summarize_argv",
]

DEFAULT_THRESHOLD = "10G"
DEFAULT_MAX_DEPTH = 3
DEFAULT_STDERR_LIMIT = 4096  # bytes of stderr kept for the Fail message
READ_SIZE = 256 * 1024
# Parsed lines waiting for the publisher, at most about this many bytes of paths;
# when publishing is slower than du, du then blocks on its full pipe.
BUFFER_BYTES = 8 * 1024 * 1024
# Avro bytes of one PathUsage besides the path, at most: the path's length
# (a varint, 3 bytes up to 2 MiB) and the usage (a varint, up to 10 bytes).
PATH_OVERHEAD = 13

_THRESHOLD_RE = re.compile(r"-?[0-9]+([KMGTPEZYRQ](iB|B)?|B)?")


# --- parsing du output ---------------------------------------------------------------


class DuOutputError(ValueError):
    """du printed a record that is not `<KiB>\\t<path>`."""


def parse_record(record: bytes) -> PathUsage:
    """One NUL-terminated du record (without the NUL) -> PathUsage: usage = KiB x 1024,
    a leading `./` stripped, an empty path becomes `.`."""
    size, tab, path = record.partition(b"\t")
    if not tab or not size.isdigit():
        shown = record[:80].decode("utf-8", "backslashreplace")
        raise DuOutputError(f"unexpected du output {shown!r}: expected <KiB>\\t<path>")
    if path.startswith(b"./"):
        path = path[2:]
    return PathUsage(escape_path(path) if path else ".", int(size) * 1024)


def parse_output(output: bytes) -> list[PathUsage]:
    """All records of a complete `du -0` output."""
    records = output.split(b"\0")
    if records and records[-1] == b"":
        records.pop()
    return [parse_record(r) for r in records]


def du_argv(
    du_command: Sequence[str],
    threshold: str = DEFAULT_THRESHOLD,
    max_depth: int = DEFAULT_MAX_DEPTH,
    one_file_system: bool = False,
) -> list[str]:
    """`du -0 [-x] --threshold=T --max-depth=D .`, after `du_command` (the du
    executable, possibly behind a wrapper such as `setpriv --reuid=…`)."""
    limits = [f"--threshold={threshold}", f"--max-depth={max_depth}"]
    return [*du_command, *_options(one_file_system), *limits, "."]


def summarize_argv(du_command: Sequence[str], one_file_system: bool = False) -> list[str]:
    """`du -0 [-x] --summarize .`: the one line used when du printed nothing."""
    return [*du_command, *_options(one_file_system), "--summarize", "."]


def _options(one_file_system: bool) -> list[str]:
    return ["-0", "-x"] if one_file_system else ["-0"]


def check_threshold(threshold: str) -> str:
    """`threshold` if du would take it as a SIZE (e.g. `10G`, `0`, `-1M`); ValueError else."""
    if _THRESHOLD_RE.fullmatch(threshold) is None:
        raise ValueError(f"threshold {threshold!r} is not a du SIZE such as 10G, 512M or 0")
    return threshold


# --- one du process ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DuOutcome:
    """How a du process ended."""

    returncode: int | None  # None: it could not be started
    stderr: str  # at most the stderr limit, then "…[N more bytes]"
    duration_s: float
    timed_out: bool = False
    error: str = ""  # why it failed, when that is not just the exit code

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.error

    def describe(self) -> str:
        """The `<error>` of `du failed: <error>; stderr: <stderr>`."""
        if self.error:
            return self.error
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f} s"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"killed by {name}"
        return f"exit status {self.returncode}"


def du_environment() -> dict[str, str]:
    """du's whole environment: `LC_ALL=C.UTF-8` and `PATH`. Nothing else, so that
    `BLOCK_SIZE`, `DU_BLOCK_SIZE` or `POSIXLY_CORRECT` cannot change the units."""
    return {"LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", os.defpath)}


class DuRun:
    """One du process whose output is parsed while it runs.

        run = DuRun(argv, cwd, timeout=3600)  # cwd: a path, or an OpenedRoot
        for batch in run.batches(max_lines=1000, max_bytes=512 * 1024):
            publish(batch)
        outcome = run.wait()

    `batches` hands out everything parsed so far (up to the limits) each time it
    is resumed, and blocks only when nothing is waiting: the slower the consumer,
    the larger the batches. The time limit kills du's whole process group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        cwd: str | OpenedRoot,
        *,
        timeout: float,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        # Popen's cwd, and the path that messages show for it.
        self._chdir = cwd.cwd if isinstance(cwd, OpenedRoot) else cwd
        self._where = cwd.path if isinstance(cwd, OpenedRoot) else cwd
        self.timeout = timeout
        self.stderr_limit = stderr_limit
        self.buffer_bytes = buffer_bytes
        # Parsed lines with their sizes, shared by the stdout reader and `batches`.
        self._lock = threading.Condition()
        self._buffer: deque[tuple[PathUsage, int]] = deque()
        self._buffered = 0  # bytes in _buffer
        self._eof = False  # the reader is done: no more lines will come
        self._abandoned = False  # nobody takes lines any more (close)
        self._stderr = bytearray()
        self._stderr_dropped = 0
        self._error = ""
        self._timed_out = False
        self._started = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._timer: threading.Timer | None = None
        self.lines = 0

    def start(self) -> DuRun:
        """Start du; if that fails, the outcome says why (returncode None)."""
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self._chdir,
                env=du_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            entering = exc.filename == self._chdir
            what = f"enter {self._where!r}" if entering else f"run {self.argv[0]!r}"
            self._error = f"cannot {what}: {exc.strerror or exc}"
            self._finish_reading()
            return self
        self._timer = threading.Timer(self.timeout, self._on_timeout)
        self._timer.daemon = True
        self._timer.start()
        for target, name in ((self._read_stdout, "du-stdout"), (self._read_stderr, "du-stderr")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def batches(self, max_lines: int, max_bytes: int) -> Iterator[list[PathUsage]]:
        """Parsed lines in order, in batches of at most `max_lines` lines and about
        `max_bytes` bytes of encoded paths (a single longer path is a batch alone)."""
        while True:
            with self._lock:
                while not self._buffer and not self._eof:
                    self._lock.wait()
                if not self._buffer:
                    return
                batch: list[PathUsage] = []
                size = 0
                buffer = self._buffer
                while buffer and len(batch) < max_lines:
                    usage, nbytes = buffer[0]
                    if batch and size + nbytes > max_bytes:
                        break
                    buffer.popleft()
                    batch.append(usage)
                    size += nbytes
                self._buffered -= size
                self._lock.notify_all()
            self.lines += len(batch)
            yield batch

    def kill(self) -> None:
        """Stop du (its process group) now; the outcome then reports the signal."""
        self._signal_group()

    def wait(self) -> DuOutcome:
        """Wait for du (and the readers) to finish; the outcome."""
        for thread in self._threads:
            thread.join()
        returncode: int | None = None
        if self._proc is not None:
            returncode = self._proc.wait()
        if self._timer is not None:
            self._timer.cancel()
        stderr = bytes(self._stderr).decode("utf-8", "backslashreplace")
        if self._stderr_dropped:
            stderr += f"…[{self._stderr_dropped} more bytes]"
        return DuOutcome(
            returncode=returncode,
            stderr=stderr,
            duration_s=time.monotonic() - self._started,
            timed_out=self._timed_out,
            error=self._error,
        )

    def close(self) -> None:
        """Kill du if it still runs and wait for it (after an abandoned iteration too)."""
        if self._proc is not None and self._proc.poll() is None:
            self.kill()
        with self._lock:
            self._abandoned = True
            self._lock.notify_all()
        self.wait()

    # -- threads

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        rest = b""
        try:
            while data := os.read(fd, READ_SIZE):
                records = (rest + data).split(b"\0")
                rest = records.pop()
                if records and not self._put([_parsed(r) for r in records]):
                    break
            if rest:  # a last record without its NUL
                self._put([_parsed(rest)])
        except DuOutputError as exc:
            self._error = str(exc)
            self._signal_group()
        finally:
            self._proc.stdout.close()
            self._finish_reading()

    def _put(self, lines: list[tuple[PathUsage, int]]) -> bool:
        """Add parsed lines, waiting while the buffer is full; False if abandoned."""
        size = sum(nbytes for _, nbytes in lines)
        with self._lock:
            while self._buffered >= self.buffer_bytes and not self._abandoned:
                self._lock.wait()
            if self._abandoned:
                return False
            self._buffer.extend(lines)
            self._buffered += size
            self._lock.notify_all()
        return True

    def _finish_reading(self) -> None:
        with self._lock:
            self._eof = True
            self._lock.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        while data := os.read(fd, 65536):
            room = self.stderr_limit - len(self._stderr)
            self._stderr += data[: max(room, 0)]
            self._stderr_dropped += max(len(data) - max(room, 0), 0)
        self._proc.stderr.close()

    def _on_timeout(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._timed_out = True
            self._signal_group()

    def _signal_group(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _parsed(record: bytes) -> tuple[PathUsage, int]:
    """A PathUsage and, for batch limits, an upper bound of its encoded size: the
    escaped path in UTF-8 plus PATH_OVERHEAD."""
    usage = parse_record(record)
    path = usage.path
    return usage, (len(path) if path.isascii() else len(path.encode())) + PATH_OVERHEAD


def run_to_end(
    argv: Sequence[str],
    cwd: str | OpenedRoot,
    *,
    timeout: float,
    stderr_limit: int = DEFAULT_STDERR_LIMIT,
) -> tuple[list[PathUsage], DuOutcome]:
    """Run du to the end: all its lines and the outcome (for `du --summarize`)."""
    run = DuRun(argv, cwd, timeout=timeout, stderr_limit=stderr_limit).start()
    lines = [line for batch in run.batches(1 << 30, 1 << 62) for line in batch]
    return lines, run.wait()
