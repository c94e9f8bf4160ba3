"""The du runner end to end: real broker, real processor, real du.

One set of topics and one processor serve the module; each test starts the
runners it needs, each for a host name of its own. du is run through small
wrapper scripts that record each invocation, so tests can assert that du was
(not) started.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from duroot_stream.client import DuResult, DuRootClient, DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Append,
    Commit,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    PathUsage,
    StateCode,
)
from duroot_stream.runner import INTERRUPTED, Runner, RunnerSettings, du, paths
from duroot_stream.wire import Codec, Topics
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import PARTITIONS, running_processor, setup_topics, workflow_events

pytestmark = pytest.mark.broker

REGISTRY = str(uuid.UUID(int=42))
DU_ENV = {"LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", os.defpath)}


# --- fixtures and helpers ------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(bootstrap: str) -> Iterator[KafkaConfig]:
    """Topics and a processor shared by the module's tests."""
    config = KafkaConfig(bootstrap_servers=bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:8]}.")
    setup_topics(config)
    _wait_for_leaders(config)
    with running_processor(config):
        yield config
        client = _clients.pop(config.topic_prefix, None)
        if client is not None:
            client.close()


def _wait_for_leaders(kafka: KafkaConfig) -> None:
    """Topics just created may not have a leader yet; the processor's restore needs one."""
    topics = Topics(kafka.topic_prefix)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "t-leaders"})
    try:
        for topic in (topics.commands, topics.events, topics.index, topics.replies):
            for p in range(PARTITIONS):
                wait_until(
                    functools.partial(_answers, consumer, topic, p), timeout=30, what="leaders"
                )
    finally:
        consumer.close()


def _answers(consumer: Consumer, topic: str, partition: int) -> bool:
    try:
        consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        return True
    except Exception:
        return False


@pytest.fixture
def host() -> str:
    return f"files-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="duroot-runner-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):  # make everything removable again
        if p.is_dir() and not p.is_symlink():
            p.chmod(stat.S_IRWXU)
    shutil.rmtree(path)


@contextmanager
def running_runner(
    kafka: KafkaConfig, host: str, roots: list[Path], **kw: object
) -> Iterator[Runner]:
    settings = RunnerSettings(kafka, host=host, roots=tuple(map(str, roots)), **kw)  # type: ignore[arg-type]
    runner = Runner(settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_until(lambda: runner.ready.is_set() or errors, timeout=60, what="runner assigned")
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(60)
        assert not thread.is_alive(), "runner did not stop within 60 s"
        if errors:
            raise errors[0]


@dataclass
class SpyDu:
    """A du wrapper script that logs `<pid> <cwd>` per invocation, then runs du."""

    script: Path
    log: Path

    @classmethod
    def make(cls, where: Path, *, before: str = "", after: str = "", du_prefix: str = "") -> SpyDu:
        log = where / "du-invocations.log"
        script = where / "spy-du"
        script.write_text(
            "#!/bin/sh\n"
            f'echo "$$ $(pwd)" >> {log}\n'
            f"{before}\n"
            f'{du_prefix} du "$@"\n'
            "status=$?\n"
            f"{after}\n"
            "exit $status\n"
        )
        script.chmod(0o755)
        return cls(script, log)

    @property
    def command(self) -> tuple[str, ...]:
        return (str(self.script),)

    def invocations(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


_clients: dict[str, DuRootClient] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    """`begin`'s clients, closed with the module (a client outliving the session broker
    would log its connection failures after the run)."""
    yield
    while _clients:
        _clients.popitem()[1].close()


def begin(kafka: KafkaConfig, host: str, host_root: str | Path) -> str:
    """Init a workflow (one client per topic prefix, closed with the module)."""
    client = _clients.get(kafka.topic_prefix)
    if client is None:
        client = _clients[kafka.topic_prefix] = DuRootClient(kafka)
    return client.begin(REGISTRY, "/g/root", host, str(host_root)).workflow_id


def wait_result(kafka: KafkaConfig, workflow_id: str, timeout: float = 60) -> DuResult:
    result = DuRootReader(kafka).get_du(workflow_id, wait=True, timeout=timeout)
    assert result.complete
    return result


def direct_du(args: list[str], cwd: Path) -> list[PathUsage]:
    out = subprocess.run(["du", *args], cwd=cwd, env=DU_ENV, capture_output=True, check=True)
    return du.parse_output(out.stdout)


def make_tree(root: Path, dirs: int) -> None:
    for i in range(dirs):
        d = root / f"a{i % 5}" / f"b{i % 11}" / f"c{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "data").write_bytes(b"x" * (i * 517 % 20_000))


def metric(runner: Runner, name: str, **labels: str) -> float:
    return runner.metrics.registry.get_sample_value(name, labels or None) or 0.0


def committed_to_end(kafka: KafkaConfig, group: str) -> bool:
    """Has `group` committed, in every partition of the index topic, the offset after
    its last record? (Not the high watermark: transaction markers take offsets too.)"""
    topic = Topics(kafka.topic_prefix).index
    ends: dict[int, int] = {}
    for m in read_all(kafka.bootstrap_servers, topic):
        partition, offset = m.partition() or 0, m.offset() or 0
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()
    return all(committed[p] == end for p, end in ends.items())


# --- the tests ----------------------------------------------------------------------


def test_tree_published_as_du_prints_it(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, 150)
    spy = SpyDu.make(tmp_path)
    with running_runner(
        kafka, host, [tree], du_command=spy.command, threshold="0", max_depth=100, batch_size=40
    ) as runner:
        wf = begin(kafka, host, tree)
        result = wait_result(kafka, wf)
        assert (
            runner.metrics.registry.get_sample_value(
                "duroot_runner_du_runs_total", {"outcome": "ok"}
            )
            == 1
        )

    expected = direct_du(["-0", "--threshold=0", "--max-depth=100", "."], tree)
    assert len(expected) > 150
    assert result.lines == expected  # same lines, same order
    assert (result.status_code, result.status_message, result.state) == (
        0,
        "",
        StateCode.TERMINATED,
    )
    assert metric(runner, "duroot_runner_lines_published_total") == len(expected)
    assert len(spy.invocations()) == 1

    # The history: STARTED, one UPDATED per line, COMPLETED(0), COMMITTED.
    events = [e for _, e in workflow_events(kafka, wf)]
    assert isinstance(events[0].payload, DuRootStarted)
    assert [e.payload for e in events[1:-2]] == [DuUpdated(p.path, p.usage) for p in expected]
    assert [e.payload for e in events[-2:]] == [DuRootCompleted(0, ""), DuRootCommitted()]

    # Chained by vid: every command expects the head left by the one before it.
    codec = Codec()
    commands = [
        codec.decode_command(m.value())
        for m in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).commands)
    ]
    ours = [c for c in commands if c.workflow_id == wf]
    appends = [c for c in ours if isinstance(c.body, Append)]
    assert len(appends) >= len(expected) // 40
    assert all(len(c.body.paths) <= 40 for c in appends)  # type: ignore[union-attr]
    first_parent: dict[str, str] = {}
    for e in events:
        first_parent.setdefault(e.command_id, e.parent)
    for c in [*appends, *[c for c in ours if isinstance(c.body, Commit)]]:
        assert c.expected_vid != NO_VC
        assert c.expected_vid == first_parent[c.command_id]


def test_small_tree_below_threshold_gives_one_summary_line(
    kafka: KafkaConfig, host: str, tmp_path: Path
) -> None:
    tree = tmp_path / "small"
    make_tree(tree, 10)
    spy = SpyDu.make(tmp_path)
    with running_runner(kafka, host, [tmp_path], du_command=spy.command):  # defaults: 10G, 3
        result = wait_result(kafka, begin(kafka, host, tree))
    assert result.lines == direct_du(["-0", "--summarize", "."], tree)
    assert [line.path for line in result.lines] == ["."]
    assert result.status_code == 0
    assert len(spy.invocations()) == 2  # the du that printed nothing, then --summarize


def test_unreadable_directory_fails_the_workflow(
    kafka: KafkaConfig, host: str, shared_tmp: Path
) -> None:
    tree = shared_tmp / "tree"
    make_tree(tree, 20)
    secret = tree / "a1" / "secret"
    secret.mkdir()
    if os.geteuid() == 0:  # root reads everything: run du as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to run du as an unprivileged user")
        du_command: tuple[str, ...] = (
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "du",
        )
        secret.chmod(0o700)
    else:
        du_command = ("du",)
        secret.chmod(0)
    with running_runner(kafka, host, [shared_tmp], du_command=du_command, threshold="0") as runner:
        wf = begin(kafka, host, tree)
        result = wait_result(kafka, wf)
    assert result.status_code == 1
    assert result.status_message == (
        "du failed: exit status 1; stderr: du: cannot read directory './a1/secret': "
        "Permission denied\n"
    )
    assert result.state == StateCode.TERMINATED
    tail = [e.payload for _, e in workflow_events(kafka, wf)][-2:]
    assert tail == [DuRootCompleted(1, result.status_message), DuRootCommitted()]
    assert metric(runner, "duroot_runner_du_runs_total", outcome="failed") == 1


def test_vanished_root_and_timeout_fail_the_workflow(
    kafka: KafkaConfig, host: str, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    slow = tmp_path / "slow"
    slow.mkdir()
    spy = SpyDu.make(tmp_path, before='[ "$(pwd)" = "' + str(slow) + '" ] && exec sleep 60')
    with running_runner(
        kafka, host, [tmp_path], du_command=spy.command, timeout_s=1.0, concurrency=2
    ) as runner:
        wf_gone = begin(kafka, host, gone)
        wf_slow = begin(kafka, host, slow)
        gone_result = wait_result(kafka, wf_gone)
        slow_result = wait_result(kafka, wf_slow)
    assert (gone_result.status_code, gone_result.status_message) == (
        1,
        f"du failed: cannot enter '{gone}': No such file or directory; stderr: ",
    )
    assert (slow_result.status_code, slow_result.status_message) == (
        1,
        "du failed: timed out after 1 s; stderr: ",
    )
    assert metric(runner, "duroot_runner_du_runs_total", outcome="timeout") == 1


def test_refused_roots_never_run_du(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    served = tmp_path / "served"
    (served / "data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (served / "escape").symlink_to(tmp_path / "outside")
    spy = SpyDu.make(tmp_path)
    cases = {
        "outside": (str(tmp_path / "outside"), "outside"),
        "symlink": (str(served / "escape"), "symlink"),
        "dotdot": (f"{served}/data/../../outside", "dotdot"),
        "relative": ("served/data", "relative"),
        "nul": (f"{served}/data\0/../../../outside", "nul"),
    }
    with running_runner(kafka, host, [served], du_command=spy.command, threshold="0") as runner:
        workflows = {name: begin(kafka, host, root) for name, (root, _) in cases.items()}
        results = {name: wait_result(kafka, wf) for name, wf in workflows.items()}
        assert spy.invocations() == []  # du was never started
        good = wait_result(kafka, begin(kafka, host, served / "data"))
        assert good.status_code == 0 and len(spy.invocations()) == 1  # the spy does work
        for _name, (_, reason) in cases.items():
            assert metric(runner, "duroot_runner_refusals_total", reason=reason) == 1
    for name, (root, _) in cases.items():
        r = results[name]
        assert r.status_code == 1 and r.lines == [], name
        assert r.status_message.startswith(f"refused: host root {root!r} "), r.status_message
    assert "which is not inside a root this runner serves" in results["outside"].status_message
    assert "is a symlink" in results["symlink"].status_message
    assert "through '..'" in results["dotdot"].status_message
    assert "not an absolute path" in results["relative"].status_message
    assert "NUL" in results["nul"].status_message


def test_a_symlink_swapped_between_check_and_start_does_not_move_du(
    kafka: KafkaConfig, host: str, tmp_path: Path
) -> None:
    """The host root passes the check; before du starts (the `before_du` hook) it is
    moved aside and a symlink to a directory outside the served root takes its
    path. du runs in the directory checked: the workflow holds that tree's lines,
    none of the outside tree's."""
    served, outside = tmp_path / "served", tmp_path / "outside"
    data, moved = served / "data", served / "data-was"
    make_tree(data, 12)
    make_tree(outside, 30)
    expected = direct_du(["-0", "--threshold=0", "--max-depth=3", "."], data)
    swapped: list[str] = []

    def swap(host_root: str) -> None:
        data.rename(moved)
        data.symlink_to(outside)
        swapped.append(host_root)

    spy = SpyDu.make(tmp_path)
    with running_runner(
        kafka, host, [served], du_command=spy.command, threshold="0", before_du=swap
    ) as runner:
        result = wait_result(kafka, begin(kafka, host, data))
        assert metric(runner, "duroot_runner_du_runs_total", outcome="ok") == 1
    assert swapped == [str(data)]
    assert result.status_code == 0 and result.lines == expected
    assert [line.split(" ", 1)[1] for line in spy.invocations()] == [str(moved)]


def test_odd_names_round_trip(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    tree = tmp_path / "odd"
    tree.mkdir()
    names = [b"new\nline", b"bad\xff\xfebytes", b"back\\slash", "ümlaut".encode(), b"tab\tname"]
    for name in names:
        os.mkdir(os.fsencode(tree) + b"/" + name)
        os.mkdir(os.fsencode(tree) + b"/" + name + b"/inner\x80")
    with running_runner(kafka, host, [tree], threshold="0", max_depth=10):
        result = wait_result(kafka, begin(kafka, host, tree))
    assert result.status_code == 0
    raw_du = subprocess.run(
        ["du", "-0", "--threshold=0", "--max-depth=10", "."],
        cwd=tree, env=DU_ENV, capture_output=True, check=True,
    ).stdout  # fmt: skip
    expected_bytes = [
        r.split(b"\t", 1)[1].removeprefix(b"./") or b"." for r in raw_du.split(b"\0")[:-1]
    ]
    got_bytes = [paths.unescape_path(line.path) for line in result.lines]
    assert got_bytes == expected_bytes
    assert {b"new\nline", b"bad\xff\xfebytes/inner\x80", b"back\\slash"} <= set(got_bytes)
    for path in got_bytes:
        assert os.path.isdir(os.fsencode(tree) + b"/" + path)
    shown = {line.path for line in result.lines}
    assert "bad\\xff\\xfebytes" in shown and "back\\\\slash" in shown and "new\nline" in shown


def test_interrupted_run_is_failed_not_rerun(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    """A runner is killed (SIGKILL) while it is appending; the next one fails the workflow."""
    tree = tmp_path / "tree"
    make_tree(tree, 200)
    expected = direct_du(["-0", "--threshold=0", "--max-depth=100", "."], tree)
    # du prints everything, then the wrapper keeps the run open: the workflow stays
    # APPENDING with every line appended until the runner is killed.
    spy = SpyDu.make(tmp_path, after="sleep 120")
    argv = [
        sys.executable, "-m", "duroot_stream.cli.main", "runner",
        "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix,
        "--host", host, "--root", str(tmp_path), "--du-command", str(spy.script),
        "--threshold", "0", "--max-depth", "100", "--batch-size", "50",
    ]  # fmt: skip
    victim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wf = begin(kafka, host, tree)
        reader = DuRootReader(kafka)
        wait_until(
            lambda: reader.status(wf).lines == len(expected),
            timeout=60,
            what="all lines appended",
        )
        assert reader.status(wf).state == StateCode.APPENDING
    finally:
        victim.kill()
        victim.wait(30)
        for line in spy.invocations():  # the wrapper leads its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(line.split()[0]), signal.SIGKILL)
    assert len(spy.invocations()) == 1
    with running_runner(kafka, host, [tmp_path], du_command=spy.command) as runner:
        result = wait_result(kafka, wf)
        wait_until(
            lambda: committed_to_end(kafka, runner.settings.group),
            timeout=30,
            what="index offsets committed",
        )
    assert (result.status_code, result.status_message) == (1, INTERRUPTED)
    assert result.lines == expected
    assert len(spy.invocations()) == 1, "du must not run again"
    assert metric(runner, "duroot_runner_du_runs_total", outcome="interrupted") == 1


def test_ended_workflows_are_left_alone(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    """Offsets are committed once settled; a runner in a fresh group re-reads the whole
    index, finds the workflow TERMINATED and does nothing."""
    tree = tmp_path / "tree"
    make_tree(tree, 5)
    spy = SpyDu.make(tmp_path)
    with running_runner(kafka, host, [tree], du_command=spy.command, threshold="0") as first:
        wf = begin(kafka, host, tree)
        wait_result(kafka, wf)
        wait_until(
            lambda: committed_to_end(kafka, first.settings.group),
            timeout=30,
            what="index offsets committed",
        )
    events_before = len(workflow_events(kafka, wf))
    group = f"fresh-{uuid.uuid4().hex[:6]}"
    with running_runner(
        kafka, host, [tree], du_command=spy.command, threshold="0", group_id=group
    ) as second:
        wait_until(lambda: committed_to_end(kafka, group), timeout=30, what="fresh group done")
        assert second.in_progress == 0
    assert len(workflow_events(kafka, wf)) == events_before
    assert len(spy.invocations()) == 1


def test_concurrency_is_bounded(kafka: KafkaConfig, host: str, tmp_path: Path) -> None:
    roots = [tmp_path / f"r{i}" for i in range(4)]
    for root in roots:
        make_tree(root, 3)
    spans = tmp_path / "spans"
    spy = SpyDu.make(
        tmp_path,
        before=f'echo "start $(date +%s.%N)" >> {spans}; sleep 0.7',
        after=f'echo "end $(date +%s.%N)" >> {spans}',
    )
    with running_runner(
        kafka, host, [tmp_path], du_command=spy.command, threshold="0", concurrency=2
    ) as runner:
        workflows = [begin(kafka, host, root) for root in roots]
        results = [wait_result(kafka, wf) for wf in workflows]
    assert all(r.status_code == 0 for r in results)
    points = sorted(
        (float(t), 1 if kind == "start" else -1)
        for kind, t in (line.split() for line in spans.read_text().splitlines())
    )
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert metric(runner, "duroot_runner_du_runs_total", outcome="ok") == 4


def test_second_runner_for_a_host_fences_the_first(
    kafka: KafkaConfig, host: str, tmp_path: Path
) -> None:
    first = Runner(RunnerSettings(kafka, host=host, roots=(str(tmp_path),)))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            first.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        wait_until(first.ready.is_set, timeout=60, what="first runner assigned")
        with running_runner(kafka, host, [tmp_path]):
            thread.join(30)
            assert not thread.is_alive(), "the first runner must stop"
    finally:
        first.stop()
        thread.join(30)
    assert len(errors) == 1 and "fenced" in str(errors[0]), errors


class _Escaping(BaseException):
    """An error no `except Exception` catches (like KeyboardInterrupt or SystemExit)."""


def test_a_job_that_raises_past_its_handler_still_settles(
    kafka: KafkaConfig,
    host: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Handling one workflow raises past every `except`: the job settles all the same
    (logged with the workflow id, counted), the workflow is left as it is for the state
    check, and the index offsets behind it are committed."""
    bad, good = tmp_path / "bad", tmp_path / "good"
    make_tree(bad, 3)
    make_tree(good, 3)
    real_check_root = paths.check_root

    def check_root(host_root: str, roots: Sequence[str]) -> str:
        if host_root == str(bad):
            raise _Escaping("injected")
        return real_check_root(host_root, roots)

    monkeypatch.setattr(paths, "check_root", check_root)
    caplog.set_level(logging.ERROR, logger="duroot.runner")
    with running_runner(kafka, host, [tmp_path], threshold="0") as runner:
        wf_bad = begin(kafka, host, bad)
        assert wait_result(kafka, begin(kafka, host, good)).status_code == 0
        wait_until(
            lambda: committed_to_end(kafka, runner.settings.group),
            timeout=30,
            what="index offsets committed past the failed job",
        )
        assert runner.in_progress == 0
        assert metric(runner, "duroot_runner_errors_total", action="left") == 1
    assert DuRootReader(kafka).status(wf_bad).state == StateCode.INITIALIZED
    assert [r for r in caplog.records if getattr(r, "workflow", None) == wf_bad], caplog.text
