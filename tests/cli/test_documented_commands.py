"""Every `duroot-stream ...` command the docs or a message tells someone to run exists.

Mentions are found in the README and docs/*.md (inline code and fenced code blocks:
where a guide names a command to type) and in the package's source (log, print and
error messages, and inline code in any string, docstrings included). Each mention's
subcommand words are walked through the real parser, `duroot-stream <words> --help`
is run, and a failure names the file and line of the mention.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from duroot_stream.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCE = REPO / "src" / "duroot_stream"

# "duroot-stream" as the program's name (not in a path or a longer name), then the rest.
PROGRAM = re.compile(r"(?<![\w/.-])duroot-stream(?=\s)")
WORD = re.compile(r"[a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*")  # `acls print|apply`: both
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
# Calls whose string arguments are messages someone reads: print, the logger's, and an
# exception's constructor (`super().__init__(message)`).
MESSAGE_CALLS = {"print", "debug", "info", "warning", "error", "exception", "critical", "__init__"}


@dataclass(frozen=True)
class Mention:
    where: str  # "README.md:42"
    words: tuple[str, ...]  # the subcommand words after `duroot-stream`


def command_words(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(offset, words) for each `duroot-stream` in `text`, one per alternative: the
    lower-case words after it, up to the first option, value or punctuation."""
    for found in PROGRAM.finditer(text):
        words: list[list[str]] = []
        for token in text[found.end() :].split():
            stripped = token.rstrip(":,.;)")
            if not WORD.fullmatch(stripped):
                break
            words.append(stripped.split("|"))
            if stripped != token:
                break
        for alternative in itertools.product(*words):
            yield found.start(), alternative


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def markdown_mentions(text: str, name: str) -> list[Mention]:
    """Commands in fenced code blocks and in inline code."""
    spans: list[tuple[int, str]] = []
    outside = text
    for block in FENCE.finditer(text):
        spans.append((block.start(1), block.group(1)))
        blank = re.sub(r"[^\n]", " ", block.group(0))  # keeps the offsets of what follows
        outside = outside[: block.start()] + blank + outside[block.end() :]
    spans += [(code.start(1), code.group(1)) for code in INLINE.finditer(outside)]
    return [
        Mention(f"{name}:{_line(text, start + offset)}", words)
        for start, span in spans
        for offset, words in command_words(span)
    ]


def _messages(tree: ast.AST) -> set[int]:
    """The ids of the string constants inside message calls and raise statements."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in MESSAGE_CALLS:
                continue
        elif not isinstance(node, ast.Raise):
            continue
        found |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Constant)}
    return found


def source_mentions(source: str, name: str) -> list[Mention]:
    """Commands in messages (the whole string) and in inline code of any string."""
    tree = ast.parse(source)
    messages = _messages(tree)
    out: list[Mention] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        spans = (
            [(0, text)]
            if id(node) in messages
            else [(m.start(1), m.group(1)) for m in INLINE.finditer(text)]
        )
        for start, span in spans:
            for offset, words in command_words(span):
                line = node.lineno + text.count("\n", 0, start + offset)  # exact in docstrings
                out.append(Mention(f"{name}:{line}", words))
    return out


def all_mentions() -> list[Mention]:
    out: list[Mention] = []
    for doc in DOCS:
        out += markdown_mentions(doc.read_text(encoding="utf-8"), str(doc.relative_to(REPO)))
    for module in sorted(SOURCE.rglob("*.py")):
        out += source_mentions(module.read_text(encoding="utf-8"), str(module.relative_to(REPO)))
    return out


def _positionals(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    return (action for action in parser._actions if not action.option_strings)


def problem(words: tuple[str, ...]) -> str | None:
    """What is wrong with `duroot-stream <words>`, or None when it exists and its
    `--help` works."""
    parser = build_parser()
    path: list[str] = []
    positionals = _positionals(parser)
    for word in words:
        action = next(positionals, None)
        named = " ".join(["duroot-stream", *path])
        if action is None:
            return f"`{named}` takes no argument {word!r}"
        if isinstance(action, argparse._SubParsersAction):
            if word not in action.choices:
                return f"`{named}` has no subcommand {word!r} (it has: {', '.join(action.choices)})"
            parser = action.choices[word]
            positionals = _positionals(parser)
        elif action.choices is not None:
            if word not in action.choices:
                choices = ", ".join(map(str, action.choices))
                return f"`{named}` has no action {word!r} (it has: {choices})"
        else:
            break  # a value (a path, a host name): the command is named
        path.append(word)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    if exited.value.code != 0 or not shown.getvalue().startswith("usage: duroot-stream"):
        return f"`duroot-stream {' '.join(path)} --help` exited {exited.value.code}"
    return None


def test_every_command_the_docs_and_messages_name_exists() -> None:
    mentions = all_mentions()
    problems = {words: problem(words) for words in {m.words for m in mentions}}
    wrong = [f"{m.where}: {problems[m.words]}" for m in mentions if problems[m.words]]
    assert not wrong, "commands that do not exist:\n" + "\n".join(wrong)


def test_the_mentions_are_found_where_they_are() -> None:
    """The check above sees the docs' and the messages' commands (it cannot pass by
    finding none)."""
    mentions = all_mentions()
    named = {m.words for m in mentions}
    assert {("run",), ("processor",), ("transactions", "find-open"), ("topics", "create")} <= named
    assert any(m.where.startswith("README.md:") for m in mentions)
    assert any(m.where.startswith("docs/operations.md:") for m in mentions)
    assert any(m.where.startswith("src/duroot_stream/") for m in mentions)


def test_a_bogus_command_in_markdown_is_reported_with_its_line() -> None:
    text = (
        "Run `duroot-stream admin transactions find-hanging`, then `duroot-stream get WF`.\n"
        "\n"
        "```sh\n"
        "duroot-stream topics create --partitions 6\n"
        "duroot-stream acls print|aply --processor p\n"
        "duroot-stream index everything\n"
        "```\n"
        "The duroot-stream program (prose is not a command).\n"
    )
    mentions = markdown_mentions(text, "guide.md")
    assert [(m.where, m.words) for m in mentions] == [
        ("guide.md:4", ("topics", "create")),
        ("guide.md:5", ("acls", "print")),
        ("guide.md:5", ("acls", "aply")),
        ("guide.md:6", ("index", "everything")),
        ("guide.md:1", ("admin", "transactions", "find-hanging")),
        ("guide.md:1", ("get",)),
    ]
    found = {m.words: problem(m.words) for m in mentions}
    assert found[("topics", "create")] is None
    assert found[("acls", "print")] is None
    assert found[("get",)] is None
    assert "has no action 'aply'" in (found[("acls", "aply")] or "")
    assert "takes no argument 'everything'" in (found[("index", "everything")] or "")
    assert "has no subcommand 'admin'" in (found[("admin", "transactions", "find-hanging")] or "")


def test_a_bogus_command_in_a_log_message_is_reported() -> None:
    source = '''
"""Operators end it with `duroot-stream transactions
find-hanging` (a docstring, across a line)."""
import logging
log = logging.getLogger(__name__)

def make_ca(name: str = "duroot-stream local CA") -> None:  # a name, not a message
    log.error("stuck", extra={"what_to_do": "duroot-stream admin transactions abort"})
    raise RuntimeError(f"create them with duroot-stream topics {name}")
'''
    mentions = source_mentions(source, "m.py")
    assert sorted((m.where, m.words) for m in mentions) == [
        ("m.py:2", ("transactions", "find-hanging")),
        ("m.py:8", ("admin", "transactions", "abort")),
        ("m.py:9", ("topics",)),
    ]
    assert problem(("admin", "transactions", "abort")) is not None
    assert problem(("transactions", "find-hanging")) is None
