"""Host paths the runner handles; nothing here runs anything.

- `escape_path` / `unescape_path`: file names are bytes, Avro strings are
  UTF-8. The escape is lossless: valid UTF-8 stays as it is, a backslash
  becomes `\\\\`, and every byte that is not part of valid UTF-8 becomes
  `\\xHH` (two lower-case hex digits). `unescape_path(escape_path(b)) == b`
  for every byte string. A path that is valid UTF-8 and has no backslash is
  stored unchanged.
- `check_root`: the path check. A host root is accepted only if it is
  absolute, has no NUL, and its real path (symlinks and `..` resolved) lies
  inside the real path of one of the configured roots. `RootRefused` says
  why not, with a short `reason` for metrics.
- `open_root`: the check that holds. A path checked is resolved again by
  whoever uses it, so a symlink swapped in between would win. `open_root`
  checks the path, then opens the host root one component at a time with
  O_NOFOLLOW (a symlink met on the way is read and its target walked the
  same way), then checks the directory it holds: it, or one of its parents
  (`..` from the descriptor), has the device and inode of a configured
  root. du then runs in exactly that directory (`OpenedRoot.cwd`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

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
    raise _refusal(host_root, real, roots)


def _refusal(host_root: str, real: str, roots: Sequence[str]) -> RootRefused:
    """Why `host_root`, found at `real`, is not inside `roots`."""
    lexical = os.path.normpath(host_root)  # `..` applied to the text, no symlinks followed
    if any(_inside(lexical, os.path.normpath(r)) for r in roots):
        reason, how = "symlink", f"is a symlink (or lies below one) that resolves to {real!r}"
    elif ".." in host_root.split("/"):
        reason, how = "dotdot", f"resolves through '..' to {real!r}"
    else:
        reason, how = "outside", f"resolves to {real!r}"
    return RootRefused(
        reason,
        f"host root {host_root!r} {how}, which is not inside a root this runner serves",
    )


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


# --- opening a root: the check that holds ---------------------------------------------

# O_PATH: only search permission is needed, and opening has no side effects (a FIFO
# or device met on the way is not opened for I/O).
_WALK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40  # as the kernel allows in one path
MAX_DEPTH = 4096  # parents looked at on the way up to "/"


@dataclass(frozen=True)
class OpenedRoot:
    """A host root opened and checked by `open_root`; close it (`contextlib.closing`).

    `cwd` is `/proc/self/fd/N`: in the child, between fork and exec, `chdir` to
    that magic link enters the open directory itself (the kernel does not look
    its name up again), as `fchdir(N)` would, without a `preexec_fn`, which is
    unsafe in a process with threads. The child still holds N then: subprocess
    closes descriptors after the `chdir`; were it otherwise, the `chdir` would
    fail (ENOENT), never enter another directory."""

    fd: int
    path: str  # its real path when it was checked, for messages

    @property
    def cwd(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        os.close(self.fd)


def open_root(host_root: str, roots: Sequence[str]) -> OpenedRoot:
    """`host_root` opened as a directory inside one of `roots`, in three steps:
    1. `check_root`, before anything is opened (a root outside is refused even
       if it does not exist, so refusals say nothing about what exists there);
    2. `_walk`: opened from "/" one component at a time, without the kernel
       following any symlink;
    3. the directory held is inside a configured root (`_held_inside`).
    `RootRefused` if 1 or 3 refuses; OSError (filename: the checked path) if a
    component is missing, not a directory or not searchable."""
    real = check_root(host_root, roots)
    try:
        fd = _walk(host_root)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, real) from None
    try:
        inside = _held_inside(fd, roots)
        now = "" if inside else _where(fd)
    except BaseException:
        os.close(fd)
        raise
    if inside:
        return OpenedRoot(fd, real)
    os.close(fd)
    raise _refusal(host_root, now, roots)


def _where(fd: int) -> str:
    """Where the directory `fd` is now, for a message."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "an unknown path"


def _walk(path: str) -> int:
    """An O_PATH descriptor of the directory `path` (absolute), each component
    opened relative to its parent with O_NOFOLLOW. A symlink is read and its
    target walked in its place, from "/" or from its parent."""
    pending = path.split("/")[::-1]  # components still to walk, the next one last
    fd = os.open("/", _WALK | os.O_DIRECTORY)
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            child = os.open(name, _WALK, dir_fd=fd)
            mode = os.fstat(child).st_mode
            if stat.S_ISDIR(mode):
                fd, parent = child, fd  # `fd` always names an open descriptor, for the except
                os.close(parent)
                continue
            os.close(child)
            if not stat.S_ISLNK(mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(name, dir_fd=fd)
            if target.startswith("/"):
                fd, parent = os.open("/", _WALK | os.O_DIRECTORY), fd
                os.close(parent)
            pending += target.split("/")[::-1]
        return fd
    except BaseException:
        os.close(fd)
        raise


def _held_inside(fd: int, roots: Sequence[str]) -> bool:
    """Is the directory `fd`, or one of its parents, one of `roots`? Compared by
    device and inode, so no path of it is trusted. The configured roots are the
    operator's: their own symlinks are followed."""
    allowed = set()
    for root in roots:
        try:
            st = os.stat(root)
        except OSError:
            continue  # a configured root that is not there holds nothing
        allowed.add((st.st_dev, st.st_ino))
    current = os.dup(fd)
    try:
        for _ in range(MAX_DEPTH):
            st = os.fstat(current)
            here = (st.st_dev, st.st_ino)
            if here in allowed:
                return True
            current, child = os.open("..", _WALK | os.O_DIRECTORY, dir_fd=current), current
            os.close(child)
            up = os.fstat(current)
            if (up.st_dev, up.st_ino) == here:  # "/" is its own parent
                return False
        return False
    finally:
        os.close(current)
