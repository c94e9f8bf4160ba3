"""du.py without Kafka: the path escape, parsing, the safety check, running du."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duroot_stream.domain import PathUsage
from duroot_stream.runner import du, paths
from tests.kafka_helpers import wait_until

# --- the path escape ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain/dir", "plain/dir"),
        ("grüße/日本".encode(), "grüße/日本"),
        (b"new\nline", "new\nline"),
        (b"tab\there", "tab\there"),
        (b"back\\slash", "back\\\\slash"),
        (b"bad\xffbyte", "bad\\xffbyte"),
        (b"\x80", "\\x80"),
        (b"latin1-\xe9t\xe9", "latin1-\\xe9t\\xe9"),
        (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # an encoded surrogate is not UTF-8
        (b"\\xff", "\\\\xff"),  # a literal backslash-x-f-f stays distinguishable
        (b"", ""),
    ],
)
def test_escape_examples(raw: bytes, text: str) -> None:
    assert paths.escape_path(raw) == text
    assert paths.unescape_path(text) == raw


@given(st.binary(max_size=200))
def test_escape_round_trips_any_bytes(raw: bytes) -> None:
    text = paths.escape_path(raw)
    text.encode("utf-8")  # always valid UTF-8 (no lone surrogates): an Avro string
    assert paths.unescape_path(text) == raw


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\\")))
def test_valid_utf8_without_backslash_is_unchanged(text: str) -> None:
    assert paths.escape_path(text.encode()) == text


@given(st.binary(max_size=50), st.binary(max_size=50))
def test_escape_is_injective(a: bytes, b: bytes) -> None:
    if a != b:
        assert paths.escape_path(a) != paths.escape_path(b)


def test_unescape_keeps_unknown_escapes() -> None:
    assert paths.unescape_path("a\\nb\\x4") == b"a\\nb\\x4"


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (b"4\t./a", PathUsage("a", 4096)),
        (b"12\t.", PathUsage(".", 12 * 1024)),
        (b"8\t./", PathUsage(".", 8192)),
        (b"8\t", PathUsage(".", 8192)),
        (b"0\t./a/b", PathUsage("a/b", 0)),
        (b"3\t././x", PathUsage("./x", 3072)),  # only one leading ./ is stripped
        (b"5\t./with\ttab", PathUsage("with\ttab", 5120)),
        (b"7\t./new\nline", PathUsage("new\nline", 7168)),
        (b"1\t./\xff", PathUsage("\\xff", 1024)),
    ],
)
def test_parse_record(record: bytes, expected: PathUsage) -> None:
    assert du.parse_record(record) == expected


@pytest.mark.parametrize("record", [b"", b"no tab", b"-1\ta", b"1.5\ta", b"x\ta", b" 4\ta"])
def test_parse_record_rejects(record: bytes) -> None:
    with pytest.raises(du.DuOutputError, match="unexpected du output"):
        du.parse_record(record)


def test_parse_output() -> None:
    assert du.parse_output(b"4\t./a\x008\t.\x00") == [PathUsage("a", 4096), PathUsage(".", 8192)]
    assert du.parse_output(b"") == []


def test_argv() -> None:
    assert du.du_argv(["du"]) == ["du", "-0", "--threshold=10G", "--max-depth=3", "."]
    assert du.du_argv(["sudo", "du"], "0", 100) == [
        "sudo",
        "du",
        "-0",
        "--threshold=0",
        "--max-depth=100",
        ".",
    ]
    assert du.summarize_argv(["du"]) == ["du", "-0", "--summarize", "."]


@pytest.mark.parametrize("good", ["10G", "0", "-1M", "512KiB", "100KB", "1B"])
def test_threshold_accepted(good: str) -> None:
    assert du.check_threshold(good) == good


@pytest.mark.parametrize("bad", ["", "G", "10 G", "1;rm", "--all", "1e9"])
def test_threshold_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a du SIZE"):
        du.check_threshold(bad)


# --- the safety check -----------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/served/{data/sub, data-sibling, link-in -> data/sub, link-out -> /etc},
    tmp/outside, tmp/served-alias -> served."""
    served = tmp_path / "served"
    (served / "data" / "sub").mkdir(parents=True)
    (served / "data-sibling").mkdir()
    (served / "link-in").symlink_to(served / "data" / "sub")
    (served / "link-out").symlink_to("/etc")
    (served / "data" / "up").symlink_to("../..")  # a relative link out of served
    (tmp_path / "outside").mkdir()
    (tmp_path / "served-alias").symlink_to(served)
    return tmp_path


@pytest.mark.parametrize(
    ("host_root", "resolved"),
    [
        ("served", "served"),
        ("served/data", "served/data"),
        ("served/data/sub/", "served/data/sub"),
        ("served/link-in", "served/data/sub"),
        ("served/data/../data-sibling", "served/data-sibling"),
        ("served-alias/data", "served/data"),  # the host root's symlink stays inside
        ("served/not-yet-there", "served/not-yet-there"),  # du will fail to enter it
    ],
)
def test_check_root_accepts(layout: Path, host_root: str, resolved: str) -> None:
    assert paths.check_root(f"{layout}/{host_root}", [f"{layout}/served"]) == f"{layout}/{resolved}"


def test_check_root_compares_real_paths_of_configured_roots(layout: Path) -> None:
    assert paths.check_root(f"{layout}/served/data", [f"{layout}/served-alias"]) == (
        f"{layout}/served/data"
    )


@pytest.mark.parametrize(
    ("host_root", "reason"),
    [
        ("{t}/outside", "outside"),
        ("/etc", "outside"),
        ("{t}/served-sibling-prefix", "outside"),
        ("{t}/servedx", "outside"),  # a name prefix is not a path prefix
        ("{t}/served/link-out", "symlink"),
        ("{t}/served/link-out/ssl", "symlink"),
        ("{t}/served/data/up", "symlink"),
        ("{t}/served/data/up/outside", "symlink"),
        ("{t}/served/../outside", "dotdot"),
        ("{t}/served/data/../../outside", "dotdot"),
        ("{t}/served/../../../../etc", "dotdot"),
        ("served/data", "relative"),
        ("./served", "relative"),
        ("", "relative"),
        ("{t}/served/data\0/../../x", "nul"),
        ("{t}/served/\0", "nul"),
    ],
)
def test_check_root_refuses(layout: Path, host_root: str, reason: str) -> None:
    path = host_root.replace("{t}", str(layout))
    with pytest.raises(paths.RootRefused) as refused:
        paths.check_root(path, [f"{layout}/served"])
    assert refused.value.reason == reason
    assert "host root" in str(refused.value)


def test_check_root_any_of_several_roots(layout: Path) -> None:
    roots = [f"{layout}/served/data", f"{layout}/outside"]
    assert paths.check_root(f"{layout}/outside", roots) == f"{layout}/outside"
    with pytest.raises(paths.RootRefused):
        paths.check_root(f"{layout}/served/data-sibling", roots)


# --- opening a root: the check that holds -----------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("host_root", "resolved"),
    [
        ("served", "served"),
        ("served/data/sub/", "served/data/sub"),
        ("served/link-in", "served/data/sub"),
        ("served/data/../data-sibling", "served/data-sibling"),
        ("served-alias/data", "served/data"),
        ("served-alias/link-in/./", "served/data/sub"),  # links met twice on the way
    ],
)
def test_open_root_holds_the_directory_checked(layout: Path, host_root: str, resolved: str) -> None:
    before = open_fds()
    with contextlib.closing(paths.open_root(f"{layout}/{host_root}", [f"{layout}/served"])) as root:
        assert root.path == f"{layout}/{resolved}"
        held, there = os.fstat(root.fd), os.stat(root.path)
        assert (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
        assert os.readlink(root.cwd) == root.path
    assert open_fds() == before


def test_open_root_walks_relative_and_absolute_links_itself(layout: Path) -> None:
    served = layout / "served"
    (served / "abs").symlink_to(served / "data")  # absolute: the walk starts again at /
    (served / "data" / "rel").symlink_to("../link-in/")  # relative, through another link
    with contextlib.closing(paths.open_root(f"{served}/abs/rel", [str(served)])) as root:
        assert os.readlink(root.cwd) == f"{served}/data/sub"


@pytest.mark.parametrize(
    ("host_root", "reason"),
    [
        ("{t}/outside", "outside"),
        ("{t}/outside/not-there", "outside"),  # refused before anything is opened
        ("{t}/served/link-out", "symlink"),
        ("{t}/served/data/up/outside", "symlink"),
        ("{t}/served/../outside", "dotdot"),
        ("served/data", "relative"),
        ("{t}/served/\0", "nul"),
    ],
)
def test_open_root_refuses_as_the_path_check_does(
    layout: Path, host_root: str, reason: str
) -> None:
    before = open_fds()
    with pytest.raises(paths.RootRefused) as refused:
        paths.open_root(host_root.replace("{t}", str(layout)), [f"{layout}/served"])
    assert refused.value.reason == reason
    assert open_fds() == before


def test_open_root_cannot_enter(layout: Path) -> None:
    served = layout / "served"
    (served / "file").write_text("x")
    (served / "loop").symlink_to("loop")
    before = open_fds()
    cases: list[tuple[str, type[OSError]]] = [
        ("not-yet-there/x", FileNotFoundError),
        ("file", NotADirectoryError),
        ("file/x", NotADirectoryError),
    ]
    for name, error in cases:
        with pytest.raises(error) as raised:
            paths.open_root(f"{served}/{name}", [str(served)])
        assert raised.value.filename == f"{served}/{name}"
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        paths.open_root(f"{served}/loop", [str(served)])
    assert open_fds() == before


def test_open_root_any_configured_root_and_slash(layout: Path) -> None:
    with contextlib.closing(
        paths.open_root(f"{layout}/outside", [f"{layout}/served", f"{layout}/outside"])
    ) as root:
        assert root.path == f"{layout}/outside"
    with contextlib.closing(paths.open_root("/etc", ["/"])) as root:
        assert os.readlink(root.cwd) == "/etc"


def swap_for_link(directory: Path, target: Path) -> Path:
    """`directory` moved aside and replaced by a symlink to `target`: where it went."""
    moved = directory.with_name(directory.name + "-was")
    directory.rename(moved)
    directory.symlink_to(target)
    return moved


def test_a_link_swapped_in_after_the_path_check_is_refused(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path check passes, then `served/data` becomes a link out of the roots
    before the root is opened: the directory the walk ends in is refused."""
    real_check_root = paths.check_root

    def check_then_swap(host_root: str, roots: Sequence[str]) -> str:
        checked = real_check_root(host_root, roots)
        swap_for_link(layout / "served" / "data", layout / "outside")
        return checked

    monkeypatch.setattr(paths, "check_root", check_then_swap)
    before = open_fds()
    with pytest.raises(paths.RootRefused) as refused:
        paths.open_root(f"{layout}/served/data/", [f"{layout}/served"])
    assert refused.value.reason == "symlink"
    assert f"resolves to '{layout}/outside'" in str(refused.value)
    assert open_fds() == before


def test_du_runs_in_the_directory_opened_whatever_its_path_becomes(layout: Path) -> None:
    """The root is opened, then its path is swapped for a link out of the roots
    before du starts: du runs in the directory that was checked."""
    data = layout / "served" / "data"
    make_tree(data, 20)
    make_tree(layout / "outside", 30)
    with contextlib.closing(paths.open_root(str(data), [f"{layout}/served"])) as root:
        moved = swap_for_link(data, layout / "outside")
        lines, outcome = du.run_to_end(du.du_argv(["du"], "0", 100), root, timeout=30)
        pwd = script(layout / "pwd.sh", "pwd -P >&2\n")
        _, where = du.run_to_end([str(pwd)], root, timeout=30)
    assert outcome.ok
    assert lines == direct_du(["-0", "--threshold=0", "--max-depth=100", "."], moved)
    assert where.stderr == f"{moved}\n"


def test_one_file_system(tmp_path: Path) -> None:
    assert du.du_argv(["du"], "1G", 2, one_file_system=True) == [
        "du",
        "-0",
        "-x",
        "--threshold=1G",
        "--max-depth=2",
        ".",
    ]
    assert du.summarize_argv(["du"], one_file_system=True) == ["du", "-0", "-x", "--summarize", "."]
    make_tree(tmp_path, 10)
    argv = du.du_argv(["du"], "0", 100, one_file_system=True)
    lines, outcome = du.run_to_end(argv, str(tmp_path), timeout=30)
    assert outcome.ok and lines == direct_du(argv[1:], tmp_path)


# --- running du ---------------------------------------------------------------------------


def make_tree(root: Path, dirs: int = 60) -> None:
    for i in range(dirs):
        d = root / f"a{i % 7}" / f"b{i % 5}" / f"c{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "f").write_bytes(b"x" * (i * 300))


def direct_du(args: list[str], cwd: Path) -> list[PathUsage]:
    """What the same du invocation prints when run directly."""
    out = subprocess.run(
        ["du", *args], cwd=cwd, env={"LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"]},
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return du.parse_output(out)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_run_matches_direct_du(tmp_path: Path) -> None:
    make_tree(tmp_path)
    run = du.DuRun(du.du_argv(["du"], "0", 100), str(tmp_path), timeout=30).start()
    batches = list(run.batches(max_lines=7, max_bytes=1 << 20))
    outcome = run.wait()
    assert outcome.ok and outcome.returncode == 0 and outcome.stderr == ""
    assert all(1 <= len(b) <= 7 for b in batches)
    lines = [line for b in batches for line in b]
    assert lines == direct_du(["-0", "--threshold=0", "--max-depth=100", "."], tmp_path)
    assert run.lines == len(lines) > 60
    assert lines[-1].path == "."


def test_run_batches_bounded_by_bytes(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / (f"{i:02d}" + "n" * 200)).mkdir()
    run = du.DuRun(du.du_argv(["du"], "0", 5), str(tmp_path), timeout=30).start()
    # All of du's output buffered first, so that batching, not timing, decides the sizes.
    wait_until(lambda: run._eof, timeout=30, what="du output read to the end")
    batches = list(run.batches(max_lines=1000, max_bytes=1000))
    assert run.wait().ok
    assert sum(map(len, batches)) == 21
    sizes = [sum(len(p.path) + du.PATH_OVERHEAD for p in b) for b in batches]
    assert max(sizes) <= 1000
    assert max(map(len, batches)) >= 2


def test_threshold_leaves_nothing_then_summary(tmp_path: Path) -> None:
    make_tree(tmp_path, 5)
    lines, outcome = du.run_to_end(du.du_argv(["du"]), str(tmp_path), timeout=30)
    assert outcome.ok and lines == []
    lines, outcome = du.run_to_end(du.summarize_argv(["du"]), str(tmp_path), timeout=30)
    assert outcome.ok
    assert lines == direct_du(["-0", "--summarize", "."], tmp_path)
    assert [line.path for line in lines] == ["."]


def test_run_environment_is_minimal(tmp_path: Path) -> None:
    env_dump = script(tmp_path / "env.sh", "env | sort >&2; exit 3\n")
    _, outcome = du.run_to_end([str(env_dump)], str(tmp_path), timeout=30)
    assert outcome.returncode == 3 and not outcome.ok
    names = {line.split("=", 1)[0] for line in outcome.stderr.splitlines()}
    assert "LC_ALL=C.UTF-8" in outcome.stderr.splitlines()
    assert names <= {"LC_ALL", "PATH", "PWD", "SHLVL", "_"}  # what sh itself adds


def test_failing_du_stderr_is_kept_and_truncated(tmp_path: Path) -> None:
    noisy = script(
        tmp_path / "noisy.sh",
        "printf '4\\t./a\\0'\nhead -c 10000 /dev/zero | tr '\\0' e >&2\nexit 1\n",
    )
    lines, outcome = du.run_to_end([str(noisy)], str(tmp_path), timeout=30, stderr_limit=100)
    assert lines == [PathUsage("a", 4096)]
    assert not outcome.ok and outcome.returncode == 1
    assert outcome.stderr == "e" * 100 + "…[9900 more bytes]"
    assert outcome.describe() == "exit status 1"


def test_unreadable_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything; the broker test runs du through setpriv")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret").chmod(0)
    try:
        _, outcome = du.run_to_end(du.du_argv(["du"]), str(tmp_path), timeout=30)
    finally:
        (tmp_path / "secret").chmod(stat.S_IRWXU)
    assert outcome.returncode == 1
    assert "Permission denied" in outcome.stderr


SLEEP_S = 60  # how long the fake du's below would run if nothing stopped them


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    slow = script(tmp_path / "slow.sh", f"sleep {SLEEP_S} &\necho $! > {pidfile}\nwait\n")
    start = time.monotonic()
    lines, outcome = du.run_to_end([str(slow)], str(tmp_path), timeout=0.5)
    assert time.monotonic() - start < SLEEP_S / 2, "the run waited for its child"
    assert outcome.timed_out and not outcome.ok and lines == []
    assert outcome.describe().startswith("timed out after")
    child = int(pidfile.read_text())
    wait_until(
        lambda: not _alive(child),
        timeout=SLEEP_S / 2,
        interval=0.02,
        what="the wrapper's child (du behind a wrapper) to be killed with it",
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_kill(tmp_path: Path) -> None:
    slow = script(tmp_path / "slow.sh", "printf '1\\t./a\\0'\nexec sleep 60\n")
    run = du.DuRun([str(slow)], str(tmp_path), timeout=60).start()
    batches = run.batches(10, 1000)
    assert next(batches) == [PathUsage("a", 1024)]
    run.kill()
    assert list(batches) == []
    outcome = run.wait()
    assert outcome.describe() == "killed by SIGKILL" and not outcome.timed_out


def test_close_after_abandoned_iteration(tmp_path: Path) -> None:
    """A du that never ends, a buffer of one batch: once the reader waits on the full
    buffer and du on the full pipe, close() still stops both (the test's timeout
    fails it otherwise)."""
    endless = script(tmp_path / "endless.sh", "while printf '1\\t./a\\0'; do :; done\n")
    run = du.DuRun([str(endless)], str(tmp_path), timeout=60, buffer_bytes=1000).start()
    assert next(run.batches(1, 1000)) == [PathUsage("a", 1024)]
    wait_until(lambda: run._buffered >= run.buffer_bytes, timeout=30, what="the buffer full")
    run.close()
    outcome = run.wait()
    assert outcome.describe() == "killed by SIGKILL" and not outcome.timed_out
    assert run.lines == 1, "close() handed out nothing more"
    assert not any(thread.is_alive() for thread in run._threads), "a reader still runs"


def test_missing_root_and_missing_du(tmp_path: Path) -> None:
    _, outcome = du.run_to_end(du.du_argv(["du"]), str(tmp_path / "gone"), timeout=5)
    assert outcome.returncode is None
    assert outcome.describe() == f"cannot enter '{tmp_path}/gone': No such file or directory"
    _, outcome = du.run_to_end([str(tmp_path / "no-du")], str(tmp_path), timeout=5)
    assert outcome.describe().startswith(f"cannot run '{tmp_path}/no-du'")


def test_garbage_output_fails(tmp_path: Path) -> None:
    liar = script(tmp_path / "liar.sh", f"printf 'hello\\0'\nexec sleep {SLEEP_S}\n")
    start = time.monotonic()
    lines, outcome = du.run_to_end([str(liar)], str(tmp_path), timeout=SLEEP_S / 2)
    # Not stopped by the garbage, du would end at the run's timeout (or its own end).
    assert time.monotonic() - start < SLEEP_S / 4, "du must be killed after garbage"
    assert lines == [] and not outcome.ok
    assert "unexpected du output 'hello'" in outcome.describe()


def test_a_slow_consumer_gets_full_batches(tmp_path: Path) -> None:
    for i in range(3000):
        (tmp_path / f"a{i % 10}" / f"b{i}").mkdir(parents=True)
    run = du.DuRun(du.du_argv(["du"], "0", 100), str(tmp_path), timeout=30).start()
    batches = run.batches(max_lines=1000, max_bytes=1 << 20)
    first = next(batches)
    # du prints everything meanwhile (far less than the buffer holds); the buffer keeps it.
    wait_until(lambda: run._eof, timeout=30, what="du output read to the end")
    assert len(next(batches)) == 1000
    assert len(first) + 1000 + sum(map(len, batches)) == run.lines
    assert run.wait().ok


@pytest.mark.parametrize("name", [b"n" * 200, "ü".encode() * 100, b"\xff" * 60, b"\\" * 80, b"x"])
def test_a_full_batch_stays_below_kafkas_message_limit(tmp_path: Path, name: bytes) -> None:
    """The byte estimate never undercounts: an Append of `batch_bytes` worth of paths
    encodes to at most that (plus the command's own fields), below librdkafka's
    default message.max.bytes (1,000,000)."""
    from duroot_stream.domain import Append, Command
    from duroot_stream.runner import DEFAULT_BATCH_BYTES
    from duroot_stream.wire import Codec

    output = tmp_path / "du-output"
    output.write_bytes(b"".join(b"99999999999\t./%d/%s\0" % (i, name) for i in range(40_000)))
    fake = script(tmp_path / "fake-du.sh", f"exec cat {output}\n")
    run = du.DuRun([str(fake)], str(tmp_path), timeout=60).start()
    batches = run.batches(max_lines=1_000_000, max_bytes=DEFAULT_BATCH_BYTES)
    # Let the buffer fill, so that the first batch is a full one.
    wait_until(
        lambda: run._buffered >= DEFAULT_BATCH_BYTES or run._eof,
        timeout=60,
        what="du output to fill a batch",
    )
    batch = next(batches)
    run.close()
    wf = "00000000-0000-0000-0000-000000000000"
    size = len(Codec().encode_command(Command("0" * 26, wf, "0" * 26, 0, Append(tuple(batch)))))
    assert DEFAULT_BATCH_BYTES * 0.5 < size <= DEFAULT_BATCH_BYTES + 200, size
