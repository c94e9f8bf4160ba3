"""Runner pieces without Kafka: which index offsets may be committed, settings, CLI."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given
from hypothesis import strategies as st

from duroot_stream.cli.main import build_parser
from duroot_stream.cli.runner import settings_from_args
from duroot_stream.client import ConflictState, Unavailable, WorkflowNotFound, WorkflowStatus
from duroot_stream.config import ConfigError, KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    Commit,
    ErrorCode,
    Fail,
    IndexStarted,
    Rejected,
    StateCode,
    WorkflowIndexEvent,
)
from duroot_stream.metrics import RunnerMetrics
from duroot_stream.runner import INTERRUPTED, OffsetTracker, Runner, RunnerSettings
from duroot_stream.runner.offsets import MAX_MARKS, DuStartMarks
from duroot_stream.runner.workflow import Shutdown, WorkflowHandler

REGISTRY = str(uuid.UUID(int=42))


def test_offsets_commit_only_a_settled_prefix() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12, 13):
        t.add(0, offset)
    t.add(1, 5)
    assert t.committable() == {}
    t.settle(0, 11)  # a later run finished first
    t.settle(0, 13)
    assert t.committable() == {}
    t.settle(1, 5)
    assert t.committable() == {1: 6}
    t.committed(1, 6)
    t.settle(0, 10)
    assert t.committable() == {0: 12}  # 10 and 11; 12 is still running
    t.committed(0, 12)
    assert t.committable() == {}
    t.settle(0, 12)
    assert t.committable() == {0: 14}
    assert t.unsettled() == 0


def test_offsets_unknown_and_dropped_partitions_are_ignored() -> None:
    t = OffsetTracker()
    t.add(0, 1)
    t.settle(0, 99)
    t.settle(7, 1)
    t.drop([0])
    t.settle(0, 1)  # a run of a revoked partition finishing late
    assert t.committable() == {}
    t.add(0, 1)  # assigned again: delivered again
    t.settle(0, 1)
    assert t.committable() == {0: 2}


def test_offsets_not_committed_twice() -> None:
    t = OffsetTracker()
    t.add(0, 4)
    t.settle(0, 4)
    assert t.committable() == {0: 5}
    t.committed(0, 5)
    assert t.committable() == {}


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_offsets_commit_point_is_first_unsettled(order: list[int], settled: int) -> None:
    t = OffsetTracker()
    for offset in range(30):
        t.add(2, offset)
    done = set(order[:settled])
    for offset in order[:settled]:
        t.settle(2, offset)
    first_open = next((o for o in range(30) if o not in done), 30)
    assert t.committable() == ({2: first_open} if first_open > 0 else {})


KAFKA = KafkaConfig()


def test_settings_defaults() -> None:
    s = RunnerSettings(KAFKA, host="files1", roots=("/srv",))
    assert s.group == "duroot-runner-files1"
    assert (s.threshold, s.max_depth, s.concurrency, s.timeout_s) == ("10G", 3, 2, 3600.0)
    assert s.du_command == ("du",)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"host": ""}, "--host is empty"),
        ({"roots": ()}, "no --root"),
        ({"roots": ("srv",)}, "not an absolute path"),
        ({"threshold": "1;x"}, "not a du SIZE"),
        ({"concurrency": 0}, "concurrency 0 is too small"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"max_depth": -1}, "max_depth -1"),
        ({"timeout_s": 0}, "timeouts must be positive"),
        ({"du_command": ()}, "du command is empty"),
    ],
)
def test_settings_checked(kwargs: dict[str, object], problem: str) -> None:
    base: dict[str, object] = {"host": "h", "roots": ("/srv",)}
    with pytest.raises(ConfigError, match=problem):
        RunnerSettings(KAFKA, **{**base, **kwargs})  # type: ignore[arg-type]


def test_cli_arguments() -> None:
    args = build_parser().parse_args(
        [
            "runner",
            "--host",
            "files1",
            "--root",
            "/srv/a",
            "--root",
            "/srv/b",
            "--du-command",
            "setpriv --reuid=nobody '/usr/bin/du'",
            "--threshold",
            "1G",
            "--max-depth",
            "5",
            "--concurrency",
            "4",
        ]
    )
    s = settings_from_args(args)
    assert s.roots == ("/srv/a", "/srv/b")
    assert s.du_command == ("setpriv", "--reuid=nobody", "/usr/bin/du")
    assert (s.threshold, s.max_depth, s.concurrency) == ("1G", 5, 4)


def test_cli_one_file_system() -> None:
    base = ["runner", "--host", "h", "--root", "/srv"]
    assert not settings_from_args(build_parser().parse_args(base)).one_file_system
    args = build_parser().parse_args([*base, "--one-file-system"])
    assert settings_from_args(args).one_file_system


def test_cli_bad_du_command() -> None:
    args = build_parser().parse_args(["runner", "--host", "h", "--root", "/", "--du-command", "'"])
    with pytest.raises(ConfigError, match="--du-command"):
        settings_from_args(args)


class FakeReader:
    def __init__(self, state: StateCode | None) -> None:
        self.state = state

    def status(self, workflow_id: str) -> WorkflowStatus:
        if self.state is None:
            raise WorkflowNotFound(workflow_id)
        return WorkflowStatus(
            workflow_id=workflow_id,
            state=self.state,
            vid=VID,
            events=1,
            lines=0,
            registry_id=REGISTRY,
            global_root="/g",
            host="h",
            host_root="/nowhere",
            started_at_ms=None,
            completed_at_ms=None,
            status_code=None,
            status_message="",
            partition=0,
        )


class FakeClient:
    def __init__(self, reject: bool) -> None:
        self.sent: list[Command] = []
        self.reject = reject

    def send(self, command: Command) -> str:
        self.sent.append(command)
        if self.reject:
            raise ConflictState(Rejected(ErrorCode.CONFLICT_STATE, "no"), command)
        return NEXT_VID


VID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NEXT_VID = "01ARZ3NDEKTSV4RRFFQ69G5FAW"


def test_state_dispatch_without_kafka() -> None:
    """What a delivered DuRootStarted does in each state (the COMPLETED-but-not-
    COMMITTED case cannot be produced through this processor, which ends atomically)."""
    wf = str(uuid.uuid4())
    event = WorkflowIndexEvent(
        "0" * 26, REGISTRY, wf, "0" * 26, IndexStarted("/g", "h", "/nowhere")
    )

    def handle(state: StateCode | None, reject: bool = False) -> tuple[bool, list[Command]]:
        settings = RunnerSettings(KafkaConfig(), host="h", roots=("/srv",))
        client = FakeClient(reject)
        handler = WorkflowHandler(settings, RunnerMetrics(), client, FakeReader(state), Shutdown())
        return handler.handle(event), client.sent

    settled, sent = handle(StateCode.APPENDING)
    assert settled and [(c.body, c.expected_vid) for c in sent] == [(Fail(1, INTERRUPTED), VID)]
    settled, sent = handle(StateCode.COMPLETED, reject=True)  # errors ignored
    assert settled and [(c.body, c.expected_vid) for c in sent] == [(Commit(), NO_VC)]
    for state in (StateCode.TERMINATED, None):
        settled, sent = handle(state)
        assert settled and sent == []


def test_a_rejected_command_leaves_the_workflow_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Someone else moved the workflow on: the runner neither retries nor fails it.
    wf = str(uuid.uuid4())
    event = WorkflowIndexEvent("0" * 26, REGISTRY, wf, "0" * 26, IndexStarted("/g", "h", "/x"))
    settings = RunnerSettings(KafkaConfig(), host="h", roots=("/srv",))
    client, metrics = FakeClient(reject=True), RunnerMetrics()
    handler = WorkflowHandler(
        settings, metrics, client, FakeReader(StateCode.APPENDING), Shutdown()
    )
    with caplog.at_level(logging.WARNING, "duroot.runner"):
        assert handler.handle(event)
    assert [c.body for c in client.sent] == [Fail(1, INTERRUPTED)]
    counted = metrics.registry.get_sample_value(
        "duroot_runner_du_runs_total", {"outcome": "rejected"}
    )
    assert counted == 1
    [record] = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert vars(record)["code"] == ErrorCode.CONFLICT_STATE.value
    assert vars(record)["command"] == "Fail" and vars(record)["workflow"] == wf


@pytest.mark.parametrize(
    ("code", "stops"),
    [
        (KafkaError._FATAL, True),  # how librdkafka reports a fenced static member
        (KafkaError.FENCED_INSTANCE_ID, True),
        (KafkaError._ALL_BROKERS_DOWN, False),  # librdkafka reconnects by itself
        (KafkaError.UNKNOWN_TOPIC_OR_PART, False),  # the index topic is not there yet
        (KafkaError._TRANSPORT, False),
    ],
)
def test_polled_errors_stop_the_runner_only_when_fatal(code: int, stops: bool) -> None:
    runner = Runner(RunnerSettings(KafkaConfig(), host="h", roots=("/srv",)))
    message = Message(topic=runner.topics.index, partition=0, error=KafkaError(code))
    started: list[WorkflowIndexEvent] = []
    if stops:
        with pytest.raises(Unavailable, match="stopping"):
            runner._dispatch(message, started.append)
    else:
        runner._dispatch(message, started.append)
    assert started == [] and runner.in_progress == 0


def test_du_runs_in_the_checked_directory_after_a_swap(tmp_path: Path) -> None:
    """Between the check and du's start (the `before_du` hook), the host root is
    moved aside and a symlink out of the served root put in its place: du runs in
    the directory checked (its lines are that tree's), with `-x` as configured."""
    served, outside = tmp_path / "served", tmp_path / "outside"
    data = served / "data"
    for tree, names in ((data, ("a", "b")), (outside, ("secret-1", "secret-2", "secret-3"))):
        for name in names:
            (tree / name).mkdir(parents=True)
    spy_log = tmp_path / "spy.log"
    spy = tmp_path / "spy-du"
    spy.write_text(f'#!/bin/sh\necho "$(pwd -P) $*" >> {spy_log}\nexec du "$@"\n')
    spy.chmod(0o755)
    moved = served / "data-was"

    def swap(host_root: str) -> None:
        assert host_root == str(data)
        data.rename(moved)
        data.symlink_to(outside)

    settings = RunnerSettings(
        KafkaConfig(),
        host="h",
        roots=(str(served),),
        du_command=(str(spy),),
        threshold="0",
        one_file_system=True,
        before_du=swap,
    )
    client = FakeClient(reject=False)
    handler = WorkflowHandler(
        settings, RunnerMetrics(), client, FakeReader(StateCode.INITIALIZED), Shutdown()
    )
    event = WorkflowIndexEvent("0" * 26, REGISTRY, str(uuid.uuid4()), "0" * 26,
                               IndexStarted("/g", "h", str(data)))  # fmt: skip
    assert handler.handle(event)
    appended = [p.path for c in client.sent if isinstance(c.body, Append) for p in c.body.paths]
    assert sorted(appended) == [".", "a", "b"]
    assert client.sent[-1].body == Commit()
    assert spy_log.read_text() == f"{moved} -0 -x --threshold=0 --max-depth=3 .\n"


# --- du-start marks: du is never run twice for a workflow ------------------------------


def test_du_start_marks_round_trip_through_offset_metadata() -> None:
    marks = DuStartMarks()
    a, b = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    marks.load(3, None)
    assert marks.metadata(3) == "" and not marks.was_started(a)
    marks.add(3, b)
    marks.add(3, a)
    assert marks.dirty() == {3} and not marks.durable(3, a)
    meta = marks.metadata(3)
    assert meta == f"du-started {a} {b}"
    marks.committed(3, meta)
    assert marks.dirty() == set() and marks.durable(3, a)
    fresh = DuStartMarks()  # the next runner, assigned partition 3
    fresh.load(3, meta)
    fresh.load(4, "someone else's metadata")
    assert fresh.was_started(a) and fresh.was_started(b) and fresh.metadata(4) == ""
    fresh.discard(a)  # settled
    assert fresh.dirty() == {3} and fresh.metadata(3) == f"du-started {b}"
    fresh.drop([3])
    assert not fresh.was_started(b) and fresh.dirty() == set()
    full = " ".join(["du-started", *(str(uuid.uuid4()) for _ in range(MAX_MARKS))])
    assert len(full.encode()) <= 4096  # Kafka's default offset.metadata.max.bytes


def test_offsets_position_and_committable_survive_a_failed_commit() -> None:
    t = OffsetTracker()
    assert t.position(0) is None
    for offset in (7, 8, 9):
        t.add(0, offset)
    t.settle(0, 7)
    assert t.committable() == {0: 8}
    assert t.committable() == {0: 8}, "not committed yet: still committable"
    assert t.position(0) == 8  # 8 is running: committing 8 re-delivers it
    t.committed(0, 8)
    t.settle(0, 8)
    t.settle(0, 9)
    assert t.committable() == {0: 10} and t.position(0) == 10


class FakeMarks:
    def __init__(self, started: bool, log: Path | None = None) -> None:
        self.started = started
        self.log = log
        self.marked: list[str] = []

    def was_started(self, workflow_id: str) -> bool:
        return self.started

    def mark_started(self, workflow_id: str) -> None:
        self.marked.append(workflow_id)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write("marked\n")


def test_initialized_but_marked_fails_as_interrupted_without_du(tmp_path: Path) -> None:
    """A runner killed while du ran, before its first line: INITIALIZED, but marked."""
    log = tmp_path / "order.log"
    spy = tmp_path / "spy-du"
    spy.write_text(f'#!/bin/sh\necho du >> {log}\nexec du "$@"\n')
    spy.chmod(0o755)
    (tmp_path / "root").mkdir()
    settings = RunnerSettings(
        KafkaConfig(), host="h", roots=(str(tmp_path),), du_command=(str(spy),)
    )
    event = WorkflowIndexEvent("0" * 26, REGISTRY, str(uuid.uuid4()), "0" * 26,
                               IndexStarted("/g", "h", str(tmp_path / "root")))  # fmt: skip

    def handle(started: bool) -> tuple[list[Command], FakeMarks, RunnerMetrics]:
        client, marks, metrics = FakeClient(reject=False), FakeMarks(started, log), RunnerMetrics()
        reader = FakeReader(StateCode.INITIALIZED)
        handler = WorkflowHandler(settings, metrics, client, reader, Shutdown(), marks)
        assert handler.handle(event)
        return client.sent, marks, metrics

    sent, marks, metrics = handle(started=True)
    assert [(c.body, c.expected_vid) for c in sent] == [(Fail(1, INTERRUPTED), VID)]
    assert marks.marked == [] and not log.exists(), "du must not run again"
    value = metrics.registry.get_sample_value(
        "duroot_runner_du_runs_total", {"outcome": "interrupted"}
    )
    assert value == 1
    sent, marks, _ = handle(started=False)
    assert marks.marked == [event.workflow_id] and sent[-1].body == Commit()
    # Marked once, before du (which printed nothing under 10G, so `--summarize` too).
    assert log.read_text() == "marked\ndu\ndu\n", "the mark is recorded before du starts"
