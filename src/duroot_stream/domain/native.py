"""`mypyc_attr`, mypyc's class options, and `i64`, its native 64-bit integer, where
`mypy_extensions` is not installed.

`mypy_extensions` comes with mypy, which the compiled build needs but a pure install
does not; the options mean something to the compiler only, so without it this
decorator leaves the class as it is, and `i64` is an `int`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
i64 = int


def mypyc_attr(*_flags: str, **_options: object) -> Callable[[T], T]:
    return _same


def _same(cls: T) -> T:
    return cls
