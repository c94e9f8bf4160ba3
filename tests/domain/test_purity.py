"""The domain stays pure: no Kafka, no Avro, no clock, no randomness, no I/O.

Checked on the source (the AST of every module in the package), so a
forbidden import fails here even on a branch that is never executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import duroot_stream.domain

DOMAIN = Path(duroot_stream.domain.__file__).parent
PACKAGE = "duroot_stream.domain"
# mypy_extensions: compiler options only (domain/native.py).
ALLOWED = {
    "__future__",
    "dataclasses",
    "enum",
    "typing",
    "collections.abc",
    "re",
    "mypy_extensions",
}
# Ways to import without an import statement.
FORBIDDEN_NAMES = {"__import__", "importlib", "exec", "eval", "open", "compile"}

MODULES = sorted(DOMAIN.rglob("*.py"))


def imported_modules(tree: ast.Module) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                found.append("." * node.level + (node.module or ""))
            else:
                found.append(node.module or "")
    return found


def is_allowed(module: str) -> bool:
    if module.startswith("."):
        return not module.startswith("..")  # the package's own modules only
    return module in ALLOWED or module == PACKAGE or module.startswith(PACKAGE + ".")


def test_the_domain_has_modules() -> None:
    names = {m.name for m in MODULES}
    assert {
        "__init__.py",
        "model.py",
        "decider.py",
        "state.py",
        "recent.py",
        "gc.py",
        "ulid.py",
    } <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_pure_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [m for m in imported_modules(tree) if not is_allowed(m)]
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_uses_no_dynamic_import_or_io_builtins(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert used & FORBIDDEN_NAMES == set()


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("import time", False),
        ("from datetime import datetime", False),
        ("import os.path", False),
        ("from confluent_kafka import Producer", False),
        ("import fastavro", False),
        ("from ulid import ULID", False),
        ("import uuid, re", False),
        ("from .. import config", False),
        ("from collections import OrderedDict", False),
        ("from __future__ import annotations", True),
        ("from collections.abc import Callable", True),
        ("import re", True),
        ("from .model import Init", True),
        ("from . import model", True),
        ("from duroot_stream.domain.model import Init", True),
    ],
)
def test_the_check_itself(source: str, ok: bool) -> None:
    modules = imported_modules(ast.parse(source))
    assert all(is_allowed(m) for m in modules) is ok
