"""The recent command ids a workflow remembers for dedupe, packed into one object.

Semantically a tuple of `(command_id, vid)` pairs, oldest first, at most
`RECENT_COMMANDS` of them, each command id once (`vid` = that command's last
event). The processor holds one per workflow in memory, so it is packed, in
one of two forms:

- binary (`bytes`), the real case, where every id is canonical ULID text: 16
  bytes an id, newest entry first, and the newest entry's vid left out: it is
  the workflow's head vid, which the state holds already (the functions take
  it as `head`). So `newest command (16)`, then `command (16) + vid (16)` per
  older entry: 80 bytes for three commands instead of 169 characters of text,
  and a command's next event leaves the bytes as they are.
- text (`str`), for ids of any other text (tests, hand-made states): per
  entry, oldest first, `L + command_id + vid + L` with `L = chr(len(command_id))
  + chr(len(vid))`, after `chr(count)`; every vid written out.

A binary form meeting an id that is not canonical turns to text for good.
"""

from __future__ import annotations

from typing import Final

from .ulid import ulid_bytes, ulid_text

# How many command ids a workflow remembers for dedupe (step 1 of `decide`).
# Duplicates come from requesters that re-send a command after losing its
# reply (timeout, reconnect). Such a requester retries only what it has in
# flight, and on one workflow that is at most a handful of commands, because
# each command names the vid left by the previous one. 16 covers that with a
# wide margin while keeping the state small: the processor holds one state
# per workflow in memory, and the entries are rebuilt from the events'
# `command_id`, so they survive a restart. Commands that emitted nothing
# (no-ops, rejections) are not remembered; repeating them is harmless.
RECENT_COMMANDS: Final = 16

Packed = bytes | str
EMPTY: Packed = b""
EMPTY_BINARY: Final = b""
_ID: Final = 16  # bytes of a ULID
_OLDER: Final = 2 * _ID  # an older entry: command and vid
_KEPT: Final = _ID + _OLDER * (RECENT_COMMANDS - 2)  # what stays when a new command comes


def pack(entries: tuple[tuple[str, str], ...], head: str) -> Packed:
    """Pack `(command_id, vid)` pairs, oldest first (at most RECENT_COMMANDS); `head`
    is the workflow's vid, which the newest entry's vid is in the real case."""
    if len(entries) > RECENT_COMMANDS:
        raise ValueError(f"more than {RECENT_COMMANDS} recent commands")
    if not entries:
        return EMPTY
    newest, newest_vid = entries[-1]
    parts = [ulid_bytes(newest)]
    for command_id, vid in reversed(entries[:-1]):
        parts += (ulid_bytes(command_id), ulid_bytes(vid))
    binary = [part for part in parts if part is not None]
    if newest_vid == head and len(binary) == len(parts):
        return b"".join(binary)
    return chr(len(entries)) + "".join([_entry(c, v) for c, v in entries])


def unpack(packed: Packed, head: str) -> tuple[tuple[str, str], ...]:
    """The `(command_id, vid)` pairs, oldest first."""
    if isinstance(packed, str):
        return _unpack_text(packed)
    if not packed:
        return ()
    out = [(ulid_text(packed[:_ID]), head)]
    for at in range(_ID, len(packed), _OLDER):
        out.append((ulid_text(packed[at : at + _ID]), ulid_text(packed[at + _ID : at + _OLDER])))
    return tuple(reversed(out))


def binary_ids(packed: bytes, head: bytes) -> list[bytes]:
    """The binary form's ids as 16 bytes each, oldest entry first, each command id
    before its vid; the newest entry's vid is `head` (the workflow's vid, 16 bytes)."""
    out: list[bytes] = []
    for at in range(len(packed) - _OLDER, 0, -_OLDER):
        out += (packed[at : at + _ID], packed[at + _ID : at + _OLDER])
    if packed:
        out += (packed[:_ID], head)
    return out


def pack_binary(entries: list[tuple[bytes, bytes]]) -> bytes:
    """The binary form of 16-byte `(command_id, vid)` pairs, oldest first, the newest
    vid being the head (`binary_ids` undone)."""
    if len(entries) > RECENT_COMMANDS:
        raise ValueError(f"more than {RECENT_COMMANDS} recent commands")
    if any(len(c) != _ID or len(v) != _ID for c, v in entries):
        raise ValueError("a recent command or vid that is not 16 bytes")
    if not entries:
        return EMPTY_BINARY
    parts = [entries[-1][0]]
    for command_id, vid in reversed(entries[:-1]):
        parts += (command_id, vid)
    return b"".join(parts)


def lookup(packed: Packed, head: str, command_id: str) -> str | None:
    """The vid remembered for `command_id`, or None."""
    if isinstance(packed, str):
        return _lookup_text(packed, command_id)
    key = ulid_bytes(command_id)
    if key is None or not packed:
        return None
    if packed.startswith(key):  # the newest: its vid is the head
        return head
    at = packed.find(key, _ID)  # the common case, decided at C speed: not there
    while at != -1:
        if (at - _ID) % _OLDER == 0:  # a command's place, not a vid's
            return ulid_text(packed[at + _ID : at + _OLDER])
        at = packed.find(key, at + 1)
    return None


def remember(packed: Packed, head: str, command_id: str, vid: str) -> Packed:
    """`command_id` as the newest entry, its vid `vid` (the new head); `head` is the
    vid the packed form's newest entry has now. The oldest is dropped beyond the bound."""
    if isinstance(packed, str):
        return _remember_text(packed, command_id, vid)
    key = ulid_bytes(command_id)
    if key is not None:
        if not packed:
            return key
        if packed.startswith(key):  # the same command's next event: its vid is the head
            return packed
        previous = ulid_bytes(head)
        if previous is not None and packed.find(key, _ID) == -1:
            return key + packed[:_ID] + previous + packed[_ID:_KEPT]
    # An id that is not canonical, or a command seen before the newest: the slow way.
    entries = unpack(packed, head)
    kept = tuple(e for e in entries if e[0] != command_id)
    return pack((*kept[-(RECENT_COMMANDS - 1) :], (command_id, vid)), vid)


# --- the text form ------------------------------------------------------------------


def _entry(command_id: str, vid: str) -> str:
    lengths = chr(len(command_id)) + chr(len(vid))
    return f"{lengths}{command_id}{vid}{lengths}"


def _unpack_text(packed: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    pos = 1
    while pos < len(packed):
        n_command, n_vid = ord(packed[pos]), ord(packed[pos + 1])
        vid_at = pos + 2 + n_command
        out.append((packed[pos + 2 : vid_at], packed[vid_at : vid_at + n_vid]))
        pos = vid_at + n_vid + 2
    return tuple(out)


def _lookup_text(packed: str, command_id: str) -> str | None:
    if command_id not in packed:  # the common case, decided at C speed
        return None
    for known, vid in _unpack_text(packed):
        if known == command_id:
            return vid
    return None


def _remember_text(packed: str, command_id: str, vid: str) -> str:
    lengths = chr(len(command_id)) + chr(len(vid))
    if not packed:
        return f"\x01{lengths}{command_id}{vid}{lengths}"
    # The newest entry, read from the back.
    n_command, n_vid = ord(packed[-2]), ord(packed[-1])
    newest_at = len(packed) - 4 - n_command - n_vid
    if n_command == len(command_id) and packed.startswith(command_id, newest_at + 2):
        # The same command's next event: only its vid changes.
        return f"{packed[:newest_at]}{lengths}{command_id}{vid}{lengths}"
    if command_id in packed:  # rare: an older entry may hold it; move it last
        kept = tuple(e for e in _unpack_text(packed) if e[0] != command_id)
        entries = (*kept[-(RECENT_COMMANDS - 1) :], (command_id, vid))
        return chr(len(entries)) + "".join([_entry(c, v) for c, v in entries])
    count, start = ord(packed[0]), 1
    if count == RECENT_COMMANDS:  # drop the oldest, read from the front
        start += 4 + ord(packed[1]) + ord(packed[2])
        count -= 1
    return f"{chr(count + 1)}{packed[start:]}{lengths}{command_id}{vid}{lengths}"
