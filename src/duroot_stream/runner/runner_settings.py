"""The runner's settings, checked when they are made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from duroot_stream.config import ConfigError, KafkaConfig

from . import du
from .offsets import MAX_MARKS

# Appends are chained (each waits for the previous reply), so their size sets the pace;
# the byte bound keeps an Append well below Kafka's 1 MB message limit.
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_BATCH_BYTES = 900 * 1024


@dataclass(frozen=True)
class RunnerSettings:
    kafka: KafkaConfig
    host: str  # the host name in Init / DuRootStarted this runner serves
    roots: tuple[str, ...]  # du runs only inside these (their own symlinks followed)
    group_id: str = ""  # default duroot-runner-<host>
    du_command: tuple[str, ...] = ("du",)  # the du executable, possibly behind a wrapper
    threshold: str = du.DEFAULT_THRESHOLD
    max_depth: int = du.DEFAULT_MAX_DEPTH
    # du -x: stay on the file system of the host root. Off, as in nog: a mount below
    # a root is the host's administrator's doing, and ZFS datasets or btrfs subvolumes
    # below a root are mounts that -x would count as empty.
    one_file_system: bool = False
    timeout_s: float = 3600.0  # per du run
    concurrency: int = 2  # du runs at once
    batch_size: int = DEFAULT_BATCH_SIZE  # paths per Append, at most
    batch_bytes: int = DEFAULT_BATCH_BYTES  # about this many bytes of paths per Append
    stderr_limit: int = du.DEFAULT_STDERR_LIMIT
    command_timeout_s: float = 30.0  # per command, before it is sent again
    metrics_port: int | None = None
    # Tests only: called with the host root once it is checked and opened, just
    # before du starts (where a swapped symlink used to win).
    before_du: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

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
        if self.concurrency > MAX_MARKS:
            problems.append(
                f"concurrency {self.concurrency} is too large: at most {MAX_MARKS} (the du-start "
                "marks of the workflows in progress must fit Kafka's 4 KiB offset metadata)"
            )
        if self.timeout_s <= 0 or self.command_timeout_s <= 0:
            problems.append("timeouts must be positive")
        if problems:
            raise ConfigError("runner: " + "; ".join(problems))

    @property
    def group(self) -> str:
        return self.group_id or f"duroot-runner-{self.host}"
