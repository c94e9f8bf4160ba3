"""Every error the client library raises: `DuRootError` and its subclasses, one
per rejection code (`CommandRejected`, carrying the domain's `Rejected`), and the
mapping from replies and Kafka exceptions to them."""

from __future__ import annotations

import re
from typing import ClassVar

from confluent_kafka import KafkaException

from duroot_stream.domain import Command, ErrorCode, Rejected, Reply


class DuRootError(Exception):
    """Root of every error the client library raises."""


class Unavailable(DuRootError):
    """Kafka could not be reached, a topic is missing, or a command was not delivered."""


class CommandTimeout(Unavailable):
    """No reply within the timeout: most likely no processor is running."""

    def __init__(self, command: Command, timeout: float, attempts: int) -> None:
        self.command = command
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            f"no processor answered command {command.command_id} "
            f"({type(command.body).__name__} of workflow {command.workflow_id}) within "
            f"{timeout:g} s ({attempts} attempt{'s' if attempts != 1 else ''}); check that "
            "`duroot-stream processor` is running on the same brokers and topic prefix. "
            "The command may still be applied later; re-sending it with the same command id "
            "is safe."
        )


class WorkflowNotFound(DuRootError):
    """The workflow does not exist (never begun, or deleted)."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id} not found (never begun, or deleted)")


class WorkflowFailed(DuRootError):
    """The workflow completed with a non-zero status code."""

    def __init__(self, workflow_id: str, status_code: int, status_message: str) -> None:
        self.workflow_id = workflow_id
        self.status_code = status_code
        self.status_message = status_message
        super().__init__(f"workflow {workflow_id} failed (status {status_code}): {status_message}")


class WaitTimeout(DuRootError):
    """`get_du(wait=True, timeout=…)`: the workflow did not complete in time."""


class CommandRejected(DuRootError):
    """The processor refused the command: `rejected` is the decider's answer
    (`rejected.code` says why, `rejected.message` what to do); one subclass per code."""

    code: ClassVar[ErrorCode | None] = None  # the code a subclass stands for

    def __init__(self, rejected: Rejected, command: Command | None = None) -> None:
        self.rejected = rejected
        self.command = command
        super().__init__(rejected.message or rejected.code.value)


class WorkflowConflict(CommandRejected):
    """The workflow is not in the state (or at the version) the command needs."""


class ConflictInit(WorkflowConflict):
    code = ErrorCode.CONFLICT_INIT


class ConflictState(WorkflowConflict):
    code = ErrorCode.CONFLICT_STATE


class ConflictStateAdvanced(WorkflowConflict):
    code = ErrorCode.CONFLICT_STATE_ADVANCED


_VERSION_CONFLICT_RE = re.compile(r"stored vid (\w+), expected vid (\w+)")


class VersionConflict(WorkflowConflict):
    """`expected_vid` was not the workflow's head; both vids are attributes."""

    code = ErrorCode.VERSION_CONFLICT

    def __init__(self, rejected: Rejected, command: Command | None = None) -> None:
        super().__init__(rejected, command)
        match = _VERSION_CONFLICT_RE.search(rejected.message)
        self.stored_vid: str | None = match.group(1) if match else None
        self.expected_vid: str | None = (
            match.group(2) if match else (command.expected_vid if command else None)
        )


class InvalidCommand(CommandRejected):
    code = ErrorCode.INVALID_COMMAND


class Uninitialized(CommandRejected):
    code = ErrorCode.UNINITIALIZED


class InvalidArgument(CommandRejected):
    code = ErrorCode.INVALID_ARGUMENT


class MalformedCommand(CommandRejected):
    code = ErrorCode.MALFORMED


REJECTIONS: dict[ErrorCode, type[CommandRejected]] = {
    cls.code: cls
    for cls in (
        ConflictInit,
        ConflictState,
        ConflictStateAdvanced,
        InvalidCommand,
        Uninitialized,
        VersionConflict,
        InvalidArgument,
        MalformedCommand,
    )
    if cls.code is not None
}


def rejection(rejected: Rejected, command: Command | None = None) -> CommandRejected:
    """The typed exception for a refusal: the subclass of its code."""
    return REJECTIONS.get(rejected.code, CommandRejected)(rejected, command)


def check_reply(reply: Reply, command: Command | None = None) -> str:
    """The new vid of an accepting reply; raises the typed rejection otherwise."""
    if reply.ok and reply.vid is not None:
        return reply.vid
    if reply.ok:
        raise DuRootError(f"reply to command {reply.command_id} accepted it but has no vid")
    if reply.error is None:  # the processor always names one: not a reply it wrote
        raise DuRootError(
            f"reply to command {reply.command_id} refused it without an error code "
            f"({reply.message!r}); check what else writes to the replies topic"
        )
    raise rejection(Rejected(reply.error, reply.message), command)


def kafka_unavailable(what: str, exc: BaseException) -> Unavailable:
    """An `Unavailable` for a Kafka exception, naming what was being done."""
    detail = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return Unavailable(f"{what}: {detail}")
