"""The recent command ids a workflow remembers for dedupe, packed into one string.

Semantically a tuple of `(command_id, vid)` pairs, oldest first, at most
`RECENT_COMMANDS` of them, each command id once (`vid` = that command's last
event). The processor holds one per workflow in memory, so it is stored as
one `str` rather than a tuple of tuples of strings: 56 bytes per entry of
two ULIDs instead of about 220 (every Python object has a header of 40-56
bytes).

Layout: `chr(count)`, then per entry, oldest first, `L + command_id + vid +
L` where `L = chr(len(command_id)) + chr(len(vid))`; `""` when empty. With
the lengths at both ends of each entry, the newest entry is read from the
back and the oldest dropped from the front in O(1), and "is this id here at
all" is a substring test at C speed.
"""

from __future__ import annotations

# How many command ids a workflow remembers for dedupe (step 1 of `decide`).
# Duplicates come from requesters that re-send a command after losing its
# reply (timeout, reconnect). Such a requester retries only what it has in
# flight, and on one workflow that is at most a handful of commands, because
# each command names the vid left by the previous one. 16 covers that with a
# wide margin while keeping the state small: the processor holds one state
# per workflow in memory, and the entries are rebuilt from the events'
# `command_id`, so they survive a restart. Commands that emitted nothing
# (no-ops, rejections) are not remembered; repeating them is harmless.
RECENT_COMMANDS = 16

Packed = str
EMPTY: Packed = ""


def _entry(command_id: str, vid: str) -> str:
    lengths = chr(len(command_id)) + chr(len(vid))
    return f"{lengths}{command_id}{vid}{lengths}"


def pack(entries: tuple[tuple[str, str], ...]) -> Packed:
    """Pack `(command_id, vid)` pairs, oldest first (at most RECENT_COMMANDS)."""
    if not entries:
        return EMPTY
    if len(entries) > RECENT_COMMANDS:
        raise ValueError(f"more than {RECENT_COMMANDS} recent commands")
    return chr(len(entries)) + "".join([_entry(c, v) for c, v in entries])


def unpack(packed: Packed) -> tuple[tuple[str, str], ...]:
    """The `(command_id, vid)` pairs, oldest first."""
    out: list[tuple[str, str]] = []
    pos = 1
    while pos < len(packed):
        n_command, n_vid = ord(packed[pos]), ord(packed[pos + 1])
        vid_at = pos + 2 + n_command
        out.append((packed[pos + 2 : vid_at], packed[vid_at : vid_at + n_vid]))
        pos = vid_at + n_vid + 2
    return tuple(out)


def lookup(packed: Packed, command_id: str) -> str | None:
    """The vid remembered for `command_id`, or None."""
    if command_id not in packed:  # the common case, decided at C speed
        return None
    for known, vid in unpack(packed):
        if known == command_id:
            return vid
    return None


def remember(packed: Packed, command_id: str, vid: str) -> Packed:
    """`command_id` as the newest entry, with `vid`; the oldest dropped beyond the bound."""
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
        kept = tuple(e for e in unpack(packed) if e[0] != command_id)
        return pack((*kept[-(RECENT_COMMANDS - 1) :], (command_id, vid)))
    count, start = ord(packed[0]), 1
    if count == RECENT_COMMANDS:  # drop the oldest, read from the front
        start += 4 + ord(packed[1]) + ord(packed[2])
        count -= 1
    return f"{chr(count + 1)}{packed[start:]}{lengths}{command_id}{vid}{lengths}"
