"""The client subcommands end to end: a real broker, a real processor, `cli.main`
(and one `get --wait` in a separate process)."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from duroot_stream.cli import main as cli
from duroot_stream.cli import options
from duroot_stream.config import KafkaConfig
from tests.processor_harness import running_processor, setup_topics

pytestmark = pytest.mark.broker

REG = str(uuid.uuid4())


@pytest.fixture(scope="module")
def pipeline(bootstrap: str) -> Iterator[KafkaConfig]:
    kafka = KafkaConfig(bootstrap_servers=bootstrap, topic_prefix=f"l{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka)
    with running_processor(kafka):
        yield kafka


def _kafka_args(kafka: KafkaConfig) -> list[str]:
    return ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]


def main(argv: list[str]) -> int:
    """`cli.main`, leaving logging as it was: its handler writes to the stderr of the
    moment, which pytest closes after the test while the processor thread still logs."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return cli.main(argv)
    finally:
        root.handlers[:], root.level = handlers, level


class Run:
    """`duroot-stream …` in-process: exit code, stdout, stderr."""

    def __init__(self, kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> None:
        self.kafka, self.capsys = kafka, capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main([*argv, *_kafka_args(self.kafka)])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def begin(self, root: str = "/g") -> str:
        rc, out, err = self(
            "begin", "--registry-id", REG, "--global-root", root, "--host", "h",
            "--host-root", "/srv",
        )  # fmt: skip
        assert rc == 0, err
        lines = dict(line.split(": ", 1) for line in out.splitlines())
        return lines["workflowId"]


@pytest.fixture
def run(pipeline: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(pipeline, capsys)


LINES = "4096 .\n1234567890 dir with spaces\n7 tüdelü/ü\n0 empty\n"


def test_begin_append_commit_get_prints_exactly_the_appended_lines(
    run: Run, tmp_path: Path
) -> None:
    wf = run.begin()
    lines = tmp_path / "lines"
    lines.write_text(LINES, encoding="utf-8")
    rc, out, err = run("send", "append", wf, "--file", str(lines))
    assert rc == 0, err
    assert out.startswith("workflowVid: ")
    appended_vid = out.split()[1]
    rc, out, err = run("send", "commit", wf, "--vid", appended_vid)
    assert rc == 0, err
    rc, out, err = run("get", wf)
    assert (rc, out, err) == (0, LINES, "")
    rc, out, _ = run("get", wf, "--verbose")
    # nogfsoctl du get --verbose: the lines, then the vid they were read at.
    assert out.startswith(LINES) and out.splitlines()[-1].startswith("# workflowVid: ")
    # nog's spellings: a Go duration for --wait, --no-vid, events --after VID / --watch.
    assert run("get", wf, "--wait", "1m30s")[:2] == (0, LINES)
    rc, out, err = run("events", "--workflow", wf, "--json")
    vids = [json.loads(line)["vid"] for line in out.splitlines()]
    rc, out, err = run("events", "--workflow", wf, "--after", vids[1], "--json")
    assert rc == 0, err
    assert [json.loads(line)["vid"] for line in out.splitlines()] == vids[2:]
    rc, _, err = run("events", "--workflow", wf, "--after", "0" * 26)
    assert rc == options.EXIT_FAILED and "is not in the history" in err
    assert run("events", "--after", vids[0])[0] == options.EXIT_USAGE


def test_paths_with_newlines_round_trip_nul_terminated(run: Run, tmp_path: Path) -> None:
    wf = run.begin()
    records = b"1 a\nb\x002 c\x00"
    (tmp_path / "lines").write_bytes(records)
    rc, _, err = run("send", "append", wf, "-0", "--file", str(tmp_path / "lines"))
    assert rc == 0, err
    assert run("send", "commit", wf)[0] == 0
    rc, out, _ = run("get", wf, "-0")
    assert (rc, out.encode()) == (0, records)


def test_get_of_a_failed_workflow_exits_non_zero_with_the_message(run: Run) -> None:
    wf = run.begin()
    rc, _, err = run("send", "fail", wf, "--code", "2", "--message", "du failed: disk on fire")
    assert rc == 0, err
    rc, out, err = run("get", wf)
    assert rc == options.EXIT_FAILED
    assert out == ""
    assert "failed (status 2): du failed: disk on fire" in err


def test_json_output_parses(run: Run, tmp_path: Path) -> None:
    rc, out, _ = run(
        "begin", "--json", "--registry-id", REG, "--global-root", "/j", "--host", "h",
        "--host-root", "/srv",
    )  # fmt: skip
    assert rc == 0
    begun = json.loads(out)
    wf = begun["workflow_id"]
    (tmp_path / "lines").write_text(LINES)
    rc, out, _ = run("send", "append", wf, "--json", "--file", str(tmp_path / "lines"))
    assert json.loads(out)["vid"] > begun["vid"]
    assert run("send", "commit", wf)[0] == 0

    rc, out, _ = run("get", wf, "--json", "--verbose")
    head, *rows = (json.loads(line) for line in out.splitlines())
    assert head["complete"] is True and head["status_code"] == 0
    assert [f"{r['usage']} {r['path']}\n" for r in rows] == LINES.splitlines(keepends=True)

    rc, out, err = run("status", wf, "--json")
    assert rc == 0, err
    status = json.loads(out)
    assert (status["state"], status["lines"], status["global_root"]) == ("TERMINATED", 4, "/j")

    rc, out, _ = run("index", "--json", "--completed", "--registry", REG)
    entries = [json.loads(line) for line in out.splitlines()]
    assert wf in {e["workflow_id"] for e in entries}
    assert {e["state"] for e in entries} == {"completed"}

    rc, out, _ = run("events", "--json", "--workflow", wf)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["STARTED", *["UPDATED"] * 4, "COMPLETED", "COMMITTED"]
    assert events[2]["path"] == "dir with spaces"


def test_human_output(run: Run, tmp_path: Path) -> None:
    wf = run.begin("/human")
    (tmp_path / "lines").write_text(LINES)
    assert run("send", "append", wf, "--file", str(tmp_path / "lines"))[0] == 0

    rc, out, err = run("get", wf, "--human")
    assert rc == options.EXIT_INCOMPLETE  # not committed yet: the lines so far, and a warning
    assert out.splitlines() == ["4.0K .", "1.1G dir with spaces", "   7 tüdelü/ü", "   0 empty"]
    assert "still running (state APPENDING" in err and "--wait" in err

    rc, out, _ = run("status", wf)
    fields = dict(line.split(None, 1) for line in out.replace("global root", "global_root")
                  .replace("host root", "host_root").splitlines())  # fmt: skip
    assert (fields["state"], fields["lines"], fields["global_root"]) == ("APPENDING", "4", "/human")

    rc, out, _ = run("index", "--active", "--registry", REG)
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["WORKFLOW", "STATE", "STATUS"]
    assert any(row.startswith(wf) and "active" in row for row in rows)

    rc, out, _ = run("events", "--workflow", wf)
    assert [line.split()[3] for line in out.splitlines()[1:]] == ["STARTED"] + ["UPDATED"] * 4


def test_get_wait_returns_once_another_process_commits(pipeline: KafkaConfig, run: Run) -> None:
    wf = run.begin("/wait")
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "duroot_stream.cli.main", "get", wf, "--wait", "120",
         *_kafka_args(pipeline)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        stderr: queue.Queue[str] = queue.Queue()
        assert proc.stderr is not None

        def forward() -> None:
            for line in proc.stderr or ():
                stderr.put(line)

        threading.Thread(target=forward).start()
        while not (line := stderr.get(timeout=60)).startswith("waiting for workflow"):
            pass  # other lines (logs) before the progress line that shows it waits
        assert line.startswith(f"waiting for workflow {wf}: INITIALIZED")
        assert proc.poll() is None
        rc, _, err = run("send", "commit", wf)
        assert rc == 0, err
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out == ""  # committed without lines


def test_begin_from_a_roots_file(run: Run, tmp_path: Path) -> None:
    roots = tmp_path / "roots.toml"
    roots.write_text(
        f'[roots."/example/data"]\nregistry_id = "{REG}"\nhost = "files.example.org"\n'
        'host_root = "/srv/data"\n'
    )
    wf = str(uuid.uuid4())
    rc, out, err = run(
        "begin", "--roots-file", str(roots), "--global-root", "/example/data", "--workflow", wf
    )
    assert rc == 0, err
    assert f"workflowId: {wf}" in out
    rc, out, err = run("status", wf, "--json")
    assert rc == 0, err
    status = json.loads(out)
    assert (status["host"], status["host_root"], status["registry_id"]) == (
        "files.example.org",
        "/srv/data",
        REG,
    )


def test_exit_codes(run: Run, kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("get", str(uuid.uuid4()))[0] == options.EXIT_FAILED  # not found
    assert run("get", "not-a-uuid")[0] == options.EXIT_USAGE
    wf = run.begin()
    assert run("send", "append", wf, "--file", "/dev/null")[0] == options.EXIT_USAGE  # no lines
    rc, _, err = run("send", "commit", wf, "--vid", "00000000000000000000000000")
    assert rc == options.EXIT_FAILED and "VERSION_CONFLICT: version conflict: stored vid" in err
    rc, _, err = run("get", wf, "--wait", "0.5")
    assert rc == options.EXIT_INCOMPLETE and "did not complete in time" in err
    assert run("send", "commit", wf)[0] == 0
    rc, _, err = run("send", "commit", wf)
    assert rc == options.EXIT_FAILED and "CONFLICT_STATE" in err

    setup_topics(kafka)  # topics, but no processor
    rc = main(["send", "commit", wf, "--timeout", "1", *_kafka_args(kafka)])
    err = capsys.readouterr().err
    assert rc == options.EXIT_UNAVAILABLE and "no processor answered" in err


def test_diff_shows_the_grown_directory_before_and_after(run: Run, tmp_path: Path) -> None:
    def du(lines: str) -> str:
        wf = run.begin("/g/diff")
        (tmp_path / "lines").write_text(lines, encoding="utf-8")
        assert run("send", "append", wf, "--file", str(tmp_path / "lines"))[0] == 0
        assert run("send", "commit", wf)[0] == 0
        return wf

    before = du("1000 grown\n2048 same\n512 gone\n3560 .\n")
    after = du("5096 grown\n2048 same\n7 new\n7151 .\n")
    rc, out, err = run("diff", before, after)
    assert rc == 0, err
    header, table = out.splitlines()[:2], out.splitlines()[2:]
    assert header[0].startswith(f"# before: {before} /g/diff on h, 20")
    assert header[1].startswith(f"# after: {after} /g/diff on h, 20")
    # Largest change first; a path one run lacks is "-" there.
    assert [line.split() for line in table] == [
        ["before", "after", "change", "path"],
        ["1000", "5096", "+4096", "grown"],
        ["3560", "7151", "+3591", "."],
        ["512", "-", "-512", "gone"],
        ["-", "7", "+7", "new"],
        ["2048", "2048", "0", "same"],
    ]
    rc, out, _ = run("diff", before, after, "--human", "--changed")
    assert rc == 0 and out.splitlines()[3].split() == ["1000", "5.0K", "+4.0K", "grown"]
    assert "same" not in out
    rc, out, _ = run("diff", before, after, "--json")
    diff = json.loads(out)
    assert diff["before"]["workflow_id"] == before and diff["after"]["lines"] == 4
    assert diff["paths"][0] == {"path": "grown", "before": 1000, "after": 5096, "change": 4096}
    assert {"path": "gone", "before": 512, "after": None, "change": -512} in diff["paths"]
    rc, _, err = run("diff", before, str(uuid.uuid4()))
    assert rc == options.EXIT_FAILED and "not found" in err.lower()
    assert run("diff", before, "nope")[0] == options.EXIT_USAGE
