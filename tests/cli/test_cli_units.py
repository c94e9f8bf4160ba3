"""The client subcommands' pure parts: parsing, roots files, output formats."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pytest

from duroot_stream.cli import begin as begin_cli
from duroot_stream.cli import main as cli
from duroot_stream.cli import options
from duroot_stream.cli.begin import read_lines
from duroot_stream.cli.output import human_size, iso_time, print_du, print_table, printable
from duroot_stream.cli.reader import event_type
from duroot_stream.cli.values import duration_s
from duroot_stream.client import DuResult, Root, load_roots
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    PathUsage,
    StateCode,
    WorkflowEvent,
)
from duroot_stream.ids import new_ulid
from duroot_stream.wire import event_headers

WF = "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
REG = "0b0c8d4e-1111-4222-8333-444455556666"


def _result(lines: list[PathUsage]) -> DuResult:
    return DuResult(WF, lines, "01HX0000000000000000000000", True, 0, "", StateCode.TERMINATED)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (1023, "1023"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (10 * 1024, "10K"),
        (1234567890, "1.1G"),
        (5 * 1024**4, "5.0T"),
        (2**63 - 1, "8.0E"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def test_get_output_is_nogs_usage_space_path() -> None:
    out = io.StringIO()
    print_du(_result([PathUsage("a b", 4096), PathUsage(".", 12)]), out, verbose=True)
    assert out.getvalue() == "4096 a b\n12 .\n# workflowVid: 01HX0000000000000000000000\n"


def test_get_human_output_aligns_sizes() -> None:
    out = io.StringIO()
    print_du(_result([PathUsage("big", 3 * 1024**3), PathUsage("small", 7)]), out, human=True)
    assert out.getvalue() == "3.0G big\n   7 small\n"


def test_get_json_output_keeps_odd_paths() -> None:
    out = io.StringIO()
    odd = "line\nbreak/ü"
    print_du(_result([PathUsage(odd, 1)]), out, as_json=True, verbose=True)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["vid"] == "01HX0000000000000000000000" and first["complete"] is True
    assert second == {"usage": 1, "path": odd}


def test_get_null_terminated_output() -> None:
    out = io.StringIO()
    print_du(_result([PathUsage("a\nb", 1), PathUsage("c", 2)]), out, end="\0")
    assert out.getvalue() == "1 a\nb\x002 c\x00"


def test_read_lines_reads_what_get_prints() -> None:
    data = b"4096 a b\n12\tt\xc3\xbcb\r\n\n7 x \n"
    assert list(read_lines(io.BytesIO(data))) == [
        PathUsage("a b", 4096),
        PathUsage("tüb", 12),
        PathUsage("x ", 7),
    ]


def test_read_lines_with_nul_keeps_newlines_in_paths() -> None:
    data = b"1 a\nb\x002 c\x00"
    assert list(read_lines(io.BytesIO(data), b"\0")) == [PathUsage("a\nb", 1), PathUsage("c", 2)]


def test_read_lines_refuses_paths_that_are_not_utf8() -> None:
    with pytest.raises(ValueError, match="line 2: the path is not UTF-8"):
        list(read_lines(io.BytesIO(b"1 a\n2 b\xff\n")))


@pytest.mark.parametrize("bad", [b"x a\n", b"12\n", b"-1 a\n"])
def test_read_lines_names_the_bad_line(bad: bytes) -> None:
    with pytest.raises(ValueError, match="line 1: expected `<usage> <path>`"):
        list(read_lines(io.BytesIO(bad)))


def test_load_roots(tmp_path: Path) -> None:
    path = tmp_path / "roots.toml"
    path.write_text(
        f'[roots."/example/data"]\nregistry_id = "{REG}"\nhost = "files.example.org"\n'
        'host_root = "/srv/data"\n'
    )
    assert load_roots(path) == {"/example/data": Root(REG, "files.example.org", "/srv/data")}


def test_load_roots_names_the_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "roots.toml"
    path.write_text(f'[roots."/g"]\nregistry_id = "{REG}"\nhost = "h"\n')
    with pytest.raises(ValueError, match=r'\[roots."/g"\] needs host_root'):
        load_roots(path)
    path.write_text("roots = 3\n")
    with pytest.raises(ValueError, match="no \\[roots"):
        load_roots(path)
    path.write_text("[roots\n")
    with pytest.raises(ValueError, match="roots file"):
        load_roots(path)


def _begin_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["begin", *argv])


def test_begin_takes_the_root_from_flags_or_the_roots_file(tmp_path: Path) -> None:
    path = tmp_path / "roots.toml"
    path.write_text(f'[roots."/g"]\nregistry_id = "{REG}"\nhost = "h"\nhost_root = "/srv"\n')
    from_file = begin_cli._root_for(_begin_args("--roots-file", str(path), "--global-root", "/g"))
    assert from_file == Root(REG, "h", "/srv")
    overridden = begin_cli._root_for(
        _begin_args("--roots-file", str(path), "--global-root", "/g", "--host", "other")
    )
    assert overridden == Root(REG, "other", "/srv")
    with pytest.raises(ValueError, match="'/nope' is not in"):
        begin_cli._root_for(_begin_args("--roots-file", str(path), "--global-root", "/nope"))
    with pytest.raises(ValueError, match="missing --registry-id, --host-root"):
        begin_cli._root_for(_begin_args("--global-root", "/g", "--host", "h"))


def test_begin_without_a_root_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert cli.main(["begin", "--global-root", "/g"]) == options.EXIT_USAGE
    finally:  # cli.main's log handler writes to this test's (soon closed) stderr
        root.handlers[:], root.level = handlers, level
    assert "missing --registry-id" in capsys.readouterr().err


def test_print_table_aligns_columns_and_escapes_control_characters() -> None:
    out = io.StringIO()
    print_table(["A", "BB", "C"], [["xxx", "y", "z\nz"], ["1", "22", "3"]], out)
    assert out.getvalue().splitlines() == ["A    BB  C", "xxx  y   z\\nz", "1    22  3"]


def test_iso_time_and_printable() -> None:
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso_time(None) is None and iso_time(0) is None
    assert printable("a\tb") == "a\\tb" and printable("ü") == "ü"


def test_send_parses_vid_options() -> None:
    parser = cli.build_parser()
    vid = new_ulid()
    args = parser.parse_args(["send", "commit", WF, "--vid", vid])
    assert args.vid == vid and args.handler is begin_cli.cmd_send
    with pytest.raises(SystemExit):
        parser.parse_args(["send", "commit", WF, "--vid", vid, "--no-vc"])
    args = parser.parse_args(["send", "fail", WF, "--message", "m"])
    assert (args.code, args.message) == (1, "m")


def test_get_wait_takes_an_optional_timeout() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["get", WF]).wait is None
    assert parser.parse_args(["get", WF, "--wait"]).wait == -1.0
    assert parser.parse_args(["get", WF, "--wait", "2.5"]).wait == 2.5


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (DuRootStarted(REG, "/g", "h", "/srv"), "STARTED"),
        (DuUpdated("a", 1), "UPDATED"),
        (DuRootCompleted(0, ""), "COMPLETED"),
        (DuRootCommitted(), "COMMITTED"),
    ],
)
def test_events_shows_the_event_type_header_names(payload: EventPayload, name: str) -> None:
    event = WorkflowEvent(new_ulid(), EVENT_EPOCH, WF, 0, new_ulid(), payload)
    assert event_type(event) == name == dict(event_headers(event))["event-type"].decode()


def test_events_shows_a_tombstone_as_deleted() -> None:
    assert event_type(None) == "DELETED"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations_are_read_as_nog_writes_them(text: str, seconds: float) -> None:
    assert duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "5 m", "5x", "1h-3m", "-"])
def test_a_bad_duration_says_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        duration_s(text)


def test_nogs_flags_parse() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["begin", "--global-root", "/g", "--no-vid"])
    assert args.no_vid
    args = parser.parse_args(["send", "commit", "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab", "--no-vid"])
    assert args.no_vc
    args = parser.parse_args(["events", "--watch", "--after-now"])
    assert args.follow and args.from_now
    assert parser.parse_args(["get", "x", "--wait", "5m"]).wait == 300.0
    assert parser.parse_args(["get", "x", "--wait"]).wait == -1.0


# --- every subcommand ---------------------------------------------------------------

COMMANDS = [
    "broker",
    "topics",
    "processor",
    "runner",
    "begin",
    "send",
    "get",
    "status",
    "index",
    "events",
    "dlq",
    "diff",
    "serve",
    "exporter",
    "schedule",
    "acls",
    "transactions",
    "run",
]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command line's words (`dlq list`, not `dlq`)."""
    below = _subcommands(parser)
    if not below:
        return [path]
    return [leaf for name, p in below.items() for leaf in _leaves(p, (*path, name))]


def test_every_command_group_is_registered_in_the_documented_order() -> None:
    assert list(_subcommands(cli.build_parser())) == COMMANDS


@pytest.mark.parametrize("words", _leaves(cli.build_parser()), ids=" ".join)
def test_every_command_has_a_handler_and_a_help(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    leaf = parser
    for word in words:
        leaf = _subcommands(leaf)[word]
    assert callable(leaf.get_default("handler")), words
    with pytest.raises(SystemExit) as done:
        cli.main([*words, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: duroot-stream {' '.join(words)} ")


ROOTS_FILE = f'[roots."/g/a"]\nregistry_id = "{REG.upper()}"\nhost = "h"\nhost_root = "/srv/a"\n'


def test_schedule_reads_its_settings(tmp_path: Path) -> None:
    from duroot_stream.cli.schedule import settings_from_args

    path = tmp_path / "roots.toml"
    path.write_text(ROOTS_FILE)
    args = cli.build_parser().parse_args(
        ["schedule", "--roots-file", str(path), "--every", "6h", "--spread", "1h30m"]
    )
    settings = settings_from_args(args)
    assert settings.plan.every_ms == 6 * 3_600_000 and settings.plan.spread_ms == 5_400_000
    assert settings.roots["/g/a"].registry_id == REG  # canonical, as the Init needs it
    default = settings_from_args(
        cli.build_parser().parse_args(["schedule", "--roots-file", str(path)])
    )
    assert default.plan.every_ms == default.plan.spread_ms == 24 * 3_600_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["exporter", "--max-depth", "-1"], "--max-depth must be 0 or more"),
        (["exporter", "--max-series", "0"], "--max-series must be 1 or more"),
        (["schedule", "--roots-file", "{missing}"], "--roots-file: "),
        (["schedule", "--roots-file", "{roots}", "--every", "1h", "--spread", "2h"], "spread"),
        (["schedule", "--roots-file", "{roots}", "--every", "10ms"], "at least 1 s"),
        (["schedule", "--roots-file", "{bad}"], "/g/a: registry id 'x' is not a UUID"),
    ],
)
def test_exporter_and_schedule_refuse_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "roots.toml").write_text(ROOTS_FILE)
    (tmp_path / "bad.toml").write_text(ROOTS_FILE.replace(REG.upper(), "x"))
    files = {
        "{missing}": str(tmp_path / "nope.toml"),
        "{roots}": str(tmp_path / "roots.toml"),
        "{bad}": str(tmp_path / "bad.toml"),
    }
    argv = [files.get(a, a) for a in argv]
    assert cli.main([*argv, "-b", "127.0.0.1:1"]) == options.EXIT_USAGE
    assert message in capsys.readouterr().err
