"""Host paths the runner handles; nothing here runs anything.

- `escape_path` / `unescape_path`: file names are bytes, Avro strings are
  UTF-8. The escape is lossless: valid UTF-8 stays as it is, a backslash
  becomes `\\\\`, and every byte that is not part of valid UTF-8 becomes
  `\\xHH` (two lower-case hex digits). `unescape_path(escape_path(b)) == b`
  for every byte string. A path that is valid UTF-8 and has no backslash is
  stored unchanged.
- `check_root`: the safety check. A host root is accepted only if it is
  absolute, has no NUL, and its real path (symlinks and `..` resolved) lies
  inside the real path of one of the configured roots. `RootRefused` says
  why not, with a short `reason` for metrics.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

# --- the path escape ----------------------------------------------------------------


def escape_path(raw: bytes) -> str:
    """File name bytes -> UTF-8-safe text, losslessly (see the module docstring)."""
    if b"\\" not in raw:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    # surrogateescape maps each byte that is not valid UTF-8 to U+DC80..U+DCFF;
    # valid UTF-8 never decodes to a surrogate, so those mark exactly the bad bytes.
    text = raw.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    return _SURROGATE_RE.sub(_hex_escape, text)


def unescape_path(text: str) -> bytes:
    """The inverse of `escape_path`. A backslash followed by anything other than
    `\\` or `xHH` (which `escape_path` never writes) is kept as it is."""
    if "\\" not in text:
        return text.encode()
    out = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(text):
        out += text[pos : match.start()].encode()
        hex_digits = match.group(1)
        out += b"\\" if hex_digits is None else bytes((int(hex_digits, 16),))
        pos = match.end()
    out += text[pos:].encode()
    return bytes(out)


_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_ESCAPE_RE = re.compile(r"\\(?:\\|x([0-9a-f]{2}))")


def _hex_escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()) - 0xDC00:02x}"


# --- the safety check -----------------------------------------------------------------


class RootRefused(Exception):
    """A host root the runner will not run du in. `reason` is one of
    nul, relative, dotdot, symlink, outside (a bounded metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def check_root(host_root: str, roots: Sequence[str]) -> str:
    """The real path of `host_root` if it lies inside the real path of one of `roots`;
    `RootRefused` otherwise. Nothing here runs anything; a root that does not exist
    passes if its path does (du then fails to enter it)."""
    if "\0" in host_root:
        raise RootRefused("nul", f"host root {host_root!r} contains a NUL byte")
    if not os.path.isabs(host_root):
        raise RootRefused("relative", f"host root {host_root!r} is not an absolute path")
    real = os.path.realpath(host_root)
    allowed = [os.path.realpath(r) for r in roots]
    if any(_inside(real, root) for root in allowed):
        return real
    lexical = os.path.normpath(host_root)  # `..` applied to the text, no symlinks followed
    if any(_inside(lexical, os.path.normpath(r)) for r in roots):
        reason, how = "symlink", f"is a symlink (or lies below one) that resolves to {real!r}"
    elif ".." in host_root.split("/"):
        reason, how = "dotdot", f"resolves through '..' to {real!r}"
    else:
        reason, how = "outside", f"resolves to {real!r}"
    raise RootRefused(
        reason,
        f"host root {host_root!r} {how}, which is not inside a root this runner serves",
    )


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root
