"""The requester's library: publish commands and wait for their replies.

    from duroot_stream.client import DuRootClient
    from duroot_stream.config import ConfigError, KafkaConfig

    with DuRootClient(KafkaConfig.from_env()) as client:
        begun = client.begin(registry_id, "/example/data", "files.example.org", "/srv/data")
        vid = client.append_many(begun.workflow_id, [("a", 4096), ("b", 8192)])
        client.commit(begun.workflow_id, expected_vid=vid)

How a command travels (docs/contract.md, "Request-reply"):

1. The client assigns its reply consumer to one partition of `<prefix>replies`,
   starting at that partition's end, before it sends anything (no consumer
   group: nothing to rebalance, nothing to commit).
2. Each command is produced to `<prefix>commands`, key = workflow id, in the
   workflow's partition (`partition_for`, Java's murmur2), with the headers
   `reply-topic`, `reply-partition` and `correlation-id` (= the command id).
   With OpenTelemetry (the `otel` extra and an SDK set up), each command gets
   a "publish" span, a child of the caller's current span, and carries its
   W3C `traceparent`/`tracestate`; its events, index events and reply then
   carry the processor's span in the same trace (`duroot_stream.tracing`).
3. A background thread reads the reply partition and completes the future of
   the command whose correlation id the reply echoes; other replies in that
   partition (other clients share it) are ignored.
4. No reply within `timeout / (retries + 1)`: the same command (same command
   id) is sent again; the processor answers a repeated command id with the
   reply it gave first and emits nothing new. No reply within `timeout`:
   `CommandTimeout`.

Pipelining: `submit` returns a `Future[Reply]` without waiting, and
`append_many` keeps several `Append` batches in flight. Commands to one
workflow go to one partition through one idempotent producer, so the
processor applies them in the order they were submitted.

Every error is a `DuRootError` (`errors`): rejections map one class per
`ErrorCode`; `Unavailable` (Kafka) and its `CommandTimeout` (no processor
answered) say what to check. The request-reply mechanics are in `exchange`,
the readers (get, events, index, status) in `readers`.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    RECENT_COMMANDS,
    AbortExpired,
    Append,
    Command,
    Commit,
    Delete,
    End,
    Fail,
    Init,
    PathUsage,
    Reply,
)
from duroot_stream.wire import Codec

from .commands import batches, canonical_uuid, make_command, path_usages
from .errors import DuRootError, check_reply
from .exchange import Exchange

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "MAX_IN_FLIGHT",
    "Begun",
    "DuRootClient",
]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 2
DEFAULT_BATCH_SIZE = 1000
# Appends in flight in `append_many`. A re-sent command is recognised only
# among the workflow's last RECENT_COMMANDS commands, so at most half of that
# may be outstanding when a retry goes out.
MAX_IN_FLIGHT = RECENT_COMMANDS // 2


@dataclass(frozen=True, slots=True)
class Begun:
    """What `begin` returns."""

    workflow_id: str
    vid: str


class DuRootClient:
    """Publishes commands and waits for their replies (see the module docstring).

    `timeout`: seconds to wait for a reply, retries included; `retries`: how
    many times a command is re-sent (same command id) within that time.
    Thread-safe; use one client per process, and close it (or use `with`).
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        codec: Codec | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.config = config
        self._exchange = Exchange(
            config, codec or Codec(config.schema_registry_url), timeout=timeout, retries=retries
        )
        self.topics = self._exchange.topics
        self.timeout = timeout
        self.retries = retries

    @property
    def reply_partition(self) -> int:
        """The partition of `<prefix>replies` this client reads (-1 before `start`)."""
        return self._exchange.reply_partition

    # -- lifecycle

    def __enter__(self) -> DuRootClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Connect and assign the reply partition; the first command does it anyway."""
        self._exchange.start()

    def close(self) -> None:
        """Stop the reply thread; commands still waiting fail with `DuRootError`."""
        self._exchange.close()

    # -- sending

    def submit(self, command: Command) -> Future[Reply]:
        """Send `command`; the future's result is its `Reply` (accepted or rejected).

        The future fails with `CommandTimeout` or `Unavailable`. Re-sends use the
        same command id; keep at most MAX_IN_FLIGHT commands of one workflow in
        flight, or a re-sent one may be applied twice (`append_many` does).
        """
        return self._exchange.submit(command)

    def send(self, command: Command) -> str:
        """Send `command` and wait: the new vid, or the typed exception."""
        return check_reply(self._exchange.result(self.submit(command), command), command)

    # -- one method per command

    def init(
        self,
        workflow_id: str,
        registry_id: str,
        global_root: str,
        host: str,
        host_root: str,
        *,
        expected_vid: str = NO_VC,
    ) -> str:
        """Init (begin) a du of `global_root` on `host`; the vid of the STARTED event.

        Repeating it with the same fields is a no-op that returns the same vid."""
        body = Init(canonical_uuid(registry_id, "registry id"), global_root, host, host_root)
        return self.send(make_command(workflow_id, body, expected_vid))

    def begin(
        self,
        registry_id: str,
        global_root: str,
        host: str,
        host_root: str,
        *,
        workflow_id: str | None = None,
    ) -> Begun:
        """`init` of a new workflow (a random id unless given)."""
        wf = canonical_uuid(workflow_id) if workflow_id else str(uuid.uuid4())
        return Begun(wf, self.init(wf, registry_id, global_root, host, host_root))

    def append(
        self,
        workflow_id: str,
        paths: Iterable[PathUsage | tuple[str, int]],
        *,
        expected_vid: str = NO_VC,
    ) -> str:
        """Append du lines (one DuUpdated event each) in one command. The lines are
        checked first, as `append_many` does (ValueError, nothing sent)."""
        body = Append(path_usages(paths))
        return self.send(make_command(workflow_id, body, expected_vid))

    def append_many(
        self,
        workflow_id: str,
        paths: Iterable[PathUsage | tuple[str, int]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        expected_vid: str = NO_VC,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> str:
        """Append any number of du lines as pipelined `Append` batches, in order.

        The first batch carries `expected_vid` and is confirmed before the rest is
        sent without a version check, up to `max_in_flight` at a time (the
        processor applies one workflow's commands in offset order). Returns the
        vid after the last batch. Lines are checked before anything is sent; if a
        batch is rejected anyway, the exception's notes say how many lines were
        appended before it.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(
                f"max_in_flight must be 1..{MAX_IN_FLIGHT} (half of the {RECENT_COMMANDS} "
                f"recent commands the processor remembers, so a re-send is recognised), "
                f"got {max_in_flight}"
            )
        items = path_usages(paths)
        rest = batches(items, batch_size)
        first = next(rest)
        vid = self.send(make_command(workflow_id, Append(first), expected_vid))
        done = len(first)
        window: deque[tuple[Command, Future[Reply], int]] = deque()
        try:
            for batch in rest:
                command = make_command(workflow_id, Append(batch))
                window.append((command, self.submit(command), len(batch)))
                if len(window) >= max_in_flight:
                    vid, done = self._confirm_oldest(window, done)
            while window:
                vid, done = self._confirm_oldest(window, done)
        except DuRootError as exc:
            for _, future, _ in window:  # let the rest finish; their outcome is moot now
                future.exception()
            exc.add_note(
                f"append_many: {done} of {len(items)} lines of workflow {workflow_id} were "
                f"appended before this error; the last confirmed vid is {vid}"
            )
            raise
        return vid

    def _confirm_oldest(
        self, window: deque[tuple[Command, Future[Reply], int]], done: int
    ) -> tuple[str, int]:
        """Wait for the oldest command in flight: (its vid, lines confirmed so far)."""
        command, future, lines = window[0]
        vid = check_reply(self._exchange.result(future, command), command)
        window.popleft()
        return vid, done + lines

    def commit(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Complete the workflow successfully (COMPLETED 0 and COMMITTED)."""
        return self.send(make_command(workflow_id, Commit(), expected_vid))

    def fail(self, workflow_id: str, code: int, message: str, *, expected_vid: str = NO_VC) -> str:
        """Complete the workflow as failed with a non-zero `code`."""
        return self.send(make_command(workflow_id, Fail(code, message), expected_vid))

    def abort_expired(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Complete an active workflow as expired (status 104)."""
        return self.send(make_command(workflow_id, AbortExpired(), expected_vid))

    def end(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """End a completed workflow (the processor already does after completion)."""
        return self.send(make_command(workflow_id, End(), expected_vid))

    def delete(self, workflow_id: str, *, expected_vid: str = NO_VC) -> str:
        """Delete a completed workflow's history; returns the empty history's vid."""
        return self.send(make_command(workflow_id, Delete(), expected_vid))
